//! The ledger outbox shared by two processes, and items the ledger refuses for good.

use crate::helpers::{TestIssuer, default_limits, spawn};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use scrip_common::clients::LedgerClient;
use scrip_common::metrics::Scrape;
use scrip_issuer::store::OnSuccess;
use scrip_issuer::{Issuer, IssuerConfig, Requeued};
use scrip_spec::ledger::{Action, LedgerRequest, MAX_CLOCK_SKEW};
use scrip_spec::{OperatorKey, now};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};

/// A proxy to the ledger that holds every POST until it is let through: `arrived` hears of
/// each one held, `release` lets one through per permit.
struct Gate {
    url: String,
    arrived: mpsc::UnboundedReceiver<()>,
    release: Arc<Semaphore>,
}

async fn gate(ledger: &str) -> Gate {
    let (tx, arrived) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let (ledger, permits) = (ledger.to_owned(), release.clone());
    let client = reqwest::Client::new();
    let forward = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (ledger, permits, tx, client) =
            (ledger.clone(), permits.clone(), tx.clone(), client.clone());
        async move {
            if method == Method::POST {
                let _ = tx.send(());
                permits.acquire().await.expect("gate open").forget();
            }
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let mut req = client.request(method, format!("{ledger}{path}")).body(body);
            if let Some(ct) = headers.get("content-type") {
                req = req.header("content-type", ct);
            }
            let resp = req.send().await.expect("the ledger answers");
            let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
            let ct = resp
                .headers()
                .get("content-type")
                .cloned()
                .unwrap_or(axum::http::HeaderValue::from_static("application/json"));
            let body = resp.bytes().await.expect("body");
            (status, [(axum::http::header::CONTENT_TYPE, ct)], body)
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(forward))
            .await
            .expect("serve")
    });
    Gate {
        url,
        arrived,
        release,
    }
}

/// A request of op-a's, signed for the test ledger at `at`.
async fn signed_at(t: &TestIssuer, action: Action, at: u64) -> String {
    let op = OperatorKey::read_file(&t.dir.path().join("op.key")).expect("op key");
    let ledger_id = LedgerClient::new(&t.ledger.url)
        .info()
        .await
        .expect("info")
        .ledger_id;
    serde_json::to_string(&op.sign(LedgerRequest::new(ledger_id, at, action))).expect("json")
}

/// Queues the activation of a new batch of `count` cards of 10 credits with `request` (the
/// "cards sold" entry as `activate_batch` would queue it); returns the batch id.
async fn queue_activation(
    t: &TestIssuer,
    count: usize,
    request: impl AsyncFnOnce(String) -> String,
) -> String {
    let (batch, _) = t.issuer.mint_cards(10, count).await.expect("mint");
    let text = request(batch.clone()).await;
    assert!(
        t.issuer
            .store()
            .set_batch_state(
                &batch,
                "minted",
                "activating",
                Some((
                    &text,
                    &OnSuccess::ActivateBatch {
                        batch_id: batch.clone()
                    }
                )),
                now(),
            )
            .await
            .expect("queue")
    );
    batch
}

async fn cards_sold(t: &TestIssuer) -> u64 {
    let totals = LedgerClient::new(&t.ledger.url)
        .totals()
        .await
        .expect("totals");
    totals.issuers.iter().map(|i| i.cards_sold).sum()
}

