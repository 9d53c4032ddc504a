//! Standard Privacy Pass at an origin (RFC 9577), against a client that shares no code with
//! scrip: the `privacypass` crate blinds, finalizes and builds the `Authorization` header
//! (with blind-rsa-signatures, where scrip's default build signs and verifies with OpenSSL,
//! and its own TLS codec), and reads the challenge with its own decoder. The origins are the
//! example relays' paid downloads behind the RFC 9577 gate, one per operator; the issuer is
//! reached only through the standard issuance protocol (RFC 9578: its directory and
//! `application/private-token-request`).

use crate::support::{cards_on_sale, consortium_with_keys};
use privacypass::auth::authenticate::TokenChallenge as PpChallenge;
use privacypass::auth::authorize::build_authorization_header;
use privacypass::public_tokens::{
    PublicKey as PpPublicKey, PublicToken, TokenRequest, TokenResponse,
};
use reqwest::StatusCode;
use scrip_spec::api::issuer::standard::{
    CARD_CODE_HEADER, DIRECTORY_PATH, REQUEST_MEDIA_TYPE, REQUEST_PATH, RESPONSE_MEDIA_TYPE,
};
use scrip_spec::api::private_token::parse_www_authenticate;
use serde_json::Value;
use tls_codec::{Deserialize as _, Serialize as _};

/// Serves `app` on a free loopback port; its base URL.
pub(crate) async fn serve_origin(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    origin
}

/// The `WWW-Authenticate` value of a 401.
pub(crate) fn challenged(answer: &reqwest::Response) -> String {
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let header = answer
        .headers()
        .get("www-authenticate")
        .expect("a challenge");
    header.to_str().expect("ascii").to_owned()
}

/// The quoted values of `param` in `header`, one per challenge, read by hand: the
/// independent client's own header parser takes only unquoted values.
pub(crate) fn param_values(header: &str, param: &str) -> Vec<String> {
    let marker = format!("{param}=\"");
    header
        .match_indices(&marker)
        .map(|(at, _)| {
            let start = at + marker.len();
            let end = header[start..].find('"').expect("closing quote");
            header[start..start + end].to_owned()
        })
        .collect()
}

/// One token request in the standard form (RFC 9578 section 5), paid by `card`: the status,
/// the content type and the body.
async fn standard_request(
    http: &reqwest::Client,
    issuer_url: &str,
    card: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, String, Vec<u8>) {
    let mut request = http
        .post(format!("{issuer_url}{REQUEST_PATH}"))
        .header("content-type", content_type)
        .body(body);
    if let Some(card) = card {
        request = request.header(CARD_CODE_HEADER, card);
    }
    let answer = request.send().await.expect("answer");
    let status = answer.status();
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        answer.bytes().await.expect("body").to_vec(),
    )
}

