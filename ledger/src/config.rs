//! The ledger service's configuration: a TOML file, each field overridable by environment.

use scrip_common::config::{Field, Schema, UNSET};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Every field of `ledger.toml`: what `scrip ledger config example` prints and `--help` lists.
pub const SCHEMA: Schema = Schema {
    role: "ledger",
    fields: &[
        Field {
            name: "listen",
            doc: "Address to listen on.",
            default: Some("\"127.0.0.1:7400\""),
            example: "",
            env: Some("SCRIP_LEDGER_LISTEN"),
        },
        Field {
            name: "database",
            doc: "The ledger's database: sqlite://PATH (created by `scrip ledger init`) or postgres://USER@HOST/DB.",
            default: None,
            example: "\"sqlite://ledger.db\"",
            env: Some("SCRIP_LEDGER_DATABASE"),
        },
        Field {
            name: "key_file",
            doc: "The ledger's own key file (`scrip operator keygen`); it signs checkpoints.",
            default: None,
            example: "\"ledger.key\"",
            env: Some("SCRIP_LEDGER_KEY_FILE"),
        },
        Field {
            name: "checkpoint_secs",
            doc: "Seconds between checkpoints, made when the log has grown.",
            default: Some("300"),
            example: "",
            env: Some("SCRIP_LEDGER_CHECKPOINT_SECS"),
        },
        Field {
            name: "peer_listen",
            doc: "Committee ledgers: where this node listens for the other nodes; if unset, the peer_address the committee in the log gives this node. Required for a node that joins later (its genesis does not name it): the address it is to be admitted with.",
            default: Some(UNSET),
            example: "\"0.0.0.0:7410\"",
            env: Some("SCRIP_LEDGER_PEER_LISTEN"),
        },
        Field {
            name: "consensus_dir",
            doc: "Committee ledgers: the directory of this node's consensus backup (keep it with the database, and back them up together: a node restarted without the backup of its session sits that session out).",
            default: Some("\"consensus\""),
            example: "",
            env: Some("SCRIP_LEDGER_CONSENSUS_DIR"),
        },
        Field {
            name: "unit_delay_ms",
            doc: "Committee ledgers: milliseconds between this node's consensus units; a request is ordered in about three of these.",
            default: Some("50"),
            example: "",
            env: Some("SCRIP_LEDGER_UNIT_DELAY_MS"),
        },
        Field {
            name: "session_rounds",
            doc: "Committee ledgers: consensus rounds per session (every node of the committee must use the same value).",
            default: Some("20000"),
            example: "",
            env: Some("SCRIP_LEDGER_SESSION_ROUNDS"),
        },
        Field {
            name: "order_wait_secs",
            doc: "Committee ledgers: how long a submitted request waits to be ordered before the node answers 503.",
            default: Some("10"),
            example: "",
            env: Some("SCRIP_LEDGER_ORDER_WAIT_SECS"),
        },
        Field {
            name: "first_start",
            doc: "Committee ledgers: true only for the first start of a node whose key never took part in the committee before. A node whose database never ran a consensus session, yet whose key was in the committee of an earlier session, otherwise orders nothing: it may have lost its database and its backup, and cannot know which units it signed (PROTOCOL.md 11.12). Such a node comes back under a new node key.",
            default: Some("false"),
            example: "",
            env: Some("SCRIP_LEDGER_FIRST_START"),
        },
        Field {
            name: "catch_up_from",
            doc: "Committee ledgers: API URLs of nodes of this ledger to read the log from when most of the committee of this node's session is gone (a node down across a change that retired them). Trusted for nothing: the node applies what they serve only up to a head a certificate of the committee vouches for (PROTOCOL.md 11.12). Any node of the current committee will do.",
            default: Some("[]"),
            example: "[\"http://ledger.example.net:7400\"]",
            env: None,
        },
    ],
};

