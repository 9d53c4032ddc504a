//! The key directory, cached from the ledger: refreshed on a schedule and when a token names
//! a key not yet known (at most once a second, so random key ids cannot flood the ledger).

use scrip_common::clients::{LedgerClient, LedgerClientError as ClientError};
use scrip_common::keyring::KeyRing;
use scrip_spec::{TokenChallenge, TokenKeyId, TokenKeyInfo};
use std::collections::HashMap;
use std::sync::Arc;

/// A key as a redeemer needs it.
#[derive(Debug)]
pub struct CachedKey {
    /// Its metadata.
    pub info: TokenKeyInfo,
    /// Revoked on the ledger.
    pub revoked: bool,
    /// Digest of `TokenChallenge(0x0002, info.issuer, "", "")`, computed once.
    pub challenge_digest: [u8; 32],
}

/// The cache.
#[derive(Debug)]
pub struct KeyCache {
    ledger: LedgerClient,
    ring: KeyRing<CachedKey>,
}

impl KeyCache {
    /// An empty cache of `ledger`'s directory.
    pub fn new(ledger: LedgerClient) -> Self {
        Self {
            ledger,
            ring: KeyRing::new(),
        }
    }

    /// Reloads the whole directory.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        self.ring.reload(|| self.load()).await
    }

    async fn load(&self) -> Result<HashMap<TokenKeyId, Arc<CachedKey>>, ClientError> {
        let records = self.ledger.keys(None, None).await?;
        let mut map = HashMap::with_capacity(records.len());
        for r in records {
            let Ok(challenge) = TokenChallenge::for_issuer(&r.info.issuer) else {
                continue;
            };
            map.insert(
                r.info.public_key.id(),
                Arc::new(CachedKey {
                    challenge_digest: challenge.digest(),
                    revoked: r.revoked,
                    info: r.info,
                }),
            );
        }
        Ok(map)
    }

    /// The latest `redeem_until` of any key in the directory: no token of a key known now can
    /// be redeemed after it.
    pub fn latest_redeem_until(&self) -> Option<scrip_spec::UnixSeconds> {
        self.ring.all().iter().map(|k| k.info.redeem_until).max()
    }

    /// The keys whose tokens of `kind` can be spent at `now` (announced, not revoked, in
    /// their window), newest first: the ones an origin challenges for. With none known, the
    /// directory is reloaded first ([`KeyRing::reload_for_miss`]: at most once a second).
    pub async fn redeemable(
        &self,
        kind: &scrip_spec::CapacityKind,
        now: scrip_spec::UnixSeconds,
    ) -> Vec<Arc<CachedKey>> {
        let keys = self.redeemable_known(kind, now);
        if !keys.is_empty() {
            return keys;
        }
        if let Err(e) = self.ring.reload_for_miss(|| self.load()).await {
            tracing::warn!(error = %e, "the key directory could not be reloaded");
        }
        self.redeemable_known(kind, now)
    }

    fn redeemable_known(
        &self,
        kind: &scrip_spec::CapacityKind,
        now: scrip_spec::UnixSeconds,
    ) -> Vec<Arc<CachedKey>> {
        let mut keys: Vec<Arc<CachedKey>> = self
            .ring
            .all()
            .into_iter()
            .filter(|k| !k.revoked && &k.info.kind == kind && k.info.can_redeem_at(now))
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.info.valid_from));
        keys
    }

    /// A key by id; an unknown id reloads the directory (see [`KeyRing::get_or_reload`]).
    pub async fn get(&self, id: &TokenKeyId) -> Result<Option<Arc<CachedKey>>, ClientError> {
        self.ring.get_or_reload(id, || self.load()).await
    }
}