/// Two processes flush one database, and both find the same item stale. Before, both
/// re-signed it with fresh timestamps and both landed: the ledger counted the sale twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_flushes_of_one_stale_item_land_it_once() {
    let t = spawn(default_limits()).await;
    // The activation was queued long ago, while the ledger was away: its request is stale.
    let old = now() - 2 * MAX_CLOCK_SKEW;
    let batch = queue_activation(&t, 3, async |batch| {
        signed_at(
            &t,
            Action::CardsSold {
                batch,
                count: 3,
                credits: 30,
            },
            old,
        )
        .await
    })
    .await;
    assert_eq!(cards_sold(&t).await, 0);

    // A second process on the same database file, whose ledger requests go through the gate.
    let mut gate = gate(&t.ledger.url).await;
    let config = IssuerConfig {
        ledger_url: gate.url.clone(),
        ..t.issuer.config().clone()
    };
    let other = Arc::new(Issuer::open(config).await.expect("a second issuer process"));
    let flushing = tokio::spawn({
        let other = other.clone();
        async move { other.flush_outbox().await }
    });
    // It has read the stale request and sent it; the ledger has not seen it yet.
    gate.arrived
        .recv()
        .await
        .expect("the other flush's request");

    // This process flushes meanwhile: stale, signed anew, landed.
    assert_eq!(t.issuer.flush_outbox().await.expect("flush"), 1);
    assert_eq!(cards_sold(&t).await, 3);

    // Now the other one hears "stale" too, and must not land a second copy.
    gate.release.add_permits(100);
    flushing.await.expect("task").expect("the other flush");
    assert_eq!(cards_sold(&t).await, 3, "the sale is counted once");
    assert!(t.issuer.store().outbox().await.expect("outbox").is_empty());
    let batches = t.issuer.store().batches().await.expect("batches");
    assert!(
        batches
            .iter()
            .any(|b| b.batch_id == batch && b.state == "active")
    );
}

/// Both processes find the item stale; one re-signs it and is held before sending. The other
/// cannot replace that copy, so it sends it as stored, and the first then hears "replayed".
/// Before, the second overwrote the first's copy with its own and both landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_re_signed_by_another_process_is_sent_as_it_is() {
    let t = spawn(default_limits()).await;
    let old = now() - 2 * MAX_CLOCK_SKEW;
    queue_activation(&t, 2, async |batch| {
        signed_at(
            &t,
            Action::CardsSold {
                batch,
                count: 2,
                credits: 20,
            },
            old,
        )
        .await
    })
    .await;
    let mut processes = Vec::new();
    for _ in 0..2 {
        let mut gate = gate(&t.ledger.url).await;
        let config = IssuerConfig {
            ledger_url: gate.url.clone(),
            ..t.issuer.config().clone()
        };
        let issuer = Arc::new(Issuer::open(config).await.expect("an issuer process"));
        let flush = tokio::spawn(async move { issuer.flush_outbox().await });
        // It has read the stale request and sent it.
        gate.arrived.recv().await.expect("the stale request");
        processes.push((gate, flush));
    }
    let (mut b, fb) = processes.pop().expect("b");
    let (mut a, fa) = processes.pop().expect("a");
    // A hears "stale", stores its re-signed copy and sends it: held.
    a.release.add_permits(1);
    a.arrived.recv().await.expect("a's copy");
    // B hears "stale", cannot replace what it read, and sends A's copy: it lands.
    b.release.add_permits(1);
    b.arrived.recv().await.expect("b sends again");
    b.release.add_permits(100);
    assert_eq!(fb.await.expect("task").expect("b's flush"), 1);
    assert_eq!(cards_sold(&t).await, 2);
    // A's copy is now a replay: done, not counted again.
    a.release.add_permits(100);
    assert_eq!(fa.await.expect("task").expect("a's flush"), 1);
    assert_eq!(cards_sold(&t).await, 2, "the sale is counted once");
    assert!(t.issuer.store().outbox().await.expect("outbox").is_empty());
}

