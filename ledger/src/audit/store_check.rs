//! Checking a database's derived state against its log: the spent set, the per-key and
//! per-issuer totals, the members, the catalog and the head must be exactly what replaying the
//! entries gives. A ledger runs it before it serves; the audit of a database copy runs it too.
//! A row deleted from the spent set would otherwise let the same token be spent again.

use super::{Auditor, Tampering};
use crate::store::{Store, StoreError};
use scrip_spec::api::ledger::MAX_LOG_PAGE;
use scrip_spec::ledger::OperatorInfo;
use std::collections::BTreeMap;

/// Entries read per page while checking.
const PAGE: u32 = MAX_LOG_PAGE;

/// Why a database's derived state cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum StoreMismatch {
    /// The store could not be read.
    #[error("the database could not be read")]
    Store(#[from] StoreError),
    /// The log itself does not verify.
    #[error("the log does not verify: {0}")]
    Log(#[from] Tampering),
    /// The log verifies, but a table built from it says something else.
    #[error("{what}")]
    Differs {
        /// The first disagreement found.
        what: String,
    },
}

/// Whether two lists of members hold the same members, in any order.
fn same_members<'a>(
    stored: &'a [OperatorInfo],
    replayed: impl Iterator<Item = &'a OperatorInfo>,
) -> bool {
    let mut stored: Vec<_> = stored.iter().collect();
    let mut replayed: Vec<_> = replayed.collect();
    stored.sort_by_key(|o| o.id);
    replayed.sort_by_key(|o| o.id);
    stored == replayed
}

fn differs(what: impl Into<String>) -> StoreMismatch {
    StoreMismatch::Differs { what: what.into() }
}

/// Replays the store's whole log (trusting the tokens' signatures, which the ledger verified
/// when it wrote them; every hash, operator signature and rule is checked) and compares the
/// derived tables with it. `progress` is told how many entries were read so far.
pub async fn check_store(
    store: &dyn Store,
    progress: Option<&(dyn Fn(u64) + Send + Sync)>,
) -> Result<Auditor, StoreMismatch> {
    let mut auditor = Auditor::trusting_tokens();
    loop {
        let page = store
            .entries(
                auditor.next_seq(),
                PAGE,
                scrip_spec::api::ledger::MAX_LOG_PAGE_BYTES,
            )
            .await?;
        if page.is_empty() {
            break;
        }
        for entry in &page {
            auditor.feed(entry)?;
            // The replay index: a request whose digest went missing could be applied twice.
            if let Some(digest) = crate::store::request_digest(entry)
                && store.request_seq(&digest).await? != Some(entry.seq)
            {
                return Err(differs(format!(
                    "the request of entry {} is missing from the replay index: it could be applied again",
                    entry.seq
                )));
            }
        }
        if let Some(progress) = progress {
            progress(auditor.next_seq());
        }
    }
    compare_with_store(&auditor, store).await?;
    Ok(auditor)
}

/// Compares what `auditor` replayed (up to the store's head) with the store's derived tables,
/// and names the first disagreement.
pub async fn compare_with_store(auditor: &Auditor, store: &dyn Store) -> Result<(), StoreMismatch> {
    let state = auditor
        .state()
        .ok_or_else(|| differs("the log has no genesis"))?;
    let snapshot = store
        .snapshot()
        .await?
        .ok_or_else(|| differs("the database holds no ledger"))?;
    if snapshot.head != state.head {
        return Err(differs(format!(
            "the database's head is entry {} but its log replays to entry {}",
            snapshot.head.0, state.head.0
        )));
    }
    if !same_members(&snapshot.operators, state.operators.values()) {
        return Err(differs(
            "the members table differs from the members the log admitted",
        ));
    }
    if !same_members(&snapshot.former, state.former.values()) {
        return Err(differs(
            "the removed members differ from the members the log removed",
        ));
    }
    if snapshot.catalog != state.catalog || snapshot.catalog_version != state.catalog_version {
        return Err(differs("the catalog differs from the one the log set last"));
    }
    if snapshot.committee != state.committee {
        return Err(differs(
            "the committee differs from the one the log's membership changes set",
        ));
    }
    if snapshot.governance_seq != state.governance_seq {
        return Err(differs(format!(
            "governance_seq is {} in the database but {} in the log",
            snapshot.governance_seq, state.governance_seq
        )));
    }
    if snapshot.keys.len() != state.keys.len() {
        return Err(differs(format!(
            "the key table has {} keys but the log announced {}",
            snapshot.keys.len(),
            state.keys.len()
        )));
    }
    for stored in &snapshot.keys {
        let id = stored.info.public_key.id();
        match state.keys.get(&id) {
            Some(replayed) if replayed == stored => {}
            Some(replayed) => {
                return Err(differs(format!(
                    "key {id}: the database says issued {}, spent {}, pruned {}, revoked {}, reported until {}; the log says issued {}, spent {}, pruned {}, revoked {}, reported until {}",
                    stored.issued,
                    stored.spent,
                    stored.pruned,
                    stored.revoked,
                    stored.reported_until,
                    replayed.issued,
                    replayed.spent,
                    replayed.pruned,
                    replayed.revoked,
                    replayed.reported_until
                )));
            }
            None => return Err(differs(format!("key {id} was never announced in the log"))),
        }
    }
    let stored_issuers: BTreeMap<String, (u64, u64)> = store
        .totals()
        .await?
        .issuers
        .into_iter()
        .map(|t| (t.issuer, (t.cards_sold, t.credits_sold)))
        .collect();
    let log_issuers: BTreeMap<String, (u64, u64)> = auditor
        .issuer_totals()
        .values()
        .map(|t| (t.issuer.clone(), (t.cards_sold, t.credits_sold)))
        .collect();
    if stored_issuers != log_issuers {
        return Err(differs(
            "the card sales totals differ from the sales the log recorded",
        ));
    }
    let stored = store.spent_set().await?;
    let mut replayed: Vec<_> = auditor.spent().iter().collect();
    replayed.sort_by_key(|(n, _)| **n);
    let mut logged = replayed.iter().peekable();
    for (nullifier, key, seq) in &stored {
        match logged.peek() {
            Some((n, (k, s))) if *n == nullifier => {
                if k != key || s != seq {
                    return Err(differs(format!(
                        "nullifier {nullifier} is in the spent set under key {key} at entry {seq}, but the log spent it under key {k} at entry {s}"
                    )));
                }
                logged.next();
            }
            Some((n, (_, s))) if *n < nullifier => {
                return Err(differs(format!(
                    "nullifier {n}, spent at entry {s}, is missing from the spent set: its token could be spent again"
                )));
            }
            _ => {
                return Err(differs(format!(
                    "the spent set holds nullifier {nullifier} (entry {seq}) that no spend in the log accepted"
                )));
            }
        }
    }
    if let Some((n, (_, s))) = logged.next() {
        return Err(differs(format!(
            "nullifier {n}, spent at entry {s}, is missing from the spent set: its token could be spent again"
        )));
    }
    Ok(())
}
