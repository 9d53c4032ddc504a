//! Spending: one token at a time, pending until a grant for it is in hand. A spend whose
//! outcome is unknown (no answer, a 408 or a 5xx, a crash) is finished by presenting the same
//! token to the same redeemer again, which grants again for a token it spent (PROTOCOL.md
//! section 10.1), never by giving the token up: the ledger can only say that it was spent,
//! and a token spent without its grant in hand is value lost.

use super::{SETTLE_HORIZON_SECS, SpendReceipt, Wallet, WalletError};
use crate::store::{StoredToken, TokenState};
use scrip_common::clients::ClientError;
use scrip_spec::api::ErrorCode as _;
use scrip_spec::api::redeemer::{RedeemResponse, RedeemerErrorCode};
use scrip_spec::{CapacityKind, now};
use std::time::Duration;

/// Presentations of one token in one spend before the wallet stops and keeps it pending.
const PRESENT_ATTEMPTS: u32 = 3;
/// The wait before the second presentation; it grows fourfold.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(500);

/// How one presentation ended.
enum Presented {
    /// A grant: the token is spent and its value in hand.
    Granted(RedeemResponse),
    /// No answer, a 408 or a 5xx: the spend may have committed.
    Unknown(WalletError),
    /// A definitive refusal.
    Refused {
        status: u16,
        error: scrip_spec::api::ErrorObject<RedeemerErrorCode>,
    },
}

impl Wallet {
    /// Spends a token of `kind` at a redeemer and returns the grant. A token left pending at
    /// this redeemer by an earlier spend of the same kind is presented again first, so its
    /// grant is collected before any other token is used; otherwise the unspent token of
    /// `kind` closest to expiry is used.
    pub async fn spend(
        &self,
        kind: &CapacityKind,
        redeemer_url: &str,
    ) -> Result<SpendReceipt, WalletError> {
        self.resolve_pending().await?;
        // Best effort: a refresh left unanswered holds only its own inputs, never this spend.
        let _ = self.resume_refreshes().await;
        if let Some(pending) = self.store.pending_at(kind.as_str(), redeemer_url).await? {
            return self.present(&pending, kind, redeemer_url, true).await;
        }
        let Some(token) = self
            .store
            .take_for_spend(kind.as_str(), redeemer_url, now())
            .await?
        else {
            return Err(self.no_token(kind).await?);
        };
        self.present(&token, kind, redeemer_url, false).await
    }

    /// Why there is no token of `kind` to spend, with what the wallet does hold.
    pub(super) async fn no_token(&self, kind: &CapacityKind) -> anyhow::Result<WalletError> {
        let unspent = self.store.tokens(TokenState::Unspent).await?;
        let mut kinds: Vec<String> = unspent.iter().map(|t| t.kind.clone()).collect();
        kinds.dedup();
        let pending_elsewhere: Vec<String> = self
            .store
            .tokens(TokenState::Pending)
            .await?
            .into_iter()
            .filter(|t| t.kind == kind.as_str())
            .filter_map(|t| t.redeemer_url)
            .collect();
        Ok(WalletError::NoToken {
            kind: kind.to_string(),
            held_kinds: kinds,
            pending_at: pending_elsewhere,
        })
    }

    /// Presents a pending token at its redeemer until a definitive answer, a few times at
    /// most. `earlier_unknown` says an earlier presentation's outcome is unknown, so a refusal
    /// now does not prove the token unspent.
    async fn present(
        &self,
        stored: &StoredToken,
        kind: &CapacityKind,
        redeemer_url: &str,
        mut earlier_unknown: bool,
    ) -> Result<SpendReceipt, WalletError> {
        let nullifier = stored.token.nullifier();
        let mut wait = FIRST_RETRY_WAIT;
        let mut attempt = 1;
        loop {
            let t = now();
            match self.present_once(stored, kind, redeemer_url).await {
                Presented::Granted(r) => {
                    // Recorded before it is shown: a crash after this loses nothing.
                    self.store
                        .set_state(
                            &nullifier,
                            TokenState::Spent,
                            Some((&r.grant, r.expires_at)),
                            Some("granted"),
                            now(),
                        )
                        .await?;
                    return Ok(SpendReceipt {
                        grant: r.grant,
                        kind: r.kind.to_string(),
                        expires_at: r.expires_at,
                        presented_again: earlier_unknown,
                    });
                }
                Presented::Refused { status, error } => {
                    return Err(self
                        .settle_refusal(&nullifier, status, error, earlier_unknown)
                        .await?);
                }
                Presented::Unknown(e) => {
                    self.keep_pending(&nullifier, t).await?;
                    earlier_unknown = true;
                    if attempt >= PRESENT_ATTEMPTS {
                        return Err(e);
                    }
                }
            }
            attempt += 1;
            tokio::time::sleep(wait).await;
            wait *= 4;
        }
    }

