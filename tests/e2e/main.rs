//! End to end: the `scrip` binary run as a user and an operator run it, and the in-process
//! consortium (`scrip::consortium`) driven by the wallet library.
//!
//! - `demo`: `scrip demo` and the load generator, as a newcomer runs them;
//! - `cli`: `scrip operator …` and `--help`;
//! - `wallet`, `wallet_cli`: the wallet library and `scrip wallet …` against a consortium;
//! - `issuer_cli`: `scrip issuer …` against `scrip ledger serve`, the issuer killed and
//!   restarted;
//! - `audit_cli`: `scrip audit` clean, incremental, with notes, alarms and on a tampered copy;
//! - `readme`: the README's "A consortium by hand", run exactly as written;
//! - `relay_cli`: `scrip relay use`, a grant handed to a relay and each refusal;
//! - `privacy`: every service as a real process at `RUST_LOG=debug`: no secret logged, no value
//!   shared by the issuer and the relay.

#[path = "../support/mod.rs"]
mod support;

mod audit_cli;
mod audit_render;
mod cli;
mod demo;
mod issuer_cli;
mod lost_answers;
mod nginx;
mod privacy;
mod private_token;
mod readme;
mod refresh;
mod relay_cli;
mod wallet;
mod wallet_cli;

use scrip_testkit::Scrip;

/// The binary under test.
const SCRIP: Scrip = Scrip(env!("CARGO_BIN_EXE_scrip"));

/// Runs `scrip ARGS` to completion.
fn scrip(args: &[&str]) -> std::process::Output {
    SCRIP.run(args)
}

/// Runs `scrip ARGS` and insists it succeeds; returns its standard output.
fn scrip_ok(args: &[&str]) -> String {
    SCRIP.ok(args)
}

/// Runs `scrip ARGS` on a blocking thread, off the async workers that serve an in-process
/// consortium.
async fn scrip_blocking(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        SCRIP.run(&args)
    })
    .await
    .expect("join")
}

/// `scrip wallet --wallet WALLET ARGS`, as [`scrip_blocking`].
async fn wallet(wallet: &str, args: &[&str]) -> std::process::Output {
    let mut full = vec!["wallet", "--wallet", wallet];
    full.extend_from_slice(args);
    scrip_blocking(&full).await
}

/// Insists `out` is a success; returns its standard output.
fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}
