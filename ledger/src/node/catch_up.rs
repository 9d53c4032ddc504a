//! A node that finds itself behind (its session ended at the other nodes while it was down)
//! fetches the entries it misses from its peers and re-applies them with its own rules.
//!
//! It is behind once `f + 1` other nodes report a later session: at least one of them is
//! honest, so the session is over. The target is the `(f + 1)`-th highest head among those
//! nodes, taken only if `f + 1` of them give the same hash for it: at least one honest node
//! vouches for it, and every node past the session holds all of its entries, so the target
//! covers the session's end. Each fetched entry is judged again by this node's rules at its
//! recorded time and place in the order, and must come out byte for byte as fetched; the last
//! must have the vouched hash.

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
        let mut hashes: Vec<(Hash32, usize, usize)> = Vec::new();
        for (i, peer) in ahead.iter().enumerate() {
            let Ok(page) = peer.client.log(target, 1).await else {
                continue;
            };
            let Some(entry) = page.entries.first().filter(|e| e.seq == target) else {
                continue;
            };
            let hash = entry.hash();
            match hashes.iter_mut().find(|(h, _, _)| *h == hash) {
                Some((_, n, _)) => *n += 1,
                None => hashes.push((hash, 1, i)),
            }
        }
        let Some(&(vouched, _, source)) = hashes.iter().find(|(_, n, _)| *n > self.faulty) else {
            return Err(CatchUpError::NoQuorum);
        };
        let peer = &ahead[source];
        let peer_url = peer.client.url().to_owned();
        let mismatch = |reason: String| CatchUpError::Mismatch {
            peer: peer_url.clone(),
            reason,
        };
        let fetched_from = ledger.view().head.0 + 1;
        let mut next = fetched_from;
        while next <= target {
            let page = peer
                .client
                .log(next, 200)
                .await
                .map_err(|e| mismatch(format!("the log could not be read: {e}")))?;
            if page.entries.is_empty() {
                return Err(mismatch(format!("no entry {next}")));
            }
            for entry in page.entries.into_iter().take_while(|e| e.seq <= target) {
                let expected = entry.hash();
                let seq = entry.seq;
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
        let head = ledger.view().head;
        if head.0 >= fetched_from && head != (target, vouched) {
            return Err(mismatch("the last entry is not the one vouched for".into()));
        }
        let last = ledger
            .entries(head.0, 1)
            .await?
            .first()
            .and_then(|e| e.ordered);
        tracing::info!(
            entries = head.0 + 1 - fetched_from.min(head.0 + 1),
            head = head.0,
            from = %peer_url,
            "caught up with the committee"
        );
        Ok(match last {
            Some(at) if at.session > session => (at.session, Some(at)),
            _ => (session + 1, None),
        })
    }
}
