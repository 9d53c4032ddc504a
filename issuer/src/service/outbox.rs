//! The outbox: signed ledger requests (sales, issuance reports) queued in the store with the
//! change they record, and sent until the ledger has them (PROTOCOL.md section 9.7).
//!
//! Several processes may flush one store (`scrip issuer serve` and `scrip issuer report`):
//! an item is re-signed only by replacing the exact request this process read, so at most one
//! re-signed copy exists and it lands once. An item the ledger refuses for good is set aside
//! for the operator, with an alarm, and the items behind it go on.

use super::{Issuer, now};
use crate::store::OutboxItem;
use scrip_common::clients::LedgerClientError;
use scrip_spec::api::ledger::LedgerErrorCode;
use scrip_spec::ledger::{Action, LedgerRequest};
use scrip_spec::{Signed, TokenKeyId, UnixSeconds};

/// Tries per item and flush: a stale request re-signed, then a report re-tiled, then sent.
const TRIES: usize = 3;

/// What became of one item in a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// The ledger has it (now, or from an earlier try), and its follow-up is applied.
    Landed,
    /// Another process sent or set it aside meanwhile.
    ByAnother,
    /// The ledger refused it for good: set aside.
    SetAside,
    /// Still queued, for the next flush.
    Queued,
}

/// Whether the ledger refused the request itself, for good: it would refuse it again however
/// often it is sent. Refusals of the issuer as a whole (unknown operator, bad signature,
/// wrong ledger, a missing role), answers without a ledger error code (a wrong URL), rate
/// limits and the ledger's failures are not: they stop the flush, and the items stay queued.
fn refused_for_good(e: &LedgerClientError) -> bool {
    matches!(
        e.code(),
        Some(
            LedgerErrorCode::InvalidRequest
                | LedgerErrorCode::InvalidToken
                | LedgerErrorCode::BatchTooLarge
                | LedgerErrorCode::MalformedRequest
                | LedgerErrorCode::BodyTooLarge
        )
    )
}

/// What became of a set-aside item put back in line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeued {
    /// The ledger has it now, and its follow-up is applied.
    Landed,
    /// Still queued (the ledger did not answer in time); the next flush sends it.
    Queued,
    /// The ledger refused it for good again.
    SetAsideAgain {
        /// The ledger's answer.
        refusal: String,
    },
}

impl Issuer {
    /// Sends every queued ledger request, oldest first. A request the ledger already has counts
    /// as sent; one refused as stale is signed again with a fresh timestamp (the ledger checks
    /// replay first, so "stale" proves it was never applied); one refused for good is set
    /// aside. Stops at the first failure that is not the item's (an unreachable ledger): the
    /// rest wait for the next flush. Returns how many this flush sent.
    pub async fn flush_outbox(&self) -> anyhow::Result<usize> {
        let mut sent = 0;
        let result = async {
            for item in self.store.outbox().await? {
                if self.send_outbox_item(item).await? == Sent::Landed {
                    sent += 1;
                }
            }
            anyhow::Ok(sent)
        }
        .await;
        self.count_set_aside().await;
        result
    }

    /// Sets the `outbox_set_aside` gauge from the store (another process may have set items
    /// aside too).
    pub async fn count_set_aside(&self) {
        match self.store.count_outbox_set_aside().await {
            Ok(n) => {
                self.metrics
                    .outbox_set_aside
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = ?e, "cannot count the outbox items set aside"),
        }
    }

