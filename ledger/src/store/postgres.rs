//! The consortium deployment: PostgreSQL, one schema per ledger.

use super::{
    AppendOutcome, Effect, FirstSpend, KeyRecord, PruneRecordFn, Snapshot, Store, StoreError,
    array32, decode_entry, decode_json, request_digest, to_i64, to_json, to_u64,
};
use async_trait::async_trait;
use scrip_spec::encoding::canonical_bytes;
use scrip_spec::ledger::{
    Cosignature, Genesis, Hash32, IssuerTotals, KeyTotals, LogEntry, OperatorInfo, Totals,
};
use scrip_spec::{Catalog, Nullifier, OperatorId, Signed, TokenKeyId, TokenKeyInfo};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row as _};
use std::collections::HashSet;
use std::str::FromStr as _;

/// A ledger store in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects without migrating (a read-only replica, as an auditor keeps one).
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(PgConnectOptions::from_str(url)?)
            .await?;
        Ok(Self { pool })
    }

    /// Connects to `url` (a `search_path` in its `options` selects the schema) and runs the
    /// migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

async fn first_spend(
    tx: &mut sqlx::PgConnection,
    nullifier: &Nullifier,
) -> Result<Option<FirstSpend>, StoreError> {
    let row = sqlx::query(
        "SELECT s.seq, e.recorded_at, e.signer FROM spent s JOIN entries e ON e.seq = s.seq \
         WHERE s.nullifier = $1",
    )
    .bind(&nullifier.0[..])
    .fetch_optional(tx)
    .await?;
    row.map(|row| {
        let signer: Vec<u8> = row.get(2);
        Ok(FirstSpend {
            seq: to_u64(row.get(0)),
            spent_at: to_u64(row.get(1)),
            operator: OperatorId(array32(&signer, "spend signer")?),
        })
    })
    .transpose()
}

async fn key_no(tx: &mut Tx<'_>, key: &TokenKeyId) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT key_no FROM token_keys WHERE key_id = $1")
        .bind(&key.0[..])
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::Corrupt {
            what: format!("key {key} is not in the key table"),
        })
}

async fn insert_entry(tx: &mut Tx<'_>, entry: &LogEntry, hash: &Hash32) -> Result<(), StoreError> {
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
    .execute(&mut **tx)
    .await;
    match result {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::SeqTaken { seq: entry.seq })
        }
        other => other.map(|_| ()).map_err(StoreError::from),
    }
}