/// `n` tokens for `challenge` from op-a's issuer through the standard issuance protocol: the
/// independent client finds the key in the issuer directory, blinds, sends each request with
/// the card, and finalizes.
pub(crate) async fn tokens_from_the_independent_client(
    issuer_url: &str,
    card: &str,
    challenge: &PpChallenge,
    token_key_spki: &[u8],
    n: usize,
) -> Vec<PublicToken> {
    let http = reqwest::Client::new();
    let directory: Value = http
        .get(format!("{issuer_url}{DIRECTORY_PATH}"))
        .send()
        .await
        .expect("directory")
        .json()
        .await
        .expect("json");
    assert_eq!(directory["issuer-request-uri"], REQUEST_PATH);
    let listed = directory["token-keys"]
        .as_array()
        .expect("keys")
        .iter()
        .any(|k| {
            k["token-type"] == 2
                && base64_decode(k["token-key"].as_str().expect("key")) == token_key_spki
        });
    assert!(listed, "the challenged key is in the issuer's directory");
    let public_key = PpPublicKey::from_spki(token_key_spki).expect("an RFC 9578 key");
    let mut rng = rand::rng();
    let mut tokens = Vec::new();
    for _ in 0..n {
        let (request, state) =
            TokenRequest::new(&mut rng, public_key.clone(), challenge).expect("blind");
        let body = request.tls_serialize_detached().expect("encode");
        let (status, content_type, answer) =
            standard_request(&http, issuer_url, Some(card), REQUEST_MEDIA_TYPE, body).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(content_type, RESPONSE_MEDIA_TYPE);
        let response = TokenResponse::tls_deserialize(&mut answer.as_slice()).expect("256 bytes");
        tokens.push(response.issue_token(&state).expect("finalized"));
    }
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standard_client_pays_an_origin_once_and_is_refused_everywhere_after() {
    let (_dir, c) = consortium_with_keys(&["op-a", "op-b"]).await;
    let (a, b) = (&c.operators[0], &c.operators[1]);
    for op in [a, b] {
        let downloads = c.dir.join(format!("{}-relay", op.name)).join("downloads");
        std::fs::write(downloads.join("song.ogg"), format!("{}'s song", op.name)).expect("file");
    }
    let http = reqwest::Client::new();
    let url = |op: &scrip::consortium::Operator| format!("{}/downloads/song.ogg", op.relay_url);
    let spent = async || scrip_testkit::spent_total(&c.ledger_url).await;

    // No token: 401 with a challenge per key of the kind.
    let asked = http.get(url(a)).send().await.expect("answer");
    let header = challenged(&asked);
    let body: Value = asked.json().await.expect("json");
    assert_eq!(body["error"]["code"], "token_required");
    let ours = parse_www_authenticate(&header).expect("our parser reads it");
    assert!(!ours.is_empty());
    // Tokens of every member's keys are good here: a challenge per issuer. The independent
    // client's decoder reads the same challenges; it takes op-a's, where the card is sold.
    let challenges = param_values(&header, "challenge");
    let keys = param_values(&header, "token-key");
    assert_eq!((challenges.len(), keys.len()), (ours.len(), ours.len()));
    let issuers: Vec<String> = challenges
        .iter()
        .map(|c| PpChallenge::from_base64(c).expect("decodes").issuer_name())
        .collect();
    assert!(issuers.contains(&"op-a".to_owned()) && issuers.contains(&"op-b".to_owned()));
    let at = issuers
        .iter()
        .position(|i| i == "op-a")
        .expect("op-a's challenge");
    let challenge = PpChallenge::from_base64(&challenges[at]).expect("decodes");
    assert_eq!(
        challenge.digest().expect("digest"),
        ours[at].challenge.digest()
    );
    let token_key = base64_decode(&keys[at]);
    assert_eq!(token_key, ours[at].token_key.spki());

    let card = cards_on_sale(a, 100, 1).await.remove(0);
    let tokens =
        tokens_from_the_independent_client(&a.issuer_url, &card, &challenge, &token_key, 3).await;
    let (name, pay) = build_authorization_header(&tokens[0]).expect("header");

    // Paid: the download, once.
    let before = spent().await;
    let paid = http
        .get(url(a))
        .header(name.clone(), pay.clone())
        .send()
        .await
        .expect("answer");
    assert_eq!(paid.status(), StatusCode::OK);
    assert_eq!(paid.text().await.expect("body"), "op-a's song");
    assert_eq!(spent().await, before + 1, "the ledger has the spend");

    // The same token again, here and at the other operator's origin: refused with a fresh
    // challenge, nothing more spent.
    for op in [a, b] {
        let again = http
            .get(url(op))
            .header(name.clone(), pay.clone())
            .send()
            .await
            .expect("answer");
        assert_eq!(
            again.status(),
            StatusCode::UNAUTHORIZED,
            "a replay at {}",
            op.name
        );
        assert!(
            again.headers().get("www-authenticate").is_some(),
            "a fresh challenge"
        );
        let body: Value = again.json().await.expect("json");
        assert_eq!(body["error"]["code"], "already_spent", "{body}");
    }
    assert_eq!(spent().await, before + 1);

    // The second token pays at the other operator's origin (tokens are good at every member).
    let (name2, pay2) = build_authorization_header(&tokens[1]).expect("header");
    let elsewhere = http
        .get(url(b))
        .header(name2, pay2)
        .send()
        .await
        .expect("answer");
    assert_eq!(elsewhere.status(), StatusCode::OK);
    assert_eq!(elsewhere.text().await.expect("body"), "op-b's song");
    assert_eq!(spent().await, before + 2);

    // Malformed, oversized, forged: a clear 4xx each, nothing spent.
    let mut forged = pay.to_str().expect("ascii").to_owned();
    let flip = forged.len() - 5;
    let flipped = if &forged[flip..flip + 1] == "A" {
        "B"
    } else {
        "A"
    };
    forged.replace_range(flip..flip + 1, flipped);
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (
            "PrivateToken token=\"!!!\"".into(),
            StatusCode::BAD_REQUEST,
            "malformed_token",
        ),
        (
            "PrivateToken token=\"AAAA\"".into(),
            StatusCode::BAD_REQUEST,
            "malformed_token",
        ),
        (
            "PrivateToken token=".into(),
            StatusCode::BAD_REQUEST,
            "malformed_token",
        ),
        (
            format!("PrivateToken token=\"{}\"", "A".repeat(20_000)),
            StatusCode::BAD_REQUEST,
            "malformed_token",
        ),
        (
            "Bearer sg1.queue.AAAAAAAAAAAAAAAAAAAAAA".into(),
            StatusCode::UNAUTHORIZED,
            "token_required",
        ),
        (forged, StatusCode::UNAUTHORIZED, "invalid_signature"),
    ];
    for (value, status, code) in cases {
        let refused = http
            .get(url(a))
            .header("authorization", value.clone())
            .send()
            .await
            .expect("answer");
        assert_eq!(
            refused.status(),
            status,
            "{}",
            &value[..value.len().min(60)]
        );
        let body: Value = refused.json().await.expect("json");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    assert_eq!(spent().await, before + 2, "no refusal spent anything");

    // A download that is not there, and a path that is not a download: 404, no charge; the
    // token then pays for what is there.
    let (name3, pay3) = build_authorization_header(&tokens[2]).expect("header");
    for missing in [
        "/downloads/nothing.ogg",
        "/nowhere",
        "/downloads/../song.ogg",
    ] {
        let answer = http
            .get(format!("{}{missing}", a.relay_url))
            .header(name3.clone(), pay3.clone())
            .send()
            .await
            .expect("answer");
        assert!(
            [StatusCode::NOT_FOUND, StatusCode::BAD_REQUEST].contains(&answer.status()),
            "{missing}: {}",
            answer.status()
        );
    }
    assert_eq!(
        spent().await,
        before + 2,
        "nothing charged for what was not served"
    );
    let served = http
        .get(url(a))
        .header(name3, pay3)
        .send()
        .await
        .expect("answer");
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(spent().await, before + 3);
}

pub(crate) fn base64_decode(value: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE
        .decode(value)
        .expect("padded base64url")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wallet_pays_an_origin_from_the_command_line() {
    use crate::{ok, wallet};
    use scrip_testkit::{Fault, FaultProxy, path};
    let (dir, c) = consortium_with_keys(&["op-a", "op-b"]).await;
    let (a, b) = (&c.operators[0], &c.operators[1]);
    let downloads = c.dir.join("op-b-relay").join("downloads");
    std::fs::write(downloads.join("map.bin"), [7u8; 5000]).expect("file");
    let url = format!("{}/downloads/map.bin", b.relay_url);
    let wallet_file = dir.path().join("w.db");
    let w = path(&wallet_file);
    ok(wallet(w, &["init", "--ledger", &c.ledger_url]).await);

    // Tokens of another kind only: it says what the origin asks for and what it holds.
    let card = cards_on_sale(a, 100, 1).await.remove(0);
    ok(wallet(
        w,
        &[
            "open",
            &card,
            "--issuer",
            &a.issuer_url,
            "--tokens",
            "queue=1,chunk-1m=5",
        ],
    )
    .await);
    // Held to a kind the origin does not ask for: nothing is paid.
    let held_back = wallet(w, &["fetch", &url, "--kind", "queue"]).await;
    assert!(!held_back.status.success());
    let said = String::from_utf8_lossy(&held_back.stderr);
    assert!(said.contains("holds none it takes"), "{said}");
    let out = dir.path().join("map.out");
    let fetched = wallet(
        w,
        &["fetch", &url, "--kind", "chunk-1m", "--out", path(&out)],
    )
    .await;
    let said = ok(fetched);
    assert!(said.is_empty(), "the body went to the file: {said}");
    assert_eq!(std::fs::read(&out).expect("written"), vec![7u8; 5000]);
    let balance = ok(wallet(w, &["balance"]).await);
    assert!(
        balance.contains("4 x chunk-1m"),
        "one token paid: {balance}"
    );

    // To standard output, as JSON for a program.
    let json = ok(wallet(w, &["--json", "fetch", &url]).await);
    let answer: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(answer["paid"], "chunk-1m");
    assert_eq!(answer["bytes"], 5000);

    // The paid answer lost on the way: the token stays pending there, and the next fetch
    // presents that same token, not another; the origin spent it, so it says so.
    let proxy = FaultProxy::start(&b.relay_url).await;
    let via = format!("{}/downloads/map.bin", proxy.url());
    ok(wallet(w, &["fetch", &via]).await);
    proxy.set_for("PrivateToken token=", Fault::DropResponse);
    let lost = wallet(w, &["fetch", &via]).await;
    assert!(!lost.status.success());
    let said = String::from_utf8_lossy(&lost.stderr);
    assert!(said.contains("no answer"), "{said}");
    proxy.set(Fault::Forward);
    let again = wallet(w, &["fetch", &via]).await;
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("already spent"), "{said}");
    let balance = ok(wallet(w, &["balance"]).await);
    assert!(
        balance.contains("1 x chunk-1m"),
        "no second token was used for the lost answer: {balance}"
    );
    ok(wallet(w, &["fetch", &url]).await);

    // With no token the origin takes: what it asks for, and what the wallet holds.
    let none = wallet(w, &["fetch", &url]).await;
    assert!(!none.status.success());
    let said = String::from_utf8_lossy(&none.stderr);
    assert!(said.contains("asks for a token of op-a or op-b"), "{said}");
    assert!(said.contains("it holds queue"), "{said}");

    // A URL that asks for nothing is fetched as it is.
    let health = ok(wallet(w, &["fetch", &format!("{}/healthz", b.relay_url)]).await);
    assert!(health.contains("\"status\""), "{health}");
}

/// An origin whose route refuses a request after its gate has spent the token (a 403, a 404
/// of its own): the wallet cannot tell that answer from a refusal made before, so it keeps the
/// token pending at that origin instead of counting it unspent again, pays the next origin
/// with another token, and learns the first one's fate when it presents it there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wallet_does_not_take_back_a_token_an_origin_may_have_spent() {
    use axum::http::StatusCode as S;
    use scrip_client::{TokenState, Wallet, WalletError};
    use scrip_redeemer::private_token::{TokenGate, require_token};
    let (dir, c) = consortium_with_keys(&["op-a"]).await;
    let a = &c.operators[0];
    let kind = scrip_spec::CapacityKind::new("chunk-1m").expect("kind");
    let gate = TokenGate::new(&a.redeemer_url, kind.clone());
    let app = axum::Router::new()
        .route(
            "/refused",
            axum::routing::get(|| async { (S::FORBIDDEN, "not for you") }),
        )
        .route("/gone", axum::routing::get(|| async { S::NOT_FOUND }))
        .route("/paid", axum::routing::get(|| async { "the goods" }))
        .layer(axum::middleware::from_fn_with_state(gate, require_token));
    let origin = serve_origin(app).await;

    let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, None)
        .await
        .expect("wallet");
    let card = cards_on_sale(a, 100, 1).await.remove(0);
    wallet
        .open_card(&a.issuer_url, &card, &[(kind.clone(), 3)], &|_, _| {})
        .await
        .expect("opened");
    let unspent = async || {
        wallet
            .balance()
            .await
            .expect("balance")
            .unspent
            .values()
            .sum::<u64>()
    };
    for path in ["/refused", "/gone"] {
        let refused = wallet.fetch(&format!("{origin}{path}"), None).await;
        assert!(
            matches!(refused, Err(WalletError::RedeemerUnsure { .. })),
            "{path}: {refused:?}"
        );
    }
    assert_eq!(scrip_testkit::spent_total(&c.ledger_url).await, 2);
    assert_eq!(
        unspent().await,
        1,
        "the two tokens the origin spent are not unspent"
    );
    let pending = wallet.tokens(TokenState::Pending).await.expect("tokens");
    assert_eq!(pending.len(), 2);

    // The next origin is paid with the token left, not with one already spent.
    let paid = wallet
        .fetch(&format!("{origin}/paid"), None)
        .await
        .expect("paid");
    assert_eq!((paid.status, paid.presented_again), (200, false));
    assert_eq!(paid.body, b"the goods");
    // Presented at its origin again, the token is found spent there.
    let again = wallet.fetch(&format!("{origin}/refused"), None).await;
    assert!(
        matches!(again, Err(WalletError::AlreadySpent { .. })),
        "{again:?}"
    );
    assert_eq!(
        wallet
            .tokens(TokenState::Spent)
            .await
            .expect("tokens")
            .len(),
        2
    );
}

