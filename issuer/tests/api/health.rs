//! `/healthz` on a full disk.

use crate::helpers::{default_limits, spawn_with_database};
use reqwest::StatusCode;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tmpfs mounted for the test, unmounted when dropped (as `tests/faults/storage_faults.rs`).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs failed (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir: dir.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("filler");
    let block = vec![0u8; 64 * 1024];
    loop {
        if file
            .write_all(&block)
            .and_then(|()| file.sync_all())
            .is_err()
        {
            break;
        }
    }
    // The last partial block may have fitted: the rest, byte by byte, would too.
    while file.write_all(&[0]).and_then(|()| file.sync_all()).is_ok() {}
}

/// Before, `/healthz` read the outbox and answered 200 while the full disk refused every
/// opening. It now probes a write, and answers 503 until the disk has room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root to mount a small tmpfs (CI runs it with --ignored)"]
async fn healthz_is_unavailable_while_the_disk_is_full() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let tmpfs = Tmpfs::mount(&scratch.path().join("mnt"), "4m");
    let t = spawn_with_database(default_limits(), Some(&tmpfs.dir)).await;
    let (status, body) = t.http.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let filler = tmpfs.dir.join("filler");
    fill(&filler);
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
