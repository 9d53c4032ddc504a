//! The outbox: signed ledger requests (sales, issuance reports) queued in the store with the
//! change they record, and sent until the ledger has them.

use super::{Issuer, now};
use crate::store::OutboxItem;
use scrip_spec::api::ledger::LedgerErrorCode;
use scrip_spec::ledger::{Action, LedgerRequest};
use scrip_spec::{Signed, TokenKeyId, UnixSeconds};

impl Issuer {
    /// Sends every queued ledger request. A request the ledger already has counts as sent; one
    /// refused as stale is signed again with a fresh timestamp (the ledger checks replay
    /// first, so "stale" proves it was never applied). Returns how many were sent.
    pub async fn flush_outbox(&self) -> anyhow::Result<usize> {
        let mut sent = 0;
        for item in self.store.outbox().await? {
            if self.send_outbox_item(&item).await? {
                sent += 1;
            }
        }
        Ok(sent)
    }

    async fn send_outbox_item(&self, item: &OutboxItem) -> anyhow::Result<bool> {
        let mut request: Signed<LedgerRequest> = serde_json::from_str(&item.request)?;
        for _ in 0..2 {
            match self.ledger.submit(&request).await {
                Ok(_) => {}
                Err(e) if e.code() == Some(LedgerErrorCode::ReplayedRequest) => {}
                Err(e) if e.code() == Some(LedgerErrorCode::StaleRequest) => {
                    request = self.sign(request.payload.action.clone(), now());
                    self.store
                        .update_outbox(item.id, &serde_json::to_string(&request)?)
                        .await?;
                    continue;
                }
                // An issuance report must start where the key's previous one ended on the
                // ledger; after a restored database or a report lost on the way the two
                // disagree. The count is still unreported: the interval starts at the ledger's
                // end of the last report instead.
                Err(e) if e.code() == Some(LedgerErrorCode::InvalidRequest) => {
                    let Some(action) = self.retile(&request.payload.action).await? else {
                        return Err(anyhow::Error::new(e)
                            .context("the ledger did not take a queued request; it stays queued"));
                    };
                    request = self.sign(action, now());
                    self.store
                        .update_outbox(item.id, &serde_json::to_string(&request)?)
                        .await?;
                    continue;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context("the ledger did not take a queued request; it stays queued"));
                }
            }
            self.store.complete_outbox(item).await?;
            return Ok(true);
        }
        Ok(false)
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
