//! A committee of four ledger nodes in process, on loopback: the nodes order the requests
//! with AlephBFT over real TCP, each applies them to its own database (SQLite, or for some
//! nodes PostgreSQL), and clients take an answer only from f + 1 = 2 matching signed receipts.

use scrip_common::clients::LedgerClient;
use scrip_ledger::node::NodeSettings;
use scrip_ledger::{Application, Ledger};
use scrip_spec::api::ledger::SpendStatus;
use scrip_spec::committee::CommitteeMember;
use scrip_spec::ledger::{Action, Genesis, Hash32, LedgerRequest, OperatorInfo, Role, SpendGroup};
use scrip_spec::{Catalog, OperatorKey, Signed, Token, TokenKeyInfo, TokenSecretKey, now};
use scrip_testkit::{Backend, TestDb, free_port, key_info, mint_tokens};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

mod catch_up;
mod lost_backup;
mod membership;
mod partition;
mod pruning;

struct TestNode {
    key_seed: [u8; 32],
    db: TestDb,
    consensus: tempfile::TempDir,
    api_port: u16,
    /// Where the node listens for its peers; the genesis names its proxy's port.
    peer_port: u16,
    ledger: Option<Arc<Ledger>>,
    /// Started with `first_start` (a node whose key never took part).
    first_start: bool,
    /// Started with these `catch_up_from` URLs.
    catch_up_from: Vec<String>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestNode {
    /// A node with a fresh key, consensus directory and ports on `db`, not started.
    fn new(db: TestDb) -> (Self, OperatorKey) {
        let key = OperatorKey::generate();
        let node = TestNode {
            key_seed: *key.seed(),
            db,
            consensus: tempfile::tempdir().expect("tempdir"),
            api_port: free_port(),
            peer_port: free_port(),
            ledger: None,
            first_start: false,
            catch_up_from: Vec::new(),
            stop: None,
            done: None,
        };
        (node, key)
    }
}

struct Committee {
    session_rounds: u16,
    nodes: Vec<TestNode>,
    /// Between every node and its peers: cuts links to make partitions.
    partition: Arc<partition::Partition>,
    genesis: Genesis,
    issuer: OperatorKey,
    relay_a: OperatorKey,
    relay_b: OperatorKey,
    secret: TokenSecretKey,
    key: TokenKeyInfo,
}

impl Committee {
    async fn start(n: usize) -> Self {
        Self::start_with(n, 20_000).await
    }

    /// With sessions of `session_rounds` rounds (50 ms each).
    async fn start_with(n: usize, session_rounds: u16) -> Self {
        Self::start_configured(
            n,
            session_rounds,
            scrip_spec::ledger::DEFAULT_MIN_REDEEM_WINDOW,
        )
        .await
    }

    /// With sessions of `session_rounds` rounds and the genesis's `min_redeem_window`.
    async fn start_configured(n: usize, session_rounds: u16, min_redeem_window: u64) -> Self {
        Self::start_on(&vec![Backend::Sqlite; n], session_rounds, min_redeem_window).await
    }

