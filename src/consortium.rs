//! A whole consortium on loopback, in one process: one ledger, and per operator an issuer, a
//! redeemer sidecar and an example relay, each a real HTTP server on its own port, each with
//! its own SQLite file under one directory.

use anyhow::Context as _;
use scrip_issuer::config::RateLimitConfig;
use scrip_issuer::{Issuer, IssuerConfig};
use scrip_ledger::{Ledger, local};
use scrip_redeemer::example_relay::{self, RelayConfig};
use scrip_redeemer::{Mode, Redeemer, RedeemerConfig};
use scrip_spec::OperatorKey;
use scrip_spec::ledger::Role;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One member operator's services.
#[derive(Debug)]
pub struct Operator {
    /// Its name on the ledger.
    pub name: String,
    /// The issuer.
    pub issuer: Arc<Issuer>,
    /// The issuer's base URL.
    pub issuer_url: String,
    /// The redeemer.
    pub redeemer: Arc<Redeemer>,
    /// The sidecar's base URL.
    pub redeemer_url: String,
    /// The example relay's base URL.
    pub relay_url: String,
}

/// The running consortium.
#[derive(Debug)]
pub struct Consortium {
    /// Where every file lives.
    pub dir: PathBuf,
    /// The ledger's base URL.
    pub ledger_url: String,
    /// Every ledger node's base URL (one for a one-node ledger); `ledger_url` is the first.
    pub ledger_nodes: Vec<String>,
    /// The ledger (a committee's first node).
    pub ledger: Arc<Ledger>,
    /// The members.
    pub operators: Vec<Operator>,
}

/// The demo consortium's ledger name.
const NAME: &str = "scrip demo consortium";

/// The redeemers' spend batch window on a committee ledger, in milliseconds.
const COMMITTEE_BATCH_WAIT_MS: u64 = 100;

/// What ledger a consortium runs on.
enum LedgerKind<'a> {
    /// One node on this database.
    One(&'a str),
    /// A committee of this many nodes.
    Committee(usize),
}

/// Writes a service's configuration as TOML, with a line saying where it came from.
fn write_config(file: &Path, config: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = toml::to_string(config)?;
    std::fs::write(
        file,
        format!(
            "# Written by `scrip demo`; `scrip ROLE config example` explains every field.\n{text}"
        ),
    )
    .with_context(|| format!("cannot write {}", file.display()))
}

fn sqlite_url(file: &Path) -> String {
    format!("sqlite://{}", file.display())
}

async fn bound(addr: &str) -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok((listener, url))
}

impl Consortium {
    /// Starts a ledger and `names.len()` operators (each issuer, redeemer and admin) under
    /// `dir`, every service on a free loopback port.
    pub async fn start(dir: &Path, names: &[&str], mode: Mode) -> anyhow::Result<Self> {
        let ledger_db = sqlite_url(&dir.join("ledger.db"));
        Self::start_with_ledger(dir, names, mode, &ledger_db).await
    }

    /// [`Consortium::start`] with the ledger on the database `ledger_db` (which must be empty).
    pub async fn start_with_ledger(
        dir: &Path,
        names: &[&str],
        mode: Mode,
        ledger_db: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with_issuer_limits(dir, names, mode, ledger_db, RateLimitConfig::default())
            .await
    }

    /// [`Consortium::start_with_ledger`] with `rate_limit` at every issuer (for tests that
    /// send one card many refused requests on purpose).
    pub async fn start_with_issuer_limits(
        dir: &Path,
        names: &[&str],
        mode: Mode,
        ledger_db: &str,
        rate_limit: RateLimitConfig,
    ) -> anyhow::Result<Self> {
        Self::start_inner(dir, names, mode, LedgerKind::One(ledger_db), rate_limit).await
    }

    /// [`Consortium::start`] on a committee ledger of `nodes` nodes in this process, each
    /// on its own SQLite file (`node-I.db`), run by the operators in turn.
    pub async fn start_committee(
        dir: &Path,
        names: &[&str],
        mode: Mode,
        nodes: usize,
    ) -> anyhow::Result<Self> {
        Self::start_inner(
            dir,
            names,
            mode,
            LedgerKind::Committee(nodes),
            RateLimitConfig::default(),
        )
        .await
    }

