//! What a node proposes and how it reads what was ordered: the pool of requests waiting to be
//! proposed, the unit data, and the time the nodes agree on.

use codec::{Decode, Encode};
use scrip_spec::committee::MAX_UNIT_REQUEST_BYTES;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// What one node puts in one unit: its clock and the signed requests it was given, each in
/// its canonical encoding, exactly as the operator signed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Encode, Decode)]
pub struct UnitData {
    /// The proposer's clock, Unix seconds.
    pub time: u64,
    /// Signed requests (`canonical_bytes(Signed<LedgerRequest>)`).
    pub requests: Vec<Vec<u8>>,
    /// In the first unit of a session: the proposer's signature of the head the previous
    /// session ended at.
    pub vote: Option<Vote>,
}

/// A node's signature over a [`CertifiedHead`](scrip_spec::committee::CertifiedHead) of its
/// ledger.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Vote {
    /// The entry.
    pub seq: u64,
    /// Its hash.
    pub head_hash: [u8; 32],
    /// The signature.
    pub signature: [u8; 64],
}

/// SHA-256, for AlephBFT's unit hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Hasher;

impl aleph_bft::Hasher for Sha256Hasher {
    type Hash = [u8; 32];

    fn hash(s: &[u8]) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(s).into()
    }
}

/// Requests this node was given and that the log does not hold yet, by digest. A request is
/// proposed once per session and leaves the pool when any node's copy of it is applied.
///
/// A client sends each request to every node, and each would put it in a unit: four copies of
/// every request ordered and sent to every node, for one that is applied. So a request is
/// first proposed only by its **owner**, the node its digest names ([`owner`]); the others
/// propose it too once it has waited [`Proposing::patience`], which a faulty or absent owner
/// cannot prevent.
#[derive(Debug, Default)]
pub struct Pool {
    inner: Mutex<PoolInner>,
}

#[derive(Debug, Default)]
struct PoolInner {
    items: HashMap<[u8; 32], PoolItem>,
    order: VecDeque<[u8; 32]>,
    bytes: usize,
}

#[derive(Debug)]
struct PoolItem {
    bytes: Arc<Vec<u8>>,
    proposed_in: Option<u64>,
    added: std::time::Instant,
}

/// Which node proposes a request first: the one at `digest`'s first eight bytes modulo `n`.
pub fn owner(digest: &[u8; 32], n: usize) -> usize {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(first) % n.max(1) as u64) as usize
}

/// Who this node is in its session's committee, for [`Pool::take_for_unit`].
#[derive(Debug, Clone, Copy)]
pub struct Proposing {
    /// The session.
    pub session: u64,
    /// This node's index in the session's committee.
    pub me: usize,
    /// The committee's size.
    pub nodes: usize,
    /// How long a request waits for its owner before this node proposes it as well.
    pub patience: std::time::Duration,
}

/// Most bytes of requests a node holds waiting; past it, new requests are refused (503).
pub const MAX_POOL_BYTES: usize = 64 * 1024 * 1024;

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a request; `false` if the pool is full. A request already there stays once.
    pub fn insert(&self, digest: [u8; 32], bytes: Vec<u8>) -> bool {
        let mut pool = self.lock();
        if pool.items.contains_key(&digest) {
            return true;
        }
        if pool.bytes + bytes.len() > MAX_POOL_BYTES {
            return false;
        }
        pool.bytes += bytes.len();
        pool.items.insert(
            digest,
            PoolItem {
                bytes: Arc::new(bytes),
                proposed_in: None,
                added: std::time::Instant::now(),
            },
        );
        pool.order.push_back(digest);
        true
    }

    /// Takes it out: it was applied (or judged) from some node's unit.
    pub fn remove(&self, digest: &[u8; 32]) {
        let mut pool = self.lock();
        if let Some(item) = pool.items.remove(digest) {
            pool.bytes -= item.bytes.len();
        }
    }

    /// Requests not yet proposed in the session, that this node owns or that waited its
    /// patience, up to [`MAX_UNIT_REQUEST_BYTES`], marked as proposed. Those proposed in an
    /// earlier session that ended before ordering them are proposed again.
    pub fn take_for_unit(&self, proposing: Proposing) -> Vec<Vec<u8>> {
        let session = proposing.session;
        let mut pool = self.lock();
        let PoolInner { items, order, .. } = &mut *pool;
        order.retain(|d| items.contains_key(d));
        let mut out = Vec::new();
        let mut size = 0;
        for digest in order.iter() {
            let Some(item) = items.get_mut(digest) else {
                continue;
            };
            if item.proposed_in == Some(session)
                || (owner(digest, proposing.nodes) != proposing.me
                    && item.added.elapsed() < proposing.patience)
            {
                continue;
            }
            if size + item.bytes.len() > MAX_UNIT_REQUEST_BYTES && !out.is_empty() {
                break;
            }
            size += item.bytes.len();
            item.proposed_in = Some(session);
            out.push(item.bytes.as_ref().clone());
        }
        out
    }

    /// How many requests wait.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The time the committee agrees on, from the clocks the ordered units carry: after each
