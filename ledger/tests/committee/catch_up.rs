//! A node catching up fetches its missing entries from one peer: a faulty peer must not be
//! able to leave it on a branch of the log of its own making.

use super::{Committee, submit_until_applied};
use scrip_spec::api::ledger::LogPage;
use scrip_spec::ledger::Action;
use scrip_testkit::mint_tokens;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Replaces node 2 by a liar in front of node 0's ledger: it claims a head 50 entries further
/// on (so that a catching-up node reads the log from it first), and serves node 0's log with
/// the time of entry `forged` moved by a second, every entry else as it is. Entry `forged`
/// alone replays cleanly at its forged time; the entries after it name the honest one. Counts
/// the forged entries it served.
async fn serve_a_forged_log(c: &mut Committee, forged: u64) -> Arc<AtomicUsize> {
    use axum::extract::Query;
    use axum::routing::get;
    c.stop_node(2).await;
    let honest = c.nodes[0].ledger.clone().expect("node 0 is up");
    let served = Arc::new(AtomicUsize::new(0));
    #[derive(serde::Deserialize)]
    struct Range {
        from: u64,
        limit: u32,
    }
    // Node 0's own answer, with its session, which only its HTTP side knows.
    let honest_api = c.client(0);
    let info = move || {
        let honest_api = honest_api.clone();
        async move {
            let mut info = honest_api.info().await.expect("node 0's info");
            info.head_seq += 50;
            axum::Json(info)
        }
    };
    let log = {
        let served = served.clone();
        move |Query(range): Query<Range>| {
            let (honest, served) = (honest.clone(), served.clone());
            async move {
                let mut entries = honest
                    .entries(range.from, range.limit)
                    .await
                    .expect("node 0's log");
                for entry in entries.iter_mut().filter(|e| e.seq == forged) {
                    entry.recorded_at += 1;
                    served.fetch_add(1, Ordering::SeqCst);
                }
                axum::Json(LogPage {
                    entries,
                    next: None,
                })
            }
        }
    };
    let lie = axum::Router::new()
        .route("/v1/info", get(info))
        .route("/v1/log", get(log));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", c.nodes[2].api_port))
        .await
        .expect("node 2's port");
    tokio::spawn(async move { axum::serve(listener, lie).await });
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_serving_a_forged_log_cannot_lead_a_catching_up_node_astray() {
    // Sessions of 40 rounds: about two seconds each.
    let mut c = Committee::start_with(4, 40).await;
    let announce = c.request(&c.issuer, Action::AnnounceKey { key: c.key.clone() });
    c.client(0).submit(&announce).await.expect("announced");
    let (behind, _) = c.agreed_head().await;

    c.stop_node(3).await;
    // Spends until two sessions have ended without node 3 (a request waiting at a session's
    // end is ordered in the next one: retried, as a redeemer retries a 503).
    let mut spends = 0;
    while c.client(0).info().await.expect("info").session < Some(2) {
        assert!(spends < 30, "sessions end while node 3 is down");
        let tokens = mint_tokens(&c.secret, "issuer", 5);
        submit_until_applied(&c.client(0), &c.spend(&c.relay_a, tokens)).await;
        spends += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (ahead, _) = c.agreed_head().await;
    assert!(ahead > behind + 2, "entries for node 3 to catch up with");

    // Node 3 comes back while node 2 lies about the first entry node 3 misses.
    let forged = serve_a_forged_log(&mut c, behind + 1).await;
    c.start_node(3).await;
    // It catches up from an honest node, and holds node 0's log, not the liar's: before the
    // entries were checked to chain up to the head f + 1 nodes vouched for, it applied the
    // forged entry, then found the next one did not follow, and stayed there for good.
    c.agreed_head_within(Duration::from_secs(60)).await;
    assert!(
        forged.load(Ordering::SeqCst) > 0,
        "node 3 read the log from the liar"
    );
    let (ours, honest) = (c.log(3).await, c.log(0).await);
    assert_eq!(
        ours.iter().map(|e| e.hash()).collect::<Vec<_>>(),
        honest.iter().map(|e| e.hash()).collect::<Vec<_>>()
    );
    assert_eq!(
        ours.iter()
            .filter(|e| e.body.kind_name() == "tokens_spent")
            .count(),
        spends,
        "every spend, once"
    );
    scrip_ledger::audit::audit(&ours).expect("the audit passes");
    for i in [0, 1, 3] {
        c.stop_node(i).await;
    }
}
