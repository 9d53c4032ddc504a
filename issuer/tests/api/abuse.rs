//! Issue 17: the issuer under abuse. Each test is an attack that worked before.

use crate::helpers::{Answer, Code, TestIssuer, behind_proxy, code, default_limits, spawn};
use reqwest::StatusCode;
use scrip_common::metrics::Scrape;
use scrip_issuer::config::RateLimitConfig;
use scrip_spec::{CardCode, WalletSeed};
use serde_json::{Value, json};

/// Private-key operations so far, from `/metrics`.
async fn blind_signatures(t: &TestIssuer) -> f64 {
    Scrape::new("issuer", t.metrics().await)
        .value("scrip_issuer_blind_signatures_total")
        .expect("the blind-signature counter")
}

/// 79 valid blinded requests and one `ff…ff` on an 80-credit card: the 422 comes before any
/// signature, and charges nothing. Before, all 79 were signed first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bad_blinded_message_costs_no_private_key_operation() {
    let t = spawn(default_limits()).await;
    let card = t.cards(80, 1).await.remove(0);
    let seed = WalletSeed::generate();
    let kinds = vec!["chunk-64k"; 80];
    let mut opening = t.opening(&seed, 0, &card, &kinds).await;
    let honest = opening.request.clone();
    opening.request.requests[79].token_request.blinded_msg = [0xff; 256];

    let (status, body) = t.post("/v1/cards/open", &opening.request).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, Code::InvalidRequest),
        "{body}"
    );
    assert_eq!(body["error"]["index"], 79);
    assert_eq!(blind_signatures(&t).await, 0.0, "no signature was made");
    // Zero and one are RSA's fixed points: refused the same way.
    for small in [0u8, 1] {
        let mut fixed = honest.clone();
        fixed.requests[3].token_request.blinded_msg = [0; 256];
        fixed.requests[3].token_request.blinded_msg[255] = small;
        assert_eq!(
            t.refusal("/v1/cards/open", &fixed).await,
            (StatusCode::UNPROCESSABLE_ENTITY, Code::InvalidRequest)
        );
    }
    assert_eq!(blind_signatures(&t).await, 0.0);
    let (_, balance) = t
        .post("/v1/cards/balance", &json!({"card_code": card}))
        .await;
    assert_eq!(balance["remaining_credits"], 80, "nothing charged");

    // The same requests without the bad one are signed, once each.
    let (status, body) = t.post("/v1/cards/open", &honest).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(blind_signatures(&t).await, 80.0);
    // A repeat is answered from the record: no private-key operation.
    assert_eq!(t.post("/v1/cards/open", &honest).await.0, StatusCode::OK);
    assert_eq!(blind_signatures(&t).await, 80.0);
}

/// Concurrent openings of one card, each asking for its whole value: the balance was read
/// before the signing and charged after it, so every one was signed and all but one refused
/// after the work (16 openings of a 40-credit card made 640 signatures, found in review). Now
/// the openings of one card run one at a time, and only what is paid is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_openings_of_one_card_sign_only_what_is_paid() {
    let t = spawn(default_limits()).await;
    let card = t.cards(40, 1).await.remove(0);
    let seed = WalletSeed::generate();
    let kinds = vec!["chunk-64k"; 40];
    let mut openings = Vec::new();
    for i in 0..16u64 {
        openings.push(t.opening(&seed, i * 40, &card, &kinds).await.request);
    }
    // All at once, once every request is ready.
    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(openings.len()));
    let mut tasks = Vec::new();
    for request in openings {
        let (issuer, gate) = (t.issuer.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            issuer.open_card(request).await
        }));
    }
    let mut opened = 0;
    for task in tasks {
        if task.await.expect("task").is_ok() {
            opened += 1;
        }
    }
    assert_eq!(opened, 1, "the card pays for one opening");
    assert_eq!(
        blind_signatures(&t).await,
        40.0,
        "only the opening that was paid for was signed"
    );
}

