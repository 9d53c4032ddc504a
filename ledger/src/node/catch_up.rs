//! A node that finds itself behind (its session ended at the other nodes while it was down)
//! fetches the entries it misses from its peers and re-applies them with its own rules.
//!
//! It is behind once `f + 1` other nodes report a later session: at least one of them is
//! honest, so the session is over. The target is the `(f + 1)`-th highest head among those
//! nodes, taken only if `f + 1` of them give the same hash for it: at least one honest node
//! vouches for it, and every node past the session holds all of its entries, so the target
//! covers the session's end. The entries fetched from one of those nodes must chain from this
//! node's head to the vouched hash before any is applied (a voucher may be the faulty one: the
//! next is asked then). Each is then judged again by this node's rules at its recorded time and
//! place in the order, and must come out byte for byte as fetched.
//!
//! A node down across a change that retired most of its session's committee, whose nodes are
//! gone, has no `f + 1` of them to ask. It reads the log from the nodes its operator named
//! (`catch_up_from`), trusting none of them: it applies the entries up to a head only once a
//! certificate later in that log, signed by `n - f` nodes of the committee of the session that
//! ordered it, names that head. It learns that committee from the governance entries on the
//! way, judged by its own rules on a copy of its state, before it writes anything.

use crate::rules::{LedgerState, Verified};
use crate::service::{Ledger, LedgerError};
use scrip_common::clients::LedgerClient;
use scrip_spec::Signed;
use scrip_spec::committee::{CommitteeMember, OrderedAt};
use scrip_spec::ledger::{Action, EntryBody, Hash32, LedgerRequest};
use std::time::Duration;

/// Why catching up failed; the node tries again later.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// Too few nodes answered alike.
    #[error("fewer than f+1 nodes past this session agree on a head to catch up to")]
    NoQuorum,
    /// A peer's entries do not chain to the vouched hash or to a valid certificate, or do not
    /// replay to what it sent; none of them was applied past the last vouched head.
    #[error("the entries fetched from {peer} cannot be taken: {reason}")]
    Mismatch {
        /// The peer.
        peer: String,
        /// What differed.
        reason: String,
    },
    /// None of the nodes named to catch up from holds a certificate past this node's head.
    #[error(
        "no node named in catch_up_from serves a certificate past this node's head; name a node of the current committee"
    )]
    NoCertificate,
    /// The ledger refused or failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// What the other nodes say about where they are.
pub struct Peers {
    clients: Vec<LedgerClient>,
    faulty: usize,
    /// Nodes to read the log from when the session's committee cannot say (`catch_up_from`);
    /// trusted for nothing, since what they serve is applied only under a certificate.
    sources: Vec<LedgerClient>,
}

struct PeerHead {
    client: LedgerClient,
    seq: u64,
}

impl Peers {
    /// The nodes of `committee` but the one with `me` (a node outside it asks them all), and
    /// the nodes at `sources` for when they cannot say.
    pub fn new(
        committee: &[CommitteeMember],
        me: scrip_spec::OperatorId,
        sources: &[String],
    ) -> Self {
        let client = |url: &str| LedgerClient::with_timeout(url, Duration::from_secs(3));
        Self {
            clients: committee
                .iter()
                .filter(|m| m.node_key != me)
                .map(|m| client(&m.api_url))
                .collect(),
            faulty: scrip_spec::committee::max_faulty(committee.len()),
            sources: sources.iter().map(|url| client(url)).collect(),
        }
    }

    /// The peers past `session`, and how many peers answered at all.
    async fn ahead_of(&self, session: u64) -> (Vec<PeerHead>, usize) {
        let mut asks = tokio::task::JoinSet::new();
        for client in &self.clients {
            let client = client.clone();
            asks.spawn(async move { (client.info().await, client) });
        }
        let (mut ahead, mut answered) = (Vec::new(), 0);
        while let Some(answer) = asks.join_next().await {
            let Ok((Ok(info), client)) = answer else {
                continue;
            };
            answered += 1;
            if info.session.is_some_and(|s| s > session) {
                ahead.push(PeerHead {
                    client,
                    seq: info.head_seq,
                });
            }
        }
        (ahead, answered)
    }

    /// Whether `f + 1` other nodes are past `session`; or, when no `f + 1` of them answer at
    /// all (most are gone), whether a node named to catch up from says it is.
    pub async fn behind(&self, session: u64) -> bool {
        let (ahead, answered) = self.ahead_of(session).await;
        if ahead.len() > self.faulty {
            return true;
        }
        if answered > self.faulty {
            return false;
        }
        for source in &self.sources {
            if let Ok(info) = source.info().await
                && info.session.is_some_and(|s| s > session)
            {
                return true;
            }
        }
        false
    }

