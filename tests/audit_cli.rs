//! `scrip audit` against a consortium on loopback: clean, incremental, alarms, tampering.

mod common;

use common::path;
use scrip::consortium::Consortium;
use scrip_client::Wallet;
use scrip_redeemer::Mode;
use scrip_spec::CapacityKind;

fn audit(args: Vec<String>) -> tokio::task::JoinHandle<std::process::Output> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::scrip(&args)
    })
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clean_incremental_alarms_and_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Consortium::start(&dir.path().join("c"), &["op-a", "op-b"], Mode::Strict)
        .await
        .expect("consortium");
    let (a, b) = (&c.operators[0], &c.operators[1]);
    for op in &c.operators {
        op.issuer.rotate_keys().await.expect("keys");
    }
    let (batch, codes) = a.issuer.mint_cards(50, 1).await.expect("mint");
    assert!(a.issuer.activate_batch(&batch).await.expect("activate"));
    let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, None)
        .await
        .expect("wallet");
    let kind = CapacityKind::new("chunk-1m").expect("kind");
    wallet
        .open_card(
            &a.issuer_url,
            &codes[0].to_string(),
            &[(kind.clone(), 3)],
            &|_, _| {},
        )
        .await
        .expect("open");
    wallet
        .spend(&kind, &b.redeemer_url)
        .await
        .expect("spend at b");
    let state = dir.path().join("audit.state");
    let base = |extra: &[&str]| {
        let mut v = strings(&["audit", "--ledger", &c.ledger_url, "--state", path(&state)]);
        v.extend(strings(extra));
        v
    };

    // Issuance not yet reported: a token of the key is spent but none reported issued.
    let out = audit(base(&[])).await.expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "alarm exit status: {text}");
    assert!(text.contains("1 spent but 0 reported issued"), "{text}");

    // After the report and a checkpoint: clean, and the second run reads only new entries.
    a.issuer.report_issuance().await.expect("report");
    let checkpoint = c
        .ledger
        .checkpoint()
        .await
        .expect("checkpoint")
        .expect("made");
    let scrip_spec::ledger::EntryBody::Checkpoint(signed) = &checkpoint.body else {
        panic!("not a checkpoint")
    };
    let key_text = std::fs::read_to_string(dir.path().join("c/op-b.key")).expect("key");
    let op_b = scrip_spec::OperatorKey::from_text(&key_text).expect("key");
    let cosignature = scrip_spec::ledger::Cosignature {
        checkpoint: signed.payload.clone(),
    };
    c.ledger
        .cosign(op_b.sign(cosignature))
        .await
        .expect("cosign");
    let out = audit(base(&["--json"])).await.expect("join");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["verified"]["new_entries"], 2);
    assert_eq!(report["verified"]["checkpoints"], 1);
    assert_eq!(
        report["verified"]["latest_checkpoint_cosigners"][0],
        op_b.id().to_string()
    );
    assert_eq!(report["settlement"]["cells"][0]["issuer"], "op-a");
    assert_eq!(report["settlement"]["cells"][0]["redeemer"], "op-b");
    assert_eq!(report["settlement"]["cells"][0]["value"], 4);
    assert_eq!(report["settlement"]["net"]["op-b"], 4);
    assert!(report["alarms"].as_array().expect("alarms").is_empty());

    // The HTML page: self-contained, alarms first, charts inline.
    let page = dir.path().join("audit.html");
    let out = audit(base(&["--html", path(&page)])).await.expect("join");
    assert_eq!(out.status.code(), Some(0));
    let html = std::fs::read_to_string(&page).expect("page");
    assert!(
        html.contains("No alarms.") && html.matches("<svg").count() >= 3,
        "charts drawn"
    );
    assert!(html.contains("op-a") && html.contains("op-b"));
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("<script"),
        "nothing fetched"
    );

    // A period with no spends settles nothing.
    let out = audit(base(&["--json", "--period", "2001-01"]))
        .await
        .expect("join");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        report["settlement"]["cells"]
            .as_array()
            .expect("cells")
            .is_empty()
    );
    assert!(
        !audit(base(&["--period", "2026-13"]))
            .await
            .expect("join")
            .status
            .success()
    );

    // A read-only copy of the database audits the same; a tampered copy is caught.
    let copy = dir.path().join("copy.db");
    let conn = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("c/ledger.db").display()
    ))
    .await
    .expect("db");
    sqlx::query(&format!("VACUUM INTO '{}'", copy.display()))
        .execute(&conn)
        .await
        .expect("copy");
    let copy_url = format!("sqlite://{}", copy.display());
    let db_state = dir.path().join("db.state");
    let out = audit(strings(&[
        "audit",
        "--database",
        &copy_url,
        "--state",
        path(&db_state),
        "--json",
    ]))
    .await
    .expect("join");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy_conn = sqlx::SqlitePool::connect(&copy_url).await.expect("copy db");
    sqlx::query("UPDATE entries SET body = CAST(body AS BLOB) || x'00' WHERE seq = 3")
        .execute(&copy_conn)
        .await
        .expect("tamper");
    let out = audit(strings(&[
        "audit",
        "--database",
        &copy_url,
        "--state",
        path(&db_state),
        "--from-genesis",
    ]))
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(2), "tampering exit status");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TAMPERING") && err.contains("entry 3"),
        "{err}"
    );
}
