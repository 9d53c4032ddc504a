#![doc = include_str!("../README.md")]

#[cfg(feature = "clients")]
pub mod clients;
#[cfg(feature = "config")]
pub mod config;
pub mod display;
#[cfg(feature = "server")]
pub mod keyring;
#[cfg(feature = "logging")]
pub mod logging;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "sqlite")]
pub mod pool;
#[cfg(feature = "server")]
pub mod ratelimit;
#[cfg(feature = "server")]
pub mod server;

/// How long a server waits for a request's head, and how long a kept-alive connection may sit
/// idle before its next request.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long scrip's HTTP clients keep an idle connection: below [`HEADER_READ_TIMEOUT`], so a
/// client never sends a request on a kept-alive connection the server is just closing.
pub const CLIENT_POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
