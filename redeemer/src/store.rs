//! The redeemer's storage: grants (hashed) and, in optimistic mode, spends not yet committed.
//! SQLite; the grants survive a restart of the sidecar.

use scrip_spec::{CapacityKind, Nullifier, TokenKeyId, UnixSeconds};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Row as _, SqlitePool};
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
        let pool = scrip_ledger::store::durable_pool(options, fsync_each_commit).await?;
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
        pending: Option<&TokenKeyId>,
        now: UnixSeconds,
    ) -> anyhow::Result<Result<(), History>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let history = history_in(&mut tx, nullifier).await?;
        if matches!(history, History::Consumed | History::Refused) {
            return Ok(Err(history));
        }
        sqlx::query("UPDATE grants SET state = 'revoked' WHERE nullifier = ? AND state = 'issued'")
            .bind(&nullifier.0[..])
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO grants (hash, kind, nullifier, expires_at, state, created_at) \
             VALUES (?, ?, ?, ?, 'issued', ?)",
        )
        .bind(&hash[..])
        .bind(kind.as_str())
        .bind(&nullifier.0[..])
        .bind(to_i64(expires_at))
        .bind(to_i64(now))
        .execute(&mut *tx)
        .await?;
        if let Some(key) = pending {
            sqlx::query(
                "INSERT INTO pending_spends (nullifier, key_id, created_at) VALUES (?, ?, ?) \
                 ON CONFLICT (nullifier) DO NOTHING",
            )
            .bind(&nullifier.0[..])
            .bind(&key.0[..])
            .bind(to_i64(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
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
    pub async fn pending_spends(
        &self,
        limit: usize,
    ) -> anyhow::Result<Vec<(TokenKeyId, Nullifier)>> {
        let rows =
            sqlx::query("SELECT key_id, nullifier FROM pending_spends ORDER BY created_at LIMIT ?")
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let k: Vec<u8> = row.get(0);
                let n: Vec<u8> = row.get(1);
                let k: [u8; 32] = k
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("corrupt key id"))?;
                let n: [u8; 32] = n
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("corrupt nullifier"))?;
                Ok((TokenKeyId(k), Nullifier(n)))
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
