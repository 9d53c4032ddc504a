//! The ledger store, written once for every sqlx database: the SQL below is text both SQLite
//! and PostgreSQL accept (sqlx binds `$N` on SQLite too). A backend adds only what truly
//! differs, through [`Backend`]: how a write transaction starts, how the spent set is laid out
//! (its bulk insert, its range read and its tables), and the size query.

use super::{
    AppendOutcome, Effect, FirstSpend, GovernanceEffect, KeyRecord, NullifierGroup, PruneRecordFn,
    Snapshot, Store, StoreError, array32, decode_entry, decode_json, request_digest, to_i64,
    to_json, to_u64,
};
use async_trait::async_trait;
use scrip_spec::encoding::canonical_bytes;
use scrip_spec::ledger::{
    Cosignature, Genesis, Hash32, IssuerTotals, KeyTotals, LogEntry, OperatorInfo, Totals,
};
use scrip_spec::{Catalog, Nullifier, OperatorId, Signed, TokenKeyId, TokenKeyInfo};
use sqlx::error::DatabaseError;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};
use std::collections::HashSet;

/// What one database does its own way.
#[async_trait]
pub trait Backend: Database {
    /// Starts a transaction that will write.
    async fn begin_write(
        pool: &Pool<Self>,
    ) -> Result<sqlx::Transaction<'static, Self>, sqlx::Error>;

    /// A query for the spent rows `(nullifier, key_no, seq)` with nullifiers from `$1` to `$2`
    /// inclusive, the first `$3` of them in nullifier order: the one read of the spent set
    /// by nullifier, which the shared SQL wraps.
    const SPENT_IN_RANGE: &'static str;

    /// The tables that hold the spent set, each with columns `nullifier` and `key_no`.
    const SPENT_TABLES: &'static [&'static str];

    /// Inserts the nullifiers of one key into the spent set at `seq`, leaving those already
    /// present, and returns the ones inserted.
    async fn insert_spent(
        conn: &mut Self::Connection,
        nullifiers: &[Nullifier],
        key_no: i64,
        seq: i64,
    ) -> Result<Vec<Vec<u8>>, sqlx::Error>;

    /// Bytes the database uses.
    async fn size_bytes(pool: &Pool<Self>) -> Result<i64, sqlx::Error>;

    /// Whether the database takes writes now (for `/healthz`).
    async fn write_probe(pool: &Pool<Self>) -> Result<(), sqlx::Error>;
}

/// A ledger store in a SQL database.
pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
}

// Written out: derives would ask for `DB: Clone`, which the sqlx database markers are not.
impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

impl<DB: Database> std::fmt::Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("pool", &self.pool)
            .finish()
    }
}

/// PostgreSQL names the violated constraint (`entries_request_digest_key`); SQLite names none
/// but says `UNIQUE constraint failed: entries.request_digest`.
fn is_request_digest_clash(e: &dyn DatabaseError) -> bool {
    e.constraint()
        .unwrap_or_else(|| e.message())
        .contains("request_digest")
}