/// `scrip ledger serve` settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// Address to listen on (`SCRIP_LEDGER_LISTEN`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://…` (`SCRIP_LEDGER_DATABASE`).
    pub database: String,
    /// The ledger's private key file (`SCRIP_LEDGER_KEY_FILE`).
    pub key_file: PathBuf,
    /// Seconds between checkpoints when the log has grown (`SCRIP_LEDGER_CHECKPOINT_SECS`).
    #[serde(default = "default_checkpoint_secs")]
    pub checkpoint_secs: u64,
    /// Where this node listens for the other nodes (`SCRIP_LEDGER_PEER_LISTEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<SocketAddr>,
    /// This node's consensus backup (`SCRIP_LEDGER_CONSENSUS_DIR`).
    #[serde(default = "default_consensus_dir")]
    pub consensus_dir: PathBuf,
    /// Milliseconds between units (`SCRIP_LEDGER_UNIT_DELAY_MS`).
    #[serde(default = "default_unit_delay_ms")]
    pub unit_delay_ms: u64,
    /// Rounds per session (`SCRIP_LEDGER_SESSION_ROUNDS`).
    #[serde(default = "default_session_rounds")]
    pub session_rounds: u16,
    /// Seconds a submitted request waits to be ordered (`SCRIP_LEDGER_ORDER_WAIT_SECS`).
    #[serde(default = "default_order_wait_secs")]
    pub order_wait_secs: u64,
    /// The first start of a node whose key never took part (`SCRIP_LEDGER_FIRST_START`).
    #[serde(default)]
    pub first_start: bool,
    /// Nodes to catch up from when most of the session's committee is gone.
    #[serde(default)]
    pub catch_up_from: Vec<String>,
}

fn default_consensus_dir() -> PathBuf {
    PathBuf::from("consensus")
}

fn default_unit_delay_ms() -> u64 {
    50
}

fn default_session_rounds() -> u16 {
    20_000
}

fn default_order_wait_secs() -> u64 {
    10
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7400))
}

fn default_checkpoint_secs() -> u64 {
    300
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("the configuration file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The genesis file is not complete.
    #[error("the genesis file is incomplete: {message}")]
    Genesis {
        /// What is missing.
        message: String,
    },
    /// An environment override is not valid.
    #[error("environment variable {message}")]
    Env {
        /// The variable and what is wrong with its value.
        message: String,
    },
}

impl LedgerConfig {
    /// Reads `path`, then applies the `SCRIP_LEDGER_*` environment overrides.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Self = SCHEMA.parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        SCHEMA
            .apply_env(&mut config, |name| std::env::var(name).ok())
            .map_err(|message| ConfigError::Env { message })?;
        // Relative paths are the file's, not the working directory's.
        config.key_file = scrip_common::config::relative_to(path, &config.key_file);
        config.consensus_dir = scrip_common::config::relative_to(path, &config.consensus_dir);
        config.database = scrip_common::config::sqlite_relative_to(path, &config.database);
        Ok(config)
    }
}

impl LedgerConfig {
    /// A configuration with every optional field at its default.
    pub fn new(listen: SocketAddr, database: String, key_file: PathBuf) -> Self {
        Self {
            listen,
            database,
            key_file,
            checkpoint_secs: default_checkpoint_secs(),
            peer_listen: None,
            consensus_dir: default_consensus_dir(),
            unit_delay_ms: default_unit_delay_ms(),
            session_rounds: default_session_rounds(),
            order_wait_secs: default_order_wait_secs(),
            first_start: false,
            catch_up_from: Vec::new(),
        }
    }

    /// How this node takes part in its committee's consensus; `None` for a one-node ledger.
    pub fn node_settings(
        &self,
        ledger: &crate::Ledger,
    ) -> Result<Option<crate::node::NodeSettings>, ConfigError> {
        let view = ledger.view();
        if view.genesis.committee.is_empty() {
            return Ok(None);
        }
        let me = ledger.key().id();
        let member = view.latest_committee().iter().find(|m| m.node_key == me);
        let peer_listen = match (self.peer_listen, member) {
            (Some(address), _) => address,
            (None, None) => {
                return Err(ConfigError::Genesis {
                    message: "this node's key is not in the committee its log holds; a node \
                              that joins sets peer_listen to the peer address it is admitted \
                              with, and follows the log until it is admitted"
                        .into(),
                });
            }
            (None, Some(member)) => member.peer_address.parse().map_err(|_| ConfigError::Genesis {
                message: format!(
                    "the genesis gives this node the peer address {:?}, which is not IP:PORT; set peer_listen",
                    member.peer_address
                ),
            })?,
        };
        Ok(Some(crate::node::NodeSettings {
            peer_listen,
            consensus_dir: self.consensus_dir.clone(),
            unit_delay: std::time::Duration::from_millis(self.unit_delay_ms.max(1)),
            session_rounds: self.session_rounds.max(10),
            order_wait: std::time::Duration::from_secs(self.order_wait_secs.max(1)),
            first_start: self.first_start,
            catch_up_from: self.catch_up_from.clone(),
        }))
    }
}

fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        let mut c: LedgerConfig =
            toml_from_str("database = \"sqlite://l.db\"\nkey_file = \"l.key\"\n").expect("valid");
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.checkpoint_secs, 300);
        SCHEMA
            .apply_env(&mut c, |n| {
                (n == "SCRIP_LEDGER_LISTEN").then(|| "127.0.0.1:9".to_string())
            })
            .expect("valid override");
        assert_eq!(c.listen.port(), 9);
        assert!(
            SCHEMA
                .apply_env(&mut c, |n| (n == "SCRIP_LEDGER_CHECKPOINT_SECS")
                    .then(|| "x".into()))
                .is_err()
        );
        assert!(toml_from_str::<LedgerConfig>("database = 1").is_err());
        assert!(
            toml_from_str::<LedgerConfig>("database = \"a\"\nkey_file = \"b\"\nextra = 1").is_err()
        );
    }

    #[test]
    fn the_example_names_every_field_with_its_true_default() {
        SCHEMA
            .check_against::<LedgerConfig>()
            .expect("the schema matches the config");
    }

    #[test]
    fn relative_paths_are_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ledger.toml");
        std::fs::write(
            &file,
            "database = \"sqlite://l.db\"\nkey_file = \"l.key\"\n",
        )
        .expect("write");
        let c = LedgerConfig::load(&file).expect("load");
        assert_eq!(c.key_file, dir.path().join("l.key"));
        assert_eq!(
            c.database,
            format!("sqlite://{}", dir.path().join("l.db").display())
        );
    }
}

/// The genesis file `scrip ledger init` reads (TOML): the ledger's name, the founding members
/// and, optionally, the catalog (the standard one otherwise). The ledger key and the creation
/// time are added by `init`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    /// A name for people.
    pub ledger_name: String,
    /// The founding members.
    pub operators: Vec<scrip_spec::ledger::OperatorInfo>,
    /// The catalog; the standard catalog if absent.
    pub catalog: Option<scrip_spec::Catalog>,
    /// Distinct admin approvals a governance change needs; a majority of the admins if absent.
    pub admin_quorum: Option<u32>,
    /// Seconds a key must still be spendable when announced; one hour if absent.
    pub min_redeem_window: Option<u64>,
    /// The nodes of a replicated ledger; a one-node ledger if absent. Every node runs
    /// `scrip ledger init` on the same file, so the file also fixes `created_at`.
    #[serde(default)]
    pub committee: Vec<scrip_spec::committee::CommitteeMember>,
    /// When the ledger was created (Unix seconds): required with a committee, so that every
    /// node writes the same genesis; the time of `init` otherwise.
    pub created_at: Option<u64>,
}

impl GenesisFile {
    /// Reads a genesis file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml_from_str(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// The genesis entry. A one-node ledger gets `key` as its ledger key and `now` as its
    /// creation time. A committee ledger has no ledger key (all zeros: no single key speaks
    /// for it) and takes its creation time from the file, so every node's genesis, and so
    /// its ledger id, is the same.
    pub fn into_genesis(
        self,
        key: scrip_spec::OperatorId,
        now: scrip_spec::UnixSeconds,
    ) -> Result<scrip_spec::ledger::Genesis, ConfigError> {
        let (ledger_key, created_at) = if self.committee.is_empty() {
            (key, self.created_at.unwrap_or(now))
        } else {
            let created_at = self.created_at.ok_or_else(|| ConfigError::Genesis {
                message: "a genesis with a committee must set created_at, so that every node writes the same genesis".into(),
            })?;
            (scrip_spec::OperatorId([0; 32]), created_at)
        };
        Ok(scrip_spec::ledger::Genesis {
            ledger_name: self.ledger_name,
            ledger_key,
            created_at,
            operators: self.operators,
            catalog: self.catalog.unwrap_or_else(scrip_spec::Catalog::standard),
            admin_quorum: self.admin_quorum,
            min_redeem_window: self
                .min_redeem_window
                .unwrap_or(scrip_spec::ledger::DEFAULT_MIN_REDEEM_WINDOW),
            committee: self.committee,
        })
    }
}
