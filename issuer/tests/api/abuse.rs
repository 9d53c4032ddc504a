//! Issue 17: the issuer under abuse. Each test is an attack that worked before.

use crate::helpers::{Code, code, default_limits, spawn};
use reqwest::StatusCode;
use scrip_common::metrics::Scrape;
use scrip_spec::WalletSeed;
use serde_json::json;

/// Private-key operations so far, from `/metrics`.
async fn blind_signatures(t: &crate::helpers::TestIssuer) -> f64 {
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
