//! `scrip wallet …`: a person's wallet.

use anyhow::Context as _;
use clap::Subcommand;
use scrip_client::Wallet;
use scrip_spec::{CapacityKind, WalletSeed};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Create a wallet with a new seed; prints the seed's backup code once.
    Init {
        /// The consortium's ledger (the wallet checks every issuer key against it).
        #[arg(long, env = "SCRIP_LEDGER_URL")]
        ledger: String,
    },
    /// Open a gift card into tokens at its issuer.
    Open {
        /// The card code as printed.
        code: String,
        /// The issuer's base URL.
        #[arg(long)]
        issuer: String,
        /// What to buy, as KIND=COUNT pairs (`queue=2,chunk-1m=5`). Without it, the whole
        /// balance goes into tokens of --kind.
        #[arg(long, value_delimiter = ',')]
        tokens: Vec<String>,
        /// The kind to fill the card with when --tokens is not given.
        #[arg(long, default_value = "queue")]
        kind: String,
    },
    /// Tokens per kind and expiry; warns about tokens close to expiry.
    Balance,
    /// Spend the token of KIND closest to expiry at a redeemer; prints the grant code to give
    /// the relay.
    Spend {
        /// The capacity kind.
        #[arg(long)]
        kind: String,
        /// The redeemer's base URL (the relay's `/v1/redeem` front).
        #[arg(long)]
        redeemer: String,
    },
    /// Write the unspent tokens with their keys as JSON (anyone with the file can spend them).
    Export {
        /// Where to write (mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Add tokens from an export file; each is checked against the ledger.
    Import {
        /// The export file.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Create a wallet from a backup code and recover every token the seed opened.
    Restore {
        /// The backup code `wallet init` printed.
        #[arg(long, env = "SCRIP_WALLET_BACKUP")]
        backup: String,
        /// The ledger.
        #[arg(long, env = "SCRIP_LEDGER_URL")]
        ledger: String,
        /// Issuers to ask (repeat the flag for several).
        #[arg(long, required = true)]
        issuer: Vec<String>,
    },
    /// Exchange unspent tokens close to their key's end of redemption for tokens of the
    /// issuer's newer keys, of the same kinds, at the issuer that signed them. The old tokens
    /// are spent on the ledger in the exchange; nothing is lost if the command is interrupted
    /// (run it again to finish). The wallet also does this by itself after `open` and `spend`
    /// for tokens within 5 days of expiry.
    Refresh {
        /// The issuer's base URL. Without it, each issuer is asked where the wallet opened its
        /// cards; with it, only that issuer's tokens are refreshed.
        #[arg(long)]
        issuer: Option<String>,
        /// Refresh the tokens that expire within this many days.
        #[arg(long, value_name = "DAYS", default_value_t = 5)]
        within: u64,
    },
    /// Exchange unspent tokens of one kind for tokens of another at their issuer, for example
    /// `--from chunk-64k --to chunk-4m` (twelve 1-credit tokens for one 12-credit token).
    /// The fewest tokens that pay are given in; value left over comes back as the dearest
    /// kinds that fit, and the command refuses to give up value no kind fits unless
    /// --accept-loss.
    Change {
        /// The kind to give in.
        #[arg(long, value_name = "KIND")]
        from: String,
        /// The kind to get.
        #[arg(long, value_name = "KIND")]
        to: String,
        /// How many tokens of --to to get; without it, as many as the --from tokens pay for.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// The issuer's base URL; without it, the issuer holding most --from tokens, at the
        /// URL its cards were opened at.
        #[arg(long)]
        issuer: Option<String>,
        /// Go ahead even if some credits fit no kind and are given up.
        #[arg(long)]
        accept_loss: bool,
    },
}

/// The wallet's own refresh after an open or a spend: best effort, reported on standard
/// error, never failing the command that succeeded.
async fn refresh_due(wallet: &Wallet) {
    match wallet.refresh_due().await {
        Ok(s) if s.refreshed > 0 => {
            eprintln!("refreshed {} token(s) close to expiry", s.refreshed);
        }
        Ok(_) => {}
        Err(e) => eprintln!("warning: tokens close to expiry were not refreshed: {e}"),
    }
}

fn print_refresh(summary: &scrip_client::wallet::RefreshSummary, verb: &str) {
    println!("{verb} {} token(s)", summary.refreshed);
    for (kind, n) in &summary.tokens {
        println!("{n} x {kind} new");
    }
    if summary.lost_credits > 0 {
        println!("{} credit(s) given up", summary.lost_credits);
    }
    for s in &summary.skipped {
        println!("left as is: {s}");
    }
}

fn parse_plan(tokens: &[String]) -> anyhow::Result<Vec<(CapacityKind, u64)>> {
    tokens
        .iter()
        .map(|pair| {
            let (kind, count) = pair
                .split_once('=')
                .with_context(|| format!("{pair:?}: write KIND=COUNT, for example queue=2"))?;
            Ok((
                CapacityKind::new(kind.trim())?,
                count
                    .trim()
                    .parse()
                    .with_context(|| format!("{pair:?}: the count is not a number"))?,
            ))
        })
        .collect()
}

pub async fn run(path: PathBuf, cmd: WalletCommand) -> anyhow::Result<()> {
    match cmd {
        WalletCommand::Init { ledger } => {
            let wallet = Wallet::create(&path, &ledger, None).await?;
            println!(
                "wallet created at {} (readable by you only)",
                path.display()
            );
            println!("write down this backup code; it is shown once and restores every token:");
            println!("  {}", *wallet.backup_code());
        }
        WalletCommand::Restore {
            backup,
            ledger,
            issuer,
        } => {
            let seed = WalletSeed::from_backup_code(&backup)?;
            let wallet = Wallet::create(&path, &ledger, Some(seed)).await?;
            let n = wallet.restore(&issuer).await?;
            println!("restored {n} tokens into {}", path.display());
        }
        WalletCommand::Open {
            code,
            issuer,
            tokens,
            kind,
        } => {
            let wallet = Wallet::open(&path).await?;
            let plan = if tokens.is_empty() {
                let kind = CapacityKind::new(&kind)?;
                let balance = wallet.card_balance(&issuer, &code).await?;
                let ledger = scrip_common::clients::LedgerClient::new(&ledger_url(&wallet).await?);
                let price = ledger
                    .info()
                    .await?
                    .catalog
                    .price(&kind)
                    .with_context(|| format!("{kind} is not in the catalog"))?;
                let count = balance.remaining_credits / price;
                anyhow::ensure!(
                    count > 0,
                    "the card has {} credits, not enough for one {kind} ({price})",
                    balance.remaining_credits
                );
                vec![(kind, count)]
            } else {
                parse_plan(&tokens)?
            };
            let total: u64 = plan.iter().map(|(_, n)| n).sum();
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} tokens ({eta})",
                )?
                .progress_chars("=> "),
            );
            bar.set_message("opening");
            let progress = {
                let bar = bar.clone();
                move |done: u64, _total: u64| bar.set_position(done)
            };
            let summary = wallet.open_card(&issuer, &code, &plan, &progress).await;
            bar.finish_and_clear();
            let summary = summary?;
            for (kind, n) in &summary.tokens {
                println!("{n} x {kind}");
            }
            println!("{} credits left on the card", summary.remaining_credits);
            refresh_due(&wallet).await;
        }
        WalletCommand::Balance => {
            let wallet = Wallet::open(&path).await?;
            let settled = wallet.resolve_pending().await.unwrap_or(0);
            if settled > 0 {
                println!("settled {settled} spend(s) whose outcome was unknown");
            }
            let b = wallet.balance().await?;
            let now = scrip_spec::now();
            for ((kind, until), n) in &b.unspent {
                let days = until.saturating_sub(now) / 86_400;
                let warn = if until.saturating_sub(now) < scrip_client::wallet::EXPIRY_WARNING_SECS
                {
                    "  <- spend soon"
                } else {
                    ""
                };
                println!("{n:>6} x {kind:<12} spendable for {days} more days{warn}");
            }
            println!(
                "spent {}, pending {}, expired unspent {}",
                b.spent, b.pending, b.expired
            );
        }
        WalletCommand::Spend { kind, redeemer } => {
            let wallet = Wallet::open(&path).await?;
            let receipt = wallet.spend(&CapacityKind::new(&kind)?, &redeemer).await?;
            println!("{}", receipt.grant);
            eprintln!(
                "grant for one {} at {redeemer}, valid until {}",
                receipt.kind, receipt.expires_at
            );
            refresh_due(&wallet).await;
        }
        WalletCommand::Refresh { issuer, within } => {
            let wallet = Wallet::open(&path).await?;
            let summary = wallet
                .refresh(issuer.as_deref(), within.saturating_mul(86_400))
                .await?;
            print_refresh(&summary, "refreshed");
        }
        WalletCommand::Change {
            from,
            to,
            count,
            issuer,
            accept_loss,
        } => {
            let wallet = Wallet::open(&path).await?;
            let summary = wallet
                .change(
                    issuer.as_deref(),
                    &CapacityKind::new(&from)?,
                    &CapacityKind::new(&to)?,
                    count,
                    accept_loss,
                )
                .await?;
            print_refresh(&summary, "gave in");
        }
        WalletCommand::Export { out } => {
            let wallet = Wallet::open(&path).await?;
            let file = wallet.export().await?;
            scrip_spec::secret_file::write_private(
                &out,
                serde_json::to_string_pretty(&file)?.as_bytes(),
                false,
            )?;
            println!(
                "exported {} unspent tokens to {} (mode 0600)",
                file.tokens.len(),
                out.display()
            );
        }
        WalletCommand::Import { file } => {
            let wallet = Wallet::open(&path).await?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let parsed = serde_json::from_str(&text).context("not a scrip token export")?;
            let n = wallet.import(&parsed).await?;
            println!("imported {n} new tokens");
        }
    }
    Ok(())
}

async fn ledger_url(wallet: &Wallet) -> anyhow::Result<String> {
    wallet
        .store()
        .meta("ledger_url")
        .await?
        .context("the wallet names no ledger")
}
