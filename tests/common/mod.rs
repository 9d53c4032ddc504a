//! Helpers for the tests that run the `scrip` binary as real processes.
#![allow(dead_code)] // each test file uses a different subset

use scrip_spec::OperatorKey;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Runs `scrip ARGS` to completion.
pub fn scrip(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scrip"))
        .args(args)
        .output()
        .expect("scrip runs")
}

/// Runs `scrip ARGS` and insists it succeeds; returns its standard output.
pub fn scrip_ok(args: &[&str]) -> String {
    let out = scrip(args);
    assert!(
        out.status.success(),
        "scrip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `scrip operator keygen` into `dir/NAME.key`.
pub fn keygen(dir: &Path, name: &str) -> OperatorKey {
    let file = dir.join(format!("{name}.key"));
    scrip_ok(&["operator", "keygen", "--out", path(&file)]);
    OperatorKey::from_text(&std::fs::read_to_string(file).expect("key file")).expect("key")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A service process, killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `scrip ROLE serve --config CONFIG` and waits until `BASE/healthz` answers.
pub async fn serve(role: &str, config: &Path, base: &str) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_scrip"))
        .args([role, "serve", "--config", path(config)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn service");
    let server = Server(child);
    for _ in 0..300 {
        if reqwest::get(format!("{base}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("scrip {role} did not come up at {base}");
}

/// A ledger made with `scrip ledger init`, with operators `issuer` (issuer, redeemer) and
/// `relay` (redeemer), and its config file.
pub struct LedgerSetup {
    pub issuer: OperatorKey,
    pub relay: OperatorKey,
    pub config: PathBuf,
    pub base: String,
}

pub fn ledger_setup(d: &Path, db: &str) -> LedgerSetup {
    let _ledger_key = keygen(d, "ledger");
    let issuer = keygen(d, "issuer");
    let relay = keygen(d, "relay");
    std::fs::write(
        d.join("genesis.toml"),
        format!(
            "ledger_name = \"test\"\n\
             [[operators]]\nname = \"issuer\"\nid = \"{}\"\nroles = [\"issuer\", \"redeemer\"]\n\
             [[operators]]\nname = \"relay\"\nid = \"{}\"\nroles = [\"redeemer\"]\n",
            issuer.id(),
            relay.id()
        ),
    )
    .expect("genesis");
    let (genesis, key) = (d.join("genesis.toml"), d.join("ledger.key"));
    let init = [
        "ledger",
        "init",
        "--genesis",
        path(&genesis),
        "--key",
        path(&key),
        "--database",
        db,
    ];
    scrip_ok(&init);
    assert!(
        !scrip(&init).status.success(),
        "a second init must not overwrite the ledger"
    );
    let port = free_port();
    let config = d.join("ledger.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase = \"{db}\"\nkey_file = \"{}\"\n",
            d.join("ledger.key").display()
        ),
    )
    .expect("config");
    LedgerSetup {
        issuer,
        relay,
        config,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// Announces a `queue` key of the operator `issuer` (valid for an hour) at the ledger at
/// `base`; returns the ledger id and the key id.
pub async fn announce_key(
    client: &reqwest::Client,
    base: &str,
    issuer: &OperatorKey,
) -> (scrip_spec::ledger::Hash32, scrip_spec::TokenKeyId) {
    use scrip_spec::ledger::{Action, LedgerRequest};
    let info: serde_json::Value = client
        .get(format!("{base}/v1/info"))
        .send()
        .await
        .expect("info")
        .json()
        .await
        .expect("info json");
    let ledger_id: scrip_spec::ledger::Hash32 =
        serde_json::from_value(info["ledger_id"].clone()).expect("ledger id");
    let t = now();
    let key = scrip_spec::TokenKeyInfo {
        public_key: scrip_spec::TokenSecretKey::generate()
            .expect("keygen")
            .public_key()
            .clone(),
        issuer: "issuer".into(),
        kind: "queue".parse().expect("kind"),
        valid_from: t - 5,
        issue_until: t + 1800,
        redeem_until: t + 3600,
        forget_after: t + 7200,
    };
    let token_key_id = key.public_key.id();
    let announce = issuer.sign(LedgerRequest::new(
        ledger_id,
        t,
        Action::AnnounceKey { key },
    ));
    let resp = client
        .post(format!("{base}/v1/entries"))
        .json(&announce)
        .send()
        .await
        .expect("announce");
    assert!(resp.status().is_success(), "announce: {}", resp.status());
    (ledger_id, token_key_id)
}
