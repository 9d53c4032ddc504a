//! `scrip operator …`: operator key management.

use anyhow::{Context as _, bail};
use clap::Subcommand;
use scrip_spec::OperatorKey;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Generate an operator key pair: writes the private key to FILE (readable by its owner
    /// only) and prints the public key, which goes into the ledger's genesis or an admission.
    Keygen {
        /// Where to write the private key.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists (the old key is lost).
        #[arg(long)]
        force: bool,
    },
    /// Print the public key of an existing private key file.
    Show {
        /// The private key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

pub fn run(cmd: OperatorCommand) -> anyhow::Result<()> {
    match cmd {
        OperatorCommand::Keygen { out, force } => {
            let key = OperatorKey::generate();
            write_private_file(&out, key.to_text().as_bytes(), force)?;
            println!("{}", key.id());
            eprintln!(
                "wrote the private key to {} (mode 0600); the line above is the public key",
                out.display()
            );
            Ok(())
        }
        OperatorCommand::Show { key } => {
            let text = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read key file {}", key.display()))?;
            let key = OperatorKey::from_text(&text)
                .with_context(|| format!("{} is not an operator key file", key.display()))?;
            println!("{}", key.id());
            Ok(())
        }
    }
}

/// Writes a secret to a new file with mode 0600, set at creation so it is never readable by
/// others, even for an instant.
fn write_private_file(path: &Path, contents: &[u8], replace: bool) -> anyhow::Result<()> {
    if path.exists() && !replace {
        bail!(
            "{} already exists; pass --force to replace it (the key in it will be lost)",
            path.display()
        );
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move the key into place at {}", path.display()))?;
    Ok(())
}
