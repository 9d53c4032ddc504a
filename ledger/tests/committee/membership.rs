//! Membership changes: a node admitted by governance follows the log, then orders from the
//! session after the one that ordered its admission; a retired node stops ordering, and the
//! committee without it goes on with what its own size needs.

use super::{Committee, TestNode, submit_until_applied};
use scrip_spec::api::ledger::LedgerInfo;
use scrip_spec::committee::CommitteeMember;
use scrip_spec::ledger::{Action, Approval, Change, LedgerRequest, Proposal};
use scrip_spec::{OperatorId, OperatorKey, Signed, now};
use scrip_testkit::{Http, TestDb, mint_tokens};
use std::time::{Duration, Instant};

impl Committee {
    /// A governance change approved by relay-a, the one admin, submitted by it.
    pub(crate) fn govern(&self, governance_seq: u64, change: Change) -> Signed<LedgerRequest> {
        let proposal = Proposal {
            ledger_id: self.ledger_id(),
            governance_seq,
            change,
        };
        let approvals = vec![Approval::sign(&self.relay_a, &proposal)];
        self.request(
            &self.relay_a,
            Action::Govern {
                proposal,
                approvals,
            },
        )
    }

    /// A node on the same genesis, not in its committee, not started.
    pub(crate) async fn add_node(&mut self) -> (usize, CommitteeMember) {
        let (node, key) = TestNode::new(TestDb::sqlite());
        let store = scrip_ledger::connect(&node.db.url).await.expect("store");
        scrip_ledger::Ledger::init(store, key, self.genesis.clone())
            .await
            .expect("the same genesis");
        let member = CommitteeMember {
            operator: "relay-b".into(),
            node_key: OperatorKey::from_seed(&node.key_seed).id(),
            peer_address: format!("127.0.0.1:{}", node.peer_port),
            api_url: format!("http://127.0.0.1:{}", node.api_port),
        };
        // The proxies in front of the first nodes let it through.
        self.partition.name_another_node(member.node_key);
        self.nodes.push(node);
        (self.nodes.len() - 1, member)
    }

    pub(crate) fn base(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].api_port)
    }
}

