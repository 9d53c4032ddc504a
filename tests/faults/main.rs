//! Faults with real `scrip` processes:
//! - `rounds`: a ledger, an issuer and a redeemer sidecar under two wallets' load, one of them
//!   (or a wallet) SIGKILLed at a random moment each round (`SCRIP_FAULT_ROUNDS`, default 4;
//!   `cargo test --release --test faults rounds -- --nocapture` runs only these);
//! - `committee`: a four-node committee ledger with nodes SIGKILLed, two down at once, and
//!   all restarted together, and a fifth node admitted through the CLI;
//! - `boot_order`: a redeemer started before its ledger waits for it, then serves;
//! - `ledger_crash`: the ledger SIGKILLed under spend load, on SQLite and on PostgreSQL;
//! - `storage_faults`: SQLite on a tmpfs that fills up, PostgreSQL sessions terminated under
//!   load (both `#[ignore]`d: they need root or PostgreSQL).

mod boot_order;
mod committee;
mod ledger_crash;
mod rounds;
mod storage_faults;

use scrip_testkit::Scrip;

/// The binary under test.
const SCRIP: Scrip = Scrip(env!("CARGO_BIN_EXE_scrip"));

/// Held by the tests that run a committee of ledger processes, so that no two of them share
/// the two cores at once: each is bounded in time, and a dozen ledger processes at once made
/// a restarted committee miss those bounds.
static COMMITTEE_PROCESSES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
