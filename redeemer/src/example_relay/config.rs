//! The example relay's configuration: a TOML file with `SCRIP_RELAY_*` environment overrides.

use scrip_common::config::{Field, Schema};
use scrip_spec::CapacityKind;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every field of `relay.toml`: what `scrip relay config example` prints and `--help` lists.
pub const SCHEMA: Schema = Schema {
    role: "relay",
    fields: &[
        Field {
            name: "listen",
            doc: "Address to listen on (the relay's public side; put TLS in front of it).",
            default: Some("\"127.0.0.1:7700\""),
            example: "",
            env: Some("SCRIP_RELAY_LISTEN"),
        },
        Field {
            name: "sidecar",
            doc: "The redeemer sidecar's base URL, on loopback (`scrip redeemer serve`).",
            default: Some("\"http://127.0.0.1:7600\""),
            example: "",
            env: Some("SCRIP_RELAY_SIDECAR"),
        },
        Field {
            name: "data_dir",
            doc: "Directory where queues and chunks are stored (made if missing).",
            default: None,
            example: "\"relay-data\"",
            env: Some("SCRIP_RELAY_DATA_DIR"),
        },
        Field {
            name: "download_kind",
            doc: "What one download from data_dir/downloads/ costs: a token of this kind, paid with Authorization: PrivateToken (RFC 9577).",
            default: Some("\"chunk-1m\""),
            example: "",
            env: None,
        },
        Field {
            name: "chunk_ttl_secs",
            doc: "Seconds a stored chunk is kept (48 hours, as XFTP keeps files).",
            default: Some("172800"),
            example: "",
            env: None,
        },
    ],
};

/// The relay's settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Address to listen on (`SCRIP_RELAY_LISTEN`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The sidecar's base URL, on loopback (`SCRIP_RELAY_SIDECAR`).
    #[serde(default = "default_sidecar")]
    pub sidecar: String,
    /// Where queues and chunks are kept (`SCRIP_RELAY_DATA_DIR`).
    pub data_dir: PathBuf,
    /// What one download from `data_dir/downloads/` costs.
    #[serde(default = "default_download_kind")]
    pub download_kind: CapacityKind,
    /// How long a chunk is kept, in seconds.
    #[serde(default = "default_chunk_ttl")]
    pub chunk_ttl_secs: u64,
}

fn default_download_kind() -> CapacityKind {
    CapacityKind::new("chunk-1m").expect("chunk-1m is a valid kind")
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7700))
}
fn default_sidecar() -> String {
    "http://127.0.0.1:7600".into()
}
fn default_chunk_ttl() -> u64 {
    48 * 3600
}

impl RelayConfig {
    /// The defaults, with data in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            listen: default_listen(),
            sidecar: default_sidecar(),
            data_dir,
            download_kind: default_download_kind(),
            chunk_ttl_secs: default_chunk_ttl(),
        }
    }

    /// How long a chunk is kept.
    pub fn chunk_ttl(&self) -> Duration {
        Duration::from_secs(self.chunk_ttl_secs)
    }

    /// Reads `path`, then applies the environment overrides; `data_dir` is read from the
    /// file's directory if relative.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut config: Self = SCHEMA.load(path)?;
        config.data_dir = scrip_common::config::relative_to(path, &config.data_dir);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_names_every_field_with_its_true_default() {
        SCHEMA
            .check_against::<RelayConfig>()
            .expect("the schema matches the config");
    }

    #[test]
    fn errors_name_the_field_and_paths_are_the_files() {
        let missing = SCHEMA.parse::<RelayConfig>("listen = \"127.0.0.1:1\"\n");
        let missing = missing.expect_err("data_dir is required");
        assert!(missing.contains("data_dir"), "{missing}");
        let bad = SCHEMA.parse::<RelayConfig>("data_dir = \"d\"\nchunk_ttl_secs = \"soon\"\n");
        let bad = bad.expect_err("not a number");
        assert!(bad.contains("line 2"), "{bad}");

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("relay.toml");
        std::fs::write(&file, "data_dir = \"relay-data\"\n").expect("write");
        let config = RelayConfig::load(&file).expect("loads");
        assert_eq!(config.data_dir, dir.path().join("relay-data"));
        assert_eq!(config.chunk_ttl(), Duration::from_secs(172_800));
    }
}
