//! `scrip`: one binary for every role of the scrip consortium.

mod audit;
mod audit_html;
mod bench;
mod config_example;
mod governance;
mod issuer;
mod ledger;
mod operator;
mod redeemer;
mod relay;
mod wallet;

use clap::{Parser, Subcommand};

/// Anonymous capacity vouchers for relay networks run by several operators.
///
/// Issuers sell gift cards; a wallet opens a card into blind-signed Privacy Pass tokens; a
/// token is spent at any member's relay for a message queue or a file chunk; a shared ledger
/// stops double spending. Run `scrip <command> --help` for each role.
#[derive(Debug, Parser)]
#[command(name = "scrip", version, propagate_version = true)]
struct Cli {
    /// How log lines on standard error are written: `text` for people, `json` (one object
    /// per line) for log collectors. Colour only on a terminal, and never with NO_COLOR set.
    /// The level comes from RUST_LOG (default `info`).
    #[arg(
        long,
        global = true,
        value_name = "FORMAT",
        default_value = "text",
        env = "SCRIP_LOG_FORMAT"
    )]
    log_format: scrip_common::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole consortium on this machine (a ledger; two operators each with an issuer,
    /// a redeemer and a relay; a wallet) and walk through selling, opening, spending at both
    /// operators, a refused double spend, and an audit. Exits non-zero if any step misbehaves.
    Demo {
        /// Keep the consortium's files (databases, keys, wallet) in DIR instead of a
        /// temporary directory.
        #[arg(long, value_name = "DIR")]
        keep: Option<std::path::PathBuf>,
        /// Run the ledger as a committee of N nodes in this process, ordered by AlephBFT
        /// (PROTOCOL.md 11.12); 1 is the one-node ledger. With 4 nodes, one may fail or lie.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        nodes: u16,
    },
    /// Verify the ledger's log (hashes, signatures, the rules, checkpoints, cosignatures),
    /// recompute the totals, raise alarms and print who owes whom. Exit status: 0 clean (notes,
    /// such as spends not yet reported issued, included), 2 tampering, 3 alarms, 1 could not run.
    Audit(audit::AuditArgs),
    /// Load generator: issue and redeem tokens over HTTP against a consortium on loopback,
    /// and report throughput, latency percentiles and ratios to the in-process crypto rates.
    Bench(bench::BenchArgs),
    /// Operator identities: Ed25519 keys that sign everything an operator submits.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// The shared ledger: create it, serve it, prune it.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// An issuing operator: gift cards, token keys, the signing service.
    #[command(subcommand)]
    Issuer(issuer::IssuerCommand),
    /// A relay's side: the redeemer sidecar that checks tokens and gives grants.
    #[command(subcommand)]
    Redeemer(redeemer::RedeemerCommand),
    /// A relay: the example relay (queues and chunks for grants), and handing it a grant.
    #[command(subcommand)]
    Relay(relay::RelayCommand),
    /// A person's wallet: open cards into tokens, spend them, back them up.
    Wallet {
        /// The wallet file.
        #[arg(
            long,
            env = "SCRIP_WALLET",
            default_value = "scrip-wallet.db",
            global = true
        )]
        wallet: std::path::PathBuf,
        /// Print one JSON object on stdout instead of text, for apps that drive the CLI; a
        /// failure prints `{"error": {"code": ..., "message": ...}}` and exits 1.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: wallet::WalletCommand,
    },
}

/// The async runtime for the service commands.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Resolves on SIGINT or SIGTERM, so services shut down gracefully.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

async fn demo(keep: Option<std::path::PathBuf>, nodes: usize) -> anyhow::Result<()> {
    match keep {
        Some(dir) => {
            anyhow::ensure!(
                !dir.exists() || std::fs::read_dir(&dir)?.next().is_none(),
                "{} is not empty; give a new or empty directory to --keep",
                dir.display()
            );
            scrip::demo::run(&dir, true, nodes).await
        }
        None => {
            let dir = tempfile::tempdir()?;
            scrip::demo::run(dir.path(), false, nodes).await
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    scrip_common::logging::init(cli.log_format);
    if let Command::Audit(args) = cli.command {
        return match runtime().and_then(|rt| rt.block_on(audit::run(args))) {
            Ok(code) => std::process::ExitCode::from(code),
            Err(err) => {
                eprintln!("error: {err:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let result = match cli.command {
        Command::Audit(_) => Ok(()),
        Command::Bench(args) => runtime().and_then(|rt| rt.block_on(bench::run(args))),
        Command::Demo { keep, nodes } => {
            runtime().and_then(|rt| rt.block_on(demo(keep, usize::from(nodes))))
        }
        Command::Operator(cmd) => operator::run(cmd),
        Command::Ledger(cmd) => runtime().and_then(|rt| rt.block_on(ledger::run(cmd))),
        Command::Issuer(cmd) => runtime().and_then(|rt| rt.block_on(issuer::run(cmd))),
        Command::Redeemer(cmd) => runtime().and_then(|rt| rt.block_on(redeemer::run(cmd))),
        Command::Relay(cmd) => runtime().and_then(|rt| rt.block_on(relay::run(cmd))),
        Command::Wallet {
            wallet,
            json,
            command,
        } => runtime().and_then(|rt| rt.block_on(wallet::run(wallet, json, command))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
