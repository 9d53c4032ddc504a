//! `scrip relay …`: the example relay, its configuration, and handing a grant to a relay.

use anyhow::Context as _;
use clap::Subcommand;
use scrip_common::clients::RelayClient;
use scrip_redeemer::example_relay::{self, RelayConfig, chunk_kind};
use scrip_spec::GrantCode;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum RelayCommand {
    /// Run the example relay until interrupted: it creates message queues and stores file
    /// chunks, each only for a grant its redeemer sidecar accepts (spec/INTEGRATION.md
    /// section 9 is its HTTP API).
    #[command(after_long_help = example_relay::config::SCHEMA.help())]
    Serve {
        /// The configuration file (TOML; `scrip relay config example` prints one with every
        /// field). SCRIP_RELAY_LISTEN, SCRIP_RELAY_SIDECAR and SCRIP_RELAY_DATA_DIR override
        /// it; relative paths are read from the file's directory.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// The configuration file of `relay serve`.
    #[command(subcommand)]
    Config(crate::config_example::ConfigCommand),
    /// Hand a grant (from `scrip wallet spend`) to a relay: a `queue` grant creates a queue,
    /// a chunk grant stores FILE as a chunk; prints the new queue's or chunk's id. A grant
    /// is used once: a refused one says why (used, expired, another kind).
    Use {
        /// The grant code, `sg1.<kind>.<secret>`.
        grant: String,
        /// The relay's base URL.
        #[arg(
            long,
            value_name = "URL",
            default_value = "http://127.0.0.1:7700",
            env = "SCRIP_RELAY_URL"
        )]
        relay: String,
        /// For a chunk grant: the file to store (at most the size of the grant's class).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

pub async fn run(cmd: RelayCommand) -> anyhow::Result<()> {
    match cmd {
        RelayCommand::Config(cmd) => {
            crate::config_example::run(&example_relay::config::SCHEMA, cmd)?;
        }
        RelayCommand::Serve { config } => {
            let config = RelayConfig::load(&config)?;
            let listener = scrip_common::server::bind(config.listen).await?;
            tracing::info!(address = %listener.local_addr()?, sidecar = %config.sidecar, "relay listening");
            example_relay::serve(listener, config, crate::shutdown_signal()).await?;
            tracing::info!("relay stopped");
        }
        RelayCommand::Use { grant, relay, file } => use_grant(&grant, &relay, file).await?,
    }
    Ok(())
}

async fn use_grant(grant: &str, relay: &str, file: Option<PathBuf>) -> anyhow::Result<()> {
    let grant = GrantCode::parse(grant.trim())
        .context("not a grant code; `scrip wallet spend` prints one (sg1.<kind>.<secret>)")?;
    let client = RelayClient::new(relay);
    let kind = grant.kind().to_string();
    if kind == "queue" {
        anyhow::ensure!(
            file.is_none(),
            "a queue grant creates a queue; --file is for chunk grants"
        );
        let created = client
            .create_queue(&grant)
            .await
            .with_context(|| format!("the relay at {relay} did not create the queue"))?;
        println!("queue {} created at {relay}", created.queue_id);
        return Ok(());
    }
    let file = file.with_context(|| {
        format!("a {kind} grant stores a chunk: give the file with --file FILE")
    })?;
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    // The relay charges by size class: a grant of another class would be refused there.
    let class = chunk_kind(bytes.len()).with_context(|| {
        format!(
            "{} is {} bytes; a chunk is at most {} bytes",
            file.display(),
            bytes.len(),
            example_relay::MAX_CHUNK
        )
    })?;
    anyhow::ensure!(
        class == kind,
        "{} is {} bytes, a {class} chunk; this grant is for {kind} (spend a {class} token)",
        file.display(),
        bytes.len()
    );
    let mut id = [0u8; 16];
    rand::fill(&mut id);
    let id = scrip_spec::encoding::b64_encode(id);
    let len = bytes.len();
    let stored = client
        .put_chunk(&id, &grant, bytes)
        .await
        .with_context(|| format!("the relay at {relay} did not store the chunk"))?;
    println!(
        "chunk {} stored at {relay} ({}, {len} bytes)",
        stored.chunk_id, stored.kind
    );
    Ok(())
}
