#![doc = include_str!("../README.md")]

pub mod config;
pub mod example_relay;
pub mod grant_writer;
pub mod http;
pub mod keys;
pub mod private_token;
pub mod service;
pub mod spend;
pub mod store;

pub use config::{Mode, RedeemRateLimit, RedeemerConfig};
pub use http::{Application, router};
pub use service::{ConsumeError, Grant, RedeemError, Redeemer};