/// A paid answer longer than the wallet keeps is an error that says so, with the token spent:
/// never the first 64 MiB handed over as if they were the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paid_answer_longer_than_the_wallet_keeps_is_not_cut_silently() {
    use scrip_client::wallet::MAX_FETCH_BODY;
    use scrip_client::{TokenState, Wallet};
    use scrip_redeemer::private_token::{TokenGate, require_token};
    let (dir, c) = consortium_with_keys(&["op-a"]).await;
    let a = &c.operators[0];
    let kind = scrip_spec::CapacityKind::new("chunk-1m").expect("kind");
    let gate = TokenGate::new(&a.redeemer_url, kind.clone());
    let app = axum::Router::new()
        .route(
            "/big",
            axum::routing::get(|| async { vec![7u8; MAX_FETCH_BODY + 1] }),
        )
        .layer(axum::middleware::from_fn_with_state(gate, require_token));
    let origin = serve_origin(app).await;
    let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, None)
        .await
        .expect("wallet");
    let card = cards_on_sale(a, 100, 1).await.remove(0);
    wallet
        .open_card(&a.issuer_url, &card, &[(kind, 1)], &|_, _| {})
        .await
        .expect("opened");
    let fetched = wallet.fetch(&format!("{origin}/big"), None).await;
    let Err(e) = fetched else {
        panic!(
            "{} bytes handed over as the whole answer",
            fetched.map(|f| f.body.len()).unwrap_or_default()
        );
    };
    assert!(e.to_string().contains("longer than"), "{e}");
    assert_eq!(
        wallet
            .tokens(TokenState::Spent)
            .await
            .expect("tokens")
            .len(),
        1,
        "the origin answered 200: the token is spent"
    );
}

