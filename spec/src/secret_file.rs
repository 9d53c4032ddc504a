//! Writing secrets to disk: owner-only files, created that way, replaced atomically.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Why a secret file was not written.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file exists and replacing it was not asked for.
    #[error("{path} already exists; refusing to replace a secret")]
    Exists {
        /// The file.
        path: String,
    },
    /// The file system refused.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Writes `contents` to `path` with mode 0600, set at creation so the secret is never readable
/// by others, even for an instant; the file appears whole or not at all.
///
/// Without `replace`, of several processes writing the same path at once exactly one wins and
/// the others get [`SecretFileError::Exists`]: the file is written aside under a name of its
/// own and linked into place, which fails if the path exists.
pub fn write_private(path: &Path, contents: &[u8], replace: bool) -> Result<(), SecretFileError> {
    let shown = path.display().to_string();
    if path.exists() && !replace {
        return Err(SecretFileError::Exists { path: shown });
    }
    let io = |source| SecretFileError::Io {
        path: shown.clone(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".{}-{:x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let tmp = std::path::PathBuf::from(tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| {
            if replace {
                std::fs::rename(&tmp, path)
            } else {
                std::fs::hard_link(&tmp, path)
            }
        });
    let _ = std::fs::remove_file(&tmp);
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !replace => {
            Err(SecretFileError::Exists { path: shown })
        }
        written => written.map_err(io),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn owner_only_and_no_silent_overwrite() {
        let dir = std::env::temp_dir().join(format!("scrip-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("k");
        let _ = std::fs::remove_file(&path);
        write_private(&path, b"one", false).expect("write");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            write_private(&path, b"two", false),
            Err(SecretFileError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&path).expect("read"), b"one");
        write_private(&path, b"two", true).expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
