//! The issuer's store in a SQLite file (WAL, fsync per commit).

use super::{
    BatchSummary, BeginRefresh, CardRecord, CommitOutcome, IssuerStore, NewOpening, NewRefresh,
    OnSuccess, OpeningRecord, OutboxItem, RefreshRecord, SetAsideItem, StoreError, StoredKey,
    to_i64, to_u64,
};
use async_trait::async_trait;
use scrip_spec::api::issuer::{CardState, RequestId};
use scrip_spec::{TokenKeyId, TokenKeyInfo, UnixSeconds};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Row as _, SqlitePool};
use std::str::FromStr as _;

/// The issuer's SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteIssuerStore {
    pool: SqlitePool,
}

impl SqliteIssuerStore {
    /// Opens (creating if needed) and migrates.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
        let pool = scrip_common::pool::durable_pool(options, true).await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

fn hash32(bytes: &[u8], what: &str) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(what.to_owned()))
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Sqlite>;

/// An outbox row of `id, request, on_success`.
fn outbox_item(row: &sqlx::sqlite::SqliteRow) -> Result<OutboxItem, StoreError> {
    let on_success: String = row.get(2);
    Ok(OutboxItem {
        id: row.get(0),
        request: row.get(1),
        on_success: serde_json::from_str(&on_success)
            .map_err(|_| StoreError::Corrupt("outbox follow-up".into()))?,
    })
}

