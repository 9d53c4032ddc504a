//! A node whose consensus backup is lost while its database survives must not take part in
//! the session it was in: it could sign a second, different unit for a round it signed. A node
//! that lost both must not take part at all under its old key.

use super::Committee;
use crate::membership::ordered_through_node_alone;
use scrip_spec::ledger::Action;
use scrip_testkit::{TestDb, mint_tokens};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_lost_its_consensus_backup_sits_its_session_out() {
    // Sessions of 100 rounds, about five seconds.
    let mut c = Committee::start_with(4, 100).await;
    let announce = c.request(&c.issuer, Action::AnnounceKey { key: c.key.clone() });
    c.client(0).submit(&announce).await.expect("announced");
    c.agreed_head().await;

    c.stop_node(3).await;
    let store = scrip_ledger::connect(&c.nodes[3].db.url)
        .await
        .expect("store");
    let session = store
        .consensus_session()
        .await
        .expect("read")
        .expect("the node recorded its session");
    let backup = c.nodes[3]
        .consensus
        .path()
        .join(format!("session-{session}.units"));
    assert!(backup.exists(), "the session's units were backed up");
    std::fs::remove_dir_all(c.nodes[3].consensus.path()).expect("lose the backup");

    // Back with its database but without its backup: it orders nothing in that session, so
    // its backup of the session is never written again, and it takes part from the next.
    c.start_node(3).await;
    let spend = c.spend(&c.relay_a, mint_tokens(&c.secret, "issuer", 2));
    ordered_through_node_alone(&c, 3, &spend, Duration::from_secs(60)).await;
    let started = Instant::now();
    while c.client(3).info().await.expect("info").session <= Some(session) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "stuck in {session}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !backup.exists(),
        "the node took part again in session {session}, whose units it had lost"
    );
    c.agreed_head().await;
    for i in 0..4 {
        c.stop_node(i).await;
    }
}

/// Whether node `i` wrote a consensus backup of any session (it signed units).
fn backed_up_any(c: &Committee, i: usize) -> bool {
    std::fs::read_dir(c.nodes[i].consensus.path())
        .map(|dir| dir.filter_map(Result::ok).count() > 0)
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_lost_its_database_and_backup_orders_nothing_under_its_old_key() {
    // Sessions of 100 rounds, about five seconds.
    let mut c = Committee::start_with(4, 100).await;
    let announce = c.request(&c.issuer, Action::AnnounceKey { key: c.key.clone() });
    c.client(0).submit(&announce).await.expect("announced");
    let started = Instant::now();
    while c.client(0).info().await.expect("info").session < Some(1) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "stuck in session 0"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Node 3 loses everything and is set up again from the genesis, with the same key.
    c.stop_node(3).await;
    c.nodes[3].db = TestDb::sqlite();
    c.nodes[3].consensus = tempfile::tempdir().expect("tempdir");
    let store = scrip_ledger::connect(&c.nodes[3].db.url)
        .await
        .expect("store");
    scrip_ledger::Ledger::init(
        store,
        scrip_spec::OperatorKey::from_seed(&c.nodes[3].key_seed),
        c.genesis.clone(),
    )
    .await
    .expect("the genesis again");
    c.start_node(3).await;

    // It catches up and follows, but signs nothing: the other three order without it.
    let spend = c.spend(&c.relay_a, mint_tokens(&c.secret, "issuer", 2));
    c.client(0)
        .submit(&spend)
        .await
        .expect("ordered without node 3");
    let session = c.client(0).info().await.expect("info").session;
    let started = Instant::now();
    while c.client(0).info().await.expect("info").session <= session.map(|s| s + 1) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the sessions do not end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.agreed_head_within(Duration::from_secs(30)).await;
    assert!(
        !backed_up_any(&c, 3),
        "the node signed units under a key whose earlier units it lost"
    );

    // Told that this is its first start, it takes part.
    c.stop_node(3).await;
    c.nodes[3].first_start = true;
    c.start_node(3).await;
    let spend = c.spend(&c.relay_b, mint_tokens(&c.secret, "issuer", 2));
    ordered_through_node_alone(&c, 3, &spend, Duration::from_secs(60)).await;
    assert!(backed_up_any(&c, 3), "with first_start the node takes part");
    c.agreed_head().await;
    for i in 0..4 {
        c.stop_node(i).await;
    }
}
