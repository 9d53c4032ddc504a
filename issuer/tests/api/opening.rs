use crate::helpers::{Code, code, default_limits, spawn, tokens};
use reqwest::StatusCode;
use scrip_spec::{TokenChallenge, WalletSeed, verify_token};
use std::os::unix::fs::PermissionsExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_a_card_in_parts_and_repeat_without_charge() {
    let t = spawn(default_limits()).await;
    let card = &t.cards(30, 1).await[0];
    let seed = WalletSeed::generate();

    // Every key file is owner-only.
    for entry in std::fs::read_dir(t.dir.path().join("keys")).expect("keys dir") {
        let mode = entry
            .expect("entry")
            .metadata()
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // queue (10) + chunk-1m (4) = 14 of 30.
    let first = t.opening(&seed, 0, card, &["queue", "chunk-1m"]).await;
    let (status, body) = t.post("/v1/cards/open", &first.request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["remaining_credits"], 16);
    let toks = tokens(&first, &body);
    let challenge = TokenChallenge::for_issuer("op-a").expect("challenge");
    for (tok, key) in toks.iter().zip(&first.keys) {
        verify_token(&key.public_key, &challenge, tok).expect("verifies");
    }

    // The same request again: same signatures, nothing charged.
    let (status, again) = t.post("/v1/cards/open", &first.request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["responses"], body["responses"]);
    assert_eq!(again["remaining_credits"], 16);

    // The same id with other content is refused.
    let mut other = t.opening(&seed, 2, card, &["chunk-64k"]).await;
    other.request.request_id = first.request.request_id;
    assert_eq!(
        t.refusal("/v1/cards/open", &other.request).await,
        (StatusCode::CONFLICT, Code::RequestIdReused)
    );

    // Too expensive: refused, nothing charged.
    let big = t.opening(&seed, 2, card, &["queue", "queue"]).await;
    let (status, err) = t.post("/v1/cards/open", &big.request).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNPROCESSABLE_ENTITY, Code::InsufficientCredits)
    );
    assert_eq!(err["error"]["remaining_credits"], 16);

    // The rest: queue (10) + 3 × chunk-256k (2) = 16: the card is used up.
    let last = t
        .opening(
            &seed,
            2,
            card,
            &["queue", "chunk-256k", "chunk-256k", "chunk-256k"],
        )
        .await;
    let (status, body) = t.post("/v1/cards/open", &last.request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["remaining_credits"], 0);
    tokens(&last, &body);
    let (_, balance) = t
        .post("/v1/cards/balance", &serde_json::json!({"card_code": card}))
        .await;
    assert_eq!(
        balance,
        serde_json::json!({"state": "used", "value": 30, "remaining_credits": 0})
    );
    // A used card still answers repeats of its openings.
    assert_eq!(
        t.post("/v1/cards/open", &first.request).await.0,
        StatusCode::OK
    );
    let fresh = t.opening(&seed, 6, card, &["chunk-64k"]).await;
    assert_eq!(
        t.refusal("/v1/cards/open", &fresh.request).await,
        (StatusCode::FORBIDDEN, Code::InvalidCard)
    );

    // Replay for a restoring wallet.
    let (status, replay) = t
        .post(
            "/v1/requests/replay",
            &serde_json::json!({"request_id": first.request.request_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replay["responses"], again["responses"]);
    assert_eq!(
        t.refusal(
            "/v1/requests/replay",
            &serde_json::json!({"request_id": scrip_spec::api::issuer::RequestId([0; 32])})
        )
        .await,
        (StatusCode::NOT_FOUND, Code::UnknownRequest)
    );

    // Issuance goes to the ledger as aggregates per key: 6 tokens over 3 kinds here.
    let first_round = t.issuer.report_issuance().await.expect("report");
    assert_eq!(first_round, 3);
    let ledger = scrip_common::clients::LedgerClient::new(&t.ledger.url);
    let totals = ledger.totals().await.expect("totals");
    assert_eq!(totals.keys.iter().map(|k| k.issued).sum::<u64>(), 6);
    assert_eq!(totals.issuers[0].credits_sold, 30);
    assert_eq!(t.issuer.report_issuance().await.expect("nothing new"), 0);

    // The reports' intervals tile time from each key's valid_from: none starts at the time of
    // an opening. A later report of a key starts where its previous one ended.
    let more = t.cards(10, 1).await.remove(0);
    let next = t.opening(&seed, 7, &more, &["queue"]).await;
    assert_eq!(
        t.post("/v1/cards/open", &next.request).await.0,
        StatusCode::OK
    );
    assert_eq!(t.issuer.report_issuance().await.expect("report"), 1);
    let directory = ledger.keys(None, None).await.expect("keys");
    let log = ledger.log(0, 1000).await.expect("log").entries;
    let mut reports: std::collections::HashMap<_, Vec<(u64, u64)>> = Default::default();
    for e in &log {
        if let scrip_spec::ledger::EntryBody::Request(r) = &e.body
            && let scrip_spec::ledger::Action::TokensIssued {
                token_key_id,
                from,
                until,
                ..
            } = &r.payload.action
        {
            reports
                .entry(*token_key_id)
                .or_default()
                .push((*from, *until));
        }
    }
    assert_eq!(
        reports.values().map(Vec::len).sum::<usize>(),
        first_round + 1
    );
    assert!(reports.values().any(|intervals| intervals.len() == 2));
    for (key, intervals) in &reports {
        let record = directory
            .iter()
            .find(|k| &k.info.public_key.id() == key)
            .expect("announced");
        assert_eq!(
            intervals[0].0, record.info.valid_from,
            "first starts at valid_from"
        );
        for pair in intervals.windows(2) {
            assert_eq!(
                pair[1].0, pair[0].1,
                "the next starts where the previous ended"
            );
        }
        assert_eq!(record.reported_until, intervals.last().expect("one").1);
    }

    // An issuer database restored from before its last report has lost where the reports
    // ended: its next report is refused by the ledger as not tiling, moved to start where the
    // ledger says, and accepted; no count is lost or counted twice.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        t.dir.path().join("issuer.db").display()
    ))
    .await
    .expect("issuer db");
    sqlx::query("DELETE FROM issuance_reported")
        .execute(&db)
        .await
        .expect("forget the report ends");
    let last = t.cards(10, 1).await.remove(0);
    let opening = t.opening(&seed, 8, &last, &["queue"]).await;
    assert_eq!(
        t.post("/v1/cards/open", &opening.request).await.0,
        StatusCode::OK
    );
    assert_eq!(t.issuer.report_issuance().await.expect("report"), 1);
    assert!(
        t.issuer.store().outbox().await.expect("outbox").is_empty(),
        "sent"
    );
    let totals = ledger.totals().await.expect("totals");
    assert_eq!(totals.keys.iter().map(|k| k.issued).sum::<u64>(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_openings_never_overspend_a_card() {
    let t = spawn(default_limits()).await;
    let card = t.cards(50, 1).await.remove(0);
    let seed = WalletSeed::generate();
    // Ten openings of one queue token (10 credits) each race for a card worth five.
    let mut tasks = Vec::new();
    for i in 0..10u64 {
        let opening = t.opening(&seed, i, &card, &["queue"]).await;
        let client = t.http.client.clone();
        let url = format!("{}/v1/cards/open", t.base);
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&opening.request)
                .send()
                .await
                .expect("send")
                .status()
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("task") {
            StatusCode::OK => ok += 1,
            s => assert!(
                s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::FORBIDDEN,
                "{s}"
            ),
        }
    }
    assert_eq!(ok, 5, "exactly the card's value was sold");
    let (_, balance) = t
        .post("/v1/cards/balance", &serde_json::json!({"card_code": card}))
        .await;
    assert_eq!(balance["remaining_credits"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minted_batch_is_not_for_sale_until_activated() {
    let t = spawn(default_limits()).await;
    let (batch, codes) = t.issuer.mint_cards(20, 2).await.expect("mint");
    let code0 = codes[0].to_string();
    let opening = t
        .opening(&WalletSeed::generate(), 0, &code0, &["chunk-64k"])
        .await;
    assert_eq!(
        t.refusal("/v1/cards/open", &opening.request).await,
        (StatusCode::FORBIDDEN, Code::InvalidCard)
    );
    let balance = serde_json::json!({"card_code": code0});
    assert_eq!(
        t.post("/v1/cards/balance", &balance).await.0,
        StatusCode::FORBIDDEN
    );
    assert!(t.issuer.activate_batch(&batch).await.expect("activate"));
    assert!(
        t.issuer.activate_batch(&batch).await.is_err(),
        "activating twice is refused"
    );
    assert_eq!(
        t.post("/v1/cards/open", &opening.request).await.0,
        StatusCode::OK
    );
    // Void the other card: it can no longer be opened, and says so in its balance.
    assert!(
        t.issuer
            .store()
            .void_card(&codes[1].storage_hash())
            .await
            .expect("void")
    );
    let (_, balance) = t
        .post(
            "/v1/cards/balance",
            &serde_json::json!({"card_code": codes[1].to_string()}),
        )
        .await;
    assert_eq!(balance["state"], "void");
    let ledger = scrip_common::clients::LedgerClient::new(&t.ledger.url);
    assert_eq!(
        ledger.totals().await.expect("totals").issuers[0].cards_sold,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_time_each_route_and_count_openings_by_result() {
    let t = spawn(default_limits()).await;
    let card = &t.cards(30, 1).await[0];
    let opening = t
        .opening(&WalletSeed::generate(), 0, card, &["queue", "chunk-1m"])
        .await;
    assert_eq!(
        t.post("/v1/cards/open", &opening.request).await.0,
        StatusCode::OK
    );
    let mut refused = opening.request.clone();
    refused.card_code = scrip_spec::CardCode::generate().to_string();
    assert_eq!(
        t.post("/v1/cards/open", &refused).await.0,
        StatusCode::FORBIDDEN
    );
    let m = scrip_common::metrics::Scrape::new("issuer", t.metrics().await);
    let open = "/v1/cards/open";
    let timed = [(open, "POST", "2xx", 1), (open, "POST", "4xx", 1)];
    let values = [
        (r#"scrip_issuer_openings_total{result="opened"}"#, 1.0),
        (r#"scrip_issuer_openings_total{result="refused"}"#, 1.0),
        (
            r#"scrip_issuer_balance_checks_total{result="answered"}"#,
            0.0,
        ),
        ("scrip_issuer_tokens_signed_total", 2.0),
    ];
    m.check(&timed, &values, env!("CARGO_PKG_VERSION"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!m.to_string().contains(card.as_str()), "no card code");
}
