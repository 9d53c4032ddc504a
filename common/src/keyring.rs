//! The key ring the issuer and the redeemer keep: token keys by id, replaced whole on reload,
//! and reloaded when a request names an id not yet known, at most once a second, so random key
//! ids cannot turn into a flood of reloads.

use scrip_spec::TokenKeyId;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Least time between two reloads caused by unknown ids.
pub const MIN_RELOAD_GAP: Duration = Duration::from_secs(1);

/// Keys of type `K` by id.
#[derive(Debug)]
pub struct KeyRing<K> {
    keys: RwLock<HashMap<TokenKeyId, Arc<K>>>,
    last_reload: tokio::sync::Mutex<Option<Attempt>>,
}

/// The last reload tried: when, and whether it loaded.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    at: Instant,
    ok: bool,
}

impl Attempt {
    /// Records an attempt that ended now with `result`, which is passed on.
    fn record<T, E>(last: &mut Option<Attempt>, result: Result<T, E>) -> Result<T, E> {
        *last = Some(Attempt {
            at: Instant::now(),
            ok: result.is_ok(),
        });
        result
    }

    /// Waits until [`MIN_RELOAD_GAP`] has passed since the attempt `last`, if any.
    async fn wait_gap(last: Option<Attempt>) {
        if let Some(a) = last {
            tokio::time::sleep(MIN_RELOAD_GAP.saturating_sub(a.at.elapsed())).await;
        }
    }
}

impl<K> Default for KeyRing<K> {
    fn default() -> Self {
        Self {
            keys: RwLock::new(HashMap::new()),
            last_reload: tokio::sync::Mutex::new(None),
        }
    }
}

impl<K> KeyRing<K> {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// A key as known now, without reloading.
    pub fn get(&self, id: &TokenKeyId) -> Option<Arc<K>> {
        self.keys.read().ok().and_then(|k| k.get(id).cloned())
    }

    /// Every key known now.
    pub fn all(&self) -> Vec<Arc<K>> {
        self.keys
            .read()
            .map(|k| k.values().cloned().collect())
            .unwrap_or_default()
    }

    fn replace(&self, keys: HashMap<TokenKeyId, Arc<K>>) {
        if let Ok(mut current) = self.keys.write() {
            *current = keys;
        }
    }

    /// Replaces the keys with what `load` returns.
    pub async fn reload<E, Fut>(&self, load: impl FnOnce() -> Fut) -> Result<(), E>
    where
        Fut: Future<Output = Result<HashMap<TokenKeyId, Arc<K>>, E>>,
    {
        let mut last = self.last_reload.lock().await;
        let keys = Attempt::record(&mut last, load().await)?;
        self.replace(keys);
        Ok(())
    }

    /// Reloads for a request that found nothing it can use among the keys known now (a key
    /// announced a moment ago), as [`KeyRing::get_or_reload`] does for an unknown id: waiting
    /// if the last reload was less than [`MIN_RELOAD_GAP`] ago, and not at all if a reload
    /// made after the request arrived already answered it, or failed (the gap runs from a
    /// failed attempt too, so a directory that cannot be read is not asked again at once by
    /// every request waiting on it).
    pub async fn reload_for_miss<E, Fut>(&self, load: impl FnOnce() -> Fut) -> Result<(), E>
    where
        Fut: Future<Output = Result<HashMap<TokenKeyId, Arc<K>>, E>>,
    {
        let asked = Instant::now();
        let mut last = self.last_reload.lock().await;
        if last.is_some_and(|a| a.at > asked) {
            return Ok(());
        }
        Attempt::wait_gap(*last).await;
        let keys = Attempt::record(&mut last, load().await)?;
        self.replace(keys);
        Ok(())
    }

