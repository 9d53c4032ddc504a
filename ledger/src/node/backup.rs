//! AlephBFT's backup of a session's units, one file per session. AlephBFT writes a unit and
//! then flushes; it sends none of its own units before that flush returns, which is what
//! keeps a node that is killed and restarted from signing two different units for one round.
//! Each flush appends one record, `length (u32 BE) || SHA-256(unit)[..8] || unit`, and syncs
//! the file; on loading, a torn or damaged last record (a kill during the write) is cut off:
//! its flush never returned, so nobody saw that unit.

use futures::io::{AsyncWrite, Cursor};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::future::Future as _;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

const HEADER: usize = 12;

/// The backup file of `session` in `dir`.
pub fn path(dir: &Path, session: u64) -> PathBuf {
    dir.join(format!("session-{session}.units"))
}

/// Opens the backup of `session`: the units saved so far, for AlephBFT's loader, and a saver
/// that appends to the same file. A damaged tail is cut off first.
pub fn open(dir: &Path, session: u64) -> std::io::Result<(Cursor<Vec<u8>>, UnitSaver)> {
    std::fs::create_dir_all(dir)?;
    let path = path(dir, session);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let (units, good) = read_records(&bytes);
    if good < bytes.len() {
        tracing::warn!(
            file = %path.display(),
            cut_bytes = bytes.len() - good,
            "the consensus backup ends in a torn record (the node stopped while writing it); cutting it off"
        );
        file.set_len(good as u64)?;
        file.sync_all()?;
    }
    file.seek(std::io::SeekFrom::End(0))?;
    Ok((Cursor::new(units), UnitSaver::new(file)))
}

/// Removes the backups of sessions before `session`, however far back (a catch-up can move a
/// node many sessions on).
pub fn remove_before(dir: &Path, session: u64) {
    let Ok(files) = std::fs::read_dir(dir) else {
        return;
    };
    for file in files.flatten() {
        let name = file.file_name();
        let older = name
            .to_str()
            .and_then(|n| n.strip_prefix("session-")?.strip_suffix(".units"))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|s| s < session);
        if older {
            let _ = std::fs::remove_file(file.path());
        }
    }
}

/// The units of the whole records in `bytes`, and how many bytes those records take.
fn read_records(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut units = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len =
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let Some(unit) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if Sha256::digest(unit)[..8] != bytes[at + 4..at + HEADER] {
            break;
        }
        units.extend_from_slice(unit);
        at += HEADER + len;
    }
    (units, at)
}

/// Appends what AlephBFT writes as one synced record per flush.
///
/// The write and the sync run on the blocking pool: AlephBFT saves every unit it adds, each
/// node's and with its requests, and a sync held on an async worker stalled every task on
/// that worker (on a committee sharing a machine, the other nodes and the services too).
#[derive(Debug)]
pub struct UnitSaver {
    /// The file, while no flush holds it.
    file: Option<File>,
    pending: Vec<u8>,
    /// The record being written and synced; it hands the file back.
    flushing: Option<tokio::task::JoinHandle<std::io::Result<File>>>,
}

impl UnitSaver {
    fn new(file: File) -> Self {
        Self {
            file: Some(file),
            pending: Vec::new(),
            flushing: None,
        }
    }
}

impl Drop for UnitSaver {
    fn drop(&mut self) {
        // A flush still running holds a unit nobody has seen: it must be in the file, or not,
        // before the session's backup can be opened again, or a record could land after the
        // reopened node's own records for the same rounds.
        if let Some(flushing) = self.flushing.take() {
            let _ = futures::executor::block_on(flushing);
        }
    }
}

