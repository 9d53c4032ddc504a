use crate::helpers::{Code, code, default_limits, spawn};
use reqwest::StatusCode;
use scrip_issuer::config::RateLimitConfig;
use scrip_spec::WalletSeed;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_and_semantically_wrong_openings() {
    let t = spawn(default_limits()).await;
    let card = t.cards(100, 1).await.remove(0);
    let seed = WalletSeed::generate();
    let url = format!("{}/v1/cards/open", t.base);
    let good = t.opening(&seed, 0, &card, &["chunk-64k"]).await;
    let good_json = serde_json::to_value(&good.request).expect("json");

    // Each raw request on a fresh client: a connection the server closed after refusing a
    // body must not be reused.
    let raw = |body: Vec<u8>| {
        reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
    };
    for (req, status, expected) in [
        (
            raw(b"{".to_vec()),
            StatusCode::BAD_REQUEST,
            Code::MalformedRequest,
        ),
        (
            raw(vec![0xff; 10]),
            StatusCode::BAD_REQUEST,
            Code::MalformedRequest,
        ),
        (
            raw(vec![b' '; 2 * 1024 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::BodyTooLarge,
        ),
    ] {
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status(), status);
        let body: serde_json::Value = resp.json().await.expect("json error");
        assert_eq!(code(&body), expected);
    }
    let mut extra = good_json.clone();
    extra["colour"] = json!("red");
    assert_eq!(
        t.post("/v1/cards/open", &extra).await.0,
        StatusCode::BAD_REQUEST
    );
    let mut short = good_json.clone();
    short["requests"][0]["token_request"] = json!("AAIA");
    assert_eq!(
        t.post("/v1/cards/open", &short).await.0,
        StatusCode::BAD_REQUEST
    );
    let mut empty = good_json.clone();
    empty["requests"] = json!([]);
    assert_eq!(
        t.refusal("/v1/cards/open", &empty).await,
        (StatusCode::BAD_REQUEST, Code::MalformedRequest)
    );

    let mut typo = good_json.clone();
    let mut chars: Vec<char> = card.chars().collect();
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    typo["card_code"] = json!(chars.into_iter().collect::<String>());
    assert_eq!(
        t.refusal("/v1/cards/open", &typo).await,
        (StatusCode::BAD_REQUEST, Code::MalformedCardCode)
    );

    let mut unknown = good_json.clone();
    unknown["card_code"] = json!(scrip_spec::CardCode::generate().to_string());
    let (status, body) = t.post("/v1/cards/open", &unknown).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, Code::InvalidCard)
    );
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("not valid at this issuer") && message.contains("the issuer that sold it"),
        "{message}"
    );

    let mut wrong_key = good.request.clone();
    wrong_key.requests[0].token_key_id = scrip_spec::TokenKeyId([7; 32]);
    let (status, body) = t.post("/v1/cards/open", &wrong_key).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, Code::UnknownKey)
    );
    assert_eq!(body["error"]["index"], 0);

    let mut mismatch = good.request.clone();
    mismatch.requests[0].token_request.truncated_token_key_id ^= 1;
    assert_eq!(
        t.refusal("/v1/cards/open", &mismatch).await,
        (StatusCode::UNPROCESSABLE_ENTITY, Code::KeyMismatch)
    );

    let mut out_of_range = good.request.clone();
    out_of_range.requests[0].token_request.blinded_msg = [0xff; 256];
    assert_eq!(
        t.refusal("/v1/cards/open", &out_of_range).await,
        (StatusCode::UNPROCESSABLE_ENTITY, Code::InvalidRequest)
    );

    let mut too_many = good.request.clone();
    too_many.requests = vec![good.request.requests[0].clone(); 1001];
    assert_eq!(
        t.refusal("/v1/cards/open", &too_many).await,
        (StatusCode::PAYLOAD_TOO_LARGE, Code::BodyTooLarge)
    );

    // Balance and replay with bad input.
    assert_eq!(
        t.refusal("/v1/cards/balance", &json!({"card_code": "nonsense"}))
            .await,
        (StatusCode::BAD_REQUEST, Code::MalformedCardCode)
    );
    let (status, body) = t.post("/v1/cards/balance", &json!({"code": card})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, Code::MalformedRequest)
    );
    // A client of its own: the server closes a connection whose body it refused, and that
    // connection must not go back to the shared pool.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/cards/balance", t.base))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        t.refusal("/v1/requests/replay", &json!({"request_id": "AAAA"}))
            .await,
        (StatusCode::BAD_REQUEST, Code::MalformedRequest)
    );

    // None of that charged anything.
    let (_, balance) = t
        .post("/v1/cards/balance", &json!({"card_code": card}))
        .await;
    assert_eq!(balance["remaining_credits"], 100);
    assert_eq!(
        t.post("/v1/cards/open", &good.request).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_code_attempts_are_rate_limited() {
    let t = spawn(RateLimitConfig {
        per_source: 3,
        ..default_limits()
    })
    .await;
    let card = t.cards(10, 1).await.remove(0);
    for _ in 0..3 {
        let guess = json!({"card_code": scrip_spec::CardCode::generate().to_string()});
        assert_eq!(
            t.post("/v1/cards/balance", &guess).await.0,
            StatusCode::FORBIDDEN
        );
    }
    let resp = t
        .http
        .client
        .post(format!("{}/v1/cards/balance", t.base))
        .json(&json!({"card_code": card}))
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even a valid code waits"
    );
    assert!(resp.headers().get("retry-after").is_some());
    let metrics = t.metrics().await;
    for line in [
        r#"scrip_issuer_balance_checks_total{result="refused"} 3"#,
        r#"scrip_issuer_balance_checks_total{result="rate_limited"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in {metrics}"
        );
    }
    assert!(!metrics.contains(&card), "no code in the metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_endpoint_lists_announced_keys_the_ledger_also_lists() {
    let t = spawn(default_limits()).await;
    let (_, resp) = t.http.get("/v1/keys").await;
    let keys: scrip_spec::api::issuer::IssuerKeys = serde_json::from_value(resp).expect("shape");
    assert_eq!(keys.issuer, "op-a");
    assert_eq!(keys.keys.len(), 5, "one per catalog kind");
    let ledger = scrip_common::clients::LedgerClient::new(&t.ledger.url);
    let directory = ledger.keys(Some("op-a"), None).await.expect("directory");
    for k in &keys.keys {
        assert!(
            directory.iter().any(|d| &d.info == k),
            "the ledger lists {}",
            k.kind
        );
    }
    assert_eq!(t.http.get("/healthz").await.0, StatusCode::OK);
}
