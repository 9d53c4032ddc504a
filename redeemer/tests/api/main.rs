//! The redeemer sidecar and the example relay over HTTP, with a real ledger on loopback and
//! real tokens.

mod abuse;
mod helpers;
mod optimistic;
mod private_token;
mod relay;
mod strict;