    /// Brings `ledger` up to a head `f + 1` nodes past `session` vouch for, or, if they cannot
    /// say, to the last head a certificate vouches for at a node named to catch up from;
    /// returns the session to join and the place of the last entry, if it is in that session.
    pub async fn catch_up(
        &self,
        ledger: &Ledger,
        session: u64,
    ) -> Result<(u64, Option<OrderedAt>), CatchUpError> {
        match self.catch_up_with_committee(ledger, session).await {
            Err(CatchUpError::NoQuorum) if !self.sources.is_empty() => {
                self.catch_up_by_certificates(ledger, session).await
            }
            other => other,
        }
    }

    /// From the first node named to catch up from that serves a certificate past the head.
    async fn catch_up_by_certificates(
        &self,
        ledger: &Ledger,
        session: u64,
    ) -> Result<(u64, Option<OrderedAt>), CatchUpError> {
        for source in &self.sources {
            match certified(source, ledger).await {
                Ok(Some(last_session)) => return Ok(((last_session + 1).max(session), None)),
                Ok(None) => {}
                Err(e @ CatchUpError::Mismatch { .. }) => {
                    tracing::warn!(error = %e, "a node named in catch_up_from serves a log this node cannot take");
                }
                Err(e) => return Err(e),
            }
        }
        Err(CatchUpError::NoCertificate)
    }