// The bounds below say "this database can bind and read the column types the ledger uses";
// Rust does not carry them over from a trait, so both impl blocks state them.
impl<DB: Backend> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<Vec<u8>>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn first_spend(
        conn: &mut DB::Connection,
        nullifier: &Nullifier,
    ) -> Result<Option<FirstSpend>, StoreError> {
        let sql = format!(
            "SELECT s.seq, e.recorded_at, e.signer FROM ({}) s JOIN entries e ON e.seq = s.seq",
            DB::SPENT_IN_RANGE
        );
        let row: Option<(i64, i64, Vec<u8>)> = sqlx::query_as(&sql)
            .bind(&nullifier.0[..])
            .bind(&nullifier.0[..])
            .bind(1i64)
            .fetch_optional(conn)
            .await?;
        row.map(|(seq, spent_at, signer)| {
            Ok(FirstSpend {
                seq: to_u64(seq),
                spent_at: to_u64(spent_at),
                operator: OperatorId(array32(&signer, "spend signer")?),
            })
        })
        .transpose()
    }

    async fn key_no(conn: &mut DB::Connection, key: &TokenKeyId) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT key_no FROM token_keys WHERE key_id = $1")
            .bind(&key.0[..])
            .fetch_optional(conn)
            .await?
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("key {key} is not in the key table"),
            })
    }

    /// The unique indexes on `entries` decide: the primary key refuses a second writer at the
    /// same position, the request digest index a request already in the log.
    async fn insert_entry(
        conn: &mut DB::Connection,
        entry: &LogEntry,
        hash: &Hash32,
    ) -> Result<(), StoreError> {
        let signer = match &entry.body {
            scrip_spec::ledger::EntryBody::Request(r) => Some(r.signer.0.to_vec()),
            _ => None,
        };
        let result = sqlx::query(
            "INSERT INTO entries (seq, hash, kind, signer, request_digest, recorded_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(to_i64(entry.seq))
        .bind(&hash.0[..])
        .bind(entry.body.kind_name())
        .bind(signer)
        .bind(request_digest(entry).map(|d| d.to_vec()))
        .bind(to_i64(entry.recorded_at))
        .bind(canonical_bytes(entry))
        .execute(conn)
        .await;
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                if is_request_digest_clash(e.as_ref()) {
                    Err(StoreError::Replayed)
                } else {
                    Err(StoreError::SeqTaken { seq: entry.seq })
                }
            }
            other => other.map(|_| ()).map_err(StoreError::from),
        }
    }

    async fn insert_operator(
        conn: &mut DB::Connection,
        op: &OperatorInfo,
        seq: u64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO operators (id, name, info, admitted_seq) VALUES ($1, $2, $3, $4)")
            .bind(&op.id.0[..])
            .bind(&op.name)
            .bind(to_json(op))
            .bind(to_i64(seq))
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn set_meta(
        conn: &mut DB::Connection,
        name: &str,
        value: String,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn revoke(
        conn: &mut DB::Connection,
        key: &TokenKeyId,
        seq: u64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE token_keys SET revoked_seq = $1 WHERE key_id = $2")
            .bind(to_i64(seq))
            .bind(&key.0[..])
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn govern(
        conn: &mut DB::Connection,
        change: &GovernanceEffect,
        seq: u64,
    ) -> Result<(), StoreError> {
        match change {
            GovernanceEffect::AdmitOperator(op) => Self::insert_operator(conn, op, seq).await?,
            GovernanceEffect::RemoveOperator(id) => {
                sqlx::query("UPDATE operators SET removed_seq = $1 WHERE id = $2")
                    .bind(to_i64(seq))
                    .bind(&id.0[..])
                    .execute(conn)
                    .await?;
            }
            GovernanceEffect::SetRoles(op) => {
                sqlx::query("UPDATE operators SET info = $1 WHERE id = $2")
                    .bind(to_json(op))
                    .bind(&op.id.0[..])
                    .execute(conn)
                    .await?;
            }
            GovernanceEffect::SetCatalog(catalog) => {
                Self::set_meta(&mut *conn, "catalog", to_json(catalog)).await?;
                Self::set_meta(conn, "catalog_version", seq.to_string()).await?;
            }
            GovernanceEffect::RevokeKey(key) => Self::revoke(conn, key, seq).await?,
            GovernanceEffect::SetCommittee(schedule) => {
                Self::set_meta(conn, "committee", to_json(schedule)).await?;
            }
        }
        Ok(())
    }

    async fn meta_u64(pool: &Pool<DB>, name: &str) -> Result<u64, StoreError> {
        let value: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
        value.map_or(Ok(0), |v| {
            v.parse().map_err(|_| StoreError::Corrupt {
                what: format!("meta {name}"),
            })
        })
    }

    /// Applies the spend effect: returns the nullifiers already spent, with their first spend,
    /// and how many were accepted.
    async fn spend(
        conn: &mut DB::Connection,
        groups: &[NullifierGroup],
        seq: u64,
    ) -> Result<(Vec<(Nullifier, FirstSpend)>, u64), StoreError> {
        let mut already_spent = Vec::new();
        let mut accepted = 0u64;
        for group in groups {
            let key_no = Self::key_no(conn, &group.token_key_id).await?;
            let inserted = DB::insert_spent(conn, &group.nullifiers, key_no, to_i64(seq)).await?;
            if inserted.len() < group.nullifiers.len() {
                let inserted: HashSet<Vec<u8>> = inserted.iter().cloned().collect();
                for n in &group.nullifiers {
                    if !inserted.contains(&n.0[..])
                        && let Some(first) = Self::first_spend(conn, n).await?
                    {
                        already_spent.push((*n, first));
                    }
                }
            }
            let in_group = i64::try_from(inserted.len()).unwrap_or(i64::MAX);
            sqlx::query("UPDATE token_keys SET spent = spent + $1 WHERE key_no = $2")
                .bind(in_group)
                .bind(key_no)
                .execute(&mut *conn)
                .await?;
            accepted += to_u64(in_group);
        }
        Ok((already_spent, accepted))
    }
}

#[async_trait]
impl<DB: Backend> Store for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<Vec<u8>>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn append(
        &self,
        entry: &LogEntry,
        hash: &Hash32,
        effect: &Effect,
    ) -> Result<AppendOutcome, StoreError> {
        let mut tx = DB::begin_write(&self.pool).await?;
        // The entry goes in first, so that its unique indexes refuse a replay or a taken
        // position before any effect is applied (a replayed spend is a replay, not a spend
        // of nullifiers it spent itself).
        Self::insert_entry(&mut tx, entry, hash).await?;
        let mut already_spent = Vec::new();
        match effect {
            Effect::Spend { groups } => {
                let accepted;
                (already_spent, accepted) = Self::spend(&mut tx, groups, entry.seq).await?;
                if accepted == 0 {
                    tx.rollback().await?;
                    return Ok(AppendOutcome::NothingToSpend { already_spent });
                }
            }
            Effect::Refresh { inputs, outputs } => {
                // All or nothing: one input spent before refuses the whole exchange.
                let accepted;
                (already_spent, accepted) = Self::spend(&mut tx, inputs, entry.seq).await?;
                let wanted: usize = inputs.iter().map(|g| g.nullifiers.len()).sum();
                if accepted < wanted as u64 {
                    tx.rollback().await?;
                    return Ok(AppendOutcome::NothingToSpend { already_spent });
                }
                for (key, count) in outputs {
                    sqlx::query("UPDATE token_keys SET issued = issued + $1 WHERE key_id = $2")
                        .bind(to_i64(*count))
                        .bind(&key.0[..])
                        .execute(&mut *tx)
                        .await?;
                }
            }
            Effect::Genesis(genesis) => {
                for op in &genesis.operators {
                    Self::insert_operator(&mut tx, op, entry.seq).await?;
                }
                Self::set_meta(&mut tx, "genesis", to_json(genesis)).await?;
                Self::set_meta(&mut tx, "catalog", to_json(&genesis.catalog)).await?;
            }
            Effect::Governance {
                change,
                governance_seq,
            } => {
                Self::govern(&mut tx, change, entry.seq).await?;
                Self::set_meta(&mut tx, "governance_seq", governance_seq.to_string()).await?;
            }
            Effect::AnnounceKey(info) => {
                sqlx::query(
                    "INSERT INTO token_keys \
                     (key_id, issuer, kind, info, announced_seq, reported_until) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&info.public_key.id().0[..])
                .bind(&info.issuer)
                .bind(info.kind.as_str())
                .bind(to_json(info))
                .bind(to_i64(entry.seq))
                .bind(to_i64(info.valid_from))
                .execute(&mut *tx)
                .await?;
            }
            Effect::RevokeKey(key) => Self::revoke(&mut tx, key, entry.seq).await?,
            Effect::CardsSold {
                issuer,
                count,
                credits,
            } => {
                // Qualified names: PostgreSQL finds a bare `cards_sold` ambiguous here.
                sqlx::query(
                    "INSERT INTO issuer_totals (issuer, cards_sold, credits_sold) \
                     VALUES ($1, $2, $3) ON CONFLICT (issuer) DO UPDATE SET \
                     cards_sold = issuer_totals.cards_sold + excluded.cards_sold, \
                     credits_sold = issuer_totals.credits_sold + excluded.credits_sold",
                )
                .bind(issuer)
                .bind(to_i64(*count))
                .bind(to_i64(*credits))
                .execute(&mut *tx)
                .await?;
            }
            Effect::TokensIssued {
                token_key_id,
                count,
                until,
            } => {
                sqlx::query(
                    "UPDATE token_keys SET issued = issued + $1, reported_until = $2 \
                     WHERE key_id = $3",
                )
                .bind(to_i64(*count))
                .bind(to_i64(*until))
                .bind(&token_key_id.0[..])
                .execute(&mut *tx)
                .await?;
            }
            Effect::None | Effect::Pruned { .. } => {}
        }
        tx.commit().await?;
        Ok(AppendOutcome::Appended { already_spent })
    }

    async fn request_seq(&self, digest: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM entries WHERE request_digest = $1")
                .bind(&digest[..])
                .fetch_optional(&self.pool)
                .await?;
        Ok(seq.map(to_u64))
    }

    async fn snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let Some(genesis): Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'genesis'")
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        let genesis: Genesis = decode_json(&genesis, "genesis")?;
        let catalog: String = sqlx::query_scalar("SELECT value FROM meta WHERE name = 'catalog'")
            .fetch_one(&self.pool)
            .await?;
        let catalog: Catalog = decode_json(&catalog, "catalog")?;
        let mut operators = Vec::new();
        let mut former = Vec::new();
        for (info, removed) in sqlx::query_as::<_, (String, bool)>(
            "SELECT info, removed_seq IS NOT NULL FROM operators ORDER BY admitted_seq, name",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let op: OperatorInfo = decode_json(&info, "operator")?;
            if removed {
                former.push(op);
            } else {
                operators.push(op);
            }
        }
        let keys = sqlx::query_as::<_, (String, i64, bool, i64, i64, i64, i64)>(
            "SELECT info, announced_seq, revoked_seq IS NOT NULL, issued, spent, pruned, \
             reported_until FROM token_keys ORDER BY key_no",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(
            |(info, announced_seq, revoked, issued, spent, pruned, reported_until)| {
                Ok(KeyRecord {
                    info: decode_json::<TokenKeyInfo>(&info, "token key")?,
                    announced_seq: to_u64(announced_seq),
                    revoked,
                    issued: to_u64(issued),
                    spent: to_u64(spent),
                    pruned: to_u64(pruned),
                    reported_until: to_u64(reported_until),
                })
            },
        )
        .collect::<Result<Vec<_>, StoreError>>()?;
        let committee: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'committee'")
                .fetch_optional(&self.pool)
                .await?;
        let committee = match committee {
            Some(json) => decode_json(&json, "committee")?,
            None => Default::default(),
        };
        let (seq, hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1")
                .fetch_one(&self.pool)
                .await?;
        Ok(Some(Snapshot {
            genesis,
            operators,
            former,
            catalog,
            catalog_version: Self::meta_u64(&self.pool, "catalog_version").await?,
            governance_seq: Self::meta_u64(&self.pool, "governance_seq").await?,
            keys,
            committee,
            head: (to_u64(seq), Hash32(array32(&hash, "head hash")?)),
        }))
    }

    async fn entries(
        &self,
        from: u64,
        limit: u32,
        max_bytes: u64,
    ) -> Result<Vec<LogEntry>, StoreError> {
        // Sizes first, so that a page of large spend entries is never read whole.
        let sizes: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT seq, CAST(length(body) AS BIGINT) FROM entries WHERE seq >= $1 \
             ORDER BY seq LIMIT $2",
        )
        .bind(to_i64(from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut total = 0u64;
        let mut count = 0i64;
        for (_, size) in &sizes {
            total = total.saturating_add(to_u64(*size));
            if count > 0 && total > max_bytes {
                break;
            }
            count += 1;
        }
        sqlx::query_as::<_, (i64, Vec<u8>)>(
            "SELECT seq, body FROM entries WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .bind(to_i64(from))
        .bind(count)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|(seq, body)| decode_entry(body, to_u64(*seq)))
        .collect()
    }

    async fn spent_set(&self) -> Result<Vec<(Nullifier, TokenKeyId, u64)>, StoreError> {
        let sql = format!(
            "SELECT s.nullifier, k.key_id, s.seq FROM ({}) s \
             JOIN token_keys k ON k.key_no = s.key_no ORDER BY s.nullifier",
            DB::SPENT_IN_RANGE
        );
        sqlx::query_as::<_, (Vec<u8>, Vec<u8>, i64)>(&sql)
            .bind(&[0u8; 32][..])
            .bind(&[0xffu8; 32][..])
            .bind(i64::MAX)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|(n, key, seq)| {
                Ok((
                    Nullifier(array32(&n, "nullifier")?),
                    TokenKeyId(array32(&key, "key id")?),
                    to_u64(seq),
                ))
            })
            .collect()
    }

    async fn nullifier(&self, nullifier: &Nullifier) -> Result<Option<FirstSpend>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::first_spend(&mut conn, nullifier).await
    }

    async fn spent_between(
        &self,
        low: &Nullifier,
        high: &Nullifier,
        limit: u32,
    ) -> Result<Vec<(Nullifier, FirstSpend)>, StoreError> {
        let sql = format!(
            "SELECT s.nullifier, s.seq, e.recorded_at, e.signer FROM ({}) s \
             JOIN entries e ON e.seq = s.seq ORDER BY s.nullifier LIMIT $3",
            DB::SPENT_IN_RANGE
        );
        sqlx::query_as::<_, (Vec<u8>, i64, i64, Vec<u8>)>(&sql)
            .bind(&low.0[..])
            .bind(&high.0[..])
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|(n, seq, spent_at, signer)| {
                Ok((
                    Nullifier(array32(&n, "nullifier")?),
                    FirstSpend {
                        seq: to_u64(seq),
                        spent_at: to_u64(spent_at),
                        operator: OperatorId(array32(&signer, "spend signer")?),
                    },
                ))
            })
            .collect()
    }

    async fn totals(&self) -> Result<Totals, StoreError> {
        let keys = sqlx::query_as::<_, (Vec<u8>, String, String, i64, i64, i64)>(
            "SELECT key_id, issuer, kind, issued, spent, pruned FROM token_keys ORDER BY key_id",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(id, issuer, kind, issued, spent, pruned)| {
            Ok(KeyTotals {
                token_key_id: TokenKeyId(array32(&id, "key id")?),
                issuer,
                kind: kind.parse().map_err(|_| StoreError::Corrupt {
                    what: "key kind".into(),
                })?,
                issued: to_u64(issued),
                spent: to_u64(spent),
                pruned: to_u64(pruned),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let mut issuers: Vec<IssuerTotals> = sqlx::query_as::<_, (String, i64, i64)>(
            "SELECT issuer, cards_sold, credits_sold FROM issuer_totals",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(issuer, cards_sold, credits_sold)| IssuerTotals {
            issuer,
            cards_sold: to_u64(cards_sold),
            credits_sold: to_u64(credits_sold),
        })
        .collect();
        // Canonical order is byte order, which Rust's string order is; in SQL it would take
        // `COLLATE "C"` on PostgreSQL, a collation SQLite does not know.
        issuers.sort_by(|a, b| a.issuer.cmp(&b.issuer));
        Ok(Totals { keys, issuers })
    }

    async fn prune(
        &self,
        token_key_id: &TokenKeyId,
        record: &PruneRecordFn<'_>,
    ) -> Result<Option<LogEntry>, StoreError> {
        let mut tx = DB::begin_write(&self.pool).await?;
        let key_no = Self::key_no(&mut tx, token_key_id).await?;
        let mut nullifiers = Vec::new();
        for table in DB::SPENT_TABLES {
            let rows: Vec<Vec<u8>> =
                sqlx::query_scalar(&format!("SELECT nullifier FROM {table} WHERE key_no = $1"))
                    .bind(key_no)
                    .fetch_all(&mut *tx)
                    .await?;
            for row in &rows {
                nullifiers.push(Nullifier(array32(row, "nullifier")?));
            }
        }
        if nullifiers.is_empty() {
            return Ok(None);
        }
        nullifiers.sort_unstable();
        let (entry, hash) = record(&nullifiers);
        for table in DB::SPENT_TABLES {
            sqlx::query(&format!("DELETE FROM {table} WHERE key_no = $1"))
                .bind(key_no)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE token_keys SET pruned = pruned + $1 WHERE key_no = $2")
            .bind(i64::try_from(nullifiers.len()).unwrap_or(i64::MAX))
            .bind(key_no)
            .execute(&mut *tx)
            .await?;
        Self::insert_entry(&mut tx, &entry, &hash).await?;
        tx.commit().await?;
        Ok(Some(entry))
    }

    async fn add_cosignature(
        &self,
        seq: u64,
        cosignature: &Signed<Cosignature>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cosignatures (checkpoint_seq, operator, body) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(to_i64(seq))
        .bind(&cosignature.signer.0[..])
        .bind(to_json(cosignature))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn cosignatures(&self, seq: u64) -> Result<Vec<Signed<Cosignature>>, StoreError> {
        sqlx::query_scalar::<_, String>(
            "SELECT body FROM cosignatures WHERE checkpoint_seq = $1 ORDER BY operator",
        )
        .bind(to_i64(seq))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|s| decode_json(s, "cosignature"))
        .collect()
    }

    async fn latest_checkpoint(&self) -> Result<Option<LogEntry>, StoreError> {
        sqlx::query_as::<_, (i64, Vec<u8>)>(
            "SELECT seq, body FROM entries WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?
        .map(|(seq, body)| decode_entry(&body, to_u64(seq)))
        .transpose()
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        Ok(to_u64(DB::size_bytes(&self.pool).await?))
    }

    async fn write_probe(&self) -> Result<(), StoreError> {
        Ok(DB::write_probe(&self.pool).await?)
    }

    async fn set_consensus_session(&self, session: u64) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::set_meta(&mut conn, "consensus_session", session.to_string()).await
    }

    async fn consensus_session(&self) -> Result<Option<u64>, StoreError> {
        let value: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'consensus_session'")
                .fetch_optional(&self.pool)
                .await?;
        value
            .map(|v| {
                v.parse().map_err(|_| StoreError::Corrupt {
                    what: "meta consensus_session".into(),
                })
            })
            .transpose()
    }
}
