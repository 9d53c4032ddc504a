//! The ledger service's configuration: a TOML file, each field overridable by environment.

use scrip_common::config::{Field, Schema};
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
        config.database = scrip_common::config::sqlite_relative_to(path, &config.database);
        Ok(config)
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

    /// The genesis entry, with the ledger key and creation time.
    pub fn into_genesis(
        self,
        ledger_key: scrip_spec::OperatorId,
        created_at: scrip_spec::UnixSeconds,
    ) -> scrip_spec::ledger::Genesis {
        scrip_spec::ledger::Genesis {
            ledger_name: self.ledger_name,
            ledger_key,
            created_at,
            operators: self.operators,
            catalog: self.catalog.unwrap_or_else(scrip_spec::Catalog::standard),
            admin_quorum: self.admin_quorum,
            min_redeem_window: self
                .min_redeem_window
                .unwrap_or(scrip_spec::ledger::DEFAULT_MIN_REDEEM_WINDOW),
        }
    }
}