    async fn send_outbox_item(&self, mut item: OutboxItem) -> anyhow::Result<Sent> {
        for _ in 0..TRIES {
            let request: Signed<LedgerRequest> = serde_json::from_str(&item.request)?;
            let resigned = match self.ledger.submit(&request).await {
                Ok(_) => None,
                Err(e) if e.code() == Some(LedgerErrorCode::ReplayedRequest) => None,
                Err(e) if e.code() == Some(LedgerErrorCode::StaleRequest) => {
                    Some(self.sign(request.payload.action.clone(), now()))
                }
                Err(e) => {
                    // An issuance report must start where the key's previous one ended on
                    // the ledger; after a restored database or a report lost on the way the
                    // two disagree. The count is still unreported: the interval starts at
                    // the ledger's end of the last report instead.
                    let retiled = if e.code() == Some(LedgerErrorCode::InvalidRequest) {
                        self.retile(&request.payload.action).await?
                    } else {
                        None
                    };
                    match retiled {
                        Some(action) => Some(self.sign(action, now())),
                        None if refused_for_good(&e) => return self.set_aside(&item, &e).await,
                        None => {
                            return Err(anyhow::Error::new(e).context(
                                "the ledger did not take a queued request; it stays queued",
                            ));
                        }
                    }
                }
            };
            let Some(resigned) = resigned else {
                self.store.complete_outbox(&item).await?;
                return Ok(Sent::Landed);
            };
            let text = serde_json::to_string(&resigned)?;
            if self
                .store
                .update_outbox(item.id, &item.request, &text)
                .await?
            {
                item.request = text;
                continue;
            }
            // Another process re-signed it first: send its copy (the ledger takes it once,
            // and calls any second sending a replay), or nothing if it is gone.
            match self.store.outbox_item(item.id).await? {
                Some(current) => item = current,
                None => return Ok(Sent::ByAnother),
            }
        }
        Ok(Sent::Queued)
    }

    /// Puts the set-aside item `id` back in line and flushes: the operator's way out once the
    /// cause of a refusal is dealt with (`scrip issuer outbox requeue`).
    pub async fn requeue_outbox(&self, id: i64) -> anyhow::Result<Requeued> {
        if !self.store.requeue_outbox(id).await? {
            anyhow::bail!(
                "no outbox item {id} is set aside; `scrip issuer outbox list` shows them"
            );
        }
        tracing::info!(outbox_id = id, "a set-aside outbox item is queued again");
        self.flush_outbox().await?;
        if let Some(aside) = self
            .store
            .outbox_set_aside()
            .await?
            .into_iter()
            .find(|a| a.item.id == id)
        {
            return Ok(Requeued::SetAsideAgain {
                refusal: aside.refusal,
            });
        }
        Ok(match self.store.outbox_item(id).await? {
            Some(_) => Requeued::Queued,
            None => Requeued::Landed,
        })
    }

    /// Sets `item` aside after the ledger's refusal `e`, with an alarm.
    async fn set_aside(&self, item: &OutboxItem, e: &LedgerClientError) -> anyhow::Result<Sent> {
        let refusal = e.to_string();
        if !self
            .store
            .set_aside_outbox(item.id, &item.request, &refusal, now())
            .await?
        {
            // Re-signed or sent by another process meanwhile: its copy is another request.
            return Ok(Sent::ByAnother);
        }
        tracing::error!(
            outbox_id = item.id,
            follow_up = ?item.on_success,
            refusal = %refusal,
            "the ledger refused a queued request for good; it is set aside for the operator \
             and the others go on"
        );
        Ok(Sent::SetAside)
    }

    /// A refused issuance report moved to start where the ledger says the key's last report
    /// ended, or `None` if it is not a report or already starts there.
    async fn retile(&self, action: &Action) -> anyhow::Result<Option<Action>> {
        let Action::TokensIssued {
            token_key_id,
            count,
            from,
            until,
        } = action
        else {
            return Ok(None);
        };
        let keys = self.ledger.keys(Some(&self.name), None).await?;
        let Some(record) = keys
            .iter()
            .find(|k| &k.info.public_key.id() == token_key_id)
        else {
            return Ok(None);
        };
        let start = record.reported_until;
        if start == *from {
            return Ok(None);
        }
        Ok(Some(Action::TokensIssued {
            token_key_id: *token_key_id,
            count: *count,
            from: start,
            until: (*until).max(start),
        }))
    }

    /// Moves the issuance counted since the last report into signed "tokens issued" entries
    /// (one per key, an aggregate over the interval) and sends them.
    pub async fn report_issuance(&self) -> anyhow::Result<usize> {
        let t = now();
        let sign = |key: TokenKeyId, count: u64, from: UnixSeconds| {
            let request = self.sign(
                Action::TokensIssued {
                    token_key_id: key,
                    count,
                    from,
                    until: t,
                },
                t,
            );
            serde_json::to_string(&request).unwrap_or_default()
        };
        let queued = self.store.queue_issuance_reports(&sign, t).await?;
        self.flush_outbox().await?;
        Ok(queued)
    }
}
