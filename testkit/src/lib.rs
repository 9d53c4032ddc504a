#![doc = include_str!("../README.md")]

pub mod committee;
pub mod db;
pub mod http;
pub mod keys;
pub mod ledger;
pub mod process;
pub mod proxy;
pub mod services;
pub mod tmpfs;

pub use committee::{CommitteeNode, CommitteeSetup, agreed_head};
pub use db::{Backend, PgSchema, TestDb};
pub use http::{Http, error_code, spent_total};
pub use keys::{TokenPool, announce_key, key_info, mint_tokens};
pub use ledger::TestLedger;
pub use process::{
    LedgerSetup, Process, Scrip, ServiceConfig, free_port, mint_args, path, read_cards,
};
pub use proxy::{Fault, FaultProxy};
pub use scrip_ledger::local::member;
pub use tmpfs::Tmpfs;