impl AsyncWrite for UnitSaver {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // Written during a flush, it waits for the next one.
        self.get_mut().pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(flushing) = this.flushing.as_mut() {
                let done = std::task::ready!(Pin::new(flushing).poll(cx));
                this.flushing = None;
                this.file = Some(done.map_err(std::io::Error::other)??);
                continue;
            }
            if this.pending.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let len = u32::try_from(this.pending.len())
                .map_err(|_| std::io::Error::other("a unit larger than 4 GiB"))?;
            let Some(mut file) = this.file.take() else {
                return Poll::Ready(Err(std::io::Error::other(
                    "the consensus backup failed earlier; restart the node",
                )));
            };
            let mut record = Vec::with_capacity(HEADER + this.pending.len());
            record.extend_from_slice(&len.to_be_bytes());
            record.extend_from_slice(&Sha256::digest(&this.pending)[..8]);
            record.append(&mut this.pending);
            // Written and synced before AlephBFT may send the unit: the flush returns only
            // when the sync has.
            this.flushing = Some(tokio::task::spawn_blocking(move || {
                file.write_all(&record)?;
                file.sync_data()?;
                Ok(file)
            }));
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::AsyncWriteExt as _;

    #[test]
    fn every_older_backup_is_removed_however_far_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        for session in [0, 3, 9, 10, 11] {
            std::fs::write(path(dir.path(), session), b"units").expect("write");
        }
        std::fs::write(dir.path().join("notes.txt"), b"kept").expect("write");
        remove_before(dir.path(), 10);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|f| f.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["notes.txt", "session-10.units", "session-11.units"]);
    }

    #[tokio::test]
    async fn saved_units_come_back_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (loaded, mut saver) = open(dir.path(), 3).expect("open");
            assert!(loaded.into_inner().is_empty());
            saver.write_all(b"unit-one").await.expect("write");
            saver.flush().await.expect("flush");
            saver.write_all(b"unit-two").await.expect("write");
            saver.flush().await.expect("flush");
        }
        let file = path(dir.path(), 3);
        let whole = std::fs::metadata(&file).expect("meta").len();
        // A kill in the middle of the third record.
        let mut f = OpenOptions::new().append(true).open(&file).expect("open");
        f.write_all(&[0, 0, 0, 9, 1, 2, 3]).expect("torn");
        drop(f);
        let (loaded, mut saver) = open(dir.path(), 3).expect("reopen");
        assert_eq!(loaded.into_inner(), b"unit-oneunit-two");
        assert_eq!(
            std::fs::metadata(&file).expect("meta").len(),
            whole,
            "the torn record is gone"
        );
        saver.write_all(b"three").await.expect("write");
        saver.flush().await.expect("flush");
        let (loaded, _) = open(dir.path(), 3).expect("reopen");
        assert_eq!(loaded.into_inner(), b"unit-oneunit-twothree");

        // A damaged record stops the load there.
        let mut bytes = std::fs::read(&file).expect("read");
        bytes[HEADER + 2] ^= 1;
        std::fs::write(&file, &bytes).expect("write");
        let (loaded, _) = open(dir.path(), 3).expect("reopen");
        assert!(loaded.into_inner().is_empty());
        remove_before(dir.path(), 4);
        assert!(!file.exists());
    }

    /// The sync runs off the async thread, so a flush can be left half way (the node stopping
    /// mid-round): the saver's end waits for it, and the record is whole when the session's
    /// backup is opened again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_left_half_way_is_whole_when_the_backup_is_reopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = vec![7u8; 8 * 1024 * 1024];
        {
            let (_, mut saver) = open(dir.path(), 1).expect("open");
            saver.write_all(b"first").await.expect("write");
            saver.flush().await.expect("flush");
            saver.write_all(&big).await.expect("write");
            let mut flush = saver.flush();
            // One poll starts the write and sync; the flush is then dropped, then the saver.
            let _ = futures::poll!(&mut flush);
            drop(flush);
        }
        let (loaded, _) = open(dir.path(), 1).expect("reopen");
        let loaded = loaded.into_inner();
        assert_eq!(loaded.len(), 5 + big.len());
        assert!(loaded.starts_with(b"first") && loaded[5..] == big[..]);
    }
}
