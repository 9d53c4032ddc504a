//! `scrip redeemer …`: the sidecar a relay calls, and an example relay.

use clap::Subcommand;
use scrip_redeemer::example_relay::{self, RelayConfig};
use scrip_redeemer::{Application, Redeemer, RedeemerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum RedeemerCommand {
    /// Run the redeemer sidecar (`POST /v1/redeem`, `POST /v1/grants/consume`) until
    /// interrupted. It binds to loopback unless configured otherwise.
    #[command(after_long_help = scrip_redeemer::config::SCHEMA.help())]
    Serve {
        /// The configuration file (TOML; `scrip redeemer config example` prints one with every
        /// field, and spec/INTEGRATION.md section 1 explains them). SCRIP_REDEEMER_LISTEN,
        /// SCRIP_REDEEMER_DATABASE and SCRIP_REDEEMER_LEDGER_URL override it; relative paths
        /// are read from the file's directory. A ledger not answering yet is waited for,
        /// ledger_wait_secs (300) at most.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// The configuration file of `redeemer serve`.
    #[command(subcommand)]
    Config(crate::config_example::ConfigCommand),
    /// Run the example relay: queues and file chunks, each only for a valid grant checked at
    /// the sidecar.
    ExampleRelay {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:7700")]
        listen: SocketAddr,
        /// The sidecar's base URL.
        #[arg(long, default_value = "http://127.0.0.1:7600")]
        sidecar: String,
        /// Where queues and chunks are stored.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// How long chunks are kept, in seconds (48 hours by default).
        #[arg(long, default_value_t = 48 * 3600)]
        chunk_ttl_secs: u64,
    },
}

pub async fn run(cmd: RedeemerCommand) -> anyhow::Result<()> {
    match cmd {
        RedeemerCommand::Config(cmd) => {
            crate::config_example::run(&scrip_redeemer::config::SCHEMA, cmd)?;
        }
        RedeemerCommand::Serve { config } => {
            let redeemer = Redeemer::start(RedeemerConfig::load(&config)?).await?;
            let app = Application::new(redeemer).await?;
            tracing::info!(address = %app.local_addr()?, "redeemer listening");
            app.run_until(crate::shutdown_signal()).await?;
            tracing::info!("redeemer stopped");
        }
        RedeemerCommand::ExampleRelay {
            listen,
            sidecar,
            data_dir,
            chunk_ttl_secs,
        } => {
            let listener = scrip_common::server::bind(listen).await?;
            tracing::info!(address = %listener.local_addr()?, "example relay listening");
            let config = RelayConfig {
                sidecar,
                data_dir,
                chunk_ttl: Duration::from_secs(chunk_ttl_secs),
            };
            example_relay::serve(listener, config, crate::shutdown_signal()).await?;
        }
    }
    Ok(())
}
