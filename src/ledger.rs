//! `scrip ledger …`: create, serve and maintain the consortium's ledger.

use anyhow::Context as _;
use clap::Subcommand;
use scrip_ledger::config::GenesisFile;
use scrip_ledger::{Application, Ledger, LedgerConfig};
use scrip_spec::{OperatorKey, TokenKeyId};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Create a ledger from a genesis file: the founding operators with their public keys and
    /// roles, and the capacity catalog. Writes entry 0 into the database.
    Init {
        /// The genesis file (TOML: ledger_name, [[operators]] name/id/roles, optional [catalog]).
        #[arg(long, value_name = "FILE")]
        genesis: PathBuf,
        /// The ledger's own key file (from `scrip operator keygen`); it signs checkpoints.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// `sqlite://PATH` or `postgres://…`.
        #[arg(long, value_name = "URL")]
        database: String,
    },
    /// Run the ledger's HTTP service until interrupted (SIGINT or SIGTERM).
    #[command(after_long_help = scrip_ledger::config::SCHEMA.help())]
    Serve {
        /// The configuration file (TOML; `scrip ledger config example` prints one with every
        /// field): listen, database, key_file, checkpoint_secs. SCRIP_LEDGER_LISTEN,
        /// SCRIP_LEDGER_DATABASE, SCRIP_LEDGER_KEY_FILE and SCRIP_LEDGER_CHECKPOINT_SECS
        /// override it; relative paths are read from the file's directory.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// The configuration file of `ledger serve`.
    #[command(subcommand)]
    Config(crate::config_example::ConfigCommand),
    /// Drop the spent set of a key past its forget_after, keeping a signed count and
    /// commitment in the log. Run it while the ledger service is stopped.
    Prune {
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The key id (base64url), as the key directory shows it.
        #[arg(long, value_name = "KEY_ID", allow_hyphen_values = true)]
        key_id: String,
    },
}

fn read_key(path: &Path) -> anyhow::Result<OperatorKey> {
    Ok(OperatorKey::read_file(path)?)
}

pub async fn run(cmd: LedgerCommand) -> anyhow::Result<()> {
    match cmd {
        LedgerCommand::Init {
            genesis,
            key,
            database,
        } => {
            let key = read_key(&key)?;
            let genesis = GenesisFile::load(&genesis)?.into_genesis(key.id(), scrip_spec::now())?;
            let store = scrip_ledger::connect(&database)
                .await
                .with_context(|| "cannot open the database")?;
            let ledger = Ledger::init(store, key, genesis).await?;
            let info = ledger.info().await;
            println!("ledger {} created", info.ledger_id);
            if !info.genesis.committee.is_empty() {
                let n = info.genesis.committee.len();
                let owner = info
                    .genesis
                    .committee
                    .iter()
                    .find(|m| m.node_key == ledger.key().id())
                    .map_or_else(
                        || {
                            "a node that joins later: it follows the log until the committee \
                             admits it (set peer_listen)"
                                .to_owned()
                        },
                        |m| format!("node {}'s", m.operator),
                    );
                println!(
                    "committee: {n} nodes, tolerating {} faulty; this database is {owner}",
                    scrip_spec::committee::max_faulty(n),
                );
            }
            println!(
                "members: {}",
                info.operators
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        LedgerCommand::Config(cmd) => {
            crate::config_example::run(&scrip_ledger::config::SCHEMA, cmd)
        }
        LedgerCommand::Serve { config } => {
            let config = LedgerConfig::load(&config)?;
            let app = Application::build(&config).await?;
            tracing::info!(address = %app.local_addr()?, "ledger listening");
            app.run_until(crate::shutdown_signal()).await?;
            tracing::info!("ledger stopped");
            Ok(())
        }
        LedgerCommand::Prune { config, key_id } => {
            let config = LedgerConfig::load(&config)?;
            let id = scrip_spec::encoding::b64_decode(&key_id)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(TokenKeyId)
                .context("a key id is 32 bytes in unpadded base64url")?;
            let store = scrip_ledger::connect(&config.database).await?;
            let ledger = Arc::new(Ledger::open(store, read_key(&config.key_file)?).await?);
            match ledger.prune(&id).await? {
                Some(entry) => println!("pruned key {key_id}; the record is entry {}", entry.seq),
                None => println!("key {key_id} had no spent tokens left to prune"),
            }
            Ok(())
        }
    }
}