/// The paid answer lost at an origin whose 401 carries no scrip error object (nginx's
/// documented block answers a bare 401 with the challenges): the token presented there again
/// is refused without saying why. The ledger says it is spent, so the wallet records it so and
/// pays the next fetch with another token, instead of presenting the spent one at every fetch
/// of that origin, for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_answer_at_an_origin_that_says_no_more_than_401_does_not_wedge_the_wallet() {
    use axum::http::{HeaderValue, StatusCode as S, header};
    use axum::response::IntoResponse as _;
    use scrip_client::{TokenState, Wallet, WalletError};
    use scrip_redeemer::private_token::{TokenGate, require_token};
    use scrip_testkit::{Fault, FaultProxy};
    let (dir, c) = consortium_with_keys(&["op-a"]).await;
    let a = &c.operators[0];
    let kind = scrip_spec::CapacityKind::new("chunk-1m").expect("kind");
    let gate = TokenGate::new(&a.redeemer_url, kind.clone());
    // As nginx's `error_page 401 = @pay` does: the challenges kept, the body its own.
    let bare_401 = |mut answer: axum::response::Response| async move {
        if answer.status() == S::UNAUTHORIZED {
            let challenges = answer.headers().get(header::WWW_AUTHENTICATE).cloned();
            answer = (S::UNAUTHORIZED, "<html>401 Authorization Required</html>").into_response();
            if let Some(v) = challenges {
                answer.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            let html = HeaderValue::from_static("text/html");
            answer.headers_mut().insert(header::CONTENT_TYPE, html);
        }
        answer
    };
    let app = axum::Router::new()
        .route("/file", axum::routing::get(|| async { "the file" }))
        .layer(axum::middleware::from_fn_with_state(gate, require_token))
        .layer(axum::middleware::map_response(bare_401));
    let origin = serve_origin(app).await;
    let proxy = FaultProxy::start(&origin).await;
    let url = format!("{}/file", proxy.url());

    let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, None)
        .await
        .expect("wallet");
    let card = cards_on_sale(a, 100, 1).await.remove(0);
    wallet
        .open_card(&a.issuer_url, &card, &[(kind, 4)], &|_, _| {})
        .await
        .expect("opened");
    wallet.fetch(&url, None).await.expect("paid");
    proxy.set_for("PrivateToken token=", Fault::DropResponse);
    let lost = wallet.fetch(&url, None).await;
    assert!(
        matches!(lost, Err(WalletError::NoAnswer { .. })),
        "{lost:?}"
    );
    proxy.set(Fault::Forward);
    let again = wallet.fetch(&url, None).await;
    assert!(
        matches!(again, Err(WalletError::AlreadySpent { .. })),
        "the token presented again is found spent: {again:?}"
    );
    let next = wallet.fetch(&url, None).await.expect("the next fetch pays");
    assert_eq!((next.status, next.presented_again), (200, false));
    assert_eq!(next.body, b"the file");

    // A token spent behind the wallet's back (a copy of the wallet spent it, and used its
    // grant): refused with a bare 401 too, and found spent, not put back among the unspent to be tried again.
    let left = wallet.tokens(TokenState::Unspent).await.expect("tokens");
    let [copy] = left.as_slice() else {
        panic!("one token left: {left:?}")
    };
    let spent_elsewhere = reqwest::Client::new()
        .post(format!("{}/v1/redeem", a.redeemer_url))
        .json(&serde_json::json!({
            "token": scrip_spec::encoding::b64_encode(copy.token.to_bytes()),
            "kind": "chunk-1m",
        }))
        .send()
        .await
        .expect("answer");
    assert_eq!(spent_elsewhere.status(), StatusCode::OK);
    let grant: Value = spent_elsewhere.json().await.expect("json");
    let used = reqwest::Client::new()
        .post(format!("{}/v1/grants/consume", a.redeemer_url))
        .json(&serde_json::json!({"grant": grant["grant"], "kind": "chunk-1m"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(used.status(), StatusCode::OK);
    let refused = wallet.fetch(&url, None).await;
    assert!(
        matches!(refused, Err(WalletError::AlreadySpent { .. })),
        "{refused:?}"
    );
    assert_eq!(
        wallet
            .tokens(TokenState::Spent)
            .await
            .expect("tokens")
            .len(),
        4
    );
    assert!(
        wallet
            .tokens(TokenState::Pending)
            .await
            .expect("tokens")
            .is_empty()
    );
}

/// A URL that redirects to the origin that asks for a token (a download link on one host, the
/// files on another): the token goes to the origin that asked, and only there. It went to the
/// URL first asked, whose server saw it (and could spend it) though it had asked for nothing,
/// and whose redirect then dropped it, so the origin was never paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_goes_only_to_the_origin_that_asked_for_it() {
    use scrip_client::Wallet;
    use scrip_redeemer::private_token::{TokenGate, require_token};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (dir, c) = consortium_with_keys(&["op-a"]).await;
    let a = &c.operators[0];
    let kind = scrip_spec::CapacityKind::new("chunk-1m").expect("kind");
    let gate = TokenGate::new(&a.redeemer_url, kind.clone());
    let files = axum::Router::new()
        .route("/file", axum::routing::get(|| async { "the file" }))
        .layer(axum::middleware::from_fn_with_state(gate, require_token));
    let serve = serve_origin;
    // The files on 127.0.0.1, the link on localhost: another host to an HTTP client.
    let files_url = serve(files).await;
    let saw_a_token = Arc::new(AtomicBool::new(false));
    let to = format!("{files_url}/file");
    let saw = saw_a_token.clone();
    let link = axum::Router::new().route(
        "/download",
        axum::routing::get(move |headers: axum::http::HeaderMap| async move {
            if headers.contains_key("authorization") {
                saw.store(true, Ordering::SeqCst);
            }
            axum::response::Redirect::temporary(&to)
        }),
    );
    let link_url = serve(link).await.replace("127.0.0.1", "localhost");

    let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, None)
        .await
        .expect("wallet");
    let card = cards_on_sale(a, 100, 1).await.remove(0);
    wallet
        .open_card(&a.issuer_url, &card, &[(kind, 2)], &|_, _| {})
        .await
        .expect("opened");
    let fetched = wallet.fetch(&format!("{link_url}/download"), None).await;
    assert!(
        !saw_a_token.load(Ordering::SeqCst),
        "the link's server was sent the token"
    );
    let fetched = fetched.expect("paid");
    assert_eq!(
        (fetched.status, fetched.body.as_slice()),
        (200, &b"the file"[..])
    );
}

