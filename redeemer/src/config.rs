//! The redeemer's configuration: TOML with `SCRIP_REDEEMER_*` environment overrides.

use scrip_common::config::{Field, Schema, UNSET};
use scrip_common::ratelimit::SourceConfig;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Every field of `redeemer.toml`: what `scrip redeemer config example` prints and `--help` lists.
pub const SCHEMA: Schema = Schema {
    role: "redeemer",
    fields: &[
        Field {
            name: "name",
            doc: "The operator's name on the ledger.",
            default: None,
            example: "\"op-a\"",
            env: None,
        },
        Field {
            name: "listen",
            doc: "Address to listen on; loopback, as the relay is its client.",
            default: Some("\"127.0.0.1:7600\""),
            example: "",
            env: Some("SCRIP_REDEEMER_LISTEN"),
        },
        Field {
            name: "database",
            doc: "The sidecar's database: sqlite://PATH (its grant key is kept beside it, PATH.grant-key).",
            default: None,
            example: "\"sqlite://redeemer.db\"",
            env: Some("SCRIP_REDEEMER_DATABASE"),
        },
        Field {
            name: "operator_key_file",
            doc: "The operator's Ed25519 key file (`scrip operator keygen`), which signs its spends.",
            default: None,
            example: "\"op-a.key\"",
            env: None,
        },
        Field {
            name: "ledger_url",
            doc: "The ledger's base URL.",
            default: None,
            example: "\"http://127.0.0.1:7400\"",
            env: Some("SCRIP_REDEEMER_LEDGER_URL"),
        },
        Field {
            name: "mode",
            doc: "\"strict\" grants only after the ledger committed the spend; \"optimistic\" grants at once and revokes if the ledger refuses.",
            default: Some("\"strict\""),
            example: "",
            env: None,
        },
        Field {
            name: "grant_ttl_secs",
            doc: "How long a grant stays valid, in seconds: minutes, for the relay call that follows.",
            default: Some("300"),
            example: "",
            env: None,
        },
        Field {
            name: "batch_max",
            doc: "Most spends in one signed ledger request (1 to 10000).",
            default: Some("1000"),
            example: "",
            env: None,
        },
        Field {
            name: "batch_wait_ms",
            doc: "How long, in milliseconds, a strict-mode batch gathers spends before it goes to the ledger. 0 sends at once what is queued; while the redeemer's last request is at the ledger (up to 500 ms; 16 at once at a committee), spends join the next batch anyway.",
            default: Some("0"),
            example: "",
            env: None,
        },
        Field {
            name: "key_refresh_secs",
            doc: "Seconds between refreshes of the ledger's key directory.",
            default: Some("60"),
            example: "",
            env: None,
        },
        Field {
            name: "ledger_wait_secs",
            doc: "How long serve waits at start-up for a ledger not answering yet (0: give up at once).",
            default: Some("300"),
            example: "",
            env: None,
        },
        Field {
            name: "rate_limit.per_source",
            doc: "Calls of POST /v1/redeem allowed per source per window, valid or not; 0 turns the limit off.
Unset: 1200 once trusted_proxies is set, off without it (the relay alone would share one count).",
            default: Some(UNSET),
            example: "1200",
            env: None,
        },
        Field {
            name: "rate_limit.window_secs",
            doc: "The window, in seconds.",
            default: Some("60"),
            example: "",
            env: None,
        },
        Field {
            name: "rate_limit.trusted_proxies",
            doc: "Peers (your relay, a reverse proxy) whose header names the client.",
            default: Some("[]"),
            example: "",
            env: None,
        },
        Field {
            name: "rate_limit.header",
            doc: "The header such a peer sets; the rightmost address that is not a trusted proxy is the client.",
            default: Some("\"x-forwarded-for\""),
            example: "",
            env: None,
        },
    ],
};