    async fn catch_up_with_committee(
        &self,
        ledger: &Ledger,
        session: u64,
    ) -> Result<(u64, Option<OrderedAt>), CatchUpError> {
        let (mut ahead, _) = self.ahead_of(session).await;
        if ahead.len() <= self.faulty {
            return Err(CatchUpError::NoQuorum);
        }
        ahead.sort_by_key(|a| std::cmp::Reverse(a.seq));
        let target = ahead[self.faulty].seq;
        // Each hash reported for the target entry, with the peers that reported it.
        let mut reports: Vec<(Hash32, Vec<usize>)> = Vec::new();
        for (i, peer) in ahead.iter().enumerate() {
            let Ok(page) = peer.client.log(target, 1).await else {
                continue;
            };
            let Some(entry) = page.entries.first().filter(|e| e.seq == target) else {
                continue;
            };
            let hash = entry.hash();
            match reports.iter_mut().find(|(h, _)| *h == hash) {
                Some((_, peers)) => peers.push(i),
                None => reports.push((hash, vec![i])),
            }
        }
        let Some((vouched, sources)) = reports
            .into_iter()
            .find(|(_, peers)| peers.len() > self.faulty)
        else {
            return Err(CatchUpError::NoQuorum);
        };
        // A peer that vouched for the target may still be faulty and serve other entries
        // before it: the next one is asked then, and at least one of them is honest.
        let mut failed = None;
        for source in sources {
            let client = &ahead[source].client;
            match fetch(client, ledger, target, vouched).await {
                Ok(()) => {
                    failed = None;
                    break;
                }
                Err(e @ CatchUpError::Mismatch { .. }) => {
                    tracing::warn!(error = %e, "a peer's log does not reach the vouched head; asking another");
                    failed = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let head = ledger.view().head;
        let last = ledger
            .entries(head.0, 1)
            .await?
            .first()
            .and_then(|e| e.ordered);
        Ok(match last {
            Some(at) if at.session > session => (at.session, Some(at)),
            _ => (session + 1, None),
        })
    }
}

/// What a peer's entries that cannot be taken are turned into.
fn mismatch_at(client: &LedgerClient) -> impl Fn(String) -> CatchUpError + Copy + '_ {
    move |reason| CatchUpError::Mismatch {
        peer: client.url().to_owned(),
        reason,
    }
}

/// Whether `entry` is entry `seq` of a chain whose entry before it has the hash `prev`.
fn follows(entry: &scrip_spec::ledger::LogEntry, seq: u64, prev: &Hash32) -> Result<(), String> {
    if entry.seq != seq {
        return Err(format!("entry {seq} was asked for, {} came", entry.seq));
    }
    if entry.prev_hash != *prev {
        return Err(format!("entry {seq} does not follow the entry before it"));
    }
    Ok(())
}

/// Entries asked for in one `GET /v1/log`.
const PAGE: u32 = 200;

/// Fetches the entries after this node's head up to `target` from `client` and applies them,
/// only once they chain from the head to `vouched`: a faulty peer's entries are refused before
/// any is written, so that it cannot leave this node on a branch of its own making.
async fn fetch(
    client: &LedgerClient,
    ledger: &Ledger,
    target: u64,
    vouched: Hash32,
) -> Result<(), CatchUpError> {
    let mismatch = mismatch_at(client);
    let (head, head_hash) = ledger.view().head;
    if head >= target {
        return Ok(());
    }
    // First the chain: each entry names the hash of the one before it, from this node's head
    // to the vouched hash. Only the hashes are kept, so a long catch-up reads the log twice
    // rather than holding it.
    let mut chain = Vec::new();
    let mut prev = head_hash;
    while head + (chain.len() as u64) < target {
        let next = head + 1 + chain.len() as u64;
        for entry in page(client, next, target).await.map_err(mismatch)? {
            follows(&entry, head + 1 + chain.len() as u64, &prev).map_err(mismatch)?;
            prev = entry.hash();
            chain.push(prev);
        }
    }
    if prev != vouched {
        return Err(mismatch(format!(
            "entry {target} is not the one f+1 nodes vouched for"
        )));
    }
    apply_chain(client, ledger, head, &chain).await?;
    tracing::info!(
        entries = target - head,
        head = target,
        from = %client.url(),
        "caught up with the committee"
    );
    Ok(())
}

/// Reads entries `head + 1 ..` from `client` again, checks each against `chain` (their hashes,
/// checked before), and applies each, judged by this node's rules at its recorded time and
/// place in the order: each must come out byte for byte as fetched.
async fn apply_chain(
    client: &LedgerClient,
    ledger: &Ledger,
    head: u64,
    chain: &[Hash32],
) -> Result<(), CatchUpError> {
    let mismatch = mismatch_at(client);
    let target = head + chain.len() as u64;
    let mut next = head + 1;
    while next <= target {
        for entry in page(client, next, target).await.map_err(mismatch)? {
            let seq = entry.seq;
            let expected = entry.hash();
            if seq != next || chain.get((seq - head - 1) as usize) != Some(&expected) {
                return Err(mismatch(format!(
                    "entry {next} differs from the one read a moment before"
                )));
            }
            let Some(at) = entry.ordered else {
                return Err(mismatch(format!("entry {seq} has no place in the order")));
            };
            let replayed = match entry.body {
                EntryBody::Request(signed) => {
                    let receipt = ledger.apply_ordered(signed, entry.recorded_at, at).await?;
                    receipt.seq.zip(receipt.entry_hash)
                }
                EntryBody::Certificate(certificate) => Some(
                    ledger
                        .append_certificate(certificate, entry.recorded_at, at)
                        .await?,
                ),
                EntryBody::CommitteePruned(record) => ledger
                    .prune_ordered(&record.token_key_id, entry.recorded_at, at)
                    .await?
                    .map(|e| (e.seq, e.hash())),
                _ => None,
            };
            if replayed != Some((seq, expected)) {
                return Err(mismatch(format!("entry {seq} replays to {replayed:?}")));
            }
            next = seq + 1;
        }
    }
    Ok(())
}

/// Most entries read past the head without finding a certificate for them (128 MiB of
/// hashes): an honest session holds far fewer, and a node serving an endless log is given up on.
const MAX_UNCERTIFIED: usize = 1 << 22;

/// Applies the entries `client` serves past this node's head, up to the last head that a
/// certificate in its log vouches for, one certified stretch at a time. Returns the session of
/// the last certified entry applied, or `None` if no certificate past the head was found. A
/// failure after a stretch was applied keeps it, and returns where it got to.
async fn certified(client: &LedgerClient, ledger: &Ledger) -> Result<Option<u64>, CatchUpError> {
    let mut last_session = None;
    loop {
        let step = async {
            let (head, _) = ledger.view().head;
            let Some((chain, session)) = certified_stretch(client, ledger).await? else {
                return Ok(None);
            };
            apply_chain(client, ledger, head, &chain).await?;
            tracing::info!(
                entries = chain.len(),
                head = head + chain.len() as u64,
                from = %client.url(),
                "caught up to a certified head"
            );
            Ok(Some(session))
        };
        match step.await {
            Ok(Some(session)) => last_session = Some(session),
            Ok(None) => return Ok(last_session),
            Err(e) if last_session.is_some() => {
                tracing::warn!(error = %e, "catching up under certificates stopped part of the way");
                return Ok(last_session);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads on from this node's head to the first certificate of an entry past it, and returns
/// the hashes of the entries up to that entry, and that entry's session, once the certificate
/// is found valid: signed by `n - f` nodes of the committee of the session that ordered it, as
/// this node's rules derive that committee from the entries before it, judged on a copy of the
/// state (nothing is written). `None` if the log ends first.
async fn certified_stretch(
    client: &LedgerClient,
    ledger: &Ledger,
) -> Result<Option<(Vec<Hash32>, u64)>, CatchUpError> {
    let mismatch = mismatch_at(client);
    let mut state = (*ledger.view()).clone();
    let (head, head_hash) = state.head;
    let mut place = ledger
        .entries(head, 1)
        .await?
        .first()
        .and_then(|e| e.ordered);
    let mut chain: Vec<Hash32> = Vec::new();
    // Where each session starts in `chain`: (index, session).
    let mut sessions: Vec<(usize, u64)> = Vec::new();
    let mut prev = head_hash;
    loop {
        let next = head + 1 + chain.len() as u64;
        let entries = page_or_end(client, next, u64::MAX)
            .await
            .map_err(mismatch)?;
        if entries.is_empty() {
            return Ok(None);
        }
        for entry in entries {
            let seq = head + 1 + chain.len() as u64;
            follows(&entry, seq, &prev).map_err(mismatch)?;
            // Places only grow along the log; the committee the copy gives a session depends
            // on them.
            let at = entry
                .ordered
                .filter(|at| place.is_none_or(|p| *at > p) && at.session < u64::MAX)
                .ok_or_else(|| mismatch(format!("entry {seq} is out of the consensus order")))?;
            place = Some(at);
            let hash = entry.hash();
            match &entry.body {
                EntryBody::Request(signed) => {
                    judge_on_copy(
                        &mut state,
                        signed,
                        entry.recorded_at,
                        at.session,
                        (seq, hash),
                    )
                    .map_err(|e| mismatch(format!("entry {seq}: {e}")))?;
                }
                EntryBody::Certificate(certificate) if certificate.head.seq > head => {
                    let index = (certificate.head.seq - head - 1) as usize;
                    let at_index = sessions.partition_point(|(start, _)| *start <= index);
                    let certified_session = at_index.checked_sub(1).map(|i| sessions[i].1);
                    // It names, by hash, an entry read here, the last of an earlier session.
                    let valid = certificate.head.ledger_id == state.ledger_id
                        && chain.get(index) == Some(&certificate.head.head_hash)
                        && certified_session.is_some_and(|s| s < at.session)
                        && certificate.verify(state.committee_for(at.session)).is_ok();
                    let Some(session) = certified_session.filter(|_| valid) else {
                        return Err(mismatch(format!(
                            "entry {seq} is a certificate that does not verify"
                        )));
                    };
                    chain.truncate(index + 1);
                    return Ok(Some((chain, session)));
                }
                _ => {}
            }
            prev = hash;
            if sessions.last().is_none_or(|(_, s)| *s != at.session) {
                sessions.push((chain.len(), at.session));
            }
            chain.push(hash);
            if chain.len() > MAX_UNCERTIFIED {
                return Err(mismatch(format!(
                    "more than {MAX_UNCERTIFIED} entries past this node's head without a certificate"
                )));
            }
        }
    }
}

/// Judges a request of the log on `state`, a copy of the node's state, and applies what it
/// changes, so that the copy knows the committee, the members and the keys that later
/// entries are judged by. Spends and refreshes are passed over: their outcome needs the spent
/// set, and only their keys' counters depend on it, which no governance change reads.
fn judge_on_copy(
    state: &mut LedgerState,
    signed: &Signed<LedgerRequest>,
    recorded_at: u64,
    session: u64,
    at: (u64, Hash32),
) -> Result<(), String> {
    let action = &signed.payload.action;
    if matches!(action, Action::Spend { .. } | Action::Refresh { .. }) {
        return Ok(());
    }
    match state.judge(signed, recorded_at, Some(session), Verified::All) {
        Ok(judged) => {
            state.apply(&judged.effect, at, &[]);
            Ok(())
        }
        // Every request in a log was accepted where it stands; a governance change this
        // node's rules refuse there is not the committee's.
        Err(e) if matches!(action, Action::Govern { .. }) => {
            Err(format!("a governance change this node's rules refuse: {e}"))
        }
        // Others may have been judged on counters the copy lacks; they change only keys'
        // records, which a governance change reads only for a revocation.
        Err(_) => Ok(()),
    }
}

/// One page of the log from `from`, cut at `target`; an empty page is an error.
async fn page(
    client: &LedgerClient,
    from: u64,
    target: u64,
) -> Result<Vec<scrip_spec::ledger::LogEntry>, String> {
    let entries = page_or_end(client, from, target).await?;
    if entries.is_empty() {
        return Err(format!("no entry {from}"));
    }
    Ok(entries)
}

/// One page of the log from `from`, cut at `target`: empty past the end of the log.
async fn page_or_end(
    client: &LedgerClient,
    from: u64,
    target: u64,
) -> Result<Vec<scrip_spec::ledger::LogEntry>, String> {
    let page = client
        .log(from, PAGE)
        .await
        .map_err(|e| format!("the log could not be read: {e}"))?;
    Ok(page
        .entries
        .into_iter()
        .take_while(|e| e.seq <= target)
        .collect())
}
