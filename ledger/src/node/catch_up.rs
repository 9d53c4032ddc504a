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

use crate::service::{Ledger, LedgerError};
use scrip_common::clients::LedgerClient;
use scrip_spec::committee::{CommitteeMember, OrderedAt};
use scrip_spec::ledger::{EntryBody, Hash32};
use std::time::Duration;

/// Why catching up failed; the node tries again later.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// Too few nodes answered alike.
    #[error("fewer than f+1 nodes past this session agree on a head to catch up to")]
    NoQuorum,
    /// A peer's entries do not replay to what it sent, or do not reach the vouched hash.
    #[error(
        "the entries fetched from {peer} do not replay to the hashes the nodes vouched for: {reason}"
    )]
    Mismatch {
        /// The peer.
        peer: String,
        /// What differed.
        reason: String,
    },
    /// The ledger refused or failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// What the other nodes say about where they are.
pub struct Peers {
    clients: Vec<LedgerClient>,
    faulty: usize,
}

struct PeerHead {
    client: LedgerClient,
    seq: u64,
}

impl Peers {
    /// The nodes of `committee` but the one with `me` (a node outside it asks them all).
    pub fn new(committee: &[CommitteeMember], me: scrip_spec::OperatorId) -> Self {
        Self {
            clients: committee
                .iter()
                .filter(|m| m.node_key != me)
                .map(|m| LedgerClient::with_timeout(&m.api_url, Duration::from_secs(3)))
                .collect(),
            faulty: scrip_spec::committee::max_faulty(committee.len()),
        }
    }

    async fn ahead_of(&self, session: u64) -> Vec<PeerHead> {
        let mut asks = tokio::task::JoinSet::new();
        for client in &self.clients {
            let client = client.clone();
            asks.spawn(async move { (client.info().await, client) });
        }
        let mut ahead = Vec::new();
        while let Some(answer) = asks.join_next().await {
            if let Ok((Ok(info), client)) = answer
                && let Some(s) = info.session
                && s > session
            {
                ahead.push(PeerHead {
                    client,
                    seq: info.head_seq,
                });
            }
        }
        ahead
    }

    /// Whether `f + 1` other nodes are past `session`.
    pub async fn behind(&self, session: u64) -> bool {
        self.ahead_of(session).await.len() > self.faulty
    }

    /// Brings `ledger` up to a head `f + 1` nodes past `session` vouch for; returns the
    /// session to join and the place of the last entry, if it is in that session.
    pub async fn catch_up(
        &self,
        ledger: &Ledger,
        session: u64,
    ) -> Result<(u64, Option<OrderedAt>), CatchUpError> {
        let mut ahead = self.ahead_of(session).await;
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
    let mismatch = |reason: String| CatchUpError::Mismatch {
        peer: client.url().to_owned(),
        reason,
    };
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
            let seq = head + 1 + chain.len() as u64;
            if entry.seq != seq {
                return Err(mismatch(format!(
                    "entry {seq} was asked for, {} came",
                    entry.seq
                )));
            }
            if entry.prev_hash != prev {
                return Err(mismatch(format!(
                    "entry {seq} does not follow the entry before it"
                )));
            }
            prev = entry.hash();
            chain.push(prev);
        }
    }
    if prev != vouched {
        return Err(mismatch(format!(
            "entry {target} is not the one f+1 nodes vouched for"
        )));
    }
    // Then each entry again, judged by this node's rules at its recorded time and place; it
    // must be the one the chain was checked with, and come out byte for byte as fetched.
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
    tracing::info!(
        entries = target - head,
        head = target,
        from = %client.url(),
        "caught up with the committee"
    );
    Ok(())
}

/// One page of the log from `from`, cut at `target`; an empty page is an error.
async fn page(
    client: &LedgerClient,
    from: u64,
    target: u64,
) -> Result<Vec<scrip_spec::ledger::LogEntry>, String> {
    let page = client
        .log(from, PAGE)
        .await
        .map_err(|e| format!("the log could not be read: {e}"))?;
    let entries: Vec<_> = page
        .entries
        .into_iter()
        .take_while(|e| e.seq <= target)
        .collect();
    if entries.is_empty() {
        return Err(format!("no entry {from}"));
    }
    Ok(entries)
}
