//! `scrip demo`, the README's first command, run as a newcomer would run it.

use crate::{ok, scrip};
use scrip_testkit::path;

#[test]
fn the_demo_runs_every_step_and_exits_zero() {
    let out = scrip(&["demo"]);
    assert!(
        !out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b),
        "no ANSI escapes when the output is not a terminal"
    );
    let stdout = stdout_of(out);
    for expected in [
        "1. Start a consortium",
        "announced 5 keys",
        "cards sold",
        "58 credits left on the card",
        "created a queue",
        "is refused: 409",
        "first spent by \"op-a\"",
        "op-a owes op-b 5 credits",
        "Everything behaved as shown.",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("sw1-"),
        "the demo never prints a wallet seed"
    );
}

#[test]
fn the_demo_runs_on_a_committee_of_four_nodes() {
    let stdout = stdout_of(scrip(&["demo", "--nodes", "4"]));
    for expected in [
        "a ledger replicated on 4 nodes (AlephBFT, tolerating 1 faulty)",
        "ledger node 3",
        "created a queue",
        "is refused: 409",
        "all 4 nodes at entry",
        "op-a owes op-b 5 credits",
        "Everything behaved as shown.",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let refused = scrip(&["demo", "--nodes", "0"]);
    assert!(
        !refused.status.success(),
        "a committee has at least one node"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let out = scrip(&["--log-format", "json", "demo"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the demo's services log at info");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    let bad = scrip(&["--log-format", "xml", "demo"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use text or json"));
}

#[test]
fn the_demo_keeps_its_files_when_asked_and_refuses_a_busy_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keep = dir.path().join("demo");
    ok(scrip(&["demo", "--keep", path(&keep)]));
    for file in [
        "ledger.db",
        "wallet.db",
        "op-a-issuer.db",
        "op-b-redeemer.db",
    ] {
        assert!(keep.join(file).exists(), "{file} kept");
    }
    // The configuration it ran with, to copy: each loads, and points at the kept files.
    let ledger = scrip_ledger::LedgerConfig::load(&keep.join("ledger.toml")).expect("ledger.toml");
    assert_eq!(ledger.key_file, keep.join("ledger.key"));
    assert_eq!(
        ledger.database,
        format!("sqlite://{}", keep.join("ledger.db").display())
    );
    let issuer =
        scrip_issuer::IssuerConfig::load(&keep.join("op-a-issuer.toml")).expect("issuer config");
    assert_eq!(issuer.keys_dir, keep.join("op-a-keys"));
    assert!(issuer.keys_dir.exists());
    let redeemer = scrip_redeemer::RedeemerConfig::load(&keep.join("op-b-redeemer.toml"))
        .expect("redeemer config");
    assert_eq!(redeemer.ledger_url, "http://127.0.0.1:7400");
    assert_eq!(
        redeemer.database,
        format!("sqlite://{}", keep.join("op-b-redeemer.db").display())
    );
    let relay = scrip_redeemer::example_relay::RelayConfig::load(&keep.join("op-b-relay.toml"))
        .expect("relay config");
    assert_eq!(relay.sidecar, format!("http://{}", redeemer.listen));
    assert_eq!(relay.data_dir, keep.join("op-b-relay"));
    assert!(
        relay.data_dir.join("chunks").exists(),
        "the demo's chunks are there"
    );
    let again = scrip(&["demo", "--keep", path(&keep)]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}

#[test]
fn the_load_generator_issues_and_redeems_and_reports_ratios() {
    let stdout = stdout_of(scrip(&[
        "bench",
        "--tokens",
        "60",
        "--open-batch",
        "20",
        "--concurrency",
        "8",
    ]));
    assert!(
        stdout.contains("% of the in-process signing rate"),
        "{stdout}"
    );
    assert!(
        stdout.contains("% of the in-process verification rate"),
        "{stdout}"
    );
    assert!(stdout.contains("0 failed"), "{stdout}");
    assert!(
        stdout.contains("the ledger recorded exactly 60 spends"),
        "{stdout}"
    );
}

/// Insists `out` succeeded, showing both its outputs if not; returns its standard output.
fn stdout_of(out: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
