//! `scrip redeemer …`: the sidecar a relay calls.

use clap::Subcommand;
use scrip_redeemer::{Application, Redeemer, RedeemerConfig};
use std::path::PathBuf;

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
    }
    Ok(())
}
