//! RFC 9577 at the sidecar (`GET /v1/redeem/{kind}`), through the axum gate of
//! `scrip_redeemer::private_token` and the example relay's paid downloads.

use crate::helpers::world;
use reqwest::StatusCode;
use scrip_redeemer::example_relay::RelayConfig;
use scrip_redeemer::{Mode, RedeemRateLimit};
use scrip_spec::api::private_token::authorization;
use scrip_testkit::services::spawn_relay;
use serde_json::Value;

/// A download that is not there, a name that is no download's, or a path that is no route's,
/// is refused before the gate charges: the token is still good for a download that is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_download_that_is_not_there_costs_no_token() {
    let w = world().await;
    let sidecar = w.sidecar_of(0, Mode::Strict).await;
    let data = w.dir.path().join("relay");
    let relay = spawn_relay(RelayConfig {
        sidecar: sidecar.base.clone(),
        download_kind: "chunk-256k".parse().expect("kind"),
        ..RelayConfig::new(data.clone())
    })
    .await;
    std::fs::create_dir_all(data.join("downloads")).expect("dir");
    std::fs::write(data.join("downloads").join("song.ogg"), "the song").expect("file");
    let http = reqwest::Client::new();
    let token = w.chunk_token();
    let get = |name: &str| {
        http.get(format!("{relay}/downloads/{name}"))
            .header("authorization", authorization(&token))
            .send()
    };
    for (name, status) in [
        ("missing.ogg", StatusCode::NOT_FOUND),
        (".hidden", StatusCode::BAD_REQUEST),
    ] {
        let refused = get(name).await.expect("answer");
        assert_eq!(refused.status(), status, "{name}");
    }
    // Nor does a path that is no route's.
    for path in ["/nope", "/downloads", "/downloads/", "/downloads/a/b"] {
        let unknown = http
            .get(format!("{relay}{path}"))
            .header("authorization", authorization(&token))
            .send()
            .await
            .expect("answer");
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        sidecar
            .metric(r#"scrip_redeemer_redemptions_total{result="granted"}"#)
            .await,
        0.0
    );
    let paid = get("song.ogg").await.expect("answer");
    assert_eq!(paid.status(), StatusCode::OK, "the token was not spent");
    assert_eq!(paid.text().await.expect("body"), "the song");
    let again = get("song.ogg").await.expect("answer");
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    let body: Value = again.json().await.expect("json");
    assert_eq!(body["error"]["code"], "already_spent");
}

/// The gate tells the sidecar who asks: with the origin listed as a trusted proxy, as the
/// configuration says to, the sidecar's per-source limit counts each client of the origin, so
/// one client over its limit locks out no other (and a forged `X-Forwarded-For` names nobody
/// else).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gate_names_each_client_to_the_sidecars_limit() {
    let w = world().await;
    let mut config = w.config(0, Mode::Strict, 300);
    config.rate_limit = RedeemRateLimit {
        per_source: Some(3),
        trusted_proxies: vec!["127.0.0.1".parse().expect("ip")],
        ..RedeemRateLimit::default()
    };
    let sidecar = w.sidecar(config).await;
    let data = w.dir.path().join("relay");
    std::fs::create_dir_all(data.join("downloads")).expect("dir");
    std::fs::write(data.join("downloads").join("song.ogg"), "the song").expect("file");
    let relay = spawn_relay(RelayConfig {
        sidecar: sidecar.base.clone(),
        download_kind: "chunk-256k".parse().expect("kind"),
        ..RelayConfig::new(data)
    })
    .await;
    // Two clients, each from its own loopback address.
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().expect("ip"))
            .build()
            .expect("client")
    };
    let (greedy, other) = (from("127.0.0.2"), from("127.0.0.3"));
    let url = format!("{relay}/downloads/song.ogg");
    for _ in 0..3 {
        let asked = greedy
            .get(&url)
            .header("x-forwarded-for", "127.0.0.3")
            .send()
            .await
            .expect("answer");
        assert_eq!(asked.status(), StatusCode::UNAUTHORIZED);
    }
    let over = greedy.get(&url).send().await.expect("answer");
    assert_eq!(
        over.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "its own limit"
    );
    assert!(over.headers().get("retry-after").is_some());
    let asked = other.get(&url).send().await.expect("answer");
    assert_eq!(
        asked.status(),
        StatusCode::UNAUTHORIZED,
        "another client of the origin is not counted with the first"
    );
    let paid = other
        .get(&url)
        .header("authorization", authorization(&w.chunk_token()))
        .send()
        .await
        .expect("answer");
    assert_eq!(paid.status(), StatusCode::OK);
}

