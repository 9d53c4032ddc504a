//! Boot order: a redeemer sidecar started before its ledger waits for it (logging what it
//! waits for) instead of exiting, and serves once the ledger is up.

use crate::SCRIP;
use scrip_testkit::{Process, path};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redeemer_started_before_its_ledger_waits_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let db = format!("sqlite://{}", d.join("ledger.db").display());
    let setup = SCRIP.ledger_setup(d, &db);
    let redeemer_config = setup.redeemer_config(d);
    let log = d.join("redeemer.log");
    let mut redeemer = Process::new(
        SCRIP,
        "redeemer",
        &[
            "redeemer",
            "serve",
            "--config",
            path(&redeemer_config.config),
        ],
    )
    .log_to(&log)
    .started()
    .await;

    // No ledger yet: the sidecar keeps waiting and says so.
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.matches("the ledger is not answering yet").count() >= 2 {
            assert!(
                text.contains(&setup.base),
                "names the ledger it waits for: {text}"
            );
            break;
        }
        assert!(redeemer.is_running(), "exited: {}", redeemer.log_tail(20));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no waiting logged: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let _ledger = setup.process(SCRIP).started().await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let health = client
            .get(format!("{}/healthz", redeemer_config.base))
            .send()
            .await;
        if health.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(redeemer.is_running(), "exited: {}", redeemer.log_tail(20));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the sidecar did not come up once the ledger did: {}",
            redeemer.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
