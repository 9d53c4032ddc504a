//! A small tmpfs to fill up, for the tests of what a service does on a full disk. Mounting
//! needs root: such tests are `#[ignore]`d with the reason, and CI runs them with `--ignored`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tmpfs mounted at a directory, unmounted when dropped (also when the test panics).
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

/// `mount ARGS DIR`, which must succeed (`failed` says what it means if not).
fn run_mount(args: &[&str], dir: &Path, failed: &str) {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "{failed}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=`, e.g. `4m`) at `dir`, creating it.
    pub fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        let size = format!("size={size}");
        run_mount(
            &["-t", "tmpfs", "-o", &size, "tmpfs"],
            dir,
            "mount -t tmpfs failed (this test needs root)",
        );
        Self {
            dir: dir.to_owned(),
        }
    }

    /// Where it is mounted.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Grows (or shrinks) it to `size`.
    pub fn resize(&self, size: &str) {
        let options = format!("remount,size={size}");
        run_mount(&["-o", &options], &self.dir, "remount failed");
    }

    /// (used, size) in bytes, as `df` sees them.
    pub fn usage(&self) -> (u64, u64) {
        let out = Command::new("df")
            .args(["-B1", "--output=used,size"])
            .arg(&self.dir)
            .output()
            .expect("run df");
        let text = String::from_utf8_lossy(&out.stdout);
        let nums: Vec<u64> = text
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (
            nums.first().copied().unwrap_or(0),
            nums.get(1).copied().unwrap_or(0),
        )
    }

    /// Writes a file `name` until the file system is full; returns its path (remove it to
    /// make room again).
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        let mut file = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while file
            .write_all(&block)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
        // The last partial block may have fitted: the rest, byte by byte, would too.
        while file.write_all(&[0]).and_then(|()| file.sync_all()).is_ok() {}
        path
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
            // Something still holds a file there: detach it anyway so no mount is left behind.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
