//! A wallet never loses value to the network: with a fault proxy between the wallet and the
//! services, a lost 200, a 5xx or a 408 after the redeemer spent the token, and a wallet killed
//! while the answer was on its way, each end with exactly one grant per spent token; an issuer
//! hiding its newest key is refused before anything is charged; and the ledger, watched through
//! a logging proxy, never sees the nullifier of a token the wallet still holds.

use crate::support::{cards_on_sale, consortium_with_keys};
use crate::{SCRIP, ok, wallet as wallet_cli};
use scrip::consortium::Consortium;
use scrip_client::{TokenState, Wallet, WalletError};
use scrip_spec::CapacityKind;
use scrip_testkit::{Fault, FaultProxy, Http, path, spent_total};
use std::time::Duration;

fn queue() -> CapacityKind {
    CapacityKind::new("queue").expect("kind")
}

/// A two-operator consortium, a wallet at `w.db` holding `tokens` queue tokens of op-a.
async fn funded_wallet(tokens: u64) -> (tempfile::TempDir, Consortium, Wallet) {
    let (dir, c) = consortium_with_keys(&["op-a", "op-b"]).await;
    let code = cards_on_sale(&c.operators[0], 100, 1).await.remove(0);
    let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, None)
        .await
        .expect("wallet");
    wallet
        .open_card(
            &c.operators[0].issuer_url,
            &code,
            &[(queue(), tokens)],
            &|_, _| {},
        )
        .await
        .expect("open");
    (dir, c, wallet)
}

