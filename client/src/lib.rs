#![doc = include_str!("../README.md")]

pub mod store;
pub mod wallet;

pub use store::TokenState;
pub use wallet::{
    Balance, OpenSummary, REFRESH_THRESHOLD_SECS, RefreshSummary, SpendReceipt, Wallet, WalletError,
};
