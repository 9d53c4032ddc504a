//! A node of a committee ledger: AlephBFT orders the signed requests the nodes are given, and
//! every node applies the ordered requests with [`Ledger::apply_ordered`], at the time they
//! agree on, so every honest node holds the same log (PROTOCOL.md section 11).
//!
//! A request reaches a node through [`Node::submit`]; the node checks what needs no order
//! (signature, membership, ledger), puts the request in its [`Pool`] and waits until some
//! node's copy is ordered and applied, then answers its own signed receipt. A request sent to
//! several nodes is ordered several times and applied once (the log holds a request at most
//! once). Consensus runs in sessions of a fixed number of rounds; the session's units are
//! backed up to disk before they are sent, so a node killed at any moment rejoins its session
//! without signing two units for one round, and skips what its log already holds.

mod backup;
mod catch_up;
mod keychain;
mod network;
mod order;

pub use order::{AgreedTime, Pool, UnitData, Vote};

use crate::rules::Refusal;
use crate::service::{Ledger, LedgerError};
use aleph_bft::{NodeIndex, OrderedUnit, Recipient, SignatureSet, Terminator};
use futures::channel::oneshot as exit_channel;
use keychain::{NodeKeychain, NodeSignature};
use network::{Identity, PeerNetwork};
use order::{Proposing, Sha256Hasher};
use scrip_spec::api::ledger::Receipt;
use scrip_spec::committee::{
    Certificate, CertificateSignature, CertifiedHead, CommitteeMember, OrderedAt,
};
use scrip_spec::encoding::{canonical_bytes, from_canonical_bytes};
use scrip_spec::ledger::{EntryBody, LedgerRequest, request_digest};
use scrip_spec::{OperatorKey, Signed};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

type NetMessage =
    aleph_bft::NetworkData<Sha256Hasher, UnitData, NodeSignature, SignatureSet<NodeSignature>>;
type Outcome = Result<Receipt, Refusal>;
/// A committee and the transport among its nodes.
type CommitteeNetwork = (Vec<CommitteeMember>, Arc<PeerNetwork<NetMessage>>);
/// Who waits for which request's outcome, by digest.
type Waiters = Arc<Mutex<HashMap<[u8; 32], Vec<oneshot::Sender<Outcome>>>>>;

/// How a node runs its part of the consensus.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Where the other nodes connect.
    pub peer_listen: SocketAddr,
    /// Where the consensus backup lives (one file per session).
    pub consensus_dir: PathBuf,
    /// Time between this node's units: a request waits about three of these to be ordered.
    pub unit_delay: Duration,
    /// Rounds per session.
    pub session_rounds: u16,
    /// How long [`Node::submit`] waits for its request to be ordered.
    pub order_wait: Duration,
    /// Whether this is the first start of a node whose key never took part: only then does
    /// a node whose database never ran a session take part in a session after one whose
    /// committee held its key.
    pub first_start: bool,
    /// Nodes to catch up from when most of the session's committee is gone: any nodes of the
    /// ledger (their API URLs), trusted for nothing; what they serve is applied only under a
    /// certificate of the committee.
    pub catch_up_from: Vec<String>,
}

