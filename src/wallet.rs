//! `scrip wallet …`: a person's wallet.

use anyhow::Context as _;
use clap::Subcommand;
use scrip_client::Wallet;
use scrip_client::store::TokenState;
use scrip_client::wallet::WalletError;
use scrip_common::display::when;
use scrip_spec::{CapacityKind, WalletSeed};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Create a wallet with a new seed; prints the seed's backup code once.
    Init {
        /// The consortium's ledger (the wallet checks every issuer key against it).
        #[arg(long, env = "SCRIP_LEDGER_URL")]
        ledger: String,
    },
    /// Open a gift card into tokens at its issuer. The code is checked locally first: a
    /// mistyped symbol is caught before anything is sent.
    Open {
        /// The card code as printed.
        #[arg(required_unless_present = "abandon")]
        code: Option<String>,
        /// The issuer's base URL.
        #[arg(long, required_unless_present = "abandon")]
        issuer: Option<String>,
        /// What to buy, as KIND=COUNT pairs (`queue=2,chunk-1m=5`). Without it, the whole
        /// balance goes into tokens of --kind.
        #[arg(long, value_delimiter = ',')]
        tokens: Vec<String>,
        /// The kind to fill the card with when --tokens is not given.
        #[arg(long, default_value = "queue")]
        kind: String,
        /// Stop waiting for an opening an issuer never answered, so new openings can start.
        /// The opening is kept and asked again by every later `wallet open`: if the issuer
        /// recorded it, the card was charged and its tokens arrive when the issuer answers.
        #[arg(long, conflicts_with_all = ["code", "issuer", "tokens"])]
        abandon: bool,
    },
    /// Tokens per kind and expiry; warns about tokens close to expiry.
    Balance,
    /// Spend a token of KIND at a redeemer; prints the grant code to give the relay. If an
    /// earlier spend of KIND there got no answer (or a 408 or 5xx), that token is presented
    /// again first and its grant printed: a lost answer never costs a second token.
    Spend {
        /// The capacity kind.
        #[arg(long)]
        kind: String,
        /// The redeemer's base URL (the relay's `/v1/redeem` front).
        #[arg(long)]
        redeemer: String,
    },
    /// Fetch URL, paying with one token if the origin asks for one (Privacy Pass, RFC 9577:
    /// a 401 with `WWW-Authenticate: PrivateToken`): the body goes to standard output, or to
    /// --out. A fetch whose paid answer was lost presents the same token there again when it
    /// is run again. Exits 1 if the origin answers an error.
    Fetch {
        /// The URL.
        url: String,
        /// Pay only with a token of KIND (the origin chooses what it asks for; without this,
        /// any kind it asks for that the wallet holds).
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// Write the body to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
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

fn refresh_output(
    summary: &scrip_client::wallet::RefreshSummary,
    verb: &str,
) -> anyhow::Result<Output> {
    let mut out = Output::new(serde_json::to_value(summary)?)
        .line(format!("{verb} {} token(s)", summary.refreshed));
    for (kind, n) in &summary.tokens {
        out = out.line(format!("{n} x {kind} new"));
    }
    if summary.lost_credits > 0 {
        out = out.line(format!("{} credit(s) given up", summary.lost_credits));
    }
    for s in &summary.skipped {
        out = out.line(format!("left as is: {s}"));
    }
    Ok(out)
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

/// What a command produced: text for people, JSON for programs.
struct Output {
    text: Vec<String>,
    json: serde_json::Value,
}

impl Output {
    fn new(json: serde_json::Value) -> Self {
        Self {
            text: Vec::new(),
            json,
        }
    }

    fn line(mut self, line: impl Into<String>) -> Self {
        self.text.push(line.into());
        self
    }
}

pub async fn run(path: PathBuf, json: bool, cmd: WalletCommand) -> anyhow::Result<()> {
    match execute(&path, json, cmd).await {
        Ok(out) => {
            if json {
                println!("{}", out.json);
            } else {
                for line in out.text {
                    println!("{line}");
                }
            }
            Ok(())
        }
        Err(err) => {
            if json {
                let code = err
                    .downcast_ref::<WalletError>()
                    .map_or("failed", WalletError::code);
                println!(
                    "{}",
                    serde_json::json!({"error": {"code": code, "message": format!("{err:#}")}})
                );
            }
            Err(err)
        }
    }
}

/// `wallet fetch`: the body is bytes, not lines, so it is written here, to --out or to
/// standard output (in JSON mode, base64url in the object).
async fn fetch(
    path: &Path,
    url: &str,
    kind: Option<String>,
    out: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<Output> {
    use std::io::Write as _;
    let kind = kind.map(|k| CapacityKind::new(&k)).transpose()?;
    let wallet = Wallet::open(path).await?;
    let fetched = wallet.fetch(url, kind.as_ref()).await?;
    match &fetched.paid {
        Some(kind) if fetched.presented_again => {
            eprintln!("paid {url} with the {kind} token an earlier fetch left pending there")
        }
        Some(kind) => eprintln!("paid {url} with one {kind} token"),
        None => eprintln!("{url} asked for no token"),
    }
    if fetched.status >= 400 {
        let said: String = String::from_utf8_lossy(&fetched.body)
            .chars()
            .take(300)
            .collect();
        anyhow::bail!("{url} answered {}: {said}", fetched.status);
    }
    if let Some(file) = &out {
        std::fs::write(file, &fetched.body)
            .with_context(|| format!("cannot write {}", file.display()))?;
    } else if !json {
        std::io::stdout().write_all(&fetched.body)?;
    }
    let mut answer = serde_json::json!({
        "status": fetched.status,
        "paid": fetched.paid,
        "presented_again": fetched.presented_again,
        "content_type": fetched.content_type,
        "bytes": fetched.body.len(),
    });
    match &out {
        Some(file) => answer["out"] = file.display().to_string().into(),
        None => answer["body"] = scrip_spec::encoding::b64_encode(&fetched.body).into(),
    }
    Ok(Output::new(answer))
}

/// Runs one command; `json` only for `fetch`, whose body is bytes it writes itself.
async fn execute(path: &Path, json: bool, cmd: WalletCommand) -> anyhow::Result<Output> {
    let now = scrip_spec::now();
    Ok(match cmd {
        WalletCommand::Init { ledger } => {
            let wallet = Wallet::create(path, &ledger, None).await?;
            let code = wallet.backup_code();
            Output::new(serde_json::json!({"wallet": path, "backup_code": *code}))
                .line(format!(
                    "wallet created at {} (readable by you only)",
                    path.display()
                ))
                .line("write down this backup code; it is shown once and restores every token:")
                .line(format!("  {}", *code))
        }
        WalletCommand::Restore {
            backup,
            ledger,
            issuer,
        } => {
            let seed = WalletSeed::from_backup_code(&backup)?;
            let wallet = Wallet::create(path, &ledger, Some(seed)).await?;
            let restored = wallet.restore(&issuer).await;
            if !matches!(restored, Ok(n) if n > 0) {
                // Nothing to keep: leave no wallet behind, so the restore can simply be run
                // again with other issuers.
                drop(wallet);
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.as_os_str().to_owned();
                    file.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(file));
                }
            }
            let n = restored?;
            anyhow::ensure!(
                n > 0,
                "no opening of this backup code was found at {}; nothing was restored and no wallet was created. Name the issuers that opened your cards with --issuer (one flag each), and check the backup code",
                issuer.join(", ")
            );
            Output::new(serde_json::json!({"restored": n}))
                .line(format!("restored {n} tokens into {}", path.display()))
        }
        WalletCommand::Open { abandon: true, .. } => {
            let wallet = Wallet::open(path).await?;
            let set_aside = wallet.set_aside_openings().await?;
            let mut out = Output::new(serde_json::json!({"set_aside": set_aside}));
            if set_aside.is_empty() {
                out = out.line("no opening is waiting for an answer; nothing to abandon");
            }
            for a in &set_aside {
                out = out.line(format!(
                    "set aside the opening of {} tokens at {}: if that issuer recorded it, the card was charged for them and they arrive when it answers (each `wallet open` asks it again); new openings no longer wait for it",
                    a.tokens, a.issuer_url
                ));
            }
            out
        }
        WalletCommand::Open {
            code,
            issuer,
            tokens,
            kind,
            abandon: false,
        } => {
            let (Some(code), Some(issuer)) = (code, issuer) else {
                anyhow::bail!("give the card code and --issuer URL (or --abandon)");
            };
            let wallet = Wallet::open(path).await?;
            let plan = if tokens.is_empty() {
                let kind = CapacityKind::new(&kind)?;
                let balance = wallet.card_balance(&issuer, &code).await?;
                let ledger = scrip_common::clients::LedgerClient::new(&ledger_url(&wallet).await?);
                let price = ledger
                    .catalog()
                    .await?
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
            let mut out = Output::new(serde_json::json!({
                "tokens": summary.tokens,
                "remaining_credits": summary.remaining_credits,
            }));
            for (kind, n) in &summary.tokens {
                out = out.line(format!("{n} x {kind}"));
            }
            refresh_due(&wallet).await;
            out.line(format!(
                "{} credits left on the card",
                summary.remaining_credits
            ))
        }
        WalletCommand::Balance => {
            let wallet = Wallet::open(path).await?;
            let released = wallet.resolve_pending().await.unwrap_or(0);
            let b = wallet.balance().await?;
            let pending = wallet.tokens(TokenState::Pending).await?;
            let mut rows = Vec::new();
            let mut out = Output::new(serde_json::Value::Null);
            if released > 0 {
                out = out.line(format!(
                    "{released} token(s) whose spend had an unknown outcome are unspent after all"
                ));
            }
            for ((kind, until), n) in &b.unspent {
                let warn = if until.saturating_sub(now) < scrip_client::wallet::EXPIRY_WARNING_SECS
                {
                    "  <- spend soon"
                } else {
                    ""
                };
                out = out.line(format!(
                    "{n:>6} x {kind:<12} spendable until {}{warn}",
                    when(*until, now)
                ));
                rows.push(serde_json::json!({"kind": kind, "count": n, "redeem_until": until}));
            }
            for p in &pending {
                out = out.line(format!(
                    "     1 x {:<12} pending at {}: spend there again to collect its grant",
                    p.kind,
                    p.redeemer_url.as_deref().unwrap_or("?")
                ));
            }
            out = out.line(format!(
                "spent {} ({} with their grant received), pending {}, expired unspent {}",
                b.spent, b.granted, b.pending, b.expired
            ));
            out.json = serde_json::json!({
                "unspent": rows,
                "pending": pending.iter().map(|p| serde_json::json!({
                    "kind": p.kind, "redeemer": p.redeemer_url, "since": p.updated_at,
                })).collect::<Vec<_>>(),
                "spent": b.spent,
                "granted": b.granted,
                "expired": b.expired,
                "released": released,
            });
            out
        }
        WalletCommand::Spend { kind, redeemer } => {
            let wallet = Wallet::open(path).await?;
            let receipt = wallet.spend(&CapacityKind::new(&kind)?, &redeemer).await?;
            eprintln!(
                "grant for one {} at {redeemer}, valid until {}{}",
                receipt.kind,
                when(receipt.expires_at, scrip_spec::now()),
                if receipt.presented_again {
                    " (collected for a token whose earlier spend had no answer)"
                } else {
                    ""
                }
            );
            refresh_due(&wallet).await;
            Output::new(serde_json::json!({
                "grant": receipt.grant,
                "kind": receipt.kind,
                "expires_at": receipt.expires_at,
                "presented_again": receipt.presented_again,
            }))
            .line(receipt.grant)
        }
        WalletCommand::Refresh { issuer, within } => {
            let wallet = Wallet::open(path).await?;
            let summary = wallet
                .refresh(issuer.as_deref(), within.saturating_mul(86_400))
                .await?;
            refresh_output(&summary, "refreshed")?
        }
        WalletCommand::Change {
            from,
            to,
            count,
            issuer,
            accept_loss,
        } => {
            let wallet = Wallet::open(path).await?;
            let summary = wallet
                .change(
                    issuer.as_deref(),
                    &CapacityKind::new(&from)?,
                    &CapacityKind::new(&to)?,
                    count,
                    accept_loss,
                )
                .await?;
            refresh_output(&summary, "gave in")?
        }
        WalletCommand::Fetch { url, kind, out } => fetch(path, &url, kind, out, json).await?,
        WalletCommand::Export { out } => {
            let wallet = Wallet::open(path).await?;
            let file = wallet.export().await?;
            scrip_spec::secret_file::write_private(
                &out,
                serde_json::to_string_pretty(&file)?.as_bytes(),
                false,
            )?;
            Output::new(serde_json::json!({"exported": file.tokens.len(), "file": out})).line(
                format!(
                    "exported {} unspent tokens to {} (mode 0600)",
                    file.tokens.len(),
                    out.display()
                ),
            )
        }
        WalletCommand::Import { file } => {
            let wallet = Wallet::open(path).await?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let parsed = serde_json::from_str(&text).context("not a scrip token export")?;
            let summary = wallet.import(&parsed).await?;
            let mut out = Output::new(serde_json::to_value(summary)?)
                .line(format!("imported {} new tokens", summary.added));
            if summary.spent_skipped > 0 {
                out = out.line(format!(
                    "skipped {} tokens the ledger records as spent",
                    summary.spent_skipped
                ));
            }
            if summary.already_held > 0 {
                out = out.line(format!(
                    "{} tokens were in this wallet already",
                    summary.already_held
                ));
            }
            out
        }
    })
}

async fn ledger_url(wallet: &Wallet) -> anyhow::Result<String> {
    wallet
        .store()
        .meta("ledger_url")
        .await?
        .context("the wallet names no ledger")
}