/// Consumes `grant` at the redeemer, as the relay would: true if it was live.
async fn consume(redeemer: &str, grant: &str) -> bool {
    let (status, _) = Http::new(redeemer)
        .post(
            "/v1/grants/consume",
            &serde_json::json!({"grant": grant, "kind": "queue"}),
        )
        .await;
    status.is_success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_answer_a_5xx_or_a_408_costs_no_token_and_yields_its_grant() {
    let (_dir, c, wallet) = funded_wallet(8).await;
    let redeemer = &c.operators[1].redeemer_url;
    let proxy = FaultProxy::start(redeemer).await;
    let mut spent = 0;
    for fault in [
        Fault::DropResponse,
        Fault::ReplaceResponse(503),
        Fault::ReplaceResponse(500),
        Fault::ReplaceResponse(408),
    ] {
        proxy.once(fault);
        let receipt = wallet
            .spend(&queue(), &proxy.url())
            .await
            .unwrap_or_else(|e| panic!("{fault:?}: the same token presented again: {e}"));
        spent += 1;
        assert!(receipt.presented_again, "{fault:?}");
        assert_eq!(
            spent_total(&c.ledger_url).await,
            spent,
            "{fault:?}: one ledger spend per token"
        );
        let b = wallet.balance().await.expect("balance");
        assert_eq!((b.spent, b.granted), (spent, spent), "{fault:?}");
        assert_eq!(b.unspent.values().sum::<u64>(), 8 - spent);
        assert!(
            consume(redeemer, &receipt.grant).await,
            "{fault:?}: the grant is live"
        );
    }
    assert_eq!(proxy.faults_applied(), 4);

    // A fault that lasts: the spend gives up, the token stays pending for that redeemer and
    // no other token is used; once the network is back the same token yields its grant.
    proxy.set(Fault::DropResponse);
    let err = wallet
        .spend(&queue(), &proxy.url())
        .await
        .expect_err("no answer");
    assert!(matches!(err, WalletError::NoAnswer { .. }), "{err}");
    spent += 1;
    let pending = wallet
        .store()
        .pending_at("queue", &proxy.url())
        .await
        .expect("query")
        .expect("the token is pending");
    let b = wallet.balance().await.expect("balance");
    assert_eq!((b.pending, b.unspent.values().sum::<u64>()), (1, 8 - spent));
    // The ledger knows it is spent; the wallet keeps it pending (only the redeemer can give
    // its grant), whatever the ledger says.
    assert_eq!(spent_total(&c.ledger_url).await, spent);
    assert_eq!(wallet.resolve_pending().await.expect("resolve"), 0);
    proxy.set(Fault::Forward);
    let receipt = wallet
        .spend(&queue(), &proxy.url())
        .await
        .expect("collected");
    assert!(receipt.presented_again);
    let stored = wallet
        .token(&pending.token.nullifier())
        .await
        .expect("query")
        .expect("token");
    assert_eq!(stored.state, TokenState::Spent);
    assert_eq!(stored.grant.as_deref(), Some(receipt.grant.as_str()));
    assert_eq!(
        spent_total(&c.ledger_url).await,
        spent,
        "no second ledger spend"
    );
    assert!(consume(redeemer, &receipt.grant).await);
    let b = wallet.balance().await.expect("balance");
    assert_eq!((b.spent, b.granted, b.pending), (spent, spent, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wallet_killed_while_its_answer_was_on_the_way_collects_the_grant_next_time() {
    let (dir, c, wallet) = funded_wallet(3).await;
    drop(wallet);
    let redeemer = &c.operators[0].redeemer_url;
    let proxy = FaultProxy::start(redeemer).await;
    // The redeemer spends and answers; the proxy holds the answer while the wallet is killed.
    proxy.set(Fault::DelayResponse(Duration::from_secs(30)));
    let file = dir.path().join("w.db");
    let mut child = SCRIP
        .command(&[
            "wallet",
            "--wallet",
            path(&file),
            "spend",
            "--kind",
            "queue",
            "--redeemer",
            &proxy.url(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the wallet");
    let started = std::time::Instant::now();
    while proxy.faults_applied() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the spend reached the redeemer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("kill -9 the wallet");
    child.wait().expect("reap");
    assert_eq!(
        spent_total(&c.ledger_url).await,
        1,
        "the redeemer spent the token"
    );
    proxy.set(Fault::Forward);

    let out = ok(wallet_cli(
        path(&file),
        &[
            "--json",
            "spend",
            "--kind",
            "queue",
            "--redeemer",
            &proxy.url(),
        ],
    )
    .await);
    let answer: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(answer["presented_again"], true, "{answer}");
    let grant = answer["grant"].as_str().expect("grant").to_owned();
    assert_eq!(
        spent_total(&c.ledger_url).await,
        1,
        "the same token, not a second one"
    );
    assert!(consume(redeemer, &grant).await);
    let wallet = Wallet::open(&file).await.expect("wallet");
    let b = wallet.balance().await.expect("balance");
    assert_eq!((b.spent, b.granted, b.pending), (1, 1, 0));
    assert_eq!(b.unspent.values().sum::<u64>(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_issuer_hiding_its_newest_key_is_refused_before_anything_is_charged() {
    let (dir, c) = consortium_with_keys(&["op-a", "op-b"]).await;
    let code = cards_on_sale(&c.operators[0], 100, 1).await.remove(0);
    let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, None)
        .await
        .expect("wallet");
    let issuer = &c.operators[0].issuer_url;
    // op-a announces a second queue key on the ledger but its issuer keeps offering the old
    // one only: this wallet would be the only one with tokens of the old key from now on.
    let op_a = scrip_spec::OperatorKey::read_file(&c.dir.join("op-a.key")).expect("op-a key");
    tokio::time::sleep(Duration::from_millis(1100)).await; // a later valid_from than the real key's
    let secret = scrip_spec::TokenSecretKey::generate().expect("keygen");
    let mut hidden = scrip_testkit::key_info(secret.public_key(), "op-a", "queue", 24);
    hidden.valid_from = scrip_spec::now();
    let ledger = Http::new(&c.ledger_url);
    let (_, info) = ledger.get("/v1/info").await;
    let ledger_id = serde_json::from_value(info["ledger_id"].clone()).expect("ledger id");
    let (status, body) = ledger
        .post(
            "/v1/entries",
            &scrip_testkit::keys::announcement(&op_a, ledger_id, hidden),
        )
        .await;
    assert!(status.is_success(), "announced: {body}");
    let err = wallet
        .open_card(issuer, &code, &[(queue(), 2)], &|_, _| {})
        .await
        .expect_err("refused");
    assert!(matches!(err, WalletError::KeyWithheld { .. }), "{err}");
    assert_eq!(
        wallet
            .card_balance(issuer, &code)
            .await
            .expect("balance")
            .remaining_credits,
        100,
        "nothing charged"
    );
    assert!(
        wallet
            .store()
            .pending_openings(false)
            .await
            .expect("q")
            .is_empty()
    );
    // Kinds whose key is not withheld still open.
    let chunk = CapacityKind::new("chunk-64k").expect("kind");
    wallet
        .open_card(issuer, &code, &[(chunk, 1)], &|_, _| {})
        .await
        .expect("the chunk key is the directory's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_logging_proxy_before_the_ledger_sees_no_nullifier_of_a_held_token() {
    let (dir, c) = consortium_with_keys(&["op-a", "op-b"]).await;
    let code = cards_on_sale(&c.operators[0], 100, 1).await.remove(0);
    let watcher = FaultProxy::start(&c.ledger_url).await;
    let file = dir.path().join("w.db");
    let wallet = Wallet::create(&file, &watcher.url(), None)
        .await
        .expect("wallet");
    let backup = wallet.backup_code();
    let issuer = &c.operators[0].issuer_url;
    wallet
        .open_card(issuer, &code, &[(queue(), 6)], &|_, _| {})
        .await
        .expect("open");
    for _ in 0..2 {
        wallet
            .spend(&queue(), &c.operators[1].redeemer_url)
            .await
            .expect("spend");
    }
    let export = wallet.export().await.expect("export");
    let held: Vec<scrip_spec::Nullifier> =
        export.tokens.iter().map(|t| t.token.nullifier()).collect();
    assert_eq!(held.len(), 4);

    // Restore from the seed, and import the export elsewhere, both through the watcher.
    let connections_before = watcher.connections();
    let restored = Wallet::create(
        &dir.path().join("restored.db"),
        &watcher.url(),
        Some(scrip_spec::WalletSeed::from_backup_code(&backup).expect("seed")),
    )
    .await
    .expect("wallet");
    assert_eq!(
        restored
            .restore(std::slice::from_ref(issuer))
            .await
            .expect("restore"),
        6
    );
    let b = restored.balance().await.expect("balance");
    assert_eq!(
        (b.spent, b.unspent.values().sum::<u64>()),
        (2, 4),
        "spent ones found"
    );
    let other = Wallet::create(&dir.path().join("other.db"), &watcher.url(), None)
        .await
        .expect("wallet");
    assert_eq!(other.import(&export).await.expect("import").added, 4);
    // Pending tokens past the horizon are settled the same way.
    let t = other
        .unspent_token("queue")
        .await
        .expect("q")
        .expect("token");
    other
        .store()
        .set_state(&t.nullifier(), TokenState::Pending, None, None, 0)
        .await
        .expect("pending");
    assert_eq!(other.resolve_pending().await.expect("resolve"), 1);

    let seen = watcher.sent_text();
    assert!(
        seen.contains("/v1/spent/"),
        "the status was asked by prefix"
    );
    assert!(!seen.contains("/v1/nullifiers/"), "never by nullifier");
    for n in &held {
        let b64 = scrip_spec::encoding::b64_encode(n.0);
        let hex: String = n.0.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            !seen.contains(&b64) && !seen.contains(&hex[..16]),
            "the ledger saw {b64}"
        );
    }
    // One connection per query: the queries cannot be grouped by connection.
    let queries = seen.matches("GET /v1/spent/").count();
    assert!(queries >= 3);
    assert!(watcher.connections() - connections_before >= queries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_opening_set_aside_delivers_its_tokens_when_the_issuer_answers_and_restore_crosses_its_gap()
 {
    let (dir, c) = consortium_with_keys(&["op-a", "op-b"]).await;
    let codes = cards_on_sale(&c.operators[0], 100, 2).await;
    let real = c.operators[0].issuer_url.clone();
    let proxy = FaultProxy::start(&real).await;
    let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, None)
        .await
        .expect("wallet");
    let backup = wallet.backup_code();

    // The issuer records the opening and charges the card; its answer is lost.
    proxy.set_for("POST /v1/cards/open", Fault::DropResponse);
    let err = wallet
        .open_card(&proxy.url(), &codes[0], &[(queue(), 3)], &|_, _| {})
        .await
        .expect_err("no answer");
    assert!(matches!(err, WalletError::NoAnswer { .. }), "{err}");
    let blocked = wallet
        .open_card(&real, &codes[1], &[(queue(), 1)], &|_, _| {})
        .await
        .expect_err("blocked");
    assert!(
        matches!(blocked, WalletError::OpeningPending { .. }),
        "{blocked}"
    );

    let aside = wallet.set_aside_openings().await.expect("set aside");
    assert_eq!(aside.len(), 1);
    assert_eq!(
        (aside[0].tokens, aside[0].next_counter),
        (3, scrip_spec::COUNTER_EPOCH)
    );
    // New openings go ahead (the set-aside one is asked again and still gets no answer).
    wallet
        .open_card(&real, &codes[1], &[(queue(), 2)], &|_, _| {})
        .await
        .expect("not blocked any more");
    assert_eq!(
        wallet
            .balance()
            .await
            .expect("b")
            .unspent
            .values()
            .sum::<u64>(),
        2
    );

    // The issuer answers again: the next opening also delivers the set-aside tokens, and
    // the card was charged once.
    proxy.set(Fault::Forward);
    wallet
        .open_card(&real, &codes[1], &[(queue(), 1)], &|_, _| {})
        .await
        .expect("open");
    assert_eq!(
        wallet
            .balance()
            .await
            .expect("b")
            .unspent
            .values()
            .sum::<u64>(),
        6
    );
    assert!(
        wallet
            .store()
            .pending_openings(true)
            .await
            .expect("q")
            .is_empty()
    );
    assert_eq!(
        wallet
            .card_balance(&real, &codes[0])
            .await
            .expect("card")
            .remaining_credits,
        70
    );

    // A restore walks across the gap the epoch left and finds every token.
    let restored = Wallet::create(
        &dir.path().join("restored.db"),
        &c.ledger_url,
        Some(scrip_spec::WalletSeed::from_backup_code(&backup).expect("seed")),
    )
    .await
    .expect("wallet");
    assert_eq!(
        restored
            .restore(std::slice::from_ref(&real))
            .await
            .expect("restore"),
        6
    );
}

/// A fake ledger that claims every prefix holds more spent nullifiers than one answer: with
/// `fabricate`, it sends a full page of invented ones; it records the prefixes it was asked.
async fn lying_ledger(fabricate: bool) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::extract::Path;
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    let app = axum::Router::new()
        .route(
            "/v1/totals",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"keys": [], "issuers": []})) }),
        )
        .route(
            "/v1/spent/{prefix}",
            axum::routing::get(move |Path(prefix): Path<String>| {
                let log = log.clone();
                async move {
                    log.lock().expect("log").push(prefix.clone());
                    let p = scrip_spec::api::ledger::NullifierPrefix::parse_hex(&prefix).expect("hex");
                    let spent: Vec<serde_json::Value> = if fabricate {
                        (0..scrip_spec::api::ledger::MAX_SPENT_PREFIX_ANSWER as u32)
                            .map(|i| {
                                let mut n = [0u8; 32];
                                n[..p.as_bytes().len()].copy_from_slice(p.as_bytes());
                                n[28..].copy_from_slice(&i.to_be_bytes());
                                serde_json::json!({"nullifier": scrip_spec::encoding::b64_encode(n), "spent_at": 1, "spent_by": "x", "seq": 1})
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    axum::Json(serde_json::json!({"prefix": prefix, "spent": spent, "complete": false}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ledger_claiming_crowded_prefixes_learns_no_more_of_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = scrip_spec::Nullifier([0x5a; 32]);
    for (fabricate, longest) in [(false, 2), (true, 4)] {
        let (url, asked) = lying_ledger(fabricate).await;
        let wallet = Wallet::create(&dir.path().join(format!("w-{fabricate}.db")), &url, None)
            .await
            .expect("wallet");
        let err = wallet.spent_among(&[token]).await.expect_err("refused");
        assert!(
            err.to_string().contains("not asking with a longer prefix"),
            "{err}"
        );
        let asked = asked.lock().expect("log").clone();
        assert!(!asked.is_empty());
        // Hex digits: a 1-byte prefix for an empty spent set, one byte more only when the
        // answer really is full.
        assert!(
            asked.iter().all(|p| p.len() <= longest),
            "{fabricate}: {asked:?}"
        );
        assert_eq!(asked.iter().map(String::len).max(), Some(longest));
    }
}
