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

    // A backup code that opened nothing at the issuers named: an error, and no wallet left.
    let fresh = dir.path().join("fresh.db");
    let init = ok(wallet(path(&fresh), &["init", "--ledger", &c.ledger_url]).await);
    let unused = init
        .lines()
        .find_map(|l| l.trim().strip_prefix("sw1-"))
        .map(|b| format!("sw1-{b}"))
        .expect("backup code shown");
    let empty = dir.path().join("empty.db");
    let restore = |code: String| {
        let (empty, ledger, issuer) = (empty.clone(), c.ledger_url.clone(), op.issuer_url.clone());
        async move {
            wallet(
                path(&empty),
                &[
                    "restore", "--backup", &code, "--ledger", &ledger, "--issuer", &issuer,
                ],
            )
            .await
        }
    };
    let out = restore(unused).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no opening of this backup code was found") && err.contains(&op.issuer_url),
        "{err}"
    );
    assert!(!empty.exists(), "no wallet created");
    // A mistyped backup code is named as a typo.
    let mut typo: Vec<char> = backup.chars().collect();
    typo[10] = if typo[10] == 'A' { 'B' } else { 'A' };
    let out = restore(typo.into_iter().collect()).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("typo"), "{err}");

    let no_wallet = scrip_ok(&["--help"]);
    assert!(no_wallet.contains("wallet") && no_wallet.contains("demo"));
}

/// Changes the first symbol of a card code to another one: a typo the check symbol catches.
fn mistyped(code: &str) -> String {
    let first = if code.starts_with('0') { '1' } else { '0' };
    format!("{first}{}", &code[1..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_wallet_command_speaks_json_and_typos_never_leave_the_wallet() {
    let (dir, c) = consortium_with_keys(&["op-a"]).await;
    let op = &c.operators[0];
    let code = cards_on_sale(op, 30, 1).await.remove(0);
    let issuer = scrip_testkit::FaultProxy::start(&op.issuer_url).await;
    let wallet_file = dir.path().join("w.db");
    let w = path(&wallet_file);
    let json = |out: std::process::Output| -> serde_json::Value {
        serde_json::from_str(ok(out).trim()).expect("one JSON object")
    };

    let init = json(wallet(w, &["--json", "init", "--ledger", &c.ledger_url]).await);
    assert!(
        init["backup_code"]
            .as_str()
            .expect("code")
            .starts_with("sw1-")
    );

    // A mistyped card code is refused before any request reaches the issuer.
    let typo = wallet(
        w,
        &[
            "--json",
            "open",
            &mistyped(&code),
            "--issuer",
            &issuer.url(),
            "--tokens",
            "queue=1",
        ],
    )
    .await;
    assert!(!typo.status.success());
    let refusal: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&typo.stdout).trim()).expect("json error");
    assert_eq!(refusal["error"]["code"], "bad_card_code", "{refusal}");
    assert!(
        refusal["error"]["message"]
            .as_str()
            .expect("message")
            .contains("typo"),
        "{refusal}"
    );
    assert_eq!(issuer.connections(), 0, "nothing was sent to the issuer");

    let opened = json(
        wallet(
            w,
            &[
                "--json",
                "open",
                &code,
                "--issuer",
                &issuer.url(),
                "--tokens",
                "queue=2,chunk-64k=3",
            ],
        )
        .await,
    );
    assert_eq!(opened["tokens"]["queue"], 2);
    assert_eq!(opened["remaining_credits"], 7);

    let balance = json(wallet(w, &["--json", "balance"]).await);
    let rows = balance["unspent"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{balance}");
    assert!(
        rows.iter()
            .all(|r| r["redeem_until"].as_u64().expect("time") > scrip_spec::now())
    );
    let text = ok(wallet(w, &["balance"]).await);
    assert!(text.contains("spendable until in "), "human times: {text}");

    let spent = json(
        wallet(
            w,
            &[
                "--json",
                "spend",
                "--kind",
                "queue",
                "--redeemer",
                &op.redeemer_url,
            ],
        )
        .await,
    );
    assert!(
        spent["grant"]
            .as_str()
            .expect("grant")
            .starts_with("sg1.queue.")
    );
    assert_eq!(spent["presented_again"], false);

    // A kind the wallet holds no token of: the error names what it does hold.
    let none = wallet(
        w,
        &[
            "--json",
            "spend",
            "--kind",
            "quue",
            "--redeemer",
            &op.redeemer_url,
        ],
    )
    .await;
    assert!(!none.status.success());
    let refusal: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&none.stdout).trim()).expect("json error");
    assert_eq!(refusal["error"]["code"], "no_token");
    let message = refusal["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("chunk-64k") && message.contains("queue"),
        "{message}"
    );

    let aside = json(wallet(w, &["--json", "open", "--abandon"]).await);
    assert_eq!(aside["set_aside"].as_array().map(Vec::len), Some(0));

    let export = dir.path().join("tokens.json");
    let exported = json(wallet(w, &["--json", "export", "--out", path(&export)]).await);
    assert_eq!(exported["exported"], 4);
    let other = dir.path().join("other.db");
    json(wallet(path(&other), &["--json", "init", "--ledger", &c.ledger_url]).await);
    let imported = json(wallet(path(&other), &["--json", "import", "--file", path(&export)]).await);
    assert_eq!(
        (
            imported["added"].as_u64(),
            imported["spent_skipped"].as_u64()
        ),
        (Some(4), Some(0))
    );
    // Spent in the meantime by the first wallet: the import says it left it out.
    ok(wallet(
        w,
        &["spend", "--kind", "queue", "--redeemer", &op.redeemer_url],
    )
    .await);
    let third = dir.path().join("third.db");
    json(wallet(path(&third), &["--json", "init", "--ledger", &c.ledger_url]).await);
    let text = ok(wallet(path(&third), &["import", "--file", path(&export)]).await);
    assert!(
        text.contains("imported 3 new tokens")
            && text.contains("skipped 1 tokens the ledger records as spent"),
        "{text}"
    );
}
