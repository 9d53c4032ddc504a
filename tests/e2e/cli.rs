//! The `scrip` binary, run as a user would.

use crate::scrip;
use std::os::unix::fs::PermissionsExt as _;

#[test]
fn operator_keygen_writes_an_owner_only_key_and_prints_its_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("op.key");
    let path_s = path.to_str().expect("utf-8 path");

    let out = scrip(&["operator", "keygen", "--out", path_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    let mode = std::fs::metadata(&path)
        .expect("written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let shown = scrip(&["operator", "show", "--key", path_s]);
    assert!(shown.status.success());
    assert_eq!(String::from_utf8(shown.stdout).expect("utf-8"), printed);
    assert!(printed.trim().parse::<scrip_spec::OperatorId>().is_ok());

    // A second keygen must not silently destroy the first key.
    let again = scrip(&["operator", "keygen", "--out", path_s]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let shown = scrip(&["operator", "show", "--key", path_s]);
    assert_eq!(String::from_utf8(shown.stdout).expect("utf-8"), printed);
}

#[test]
fn operator_show_explains_a_bad_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.key");
    std::fs::write(&path, "hello").expect("write");
    let out = scrip(&["operator", "show", "--key", path.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an operator key file"));
}

#[test]
fn help_lists_every_command() {
    let out = scrip(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf-8");
    assert!(help.contains("operator"));
}
