//! The wallet file: SQLite, created owner-only (it holds the seed and bearer tokens).

use scrip_spec::{Nullifier, Token, TokenKeyId, TokenKeyInfo, UnixSeconds};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Row as _, SqlitePool};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// A token's state in the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// Ready to spend.
    Unspent,
    /// Being spent; the outcome is not known yet.
    Pending,
    /// Spent.
    Spent,
    /// Past its key's `redeem_until`.
    Expired,
    /// Refused as invalid by a redeemer.
    Invalid,
    /// Given in to a refresh whose answer is not stored yet.
    Refreshing,
}

impl TokenState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Unspent => "unspent",
            TokenState::Pending => "pending",
            TokenState::Spent => "spent",
            TokenState::Expired => "expired",
            TokenState::Invalid => "invalid",
            TokenState::Refreshing => "refreshing",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unspent" => Self::Unspent,
            "pending" => Self::Pending,
            "spent" => Self::Spent,
            "expired" => Self::Expired,
            "invalid" => Self::Invalid,
            "refreshing" => Self::Refreshing,
            _ => return None,
        })
    }
}

/// A stored token.
#[derive(Debug, Clone)]
pub struct StoredToken {
    /// The token.
    pub token: Token,
    /// Its kind.
    pub kind: String,
    /// Its issuer.
    pub issuer: String,
    /// Last instant it can be spent.
    pub redeem_until: UnixSeconds,
    /// State.
    pub state: TokenState,
    /// The redeemer it was (being) spent at.
    pub redeemer_url: Option<String>,
    /// The grant it was spent for.
    pub grant: Option<String>,
    /// When its state last changed (for a pending token: when its spend was attempted).
    pub updated_at: UnixSeconds,
}

/// A pending opening.
#[derive(Debug, Clone)]
pub struct PendingOpening {
    /// Its id.
    pub request_id: [u8; 32],
    /// First token counter.
    pub first_counter: u64,
    /// Token count.
    pub count: u64,
    /// The issuer.
    pub issuer_url: String,
    /// The request body, JSON.
    pub request: String,
}

/// The columns [`stored`] reads, in its order.
const STORED_COLUMNS: &str =
    "token, kind, issuer, redeem_until, state, redeemer_url, grant_code, updated_at";

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The wallet's database.
#[derive(Debug, Clone)]
pub struct WalletStore {
    pool: SqlitePool,
}

