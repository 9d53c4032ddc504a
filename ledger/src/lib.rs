#![doc = include_str!("../README.md")]

pub mod api;
pub mod audit;
pub mod client;
pub mod config;
pub mod http;
pub mod rules;
pub mod service;
pub mod store;

pub use client::{ClientError, LedgerClient};
pub use config::LedgerConfig;
pub use http::{Application, router};
pub use service::{Ledger, LedgerError, Receipt, SpendResult, SpendStatus};
pub use store::{Store, StoreError, connect};
