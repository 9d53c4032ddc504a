//! RFC 9578 issuance at the issuer: the directory, and one token request paid by a card, with
//! the same checks, idempotency and limits as `POST /v1/cards/open`.

use crate::helpers::{default_limits, spawn};
use reqwest::StatusCode;
use scrip_spec::api::issuer::standard::{
    CARD_CODE_HEADER, DIRECTORY_PATH, REQUEST_MEDIA_TYPE, REQUEST_PATH, RESPONSE_MEDIA_TYPE,
};
use scrip_spec::{TokenChallenge, TokenResponse, WalletSeed, finalize, verify_token};
use serde_json::Value;

/// A request that must be refused: the card, the media type, the body, and the answer.
type Refusal<'a> = (Option<&'a str>, &'a str, Vec<u8>, StatusCode, &'a str);

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn code(&self) -> String {
        serde_json::from_slice::<Value>(&self.body).map_or_else(
            |_| "not json".into(),
            |v| v["error"]["code"].as_str().unwrap_or("none").to_owned(),
        )
    }
}

async fn post(base: &str, card: Option<&str>, content_type: &str, body: Vec<u8>) -> Answer {
    let mut request = reqwest::Client::new()
        .post(format!("{base}{REQUEST_PATH}"))
        .header("content-type", content_type)
        .body(body);
    if let Some(card) = card {
        request = request.header(CARD_CODE_HEADER, card);
    }
    let answer = request.send().await.expect("answer");
    Answer {
        status: answer.status(),
        content_type: answer
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: answer.bytes().await.expect("body").to_vec(),
    }
}

/// The last bytes of the ids of the keys that sign.
fn truncated_ids(t: &crate::helpers::TestIssuer) -> Vec<u8> {
    let keys = t.issuer.public_keys().keys;
    keys.iter().map(|k| k.public_key.id().0[31]).collect()
}

#[tokio::test]
async fn the_directory_lists_the_keys_that_sign_in_the_standard_form() {
    let t = spawn(default_limits()).await;
    let directory: Value = reqwest::get(format!("{}{DIRECTORY_PATH}", t.base))
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(directory["issuer-request-uri"], REQUEST_PATH);
    let listed: Vec<String> = directory["token-keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            assert_eq!(k["token-type"], 2);
            k["token-key"].as_str().expect("key").to_owned()
        })
        .collect();
    let ours: Vec<String> = t
        .issuer
        .public_keys()
        .keys
        .iter()
        .map(|k| scrip_spec::encoding::b64_encode_padded(k.public_key.spki()))
        .collect();
    assert_eq!(
        listed, ours,
        "exactly the announced keys that sign, padded base64url"
    );

    // Rotations keep the truncated ids of the keys that sign unique.
    t.issuer.rotate_keys().await.expect("rotate");
    t.issuer.rotate_keys().await.expect("rotate");
    let mut last_bytes = truncated_ids(&t);
    let n = last_bytes.len();
    last_bytes.sort_unstable();
    last_bytes.dedup();
    assert_eq!(last_bytes.len(), n, "unique truncated ids among {n} keys");
}

#[tokio::test]
async fn a_standard_request_is_an_opening_of_one_token_charged_once() {
    let t = spawn(default_limits()).await;
    let card = t.cards(20, 1).await.remove(0);
    let seed = WalletSeed::generate();
    let opening = t.opening(&seed, 0, &card, &["queue"]).await;
    let body = opening.request.requests[0].token_request.to_bytes();
    let signed_before = t.signatures();

    let answer = post(&t.base, Some(&card), REQUEST_MEDIA_TYPE, body.clone()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.code());
    assert_eq!(answer.content_type, RESPONSE_MEDIA_TYPE);
    let response = TokenResponse::from_bytes(&answer.body).expect("256 bytes");
    let key = &opening.keys[0].public_key;
    let token = finalize(key, &opening.pending[0], &response).expect("a valid signature");
    let challenge = TokenChallenge::for_issuer("op-a").expect("challenge");
    verify_token(key, &challenge, &token).expect("a scrip token");
    assert_eq!(
        t.issuer
            .balance(&card)
            .await
            .expect("balance")
            .remaining_credits,
        10
    );

    // The same request again (a lost answer): the same response, charged and signed once.
    let again = post(&t.base, Some(&card), REQUEST_MEDIA_TYPE, body.clone()).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, answer.body);
    assert_eq!(
        t.issuer
            .balance(&card)
            .await
            .expect("balance")
            .remaining_credits,
        10
    );
    assert_eq!(t.signatures(), signed_before + 1);

    // Refusals: each clear, nothing charged or signed.
    let other = t.opening(&seed, 1, &card, &["queue"]).await;
    let fresh = other.request.requests[0].token_request.to_bytes();
    let mut unknown_key = fresh.clone();
    let taken = truncated_ids(&t);
    unknown_key[2] = (0..=255u8)
        .find(|b| !taken.contains(b))
        .expect("a free byte");
    let poor = t.cards(5, 1).await.remove(0);
    let cases: Vec<Refusal> = vec![
        (
            Some(&card),
            "application/json",
            fresh.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "malformed_request",
        ),
        (
            None,
            REQUEST_MEDIA_TYPE,
            fresh.clone(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            Some(&card),
            REQUEST_MEDIA_TYPE,
            fresh[..258].to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            Some(&card),
            REQUEST_MEDIA_TYPE,
            [fresh.clone(), vec![0]].concat(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            Some(&card),
            REQUEST_MEDIA_TYPE,
            unknown_key,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_key",
        ),
        (
            Some(&poor),
            REQUEST_MEDIA_TYPE,
            fresh.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "insufficient_credits",
        ),
        (
            Some("not-a-card"),
            REQUEST_MEDIA_TYPE,
            fresh.clone(),
            StatusCode::BAD_REQUEST,
            "malformed_card_code",
        ),
    ];
    for (card_code, media, body, status, code) in cases {
        let refused = post(&t.base, card_code, media, body).await;
        assert_eq!(
            (refused.status, refused.code().as_str()),
            (status, code),
            "{card_code:?} {media}"
        );
    }
    assert_eq!(
        t.issuer
            .balance(&card)
            .await
            .expect("balance")
            .remaining_credits,
        10
    );
    assert_eq!(
        t.signatures(),
        signed_before + 1,
        "no refusal signed anything"
    );
}
