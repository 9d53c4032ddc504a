//! `scrip operator …`: operator key management.

use clap::Subcommand;
use scrip_spec::OperatorKey;
use scrip_spec::secret_file::{SecretFileError, write_private};
use std::path::PathBuf;

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
    /// Write a proposal for a change to the consortium's rules (admit or remove a member,
    /// change roles, the catalog, revoke any key), to be approved by a quorum of admins.
    Propose {
        /// The ledger's URL (for its id and its governance_seq).
        #[arg(long, value_name = "URL")]
        ledger: String,
        /// Where to write the proposal (JSON).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The change.
        #[command(subcommand)]
        change: crate::governance::ChangeArg,
    },
    /// Add an admin's approval to a proposal file.
    Approve {
        /// The proposal file.
        proposal: PathBuf,
        /// The admin's private key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Send an approved proposal to the ledger, signed by any member's key.
    Submit {
        /// The proposal file.
        proposal: PathBuf,
        /// The ledger's URL.
        #[arg(long, value_name = "URL")]
        ledger: String,
        /// The submitting member's private key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

pub fn run(cmd: OperatorCommand) -> anyhow::Result<()> {
    match cmd {
        OperatorCommand::Keygen { out, force } => {
            let key = OperatorKey::generate();
            write_private(&out, key.to_text().as_bytes(), force).map_err(|e| match e {
                SecretFileError::Exists { path } => anyhow::anyhow!(
                    "{path} already exists; pass --force to replace it (the key in it will be lost)"
                ),
                other => other.into(),
            })?;
            println!("{}", key.id());
            eprintln!(
                "wrote the private key to {} (mode 0600); the line above is the public key",
                out.display()
            );
            Ok(())
        }
        OperatorCommand::Show { key } => {
            let key = OperatorKey::read_file(&key)?;
            println!("{}", key.id());
            Ok(())
        }
        OperatorCommand::Propose {
            ledger,
            out,
            change,
        } => crate::runtime()?.block_on(crate::governance::propose(&ledger, &out, change)),
        OperatorCommand::Approve { proposal, key } => crate::governance::approve(&proposal, &key),
        OperatorCommand::Submit {
            proposal,
            ledger,
            key,
        } => crate::runtime()?.block_on(crate::governance::submit(&proposal, &ledger, &key)),
    }
}
