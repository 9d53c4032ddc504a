//! Cards: minted in batches (only their hashes kept), activated for sale, their balance.

use super::{Issuer, OpenError, now};
use crate::store::OnSuccess;
use scrip_spec::CardCode;
use scrip_spec::api::issuer::BalanceResponse;
use scrip_spec::ledger::Action;

impl Issuer {
    /// Mints a batch of `count` cards of `value` credits; returns the batch id and the codes
    /// (shown once, for the printer; only their hashes are kept).
    pub async fn mint_cards(
        &self,
        value: u64,
        count: usize,
    ) -> anyhow::Result<(String, Vec<CardCode>)> {
        anyhow::ensure!(
            value > 0 && count > 0,
            "a batch has at least one card of at least one credit"
        );
        anyhow::ensure!(count <= 1_000_000, "mint at most 1,000,000 cards per batch");
        let codes: Vec<CardCode> = (0..count).map(|_| CardCode::generate()).collect();
        let hashes: Vec<[u8; 32]> = codes.iter().map(CardCode::storage_hash).collect();
        let mut suffix = [0u8; 4];
        rand::fill(&mut suffix);
        let batch_id = format!(
            "b{}-{}",
            now(),
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        self.store
            .create_batch(&batch_id, value, &hashes, now())
            .await?;
        Ok((batch_id, codes))
    }

    /// Activates a minted batch for sale: queues the "cards sold" entry (count and credits)
    /// and sends it; the cards become openable once the ledger has it.
    pub async fn activate_batch(&self, batch_id: &str) -> anyhow::Result<bool> {
        let batch = self
            .store
            .batches()
            .await?
            .into_iter()
            .find(|b| b.batch_id == batch_id)
            .ok_or_else(|| {
                anyhow::anyhow!("no batch {batch_id}; `scrip issuer cards status` lists them")
            })?;
        let request = self.sign(
            Action::CardsSold {
                batch: batch_id.to_owned(),
                count: batch.count,
                credits: batch.count.saturating_mul(batch.value),
            },
            now(),
        );
        let queued = self
            .store
            .set_batch_state(
                batch_id,
                "minted",
                "activating",
                Some((
                    &serde_json::to_string(&request)?,
                    &OnSuccess::ActivateBatch {
                        batch_id: batch_id.to_owned(),
                    },
                )),
                now(),
            )
            .await?;
        if !queued && batch.state != "activating" {
            anyhow::bail!("batch {batch_id} is already {}", batch.state);
        }
        if let Err(e) = self.flush_outbox().await {
            // Queued: `serve` sends it (every minute), or the next activation does.
            tracing::warn!(error = %format!("{e:#}"), "the sale is queued; the ledger did not take it yet");
        }
        let active = self
            .store
            .batches()
            .await?
            .iter()
            .any(|b| b.batch_id == batch_id && b.state == "active");
        if !active {
            // Waiting would not help if the ledger refused the sale for good.
            let follow_up = OnSuccess::ActivateBatch {
                batch_id: batch_id.to_owned(),
            };
            if let Some(aside) = self
                .store
                .outbox_set_aside()
                .await?
                .into_iter()
                .find(|a| a.item.on_success == follow_up)
            {
                anyhow::bail!(
                    "the ledger refused the sale of batch {batch_id} for good ({}); it is set \
                     aside in the outbox (id {}) for the operator",
                    aside.refusal,
                    aside.item.id
                );
            }
        }
        Ok(active)
    }

    /// A card's balance.
    pub async fn balance(&self, code: &str) -> Result<BalanceResponse, OpenError> {
        let code = CardCode::parse(code)?;
        let card = self
            .store
            .card(&code.storage_hash())
            .await?
            .ok_or(OpenError::InvalidCard { found: false })?;
        if card.state == scrip_spec::api::issuer::CardState::Minted {
            return Err(OpenError::InvalidCard { found: true });
        }
        Ok(BalanceResponse {
            state: card.state,
            value: card.value,
            remaining_credits: card.remaining,
        })
    }
}
