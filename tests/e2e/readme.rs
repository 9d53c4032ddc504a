//! The README's "A consortium by hand", run exactly as written: every `sh` block between its
//! walkthrough markers, in order, in one bash, in an empty directory with `scrip` on `PATH`.
//! A change to a command, a flag, a default port or an output the README relies on fails here.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const README: &str = include_str!("../../README.md");
const START: &str = "<!-- walkthrough";
const END: &str = "<!-- end of walkthrough -->";

/// The walkthrough's shell blocks, joined.
fn walkthrough() -> String {
    let start = README
        .find(START)
        .expect("the README's walkthrough start marker");
    let end = README
        .find(END)
        .expect("the README's walkthrough end marker");
    let mut script = String::new();
    let mut in_block = false;
    for line in README[start..end].lines() {
        match (in_block, line.trim_end()) {
            (false, "```sh") => in_block = true,
            (true, "```") => in_block = false,
            (true, _) => {
                script.push_str(line);
                script.push('\n');
            }
            (false, _) => {}
        }
    }
    assert!(!in_block, "a shell block of the walkthrough is not closed");
    script
}

/// Stops every process the script started (its services run in the background), whatever
/// became of the script.
fn stop_group(pgid: u32) {
    for signal in ["-TERM", "-KILL"] {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    use std::os::unix::process::CommandExt as _;
    let script = walkthrough();
    for step in ["scrip ledger init", "scrip relay use", "scrip audit"] {
        assert!(script.contains(step), "the walkthrough runs `{step}`");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = Path::new(env!("CARGO_BIN_EXE_scrip"))
        .parent()
        .expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let work = dir.path().join("consortium");
    std::fs::create_dir(&work).expect("the walkthrough's directory");
    let out = dir.path().join("stdout");
    let err = dir.path().join("stderr");
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(&work)
        .env("PATH", path)
        // The audit keeps its state under XDG_STATE_HOME: not in the user's home.
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .process_group(0)
        .spawn()
        .expect("bash runs");
    let pgid = child.id();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(600) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stop_group(pgid);
    let _ = child.wait();
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let shown = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    let status = status.unwrap_or_else(|| panic!("the walkthrough hung for 10 minutes\n{shown}"));
    assert!(
        status.success(),
        "the walkthrough failed ({status})\n{shown}"
    );

    // What each step should have said.
    for said in [
        "announced queue key",
        "minted batch",
        "is on sale",
        "queue ",
        "chunk ",
        "stored at http://127.0.0.1:7701 (chunk-64k, 50000 bytes)",
        "who owes whom",
    ] {
        assert!(stdout.contains(said), "the output says {said:?}\n{shown}");
    }
    assert!(
        work.join("op-b-relay")
            .join("chunks")
            .read_dir()
            .expect("chunks")
            .count()
            == 1,
        "op-b's relay holds the chunk"
    );
}
