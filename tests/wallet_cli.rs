//! `scrip wallet …` as a person uses it, against a consortium running on loopback.

mod common;

use common::{path, scrip, scrip_ok};
use scrip::consortium::Consortium;
use scrip_redeemer::Mode;
use std::os::unix::fs::PermissionsExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_open_balance_spend_export_restore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Consortium::start(&dir.path().join("c"), &["op-a"], Mode::Strict)
        .await
        .expect("consortium");
    let op = &c.operators[0];
    op.issuer.rotate_keys().await.expect("keys");
    let (batch, codes) = op.issuer.mint_cards(30, 1).await.expect("mint");
    assert!(op.issuer.activate_batch(&batch).await.expect("activate"));
    let code = codes[0].to_string();
    let wallet = dir.path().join("w.db");
    let w = path(&wallet);

    // Blocking subprocess calls run off the async workers that serve the consortium.
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            scrip(&args)
        })
    };
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    let init = ok(run(s(&[
        "wallet",
        "--wallet",
        w,
        "init",
        "--ledger",
        &c.ledger_url,
    ]))
    .await
    .expect("join"));
    let backup = init
        .lines()
        .find_map(|l| l.trim().strip_prefix("sw1-"))
        .map(|b| format!("sw1-{b}"))
        .expect("backup code shown");
    assert_eq!(
        std::fs::metadata(&wallet).expect("w").permissions().mode() & 0o777,
        0o600
    );

    let opened = ok(run(s(&[
        "wallet",
        "--wallet",
        w,
        "open",
        &code,
        "--issuer",
        &op.issuer_url,
        "--tokens",
        "queue=2,chunk-64k=3",
    ]))
    .await
    .expect("join"));
    assert!(
        opened.contains("2 x queue") && opened.contains("7 credits left"),
        "{opened}"
    );
    let opened = ok(run(s(&[
        "wallet",
        "--wallet",
        w,
        "open",
        &code,
        "--issuer",
        &op.issuer_url,
        "--kind",
        "chunk-256k",
    ]))
    .await
    .expect("join"));
    assert!(
        opened.contains("3 x chunk-256k") && opened.contains("1 credits left"),
        "{opened}"
    );
    let bad = run(s(&[
        "wallet",
        "--wallet",
        w,
        "open",
        &code,
        "--issuer",
        &op.issuer_url,
        "--tokens",
        "queue",
    ]))
    .await
    .expect("join");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("KIND=COUNT"));

    let balance = ok(run(s(&["wallet", "--wallet", w, "balance"]))
        .await
        .expect("join"));
    assert!(
        balance.contains("2 x queue") && balance.contains("3 x chunk-256k"),
        "{balance}"
    );

    let grant = ok(run(s(&[
        "wallet",
        "--wallet",
        w,
        "spend",
        "--kind",
        "queue",
        "--redeemer",
        &op.redeemer_url,
    ]))
    .await
    .expect("join"));
    assert!(grant.trim().starts_with("sg1.queue."), "{grant}");
    let relay = reqwest::Client::new()
        .post(format!("{}/queues", op.relay_url))
        .bearer_auth(grant.trim())
        .send()
        .await
        .expect("relay");
    assert_eq!(relay.status().as_u16(), 201);

    let export = dir.path().join("tokens.json");
    ok(run(s(&[
        "wallet",
        "--wallet",
        w,
        "export",
        "--out",
        path(&export),
    ]))
    .await
    .expect("join"));
    assert_eq!(
        std::fs::metadata(&export).expect("e").permissions().mode() & 0o777,
        0o600
    );
    let file: scrip_spec::codes::export::ExportFile =
        serde_json::from_str(&std::fs::read_to_string(&export).expect("read")).expect("format");
    assert_eq!(file.tokens.len(), 7);

    let restored = dir.path().join("r.db");
    let out = ok(run(s(&[
        "wallet",
        "--wallet",
        path(&restored),
        "restore",
        "--backup",
        &backup,
        "--ledger",
        &c.ledger_url,
        "--issuer",
        &op.issuer_url,
    ]))
    .await
    .expect("join"));
    assert!(out.contains("restored 8 tokens"), "{out}");
    let no_wallet = scrip_ok(&["--help"]);
    assert!(no_wallet.contains("wallet") && no_wallet.contains("demo"));
}