async fn insert_operator(tx: &mut Tx<'_>, op: &OperatorInfo, seq: u64) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO operators (id, name, info, admitted_seq) VALUES ($1, $2, $3, $4)")
        .bind(&op.id.0[..])
        .bind(&op.name)
        .bind(to_json(op))
        .bind(to_i64(seq))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn set_meta(tx: &mut Tx<'_>, name: &str, value: String) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO meta (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(name)
    .bind(value)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn append(
        &self,
        entry: &LogEntry,
        hash: &Hash32,
        effect: &Effect,
    ) -> Result<AppendOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(digest) = request_digest(entry) {
            let seen: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM entries WHERE request_digest = $1")
                    .bind(&digest[..])
                    .fetch_optional(&mut *tx)
                    .await?;
            if seen.is_some() {
                return Err(StoreError::Replayed);
            }
        }
        let mut already_spent = Vec::new();
        match effect {
            Effect::Spend { groups } => {
                let mut accepted = 0u64;
                for group in groups {
                    let key_no = key_no(&mut tx, &group.token_key_id).await?;
                    let all: Vec<&[u8]> = group.nullifiers.iter().map(|n| &n.0[..]).collect();
                    // One statement per group: the unique index decides, and RETURNING tells
                    // which rows this transaction inserted.
                    let inserted: Vec<Vec<u8>> = sqlx::query_scalar(
                        "INSERT INTO spent (nullifier, key_no, seq) \
                         SELECT n, $2, $3 FROM UNNEST($1::bytea[]) AS t(n) \
                         ON CONFLICT (nullifier) DO NOTHING RETURNING nullifier",
                    )
                    .bind(&all)
                    .bind(key_no)
                    .bind(to_i64(entry.seq))
                    .fetch_all(&mut *tx)
                    .await?;
                    if inserted.len() < all.len() {
                        let inserted: HashSet<Vec<u8>> = inserted.iter().cloned().collect();
                        for n in &group.nullifiers {
                            if !inserted.contains(&n.0[..])
                                && let Some(first) = first_spend(&mut tx, n).await?
                            {
                                already_spent.push((*n, first));
                            }
                        }
                    }
                    let in_group = i64::try_from(inserted.len()).unwrap_or(i64::MAX);
                    sqlx::query("UPDATE token_keys SET spent = spent + $1 WHERE key_no = $2")
                        .bind(in_group)
                        .bind(key_no)
                        .execute(&mut *tx)
                        .await?;
                    accepted += to_u64(in_group);
                }
                if accepted == 0 {
                    tx.rollback().await?;
                    return Ok(AppendOutcome::NothingToSpend { already_spent });
                }
            }
            Effect::Genesis(genesis) => {
                for op in &genesis.operators {
                    insert_operator(&mut tx, op, entry.seq).await?;
                }
                set_meta(&mut tx, "genesis", to_json(genesis)).await?;
                set_meta(&mut tx, "catalog", to_json(&genesis.catalog)).await?;
            }
            Effect::AdmitOperator(op) => insert_operator(&mut tx, op, entry.seq).await?,
            Effect::SetCatalog(catalog) => set_meta(&mut tx, "catalog", to_json(catalog)).await?,
            Effect::AnnounceKey(info) => {
                sqlx::query(
                    "INSERT INTO token_keys (key_id, issuer, kind, info, announced_seq) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&info.public_key.id().0[..])
                .bind(&info.issuer)
                .bind(info.kind.as_str())
                .bind(to_json(info))
                .bind(to_i64(entry.seq))
                .execute(&mut *tx)
                .await?;
            }
            Effect::RevokeKey(key) => {
                sqlx::query("UPDATE token_keys SET revoked_seq = $1 WHERE key_id = $2")
                    .bind(to_i64(entry.seq))
                    .bind(&key.0[..])
                    .execute(&mut *tx)
                    .await?;
            }
            Effect::CardsSold {
                issuer,
                count,
                credits,
            } => {
                sqlx::query(
                    "INSERT INTO issuer_totals (issuer, cards_sold, credits_sold) VALUES ($1, $2, $3) \
                     ON CONFLICT (issuer) DO UPDATE SET cards_sold = issuer_totals.cards_sold + EXCLUDED.cards_sold, \
                     credits_sold = issuer_totals.credits_sold + EXCLUDED.credits_sold",
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
            } => {
                sqlx::query("UPDATE token_keys SET issued = issued + $1 WHERE key_id = $2")
                    .bind(to_i64(*count))
                    .bind(&token_key_id.0[..])
                    .execute(&mut *tx)
                    .await?;
            }
            Effect::None | Effect::Pruned => {}
        }
        insert_entry(&mut tx, entry, hash).await?;
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
        let operators = sqlx::query_scalar::<_, String>(
            "SELECT info FROM operators ORDER BY admitted_seq, name",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|s| decode_json(s, "operator"))
        .collect::<Result<Vec<OperatorInfo>, _>>()?;
        let keys = sqlx::query(
            "SELECT info, announced_seq, revoked_seq IS NOT NULL, issued, spent, pruned \
             FROM token_keys ORDER BY key_no",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(KeyRecord {
                info: decode_json::<TokenKeyInfo>(row.get(0), "token key")?,
                announced_seq: to_u64(row.get(1)),
                revoked: row.get(2),
                issued: to_u64(row.get(3)),
                spent: to_u64(row.get(4)),
                pruned: to_u64(row.get(5)),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let head = sqlx::query("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1")
            .fetch_one(&self.pool)
            .await?;
        let hash: Vec<u8> = head.get(1);
        Ok(Some(Snapshot {
            genesis,
            operators,
            catalog,
            keys,
            head: (to_u64(head.get(0)), Hash32(array32(&hash, "head hash")?)),
        }))
    }

    async fn entries(&self, from: u64, limit: u32) -> Result<Vec<LogEntry>, StoreError> {
        sqlx::query("SELECT seq, body FROM entries WHERE seq >= $1 ORDER BY seq LIMIT $2")
            .bind(to_i64(from))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| decode_entry(row.get(1), to_u64(row.get(0))))
            .collect()
    }

    async fn nullifier(&self, nullifier: &Nullifier) -> Result<Option<FirstSpend>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        first_spend(&mut conn, nullifier).await
    }

    async fn totals(&self) -> Result<Totals, StoreError> {
        let keys = sqlx::query(
            "SELECT key_id, issuer, kind, issued, spent, pruned FROM token_keys ORDER BY key_id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            let id: Vec<u8> = row.get(0);
            let kind: String = row.get(2);
            Ok(KeyTotals {
                token_key_id: TokenKeyId(array32(&id, "key id")?),
                issuer: row.get(1),
                kind: kind.parse().map_err(|_| StoreError::Corrupt {
                    what: "key kind".into(),
                })?,
                issued: to_u64(row.get(3)),
                spent: to_u64(row.get(4)),
                pruned: to_u64(row.get(5)),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let issuers = sqlx::query(
            "SELECT issuer, cards_sold, credits_sold FROM issuer_totals ORDER BY issuer COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| IssuerTotals {
            issuer: row.get(0),
            cards_sold: to_u64(row.get(1)),
            credits_sold: to_u64(row.get(2)),
        })
        .collect();
        Ok(Totals { keys, issuers })
    }

    async fn prune(
        &self,
        token_key_id: &TokenKeyId,
        record: &PruneRecordFn<'_>,
    ) -> Result<Option<LogEntry>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let key_no = key_no(&mut tx, token_key_id).await?;
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT nullifier FROM spent WHERE key_no = $1 ORDER BY nullifier")
                .bind(key_no)
                .fetch_all(&mut *tx)
                .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let nullifiers = rows
            .iter()
            .map(|b| array32(b, "nullifier").map(Nullifier))
            .collect::<Result<Vec<_>, _>>()?;
        let (entry, hash) = record(&nullifiers);
        sqlx::query("DELETE FROM spent WHERE key_no = $1")
            .bind(key_no)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE token_keys SET pruned = pruned + $1 WHERE key_no = $2")
            .bind(i64::try_from(nullifiers.len()).unwrap_or(i64::MAX))
            .bind(key_no)
            .execute(&mut *tx)
            .await?;
        insert_entry(&mut tx, &entry, &hash).await?;
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
        sqlx::query(
            "SELECT seq, body FROM entries WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?
        .map(|row| decode_entry(row.get(1), to_u64(row.get(0))))
        .transpose()
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        let size: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind = 'r'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(to_u64(size))
    }
}