/// One node of a committee ledger.
pub struct Node {
    ledger: Arc<Ledger>,
    pool: Arc<Pool>,
    waiters: Waiters,
    order_wait: Duration,
    stop: watch::Sender<bool>,
    driver: Mutex<Option<tokio::task::JoinHandle<()>>>,
    session: Arc<AtomicU64>,
    /// Whether this node is in the committee of its session (else it follows the log).
    member: Arc<AtomicBool>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("pool", &self.pool.len())
            .finish_non_exhaustive()
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The peer address is taken or invalid.
    #[error("cannot listen for the other nodes on {address}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The consensus backup could not be read.
    #[error("cannot read the consensus backup in {dir}")]
    Backup {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A session was to run without this node in its committee (a bug: such a node follows).
    #[error("this node is not in the committee of session {session}")]
    NotAMember {
        /// The session.
        session: u64,
    },
    /// The ledger's log could not be read.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl Node {
    /// Starts the node of `key` for `ledger`: listens for the other nodes, dials them, and
    /// runs consensus sessions until [`Node::shutdown`].
    pub async fn start(
        ledger: Arc<Ledger>,
        key: Arc<OperatorKey>,
        settings: NodeSettings,
    ) -> Result<Arc<Self>, NodeError> {
        let listener = tokio::net::TcpListener::bind(settings.peer_listen)
            .await
            .map_err(|source| NodeError::Listen {
                address: settings.peer_listen,
                source,
            })?;
        Self::start_on(ledger, key, settings, listener).await
    }

    /// [`Node::start`] with the peer listener already bound (`settings.peer_listen` is then
    /// not used).
    pub async fn start_on(
        ledger: Arc<Ledger>,
        key: Arc<OperatorKey>,
        settings: NodeSettings,
        listener: tokio::net::TcpListener,
    ) -> Result<Arc<Self>, NodeError> {
        std::fs::create_dir_all(&settings.consensus_dir).map_err(|source| NodeError::Backup {
            dir: settings.consensus_dir.clone(),
            source,
        })?;
        let (stop, stop_rx) = watch::channel(false);
        // Until the driver has read where the log stands and set it for the session: a node
        // not yet admitted refuses requests from its first moment.
        let me = key.id();
        let member = ledger
            .view()
            .latest_committee()
            .iter()
            .any(|m| m.node_key == me);
        let node = Arc::new(Self {
            ledger: ledger.clone(),
            pool: Arc::new(Pool::default()),
            waiters: Arc::default(),
            order_wait: settings.order_wait,
            stop,
            driver: Mutex::new(None),
            session: Arc::default(),
            member: Arc::new(AtomicBool::new(member)),
        });
        let driver = Driver {
            key,
            listener: Arc::new(listener),
            network: Mutex::default(),
            session: node.session.clone(),
            member: node.member.clone(),
            ledger,
            pool: node.pool.clone(),
            waiters: node.waiters.clone(),
            settings,
        };
        let task = tokio::spawn(driver.run(stop_rx));
        *node.driver.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        Ok(node)
    }

    /// Puts `signed` up for ordering and waits for its outcome: this node's signed receipt,
    /// or the refusal every node reaches.
    pub async fn submit(&self, signed: Signed<LedgerRequest>) -> Result<Receipt, LedgerError> {
        if !self.member.load(Ordering::SeqCst) {
            return Err(LedgerError::NotInCommittee);
        }
        let digest = request_digest(&signed);
        if self.ledger.store().request_seq(&digest).await?.is_some() {
            return Err(Refusal::Replayed.into());
        }
        // What needs no order, so a bad request is refused at once and never proposed.
        self.ledger
            .view()
            .authenticate(&signed, self.ledger.now())?;
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(digest)
            .or_default()
            .push(tx);
        if !self.pool.insert(digest, canonical_bytes(&signed)) {
            self.forget_waiter(&digest);
            return Err(LedgerError::Busy);
        }
        match tokio::time::timeout(self.order_wait, rx).await {
            Ok(Ok(Ok(receipt))) => Ok(self.ledger.attest(digest, receipt)),
            Ok(Ok(Err(refusal))) => Err(refusal.into()),
            _ => {
                self.forget_waiter(&digest);
                Err(LedgerError::NotOrdered {
                    waited_secs: self.order_wait.as_secs(),
                })
            }
        }
    }

    fn forget_waiter(&self, digest: &[u8; 32]) {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = waiters.get_mut(digest) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                waiters.remove(digest);
            }
        }
    }

    /// The consensus session this node is in.
    pub fn session(&self) -> u64 {
        self.session.load(Ordering::SeqCst)
    }

    /// Requests waiting to be ordered.
    pub fn pending(&self) -> usize {
        self.pool.len()
    }

    /// Ends the current session and stops.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