/// Posts `request` to node `i` alone until it is applied (a node outside the committee
/// answers 503); returns the signer of its receipt, or `None` if a try whose answer timed out
/// was applied (409 to the next): either way only node `i` held it, so node `i` proposed it.
pub(crate) async fn ordered_through_node_alone(
    c: &Committee,
    i: usize,
    request: &Signed<LedgerRequest>,
    within: Duration,
) -> Option<OperatorId> {
    let started = Instant::now();
    loop {
        let (status, body) = Http::new(&c.base(i)).post("/v1/entries", request).await;
        if status.is_success() {
            let receipt: scrip_spec::api::ledger::Receipt =
                serde_json::from_value(body).expect("a receipt");
            return Some(receipt.attestation.expect("signed").node);
        }
        if status.as_u16() == 409 && body["error"]["code"] == "replayed_request" {
            return None;
        }
        assert_eq!(status.as_u16(), 503, "{body}");
        assert!(
            started.elapsed() < within,
            "node {i} never ordered a request given to it alone: {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_admitted_by_governance_orders_and_a_retired_one_stops() {
    // Sessions of 40 rounds (about two seconds), so changes take effect quickly.
    let mut c = Committee::start_with(4, 40).await;
    let announce = c.request(&c.issuer, Action::AnnounceKey { key: c.key.clone() });
    c.client(0).submit(&announce).await.expect("announced");

    // What the rules refuse, before anything changes: a node with an operator's key, a node
    // of no member, retiring a node that is not in the committee.
    let (new, member) = c.add_node().await;
    let mut with_operator_key = member.clone();
    with_operator_key.node_key = c.issuer.id();
    let mut of_no_member = member.clone();
    of_no_member.operator = "nobody".into();
    for change in [
        Change::AdmitNode {
            node: with_operator_key,
        },
        Change::AdmitNode { node: of_no_member },
        Change::RetireNode {
            node_key: OperatorKey::generate().id(),
        },
    ] {
        let refused = c
            .client(0)
            .submit(&c.govern(0, change))
            .await
            .expect_err("refused");
        assert_eq!(refused.status(), Some(422), "{refused}");
    }

    // The new node starts on the genesis alone: it is in no committee, so it orders nothing
    // and says so.
    c.start_node(new).await;
    let spend = c.spend(&c.relay_a, mint_tokens(&c.secret, "issuer", 2));
    let (status, body) = Http::new(&c.base(new)).post("/v1/entries", &spend).await;
    assert_eq!(status.as_u16(), 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not in the committee")),
        "{body}"
    );

    // Admitted: it catches up, and from the next session a request given to it alone is
    // ordered, and answered with its own signature.
    let admit = c.govern(
        0,
        Change::AdmitNode {
            node: member.clone(),
        },
    );
    submit_until_applied(&c.client(0), &admit).await;
    // The client's answer needs only f + 1 nodes to have applied it; node 0 may be behind.
    c.agreed_head_within(Duration::from_secs(30)).await;
    let (_, info) = Http::new(&c.base(0)).get("/v1/info").await;
    let info: LedgerInfo = serde_json::from_value(info).expect("info");
    assert_eq!(info.committee.len(), 5, "the info lists the new committee");
    assert_eq!(info.committee[4], member);
    let signer = ordered_through_node_alone(&c, new, &spend, Duration::from_secs(60)).await;
    assert!(signer.is_none_or(|s| s == member.node_key), "{signer:?}");
    let head = c.agreed_head_within(Duration::from_secs(30)).await;

    // Retire node 0. Once that governs, nodes 0 and 1 down leave 3 of the 4 nodes the
    // committee has: enough (n - f = 3). Under the old committee of five, 3 would be short
    // of the n - f = 4 AlephBFT needs.
    let retired = c.genesis.committee[0].node_key;
    let retire = c.govern(1, Change::RetireNode { node_key: retired });
    submit_until_applied(&c.client(2), &retire).await;
    let started = Instant::now();
    loop {
        let fresh = c.spend(&c.relay_b, mint_tokens(&c.secret, "issuer", 1));
        let (status, body) = Http::new(&c.base(0)).post("/v1/entries", &fresh).await;
        if status.as_u16() == 503
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("not in the committee"))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the retired node still orders: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    c.stop_node(0).await;
    c.stop_node(1).await;
    // A client that learned the committee before the changes follows them.
    let client = c
        .client(2)
        .refreshing_committee_every(Duration::from_millis(1));
    let _ = client.info().await.expect("info");
    let last = c.spend(&c.relay_b, mint_tokens(&c.secret, "issuer", 3));
    submit_until_applied(&client, &last).await;

    // The first session of the four-node committee certifies the head the five-node one
    // ended at, with three votes. Every node's log is the same, and the audit verifies the
    // certificates across the change, each against the committee of its session.
    let started = Instant::now();
    let log = loop {
        let after = c.agreed_head_within(Duration::from_secs(30)).await;
        assert!(after.0 > head.0);
        let log = c.log(new).await;
        let certified = log
            .iter()
            .filter(|e| e.body.kind_name() == "certificate")
            .count();
        if certified >= 2 {
            break log;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the four-node committee certified nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let kinds: Vec<&str> = log.iter().map(|e| e.body.kind_name()).collect();
    assert!(kinds.contains(&"node_admitted") && kinds.contains(&"node_retired"));
    let certificates = kinds.iter().filter(|k| **k == "certificate").count();
    let report = scrip_ledger::audit::audit(&log).expect("the audit passes");
    assert_eq!(report.checkpoints as usize, certificates);
    assert_eq!(c.log(2).await, log);
    for i in 2..c.nodes.len() {
        c.stop_node(i).await;
    }

    // The committee is derived state: a database whose committee was edited back to the
    // genesis's is refused at start, naming it.
    let pool = sqlx::SqlitePool::connect(&c.nodes[2].db.url)
        .await
        .expect("the node's database");
    sqlx::query("DELETE FROM meta WHERE name = 'committee'")
        .execute(&pool)
        .await
        .expect("tamper");
    pool.close().await;
    let store = scrip_ledger::connect(&c.nodes[2].db.url)
        .await
        .expect("store");
    let refused = scrip_ledger::Ledger::open(store, OperatorKey::from_seed(&c.nodes[2].key_seed))
        .await
        .expect_err("a tampered committee");
    assert!(refused.to_string().contains("committee"), "{refused}");
}

#[tokio::test]
async fn a_one_node_ledger_has_no_committee_to_change() {
    let db = TestDb::sqlite();
    let admin = OperatorKey::generate();
    let ledger = scrip_testkit::TestLedger::start(
        db,
        "solo",
        vec![scrip_testkit::member(
            "admin",
            &admin,
            &[scrip_spec::ledger::Role::Admin],
        )],
    )
    .await;
    let proposal = Proposal {
        ledger_id: ledger.ledger_id,
        governance_seq: 0,
        change: Change::AdmitNode {
            node: CommitteeMember {
                operator: "admin".into(),
                node_key: OperatorKey::generate().id(),
                peer_address: "127.0.0.1:1".into(),
                api_url: "http://127.0.0.1:2".into(),
            },
        },
    };
    let approvals = vec![Approval::sign(&admin, &proposal)];
    let request = admin.sign(LedgerRequest::new(
        ledger.ledger_id,
        now(),
        Action::Govern {
            proposal,
            approvals,
        },
    ));
    let refused = ledger.ledger.submit(request).await.expect_err("refused");
    assert!(refused.to_string().contains("no committee"), "{refused}");
    assert!(ledger.ledger.view().latest_committee().is_empty());
}
