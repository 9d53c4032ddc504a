//! The redeemer's storage: grants (hashed) and, in optimistic mode, spends not yet committed.
//! SQLite; the grants survive a restart of the sidecar.

use scrip_spec::{CapacityKind, Nullifier, Token, UnixSeconds};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Row as _, SqlitePool};
use std::collections::HashMap;
use std::str::FromStr as _;

/// A grant's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantState {
    /// Handed out, not yet used.
    Issued,
    /// Used by the relay.
    Consumed,
    /// Replaced by a fresh grant after a lost answer.
    Revoked,
    /// Withdrawn because the ledger refused its spend (optimistic mode): the token is spent
    /// elsewhere, and no new grant may ever be given for it.
    Refused,
}

impl GrantState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "issued" => Self::Issued,
            "consumed" => Self::Consumed,
            "revoked" => Self::Revoked,
            "refused" => Self::Refused,
            _ => return None,
        })
    }
}

/// A stored grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// Hash of the code.
    pub hash: [u8; 32],
    /// Its kind.
    pub kind: CapacityKind,
    /// Expiry.
    pub expires_at: UnixSeconds,
    /// State.
    pub state: GrantState,
}

/// What this redeemer has granted for a nullifier before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// Nothing.
    None,
    /// Grants, none used.
    Unconsumed,
    /// A grant was used: the token is spent for good.
    Consumed,
    /// The ledger refused its spend: the token was spent elsewhere.
    Refused,
}

/// What consuming a grant found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// Consumed now.
    Consumed,
    /// No such grant.
    Unknown,
    /// Already consumed.
    Used,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
    /// For another kind (not consumed).
    WrongKind,
}

/// The redeemer's store.
#[derive(Debug, Clone)]
pub struct RedeemerStore {
    pool: SqlitePool,
}

/// A grant to store: see [`RedeemerStore::insert_grants`].
#[derive(Debug, Clone)]
pub struct NewGrant {
    /// The grant code's storage hash.
    pub hash: [u8; 32],
    /// What it buys.
    pub kind: CapacityKind,
    /// The spent token's nullifier.
    pub nullifier: Nullifier,
    /// When it expires.
    pub expires_at: UnixSeconds,
    /// In optimistic mode, the token whose spend is still to send to the ledger.
    pub pending: Option<Token>,
    /// Now.
    pub now: UnixSeconds,
}

/// Rows per multi-row statement: 6 columns each stays far below SQLite's 32,766 parameters.
const MAX_ROWS_PER_STATEMENT: usize = 1000;

/// `(?, ?), (?, ?)`-style placeholders for `rows` rows of `columns` values, or `?, ?` for
/// one column.
fn placeholders(rows: usize, columns: usize) -> String {
    let row = if columns == 1 {
        "?".to_owned()
    } else {
        format!("({})", vec!["?"; columns].join(", "))
    };
    vec![row; rows].join(", ")
}

async fn history_in(
    conn: &mut sqlx::SqliteConnection,
    nullifier: &Nullifier,
) -> anyhow::Result<History> {
    let row = sqlx::query(
        "SELECT COUNT(*), COALESCE(SUM(state = 'consumed'), 0), COALESCE(SUM(state = 'refused'), 0) \
         FROM grants WHERE nullifier = ?",
    )
    .bind(&nullifier.0[..])
    .fetch_one(conn)
    .await?;
    let (n, consumed, refused): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    Ok(if consumed > 0 {
        History::Consumed
    } else if refused > 0 {
        History::Refused
    } else if n > 0 {
        History::Unconsumed
    } else {
        History::None
    })
}

