//! `POST /v1/refresh`: swaps of this issuer's tokens, their repeats, their refusals, and the
//! crash window between the ledger's commit and the signatures.

use crate::helpers::{Code, code, default_limits, spawn, spawn_behind_ledger_proxy, tokens};
use reqwest::StatusCode;
use scrip_spec::{Token, TokenChallenge, WalletSeed, verify_token};
use scrip_testkit::Fault;

async fn spent(t: &crate::helpers::TestIssuer, token: &Token) -> bool {
    t.ledger
        .ledger
        .nullifier(&token.nullifier())
        .await
        .expect("read")
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_signs_once_and_repeats_answer_the_same() {
    let t = spawn(default_limits()).await;
    let seed = WalletSeed::generate();
    let old = t.open_tokens(&seed, 0, &["chunk-64k"; 13]).await;

    // 12 chunk-64k (12 credits) for one chunk-4m (12).
    let r = t
        .refresh(&seed, 13, old[..12].to_vec(), &["chunk-4m"])
        .await;
    let (status, body) = t.post("/v1/refresh", &r.request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = tokens(&r.opening, &body);
    let challenge = TokenChallenge::for_issuer("op-a").expect("challenge");
    verify_token(&r.opening.keys[0].public_key, &challenge, &new[0]).expect("verifies");
    assert!(spent(&t, &old[0]).await && spent(&t, &old[11]).await);
    assert!(!spent(&t, &old[12]).await);
    assert_eq!(t.refresh_entries().await, 1);

    // The same request: the same answer, no second entry, no signature made.
    let signatures = t.signatures();
    let (status, again) = t.post("/v1/refresh", &r.request).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["responses"], body["responses"]);
    assert_eq!((t.refresh_entries().await, t.signatures()), (1, signatures));
    // A restoring wallet finds the refresh under its request id.
    let (status, replay) = t
        .post(
            "/v1/requests/replay",
            &serde_json::json!({"request_id": r.request.request_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay["responses"], body["responses"]);

    // The same id with another body.
    let mut other = t
        .refresh(&seed, 14, vec![old[12].clone()], &["chunk-64k"])
        .await;
    other.request.request_id = r.request.request_id;
    assert_eq!(
        t.refusal("/v1/refresh", &other.request).await,
        (StatusCode::CONFLICT, Code::RequestIdReused)
    );

    // An input spent before (here: by the refresh above) under a new id: 409, nothing signed.
    let twice = t
        .refresh(
            &seed,
            14,
            vec![old[0].clone(), old[12].clone()],
            &["chunk-64k"],
        )
        .await;
    let (status, err) = t.post("/v1/refresh", &twice.request).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, Code::AlreadySpent)
    );
    assert_eq!(err["error"]["index"], 0);
    assert!(!spent(&t, &old[12]).await, "the fresh input stays unspent");

    // An input spent at a relay: the ledger's 409, with the first spend.
    let spend = scrip_spec::ledger::Action::spend_of(vec![old[12].clone()]);
    let op = scrip_spec::OperatorKey::read_file(&t.dir.path().join("op.key")).expect("key");
    let req = op.sign(scrip_spec::ledger::LedgerRequest::new(
        t.ledger.ledger_id,
        scrip_spec::now(),
        spend,
    ));
    t.ledger.ledger.submit(req).await.expect("spent at a relay");
    let late = t
        .refresh(&seed, 14, vec![old[12].clone()], &["chunk-64k"])
        .await;
    let (status, err) = t.post("/v1/refresh", &late.request).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, Code::AlreadySpent),
        "{err}"
    );
    assert_eq!(err["error"]["first_spent_by"], "op-a");
    assert!(err["error"]["first_spent_at"].is_u64());
    assert_eq!((t.refresh_entries().await, t.signatures()), (1, signatures));
    // A definitive refusal records nothing: the id is free for the wallet's next try.
    let (status, _) = t
        .post(
            "/v1/requests/replay",
            &serde_json::json!({"request_id": late.request.request_id}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        t.metrics()
            .await
            .contains("scrip_issuer_tokens_refreshed_total 12")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_refreshes_are_refused_with_nothing_spent_or_signed() {
    let t = spawn(default_limits()).await;
    let seed = WalletSeed::generate();
    let old = t.open_tokens(&seed, 0, &["chunk-64k", "chunk-64k"]).await;
    let signatures = t.signatures();
    let check = |status: StatusCode, code: Code| (status, code);

    // Forged: one bit of the authenticator flipped.
    let mut forged = old[0].clone();
    forged.authenticator[100] ^= 1;
    let r = t.refresh(&seed, 2, vec![forged], &["chunk-64k"]).await;
    let (status, err) = t.post("/v1/refresh", &r.request).await;
    assert_eq!(
        (status, code(&err)),
        check(StatusCode::UNPROCESSABLE_ENTITY, Code::InvalidToken)
    );
    assert_eq!(err["error"]["index"], 0);

    // Malformed: a token that does not decode, an empty list, unknown fields.
    let r = t
        .refresh(&seed, 2, vec![old[0].clone()], &["chunk-64k"])
        .await;
    let mut json = serde_json::to_value(&r.request).expect("json");
    json["tokens"][0] = "AAAA".into();
    assert_eq!(
        t.refusal("/v1/refresh", &json).await.0,
        StatusCode::BAD_REQUEST
    );
    let mut empty = r.request.clone();
    empty.tokens.clear();
    assert_eq!(
        t.refusal("/v1/refresh", &empty).await,
        check(StatusCode::BAD_REQUEST, Code::MalformedRequest)
    );

    // Oversized: 1001 inputs.
    let mut big = r.request.clone();
    big.tokens = vec![old[0].clone(); 1001];
    assert_eq!(
        t.refusal("/v1/refresh", &big).await,
        check(StatusCode::PAYLOAD_TOO_LARGE, Code::BodyTooLarge)
    );

    // The same token twice.
    let mut dup = r.request.clone();
    dup.tokens = vec![old[0].clone(), old[0].clone()];
    assert_eq!(
        t.refusal("/v1/refresh", &dup).await,
        check(StatusCode::UNPROCESSABLE_ENTITY, Code::DuplicateToken)
    );

    // A token of a key that is not this issuer's.
    let stranger = scrip_spec::TokenSecretKey::generate().expect("key");
    let foreign = scrip_testkit::mint_tokens(&stranger, "op-a", 1);
    let r2 = t.refresh(&seed, 2, foreign, &["chunk-64k"]).await;
    assert_eq!(
        t.refusal("/v1/refresh", &r2.request).await,
        check(StatusCode::UNPROCESSABLE_ENTITY, Code::UnknownInputKey)
    );
    // An output of a key that is not this issuer's.
    let mut out = r.request.clone();
    out.requests[0].token_key_id = stranger.public_key().id();
    assert_eq!(
        t.refusal("/v1/refresh", &out).await,
        check(StatusCode::UNPROCESSABLE_ENTITY, Code::UnknownKey)
    );

    // Over value: one chunk-64k (1 credit) for a queue (10).
    let r3 = t.refresh(&seed, 2, vec![old[0].clone()], &["queue"]).await;
    let (status, err) = t.post("/v1/refresh", &r3.request).await;
    assert_eq!(
        (status, code(&err)),
        check(StatusCode::UNPROCESSABLE_ENTITY, Code::ValueExceeded)
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .expect("message")
            .contains("worth 10")
    );

    assert!(!spent(&t, &old[0]).await && !spent(&t, &old[1]).await);
    assert_eq!((t.refresh_entries().await, t.signatures()), (0, signatures));
    // The token is still good for a proper refresh.
    let ok = t
        .refresh(&seed, 2, vec![old[0].clone()], &["chunk-64k"])
        .await;
    assert_eq!(t.post("/v1/refresh", &ok.request).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_whose_ledger_answer_was_lost_is_finished_by_its_retry() {
    let (t, proxy) = spawn_behind_ledger_proxy().await;
    let seed = WalletSeed::generate();
    let old = t.open_tokens(&seed, 0, &["chunk-64k"; 4]).await;
    let r = t.refresh(&seed, 4, old.clone(), &["chunk-1m"]).await;

    // The ledger commits, its answer never reaches the issuer: nothing signed yet.
    proxy.once(Fault::DropResponse);
    let signatures = t.signatures();
    let (status, err) = t.post("/v1/refresh", &r.request).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable)
    );
    assert_eq!(proxy.faults_applied(), 1);
    assert_eq!((t.refresh_entries().await, t.signatures()), (1, signatures));

    // The retry sends the same signed request, hears "replayed", and signs.
    let (status, body) = t.post("/v1/refresh", &r.request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokens(&r.opening, &body);
    assert_eq!(t.refresh_entries().await, 1);

    // The same once the stored request is stale: the nullifiers show this refresh's entry
    // spent the inputs, so the retry signs.
    let more = t.open_tokens(&seed, 5, &["chunk-64k"; 4]).await;
    let r = t.refresh(&seed, 9, more, &["chunk-1m"]).await;
    proxy.once(Fault::DropResponse);
    assert_eq!(
        t.post("/v1/refresh", &r.request).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    make_stale(&t, &r.request.request_id).await;
    let (status, body) = t.post("/v1/refresh", &r.request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokens(&r.opening, &body);
    assert_eq!(t.refresh_entries().await, 2);
}

/// Replaces the stored ledger request of refresh `id` with the same action signed
/// `MAX_CLOCK_SKEW` + 100 s ago, as if the issuer had stopped for that long after signing it.
async fn make_stale(t: &crate::helpers::TestIssuer, id: &scrip_spec::api::issuer::RequestId) {
    use scrip_spec::ledger::{LedgerRequest, MAX_CLOCK_SKEW};
    let record = t
        .issuer
        .store()
        .refresh(id)
        .await
        .expect("read")
        .expect("recorded");
    assert!(record.responses.is_none(), "still pending");
    let stored: scrip_spec::Signed<LedgerRequest> =
        serde_json::from_str(&record.ledger_request).expect("stored request");
    let op = scrip_spec::OperatorKey::read_file(&t.dir.path().join("op.key")).expect("key");
    let stale = op.sign(LedgerRequest::new(
        t.ledger.ledger_id,
        scrip_spec::now() - MAX_CLOCK_SKEW - 100,
        stored.payload.action,
    ));
    let text = serde_json::to_string(&stale).expect("json");
    t.issuer
        .store()
        .resign_refresh(id, &text)
        .await
        .expect("stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_pending_refresh_is_decided_by_its_inputs_nullifiers() {
    let mut t = spawn(default_limits()).await;
    let seed = WalletSeed::generate();
    let old = t.open_tokens(&seed, 0, &["chunk-64k"; 2]).await;

    // The ledger is down: the refresh is recorded, not sent, and answered 503.
    let never_sent = t
        .refresh(&seed, 2, vec![old[0].clone()], &["chunk-64k"])
        .await;
    let taken = t
        .refresh(&seed, 3, vec![old[1].clone()], &["chunk-64k"])
        .await;
    t.ledger.stop();
    for r in [&never_sent, &taken] {
        let (status, err) = t.post("/v1/refresh", &r.request).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable)
        );
    }
    t.ledger.restart().await;
    make_stale(&t, &never_sent.request.request_id).await;
    make_stale(&t, &taken.request.request_id).await;

    // Stale, and its input unspent: it never committed, so it is signed anew and sent.
    let (status, body) = t.post("/v1/refresh", &never_sent.request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokens(&never_sent.opening, &body);
    assert!(spent(&t, &old[0]).await);
    assert_eq!(t.refresh_entries().await, 1);

    // Stale, and its input spent meanwhile at a relay of the same operator: not this
    // refresh's spend, so nothing is signed.
    let op = scrip_spec::OperatorKey::read_file(&t.dir.path().join("op.key")).expect("key");
    let spend = op.sign(scrip_spec::ledger::LedgerRequest::new(
        t.ledger.ledger_id,
        scrip_spec::now(),
        scrip_spec::ledger::Action::spend_of(vec![old[1].clone()]),
    ));
    t.ledger
        .ledger
        .submit(spend)
        .await
        .expect("spent at a relay");
    let signatures = t.signatures();
    let (status, err) = t.post("/v1/refresh", &taken.request).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, Code::AlreadySpent),
        "{err}"
    );
    assert_eq!(err["error"]["first_spent_by"], "op-a");
    assert_eq!((t.refresh_entries().await, t.signatures()), (1, signatures));
}
