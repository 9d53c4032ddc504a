//! `scrip`: one binary for every role of the scrip consortium.

mod operator;

use clap::{Parser, Subcommand};

/// Anonymous capacity vouchers for relay networks run by several operators.
///
/// Issuers sell gift cards; a wallet opens a card into blind-signed Privacy Pass tokens; a
/// token is spent at any member's relay for a message queue or a file chunk; a shared ledger
/// stops double spending. Run `scrip <command> --help` for each role.
#[derive(Debug, Parser)]
#[command(name = "scrip", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Operator identities: Ed25519 keys that sign everything an operator submits.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Operator(cmd) => operator::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