/// When a grant is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Only after the ledger has committed the spend (the default).
    #[default]
    Strict,
    /// After the local checks; the spend follows in the next batch, and a grant whose spend
    /// the ledger refuses is revoked.
    Optimistic,
}

/// `scrip redeemer serve` settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RedeemerConfig {
    /// The operator's name on the ledger.
    pub name: String,
    /// Where to listen; loopback by default (`SCRIP_REDEEMER_LISTEN`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `sqlite://PATH` (`SCRIP_REDEEMER_DATABASE`).
    pub database: String,
    /// The operator's Ed25519 key file.
    pub operator_key_file: PathBuf,
    /// The ledger's base URL (`SCRIP_REDEEMER_LEDGER_URL`).
    pub ledger_url: String,
    /// Strict or optimistic.
    #[serde(default)]
    pub mode: Mode,
    /// Seconds a grant stays valid.
    #[serde(default = "default_grant_ttl")]
    pub grant_ttl_secs: u64,
    /// Most spends in one ledger request.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// How long, in milliseconds, a batch gathers before it goes out (then it waits for a
    /// free ledger slot, gathering still).
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// Seconds between refreshes of the key directory.
    #[serde(default = "default_key_refresh")]
    pub key_refresh_secs: u64,
    /// The per-source limit on `POST /v1/redeem`.
    #[serde(default)]
    pub rate_limit: RedeemRateLimit,
    /// How long `serve` waits at start-up for a ledger that does not answer yet, in seconds
    /// (retrying with backoff and logging each try); 0 gives up at once.
    #[serde(default = "default_ledger_wait")]
    pub ledger_wait_secs: u64,
}

fn default_ledger_wait() -> u64 {
    300
}

/// `[rate_limit]`: at most `per_source` calls of `POST /v1/redeem` per source per
/// `window_secs`, answered 429 `rate_limited` beyond (PROTOCOL.md section 10.1).
///
/// The source is the peer's address, or the client's as a trusted proxy names it. A relay or
/// reverse proxy in front of the sidecar is usually its only peer, so it must be listed in
/// `trusted_proxies` and set `header`, or every wallet behind it shares one count (then raise
/// `per_source`, or set it to 0).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RedeemRateLimit {
    /// Calls allowed per source per window; 0 turns the limit off. Unset: 1200 once
    /// `trusted_proxies` is set, else off (see [`Self::per_source`]).
    #[serde(default)]
    pub per_source: Option<u32>,
    /// The window, in seconds.
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// Peers whose `header` names the client (see [`SourceConfig`]).
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
    /// The header such a peer sets (`x-forwarded-for` by default).
    #[serde(default = "default_header")]
    pub header: String,
}

impl Default for RedeemRateLimit {
    fn default() -> Self {
        Self {
            per_source: None,
            window_secs: default_window(),
            trusted_proxies: Vec::new(),
            header: default_header(),
        }
    }
}

impl RedeemRateLimit {
    /// No limit (for a load generator, or a front that limits by itself).
    pub fn off() -> Self {
        Self {
            per_source: Some(0),
            ..Self::default()
        }
    }

    /// The limit in force: `per_source` if set; unset, 1200 per window when trusted proxies
    /// are configured, and no limit without them. Without trusted proxies the sidecar's one
    /// peer is usually the relay itself, so a default limit would cap the whole relay (20
    /// redemptions a second) rather than any one wallet.
    pub fn per_source(&self) -> u32 {
        match self.per_source {
            Some(limit) => limit,
            None if self.trusted_proxies.is_empty() => 0,
            None => DEFAULT_PER_SOURCE,
        }
    }

    /// How a request's source is found.
    pub fn sources(&self) -> SourceConfig {
        SourceConfig {
            trusted_proxies: self.trusted_proxies.clone(),
            header: self.header.clone(),
        }
    }
}

