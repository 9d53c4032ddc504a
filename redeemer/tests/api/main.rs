//! The redeemer sidecar and the example relay over HTTP, with a real ledger on loopback and
//! real tokens.

mod abuse;
mod helpers;
mod optimistic;
mod relay;
mod strict;
