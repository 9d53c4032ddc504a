//! The issuer's configuration: a TOML file with `SCRIP_ISSUER_*` environment overrides.

use scrip_common::config::{Field, Schema};
use scrip_common::ratelimit::SourceConfig;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Every field of `issuer.toml`: what `scrip issuer config example` prints and `--help` lists.
pub const SCHEMA: Schema = Schema {
    role: "issuer",
    fields: &[
        Field {
            name: "name",
            doc: "The operator's name on the ledger; also the issuer_name of its token challenges.",
            default: None,
            example: "\"op-a\"",
            env: None,
        },
        Field {
            name: "listen",
            doc: "Address to listen on.",
            default: Some("\"127.0.0.1:7500\""),
            example: "",
            env: Some("SCRIP_ISSUER_LISTEN"),
        },
        Field {
            name: "database",
            doc: "The issuer's database: sqlite://PATH (card hashes, openings, the ledger outbox).",
            default: None,
            example: "\"sqlite://issuer.db\"",
            env: Some("SCRIP_ISSUER_DATABASE"),
        },
        Field {
            name: "operator_key_file",
            doc: "The operator's Ed25519 key file (`scrip operator keygen`), which signs its announcements and reports.",
            default: None,
            example: "\"op-a.key\"",
            env: None,
        },
        Field {
            name: "keys_dir",
            doc: "Directory of the token private keys (files mode 0600, made by `scrip issuer keys rotate`).",
            default: None,
            example: "\"keys\"",
            env: None,
        },
        Field {
            name: "ledger_url",
            doc: "The ledger's base URL.",
            default: None,
            example: "\"http://127.0.0.1:7400\"",
            env: Some("SCRIP_ISSUER_LEDGER_URL"),
        },
        Field {
            name: "issue_days",
            doc: "Days a new key signs.",
            default: Some("7"),
            example: "",
            env: None,
        },
        Field {
            name: "redeem_days",
            doc: "Days after issue_until during which its tokens can still be spent.",
            default: Some("13"),
            example: "",
            env: None,
        },
        Field {
            name: "forget_days",
            doc: "Days after redeem_until before the ledger may forget the key's spent set.",
            default: Some("7"),
            example: "",
            env: None,
        },
        Field {
            name: "report_secs",
            doc: "Seconds between issuance reports to the ledger (serve also reports at start-up and on shutdown).",
            default: Some("3600"),
            example: "",
            env: None,
        },
        Field {
            name: "ledger_wait_secs",
            doc: "How long serve waits at start-up for a ledger not answering yet (0: give up at once). The local commands (cards mint, void, status, keys list) work without it, from what the ledger last said.",
            default: Some("300"),
            example: "",
            env: None,
        },
        Field {
            name: "rate_limit.window_secs",
            doc: "Window length in seconds.",
            default: Some("60"),
            example: "",
            env: None,
        },
        Field {
            name: "rate_limit.per_source",
            doc: "Failed attempts allowed per source per window (mistyped and unknown codes, refused requests); 0: no limit.",
            default: Some("10"),
            example: "",
            env: None,
        },
        Field {
            name: "rate_limit.per_card",
            doc: "Refused requests allowed per existing card per window; 0: no limit.",
            default: Some("10"),
            example: "",
            env: None,
        },
        Field {
            name: "rate_limit.unknown_code_ceiling",
            doc: "Unknown-code lookups in all per window, past which a source that caused one is refused before any lookup.",
            default: Some("600"),
            example: "",
            env: None,
        },
        Field {
            name: "rate_limit.trusted_proxies",
            doc: "Peers (a reverse proxy, a Tor front) whose header names the client.",
            default: Some("[]"),
            example: "",
            env: None,
        },
        Field {
            name: "rate_limit.header",
            doc: "The header a trusted proxy sets.",
            default: Some("\"x-forwarded-for\""),
            example: "",
            env: None,
        },
    ],
};

/// `scrip issuer …` settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The operator's name on the ledger; also the `issuer_name` of its token challenges.
    pub name: String,
    /// Address to listen on (`SCRIP_ISSUER_LISTEN`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `sqlite://PATH` (`SCRIP_ISSUER_DATABASE`).
    pub database: String,
    /// The operator's Ed25519 key file.
    pub operator_key_file: PathBuf,
    /// Directory of the token private keys (files mode 0600).
    pub keys_dir: PathBuf,
    /// The ledger's base URL (`SCRIP_ISSUER_LEDGER_URL`).
    pub ledger_url: String,
    /// Days a new key signs.
    #[serde(default = "default_issue_days")]
    pub issue_days: u64,
    /// Days after `issue_until` during which its tokens can still be spent.
    #[serde(default = "default_redeem_days")]
    pub redeem_days: u64,
    /// Days after `redeem_until` before the ledger may forget the key's spent set.
    #[serde(default = "default_forget_days")]
    pub forget_days: u64,
    /// Seconds between issuance reports to the ledger.
    #[serde(default = "default_report_secs")]
    pub report_secs: u64,
    /// How long `serve` waits at start-up for a ledger not answering yet.
    #[serde(default = "default_ledger_wait")]
    pub ledger_wait_secs: u64,
    /// Rate limits on card requests (`[rate_limit]`).
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

