//! `scrip wallet …` as a person uses it, against a consortium running on loopback.

use crate::support::{cards_on_sale, consortium_with_keys};
use crate::{ok, scrip_ok, wallet};
use scrip_testkit::path;
use std::os::unix::fs::PermissionsExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_open_balance_spend_export_restore() {
    let (dir, c) = consortium_with_keys(&["op-a"]).await;
    let op = &c.operators[0];
    let code = cards_on_sale(op, 30, 1).await.remove(0);
    let wallet_file = dir.path().join("w.db");
    let w = path(&wallet_file);
    // `scrip wallet open CODE --issuer ISSUER HOW` for the one card.
    let open = |how: &'static [&'static str]| {
        let mut args = vec!["open", code.as_str(), "--issuer", op.issuer_url.as_str()];
        args.extend_from_slice(how);
        async move { wallet(w, &args).await }
    };

    let init = ok(wallet(w, &["init", "--ledger", &c.ledger_url]).await);
    let backup = init
        .lines()
        .find_map(|l| l.trim().strip_prefix("sw1-"))
        .map(|b| format!("sw1-{b}"))
        .expect("backup code shown");
    assert_eq!(
        std::fs::metadata(&wallet_file)
            .expect("w")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let opened = ok(open(&["--tokens", "queue=2,chunk-64k=3"]).await);
    assert!(
        opened.contains("2 x queue") && opened.contains("7 credits left"),
        "{opened}"
    );
    let opened = ok(open(&["--kind", "chunk-256k"]).await);
    assert!(
        opened.contains("3 x chunk-256k") && opened.contains("1 credits left"),
        "{opened}"
    );
    let bad = open(&["--tokens", "queue"]).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("KIND=COUNT"));

    let balance = ok(wallet(w, &["balance"]).await);
    assert!(
        balance.contains("2 x queue") && balance.contains("3 x chunk-256k"),
        "{balance}"
    );

    let grant = ok(wallet(
        w,
        &["spend", "--kind", "queue", "--redeemer", &op.redeemer_url],
    )
    .await);
    assert!(grant.trim().starts_with("sg1.queue."), "{grant}");
    let relay = reqwest::Client::new()
        .post(format!("{}/queues", op.relay_url))
        .bearer_auth(grant.trim())
        .send()
        .await
        .expect("relay");
    assert_eq!(relay.status().as_u16(), 201);

    let export = dir.path().join("tokens.json");
    ok(wallet(w, &["export", "--out", path(&export)]).await);
    assert_eq!(
        std::fs::metadata(&export).expect("e").permissions().mode() & 0o777,
        0o600
    );
    let file: scrip_spec::codes::export::ExportFile =
        serde_json::from_str(&std::fs::read_to_string(&export).expect("read")).expect("format");
    assert_eq!(file.tokens.len(), 7);

    let restored = dir.path().join("r.db");
    let out = ok(wallet(
        path(&restored),
        &[
            "restore",
            "--backup",
            &backup,
            "--ledger",
            &c.ledger_url,
            "--issuer",
            &op.issuer_url,
        ],
    )
    .await);
    assert!(out.contains("restored 8 tokens"), "{out}");
    let no_wallet = scrip_ok(&["--help"]);
    assert!(no_wallet.contains("wallet") && no_wallet.contains("demo"));
}