fn balance_of(code: &str) -> Value {
    json!({"card_code": code})
}

/// A well-formed code no card has.
fn unknown_code() -> Value {
    balance_of(&CardCode::generate().to_string())
}

/// `code` with one symbol changed: its check symbol fails, so no lookup is made.
fn typo(code: &str) -> Value {
    let mut chars: Vec<char> = code.chars().collect();
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    balance_of(&chars.into_iter().collect::<String>())
}

fn assert_limited(answer: &Answer, what: &str) {
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::TOO_MANY_REQUESTS, Code::RateLimited),
        "{what}: {}",
        answer.body
    );
    assert!(
        answer.retry_after.is_some_and(|s| (1..=3600).contains(&s)),
        "{what}: Retry-After"
    );
}

/// The attack: 600 unknown codes from 60 sources (10 each, every source at its own
/// limit, the ceiling reached). Before, a valid card's balance from another source then got
/// 429: one global counter locked out everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_codes_from_many_sources_lock_out_no_one_else() {
    let t = spawn(behind_proxy(RateLimitConfig {
        window_secs: 3600,
        ..RateLimitConfig::default()
    }))
    .await;
    let card = t.cards(30, 1).await.remove(0);
    let path = "/v1/cards/balance";
    for s in 0..60 {
        let source = format!("198.51.100.{s}");
        for _ in 0..10 {
            let answer = t.post_from(&source, path, &unknown_code()).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
        }
    }
    // Each attacking source is at its own limit: even its valid card waits.
    assert_limited(
        &t.post_from("198.51.100.7", path, &balance_of(&card)).await,
        "an attacking source",
    );

    // Another source with a valid card is answered, and may open it.
    let answer = t.post_from("203.0.113.1", path, &balance_of(&card)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["remaining_credits"], 30);
    let opening = t
        .opening(&WalletSeed::generate(), 0, &card, &["queue"])
        .await;
    let answer = t
        .post_from("203.0.113.1", "/v1/cards/open", &opening.request)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // A typo costs no lookup and does not count towards the ceiling's rule.
    let answer = t.post_from("203.0.113.2", path, &typo(&card)).await;
    assert_eq!(answer.code(), Code::MalformedCardCode);
    let answer = t.post_from("203.0.113.2", path, &balance_of(&card)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // Past the ceiling a source gets one unknown-code lookup, then waits for the window.
    let answer = t.post_from("203.0.113.3", path, &unknown_code()).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_limited(
        &t.post_from("203.0.113.3", path, &unknown_code()).await,
        "a second unknown code past the ceiling",
    );
    assert_limited(
        &t.post_from("203.0.113.3", path, &balance_of(&card)).await,
        "a source that caused an unknown-code lookup past the ceiling",
    );

    let m = Scrape::new("issuer", t.metrics().await);
    let series = |result: &str| {
        m.value(&format!(
            "scrip_issuer_balance_checks_total{{result=\"{result}\"}}"
        ))
    };
    assert_eq!(series("refused"), Some(602.0));
    assert_eq!(series("rate_limited"), Some(3.0));
    assert_eq!(series("answered"), Some(2.0));
}

/// `X-Forwarded-For` is read only from a trusted proxy: a client that sends its own is
/// counted under its own address, so it cannot spread its guesses over invented sources.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_for_header_from_an_untrusted_peer_is_ignored() {
    let t = spawn(RateLimitConfig {
        per_source: 5,
        ..default_limits()
    })
    .await;
    let card = t.cards(10, 1).await.remove(0);
    let path = "/v1/cards/balance";
    for s in 0..5 {
        let answer = t
            .post_from(&format!("198.51.100.{s}"), path, &unknown_code())
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
    }
    assert_limited(
        &t.post_from("203.0.113.9", path, &balance_of(&card)).await,
        "a forged source from the same peer",
    );
}