/// An item the ledger refuses for good is set aside with an alarm, and the items after it
/// are sent. Before, the first refusal stopped the whole flush, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_item_is_set_aside_and_does_not_block_the_next() {
    let t = spawn(default_limits()).await;
    // A "cards sold" entry the ledger can only refuse (no cards), queued first.
    let refused = queue_activation(&t, 1, async |batch| {
        signed_at(
            &t,
            Action::CardsSold {
                batch,
                count: 0,
                credits: 0,
            },
            now(),
        )
        .await
    })
    .await;
    // The next batch is activated as usual, behind it.
    let (next, _) = t.issuer.mint_cards(10, 2).await.expect("mint");
    assert!(t.issuer.activate_batch(&next).await.expect("activate"));
    assert_eq!(cards_sold(&t).await, 2);

    assert!(t.issuer.store().outbox().await.expect("outbox").is_empty());
    let aside = t
        .issuer
        .store()
        .outbox_set_aside()
        .await
        .expect("set aside");
    assert_eq!(aside.len(), 1);
    assert!(
        aside[0].refusal.contains("invalid_request"),
        "{}",
        aside[0].refusal
    );
    let batches = t.issuer.store().batches().await.expect("batches");
    let state = |b: &str| {
        batches
            .iter()
            .find(|x| x.batch_id == b)
            .map(|x| x.state.as_str())
    };
    assert_eq!(state(&refused), Some("activating"), "kept for the operator");
    assert_eq!(state(&next), Some("active"));
    let m = Scrape::new("issuer", t.metrics().await);
    assert_eq!(m.value("scrip_issuer_outbox_set_aside"), Some(1.0));
    // A later flush does not send it again, and activating the batch says why it is stuck.
    assert_eq!(t.issuer.flush_outbox().await.expect("flush"), 0);
    let stuck = t
        .issuer
        .activate_batch(&refused)
        .await
        .expect_err("set aside");
    assert!(stuck.to_string().contains("set aside"), "{stuck}");
}

/// The operator's way out of a set-aside item: `requeue` puts it back in line and sends it.
/// One whose cause was dealt with lands and applies its follow-up; one the ledger still
/// refuses is set aside again with the new refusal; the gauge follows both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_set_aside_item_requeued_by_the_operator_lands_or_is_set_aside_again() {
    let t = spawn(default_limits()).await;
    let refused = queue_activation(&t, 1, async |batch| {
        let sale = Action::CardsSold {
            batch,
            count: 0,
            credits: 0,
        };
        signed_at(&t, sale, now()).await
    })
    .await;
    let fixable = queue_activation(&t, 2, async |batch| {
        let sale = Action::CardsSold {
            batch,
            count: 2,
            credits: 20,
        };
        signed_at(&t, sale, now()).await
    })
    .await;
    let id_of = async |batch: &str| {
        let follow_up = OnSuccess::ActivateBatch {
            batch_id: batch.to_owned(),
        };
        let queued = t.issuer.store().outbox().await.expect("outbox");
        queued
            .into_iter()
            .find(|i| i.on_success == follow_up)
            .expect("queued")
    };
    let refused_item = id_of(&refused).await;
    // The good sale set aside as if by a refusal since dealt with (a fixed ledger).
    let fixable_item = id_of(&fixable).await;
    assert!(
        t.issuer
            .store()
            .set_aside_outbox(
                fixable_item.id,
                &fixable_item.request,
                "an old refusal",
                now()
            )
            .await
            .expect("set aside")
    );
    assert_eq!(t.issuer.flush_outbox().await.expect("flush"), 0);
    assert_eq!(
        t.issuer
            .store()
            .count_outbox_set_aside()
            .await
            .expect("count"),
        2
    );
    let gauge =
        async || Scrape::new("issuer", t.metrics().await).value("scrip_issuer_outbox_set_aside");
    assert_eq!(gauge().await, Some(2.0));
    assert_eq!(cards_sold(&t).await, 0);

    assert_eq!(
        t.issuer
            .requeue_outbox(fixable_item.id)
            .await
            .expect("requeue"),
        Requeued::Landed
    );
    assert_eq!(cards_sold(&t).await, 2, "the sale landed once");
    let batches = t.issuer.store().batches().await.expect("batches");
    assert!(
        batches
            .iter()
            .any(|b| b.batch_id == fixable && b.state == "active")
    );

    let again = t
        .issuer
        .requeue_outbox(refused_item.id)
        .await
        .expect("requeue");
    let Requeued::SetAsideAgain { refusal } = again else {
        panic!("the ledger still refuses a sale of no cards: {again:?}");
    };
    assert!(refusal.contains("invalid_request"), "{refusal}");
    assert_eq!(gauge().await, Some(1.0));
    let none = t
        .issuer
        .requeue_outbox(fixable_item.id)
        .await
        .expect_err("no longer set aside");
    assert!(none.to_string().contains("outbox list"), "{none}");
}
