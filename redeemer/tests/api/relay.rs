use crate::helpers::world;
use reqwest::StatusCode;
use scrip_redeemer::Mode;
use scrip_redeemer::example_relay::RelayConfig;
use scrip_testkit::services::spawn_relay;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_example_relay_gives_capacity_only_for_a_valid_grant() {
    let w = world().await;
    let sidecar = w.sidecar_of(0, Mode::Strict).await;
    let data = w.dir.path().join("relay");
    let relay = spawn_relay(RelayConfig {
        sidecar: sidecar.base.clone(),
        chunk_ttl_secs: 3600,
        ..RelayConfig::new(data.clone())
    })
    .await;
    let client = reqwest::Client::new();
    let (_, body) = sidecar.redeem(&w.token(), "queue").await;
    let grant = body["grant"].as_str().expect("grant").to_owned();

    let create = |g: &str| client.post(format!("{relay}/queues")).bearer_auth(g).send();
    let resp = create(&grant).await.expect("create");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let queue: serde_json::Value = resp.json().await.expect("json");
    assert!(
        data.join("queues")
            .join(queue["queue_id"].as_str().expect("id"))
            .exists()
    );
    assert_eq!(
        create(&grant).await.expect("again").status(),
        StatusCode::FORBIDDEN,
        "single use"
    );
    assert_eq!(
        create("sg1.queue.AAAAAAAAAAAAAAAAAAAAAA")
            .await
            .expect("fake")
            .status(),
        StatusCode::FORBIDDEN
    );
    let none = client
        .post(format!("{relay}/queues"))
        .send()
        .await
        .expect("none");
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);

    // A queue grant does not buy a chunk, and is not used up by trying.
    let (_, body) = sidecar.redeem(&w.token(), "queue").await;
    let queue_grant = body["grant"].as_str().expect("grant").to_owned();
    let chunk = vec![7u8; 100 * 1024];
    let store = |id: &str, g: &str| {
        client
            .put(format!("{relay}/chunks/{id}"))
            .bearer_auth(g)
            .body(chunk.clone())
            .send()
    };
    let put = store("AAAAAAAAAAAAAAAAAAAAAA", &queue_grant)
        .await
        .expect("put");
    assert_eq!(put.status(), StatusCode::FORBIDDEN);
    assert!(!data.join("chunks").join("AAAAAAAAAAAAAAAAAAAAAA").exists());
    assert_eq!(
        create(&queue_grant).await.expect("queue").status(),
        StatusCode::CREATED
    );

    // A chunk of 100 KiB needs a chunk-256k grant; with one it is stored and served back.
    let (_, body) = sidecar.redeem(&w.chunk_token(), "chunk-256k").await;
    let chunk_grant = body["grant"].as_str().expect("grant").to_owned();
    let put = store("BBBBBBBBBBBBBBBBBBBBBB", &chunk_grant)
        .await
        .expect("put");
    assert_eq!(put.status(), StatusCode::CREATED);
    let got = client
        .get(format!("{relay}/chunks/BBBBBBBBBBBBBBBBBBBBBB"))
        .send()
        .await
        .expect("get");
    assert_eq!(got.bytes().await.expect("bytes").to_vec(), chunk);
    // The grant is used up; a 10-byte chunk would need a 64k grant anyway.
    let small = client
        .put(format!("{relay}/chunks/CCCCCCCCCCCCCCCCCCCCCC"))
        .bearer_auth(&chunk_grant)
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("put");
    assert_eq!(small.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        client
            .put(format!("{relay}/chunks/..%2F..%2Fx"))
            .body(vec![1])
            .send()
            .await
            .expect("bad")
            .status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_example_relay_times_each_route_and_counts_grant_checks() {
    let w = world().await;
    let sidecar = w.sidecar_of(0, Mode::Strict).await;
    let relay = spawn_relay(RelayConfig {
        sidecar: sidecar.base.clone(),
        chunk_ttl_secs: 3600,
        ..RelayConfig::new(w.dir.path().join("relay"))
    })
    .await;
    let client = reqwest::Client::new();
    let (_, body) = sidecar.redeem(&w.chunk_token(), "chunk-256k").await;
    let grant = body["grant"].as_str().expect("grant").to_owned();
    let id = "DDDDDDDDDDDDDDDDDDDDDD";
    let put = client
        .put(format!("{relay}/chunks/{id}"))
        .bearer_auth(&grant);
    let put = put.body(vec![5u8; 100 * 1024]).send().await.expect("put");
    assert_eq!(put.status(), StatusCode::CREATED);
    let none = client.post(format!("{relay}/queues")).send().await;
    assert_eq!(none.expect("none").status(), StatusCode::UNAUTHORIZED);
    let text = client.get(format!("{relay}/metrics")).send().await;
    let text = text.expect("metrics").text().await.expect("text");
    let m = scrip_common::metrics::Scrape::new("relay", text);
    assert_eq!(
        m.requests_timed("/chunks/{id}", "PUT", "2xx"),
        Some(1),
        "{m}"
    );
    assert_eq!(m.requests_timed("/queues", "POST", "4xx"), Some(1), "{m}");
    let checks = |result| format!("scrip_relay_grant_checks_total{{result=\"{result}\"}}");
    assert_eq!(m.value(&checks("accepted")), Some(1.0), "{m}");
    assert_eq!(m.value(&checks("missing")), Some(1.0), "{m}");
    assert_eq!(m.value(&checks("refused")), Some(0.0), "{m}");
    assert_eq!(m.build_version(), Some(env!("CARGO_PKG_VERSION")), "{m}");
    let text = m.to_string();
    assert!(
        !text.contains(id) && !text.contains(&grant),
        "no id nor grant"
    );
}