/// Rate limits on card requests, per fixed window (PROTOCOL.md section 9.6). Every field has
/// a default, so `[rate_limit]` may name only the ones it changes; a limit of 0 is no limit.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Window length in seconds.
    pub window_secs: u64,
    /// Failed attempts allowed per source per window: mistyped and unknown codes, and refused
    /// requests on existing cards. Over it, the source waits for the next window.
    pub per_source: u32,
    /// Refused requests allowed per existing card per window (an invalid opening, too few
    /// credits, a reused request id, a used or void card). Over it, the card waits.
    pub per_card: u32,
    /// Unknown-code lookups in all per window, past which a source that already caused one in
    /// the window is refused before any lookup. Sources that did not, and cards, go on.
    pub unknown_code_ceiling: u32,
    /// Peers (a reverse proxy, a Tor front) whose `header` names the client; other peers are
    /// counted under their own address whatever they send.
    pub trusted_proxies: Vec<IpAddr>,
    /// The header a trusted proxy sets (`X-Forwarded-For` by default).
    pub header: String,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            window_secs: 60,
            per_source: 10,
            per_card: 10,
            unknown_code_ceiling: 600,
            trusted_proxies: Vec::new(),
            header: SourceConfig::default().header,
        }
    }
}

impl RateLimitConfig {
    /// How to tell a request's source.
    pub fn sources(&self) -> SourceConfig {
        SourceConfig {
            trusted_proxies: self.trusted_proxies.clone(),
            header: self.header.to_ascii_lowercase(),
        }
    }

    /// Refuses a header that is not a valid HTTP header name.
    pub fn validate(&self) -> anyhow::Result<()> {
        axum::http::HeaderName::from_bytes(self.header.as_bytes())
            .map(|_| ())
            .map_err(|_| {
                anyhow::anyhow!("rate_limit.header {:?} is not a header name", self.header)
            })
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7500))
}
fn default_issue_days() -> u64 {
    7
}
/// 7 days issuing plus 13 redeeming is a lifetime under three weekly rotations, so a weekly
/// `keys rotate` never meets the limit of 3 live keys per kind (PROTOCOL.md section 4.4).
fn default_redeem_days() -> u64 {
    13
}
fn default_forget_days() -> u64 {
    7
}
fn default_report_secs() -> u64 {
    3600
}
fn default_ledger_wait() -> u64 {
    300
}

impl IssuerConfig {
    /// Reads `path` and applies the environment overrides.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut config: Self = SCHEMA.load(path)?;
        // Relative paths are the file's, not the working directory's.
        config.operator_key_file =
            scrip_common::config::relative_to(path, &config.operator_key_file);
        config.keys_dir = scrip_common::config::relative_to(path, &config.keys_dir);
        config.database = scrip_common::config::sqlite_relative_to(path, &config.database);
        config.rate_limit.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_names_every_field_with_its_true_default() {
        SCHEMA
            .check_against::<IssuerConfig>()
            .expect("the schema matches the config");
    }

    #[test]
    fn defaults_and_overrides() {
        let mut c: IssuerConfig = toml::from_str(
            "name = \"op-a\"\ndatabase = \"sqlite://i.db\"\noperator_key_file = \"k\"\n\
             keys_dir = \"keys\"\nledger_url = \"http://127.0.0.1:7400\"\n",
        )
        .expect("valid");
        assert_eq!((c.issue_days, c.redeem_days, c.report_secs), (7, 13, 3600));
        assert_eq!(c.rate_limit, RateLimitConfig::default());
        assert_eq!(c.rate_limit.sources().header, "x-forwarded-for");
        SCHEMA
            .apply_env(&mut c, |n| {
                (n == "SCRIP_ISSUER_DATABASE").then(|| "sqlite://other.db".into())
            })
            .expect("valid");
        assert_eq!(c.database, "sqlite://other.db");
        assert!(
            SCHEMA
                .apply_env(&mut c, |n| (n == "SCRIP_ISSUER_LISTEN")
                    .then(|| "nope".into()))
                .is_err()
        );
        assert!(toml::from_str::<IssuerConfig>("name = \"x\"\nunknown = 1").is_err());
    }

    #[test]
    fn rate_limits_name_only_what_they_change() {
        let c: IssuerConfig = toml::from_str(
            "name = \"op-a\"\ndatabase = \"sqlite://i.db\"\noperator_key_file = \"k\"\n\
             keys_dir = \"keys\"\nledger_url = \"http://127.0.0.1:7400\"\n\
             [rate_limit]\ntrusted_proxies = [\"127.0.0.1\", \"::1\"]\nheader = \"X-Real-IP\"\n\
             per_card = 3\n",
        )
        .expect("valid");
        let limits = &c.rate_limit;
        assert_eq!((limits.per_card, limits.per_source), (3, 10));
        let sources = limits.sources();
        assert_eq!(sources.trusted_proxies.len(), 2);
        assert_eq!(sources.header, "x-real-ip");
        assert!(limits.validate().is_ok());
        let bad = RateLimitConfig {
            header: "not a header".into(),
            ..RateLimitConfig::default()
        };
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<RateLimitConfig>("global = 600").is_err());
    }
}
