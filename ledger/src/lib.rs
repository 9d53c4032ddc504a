#![doc = include_str!("../README.md")]

pub mod audit;
pub mod config;
pub mod http;
pub mod local;
pub mod node;
pub mod rules;
pub mod service;
pub mod store;

pub use config::LedgerConfig;
pub use http::{Application, router};
pub use service::{Ledger, LedgerError};
pub use store::{Store, StoreError, connect};