async fn insert_outbox(
    tx: &mut Tx<'_>,
    request: &str,
    on_success: &OnSuccess,
    now: UnixSeconds,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO outbox (request, on_success, created_at) VALUES (?, ?, ?)")
        .bind(request)
        .bind(json(on_success))
        .bind(to_i64(now))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

// Write transactions start with BEGIN IMMEDIATE: they take the write lock up front, so two
// writers queue on busy_timeout instead of failing when a reader upgrades to a writer.
#[async_trait]
impl IssuerStore for SqliteIssuerStore {
    async fn create_batch(
        &self,
        batch_id: &str,
        value: u64,
        hashes: &[[u8; 32]],
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO batches (batch_id, value, count, state, created_at) VALUES (?, ?, ?, 'minted', ?)",
        )
        .bind(batch_id)
        .bind(to_i64(value))
        .bind(to_i64(hashes.len() as u64))
        .bind(to_i64(now))
        .execute(&mut *tx)
        .await?;
        // Multi-row inserts: a batch of a million cards is a few thousand statements.
        const ROWS: usize = 1000;
        for (chunk_no, chunk) in hashes.chunks(ROWS).enumerate() {
            let sql = format!(
                "INSERT INTO cards (code_hash, batch_id, serial, value, remaining, state) VALUES {}",
                vec!["(?, ?, ?, ?, ?, 'minted')"; chunk.len()].join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (i, hash) in chunk.iter().enumerate() {
                let serial = (chunk_no * ROWS + i + 1) as u64;
                query = query
                    .bind(&hash[..])
                    .bind(batch_id)
                    .bind(to_i64(serial))
                    .bind(to_i64(value))
                    .bind(to_i64(value));
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn batches(&self) -> Result<Vec<BatchSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT b.batch_id, b.value, b.count, b.state, c.state, COUNT(c.code_hash), \
             COALESCE(SUM(c.remaining), 0) \
             FROM batches b JOIN cards c ON c.batch_id = b.batch_id \
             GROUP BY b.batch_id, c.state ORDER BY b.created_at, b.batch_id, c.state",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<BatchSummary> = Vec::new();
        for row in rows {
            let id: String = row.get(0);
            if out.last().is_none_or(|b| b.batch_id != id) {
                out.push(BatchSummary {
                    batch_id: id,
                    value: to_u64(row.get(1)),
                    count: to_u64(row.get(2)),
                    state: row.get(3),
                    cards: Vec::new(),
                    remaining_credits: 0,
                });
            }
            if let Some(b) = out.last_mut() {
                b.cards.push((row.get(4), to_u64(row.get(5))));
                b.remaining_credits += to_u64(row.get(6));
            }
        }
        Ok(out)
    }

    async fn set_batch_state(
        &self,
        batch_id: &str,
        from: &str,
        to: &str,
        queue: Option<(&str, &OnSuccess)>,
        now: UnixSeconds,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query("UPDATE batches SET state = ? WHERE batch_id = ? AND state = ?")
            .bind(to)
            .bind(batch_id)
            .bind(from)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        if to == "active" {
            sqlx::query(
                "UPDATE cards SET state = 'active' WHERE batch_id = ? AND state = 'minted'",
            )
            .bind(batch_id)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((request, on_success)) = queue {
            insert_outbox(&mut tx, request, on_success, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn card(&self, hash: &[u8; 32]) -> Result<Option<CardRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT batch_id, serial, value, remaining, state FROM cards WHERE code_hash = ?",
        )
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let state: String = row.get(4);
            Ok(CardRecord {
                batch_id: row.get(0),
                serial: to_u64(row.get(1)),
                value: to_u64(row.get(2)),
                remaining: to_u64(row.get(3)),
                state: CardState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("card state {state}")))?,
            })
        })
        .transpose()
    }

    async fn void_card(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE cards SET state = 'void', remaining = 0 WHERE code_hash = ? AND state <> 'void'",
        )
        .bind(&hash[..])
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn void_batch(&self, batch_id: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE cards SET state = 'void', remaining = 0 \
             WHERE batch_id = ? AND state NOT IN ('void', 'used')",
        )
        .bind(batch_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn opening(&self, id: &RequestId) -> Result<Option<OpeningRecord>, StoreError> {
        let row =
            sqlx::query("SELECT card_hash, requests, responses FROM openings WHERE request_id = ?")
                .bind(&id.0[..])
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| {
            let hash: Vec<u8> = row.get(0);
            Ok(OpeningRecord {
                card_hash: hash32(&hash, "opening card hash")?,
                requests: row.get(1),
                responses: row.get(2),
            })
        })
        .transpose()
    }

    async fn commit_opening(&self, o: NewOpening<'_>) -> Result<CommitOutcome, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let seen: Option<i64> = sqlx::query_scalar("SELECT 1 FROM openings WHERE request_id = ?")
            .bind(&o.request_id.0[..])
            .fetch_optional(&mut *tx)
            .await?;
        if seen.is_some() {
            return Ok(CommitOutcome::AlreadyRecorded);
        }
        // The conditional update is the whole check: state and credits are re-read inside the
        // transaction, so two concurrent openings can never spend the same credits.
        let remaining: Option<i64> = sqlx::query_scalar(
            "UPDATE cards SET remaining = remaining - ?1, \
             state = CASE WHEN remaining - ?1 = 0 THEN 'used' ELSE 'opened' END \
             WHERE code_hash = ?2 AND state IN ('active', 'opened') AND remaining >= ?1 \
             RETURNING remaining",
        )
        .bind(to_i64(o.price))
        .bind(&o.card_hash[..])
        .fetch_optional(&mut *tx)
        .await?;
        let Some(remaining) = remaining else {
            let row: Option<(i64, String)> =
                sqlx::query_as("SELECT remaining, state FROM cards WHERE code_hash = ?")
                    .bind(&o.card_hash[..])
                    .fetch_optional(&mut *tx)
                    .await?;
            return Ok(match row {
                Some((remaining, state)) if state == "active" || state == "opened" => {
                    CommitOutcome::InsufficientCredits {
                        remaining: to_u64(remaining),
                    }
                }
                _ => CommitOutcome::InvalidCard,
            });
        };
        sqlx::query(
            "INSERT INTO openings (request_id, card_hash, price, requests, responses, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&o.request_id.0[..])
        .bind(&o.card_hash[..])
        .bind(to_i64(o.price))
        .bind(o.requests)
        .bind(o.responses)
        .bind(to_i64(o.now))
        .execute(&mut *tx)
        .await?;
        for (key, count) in o.per_key {
            // Only a count: the time of an opening is kept nowhere (`since` stays 0).
            sqlx::query(
                "INSERT INTO issuance_pending (key_id, count, since) VALUES (?, ?, 0) \
                 ON CONFLICT (key_id) DO UPDATE SET count = count + excluded.count",
            )
            .bind(&key.0[..])
            .bind(to_i64(*count))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(CommitOutcome::Committed {
            remaining: to_u64(remaining),
        })
    }

    async fn refresh(&self, id: &RequestId) -> Result<Option<RefreshRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT body_hash, requests, ledger_request, responses FROM refreshes \
             WHERE request_id = ?",
        )
        .bind(&id.0[..])
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let hash: Vec<u8> = row.get(0);
            Ok(RefreshRecord {
                body_hash: hash32(&hash, "refresh body hash")?,
                requests: row.get(1),
                ledger_request: row.get(2),
                responses: row.get(3),
            })
        })
        .transpose()
    }

    async fn begin_refresh(&self, r: NewRefresh<'_>) -> Result<BeginRefresh, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let seen: Option<i64> = sqlx::query_scalar("SELECT 1 FROM refreshes WHERE request_id = ?")
            .bind(&r.request_id.0[..])
            .fetch_optional(&mut *tx)
            .await?;
        if seen.is_some() {
            return Ok(BeginRefresh::AlreadyRecorded);
        }
        sqlx::query(
            "INSERT INTO refreshes (request_id, body_hash, requests, ledger_request, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&r.request_id.0[..])
        .bind(&r.body_hash[..])
        .bind(r.requests)
        .bind(r.ledger_request)
        .bind(to_i64(r.now))
        .execute(&mut *tx)
        .await?;
        for (index, n) in r.nullifiers.iter().enumerate() {
            let inserted = sqlx::query(
                "INSERT INTO refreshed_tokens (nullifier, request_id) VALUES (?, ?) \
                 ON CONFLICT (nullifier) DO NOTHING",
            )
            .bind(&n.0[..])
            .bind(&r.request_id.0[..])
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                // Dropping the transaction rolls the record back.
                return Ok(BeginRefresh::TokenTaken { index });
            }
        }
        tx.commit().await?;
        Ok(BeginRefresh::Recorded)
    }

    async fn resign_refresh(&self, id: &RequestId, ledger_request: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refreshes SET ledger_request = ? WHERE request_id = ? AND responses IS NULL",
        )
        .bind(ledger_request)
        .bind(&id.0[..])
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn finish_refresh(&self, id: &RequestId, responses: &[u8]) -> Result<(), StoreError> {
        sqlx::query("UPDATE refreshes SET responses = ? WHERE request_id = ?")
            .bind(responses)
            .bind(&id.0[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn drop_refresh(&self, id: &RequestId) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM refreshed_tokens WHERE request_id = ?")
            .bind(&id.0[..])
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM refreshes WHERE request_id = ? AND responses IS NULL")
            .bind(&id.0[..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_key(&self, key: &StoredKey, now: UnixSeconds) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO token_keys (key_id, kind, info, pem_path, announced, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.info.public_key.id().0[..])
        .bind(key.info.kind.as_str())
        .bind(json(&key.info))
        .bind(&key.pem_path)
        .bind(key.announced)
        .bind(to_i64(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mark_announced(&self, id: &TokenKeyId) -> Result<(), StoreError> {
        sqlx::query("UPDATE token_keys SET announced = 1 WHERE key_id = ?")
            .bind(&id.0[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        sqlx::query("SELECT info, pem_path, announced FROM token_keys ORDER BY created_at, kind")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let info: String = row.get(0);
                Ok(StoredKey {
                    info: serde_json::from_str::<TokenKeyInfo>(&info)
                        .map_err(|_| StoreError::Corrupt("token key info".into()))?,
                    pem_path: row.get(1),
                    announced: row.get(2),
                })
            })
            .collect()
    }

    async fn queue_issuance_reports(
        &self,
        sign: &(dyn Fn(TokenKeyId, u64, UnixSeconds) -> String + Send + Sync),
        now: UnixSeconds,
    ) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // Each key's report starts where its previous one ended (at the key's valid_from
        // before the first), as the ledger requires: the interval says nothing about when
        // the openings in it happened.
        let rows = sqlx::query(
            "SELECT p.key_id, p.count, \
             COALESCE(r.until, json_extract(k.info, '$.valid_from'), 0) \
             FROM issuance_pending p \
             LEFT JOIN issuance_reported r ON r.key_id = p.key_id \
             LEFT JOIN token_keys k ON k.key_id = p.key_id WHERE p.count > 0",
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let id: Vec<u8> = row.get(0);
            let key = TokenKeyId(hash32(&id, "pending key id")?);
            let request = sign(key, to_u64(row.get(1)), to_u64(row.get(2)));
            insert_outbox(&mut tx, &request, &OnSuccess::Nothing, now).await?;
            sqlx::query(
                "INSERT INTO issuance_reported (key_id, until) VALUES (?, ?) \
                 ON CONFLICT (key_id) DO UPDATE SET until = excluded.until",
            )
            .bind(&id)
            .bind(to_i64(now))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM issuance_pending")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.len())
    }

    async fn pending_issuance(&self) -> Result<Vec<(TokenKeyId, u64)>, StoreError> {
        sqlx::query("SELECT key_id, count FROM issuance_pending ORDER BY key_id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let id: Vec<u8> = row.get(0);
                Ok((
                    TokenKeyId(hash32(&id, "pending key id")?),
                    to_u64(row.get(1)),
                ))
            })
            .collect()
    }

    async fn outbox(&self) -> Result<Vec<OutboxItem>, StoreError> {
        sqlx::query(
            "SELECT id, request, on_success FROM outbox WHERE set_aside_at IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(outbox_item)
        .collect()
    }

    async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>, StoreError> {
        sqlx::query(
            "SELECT id, request, on_success FROM outbox WHERE id = ? AND set_aside_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(outbox_item)
        .transpose()
    }

    async fn update_outbox(
        &self,
        id: i64,
        expected: &str,
        request: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET request = ? WHERE id = ? AND request = ? AND set_aside_at IS NULL",
        )
        .bind(request)
        .bind(id)
        .bind(expected)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_aside_outbox(
        &self,
        id: i64,
        expected: &str,
        refusal: &str,
        now: UnixSeconds,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET set_aside_at = ?, refusal = ? \
             WHERE id = ? AND request = ? AND set_aside_at IS NULL",
        )
        .bind(to_i64(now))
        .bind(refusal)
        .bind(id)
        .bind(expected)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn outbox_set_aside(&self) -> Result<Vec<SetAsideItem>, StoreError> {
        sqlx::query(
            "SELECT id, request, on_success, set_aside_at, refusal FROM outbox \
             WHERE set_aside_at IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(SetAsideItem {
                item: outbox_item(row)?,
                set_aside_at: to_u64(row.get(3)),
                refusal: row.get::<Option<String>, _>(4).unwrap_or_default(),
            })
        })
        .collect()
    }

    async fn count_outbox_set_aside(&self) -> Result<u64, StoreError> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE set_aside_at IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        Ok(to_u64(n))
    }

    async fn requeue_outbox(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET set_aside_at = NULL, refusal = NULL \
             WHERE id = ? AND set_aside_at IS NOT NULL",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn write_probe(&self) -> Result<(), StoreError> {
        Ok(scrip_common::pool::write_probe(&self.pool).await?)
    }

    async fn complete_outbox(&self, item: &OutboxItem) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM outbox WHERE id = ?")
            .bind(item.id)
            .execute(&mut *tx)
            .await?;
        if let OnSuccess::ActivateBatch { batch_id } = &item.on_success {
            sqlx::query(
                "UPDATE batches SET state = 'active' WHERE batch_id = ? AND state = 'activating'",
            )
            .bind(batch_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE cards SET state = 'active' WHERE batch_id = ? AND state = 'minted'",
            )
            .bind(batch_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn save_ledger_info(
        &self,
        ledger_id: &[u8; 32],
        catalog: &str,
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ledger_info (only_row, ledger_id, catalog, heard_at) VALUES (1, ?, ?, ?) \
             ON CONFLICT (only_row) DO UPDATE SET ledger_id = excluded.ledger_id, \
             catalog = excluded.catalog, heard_at = excluded.heard_at",
        )
        .bind(&ledger_id[..])
        .bind(catalog)
        .bind(to_i64(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn ledger_info(&self) -> Result<Option<([u8; 32], String, UnixSeconds)>, StoreError> {
        let row: Option<(Vec<u8>, String, i64)> =
            sqlx::query_as("SELECT ledger_id, catalog, heard_at FROM ledger_info")
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(id, catalog, at)| Ok((hash32(&id, "ledger id")?, catalog, to_u64(at))))
            .transpose()
    }
}
