//! A node catching up fetches its missing entries from one peer: a faulty peer must not be
//! able to leave it on a branch of the log of its own making, and a node whose session's
//! committee is gone catches up from a node it is told of, under the committee's certificates.

use super::{Committee, submit_until_applied};
use crate::membership::ordered_through_node_alone;
use scrip_spec::api::ledger::LogPage;
use scrip_spec::ledger::{Action, Change, EntryBody};
use scrip_testkit::mint_tokens;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How a liar forges the log it serves.
#[derive(Clone, Copy)]
enum Forgery {
    /// The time of one entry moved by a second, every entry else as it is: that entry alone
    /// replays cleanly at its forged time, and the entries after it name the honest one.
    MovedTime,
    /// The same, and every later entry names the forged one before it, so that the log still
    /// chains; only a certificate, naming the honest entry, tells it apart.
    MovedTimeRechained,
}

/// A liar on `listener` in front of node `of`: it claims a head 50 entries further on than
/// node `of` (so that a catching-up node reads the log from it first) and serves node `of`'s
/// log forged at entry `forged` as `forgery` says. Counts the pages it served with a forged
/// entry.
async fn serve_a_forged_log(
    c: &Committee,
    of: usize,
    listener: tokio::net::TcpListener,
    forged: u64,
    forgery: Forgery,
) -> Arc<AtomicUsize> {
    use axum::extract::Query;
    use axum::routing::get;
    let honest = c.nodes[of].ledger.clone().expect("the node is up");
    let served = Arc::new(AtomicUsize::new(0));
    #[derive(serde::Deserialize)]
    struct Range {
        from: u64,
        limit: u32,
    }
    // The node's own answer, with its session, which only its HTTP side knows.
    let honest_api = c.client(of);
    let info = move || {
        let honest_api = honest_api.clone();
        async move {
            let mut info = honest_api.info().await.expect("the node's info");
            info.head_seq += 50;
            axum::Json(info)
        }
    };
    let log = {
        let served = served.clone();
        move |Query(range): Query<Range>| {
            let (honest, served) = (honest.clone(), served.clone());
            async move {
                // A test's log is short: the whole of it, forged, then the page asked for.
                let mut entries = honest.entries(0, 10_000).await.expect("the node's log");
                if let Some(entry) = entries.get_mut(forged as usize) {
                    entry.recorded_at += 1;
                }
                if let Forgery::MovedTimeRechained = forgery {
                    for i in forged as usize + 1..entries.len() {
                        entries[i].prev_hash = entries[i - 1].hash();
                    }
                }
                let from = (range.from as usize).min(entries.len());
                let to = (from + range.limit as usize).min(entries.len());
                if (from..to).contains(&(forged as usize)) || from > forged as usize {
                    served.fetch_add(1, Ordering::SeqCst);
                }
                axum::Json(LogPage {
                    entries: entries[from..to].to_vec(),
                    next: None,
                })
            }
        }
    };
    let lie = axum::Router::new()
        .route("/v1/info", get(info))
        .route("/v1/log", get(log));
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
    c.stop_node(2).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", c.nodes[2].api_port))
        .await
        .expect("node 2's port");
    let forged = serve_a_forged_log(&c, 0, listener, behind + 1, Forgery::MovedTime).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_down_while_its_committee_was_replaced_catches_up_from_a_node_it_is_told_of() {
    // Sessions of 40 rounds: about two seconds each.
    let mut c = Committee::start_with(4, 40).await;
    let announce = c.request(&c.issuer, Action::AnnounceKey { key: c.key.clone() });
    c.client(0).submit(&announce).await.expect("announced");
    let (behind, _) = c.agreed_head().await;
    c.stop_node(3).await;

    // While node 3 is down, three new nodes are admitted and nodes 0, 1 and 2 retired: the
    // committee becomes node 3 and the three new ones.
    let client = c
        .client(0)
        .refreshing_committee_every(Duration::from_millis(1));
    // A key announced after node 3's head and revoked by governance: node 3's copy of the
    // state must know the key to find the revocation valid.
    let second = scrip_spec::TokenSecretKey::generate().expect("keygen");
    let second = scrip_testkit::key_info(second.public_key(), "issuer", "chunk-64k", 1);
    let announce = c.request(
        &c.issuer,
        Action::AnnounceKey {
            key: second.clone(),
        },
    );
    submit_until_applied(&client, &announce).await;
    let mut changes = vec![Change::RevokeKey {
        token_key_id: second.public_key.id(),
        reason: "a key node 3 never saw".into(),
    }];
    let mut new = Vec::new();
    for _ in 0..3 {
        let (i, member) = c.add_node().await;
        c.start_node(i).await;
        changes.push(Change::AdmitNode { node: member });
        new.push(i);
    }
    for i in 0..3 {
        let node_key = c.genesis.committee[i].node_key;
        changes.push(Change::RetireNode { node_key });
    }
    for (governance_seq, change) in changes.into_iter().enumerate() {
        submit_until_applied(&client, &c.govern(governance_seq as u64, change)).await;
        let spend = c.spend(&c.relay_a, mint_tokens(&c.secret, "issuer", 2));
        submit_until_applied(&client, &spend).await;
    }
    // The new committee orders on its own, and certifies the sessions it ends.
    let started = Instant::now();
    loop {
        let spend = c.spend(&c.relay_b, mint_tokens(&c.secret, "issuer", 1));
        let signer = ordered_through_node_alone(&c, new[0], &spend, Duration::from_secs(60)).await;
        let log = c.log(new[0]).await;
        let retirements: Vec<u64> = log
            .iter()
            .filter(|e| e.body.kind_name() == "node_retired")
            .map(|e| e.seq)
            .collect();
        let certified = log
            .iter()
            .filter_map(|e| match &e.body {
                EntryBody::Certificate(certificate) => Some(certificate.head.seq),
                _ => None,
            })
            .max();
        if signer.is_some() && retirements.len() == 3 && certified >= retirements.last().copied() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the new committee never certified a session after the retirements"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for i in 0..3 {
        c.stop_node(i).await;
    }

    // Node 3 comes back in its old session, whose other nodes are gone. It is told of a liar
    // first, whose log chains but is forged, then of one new node: it takes nothing from the
    // liar, catches up from the new node under the certificates, and takes part in the new
    // committee.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let liar = format!("http://{}", listener.local_addr().expect("addr"));
    let forged = serve_a_forged_log(
        &c,
        new[0],
        listener,
        behind + 1,
        Forgery::MovedTimeRechained,
    )
    .await;
    c.nodes[3].catch_up_from = vec![liar, c.base(new[0])];
    c.start_node(3).await;
    let head = c.agreed_head_within(Duration::from_secs(90)).await;
    assert!(
        forged.load(Ordering::SeqCst) > 0,
        "node 3 read the log from the liar"
    );
    let spend = c.spend(&c.relay_a, mint_tokens(&c.secret, "issuer", 2));
    ordered_through_node_alone(&c, 3, &spend, Duration::from_secs(60)).await;
    let after = c.agreed_head_within(Duration::from_secs(30)).await;
    assert!(after.0 > head.0);
    let ours = c.log(3).await;
    assert_eq!(
        ours,
        c.log(new[0]).await,
        "the same log as the new committee's"
    );
    let certificates = ours
        .iter()
        .filter(|e| e.body.kind_name() == "certificate")
        .count();
    let report = scrip_ledger::audit::audit(&ours).expect("the audit passes");
    assert_eq!(report.checkpoints as usize, certificates);
    for i in [3, new[0], new[1], new[2]] {
        c.stop_node(i).await;
    }
}

/// A node on `listener` that says it is far past every session, and serves an empty log.
async fn serve_a_node_claiming_a_later_session(c: &Committee, listener: tokio::net::TcpListener) {
    use axum::routing::get;
    let mut info = c.client(0).info().await.expect("node 0's info");
    info.session = Some(1_000_000);
    let info = move || {
        let info = info.clone();
        async move { axum::Json(info) }
    };
    let log = || async {
        axum::Json(LogPage {
            entries: vec![],
            next: None,
        })
    };
    let lie = axum::Router::new()
        .route("/v1/info", get(info))
        .route("/v1/log", get(log));
    tokio::spawn(async move { axum::serve(listener, lie).await });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_catch_up_that_fails_leaves_the_session_where_the_log_stands() {
    // Sessions of 40 rounds: about two seconds each.
    let mut c = Committee::start_with(4, 40).await;
    // Node 3 is told of a node that claims a later session and holds nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let liar = format!("http://{}", listener.local_addr().expect("addr"));
    serve_a_node_claiming_a_later_session(&c, listener).await;
    c.stop_node(3).await;
    c.nodes[3].catch_up_from = vec![liar];
    c.start_node(3).await;

    // Node 3 appends a certificate in the session it is running.
    let announce = c.request(&c.issuer, Action::AnnounceKey { key: c.key.clone() });
    submit_until_applied(&c.client(0), &announce).await;
    let started = Instant::now();
    loop {
        let session = c.client(3).info().await.expect("info").session;
        let certified_here = c.log(3).await.iter().any(|e| {
            matches!(e.body, EntryBody::Certificate(_)) && e.ordered.map(|at| at.session) == session
        });
        if certified_here {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no certificate in node 3's session"
        );
        let spend = c.spend(&c.relay_a, mint_tokens(&c.secret, "issuer", 1));
        submit_until_applied(&c.client(0), &spend).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Two nodes go: node 3 hears from only one peer, takes the liar's word that the session
    // is over, and fails to catch up from it. It must go on from where its log stands: run
    // again from the session's start, it appended the session's certificate a second time.
    c.stop_node(0).await;
    c.stop_node(1).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    c.start_node(0).await;
    c.start_node(1).await;
    let spend = c.spend(&c.relay_b, mint_tokens(&c.secret, "issuer", 2));
    submit_until_applied(&c.client(0), &spend).await;
    c.agreed_head_within(Duration::from_secs(60)).await;
    let ours = c.log(3).await;
    assert_eq!(ours, c.log(0).await, "node 3 holds the committee's log");
    scrip_ledger::audit::audit(&ours).expect("the audit passes");
    for i in 0..4 {
        c.stop_node(i).await;
    }
}