struct Driver {
    key: Arc<OperatorKey>,
    listener: Arc<tokio::net::TcpListener>,
    /// The transport of the committee it was started for.
    network: Mutex<Option<CommitteeNetwork>>,
    session: Arc<AtomicU64>,
    member: Arc<AtomicBool>,
    ledger: Arc<Ledger>,
    pool: Arc<Pool>,
    waiters: Waiters,
    settings: NodeSettings,
}

enum SessionEnd {
    Finished,
    /// The other nodes are past this session: catch up from them.
    Behind,
    Stopped,
}

/// How often a node asks the others whether they are past its session.
const BEHIND_CHECK: Duration = Duration::from_secs(5);

impl Driver {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        // Where the log stands: the place in the order of its last ordered entry. A kill can
        // fall between two requests of one unit, so the place is per request.
        let (mut session, mut skip) = match self.last_position().await {
            Some(at) => (at.session, Some(at)),
            None => (0, None),
        };
        // The database records each session before the node signs a unit of it: a session
        // that ordered nothing yet leaves no entry to find it by.
        let recorded = match self.ledger.store().consensus_session().await {
            Ok(recorded) => recorded,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the consensus session from the database");
                None
            }
        };
        if let Some(recorded) = recorded
            && recorded > session
        {
            (session, skip) = (recorded, None);
        }
        // A node that signed units of this session and lost their backup could sign a second,
        // different unit for a round it already signed: it sits the session out.
        let sit_out = (recorded == Some(session)
            && !backup::path(&self.settings.consensus_dir, session).exists())
        .then_some(session);
        // A database that never ran a session is new: the node's first start, or one that
        // lost its database and its backup together and was set up again from the genesis.
        let mut never_ran = recorded.is_none();
        let me = self.key.id();
        loop {
            // Where the log stands says where to resume: a catch-up that failed part of the
            // way, or a session left early, may have applied entries since `skip` was set, and
            // running a session again from an older place would append its certificate twice.
            if let Some(at) = self.last_position().await
                && at.session >= session
            {
                (session, skip) = (at.session, Some(at));
            }
            // A membership change ordered in an earlier session governs this one.
            let committee = self.ledger.view().committee_for(session).to_vec();
            let peers = catch_up::Peers::new(&committee, me, &self.settings.catch_up_from);
            let member = committee.iter().any(|m| m.node_key == me);
            self.member.store(member, Ordering::SeqCst);
            self.session.store(session, Ordering::SeqCst);
            // Only a member whose database never ran a session is asked about its past.
            let fresh_member = member && never_ran;
            let took_part_before = fresh_member && session > 0 && {
                let view = self.ledger.view();
                (view.genesis.committee.iter())
                    .chain(view.committee_for(session - 1))
                    .any(|m| m.node_key == me)
            };
            let end = if took_part_before && !self.settings.first_start {
                tracing::error!(
                    session,
                    "this node's database never ran a consensus session, yet its key was in the \
                     committee of an earlier one: if it lost its database and consensus_dir, it \
                     may have signed units it no longer knows, and could sign two for one round. \
                     It follows the log and orders nothing. Bring it back under a new node key \
                     (`scrip operator propose admit-node`, then `retire-node` for this key), or, \
                     if this node never ran before, start it once with first_start = true"
                );
                Ok(self.follow(session, &peers, &mut stop).await)
            } else if fresh_member && peers.behind(session).await {
                // A session the others have left: a new database has nothing to sign in it,
                // and a lost one may have signed in it already.
                Ok(self.follow(session, &peers, &mut stop).await)
            } else if sit_out == Some(session) {
                tracing::warn!(
                    session,
                    dir = %self.settings.consensus_dir.display(),
                    "the consensus backup of this session is missing, yet the database says this \
                     node took part in it: sitting the session out, so as never to sign two units \
                     for one round (keep consensus_dir with the database)"
                );
                Ok(self.follow(session, &peers, &mut stop).await)
            } else if member {
                // The session is recorded before the first unit is signed.
                never_ran = false;
                self.run_session(session, skip, &committee, &peers, &mut stop)
                    .await
            } else {
                Ok(self.follow(session, &peers, &mut stop).await)
            };
            match end {
                Ok(SessionEnd::Finished) => {
                    backup::remove_before(&self.settings.consensus_dir, session);
                    session += 1;
                    skip = None;
                }
                Ok(SessionEnd::Behind) => match peers.catch_up(&self.ledger, session).await {
                    Ok((next, last)) => {
                        backup::remove_before(&self.settings.consensus_dir, next);
                        session = next;
                        skip = last;
                    }
                    Err(e) => {
                        tracing::warn!(session, error = %e, "catching up with the committee failed; trying again");
                    }
                },
                Ok(SessionEnd::Stopped) => return,
                Err(e) => {
                    tracing::error!(session, error = %e, "the consensus session could not start; retrying in 5 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }

    /// A node outside the session's committee (retired, or not yet admitted) orders
    /// nothing: it fetches the log from the committee once it is past this session.
    async fn follow(
        &self,
        session: u64,
        peers: &catch_up::Peers,
        stop: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        tracing::info!(
            session,
            "this node is not in the committee of this session; following the committee's log"
        );
        loop {
            tokio::select! {
                _ = tokio::time::sleep(BEHIND_CHECK) => {
                    if peers.behind(session).await {
                        return SessionEnd::Behind;
                    }
                }
                _ = stop.changed() => return SessionEnd::Stopped,
            }
        }
    }

    /// The transport among `committee`: the one already running if the committee is the
    /// same, else a new one on the same listener.
    fn network_for(&self, committee: &[CommitteeMember]) -> Arc<PeerNetwork<NetMessage>> {
        let mut cached = self.network.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((members, network)) = cached.as_ref()
            && members == committee
        {
            return network.clone();
        }
        // The old transport stops accepting before the new one starts.
        *cached = None;
        let network = PeerNetwork::start(
            Identity {
                ledger_id: self.ledger.view().ledger_id,
                key: self.key.clone(),
                nodes: committee
                    .iter()
                    .map(|m| (m.node_key, m.peer_address.clone()))
                    .collect(),
            },
            self.listener.clone(),
        );
        *cached = Some((committee.to_vec(), network.clone()));
        network
    }

    async fn last_position(&self) -> Option<OrderedAt> {
        let head = self.ledger.view().head.0;
        let entries = self.ledger.entries(head, 1).await.ok()?;
        entries.first().and_then(|e| e.ordered)
    }

    async fn run_session(
        &self,
        session: u64,
        skip: Option<OrderedAt>,
        committee: &[CommitteeMember],
        peers: &catch_up::Peers,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<SessionEnd, NodeError> {
        let view = self.ledger.view();
        let (n, faulty) = (
            committee.len(),
            scrip_spec::committee::max_faulty(committee.len()),
        );
        let keychain = NodeKeychain::new(
            self.key.clone(),
            committee.iter().map(|m| m.node_key).collect(),
        )
        .ok_or(NodeError::NotAMember { session })?;
        let last = self
            .ledger
            .entries(view.head.0, 1)
            .await?
            .into_iter()
            .next();
        let floor = last
            .as_ref()
            .map_or(view.genesis.created_at, |entry| entry.recorded_at);
        let (loader, saver) =
            backup::open(&self.settings.consensus_dir, session).map_err(|source| {
                NodeError::Backup {
                    dir: self.settings.consensus_dir.clone(),
                    source,
                }
            })?;
        self.ledger
            .store()
            .set_consensus_session(session)
            .await
            .map_err(LedgerError::from)?;
        let mut delays = aleph_bft::default_delay_config();
        let unit_delay = self.settings.unit_delay;
        delays.unit_creation_delay = Arc::new(move |round| {
            // The first unit waits a little for the others to connect.
            if round == 0 {
                unit_delay * 4
            } else {
                unit_delay
            }
        });
        let config = aleph_bft::create_config(
            aleph_bft::NodeCount(n),
            aleph_bft::Index::index(&keychain),
            session,
            self.settings.session_rounds.saturating_add(500),
            delays,
            Duration::ZERO,
        )
        .map_err(|_| NodeError::Backup {
            dir: self.settings.consensus_dir.clone(),
            source: std::io::Error::other("invalid consensus settings"),
        })?;
        // A session that starts afresh votes for the head the last one ended at, unless
        // nothing happened since the last certificate. (A node that restarts within a
        // session does not vote again.)
        let vote = match &last {
            Some(last)
                if skip.is_none()
                    && session > 0
                    && view.head.0 > 0
                    && !matches!(last.body, EntryBody::Certificate(_)) =>
            {
                let head = CertifiedHead {
                    ledger_id: view.ledger_id,
                    seq: view.head.0,
                    head_hash: view.head.1,
                };
                Some(Vote {
                    seq: head.seq,
                    head_hash: head.head_hash.0,
                    signature: self.ledger.key().sign_detached(&head),
                })
            }
            _ => None,
        };
        let (batches_tx, mut batches) = mpsc::unbounded_channel();
        let local_io = aleph_bft::LocalIO::new_with_unit_finalization_handler(
            Provider {
                pool: self.pool.clone(),
                ledger: self.ledger.clone(),
                proposing: Proposing {
                    session,
                    me: aleph_bft::Index::index(&keychain).0,
                    nodes: n,
                    patience: self.settings.unit_delay * PATIENCE_UNITS,
                },
                vote,
            },
            Finalized { tx: batches_tx },
            saver,
            loader,
        );
        let (exit, exit_rx) = exit_channel::channel();
        let terminator = Terminator::create_root(exit_rx, "scrip-ledger-session");
        let consensus = tokio::spawn(aleph_bft::run_session(
            config,
            local_io,
            SessionNetwork {
                network: self.network_for(committee),
                session,
            },
            keychain,
            Spawner,
            terminator,
        ));
        tracing::info!(session, nodes = n, faulty, resume_after = ?skip, "consensus session started");
        let mut time = AgreedTime::new(n, faulty, floor);
        let mut votes = Votes::new(view.ledger_id, committee);
        let mut index: u64 = 0;
        let mut check =
            tokio::time::interval_at(tokio::time::Instant::now() + BEHIND_CHECK, BEHIND_CHECK);
        let end = loop {
            let batch = tokio::select! {
                batch = batches.recv() => batch,
                _ = check.tick() => {
                    if peers.behind(session).await {
                        tracing::info!(session, "the other nodes are past this session; catching up");
                        break SessionEnd::Behind;
                    }
                    continue;
                }
                _ = stop.changed() => break SessionEnd::Stopped,
            };
            let Some(batch) = batch else {
                tracing::error!(session, "the consensus session ended by itself");
                break SessionEnd::Stopped;
            };
            if self
                .apply_batch(session, skip, &mut index, &mut time, &mut votes, batch)
                .await
            {
                break SessionEnd::Finished;
            }
        };
        let _ = exit.send(());
        let mut consensus = consensus;
        if tokio::time::timeout(Duration::from_secs(10), &mut consensus)
            .await
            .is_err()
        {
            // It must not go on signing units of this session if the node runs it again.
            consensus.abort();
            let _ = consensus.await;
        }
        tracing::info!(session, units = index, "consensus session ended");
        Ok(end)
    }

    /// Applies one ordered batch; `true` once the session's last round is reached (every
    /// node stops at the same unit, and ignores what was ordered after it).
    async fn apply_batch(
        &self,
        session: u64,
        skip: Option<OrderedAt>,
        index: &mut u64,
        time: &mut AgreedTime,
        votes: &mut Votes,
        batch: Vec<OrderedUnit<UnitData, Sha256Hasher>>,
    ) -> bool {
        for unit in batch {
            let at = *index;
            *index += 1;
            if let Some(data) = unit.data {
                // The time moves with every unit, applied before or not, so a restarted node
                // reaches the same times as the others.
                let now = time.observe(unit.creator.0, data.time);
                for (request, bytes) in data.requests.iter().enumerate() {
                    let place = OrderedAt {
                        session,
                        unit: at,
                        request: u32::try_from(request).unwrap_or(u32::MAX),
                    };
                    // In the log already; the requests around it that left no entry are
                    // judged again, against the same state, to the same refusal.
                    if skip.is_some_and(|last| place <= last) {
                        continue;
                    }
                    self.apply_one(bytes, now, place).await;
                }
                // Keys the agreed time has carried past their forget_after, after the unit's
                // requests, at places every node gives them alike.
                for (k, key) in self.ledger.keys_to_prune(now).iter().enumerate() {
                    let place = OrderedAt {
                        session,
                        unit: at,
                        request: PRUNE_PLACES.saturating_add(u32::try_from(k).unwrap_or(0)),
                    };
                    if skip.is_none_or(|last| place > last) {
                        self.prune(key, now, place).await;
                    }
                }
                if let Some(vote) = data.vote
                    && let Some(certificate) = votes.count(unit.creator.0, vote)
                {
                    // After the unit's requests, as `request: u32::MAX` says.
                    let place = OrderedAt {
                        session,
                        unit: at,
                        request: u32::MAX,
                    };
                    if skip.is_none_or(|last| place > last) {
                        self.append_certificate(certificate, now, place).await;
                    }
                }
            }
            if unit.round >= self.settings.session_rounds {
                return true;
            }
        }
        false
    }

    async fn prune(&self, key: &scrip_spec::TokenKeyId, now: u64, at: OrderedAt) {
        loop {
            match self.ledger.prune_ordered(key, now, at).await {
                Ok(entry) => {
                    if let Some(entry) = entry {
                        tracing::info!(seq = entry.seq, key = %key, "pruned a key past its forget_after");
                    }
                    return;
                }
                Err(LedgerError::Refused(refusal)) => {
                    tracing::error!(%refusal, key = %key, "pruning a key was refused");
                    return;
                }
                Err(e) => {
                    // Skipping it would make this node's log differ from the others'.
                    tracing::error!(error = ?e, "pruning a key failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                }
            }
        }
    }

    async fn append_certificate(&self, certificate: Certificate, now: u64, at: OrderedAt) {
        loop {
            match self
                .ledger
                .append_certificate(certificate.clone(), now, at)
                .await
            {
                Ok((seq, _)) => {
                    tracing::info!(
                        seq,
                        certified = certificate.head.seq,
                        "the committee certified the head"
                    );
                    return;
                }
                // Every node refuses it alike (a head that is not in the log).
                Err(LedgerError::Refused(refusal)) => {
                    tracing::error!(%refusal, "a certificate the votes completed was refused");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = ?e, "appending a certificate failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn apply_one(&self, bytes: &[u8], now: u64, at: OrderedAt) {
        let Ok(signed) = from_canonical_bytes::<Signed<LedgerRequest>>(bytes) else {
            // Only a faulty node proposes bytes that are no signed request; every node
            // skips them alike.
            tracing::warn!(
                session = at.session,
                unit = at.unit,
                "an ordered request does not decode; skipped"
            );
            return;
        };
        let digest = request_digest(&signed);
        let outcome = loop {
            match self.ledger.apply_ordered(signed.clone(), now, at).await {
                Ok(receipt) => break Ok(receipt),
                Err(LedgerError::Refused(refusal)) => break Err(refusal),
                Err(e) => {
                    // Skipping it would make this node's log differ from the others': wait
                    // for the store instead.
                    tracing::error!(error = ?e, "applying an ordered request failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        self.pool.remove(&digest);
        let waiting = self
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&digest);
        for tx in waiting.into_iter().flatten() {
            let _ = tx.send(outcome.clone());
        }
    }
}

/// Where a unit's pruning records go among its entries: after its requests (fewer than
/// this many), before its certificate (`u32::MAX`).
const PRUNE_PLACES: u32 = 1 << 31;

/// How many unit delays a node waits for a request's owner to propose it before it proposes
/// it too: a few rounds, so a request whose owner is down waits about half a second more.
const PATIENCE_UNITS: u32 = 10;

struct Provider {
    pool: Arc<Pool>,
    ledger: Arc<Ledger>,
    proposing: Proposing,
    vote: Option<Vote>,
}

#[async_trait::async_trait]
impl aleph_bft::DataProvider for Provider {
    type Output = UnitData;

    async fn get_data(&mut self) -> Option<UnitData> {
        Some(UnitData {
            time: self.ledger.now(),
            requests: self.pool.take_for_unit(self.proposing),
            vote: self.vote.take(),
        })
    }
}

struct Finalized {
    tx: mpsc::UnboundedSender<Vec<OrderedUnit<UnitData, Sha256Hasher>>>,
}

impl aleph_bft::UnitFinalizationHandler for Finalized {
    type Data = UnitData;
    type Hasher = Sha256Hasher;

    fn batch_finalized(&mut self, batch: Vec<OrderedUnit<UnitData, Sha256Hasher>>) {
        let _ = self.tx.send(batch);
    }
}

struct SessionNetwork {
    network: Arc<PeerNetwork<NetMessage>>,
    session: u64,
}

#[async_trait::async_trait]
impl aleph_bft::Network<NetMessage> for SessionNetwork {
    fn send(&self, data: NetMessage, recipient: Recipient) {
        let to = match recipient {
            Recipient::Everyone => None,
            Recipient::Node(NodeIndex(i)) => Some(i),
        };
        self.network.send(self.session, &data, to);
    }

    async fn next_event(&mut self) -> Option<NetMessage> {
        self.network.next(self.session).await
    }
}

#[derive(Clone)]
struct Spawner;

impl aleph_bft::SpawnHandle for Spawner {
    fn spawn(
        &self,
        _name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        tokio::spawn(task);
    }

    fn spawn_essential(
        &self,
        _name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> aleph_bft::TaskHandle {
        let handle = tokio::spawn(task);
        Box::pin(async move { handle.await.map_err(|_| ()) })
    }
}

/// A node's index and its signature of a head.
type Signer = (usize, CertificateSignature);

/// The votes ordered in one session, by the head they sign: a certificate once `n - f`
/// distinct nodes of the session's committee signed the same one (each node's first vote
/// counts).
struct Votes {
    ledger_id: scrip_spec::ledger::Hash32,
    committee: Vec<CommitteeMember>,
    voted: std::collections::HashSet<usize>,
    by_head: HashMap<(u64, [u8; 32]), Vec<Signer>>,
}

impl Votes {
    fn new(ledger_id: scrip_spec::ledger::Hash32, committee: &[CommitteeMember]) -> Self {
        Self {
            ledger_id,
            committee: committee.to_vec(),
            voted: Default::default(),
            by_head: HashMap::new(),
        }
    }

    fn count(&mut self, creator: usize, vote: Vote) -> Option<Certificate> {
        let committee = &self.committee;
        let node = committee.get(creator)?.node_key;
        let head = CertifiedHead {
            ledger_id: self.ledger_id,
            seq: vote.seq,
            head_hash: scrip_spec::ledger::Hash32(vote.head_hash),
        };
        if scrip_spec::operator::verify_detached(&node, &head, &vote.signature).is_err()
            || !self.voted.insert(creator)
        {
            return None;
        }
        let signatures = self.by_head.entry((vote.seq, vote.head_hash)).or_default();
        signatures.push((
            creator,
            CertificateSignature {
                node,
                signature: vote.signature,
            },
        ));
        let needed = committee.len() - scrip_spec::committee::max_faulty(committee.len());
        if signatures.len() != needed {
            return None;
        }
        let mut signatures = signatures.clone();
        signatures.sort_by_key(|(i, _)| *i);
        Some(Certificate {
            head,
            signatures: signatures.into_iter().map(|(_, s)| s).collect(),
        })
    }
}
