#![doc = include_str!("../README.md")]

pub mod config;
pub mod http;
pub mod ratelimit;
pub mod service;
pub mod store;

pub use config::IssuerConfig;
pub use http::{Application, router};
pub use service::{Issuer, OpenError, Requeued};