    async fn start_inner(
        dir: &Path,
        names: &[&str],
        mode: Mode,
        ledger_kind: LedgerKind<'_>,
        rate_limit: RateLimitConfig,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let ledger_key = OperatorKey::generate();
        scrip_spec::secret_file::write_private(
            &dir.join("ledger.key"),
            ledger_key.to_text().as_bytes(),
            true,
        )?;
        let mut keys = Vec::new();
        for name in names {
            let key = OperatorKey::generate();
            scrip_spec::secret_file::write_private(
                &dir.join(format!("{name}.key")),
                key.to_text().as_bytes(),
                true,
            )?;
            keys.push(key);
        }
        let operators = names
            .iter()
            .zip(&keys)
            .map(|(n, k)| local::member(n, k, &[Role::Issuer, Role::Redeemer, Role::Admin]))
            .collect();
        let (ledger, ledger_nodes) = match ledger_kind {
            LedgerKind::One(ledger_db) => {
                let ledger = local::init(ledger_db, ledger_key, NAME, operators).await?;
                let ledger = Arc::new(ledger);
                let url = local::serve(
                    ledger.clone(),
                    "127.0.0.1:0".parse()?,
                    std::future::pending(),
                )
                .await?;
                (ledger, vec![url])
            }
            LedgerKind::Committee(nodes) => {
                let committee = local::serve_committee(dir, nodes, NAME, operators).await?;
                let ledger = committee
                    .ledgers
                    .first()
                    .cloned()
                    .context("a committee has at least one node")?;
                (ledger, committee.urls)
            }
        };
        let ledger_url = ledger_nodes[0].clone();
        // A committee orders each request in a few hundred milliseconds and every node
        // commits each one: fewer, larger spend batches serve it better.
        let batch_wait_ms = if ledger_nodes.len() > 1 {
            COMMITTEE_BATCH_WAIT_MS
        } else {
            0
        };

        // The files to run this consortium by hand once the demo is over: standard ports,
        // paths relative to the directory (read from each file's own directory).
        write_config(
            &dir.join("ledger.toml"),
            &scrip_ledger::LedgerConfig::new(
                "127.0.0.1:7400".parse()?,
                "sqlite://ledger.db".into(),
                "ledger.key".into(),
            ),
        )?;
        let mut operators = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let port = |base: u16| u16::try_from(i).map(|i| base + i);
            write_config(
                &dir.join(format!("{name}-issuer.toml")),
                &IssuerConfig {
                    name: (*name).to_owned(),
                    listen: std::net::SocketAddr::from(([127, 0, 0, 1], port(7500)?)),
                    database: format!("sqlite://{name}-issuer.db"),
                    operator_key_file: format!("{name}.key").into(),
                    keys_dir: format!("{name}-keys").into(),
                    ledger_url: "http://127.0.0.1:7400".into(),
                    issue_days: 7,
                    redeem_days: 13,
                    forget_days: 7,
                    report_secs: 3600,
                    ledger_wait_secs: 300,
                    rate_limit: RateLimitConfig::default(),
                },
            )?;
            write_config(
                &dir.join(format!("{name}-redeemer.toml")),
                &RedeemerConfig {
                    name: (*name).to_owned(),
                    listen: std::net::SocketAddr::from(([127, 0, 0, 1], port(7600)?)),
                    database: format!("sqlite://{name}-redeemer.db"),
                    operator_key_file: format!("{name}.key").into(),
                    ledger_url: "http://127.0.0.1:7400".into(),
                    mode,
                    grant_ttl_secs: 300,
                    batch_max: 1000,
                    batch_wait_ms: 0,
                    key_refresh_secs: 60,
                    rate_limit: scrip_redeemer::RedeemRateLimit::default(),
                    ledger_wait_secs: 300,
                },
            )?;
            write_config(
                &dir.join(format!("{name}-relay.toml")),
                &RelayConfig {
                    listen: std::net::SocketAddr::from(([127, 0, 0, 1], port(7700)?)),
                    sidecar: format!("http://127.0.0.1:{}", port(7600)?),
                    ..RelayConfig::new(format!("{name}-relay").into())
                },
            )?;
            let issuer = Arc::new(
                Issuer::open(IssuerConfig {
                    name: (*name).to_owned(),
                    listen: "127.0.0.1:0".parse()?,
                    database: sqlite_url(&dir.join(format!("{name}-issuer.db"))),
                    operator_key_file: dir.join(format!("{name}.key")),
                    keys_dir: dir.join(format!("{name}-keys")),
                    ledger_url: ledger_url.clone(),
                    issue_days: 7,
                    redeem_days: 13,
                    forget_days: 7,
                    report_secs: 3600,
                    ledger_wait_secs: 300,
                    rate_limit: rate_limit.clone(),
                })
                .await?,
            );
            let issuer_app = scrip_issuer::Application::new(issuer.clone()).await?;
            let issuer_url = format!("http://{}", issuer_app.local_addr()?);
            tokio::spawn(issuer_app.run_until(std::future::pending()));

            let redeemer = Redeemer::start(RedeemerConfig {
                name: (*name).to_owned(),
                listen: "127.0.0.1:0".parse()?,
                database: sqlite_url(&dir.join(format!("{name}-redeemer.db"))),
                operator_key_file: dir.join(format!("{name}.key")),
                ledger_url: ledger_url.clone(),
                mode,
                grant_ttl_secs: 300,
                batch_max: 1000,
                batch_wait_ms,
                key_refresh_secs: 60,
                // Every client of a consortium on loopback is one source (127.0.0.1): the
                // load generator (`scrip bench`) would be held to the per-source limit.
                rate_limit: scrip_redeemer::RedeemRateLimit::off(),
                // The ledger above is already serving.
                ledger_wait_secs: 0,
            })
            .await?;
            let redeemer_app = scrip_redeemer::Application::new(redeemer.clone()).await?;
            let redeemer_url = format!("http://{}", redeemer_app.local_addr()?);
            tokio::spawn(redeemer_app.run_until(std::future::pending()));

            let (listener, relay_url) = bound("127.0.0.1:0").await?;
            tokio::spawn(example_relay::serve(
                listener,
                RelayConfig {
                    sidecar: redeemer_url.clone(),
                    ..RelayConfig::new(dir.join(format!("{name}-relay")))
                },
                std::future::pending(),
            ));
            operators.push(Operator {
                name: (*name).to_owned(),
                issuer,
                issuer_url,
                redeemer,
                redeemer_url,
                relay_url,
            });
        }
        Ok(Self {
            dir: dir.to_owned(),
            ledger_url,
            ledger_nodes,
            ledger,
            operators,
        })
    }
}
