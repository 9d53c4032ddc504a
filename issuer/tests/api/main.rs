//! The issuer over HTTP, with a real ledger on loopback: cards, keys, openings, repeats,
//! refusals, rate limits, reports.

mod abuse;
mod health;
mod helpers;
mod opening;
mod outbox;
mod refresh;
mod refusals;
mod standard;
mod start_up;
