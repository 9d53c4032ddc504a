//! Spending: one token at a time, pending until its outcome is known; an unknown outcome is
//! settled from the ledger's record, never guessed.

use super::{SETTLE_HORIZON_SECS, SpendReceipt, Wallet, WalletError};
use crate::store::{StoredToken, TokenState};
use scrip_common::clients::ClientError;
use scrip_spec::api::ErrorCode as _;
use scrip_spec::api::ledger::NullifierStatus;
use scrip_spec::api::redeemer::RedeemerErrorCode;
use scrip_spec::{CapacityKind, UnixSeconds, now};

impl Wallet {
    /// Spends the token of `kind` closest to expiry at a redeemer; returns the grant.
    pub async fn spend(
        &self,
        kind: &CapacityKind,
        redeemer_url: &str,
    ) -> Result<SpendReceipt, WalletError> {
        self.resolve_pending().await?;
        // Best effort: a refresh left unanswered holds only its own inputs, never this spend.
        let _ = self.resume_refreshes().await;
        // An interrupted spend at this redeemer is finished first: presenting the same token
        // there again is always safe (if its spend committed, the redeemer grants again), and
        // it settles the token instead of leaving it pending.
        let token = match self.store.pending_at(kind.as_str(), redeemer_url).await? {
            Some(pending) => pending,
            None => self
                .store
                .take_for_spend(kind.as_str(), redeemer_url, now())
                .await?
                .ok_or_else(|| WalletError::NoToken {
                    kind: kind.to_string(),
                })?,
        };
        self.redeem_pending(&token, kind, redeemer_url).await
    }

    /// Presents a pending token; settles its state from the answer, or from the ledger when
    /// there is none.
    async fn redeem_pending(
        &self,
        stored: &StoredToken,
        kind: &CapacityKind,
        redeemer_url: &str,
    ) -> Result<SpendReceipt, WalletError> {
        let nullifier = stored.token.nullifier();
        let t = now();
        match self
            .redeemer(redeemer_url)
            .redeem(&stored.token, kind)
            .await
        {
            Ok(r) => {
                self.store
                    .set_state(
                        &nullifier,
                        TokenState::Spent,
                        Some((&r.grant, r.expires_at)),
                        None,
                        t,
                    )
                    .await?;
                Ok(SpendReceipt {
                    grant: r.grant,
                    kind: r.kind.to_string(),
                    expires_at: r.expires_at,
                })
            }
            Err(ClientError::Refused { status, error, .. }) if status >= 500 => {
                // The redeemer could not finish; the spend may have committed all the same:
                // the ledger knows.
                self.settle_at_ledger(&nullifier, t).await?;
                Err(WalletError::RedeemerRefused {
                    code: error.code,
                    message: error.message,
                })
            }
            Err(ClientError::Refused { error, .. }) => {
                use RedeemerErrorCode as Code;
                let state = match error.code {
                    Code::AlreadySpent => TokenState::Spent,
                    Code::KeyNotRedeemable => TokenState::Expired,
                    Code::InvalidSignature | Code::WrongChallenge | Code::MalformedToken => {
                        TokenState::Invalid
                    }
                    // Not spent: the redeemer does not know the key (yet), or another refusal
                    // made before any spend.
                    _ => TokenState::Unspent,
                };
                self.store
                    .set_state(&nullifier, state, None, Some(error.code.as_str()), t)
                    .await?;
                if state == TokenState::Spent {
                    return Err(WalletError::AlreadySpent {
                        first_spent_at: error.details.first_spent_at.unwrap_or(0),
                        first_spent_by: error.details.first_spent_by.unwrap_or_else(|| "?".into()),
                    });
                }
                Err(WalletError::RedeemerRefused {
                    code: error.code,
                    message: error.message,
                })
            }
            Err(
                ClientError::Unreachable { source, .. } | ClientError::BadAnswer { source, .. },
            ) => {
                // The spend may or may not have happened: the ledger knows, in time.
                self.settle_at_ledger(&nullifier, t).await?;
                Err(WalletError::NoAnswer {
                    what: "the redeemer",
                    source,
                })
            }
        }
    }

    /// Settles one pending token whose spend was attempted at `attempted_at` from the
    /// ledger's record. Spent is final. Unspent is final only after [`SETTLE_HORIZON_SECS`]:
    /// until then a spend request for it may still be on its way to the ledger (the redeemer
    /// died, or its answer was lost), so the token stays pending. It stays pending too if the
    /// ledger does not answer.
    async fn settle_at_ledger(
        &self,
        nullifier: &scrip_spec::Nullifier,
        attempted_at: UnixSeconds,
    ) -> anyhow::Result<bool> {
        let t = now();
        let (state, note) = match self.ledger.nullifier(nullifier).await {
            Ok(NullifierStatus::Unspent) if t >= attempted_at + SETTLE_HORIZON_SECS => {
                (TokenState::Unspent, "not spent at the ledger")
            }
            // Spent with its grant lost: presenting it again at the same redeemer gets a
            // fresh grant (PROTOCOL.md section 10.1).
            Ok(NullifierStatus::Spent { .. }) => (TokenState::Spent, "answer lost"),
            Ok(NullifierStatus::Unspent) | Err(_) => return Ok(false),
        };
        self.store
            .set_state(nullifier, state, None, Some(note), t)
            .await?;
        Ok(true)
    }

    /// Settles tokens whose spend outcome is unknown by asking the ledger; how many settled
    /// (see [`Self::settle_at_ledger`] for why some stay pending).
    pub async fn resolve_pending(&self) -> Result<usize, WalletError> {
        let mut settled = 0;
        for stored in self.store.tokens(TokenState::Pending).await? {
            if self
                .settle_at_ledger(&stored.token.nullifier(), stored.updated_at)
                .await?
            {
                settled += 1;
            }
        }
        Ok(settled)
    }
}
