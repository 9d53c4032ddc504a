//! `scrip issuer …`: an issuing operator's cards, keys and signing service.

use anyhow::Context as _;
use clap::Subcommand;
use scrip_common::display::date_time;
use scrip_issuer::{Application, Issuer, IssuerConfig, Requeued};
use scrip_spec::CardCode;
use scrip_spec::ledger::Action;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum IssuerCommand {
    /// Run the issuer's HTTP service (card opening, balance, keys) until interrupted.
    #[command(after_long_help = scrip_issuer::config::SCHEMA.help())]
    Serve {
        /// The configuration file (TOML; `scrip issuer config example` prints one with every
        /// field). SCRIP_ISSUER_LISTEN, SCRIP_ISSUER_DATABASE and SCRIP_ISSUER_LEDGER_URL
        /// override it; relative paths are read from the file's directory. A ledger not
        /// answering yet is waited for, ledger_wait_secs (300) at most. Issuance is reported
        /// at start-up, every report_secs and on shutdown.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// The configuration file every issuer command reads.
    #[command(subcommand)]
    Config(crate::config_example::ConfigCommand),
    /// Token keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Gift cards.
    #[command(subcommand)]
    Cards(CardsCommand),
    /// The ledger outbox: requests queued for the ledger, and those it refused for good.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Send the issuance counted since the last report to the ledger now.
    Report {
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List the requests waiting for the ledger and those set aside (refused for good),
    /// with the ledger's refusal. Works with the ledger down.
    List {
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Put a set-aside request back in line and send it, once the cause of its refusal is
    /// dealt with; says whether it landed or why it was refused again.
    Requeue {
        /// The item's id, from `outbox list`.
        id: i64,
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate the next key of every catalog kind and announce it on the ledger (also
    /// announces keys a previous run could not).
    Rotate {
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// List this issuer's keys that wallets can use.
    List {
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CardsCommand {
    /// Mint a batch of cards and write their codes to a CSV for the printer (mode 0600; the
    /// codes are stored nowhere else, only their hashes).
    Mint {
        /// Credits on each card.
        #[arg(long)]
        value: u64,
        /// How many cards.
        #[arg(long)]
        count: usize,
        /// Where to write the CSV (batch, serial, code, value).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Put a minted batch on sale: records its count and credits on the ledger.
    Activate {
        /// The batch id printed by `mint`.
        #[arg(long)]
        batch: String,
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Void one card (by code) or every unused card of a batch.
    Void {
        /// The card's code.
        #[arg(long, conflicts_with = "batch", required_unless_present = "batch")]
        code: Option<String>,
        /// A batch id.
        #[arg(long)]
        batch: Option<String>,
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show every batch with its cards per state, or one card.
    Status {
        /// One card's code.
        #[arg(long)]
        code: Option<String>,
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// The issuer of a local command: it works with the ledger down, from what the ledger last
/// said (`serve` waits for the ledger instead).
async fn open(config: &std::path::Path) -> anyhow::Result<Arc<Issuer>> {
    Ok(Arc::new(
        Issuer::open_local(IssuerConfig::load(config)?).await?,
    ))
}

pub async fn run(cmd: IssuerCommand) -> anyhow::Result<()> {
    match cmd {
        IssuerCommand::Config(cmd) => {
            crate::config_example::run(&scrip_issuer::config::SCHEMA, cmd)?;
        }
        IssuerCommand::Serve { config } => {
            let issuer = Arc::new(Issuer::open(IssuerConfig::load(&config)?).await?);
            let app = Application::new(issuer).await?;
            tracing::info!(address = %app.local_addr()?, "issuer listening");
            app.run_until(crate::shutdown_signal()).await?;
            tracing::info!("issuer stopped");
        }
        IssuerCommand::Report { config } => {
            let n = open(&config).await?.report_issuance().await.context(
                "issuance not reported yet: what was counted stays queued, and `scrip issuer serve` \
                 or the next `scrip issuer report` sends it",
            )?;
            println!("queued and sent {n} issuance report(s)");
        }
        IssuerCommand::Keys(KeysCommand::Rotate { config }) => {
            let announced = open(&config).await?.rotate_keys().await?;
            for k in &announced {
                println!(
                    "announced {} key {} (issues until {}, redeemable until {})",
                    k.kind,
                    k.public_key.id(),
                    date_time(k.issue_until),
                    date_time(k.redeem_until)
                );
            }
        }
        IssuerCommand::Keys(KeysCommand::List { config }) => {
            for k in open(&config).await?.public_keys().keys {
                println!(
                    "{:<12} {}  valid from {}  issues until {}  redeemable until {}",
                    k.kind,
                    k.public_key.id(),
                    date_time(k.valid_from),
                    date_time(k.issue_until),
                    date_time(k.redeem_until)
                );
            }
        }
        IssuerCommand::Cards(cmd) => cards(cmd).await?,
        IssuerCommand::Outbox(cmd) => outbox(cmd).await?,
    }
    Ok(())
}

async fn cards(cmd: CardsCommand) -> anyhow::Result<()> {
    match cmd {
        CardsCommand::Mint {
            value,
            count,
            out,
            config,
        } => {
            let issuer = open(&config).await?;
            if out.exists() {
                anyhow::bail!(
                    "{} exists; choose another file for the new codes",
                    out.display()
                );
            }
            let (batch, codes) = issuer.mint_cards(value, count).await?;
            let mut csv = String::from("batch,serial,code,value\n");
            for (i, code) in codes.iter().enumerate() {
                csv.push_str(&format!("{batch},{},{code},{value}\n", i + 1));
            }
            scrip_spec::secret_file::write_private(&out, csv.as_bytes(), false)?;
            println!("minted batch {batch}: {count} cards of {value} credits");
            println!(
                "codes written to {} (mode 0600); activate with",
                out.display()
            );
            println!("  scrip issuer cards activate --batch {batch} --config …");
        }
        CardsCommand::Activate { batch, config } => {
            let issuer = open(&config).await?;
            if issuer.activate_batch(&batch).await? {
                println!("batch {batch} is on sale; the ledger recorded it");
            } else {
                println!(
                    "batch {batch} is queued for activation; the ledger has not confirmed yet \
                     (the service retries every minute)"
                );
            }
        }
        CardsCommand::Void {
            code,
            batch,
            config,
        } => {
            let issuer = open(&config).await?;
            if let Some(code) = code {
                let code = CardCode::parse(&code).context("not a card code")?;
                if issuer.store().void_card(&code.storage_hash()).await? {
                    println!("card voided");
                } else {
                    anyhow::bail!("no such card, or already void");
                }
            } else if let Some(batch) = batch {
                let n = issuer.store().void_batch(&batch).await?;
                println!("{n} cards of batch {batch} voided");
            }
        }
        CardsCommand::Status { code, config } => {
            let issuer = open(&config).await?;
            if let Some(code) = code {
                let code = CardCode::parse(&code).context("not a card code")?;
                match issuer.store().card(&code.storage_hash()).await? {
                    Some(c) => println!(
                        "batch {} serial {}: {} , {} of {} credits left",
                        c.batch_id,
                        c.serial,
                        c.state.as_str(),
                        c.remaining,
                        c.value
                    ),
                    None => anyhow::bail!("no card has this code at this issuer"),
                }
            } else {
                for b in issuer.store().batches().await? {
                    let per_state: Vec<String> =
                        b.cards.iter().map(|(s, n)| format!("{s} {n}")).collect();
                    println!(
                        "{}  {} cards x {} credits  [{}]  {}  credits left {}",
                        b.batch_id,
                        b.count,
                        b.value,
                        b.state,
                        per_state.join(", "),
                        b.remaining_credits
                    );
                }
            }
        }
    }
    Ok(())
}

/// One line about a queued request: its id and what it records.
fn outbox_line(item: &scrip_issuer::store::OutboxItem) -> String {
    let what = serde_json::from_str::<scrip_spec::Signed<scrip_spec::ledger::LedgerRequest>>(
        &item.request,
    )
    .map(|r| match r.payload.action {
        Action::CardsSold {
            batch,
            count,
            credits,
        } => format!("cards sold: batch {batch}, {count} cards, {credits} credits"),
        Action::TokensIssued {
            token_key_id,
            count,
            from,
            until,
        } => format!(
            "tokens issued: {count} of key {token_key_id}, {} to {}",
            date_time(from),
            date_time(until)
        ),
        other => other.kind_name().to_owned(),
    })
    .unwrap_or_else(|_| "an unreadable request".to_owned());
    format!("{:>6}  {what}", item.id)
}

async fn outbox(cmd: OutboxCommand) -> anyhow::Result<()> {
    match cmd {
        OutboxCommand::List { config } => {
            let issuer = open(&config).await?;
            let queued = issuer.store().outbox().await?;
            let aside = issuer.store().outbox_set_aside().await?;
            println!("{} queued for the ledger", queued.len());
            for item in &queued {
                println!("{}", outbox_line(item));
            }
            println!(
                "{} set aside (refused for good; `outbox requeue ID` sends one again)",
                aside.len()
            );
            for a in &aside {
                println!("{}", outbox_line(&a.item));
                println!(
                    "        set aside {}: {}",
                    date_time(a.set_aside_at),
                    a.refusal
                );
            }
        }
        OutboxCommand::Requeue { id, config } => {
            match open(&config).await?.requeue_outbox(id).await? {
                Requeued::Landed => println!("outbox item {id} landed on the ledger"),
                Requeued::Queued => println!(
                    "outbox item {id} is queued again; the ledger has not taken it yet (`scrip issuer serve` retries every minute)"
                ),
                Requeued::SetAsideAgain { refusal } => anyhow::bail!(
                    "the ledger refused outbox item {id} again, and it is set aside: {refusal}"
                ),
            }
        }
    }
    Ok(())
}