/// A stored 32-byte value; anything else means the database was changed by hand.
fn bytes32(bytes: Vec<u8>, what: &str) -> anyhow::Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("corrupt {what}: not 32 bytes"))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl RedeemerStore {
    /// Opens (creating if needed) and migrates. `fsync_each_commit` is needed in optimistic
    /// mode, where a pending spend lost to a power cut would be capacity given and never
    /// recorded.
    pub async fn connect(url: &str, fsync_each_commit: bool) -> anyhow::Result<Self> {
        anyhow::ensure!(
            url.starts_with("sqlite:"),
            "the redeemer stores grants in SQLite: use sqlite://PATH"
        );
        let options = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
        // In strict mode grants need not fsync each commit: WAL with synchronous=NORMAL survives
        // a killed process, and a grant lost to a power cut is recovered by the lost-answer
        // path (the wallet presents the token again; this redeemer spent it, has no consumed
        // grant for it, and grants anew). Per-grant fsync capped redemptions at about 1,100/s
        // on the development machine.
        let pool = scrip_common::pool::durable_pool(options, fsync_each_commit).await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Stores a new grant, revoking the nullifier's earlier unconsumed grants (a lost answer
    /// replaced), and with `pending` records the spend for the batch (optimistic mode), all in
    /// one transaction. Refuses (returns the history) if a grant of the nullifier was already
    /// consumed or refused, checked inside the same transaction so no race can give two.
    pub async fn insert_grant(
        &self,
        hash: &[u8; 32],
        kind: &CapacityKind,
        nullifier: &Nullifier,
        expires_at: UnixSeconds,
        pending: Option<&Token>,
        now: UnixSeconds,
    ) -> anyhow::Result<Result<(), History>> {
        let grant = NewGrant {
            hash: *hash,
            kind: kind.clone(),
            nullifier: *nullifier,
            expires_at,
            pending: pending.cloned(),
            now,
        };
        let mut outcomes = self.insert_grants(std::slice::from_ref(&grant)).await?;
        outcomes
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no outcome for the grant"))
    }

    /// [`Self::insert_grant`] for many grants in one transaction (group commit), each with
    /// its own outcome, in order. A nullifier twice in the batch behaves as two grants one
    /// after the other: the earlier is stored already revoked.
    pub async fn insert_grants(
        &self,
        grants: &[NewGrant],
    ) -> anyhow::Result<Vec<Result<(), History>>> {
        if grants.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut blocked: HashMap<Nullifier, History> = HashMap::new();
        for chunk in grants.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT nullifier, state FROM grants WHERE state IN ('consumed', 'refused') \
                     AND nullifier IN ({})",
                placeholders(chunk.len(), 1)
            );
            let mut query = sqlx::query(&sql);
            for grant in chunk {
                query = query.bind(&grant.nullifier.0[..]);
            }
            for row in query.fetch_all(&mut *tx).await? {
                let nullifier = Nullifier(bytes32(row.get(0), "nullifier")?);
                let state: String = row.get(1);
                // Consumed outranks refused, as in `history_in`.
                if state == "consumed" {
                    blocked.insert(nullifier, History::Consumed);
                } else {
                    blocked.entry(nullifier).or_insert(History::Refused);
                }
            }
        }
        let outcomes: Vec<Result<(), History>> = grants
            .iter()
            .map(|grant| match blocked.get(&grant.nullifier) {
                Some(history) => Err(*history),
                None => Ok(()),
            })
            .collect();
        let stored: Vec<&NewGrant> = grants
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(grant, _)| grant)
            .collect();
        // The last grant of each nullifier stays issued; earlier ones are replaced.
        let mut last: HashMap<Nullifier, usize> = HashMap::new();
        for (i, grant) in stored.iter().enumerate() {
            last.insert(grant.nullifier, i);
        }
        for chunk in stored.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE grants SET state = 'revoked' WHERE state = 'issued' AND nullifier IN ({})",
                placeholders(chunk.len(), 1)
            );
            let mut query = sqlx::query(&sql);
            for grant in chunk {
                query = query.bind(&grant.nullifier.0[..]);
            }
            query.execute(&mut *tx).await?;
        }
        for (chunk_no, chunk) in stored.chunks(MAX_ROWS_PER_STATEMENT).enumerate() {
            let sql = format!(
                "INSERT INTO grants (hash, kind, nullifier, expires_at, state, created_at) VALUES {}",
                placeholders(chunk.len(), 6)
            );
            let mut query = sqlx::query(&sql);
            for (j, grant) in chunk.iter().enumerate() {
                let i = chunk_no * MAX_ROWS_PER_STATEMENT + j;
                let state = if last.get(&grant.nullifier) == Some(&i) {
                    "issued"
                } else {
                    "revoked"
                };
                query = query
                    .bind(&grant.hash[..])
                    .bind(grant.kind.as_str())
                    .bind(&grant.nullifier.0[..])
                    .bind(to_i64(grant.expires_at))
                    .bind(state)
                    .bind(to_i64(grant.now));
            }
            query.execute(&mut *tx).await?;
        }
        let pending: Vec<&NewGrant> = stored
            .iter()
            .copied()
            .filter(|g| g.pending.is_some())
            .collect();
        for chunk in pending.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO pending_spends (nullifier, key_id, token, created_at) VALUES {} \
                     ON CONFLICT (nullifier) DO NOTHING",
                placeholders(chunk.len(), 4)
            );
            let mut query = sqlx::query(&sql);
            for grant in chunk {
                let (key, token) = grant
                    .pending
                    .as_ref()
                    .map(|t| (t.token_key_id.0.to_vec(), t.to_bytes()))
                    .unwrap_or_default();
                query = query
                    .bind(&grant.nullifier.0[..])
                    .bind(key)
                    .bind(token)
                    .bind(to_i64(grant.now));
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// What this redeemer granted for `nullifier` before.
    pub async fn history(&self, nullifier: &Nullifier) -> anyhow::Result<History> {
        let mut conn = self.pool.acquire().await?;
        history_in(&mut conn, nullifier).await
    }

    /// Consumes a grant atomically (one of two concurrent consumes wins).
    pub async fn consume(
        &self,
        hash: &[u8; 32],
        kind: &CapacityKind,
        now: UnixSeconds,
    ) -> anyhow::Result<ConsumeOutcome> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT kind, expires_at, state FROM grants WHERE hash = ?")
            .bind(&hash[..])
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(ConsumeOutcome::Unknown);
        };
        let stored_kind: String = row.get(0);
        let expires_at: i64 = row.get(1);
        let state: String = row.get(2);
        let outcome = match GrantState::parse(&state) {
            Some(GrantState::Revoked | GrantState::Refused) => ConsumeOutcome::Revoked,
            Some(GrantState::Consumed) => ConsumeOutcome::Used,
            None => anyhow::bail!("grant state {state:?} is corrupt"),
            Some(GrantState::Issued) if to_i64(now) > expires_at => ConsumeOutcome::Expired,
            Some(GrantState::Issued) if stored_kind != kind.as_str() => ConsumeOutcome::WrongKind,
            Some(GrantState::Issued) => {
                sqlx::query(
                    "UPDATE grants SET state = 'consumed' WHERE hash = ? AND state = 'issued'",
                )
                .bind(&hash[..])
                .execute(&mut *tx)
                .await?;
                ConsumeOutcome::Consumed
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Withdraws the unconsumed grants of a nullifier whose optimistic spend the ledger
    /// refused, for good; returns how many grants of it were already consumed.
    pub async fn revoke_nullifier(&self, nullifier: &Nullifier) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE grants SET state = 'refused' WHERE nullifier = ? AND state IN ('issued', 'revoked')")
            .bind(&nullifier.0[..])
            .execute(&mut *tx)
            .await?;
        let consumed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM grants WHERE nullifier = ? AND state = 'consumed'",
        )
        .bind(&nullifier.0[..])
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(u64::try_from(consumed).unwrap_or(0))
    }

    /// Spends granted optimistically and not yet committed, oldest first.
    pub async fn pending_spends(&self, limit: usize) -> anyhow::Result<Vec<Token>> {
        // Rows from before tokens were kept (no token) cannot be spent at the ledger.
        let rows = sqlx::query(
            "SELECT token FROM pending_spends WHERE token IS NOT NULL \
             ORDER BY created_at LIMIT ?",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let bytes: Vec<u8> = row.get(0);
                Token::from_bytes(&bytes)
                    .map_err(|_| anyhow::anyhow!("a pending spend's stored token is corrupt"))
            })
            .collect()
    }

    /// Forgets pending spends the ledger has decided.
    pub async fn clear_pending(&self, nullifiers: &[Nullifier]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for n in nullifiers {
            sqlx::query("DELETE FROM pending_spends WHERE nullifier = ?")
                .bind(&n.0[..])
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// A grant by hash (for tests and status).
    pub async fn grant(&self, hash: &[u8; 32]) -> anyhow::Result<Option<GrantRecord>> {
        let row = sqlx::query("SELECT kind, expires_at, state FROM grants WHERE hash = ?")
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let kind: String = row.get(0);
            let state: String = row.get(2);
            Ok(GrantRecord {
                hash: *hash,
                kind: kind.parse()?,
                expires_at: u64::try_from(row.get::<i64, _>(1)).unwrap_or(0),
                state: GrantState::parse(&state)
                    .ok_or_else(|| anyhow::anyhow!("corrupt grant state"))?,
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scrip_spec::TokenKeyId;

    fn grant(hash: u8, nullifier: u8, pending: bool) -> NewGrant {
        NewGrant {
            hash: [hash; 32],
            kind: CapacityKind::new("queue").expect("kind"),
            nullifier: Nullifier([nullifier; 32]),
            expires_at: 2_000_000_000,
            pending: pending.then_some(Token {
                nonce: [nullifier; 32],
                challenge_digest: [0; 32],
                token_key_id: TokenKeyId([7; 32]),
                authenticator: [0; scrip_spec::key::MODULUS_BYTES],
            }),
            now: 1_800_000_000,
        }
    }

    /// A batch behaves as its grants stored one after the other: consumed and refused
    /// nullifiers are refused, a repeated nullifier leaves only its last grant usable, and
    /// pending spends are recorded once.
    #[tokio::test]
    async fn a_batch_of_grants_acts_as_grants_one_by_one() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("grants.db").display());
        let store = RedeemerStore::connect(&url, false).await.expect("store");
        let queue = CapacityKind::new("queue").expect("kind");
        let now = 1_800_000_000;
        // Before the batch: nullifier 1 consumed, nullifier 2 refused, nullifier 3 unconsumed.
        for (hash, nullifier) in [(1, 1), (2, 2), (3, 3)] {
            let outcome = store.insert_grants(&[grant(hash, nullifier, false)]).await;
            assert_eq!(outcome.expect("stored"), vec![Ok(())]);
        }
        assert_eq!(
            store.consume(&[1; 32], &queue, now).await.expect("consume"),
            ConsumeOutcome::Consumed
        );
        assert_eq!(
            store
                .revoke_nullifier(&Nullifier([2; 32]))
                .await
                .expect("revoke"),
            0
        );

        let batch = [
            grant(10, 1, false), // consumed before: refused
            grant(11, 2, false), // refused at the ledger: refused
            grant(12, 3, false), // replaces grant 3
            grant(13, 4, true),  // new, pending spend
            grant(14, 4, true),  // the same token again in the same batch: replaces grant 13
        ];
        let outcomes = store.insert_grants(&batch).await.expect("batch");
        assert_eq!(
            outcomes,
            vec![
                Err(History::Consumed),
                Err(History::Refused),
                Ok(()),
                Ok(()),
                Ok(())
            ]
        );
        let state = |hash: u8| {
            let store = store.clone();
            async move {
                store
                    .grant(&[hash; 32])
                    .await
                    .expect("read")
                    .map(|g| g.state)
            }
        };
        assert_eq!(state(10).await, None);
        assert_eq!(state(11).await, None);
        assert_eq!(state(3).await, Some(GrantState::Revoked));
        assert_eq!(state(12).await, Some(GrantState::Issued));
        assert_eq!(state(13).await, Some(GrantState::Revoked));
        assert_eq!(state(14).await, Some(GrantState::Issued));
        assert_eq!(
            store
                .consume(&[13; 32], &queue, now)
                .await
                .expect("consume"),
            ConsumeOutcome::Revoked
        );
        let pending = store.pending_spends(10).await.expect("pending");
        assert_eq!(pending.len(), 1, "one pending spend for nullifier 4");
        assert!(store.insert_grants(&[]).await.expect("empty").is_empty());
    }
}