/// An origin that takes tokens of some keys of a kind and not others (one that trusts only
/// the newest key, or a header of many issuers cut to the newest): the wallet pays with a
/// token it takes, the one closest to expiry among those, though it holds tokens of the kind
/// closer to expiry that the origin does not take.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wallet_pays_with_a_token_the_origin_takes_when_it_holds_others_of_the_kind() {
    use axum::http::{HeaderValue, StatusCode as S, header};
    use scrip_client::{TokenState, Wallet};
    use scrip_redeemer::private_token::{TokenGate, require_token};
    use scrip_spec::api::private_token::www_authenticate;
    let (dir, c) = consortium_with_keys(&["op-a"]).await;
    let a = &c.operators[0];
    let kind = scrip_spec::CapacityKind::new("chunk-1m").expect("kind");
    let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, None)
        .await
        .expect("wallet");
    let card = cards_on_sale(a, 100, 1).await.remove(0);
    wallet
        .open_card(&a.issuer_url, &card, &[(kind.clone(), 2)], &|_, _| {})
        .await
        .expect("opened");
    // A newer key, valid a second later: its tokens expire after the first key's.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    a.issuer.rotate_keys().await.expect("rotate");
    wallet
        .open_card(&a.issuer_url, &card, &[(kind.clone(), 2)], &|_, _| {})
        .await
        .expect("opened");
    let newest = a
        .issuer
        .public_keys()
        .keys
        .into_iter()
        .filter(|k| k.kind == kind)
        .max_by_key(|k| k.valid_from)
        .expect("the new key");
    let held = wallet.tokens(TokenState::Unspent).await.expect("tokens");
    let of_newest =
        |t: &scrip_client::store::StoredToken| t.token.token_key_id == newest.public_key.id();
    assert_eq!(held.iter().filter(|t| of_newest(t)).count(), 2);

    // The origin's challenges: the newest key's only.
    let challenge = scrip_spec::api::private_token::PrivateTokenChallenge {
        challenge: scrip_spec::TokenChallenge::for_issuer("op-a").expect("challenge"),
        token_key: newest.public_key.clone(),
        max_age: None,
    };
    let only_newest = HeaderValue::from_str(&www_authenticate(&[challenge])).expect("header");
    let newest_only = move |mut answer: axum::response::Response| {
        let only_newest = only_newest.clone();
        async move {
            if answer.status() == S::UNAUTHORIZED {
                answer
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, only_newest);
            }
            answer
        }
    };
    let gate = TokenGate::new(&a.redeemer_url, kind);
    let app = axum::Router::new()
        .route("/file", axum::routing::get(|| async { "the file" }))
        .layer(axum::middleware::from_fn_with_state(gate, require_token))
        .layer(axum::middleware::map_response(newest_only));
    let origin = serve_origin(app).await;

    let paid = wallet
        .fetch(&format!("{origin}/file"), None)
        .await
        .expect("paid with a token of the newest key");
    assert_eq!(paid.body, b"the file");
    let left = wallet.tokens(TokenState::Unspent).await.expect("tokens");
    assert_eq!(left.len(), 3);
    assert_eq!(left.iter().filter(|t| of_newest(t)).count(), 1);
}