/// Refused requests on one card, from any source, count towards that card's limit: over it,
/// the card waits (its openings too), and other cards do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_on_a_card_count_towards_its_limit() {
    let t = spawn(behind_proxy(RateLimitConfig {
        per_card: 4,
        ..default_limits()
    }))
    .await;
    let cards = t.cards(20, 2).await;
    let (card, other) = (&cards[0], &cards[1]);
    let seed = WalletSeed::generate();
    let opened = t.opening(&seed, 0, card, &["queue"]).await;
    assert_eq!(
        t.post_from("198.51.100.1", "/v1/cards/open", &opened.request)
            .await
            .status,
        StatusCode::OK
    );
    // Four refusals, each from a source of its own.
    let too_dear = t.opening(&seed, 1, card, &["queue", "queue"]).await;
    let mut out_of_range = t.opening(&seed, 3, card, &["queue"]).await;
    out_of_range.request.requests[0].token_request.blinded_msg = [0xff; 256];
    let mut reused = t.opening(&seed, 4, card, &["chunk-64k"]).await;
    reused.request.request_id = opened.request.request_id;
    let mut mismatch = t.opening(&seed, 5, card, &["chunk-64k"]).await;
    mismatch.request.requests[0]
        .token_request
        .truncated_token_key_id ^= 1;
    for (s, (request, status)) in [
        (&too_dear, StatusCode::UNPROCESSABLE_ENTITY),
        (&out_of_range, StatusCode::UNPROCESSABLE_ENTITY),
        (&reused, StatusCode::CONFLICT),
        (&mismatch, StatusCode::UNPROCESSABLE_ENTITY),
    ]
    .into_iter()
    .enumerate()
    {
        let answer = t
            .post_from(
                &format!("198.51.100.{}", 10 + s),
                "/v1/cards/open",
                &request.request,
            )
            .await;
        assert_eq!(answer.status, status, "{}", answer.body);
    }
    let signed = blind_signatures(&t).await;

    // The card now waits, whoever asks and whatever for.
    let valid = t.opening(&seed, 6, card, &["chunk-64k"]).await;
    assert_limited(
        &t.post_from("203.0.113.1", "/v1/cards/open", &valid.request)
            .await,
        "a valid opening of the limited card",
    );
    assert_limited(
        &t.post_from("203.0.113.1", "/v1/cards/balance", &balance_of(card))
            .await,
        "the limited card's balance",
    );
    assert_eq!(blind_signatures(&t).await, signed, "nothing signed");
    // Another card, from the same source, goes on; the limited one was charged only once.
    let answer = t
        .post_from("203.0.113.1", "/v1/cards/balance", &balance_of(other))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["remaining_credits"], 20);
    let (status, balance) = t.post("/v1/cards/balance", &balance_of(card)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code(&balance), Code::RateLimited);
}

/// Refused openings of a source's own valid card count towards the source's limit, like
/// unknown codes: a card holder cannot make the issuer refuse requests for free forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_on_valid_cards_count_towards_the_source_limit() {
    let t = spawn(behind_proxy(RateLimitConfig {
        per_source: 3,
        ..default_limits()
    }))
    .await;
    let cards = t.cards(20, 2).await;
    let seed = WalletSeed::generate();
    let source = "198.51.100.1";
    for i in 0..3 {
        let mut bad = t.opening(&seed, i, &cards[0], &["queue"]).await;
        bad.request.requests[0].token_request.blinded_msg = [0xff; 256];
        let answer = t.post_from(source, "/v1/cards/open", &bad.request).await;
        assert_eq!(answer.code(), Code::InvalidRequest);
    }
    let good = t.opening(&seed, 10, &cards[1], &["queue"]).await;
    assert_limited(
        &t.post_from(source, "/v1/cards/open", &good.request).await,
        "the same source with another card",
    );
    assert_eq!(blind_signatures(&t).await, 0.0);
    let answer = t
        .post_from("198.51.100.2", "/v1/cards/open", &good.request)
        .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "another source: {}",
        answer.body
    );
    assert_eq!(blind_signatures(&t).await, 1.0);
}
