//! The key directory, cached from the ledger: refreshed on a schedule and when a token names
//! a key not yet known (at most once a second, so random key ids cannot flood the ledger).

use scrip_common::clients::{LedgerClient, LedgerClientError as ClientError};
use scrip_spec::{TokenChallenge, TokenKeyId, TokenKeyInfo};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

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
    keys: RwLock<HashMap<TokenKeyId, Arc<CachedKey>>>,
    last_refresh: Mutex<Option<Instant>>,
}

const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);

impl KeyCache {
    /// An empty cache of `ledger`'s directory.
    pub fn new(ledger: LedgerClient) -> Self {
        Self {
            ledger,
            keys: RwLock::new(HashMap::new()),
            last_refresh: Mutex::new(None),
        }
    }

    /// Reloads the whole directory.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let mut last = self.last_refresh.lock().await;
        self.refresh_locked(&mut last).await
    }

    async fn refresh_locked(&self, last: &mut Option<Instant>) -> Result<(), ClientError> {
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
        if let Ok(mut keys) = self.keys.write() {
            *keys = map;
        }
        *last = Some(Instant::now());
        Ok(())
    }

    fn lookup(&self, id: &TokenKeyId) -> Option<Arc<CachedKey>> {
        self.keys.read().ok().and_then(|k| k.get(id).cloned())
    }

    /// A key by id. An unknown id triggers a refresh, waiting if the last one was less than a
    /// second ago (so a key announced a moment ago is still found), and sharing one refresh
    /// between all the requests that wait for it.
    pub async fn get(&self, id: &TokenKeyId) -> Result<Option<Arc<CachedKey>>, ClientError> {
        if let Some(k) = self.lookup(id) {
            return Ok(Some(k));
        }
        let asked = Instant::now();
        let mut last = self.last_refresh.lock().await;
        if let Some(k) = self.lookup(id) {
            return Ok(Some(k));
        }
        if last.is_some_and(|t| t > asked) {
            // A refresh made after this request arrived did not find the key.
            return Ok(None);
        }
        if let Some(t) = *last {
            let wait = MIN_REFRESH_GAP.saturating_sub(t.elapsed());
            tokio::time::sleep(wait).await;
        }
        self.refresh_locked(&mut last).await?;
        Ok(self.lookup(id))
    }
}