    async fn present_once(
        &self,
        stored: &StoredToken,
        kind: &CapacityKind,
        redeemer_url: &str,
    ) -> Presented {
        match self
            .redeemer(redeemer_url)
            .redeem(&stored.token, kind)
            .await
        {
            Ok(r) => Presented::Granted(r),
            // 408: the redeemer stopped waiting, but its redemption may still commit (10.1);
            // 5xx: it could not finish, and the spend may have committed all the same.
            Err(ClientError::Refused { status, error, .. }) if status == 408 || status >= 500 => {
                Presented::Unknown(WalletError::RedeemerUnsure {
                    redeemer: redeemer_url.to_owned(),
                    status,
                    code: error.code,
                    message: error.message,
                })
            }
            Err(ClientError::Refused { status, error, .. }) => Presented::Refused { status, error },
            Err(ClientError::Unreachable { source, .. }) => {
                Presented::Unknown(WalletError::NoAnswer {
                    what: "the redeemer",
                    source: source.into(),
                })
            }
            Err(ClientError::BadAnswer { source, .. }) => {
                Presented::Unknown(WalletError::NoAnswer {
                    what: "the redeemer",
                    source: source.into(),
                })
            }
        }
    }

    /// Keeps a token pending after a presentation whose outcome is unknown (presented at
    /// `at`: the settling horizon runs from the latest presentation).
    pub(super) async fn keep_pending(
        &self,
        nullifier: &scrip_spec::Nullifier,
        at: scrip_spec::UnixSeconds,
    ) -> anyhow::Result<()> {
        self.store
            .set_state(
                nullifier,
                TokenState::Pending,
                None,
                Some("outcome unknown"),
                at,
            )
            .await
    }

    /// The token's state after a definitive refusal.
    pub(super) async fn settle_refusal(
        &self,
        nullifier: &scrip_spec::Nullifier,
        status: u16,
        error: scrip_spec::api::ErrorObject<RedeemerErrorCode>,
        earlier_unknown: bool,
    ) -> anyhow::Result<WalletError> {
        use RedeemerErrorCode as Code;
        let state = match error.code {
            Code::AlreadySpent => TokenState::Spent,
            Code::KeyNotRedeemable => TokenState::Expired,
            // A refusal now says nothing of an earlier presentation that may have committed:
            // the token stays pending until the redeemer grants or the ledger shows it unspent.
            _ if earlier_unknown => TokenState::Pending,
            Code::InvalidSignature | Code::WrongChallenge | Code::MalformedToken => {
                TokenState::Invalid
            }
            // Refused before any spend: the redeemer does not know the key (yet), it is rate
            // limited, or another refusal made before the ledger.
            _ => TokenState::Unspent,
        };
        self.store
            .set_state(nullifier, state, None, Some(error.code.as_str()), now())
            .await?;
        Ok(if error.code == Code::AlreadySpent {
            WalletError::AlreadySpent {
                first_spent_at: error.details.first_spent_at.unwrap_or(0),
                first_spent_by: error.details.first_spent_by.unwrap_or_else(|| "?".into()),
            }
        } else {
            WalletError::RedeemerRefused {
                status,
                code: error.code,
                message: error.message,
            }
        })
    }

    /// Returns to unspent every pending token that the ledger shows unspent at least
    /// [`SETTLE_HORIZON_SECS`] after its latest presentation, asking without naming them
    /// (by prefix, [`Self::spent_among`]); how many. A pending token the ledger shows spent
    /// stays pending: only its redeemer can hand over its grant, and it does when the token
    /// is presented there again. If the ledger does not answer, nothing changes.
    pub async fn resolve_pending(&self) -> Result<usize, WalletError> {
        let t = now();
        let due: Vec<StoredToken> = self
            .store
            .tokens(TokenState::Pending)
            .await?
            .into_iter()
            .filter(|p| t >= p.updated_at + SETTLE_HORIZON_SECS)
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let nullifiers: Vec<_> = due.iter().map(|p| p.token.nullifier()).collect();
        let Ok(spent) = self.spent_among(&nullifiers).await else {
            return Ok(0);
        };
        let mut released = 0;
        for n in &nullifiers {
            if !spent.contains_key(n) {
                self.store
                    .set_state(
                        n,
                        TokenState::Unspent,
                        None,
                        Some("not spent at the ledger"),
                        t,
                    )
                    .await?;
                released += 1;
            }
        }
        Ok(released)
    }
}
