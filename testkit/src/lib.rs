//! scrip's test kit, for tests and benches only (`publish = false`, a dev-dependency).
//!
//! - [`db`]: fresh databases: a SQLite file in a temporary directory, or a PostgreSQL schema of
//!   its own in the server at `SCRIP_TEST_PG_URL`.
//! - [`keys`]: token key announcements, in process or over HTTP.
//! - [`ledger`]: a one-node ledger made from a fresh genesis and served in process on port 0,
//!   stopped and restarted on the same port.
//! - [`services`]: an issuer, a redeemer sidecar and the example relay in process on port 0.
//! - [`http`]: a JSON client for one service.
//! - [`process`]: the `scrip` binary run as real processes: one-shot commands, and services
//!   started with their config, awaited on `/healthz`, killed with SIGKILL and restarted.
//!
//! Everything here panics on failure (it is test set-up), but for what the benches call,
//! which returns errors.

pub mod db;
pub mod http;
pub mod keys;
pub mod ledger;
pub mod process;
pub mod services;

pub use db::{Backend, PgSchema, TestDb};
pub use http::{Http, error_code, spent_total};
pub use keys::{announce_key, key_info};
pub use ledger::TestLedger;
pub use process::{
    LedgerSetup, Process, Scrip, ServiceConfig, free_port, mint_args, path, read_cards,
};
pub use scrip_ledger::local::member;