/// unit, the `(f + 1)`-th latest among each node's latest reading, never going back. At
/// least one of the `f + 1` latest readings is an honest node's, so faulty nodes cannot push
/// the time past every honest clock; and at least one honest reading is at or below it, so
/// they cannot hold it back either.
#[derive(Debug, Clone)]
pub struct AgreedTime {
    latest: Vec<Option<u64>>,
    faulty: usize,
    now: u64,
}

impl AgreedTime {
    /// For `n` nodes tolerating `faulty`, starting at `floor` (the last entry's time).
    pub fn new(n: usize, faulty: usize, floor: u64) -> Self {
        Self {
            latest: vec![None; n],
            faulty,
            now: floor,
        }
    }

    /// Takes node `creator`'s reading from its ordered unit; returns the agreed time.
    pub fn observe(&mut self, creator: usize, time: u64) -> u64 {
        if let Some(slot) = self.latest.get_mut(creator) {
            *slot = Some(slot.map_or(time, |t| t.max(time)));
        }
        let mut known: Vec<u64> = self.latest.iter().flatten().copied().collect();
        if known.len() > self.faulty {
            known.sort_unstable_by(|a, b| b.cmp(a));
            self.now = self.now.max(known[self.faulty]);
        }
        self.now
    }

    /// The agreed time.
    pub fn now(&self) -> u64 {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_faulty_clock_neither_pushes_nor_holds_the_time() {
        let mut t = AgreedTime::new(4, 1, 1000);
        assert_eq!(
            t.observe(0, 5000),
            1000,
            "one reading is not enough with f = 1"
        );
        // Node 0 is faulty and far ahead; the honest clocks read about 2000.
        assert_eq!(t.observe(1, 2000), 2000);
        assert_eq!(t.observe(2, 2001), 2001);
        assert_eq!(t.observe(3, 2002), 2002);
        // A faulty clock far behind cannot move the time back either.
        let mut t = AgreedTime::new(4, 1, 1000);
        for (node, time) in [(0, 1), (1, 2000), (2, 2001), (3, 2002)] {
            t.observe(node, time);
        }
        assert_eq!(t.now(), 2001);
        assert_eq!(t.observe(0, 0), 2001, "never goes back");
        // One node alone: its own clock.
        let mut one = AgreedTime::new(1, 0, 10);
        assert_eq!(one.observe(0, 42), 42);
    }

    /// A node alone (it owns every request), in `session`.
    fn alone(session: u64) -> Proposing {
        Proposing {
            session,
            me: 0,
            nodes: 1,
            patience: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn the_pool_proposes_once_per_session_and_forgets_what_was_applied() {
        let pool = Pool::default();
        assert!(pool.insert([1; 32], vec![1; 10]));
        assert!(pool.insert([2; 32], vec![2; 10]));
        assert!(pool.insert([1; 32], vec![1; 10]), "a copy is kept once");
        assert_eq!(pool.take_for_unit(alone(0)).len(), 2);
        assert!(
            pool.take_for_unit(alone(0)).is_empty(),
            "proposed once per session"
        );
        pool.remove(&[1; 32]);
        assert_eq!(
            pool.take_for_unit(alone(1)),
            vec![vec![2; 10]],
            "again in the next session"
        );
        assert_eq!(pool.len(), 1);
        assert!(!pool.insert([3; 32], vec![0; MAX_POOL_BYTES]), "full");
    }

    #[test]
    fn a_request_is_proposed_by_its_owner_and_by_the_others_only_after_waiting() {
        // Digests owned by node 0 and node 1 of four.
        let mut mine = [0u8; 32];
        mine[0] = 4;
        let mut theirs = [0u8; 32];
        theirs[0] = 5;
        assert_eq!((owner(&mine, 4), owner(&theirs, 4)), (0, 1));
        let pool = Pool::default();
        assert!(pool.insert(mine, vec![1]));
        assert!(pool.insert(theirs, vec![2]));
        let patient = Proposing {
            session: 0,
            me: 0,
            nodes: 4,
            patience: std::time::Duration::from_secs(3600),
        };
        assert_eq!(pool.take_for_unit(patient), vec![vec![1]], "its own only");
        let impatient = Proposing {
            patience: std::time::Duration::ZERO,
            ..patient
        };
        assert_eq!(
            pool.take_for_unit(impatient),
            vec![vec![2]],
            "the other's once it waited"
        );
    }
}