/// Serves `app` on a free loopback port; its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Only the sidecar's payment lets a request through: 200 with `{"kind"}` of the gate's kind.
/// A 2xx of another shape (a sidecar URL that reaches some other server, a 204, another
/// kind's payment) or a redirect is not one, and the gate serves nothing for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gate_serves_only_for_the_sidecars_payment() {
    use axum::http::StatusCode as S;
    use axum::routing::get;
    use scrip_redeemer::private_token::{TokenGate, require_token};
    let not_sidecars = axum::Router::new()
        .route(
            "/page/v1/redeem/{kind}",
            get(|| async { "<html>welcome</html>" }),
        )
        .route("/empty/v1/redeem/{kind}", get(|| async { S::NO_CONTENT }))
        .route(
            "/other/v1/redeem/{kind}",
            get(|| async { axum::Json(serde_json::json!({"kind": "queue"})) }),
        )
        .route(
            "/moved/v1/redeem/{kind}",
            get(|| async { axum::response::Redirect::temporary("/paid") }),
        )
        .route(
            "/paid",
            get(|| async { axum::Json(serde_json::json!({"kind": "chunk-1m"})) }),
        )
        .route(
            "/right/v1/redeem/{kind}",
            get(|| async { axum::Json(serde_json::json!({"kind": "chunk-1m"})) }),
        );
    let base = serve(not_sidecars).await;
    for (sidecar, serves) in [
        ("page", false),
        ("empty", false),
        ("other", false),
        ("moved", false),
        ("right", true),
    ] {
        let gate = TokenGate::new(
            &format!("{base}/{sidecar}"),
            "chunk-1m".parse().expect("kind"),
        );
        let origin = serve(
            axum::Router::new()
                .route("/goods", get(|| async { "the goods" }))
                .layer(axum::middleware::from_fn_with_state(gate, require_token)),
        )
        .await;
        let answer = reqwest::get(format!("{origin}/goods"))
            .await
            .expect("answer");
        let status = answer.status();
        let body = answer.text().await.expect("body");
        assert_eq!(body == "the goods", serves, "{sidecar}: {status} {body}");
        if !serves {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{sidecar}");
        }
    }
}

/// One token presented by several requests at once: one is served, and every other is told
/// the token is spent (401 `already_spent`, with a fresh challenge), not that the sidecar
/// failed (503), which would have the client wait and retry a token that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_presentations_of_one_token_pay_once_and_are_told_why() {
    for mode in [Mode::Strict, Mode::Optimistic] {
        let w = world().await;
        let sidecar = w.sidecar_of(0, mode).await;
        let http = reqwest::Client::new();
        let pay = authorization(&w.chunk_token());
        let url = format!("{}/v1/redeem/chunk-256k", sidecar.base);
        let asks: Vec<_> = (0..8)
            .map(|_| {
                let ask = http.get(&url).header("authorization", pay.clone()).send();
                tokio::spawn(ask)
            })
            .collect();
        let mut statuses = Vec::new();
        for ask in asks {
            let answer = ask.await.expect("join").expect("answer");
            let status = answer.status();
            let body: Value = answer.json().await.expect("json");
            statuses.push((
                status,
                body["error"]["code"].as_str().unwrap_or("").to_owned(),
            ));
        }
        let served = statuses
            .iter()
            .filter(|(s, _)| *s == StatusCode::OK)
            .count();
        assert_eq!(served, 1, "{mode:?}: {statuses:?}");
        assert!(
            statuses.iter().all(|(s, code)| *s == StatusCode::OK
                || (*s == StatusCode::UNAUTHORIZED && code == "already_spent")),
            "{mode:?}: {statuses:?}"
        );
    }
}

/// A method the route does not take (its 405) costs no token either: the gate runs only for
/// requests the route serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_method_the_download_does_not_take_costs_no_token() {
    let w = world().await;
    let sidecar = w.sidecar_of(0, Mode::Strict).await;
    let data = w.dir.path().join("relay");
    std::fs::create_dir_all(data.join("downloads")).expect("dir");
    std::fs::write(data.join("downloads").join("song.ogg"), "the song").expect("file");
    let relay = spawn_relay(RelayConfig {
        sidecar: sidecar.base.clone(),
        download_kind: "chunk-256k".parse().expect("kind"),
        ..RelayConfig::new(data)
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{relay}/downloads/song.ogg");
    let token = w.chunk_token();
    for method in [reqwest::Method::POST, reqwest::Method::DELETE] {
        let refused = http
            .request(method.clone(), &url)
            .header("authorization", authorization(&token))
            .send()
            .await
            .expect("answer");
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    let paid = http
        .get(&url)
        .header("authorization", authorization(&token))
        .send()
        .await
        .expect("answer");
    assert_eq!(paid.status(), StatusCode::OK, "the token was not spent");
}

/// The route behind the gate never sees the token: the gate takes the `Authorization:
/// PrivateToken` header off the request it lets through, as its documentation says (the
/// origin sees no token, the example relay never sees one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_route_behind_the_gate_never_sees_the_token() {
    use axum::routing::get;
    use scrip_redeemer::private_token::{TokenGate, require_token};
    let w = world().await;
    let sidecar = w.sidecar_of(0, Mode::Strict).await;
    let gate = TokenGate::new(&sidecar.base, "chunk-256k".parse().expect("kind"));
    let origin = serve(
        axum::Router::new().route(
            "/goods",
            get(|headers: axum::http::HeaderMap| async move {
                format!(
                    "authorization seen: {}",
                    headers.contains_key("authorization")
                )
            })
            .route_layer(axum::middleware::from_fn_with_state(gate, require_token)),
        ),
    )
    .await;
    let paid = reqwest::Client::new()
        .get(format!("{origin}/goods"))
        .header("authorization", authorization(&w.chunk_token()))
        .send()
        .await
        .expect("answer");
    assert_eq!(paid.status(), StatusCode::OK);
    assert_eq!(
        paid.text().await.expect("body"),
        "authorization seen: false"
    );
}