/// The per-source limit once trusted proxies are configured, 1,200 a minute: 20 redemptions a
/// second, sustained for a minute, is far more than one wallet creating queues or uploading a
/// file's chunks needs, while a source sending invalid tokens is held to 20 signature checks a
/// second.
pub const DEFAULT_PER_SOURCE: u32 = 1200;
fn default_window() -> u64 {
    60
}
fn default_header() -> String {
    SourceConfig::default().header
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7600))
}
fn default_grant_ttl() -> u64 {
    300
}
fn default_batch_max() -> usize {
    1000
}
fn default_batch_wait_ms() -> u64 {
    0
}
fn default_key_refresh() -> u64 {
    60
}

impl RedeemerConfig {
    /// Reads `path`, then applies the environment overrides.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut config: Self = SCHEMA.load(path)?;
        // Relative paths are the file's, not the working directory's.
        config.operator_key_file =
            scrip_common::config::relative_to(path, &config.operator_key_file);
        config.database = scrip_common::config::sqlite_relative_to(path, &config.database);
        anyhow::ensure!(
            (1..=scrip_spec::ledger::MAX_SPEND_BATCH).contains(&config.batch_max),
            "batch_max must be 1 to {}",
            scrip_spec::ledger::MAX_SPEND_BATCH
        );
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_names_every_field_with_its_true_default() {
        SCHEMA
            .check_against::<RedeemerConfig>()
            .expect("the schema matches the config");
    }

    #[test]
    fn defaults_are_strict_and_loopback() {
        let c: RedeemerConfig = toml::from_str(
            "name = \"op\"\ndatabase = \"sqlite://r.db\"\noperator_key_file = \"k\"\nledger_url = \"http://l\"\n",
        )
        .expect("valid");
        assert_eq!(c.mode, Mode::Strict);
        assert!(c.listen.ip().is_loopback());
        let o: RedeemerConfig = toml::from_str(
            "name = \"op\"\ndatabase = \"d\"\noperator_key_file = \"k\"\nledger_url = \"l\"\nmode = \"optimistic\"\n",
        )
        .expect("valid");
        assert_eq!(o.mode, Mode::Optimistic);
        assert!(toml::from_str::<RedeemerConfig>("name = \"x\"\nmode = \"yolo\"").is_err());
        assert_eq!(c.rate_limit, RedeemRateLimit::default());
        assert_eq!(
            c.rate_limit.per_source(),
            0,
            "no trusted proxies: off by default"
        );
        assert_eq!(c.rate_limit.header, "x-forwarded-for");
    }

    #[test]
    fn the_default_limit_is_on_once_trusted_proxies_are_set() {
        let c: RedeemerConfig = toml::from_str(
            "name = \"op\"\ndatabase = \"d\"\noperator_key_file = \"k\"\nledger_url = \"l\"\n\
             [rate_limit]\ntrusted_proxies = [\"127.0.0.1\"]\n",
        )
        .expect("valid");
        assert_eq!(c.rate_limit.per_source(), DEFAULT_PER_SOURCE);
    }

    #[test]
    fn the_rate_limit_is_configurable_and_zero_is_off() {
        let c: RedeemerConfig = toml::from_str(
            "name = \"op\"\ndatabase = \"d\"\noperator_key_file = \"k\"\nledger_url = \"l\"\n\
             [rate_limit]\nper_source = 0\ntrusted_proxies = [\"10.0.0.1\"]\nheader = \"x-real-ip\"\n",
        )
        .expect("valid");
        assert_eq!(c.rate_limit.per_source(), 0);
        assert_eq!(c.rate_limit.window_secs, 60);
        let sources = c.rate_limit.sources();
        assert_eq!(
            sources.trusted_proxies,
            vec!["10.0.0.1".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(sources.header, "x-real-ip");
        assert!(
            toml::from_str::<RedeemerConfig>(
                "name = \"op\"\ndatabase = \"d\"\noperator_key_file = \"k\"\nledger_url = \"l\"\n\
                 [rate_limit]\nper_sourc = 5\n"
            )
            .is_err(),
            "a misspelt field is refused"
        );
    }
}