    /// One node on each of `backends`.
    async fn start_on(backends: &[Backend], session_rounds: u16, min_redeem_window: u64) -> Self {
        let n = backends.len();
        // RUST_LOG=info shows what the nodes do.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (issuer, relay_a, relay_b) = (
            OperatorKey::generate(),
            OperatorKey::generate(),
            OperatorKey::generate(),
        );
        let member = |name: &str, key: &OperatorKey, roles: &[Role]| OperatorInfo {
            name: name.into(),
            id: key.id(),
            roles: roles.to_vec(),
        };
        let operators = vec![
            member("issuer", &issuer, &[Role::Issuer]),
            // relay-a is also the consortium's one admin (governance needs a quorum of one).
            member("relay-a", &relay_a, &[Role::Redeemer, Role::Admin]),
            member("relay-b", &relay_b, &[Role::Redeemer]),
        ];
        let mut nodes = Vec::new();
        let mut committee = Vec::new();
        let partition = partition::Partition::new();
        for (i, backend) in backends.iter().enumerate() {
            let db = TestDb::new(*backend, "scrip_committee")
                .await
                .expect("a fresh database");
            let (node, key) = TestNode::new(db);
            let proxy = partition.proxy(i, node.peer_port).await;
            committee.push(CommitteeMember {
                operator: ["issuer", "relay-a", "relay-b"][i % 3].into(),
                node_key: key.id(),
                peer_address: proxy,
                api_url: format!("http://127.0.0.1:{}", node.api_port),
            });
            nodes.push(node);
        }
        let genesis = Genesis {
            ledger_name: "committee test".into(),
            ledger_key: scrip_spec::OperatorId([0; 32]),
            created_at: now(),
            operators,
            catalog: Catalog::standard(),
            admin_quorum: None,
            min_redeem_window,
            committee,
        };
        for node in &nodes {
            let store = scrip_ledger::connect(&node.db.url).await.expect("store");
            Ledger::init(
                store,
                OperatorKey::from_seed(&node.key_seed),
                genesis.clone(),
            )
            .await
            .expect("genesis");
        }
        let secret = TokenSecretKey::generate().expect("keygen");
        let key = key_info(secret.public_key(), "issuer", "queue", 1);
        partition.name_nodes(genesis.committee.iter().map(|m| m.node_key).collect());
        let mut c = Self {
            session_rounds,
            nodes,
            partition,
            genesis,
            issuer,
            relay_a,
            relay_b,
            secret,
            key,
        };
        for i in 0..n {
            c.start_node(i).await;
        }
        c
    }