impl WalletStore {
    /// Opens the wallet file, creating it owner-only if `create` (and refusing to create
    /// otherwise).
    pub async fn open(path: &Path, create: bool) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        if create {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| {
                    format!(
                        "cannot create the wallet {} (does it exist already?)",
                        path.display()
                    )
                })?;
        } else if !path.exists() {
            anyhow::bail!(
                "no wallet at {}; create one with `scrip wallet init` or pass --wallet",
                path.display()
            );
        }
        let pool =
            scrip_common::pool::durable_pool(SqliteConnectOptions::new().filename(path), true)
                .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }

    /// A meta value.
    pub async fn meta(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Sets a meta value.
    pub async fn set_meta(&self, name: &str, value: &str) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
            .bind(name)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The next token counter.
    pub async fn next_counter(&self) -> anyhow::Result<u64> {
        Ok(self
            .meta("next_counter")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Records a key.
    pub async fn put_key(&self, info: &TokenKeyInfo) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO keys (key_id, info) VALUES (?, ?) ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(&info.public_key.id().0[..])
        .bind(serde_json::to_string(info)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A recorded key.
    pub async fn key(&self, id: &TokenKeyId) -> anyhow::Result<Option<TokenKeyInfo>> {
        let info: Option<String> = sqlx::query_scalar("SELECT info FROM keys WHERE key_id = ?")
            .bind(&id.0[..])
            .fetch_optional(&self.pool)
            .await?;
        info.map(|s| Ok(serde_json::from_str(&s)?)).transpose()
    }

    /// Records an opening about to be sent and moves the counter past it, together.
    pub async fn begin_opening(&self, o: &PendingOpening) -> anyhow::Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT INTO openings (request_id, first_counter, count, issuer_url, request) VALUES (?, ?, ?, ?, ?)")
            .bind(&o.request_id[..])
            .bind(i64_of(o.first_counter))
            .bind(i64_of(o.count))
            .bind(&o.issuer_url)
            .bind(&o.request)
            .execute(&mut *tx)
            .await?;
        set_next_counter(&mut tx, o.first_counter + o.count).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets an opening the issuer definitively refused; its counters are reused.
    pub async fn abandon_opening(&self, o: &PendingOpening) -> anyhow::Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM openings WHERE request_id = ?")
            .bind(&o.request_id[..])
            .execute(&mut *tx)
            .await?;
        rewind_counter(&mut tx, o.first_counter + o.count, o.first_counter).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets an unanswered opening aside: it is kept (and tried again later) but no longer
    /// holds back new openings, which start at the next counter epoch (PROTOCOL.md 5.4), so a
    /// restore finds them past the gap it may leave.
    pub async fn set_aside_opening(
        &self,
        o: &PendingOpening,
        now: UnixSeconds,
    ) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE openings SET set_aside_at = ? WHERE request_id = ?")
            .bind(i64_of(now))
            .bind(&o.request_id[..])
            .execute(&mut *tx)
            .await?;
        let next: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'next_counter'")
                .fetch_optional(&mut *tx)
                .await?;
        let next = next.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let end = o.first_counter + o.count;
        let after = scrip_spec::WalletSeed::next_epoch(next.max(end));
        set_next_counter(&mut tx, after).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Stores an opening's tokens and forgets the opening, together.
    pub async fn finish_opening(
        &self,
        request_id: &[u8; 32],
        tokens: &[(Token, TokenKeyInfo, u64)],
        now: UnixSeconds,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (token, info, counter) in tokens {
            insert_token(&mut tx, token, info, Some(*counter), now).await?;
        }
        sqlx::query("DELETE FROM openings WHERE request_id = ?")
            .bind(&request_id[..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Openings not yet answered (`set_aside` false), or set aside by the user (true).
    pub async fn pending_openings(&self, set_aside: bool) -> anyhow::Result<Vec<PendingOpening>> {
        sqlx::query(
            "SELECT request_id, first_counter, count, issuer_url, request FROM openings \
                     WHERE (set_aside_at IS NOT NULL) = ? ORDER BY first_counter",
        )
        .bind(set_aside)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            let id: Vec<u8> = row.get(0);
            Ok(PendingOpening {
                request_id: id
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("corrupt request id"))?,
                first_counter: u64_of(row.get(1)),
                count: u64_of(row.get(2)),
                issuer_url: row.get(3),
                request: row.get(4),
            })
        })
        .collect()
    }

    /// Adds tokens (restore, import); tokens already present are left as they are. Returns how
    /// many were new.
    pub async fn add_tokens(
        &self,
        tokens: &[(Token, TokenKeyInfo, Option<u64>)],
        now: UnixSeconds,
    ) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut added = 0;
        for (token, info, counter) in tokens {
            added += insert_token(&mut tx, token, info, *counter, now).await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    /// The unspent token of `kind` closest to expiry (still spendable at `now`), marked
    /// pending for `redeemer_url` in the same transaction.
    pub async fn take_for_spend(
        &self,
        kind: &str,
        redeemer_url: &str,
        now: UnixSeconds,
    ) -> anyhow::Result<Option<StoredToken>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let nullifier: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT nullifier FROM tokens WHERE kind = ? AND state = 'unspent' AND redeem_until >= ? \
             ORDER BY redeem_until, nullifier LIMIT 1",
        )
        .bind(kind)
        .bind(i64_of(now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(nullifier) = nullifier else {
            return Ok(None);
        };
        sqlx::query("UPDATE tokens SET state = 'pending', redeemer_url = ?, updated_at = ? WHERE nullifier = ?")
            .bind(redeemer_url)
            .bind(i64_of(now))
            .bind(&nullifier)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let n: [u8; 32] = nullifier
            .try_into()
            .map_err(|_| anyhow::anyhow!("corrupt nullifier"))?;
        self.token(&Nullifier(n)).await
    }

    /// The token `nullifier` if it is still unspent (and spendable at `now`), marked pending
    /// for `redeemer_url` in the same transaction: for a spend that chose its token.
    pub async fn take_token(
        &self,
        nullifier: &Nullifier,
        redeemer_url: &str,
        now: UnixSeconds,
    ) -> anyhow::Result<Option<StoredToken>> {
        let taken = sqlx::query(
            "UPDATE tokens SET state = 'pending', redeemer_url = ?, updated_at = ? \
             WHERE nullifier = ? AND state = 'unspent' AND redeem_until >= ?",
        )
        .bind(redeemer_url)
        .bind(i64_of(now))
        .bind(&nullifier.0[..])
        .bind(i64_of(now))
        .execute(&self.pool)
        .await?;
        if taken.rows_affected() != 1 {
            return Ok(None);
        }
        self.token(nullifier).await
    }

    /// Sets a token's state (and, when spent, its grant).
    pub async fn set_state(
        &self,
        nullifier: &Nullifier,
        state: TokenState,
        grant: Option<(&str, UnixSeconds)>,
        note: Option<&str>,
        now: UnixSeconds,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE tokens SET state = ?, grant_code = COALESCE(?, grant_code), \
             grant_expires_at = COALESCE(?, grant_expires_at), note = COALESCE(?, note), updated_at = ? \
             WHERE nullifier = ?",
        )
        .bind(state.as_str())
        .bind(grant.map(|g| g.0))
        .bind(grant.map(|g| i64_of(g.1)))
        .bind(note)
        .bind(i64_of(now))
        .bind(&nullifier.0[..])
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One token.
    pub async fn token(&self, nullifier: &Nullifier) -> anyhow::Result<Option<StoredToken>> {
        let row = sqlx::query(&format!(
            "SELECT {STORED_COLUMNS} FROM tokens WHERE nullifier = ?"
        ))
        .bind(&nullifier.0[..])
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| stored(&r)).transpose()
    }

    /// Tokens in `state`.
    pub async fn tokens(&self, state: TokenState) -> anyhow::Result<Vec<StoredToken>> {
        sqlx::query(&format!(
            "SELECT {STORED_COLUMNS} \
             FROM tokens WHERE state = ? ORDER BY kind, redeem_until"
        ))
        .bind(state.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(stored)
        .collect()
    }

    /// A token of `kind` whose spend at `redeemer_url` has an unknown outcome, oldest first.
    pub async fn pending_at(
        &self,
        kind: &str,
        redeemer_url: &str,
    ) -> anyhow::Result<Option<StoredToken>> {
        let row = sqlx::query(&format!(
            "SELECT {STORED_COLUMNS} \
             FROM tokens WHERE state = 'pending' AND kind = ? AND redeemer_url = ? \
             ORDER BY updated_at, nullifier LIMIT 1"
        ))
        .bind(kind)
        .bind(redeemer_url)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| stored(&r)).transpose()
    }

    /// How many tokens are in each state, with and without a grant recorded.
    pub async fn counts(
        &self,
    ) -> anyhow::Result<std::collections::HashMap<(TokenState, bool), u64>> {
        let rows: Vec<(String, bool, i64)> = sqlx::query_as(
            "SELECT state, grant_code IS NOT NULL, COUNT(*) FROM tokens GROUP BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(state, granted, n)| {
                let state = TokenState::parse(&state)
                    .ok_or_else(|| anyhow::anyhow!("corrupt token state {state}"))?;
                Ok(((state, granted), u64_of(n)))
            })
            .collect()
    }

    /// Marks unspent tokens past their `redeem_until` expired; how many.
    pub async fn expire(&self, now: UnixSeconds) -> anyhow::Result<u64> {
        let done = sqlx::query("UPDATE tokens SET state = 'expired', updated_at = ? WHERE state = 'unspent' AND redeem_until < ?")
            .bind(i64_of(now))
            .bind(i64_of(now))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

impl WalletStore {
    /// Records where issuer `name` is reached.
    pub async fn set_issuer_url(&self, name: &str, url: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO issuers (name, url) VALUES (?, ?) \
             ON CONFLICT (name) DO UPDATE SET url = excluded.url",
        )
        .bind(name)
        .bind(url)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Where issuer `name` was last reached.
    pub async fn issuer_url(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT url FROM issuers WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Unspent tokens still spendable at `now` whose `redeem_until` is at most `until`,
    /// closest to expiry first.
    pub async fn unspent_until(
        &self,
        now: UnixSeconds,
        until: UnixSeconds,
    ) -> anyhow::Result<Vec<StoredToken>> {
        sqlx::query(&format!(
            "SELECT {STORED_COLUMNS} \
             FROM tokens WHERE state = 'unspent' AND redeem_until >= ? AND redeem_until <= ? \
             ORDER BY redeem_until, nullifier"
        ))
        .bind(i64_of(now))
        .bind(i64_of(until))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(stored)
        .collect()
    }

    /// Records a refresh about to be sent, marks its inputs refreshing and moves the counter
    /// past its outputs, together; fails, changing nothing, if an input is no longer unspent.
    pub async fn begin_refresh(
        &self,
        r: &PendingOpening,
        inputs: &[Nullifier],
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT INTO refreshes (request_id, first_counter, count, issuer_url, request) VALUES (?, ?, ?, ?, ?)")
            .bind(&r.request_id[..])
            .bind(i64_of(r.first_counter))
            .bind(i64_of(r.count))
            .bind(&r.issuer_url)
            .bind(&r.request)
            .execute(&mut *tx)
            .await?;
        for n in inputs {
            let done = sqlx::query(
                "UPDATE tokens SET state = 'refreshing', updated_at = ? \
                 WHERE nullifier = ? AND state = 'unspent'",
            )
            .bind(i64_of(scrip_spec::now()))
            .bind(&n.0[..])
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                anyhow::bail!("token {n} is no longer unspent; nothing was refreshed");
            }
        }
        set_next_counter(&mut tx, r.first_counter + r.count).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a refresh's new tokens, marks its inputs spent ("refreshed") and forgets the
    /// refresh, together.
    pub async fn finish_refresh(
        &self,
        request_id: &[u8; 32],
        tokens: &[(Token, TokenKeyInfo, u64)],
        inputs: &[Nullifier],
        now: UnixSeconds,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (token, info, counter) in tokens {
            insert_token(&mut tx, token, info, Some(*counter), now).await?;
        }
        for n in inputs {
            sqlx::query(
                "UPDATE tokens SET state = 'spent', note = 'refreshed', updated_at = ? \
                 WHERE nullifier = ?",
            )
            .bind(i64_of(now))
            .bind(&n.0[..])
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM refreshes WHERE request_id = ?")
            .bind(&request_id[..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets a refresh the issuer definitively refused: its counters are reused, and its
    /// inputs go back to unspent, or to spent if the refusal said they were.
    pub async fn abandon_refresh(
        &self,
        r: &PendingOpening,
        inputs: &[Nullifier],
        spent: bool,
        now: UnixSeconds,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM refreshes WHERE request_id = ?")
            .bind(&r.request_id[..])
            .execute(&mut *tx)
            .await?;
        let (state, note) = if spent {
            ("spent", Some("spent elsewhere before a refresh"))
        } else {
            ("unspent", None)
        };
        for n in inputs {
            sqlx::query(
                "UPDATE tokens SET state = ?, note = COALESCE(?, note), updated_at = ? \
                 WHERE nullifier = ? AND state = 'refreshing'",
            )
            .bind(state)
            .bind(note)
            .bind(i64_of(now))
            .bind(&n.0[..])
            .execute(&mut *tx)
            .await?;
        }
        rewind_counter(&mut tx, r.first_counter + r.count, r.first_counter).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Refreshes not yet answered, oldest first.
    pub async fn pending_refreshes(&self) -> anyhow::Result<Vec<PendingOpening>> {
        sqlx::query("SELECT request_id, first_counter, count, issuer_url, request FROM refreshes ORDER BY first_counter")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let id: Vec<u8> = row.get(0);
                Ok(PendingOpening {
                    request_id: id.try_into().map_err(|_| anyhow::anyhow!("corrupt request id"))?,
                    first_counter: u64_of(row.get(1)),
                    count: u64_of(row.get(2)),
                    issuer_url: row.get(3),
                    request: row.get(4),
                })
            })
            .collect()
    }
}

/// Sets the next token counter, inside `tx`.
async fn set_next_counter(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    next: u64,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO meta (name, value) VALUES ('next_counter', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
        .bind(next.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Moves the next token counter back from `end` to `first`, inside `tx`, if nothing was
/// allocated after `end` since: the counters of a request refused for good are reused.
async fn rewind_counter(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    end: u64,
    first: u64,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE meta SET value = ? WHERE name = 'next_counter' AND value = ?")
        .bind(first.to_string())
        .bind(end.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_token(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    token: &Token,
    info: &TokenKeyInfo,
    counter: Option<u64>,
    now: UnixSeconds,
) -> anyhow::Result<usize> {
    sqlx::query("INSERT INTO keys (key_id, info) VALUES (?, ?) ON CONFLICT (key_id) DO NOTHING")
        .bind(&info.public_key.id().0[..])
        .bind(serde_json::to_string(info)?)
        .execute(&mut **tx)
        .await?;
    let done = sqlx::query(
        "INSERT INTO tokens (nullifier, token, key_id, kind, issuer, redeem_until, state, counter, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, 'unspent', ?, ?) ON CONFLICT (nullifier) DO NOTHING",
    )
    .bind(&token.nullifier().0[..])
    .bind(token.to_bytes())
    .bind(&token.token_key_id.0[..])
    .bind(info.kind.as_str())
    .bind(&info.issuer)
    .bind(i64_of(info.redeem_until))
    .bind(counter.map(i64_of))
    .bind(i64_of(now))
    .execute(&mut **tx)
    .await?;
    Ok(usize::try_from(done.rows_affected()).unwrap_or(0))
}

fn stored(row: &sqlx::sqlite::SqliteRow) -> anyhow::Result<StoredToken> {
    let bytes: Vec<u8> = row.get(0);
    let state: String = row.get(4);
    Ok(StoredToken {
        token: Token::from_bytes(&bytes)?,
        kind: row.get(1),
        issuer: row.get(2),
        redeem_until: u64_of(row.get(3)),
        state: TokenState::parse(&state)
            .ok_or_else(|| anyhow::anyhow!("corrupt token state {state}"))?,
        redeemer_url: row.get(5),
        grant: row.get(6),
        updated_at: u64_of(row.get(7)),
    })
}