    /// A key by id. An unknown id reloads the ring, waiting if the last reload was less than
    /// [`MIN_RELOAD_GAP`] ago (so a key added a moment ago is still found), and sharing one
    /// reload between every request that waits for it.
    pub async fn get_or_reload<E, Fut>(
        &self,
        id: &TokenKeyId,
        load: impl FnOnce() -> Fut,
    ) -> Result<Option<Arc<K>>, E>
    where
        Fut: Future<Output = Result<HashMap<TokenKeyId, Arc<K>>, E>>,
    {
        if let Some(k) = self.get(id) {
            return Ok(Some(k));
        }
        let asked = Instant::now();
        let mut last = self.last_reload.lock().await;
        if let Some(k) = self.get(id) {
            return Ok(Some(k));
        }
        if last.is_some_and(|a| a.ok && a.at > asked) {
            // A reload made after this request arrived did not find the key.
            return Ok(None);
        }
        // After a failed attempt too: the gap bounds the attempts, not only the reloads.
        Attempt::wait_gap(*last).await;
        let keys = Attempt::record(&mut last, load().await)?;
        self.replace(keys);
        Ok(self.get(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ring_of(ids: &[u8]) -> HashMap<TokenKeyId, Arc<u8>> {
        ids.iter()
            .map(|i| (TokenKeyId([*i; 32]), Arc::new(*i)))
            .collect()
    }

    #[tokio::test]
    async fn an_unknown_id_reloads_once_and_concurrent_misses_share_it() {
        let ring: KeyRing<u8> = KeyRing::new();
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(ring_of(&[1, 2]))
        };
        assert_eq!(ring.get(&TokenKeyId([1; 32])), None);
        let (a, b) = tokio::join!(
            ring.get_or_reload(&TokenKeyId([1; 32]), load),
            ring.get_or_reload(&TokenKeyId([2; 32]), load)
        );
        assert_eq!(a, Ok(Some(Arc::new(1))));
        assert_eq!(b, Ok(Some(Arc::new(2))));
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one reload served both");
        // A known id never reloads; an id still unknown after a reload it waited for is None.
        assert_eq!(
            ring.get_or_reload(&TokenKeyId([1; 32]), load).await,
            Ok(Some(Arc::new(1)))
        );
        assert_eq!(
            ring.get_or_reload(&TokenKeyId([9; 32]), load).await,
            Ok(None)
        );
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        assert_eq!(ring.all().len(), 2);
    }

    #[tokio::test]
    async fn a_miss_just_after_a_reload_still_finds_a_key_added_since() {
        let ring: KeyRing<u8> = KeyRing::new();
        ring.reload(|| async { Ok::<_, ()>(ring_of(&[])) })
            .await
            .expect("load");
        // The key is added a moment after that reload; the miss waits out the gap and reloads
        // once for the requests waiting together.
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(ring_of(&[3]))
        };
        let (a, b) = tokio::join!(ring.reload_for_miss(load), ring.reload_for_miss(load));
        assert_eq!((a, b), (Ok(()), Ok(())));
        assert_eq!(ring.get(&TokenKeyId([3; 32])), Some(Arc::new(3)));
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one reload served both");
    }

    #[tokio::test]
    async fn a_failed_reload_keeps_the_keys_it_had() {
        let ring: KeyRing<u8> = KeyRing::new();
        ring.reload(|| async { Ok::<_, ()>(ring_of(&[1])) })
            .await
            .expect("load");
        let failed = ring
            .get_or_reload(&TokenKeyId([2; 32]), || async {
                Err::<HashMap<_, _>, _>("down")
            })
            .await;
        assert_eq!(failed, Err("down"));
        assert_eq!(ring.get(&TokenKeyId([1; 32])), Some(Arc::new(1)));
    }

    /// With the directory failing (the ledger down or refusing), misses still reload at most
    /// once a second: every request waiting on the failed attempt shares it, instead of each
    /// trying again in turn at once.
    #[tokio::test]
    async fn a_failed_reload_is_not_tried_again_at_once_by_every_waiting_request() {
        let ring: KeyRing<u8> = KeyRing::new();
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err::<HashMap<_, _>, _>("down")
        };
        let id = TokenKeyId([2; 32]);
        let started = Instant::now();
        let (a, b, c) = tokio::join!(
            ring.reload_for_miss(load),
            ring.reload_for_miss(load),
            ring.reload_for_miss(load),
        );
        assert_eq!(a, Err("down"));
        assert!(
            b.is_ok() && c.is_ok(),
            "{b:?} {c:?}: they found nothing to use"
        );
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one attempt for all three");
        // The next miss, of either kind, waits out the gap from that failed attempt.
        assert_eq!(ring.get_or_reload(&id, load).await, Err("down"));
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        assert!(started.elapsed() >= MIN_RELOAD_GAP);
    }
}
