//! `/healthz` on a full disk.

use crate::helpers::{default_limits, spawn_with_database};
use reqwest::StatusCode;
use scrip_testkit::Tmpfs;

/// Before, `/healthz` read the outbox and answered 200 while the full disk refused every
/// opening. It now probes a write, and answers 503 until the disk has room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root to mount a small tmpfs (CI runs it with --ignored)"]
async fn healthz_is_unavailable_while_the_disk_is_full() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let tmpfs = Tmpfs::mount(&scratch.path().join("mnt"), "4m");
    let t = spawn_with_database(default_limits(), Some(tmpfs.dir())).await;
    let (status, body) = t.http.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let filler = tmpfs.fill("filler");
    let (status, body) = t.http.get("/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"status": "unavailable", "checks": {"store": false}})
    );

    std::fs::remove_file(&filler).expect("make room");
    let (status, body) = t.http.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    drop(t);
}