    async fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let store = scrip_ledger::connect(&node.db.url).await.expect("store");
        let ledger = Arc::new(
            Ledger::open(store, OperatorKey::from_seed(&node.key_seed))
                .await
                .expect("open"),
        );
        let settings = NodeSettings {
            peer_listen: format!("127.0.0.1:{}", node.peer_port)
                .parse()
                .expect("addr"),
            consensus_dir: node.consensus.path().to_owned(),
            unit_delay: Duration::from_millis(50),
            session_rounds: self.session_rounds,
            order_wait: Duration::from_secs(5),
            first_start: node.first_start,
            catch_up_from: node.catch_up_from.clone(),
        };
        let listen = format!("127.0.0.1:{}", node.api_port)
            .parse()
            .expect("addr");
        let mut app = None;
        // A restarted node's ports may take a moment to be free again.
        for _ in 0..50 {
            match Application::from_node(
                ledger.clone(),
                Arc::new(OperatorKey::from_seed(&node.key_seed)),
                listen,
                settings.clone(),
            )
            .await
            {
                Ok(a) => {
                    app = Some(a);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let app = app.expect("the node starts");
        let (stop, stopped) = oneshot::channel::<()>();
        node.done = Some(tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        })));
        node.stop = Some(stop);
        node.ledger = Some(ledger);
    }

    async fn stop_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(stop) = node.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = node.done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), done).await;
        }
        node.ledger = None;
    }

    /// Node `i`'s whole log (it must be running).
    async fn log(&self, i: usize) -> Vec<scrip_spec::ledger::LogEntry> {
        self.nodes[i]
            .ledger
            .as_ref()
            .expect("up")
            .entries(0, 1000)
            .await
            .expect("log")
    }

    fn client(&self, i: usize) -> LedgerClient {
        LedgerClient::with_timeout(
            &format!("http://127.0.0.1:{}", self.nodes[i].api_port),
            Duration::from_secs(10),
        )
    }

    fn ledger_id(&self) -> Hash32 {
        self.genesis.ledger_id()
    }

    fn request(&self, by: &OperatorKey, action: Action) -> Signed<LedgerRequest> {
        by.sign(LedgerRequest::new(self.ledger_id(), now(), action))
    }

    fn spend(&self, by: &OperatorKey, tokens: Vec<Token>) -> Signed<LedgerRequest> {
        self.request(
            by,
            Action::Spend {
                groups: vec![SpendGroup {
                    token_key_id: self.key.public_key.id(),
                    tokens,
                }],
            },
        )
    }

    /// The heads of the running nodes once they agree (or panics after a while).
    async fn agreed_head(&self) -> (u64, Hash32) {
        self.agreed_head_within(Duration::from_secs(10)).await
    }

    async fn agreed_head_within(&self, wait: Duration) -> (u64, Hash32) {
        let mut last = Vec::new();
        for _ in 0..wait.as_millis() / 50 {
            last = self
                .nodes
                .iter()
                .filter_map(|n| n.ledger.as_ref())
                .map(|l| l.view().head)
                .collect::<Vec<_>>();
            if last.windows(2).all(|w| w[0] == w[1]) {
                return last[0];
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the nodes' heads never agreed: {last:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_nodes_apply_spends_from_two_redeemers_into_one_log() {
    spends_from_two_redeemers_make_one_log(Committee::start(4).await).await;
}

/// Operators choose their own database: two nodes on PostgreSQL and two on SQLite hold the
/// same log, the same spent set and the same answers, entry for entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs SCRIP_TEST_PG_URL"]
async fn nodes_on_sqlite_and_postgresql_make_one_log() {
    use Backend::{Postgres, Sqlite};
    let c = Committee::start_on(
        &[Sqlite, Postgres, Sqlite, Postgres],
        20_000,
        scrip_spec::ledger::DEFAULT_MIN_REDEEM_WINDOW,
    )
    .await;
    spends_from_two_redeemers_make_one_log(c).await;
}

/// Two redeemers spend at once through different nodes, one token through both: every node
/// ends with the same log, totals, spent set and prefix answers, and each node's database
/// passes the check a restart makes.
async fn spends_from_two_redeemers_make_one_log(mut c: Committee) {
    let announce = c.request(&c.issuer, Action::AnnounceKey { key: c.key.clone() });
    let receipt = c.client(0).submit(&announce).await.expect("announced");
    let attestation = receipt.attestation.expect("a node signed the receipt");
    assert_eq!(receipt.seq, Some(1));
    assert!(
        c.genesis
            .committee
            .iter()
            .any(|m| m.node_key == attestation.node)
    );

    // Two redeemers spend at once through different nodes; one token is spent by both.
    let tokens = mint_tokens(&c.secret, "issuer", 41);
    let shared = tokens[40].clone();
    let (a_client, b_client) = (c.client(1), c.client(2));
    let mut a_batches = Vec::new();
    let mut b_batches = Vec::new();
    for i in 0..4 {
        let mut a = tokens[i * 10..i * 10 + 5].to_vec();
        let mut b = tokens[i * 10 + 5..i * 10 + 10].to_vec();
        if i == 3 {
            a.push(shared.clone());
            b.push(shared.clone());
        }
        a_batches.push(c.spend(&c.relay_a, a));
        b_batches.push(c.spend(&c.relay_b, b));
    }
    let a_run = async {
        let mut out = Vec::new();
        for r in &a_batches {
            out.push(a_client.submit(r).await.expect("relay-a's spend"));
        }
        out
    };
    let b_run = async {
        let mut out = Vec::new();
        for r in &b_batches {
            out.push(b_client.submit(r).await.expect("relay-b's spend"));
        }
        out
    };
    let (a_receipts, b_receipts) = tokio::join!(a_run, b_run);
    let statuses: Vec<&SpendStatus> = a_receipts
        .iter()
        .chain(&b_receipts)
        .flat_map(|r| r.spends.iter().map(|s| &s.status))
        .collect();
    let accepted = statuses
        .iter()
        .filter(|s| ***s == SpendStatus::Accepted)
        .count();
    let already = statuses
        .iter()
        .filter(|s| matches!(s, SpendStatus::AlreadySpent { .. }))
        .count();
    assert_eq!(
        (accepted, already),
        (41, 1),
        "the shared token is spent once"
    );

    let head = c.agreed_head().await;
    assert_eq!(head.0, 9, "genesis, the key and eight spend batches");
    // Every node holds every token, recorded at the same agreed time, entry for entry.
    let logs: Vec<Vec<scrip_spec::ledger::LogEntry>> =
        futures_all(c.nodes.iter().map(|n| n.ledger.clone().expect("running"))).await;
    for log in &logs[1..] {
        assert_eq!(log, &logs[0]);
    }
    assert!(
        logs[0][1..].iter().all(|e| e.ordered.is_some()),
        "every entry names its place in the order"
    );
    for node in &c.nodes {
        let totals = node
            .ledger
            .as_ref()
            .expect("running")
            .totals()
            .await
            .expect("totals");
        assert_eq!(totals.keys[0].spent, 41);
    }
    let ledgers: Vec<Arc<Ledger>> = c.nodes.iter().filter_map(|n| n.ledger.clone()).collect();
    let prefix = scrip_spec::api::ledger::NullifierPrefix::of(&shared.nullifier(), 1);
    let mut answers = Vec::new();
    for ledger in &ledgers {
        let store = ledger.store();
        let (rows, complete) = ledger.spent_with_prefix(&prefix).await.expect("prefix");
        assert!(complete);
        let rows: Vec<_> = rows.into_iter().map(|(n, first, _)| (n, first)).collect();
        assert!(rows.iter().any(|(n, _)| *n == shared.nullifier()));
        answers.push((store.spent_set().await.expect("spent set"), rows));
        scrip_ledger::audit::check_store(&**store, None)
            .await
            .expect("the database matches its log");
    }
    assert_eq!(answers[0].0.len(), 41);
    for answer in &answers[1..] {
        assert_eq!(answer, &answers[0]);
    }

    // A replayed request is not applied twice, whichever node it reaches.
    let again = c.client(3).submit(&a_batches[0]).await;
    assert!(again.is_err(), "{again:?}");
    assert_eq!(c.agreed_head().await, head);

    for i in 0..4 {
        c.stop_node(i).await;
    }
}

async fn futures_all(
    ledgers: impl Iterator<Item = Arc<Ledger>>,
) -> Vec<Vec<scrip_spec::ledger::LogEntry>> {
    let mut out = Vec::new();
    for l in ledgers {
        out.push(l.entries(0, 1000).await.expect("log"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_of_four_down_nothing_commits_and_one_back_resumes() {
    let mut c = Committee::start(4).await;
    let announce = c.request(&c.issuer, Action::AnnounceKey { key: c.key.clone() });
    c.client(0).submit(&announce).await.expect("announced");
    let head = c.agreed_head().await;

    c.stop_node(2).await;
    c.stop_node(3).await;
    let tokens = mint_tokens(&c.secret, "issuer", 3);
    let spend = c.spend(&c.relay_a, tokens.clone());
    let refused = c
        .client(0)
        .submit(&spend)
        .await
        .expect_err("no quorum of nodes");
    assert_eq!(refused.status(), Some(503), "{refused}");
    assert_eq!(
        c.nodes[0].ledger.as_ref().expect("up").view().head,
        head,
        "nothing committed"
    );
    assert_eq!(c.nodes[1].ledger.as_ref().expect("up").view().head, head);

    // One node back: three of four can order again; the pending spend lands once.
    c.start_node(2).await;
    let mut landed = None;
    for _ in 0..20 {
        match c.client(0).submit(&spend).await {
            Ok(receipt) => {
                landed = Some(receipt);
                break;
            }
            Err(e) if e.status() == Some(409) => break,
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let up: Vec<usize> = vec![0, 1, 2];
    let heads: Vec<_> = {
        let mut h = Vec::new();
        for _ in 0..200 {
            h = up
                .iter()
                .map(|i| c.nodes[*i].ledger.as_ref().expect("up").view().head)
                .collect::<Vec<_>>();
            if h.windows(2).all(|w| w[0] == w[1]) && h[0].0 == head.0 + 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        h
    };
    assert!(
        heads.iter().all(|h| h.0 == head.0 + 1),
        "the spend landed once on every running node: {heads:?} ({landed:?})"
    );
    assert!(heads.windows(2).all(|w| w[0] == w[1]));
    for i in [0, 1, 2] {
        c.stop_node(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_two_two_partition_commits_nothing_and_heals() {
    let mut c = Committee::start(4).await;
    let announce = c.request(&c.issuer, Action::AnnounceKey { key: c.key.clone() });
    c.client(0).submit(&announce).await.expect("announced");
    let head = c.agreed_head().await;

    c.partition.split(&[0, 1], &[2, 3]);
    let tokens = mint_tokens(&c.secret, "issuer", 4);
    let spend = c.spend(&c.relay_a, tokens);
    let refused = c
        .client(0)
        .submit(&spend)
        .await
        .expect_err("neither half has 2f+1 nodes");
    assert_eq!(refused.status(), Some(503), "{refused}");
    for node in &c.nodes {
        assert_eq!(
            node.ledger.as_ref().expect("up").view().head,
            head,
            "no half commits"
        );
    }

    c.partition.heal();
    let mut landed = false;
    for _ in 0..30 {
        match c.client(0).submit(&spend).await {
            Ok(_) => {
                landed = true;
                break;
            }
            Err(e) if e.status() == Some(409) => {
                landed = true;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    assert!(landed, "the committee goes on once the partition heals");
    assert_eq!(
        c.agreed_head().await.0,
        head.0 + 1,
        "the spend is applied once"
    );
    for i in 0..4 {
        c.stop_node(i).await;
    }
}

/// Node 3 lies: whatever it is sent, it answers a receipt saying every token was accepted,
/// properly signed with its node key.
async fn serve_a_lying_node(c: &mut Committee) {
    use axum::routing::post;
    c.stop_node(3).await;
    let key = Arc::new(OperatorKey::from_seed(&c.nodes[3].key_seed));
    let ledger_id = c.ledger_id();
    use scrip_spec::api::ledger::{KeyDirectory, NullifierStatus};
    // The honest info with every price cut to one credit, relay-b struck from the members,
    // governance further on than it is, and a latest committee whose every node is the liar.
    let mut info = c.nodes[0].ledger.as_ref().expect("up").info().await;
    for entry in &mut info.catalog.entries {
        entry.price = 1;
    }
    info.operators.retain(|o| o.name != "relay-b");
    info.governance_seq += 5;
    let liar_url = format!("http://127.0.0.1:{}", c.nodes[3].api_port);
    info.committee = c.genesis.committee.clone();
    for member in &mut info.committee {
        member.api_url = liar_url.clone();
    }
    let lie = axum::Router::new()
        .route(
            "/v1/info",
            axum::routing::get(move || {
                let info = info.clone();
                async move { axum::Json(info) }
            }),
        )
        .route(
            "/v1/keys",
            axum::routing::get(|| async { axum::Json(KeyDirectory { keys: vec![] }) }),
        )
        .route(
            "/v1/nullifiers/{n}",
            axum::routing::get(|| async { axum::Json(NullifierStatus::Unspent) }),
        )
        // A log that ends before whatever is asked for.
        .route(
            "/v1/log",
            axum::routing::get(|| async {
                axum::Json(scrip_spec::api::ledger::LogPage {
                    entries: vec![],
                    next: None,
                })
            }),
        )
        .route(
            "/v1/entries",
            post(
                move |axum::Json(signed): axum::Json<Signed<LedgerRequest>>| {
                    let key = key.clone();
                    async move {
                        use scrip_spec::api::ledger::{Receipt, SpendResult};
                        use scrip_spec::committee::{NodeAttestation, ReceiptStatement};
                        let Action::Spend { groups } = &signed.payload.action else {
                            return axum::Json(Receipt {
                                seq: Some(99),
                                entry_hash: Some(Hash32([9; 32])),
                                spends: vec![],
                                attestation: None,
                            });
                        };
                        let spends: Vec<SpendResult> = groups
                            .iter()
                            .flat_map(|g| g.nullifiers())
                            .map(|nullifier| SpendResult {
                                nullifier,
                                status: SpendStatus::Accepted,
                            })
                            .collect();
                        let request = Hash32(scrip_spec::ledger::request_digest(&signed));
                        let statement = ReceiptStatement {
                            ledger_id,
                            request,
                            seq: Some(99),
                            entry_hash: Some(Hash32([9; 32])),
                            spends: spends.clone(),
                        };
                        axum::Json(Receipt {
                            seq: Some(99),
                            entry_hash: Some(Hash32([9; 32])),
                            spends,
                            attestation: Some(NodeAttestation {
                                node: key.id(),
                                request,
                                signature: key.sign_detached(&statement),
                            }),
                        })
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", c.nodes[3].api_port))
        .await
        .expect("node 3's port");
    tokio::spawn(async move { axum::serve(listener, lie).await });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lying_node_alone_never_makes_a_client_accept_a_spend() {
    let mut c = Committee::start(4).await;
    let announce = c.request(&c.issuer, Action::AnnounceKey { key: c.key.clone() });
    c.client(0).submit(&announce).await.expect("announced");
    let token = mint_tokens(&c.secret, "issuer", 1).remove(0);
    let first = c
        .client(0)
        .submit(&c.spend(&c.relay_a, vec![token.clone()]))
        .await
        .expect("spent");
    assert_eq!(first.spends[0].status, SpendStatus::Accepted);
    serve_a_lying_node(&mut c).await;

    // The same token again: the liar signs "accepted", the three honest nodes say spent.
    let again = c
        .client(0)
        .submit(&c.spend(&c.relay_b, vec![token.clone()]))
        .await
        .expect("an answer");
    assert!(
        matches!(again.spends[0].status, SpendStatus::AlreadySpent { .. }),
        "the client took the liar's word: {again:?}"
    );
    assert_ne!(
        again.attestation.as_ref().map(|a| a.node),
        Some(c.genesis.committee[3].node_key)
    );
    // Its reads are outvoted too: it hides the key directory and calls the token unspent.
    let keys = c
        .client(0)
        .keys(Some("issuer"), None)
        .await
        .expect("the directory");
    assert_eq!(keys.len(), 1, "the honest nodes' directory");
    let status = c
        .client(0)
        .nullifier(&token.nullifier())
        .await
        .expect("a status");
    assert!(
        matches!(
            status,
            scrip_spec::api::ledger::NullifierStatus::Spent { .. }
        ),
        "{status:?}"
    );

    // Its cheap catalog is outvoted.
    let catalog = c.client(0).catalog().await.expect("f + 1 nodes agree");
    assert_eq!(catalog, c.genesis.catalog, "the honest nodes' prices");

    // A client configured with the liar's address does not take the committee it names (every
    // node the liar), nor its members, governance or prices: it asks the genesis's nodes.
    let through_liar = c.client(3);
    let keys = through_liar
        .keys(Some("issuer"), None)
        .await
        .expect("the directory");
    assert_eq!(keys.len(), 1, "the honest nodes' directory, not the liar's");
    let honest = c.nodes[0].ledger.as_ref().expect("up").info().await;
    let info = through_liar.agreed_info().await.expect("f + 1 nodes agree");
    assert_eq!(info.governance_seq, honest.governance_seq);
    assert_eq!(info.operators, honest.operators);
    assert_eq!(info.catalog, c.genesis.catalog);
    scrip_common::clients::member_info(
        &through_liar,
        &c.relay_b,
        "relay-b",
        Some(scrip_spec::ledger::Role::Redeemer),
    )
    .await
    .expect("relay-b is a member, whatever the liar says");

    // It serves a log cut short; an auditor confirming the head it read gets the honest
    // nodes' entry.
    let head = c.nodes[0].ledger.as_ref().expect("up").view().head;
    let entry = c
        .client(0)
        .agreed_entry(head.0)
        .await
        .expect("f + 1 nodes hold it")
        .expect("the log reaches it");
    assert_eq!(entry.hash(), head.1);

    // With two honest nodes down the liar and one honest node disagree: no answer at all.
    c.stop_node(1).await;
    c.stop_node(2).await;
    let unconfirmed = c.client(0).agreed_entry(head.0).await;
    assert!(unconfirmed.is_err(), "{unconfirmed:?}");
    let unpriced = c.client(0).catalog().await;
    assert!(unpriced.is_err(), "{unpriced:?}");
    let fresh = mint_tokens(&c.secret, "issuer", 1);
    let outcome = c.client(0).submit(&c.spend(&c.relay_b, fresh)).await;
    let err = outcome.expect_err("one signed receipt is not enough");
    assert_eq!(err.status(), Some(503), "{err}");
    c.stop_node(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_down_while_sessions_end_catches_up_from_its_peers() {
    // Sessions of 40 rounds: about two seconds each.
    let mut c = Committee::start_with(4, 40).await;
    let announce = c.request(&c.issuer, Action::AnnounceKey { key: c.key.clone() });
    c.client(0).submit(&announce).await.expect("announced");
    c.agreed_head().await;

    c.stop_node(3).await;
    let tokens = mint_tokens(&c.secret, "issuer", 30);
    for chunk in tokens.chunks(5) {
        // A request waiting at a session's end is ordered in the next one: retried, as a
        // redeemer retries a 503.
        submit_until_applied(&c.client(0), &c.spend(&c.relay_a, chunk.to_vec())).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let sessions: Vec<u64> = {
        let info = c.client(0).info().await.expect("info");
        vec![info.session.expect("a committee node says its session")]
    };
    assert!(
        sessions[0] >= 2,
        "sessions ended while node 3 was down: {sessions:?}"
    );

    // Node 3 comes back in its old session, finds the others past it, and catches up.
    c.start_node(3).await;
    let head = c.agreed_head_within(Duration::from_secs(60)).await;
    let log = c.nodes[3]
        .ledger
        .as_ref()
        .expect("up")
        .entries(0, 1000)
        .await
        .expect("log");
    let kinds: Vec<&str> = log.iter().map(|e| e.body.kind_name()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "tokens_spent").count(),
        6,
        "every spend, once: {kinds:?}"
    );
    // Sessions that changed the log end with a certificate of 2f+1 nodes, in the log, and
    // the audit of the node that caught up verifies them.
    let certificates = kinds.iter().filter(|k| **k == "certificate").count();
    assert!(certificates >= 1, "{kinds:?}");
    let report = scrip_ledger::audit::audit(&log).expect("the audit passes");
    assert_eq!(
        report.checkpoints as usize, certificates,
        "every certificate verified"
    );
    // It takes part again: with node 0 down, nodes 1, 2 and 3 still order.
    c.stop_node(0).await;
    let more = mint_tokens(&c.secret, "issuer", 2);
    submit_until_applied(&c.client(1), &c.spend(&c.relay_b, more)).await;
    let after = c.agreed_head_within(Duration::from_secs(30)).await;
    assert!(after.0 > head.0);
    let log = c.nodes[3]
        .ledger
        .as_ref()
        .expect("up")
        .entries(0, 1000)
        .await
        .expect("log");
    let spends = log
        .iter()
        .filter(|e| e.body.kind_name() == "tokens_spent")
        .count();
    assert_eq!(spends, 7, "nodes 1, 2 and 3 ordered it once");
    scrip_ledger::audit::audit(&log).expect("the audit passes");
    for i in 1..4 {
        c.stop_node(i).await;
    }
}

/// Submits `request` until the committee answers its outcome (409: an earlier try landed).
pub(crate) async fn submit_until_applied(client: &LedgerClient, request: &Signed<LedgerRequest>) {
    for _ in 0..40 {
        match client.submit(request).await {
            Ok(_) => return,
            Err(e) if e.status() == Some(409) => return,
            Err(e) if e.status() == Some(503) => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Err(e) => panic!("refused: {e}"),
        }
    }
    panic!("the committee never ordered the request");
}
