//! `scrip ROLE config …`: the configuration file of a service, documented by the service's own
//! field table (`scrip_common::config::Schema`).

use clap::Subcommand;
use scrip_common::config::Schema;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a commented configuration file with every field, its default and its
    /// environment variable; redirect it to a file and fill in the required fields.
    Example,
}

pub fn run(schema: &Schema, cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Example => print!("{}", schema.example()),
    }
    Ok(())
}
