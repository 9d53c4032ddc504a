//! The redeemer's storage: one row per token it spent (its current grant, hashed) and, in
//! optimistic mode, spends not yet committed. SQLite; the grants survive a restart of the
//! sidecar.
//!
//! Grant codes are derived, not random: the secret of the grant of generation `g` for a
//! nullifier is a keyed hash of (nullifier, g) under the redeemer's grant key, kept in an
//! owner-only file beside the database. So a repeat presentation of a token gets the same code
//! again without the code being stored (PROTOCOL.md section 10.1, **Repeats**).

use scrip_spec::{CapacityKind, GrantCode, Nullifier, Token, UnixSeconds};
use sha2::{Digest as _, Sha256};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Row as _, SqlitePool};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

/// A grant's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantState {
    /// Handed out, not yet used (it may have expired: see `expires_at`).
    Issued,
    /// Used by the relay: the token is spent for good.
    Consumed,
    /// Withdrawn because the ledger refused its spend (optimistic mode): the token is spent
    /// elsewhere, and no new grant may ever be given for it.
    Refused,
}

impl GrantState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "issued" => Self::Issued,
            "consumed" => Self::Consumed,
            "refused" => Self::Refused,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Consumed => "consumed",
            Self::Refused => "refused",
        }
    }
}

/// What this redeemer holds for a token it spent: its current grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// The token's nullifier.
    pub nullifier: Nullifier,
    /// The kind.
    pub kind: CapacityKind,
    /// The current grant's generation (0 for the first).
    pub generation: u64,
    /// The current grant's storage hash.
    pub hash: [u8; 32],
    /// Its state.
    pub state: GrantState,
    /// Its expiry.
    pub expires_at: UnixSeconds,
    /// The token key's `redeem_until`, after which the row is swept; `None` for a row
    /// migrated from before it was kept, until the start-up fills it in.
    pub redeem_until: Option<UnixSeconds>,
}

/// Why a token gets no grant here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoGrant {
    /// A grant for it was used: the token is spent for good.
    Consumed,
    /// The ledger refused its spend: the token was spent elsewhere.
    Refused,
}

/// How a grant came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted {
    /// The token's first grant here.
    First,
    /// The same grant as before, still unused and unexpired: nothing written.
    Same,
    /// The next generation, the previous grant having expired unused (or its code no longer
    /// being derivable, for a row from before derived codes or after the grant key was lost).
    Next,
}

/// A grant that can be handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveGrant {
    /// The code.
    pub code: GrantCode,
    /// Its expiry.
    pub expires_at: UnixSeconds,
    /// How it came about.
    pub granted: Granted,
}

/// What consuming a grant found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// Consumed now.
    Consumed,
    /// No such grant (never issued here, or a generation since replaced).
    Unknown,
    /// Already consumed.
    Used,
    /// Revoked: the ledger refused its spend.
    Revoked,
    /// Past its expiry.
    Expired,
    /// For another kind (not consumed).
    WrongKind,
}

/// A grant to give: see [`RedeemerStore::insert_grants`].
#[derive(Debug, Clone)]
pub struct NewGrant {
    /// The spent token's nullifier.
    pub nullifier: Nullifier,
    /// What it buys.
    pub kind: CapacityKind,
    /// When it expires, if a new grant is made.
    pub expires_at: UnixSeconds,
    /// The token key's `redeem_until`.
    pub redeem_until: UnixSeconds,
    /// In optimistic mode, the token whose spend is still to send to the ledger (recorded only
    /// with the token's first grant).
    pub pending: Option<Token>,
    /// Now.
    pub now: UnixSeconds,
}

/// Domain separator of the derivation of grant secrets (local to a redeemer: nobody else
/// needs to derive them).
const GRANT_SECRET_DOMAIN: &[u8] = b"scrip/v1/redeemer/grant-secret";
/// First word of the grant key file.
const GRANT_KEY_PREFIX: &str = "scrip-grant-key-v1";

/// The key grant secrets are derived from. Whoever holds it can compute the code of every
/// live grant, so it is kept owner-only, never in the database (which holds hashes only).
#[derive(Clone)]
pub struct GrantKey([u8; 32]);

impl std::fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantKey(elided)")
    }
}

impl GrantKey {
    /// A new key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        Self(key)
    }

    /// The code of generation `generation` of the grant for `nullifier`:
    /// secret = the first 16 bytes of SHA-256(domain || key || nullifier || generation, 8 bytes
    /// big-endian). Every input has a fixed length, so the keyed hash is a PRF here.
    pub fn code(&self, kind: &CapacityKind, nullifier: &Nullifier, generation: u64) -> GrantCode {
        let mut h = Sha256::new();
        h.update(GRANT_SECRET_DOMAIN);
        h.update(self.0);
        h.update(nullifier.0);
        h.update(generation.to_be_bytes());
        let digest = h.finalize();
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&digest[..16]);
        GrantCode::from_secret(kind.clone(), secret)
    }

    fn to_text(&self) -> String {
        format!(
            "{GRANT_KEY_PREFIX} {}\n",
            scrip_spec::encoding::b64_encode(self.0)
        )
    }

    fn from_text(text: &str) -> Option<Self> {
        let encoded = text.trim().strip_prefix(GRANT_KEY_PREFIX)?.trim();
        let bytes = scrip_spec::encoding::b64_decode(encoded).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// Reads the key at `path`, or creates it there (mode 0600) if there is none. Two
    /// processes starting at once on one database end up with the same key: of two creations
    /// only one succeeds ([`scrip_spec::secret_file::write_private`]), and both read it back.
    fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let read = |path: &Path| -> anyhow::Result<Option<Self>> {
            match std::fs::read_to_string(path) {
                Ok(text) => Self::from_text(&text)
                    .map(Some)
                    .with_context(|| format!("the grant key file {} is corrupt", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => {
                    Err(e).with_context(|| format!("cannot read the grant key {}", path.display()))
                }
            }
        };
        if let Some(key) = read(path)? {
            return Ok(key);
        }
        match scrip_spec::secret_file::write_private(
            path,
            Self::generate().to_text().as_bytes(),
            false,
        ) {
            // Another process created it first: its key is the one.
            Ok(()) | Err(scrip_spec::secret_file::SecretFileError::Exists { .. }) => {}
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot create the grant key {}", path.display())));
            }
        }
        read(path)?.with_context(|| format!("the grant key {} vanished", path.display()))
    }
}

/// The redeemer's store.
#[derive(Debug, Clone)]
pub struct RedeemerStore {
    pool: SqlitePool,
    /// Consumes only, at synchronous=FULL: see [`RedeemerStore::connect`].
    consume_pool: SqlitePool,
    key: GrantKey,
}

/// Rows per multi-row statement: 8 columns each stays far below SQLite's 32,766 parameters.
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

/// A stored 32-byte value; anything else means the database was changed by hand.
fn bytes32(bytes: Vec<u8>, what: &str) -> anyhow::Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("corrupt {what}: not 32 bytes"))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const RECORD_COLUMNS: &str = "nullifier, kind, generation, hash, state, expires_at, redeem_until";

fn record_of(row: &sqlx::sqlite::SqliteRow) -> anyhow::Result<GrantRecord> {
    let kind: String = row.get(1);
    let state: String = row.get(4);
    Ok(GrantRecord {
        nullifier: Nullifier(bytes32(row.get(0), "nullifier")?),
        kind: kind.parse()?,
        generation: to_u64(row.get(2)),
        hash: bytes32(row.get(3), "grant hash")?,
        state: GrantState::parse(&state)
            .ok_or_else(|| anyhow::anyhow!("grant state {state:?} is corrupt"))?,
        expires_at: to_u64(row.get(5)),
        redeem_until: row.get::<Option<i64>, _>(6).map(to_u64),
    })
}

/// What a batch of [`NewGrant`]s does to one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    None,
    Insert,
    Update,
}

impl RedeemerStore {
    /// Opens (creating if needed) and migrates, and reads the grant key beside the database
    /// (`<database file>.grant-key`, created on first start). `fsync_each_commit` is needed in
    /// optimistic mode, where a pending spend lost to a power cut would be capacity given and
    /// never recorded.
    pub async fn connect(url: &str, fsync_each_commit: bool) -> anyhow::Result<Self> {
        anyhow::ensure!(
            url.starts_with("sqlite:"),
            "the redeemer stores grants in SQLite: use sqlite://PATH"
        );
        let options = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
        // In strict mode grants need not fsync each commit: WAL with synchronous=NORMAL survives
        // a killed process, and a grant lost to a power cut is recovered by the re-grant rule
        // (the wallet presents the token again; this redeemer spent it, has no row for it, and
        // grants anew). Per-grant fsync capped redemptions at about 1,100/s on the development
        // machine.
        let pool = scrip_common::pool::durable_pool(options.clone(), fsync_each_commit).await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        // A consume, though, must be on disk before the relay gives the capacity: a consumed
        // state lost to a power cut would let the same grant (or, after a re-grant, the same
        // token) buy capacity twice. SQLite's synchronous is per connection, so consumes have
        // their own connections at FULL; in WAL mode their fsync also covers every commit
        // before them, the grant being consumed included.
        let consume_pool = scrip_common::pool::durable_pool(options, true).await?;
        let file: Option<String> =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_optional(&pool)
                .await?;
        let key = match file.filter(|f| !f.is_empty()) {
            Some(file) => {
                let path = PathBuf::from(format!("{file}.grant-key"));
                tokio::task::spawn_blocking(move || GrantKey::load_or_create(&path)).await??
            }
            // An in-memory database lives as long as its key.
            None => GrantKey::generate(),
        };
        Ok(Self {
            pool,
            consume_pool,
            key,
        })
    }

    /// The current grant for `nullifier` if it can be handed out again as it is: issued,
    /// unexpired at `now`, and its code derivable (the hash matches).
    pub fn live(&self, record: &GrantRecord, now: UnixSeconds) -> Option<LiveGrant> {
        if record.state != GrantState::Issued || now > record.expires_at {
            return None;
        }
        let code = self
            .key
            .code(&record.kind, &record.nullifier, record.generation);
        (code.storage_hash() == record.hash).then_some(LiveGrant {
            code,
            expires_at: record.expires_at,
            granted: Granted::Same,
        })
    }

    /// What this redeemer holds for `nullifier`, if anything.
    pub async fn record(&self, nullifier: &Nullifier) -> anyhow::Result<Option<GrantRecord>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM grants WHERE nullifier = ?");
        let row = sqlx::query(&sql)
            .bind(&nullifier.0[..])
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record_of).transpose()
    }

    /// Which of `nullifiers` this redeemer holds a row for, with when the row was made (the
    /// first spend here): one query for a whole spend batch.
    pub async fn with_rows(
        &self,
        nullifiers: &[Nullifier],
    ) -> anyhow::Result<HashMap<Nullifier, UnixSeconds>> {
        let mut known = HashMap::new();
        for chunk in nullifiers.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT nullifier, created_at FROM grants WHERE nullifier IN ({})",
                placeholders(chunk.len(), 1)
            );
            let mut query = sqlx::query(&sql);
            for n in chunk {
                query = query.bind(&n.0[..]);
            }
            for row in query.fetch_all(&self.pool).await? {
                let created_at: i64 = row.get(1);
                known.insert(
                    Nullifier(bytes32(row.get(0), "nullifier")?),
                    to_u64(created_at),
                );
            }
        }
        Ok(known)
    }

    /// A grant by the hash of its code (for tests and status).
    pub async fn grant(&self, hash: &[u8; 32]) -> anyhow::Result<Option<GrantRecord>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM grants WHERE hash = ?");
        let row = sqlx::query(&sql)
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record_of).transpose()
    }

    /// How many tokens this redeemer holds a row for.
    pub async fn grant_rows(&self) -> anyhow::Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM grants")
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(n))
    }

    /// [`Self::insert_grants`] for one grant.
    pub async fn insert_grant(
        &self,
        grant: &NewGrant,
    ) -> anyhow::Result<Result<LiveGrant, NoGrant>> {
        let mut outcomes = self.insert_grants(std::slice::from_ref(grant)).await?;
        outcomes
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no outcome for the grant"))
    }

    /// Gives each token its grant, by the re-grant rule, in one transaction (group commit),
    /// each with its own outcome, in order:
    /// - no row: the first grant (generation 0), and with `pending` the spend recorded for the
    ///   next flush (optimistic mode);
    /// - a grant issued, unexpired and derivable: the same grant again, nothing written;
    /// - a grant issued but expired (or not derivable): the next generation, which replaces it;
    /// - consumed or refused: no grant.
    ///
    /// The row is read inside the write transaction, so no race can give two live grants or a
    /// grant after a consume. A nullifier twice in the batch behaves as two presentations one
    /// after the other: the second gets the first's grant.
    pub async fn insert_grants(
        &self,
        grants: &[NewGrant],
    ) -> anyhow::Result<Vec<Result<LiveGrant, NoGrant>>> {
        if grants.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut rows: HashMap<Nullifier, (GrantRecord, Write)> = HashMap::new();
        for chunk in grants.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM grants WHERE nullifier IN ({})",
                placeholders(chunk.len(), 1)
            );
            let mut query = sqlx::query(&sql);
            for grant in chunk {
                query = query.bind(&grant.nullifier.0[..]);
            }
            for row in query.fetch_all(&mut *tx).await? {
                let record = record_of(&row)?;
                rows.insert(record.nullifier, (record, Write::None));
            }
        }
        let mut outcomes = Vec::with_capacity(grants.len());
        let mut pending: Vec<&NewGrant> = Vec::new();
        for grant in grants {
            let fresh = |generation: u64| {
                let code = self.key.code(&grant.kind, &grant.nullifier, generation);
                let record = GrantRecord {
                    nullifier: grant.nullifier,
                    kind: grant.kind.clone(),
                    generation,
                    hash: code.storage_hash(),
                    state: GrantState::Issued,
                    expires_at: grant.expires_at,
                    redeem_until: Some(grant.redeem_until),
                };
                (record, code)
            };
            let outcome = match rows.get_mut(&grant.nullifier) {
                None => {
                    let (record, code) = fresh(0);
                    rows.insert(grant.nullifier, (record, Write::Insert));
                    if grant.pending.is_some() {
                        pending.push(grant);
                    }
                    Ok(LiveGrant {
                        code,
                        expires_at: grant.expires_at,
                        granted: Granted::First,
                    })
                }
                Some((record, _)) if record.state == GrantState::Consumed => Err(NoGrant::Consumed),
                Some((record, _)) if record.state == GrantState::Refused => Err(NoGrant::Refused),
                Some((record, write)) => match self.live(record, grant.now) {
                    Some(same) => Ok(same),
                    None => {
                        let (next, code) = fresh(record.generation.saturating_add(1));
                        *record = next;
                        if *write == Write::None {
                            *write = Write::Update;
                        }
                        Ok(LiveGrant {
                            code,
                            expires_at: grant.expires_at,
                            granted: Granted::Next,
                        })
                    }
                },
            };
            outcomes.push(outcome);
        }
        let created_at: HashMap<Nullifier, UnixSeconds> =
            grants.iter().map(|g| (g.nullifier, g.now)).collect();
        let inserts: Vec<&GrantRecord> = rows
            .values()
            .filter(|(_, w)| *w == Write::Insert)
            .map(|(r, _)| r)
            .collect();
        for chunk in inserts.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO grants (nullifier, kind, generation, hash, state, expires_at, \
                 redeem_until, created_at) VALUES {}",
                placeholders(chunk.len(), 8)
            );
            let mut query = sqlx::query(&sql);
            for r in chunk {
                query = query
                    .bind(&r.nullifier.0[..])
                    .bind(r.kind.as_str())
                    .bind(to_i64(r.generation))
                    .bind(&r.hash[..])
                    .bind(r.state.as_str())
                    .bind(to_i64(r.expires_at))
                    .bind(r.redeem_until.map(to_i64))
                    .bind(to_i64(created_at.get(&r.nullifier).copied().unwrap_or(0)));
            }
            query.execute(&mut *tx).await?;
        }
        // Re-grants are rare (a grant left to expire, then the token presented again): one
        // statement each.
        for (r, _) in rows.values().filter(|(_, w)| *w == Write::Update) {
            sqlx::query(
                "UPDATE grants SET generation = ?, hash = ?, expires_at = ?, redeem_until = ? \
                 WHERE nullifier = ? AND state = 'issued'",
            )
            .bind(to_i64(r.generation))
            .bind(&r.hash[..])
            .bind(to_i64(r.expires_at))
            .bind(r.redeem_until.map(to_i64))
            .bind(&r.nullifier.0[..])
            .execute(&mut *tx)
            .await?;
        }
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

    /// Records a spend to send to the ledger (optimistic mode). The first grant of a token
    /// records its spend in its own transaction; this is for a spend to send again.
    pub async fn record_pending(&self, token: &Token, now: UnixSeconds) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO pending_spends (nullifier, key_id, token, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (nullifier) DO NOTHING",
        )
        .bind(&token.nullifier().0[..])
        .bind(&token.token_key_id.0[..])
        .bind(token.to_bytes())
        .bind(to_i64(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Consumes a grant atomically (one of two concurrent consumes wins), on a connection at
    /// synchronous=FULL: the consume is on disk before the answer.
    pub async fn consume(
        &self,
        hash: &[u8; 32],
        kind: &CapacityKind,
        now: UnixSeconds,
    ) -> anyhow::Result<ConsumeOutcome> {
        let mut tx = self.consume_pool.begin_with("BEGIN IMMEDIATE").await?;
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
            Some(GrantState::Refused) => ConsumeOutcome::Revoked,
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

    /// The `synchronous` level of the connections consumes run on (2 is FULL).
    pub async fn consume_synchronous(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&self.consume_pool)
            .await?)
    }

    /// Withdraws the grant of a nullifier whose optimistic spend the ledger refused, for good;
    /// returns 1 if it was already consumed, else 0.
    pub async fn revoke_nullifier(&self, nullifier: &Nullifier) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE grants SET state = 'refused' WHERE nullifier = ? AND state = 'issued'")
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
        Ok(to_u64(consumed))
    }

    /// Deletes at most `limit` rows of tokens whose key's `redeem_until` is before `before`
    /// (such a token is refused by the window check before its row would be read), keeping
    /// those with a spend still to send; returns how many were deleted. One short transaction,
    /// so a sweep never holds the write lock for long.
    pub async fn sweep(&self, before: UnixSeconds, limit: u32) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "DELETE FROM grants WHERE nullifier IN (SELECT nullifier FROM grants \
             WHERE redeem_until < ? \
             AND nullifier NOT IN (SELECT nullifier FROM pending_spends) LIMIT ?)",
        )
        .bind(to_i64(before))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Gives rows migrated without their key's `redeem_until` the bound `redeem_until`: the
    /// latest `redeem_until` of any key in the directory, which no token spent before can
    /// exceed. Returns how many rows it set.
    pub async fn bound_unknown_windows(&self, redeem_until: UnixSeconds) -> anyhow::Result<u64> {
        let done = sqlx::query("UPDATE grants SET redeem_until = ? WHERE redeem_until IS NULL")
            .bind(to_i64(redeem_until))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Whether some rows lack their key's `redeem_until` (migrated from before).
    pub async fn has_unknown_windows(&self) -> anyhow::Result<bool> {
        let any: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM grants WHERE redeem_until IS NULL LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(any.is_some())
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

    /// Whether the database takes writes now (for `/healthz`): see
    /// [`scrip_common::pool::write_probe`].
    pub async fn writable(&self) -> Result<(), sqlx::Error> {
        scrip_common::pool::write_probe(&self.pool).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scrip_spec::TokenKeyId;

    const NOW: UnixSeconds = 1_800_000_000;

    fn kind() -> CapacityKind {
        CapacityKind::new("queue").expect("kind")
    }

    fn grant(nullifier: u8, pending: bool) -> NewGrant {
        NewGrant {
            nullifier: Nullifier([nullifier; 32]),
            kind: kind(),
            expires_at: NOW + 300,
            redeem_until: NOW + 3600,
            pending: pending.then_some(Token {
                nonce: [nullifier; 32],
                challenge_digest: [0; 32],
                token_key_id: TokenKeyId([7; 32]),
                authenticator: [0; scrip_spec::key::MODULUS_BYTES],
            }),
            now: NOW,
        }
    }

    async fn store(dir: &tempfile::TempDir) -> RedeemerStore {
        let url = format!("sqlite://{}", dir.path().join("grants.db").display());
        RedeemerStore::connect(&url, false).await.expect("store")
    }

    fn code(outcome: &Result<LiveGrant, NoGrant>) -> GrantCode {
        outcome.as_ref().expect("a grant").code.clone()
    }

    /// A batch behaves as its grants given one after the other: consumed and refused
    /// nullifiers get none, an unused grant is given again, an expired one is replaced by the
    /// next generation, a repeated nullifier gets its first grant, and pending spends are
    /// recorded once.
    #[tokio::test]
    async fn a_batch_of_grants_acts_as_grants_one_by_one() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir).await;
        // Before the batch: 1 consumed, 2 refused, 3 unused, 4 expired unused.
        let mut before = Vec::new();
        for n in 1..=4 {
            let mut g = grant(n, false);
            if n == 4 {
                g.expires_at = NOW - 1;
            }
            let outcome = store.insert_grant(&g).await.expect("stored");
            assert_eq!(outcome.as_ref().map(|g| g.granted), Ok(Granted::First));
            before.push(code(&outcome));
        }
        assert_eq!(
            store
                .consume(&before[0].storage_hash(), &kind(), NOW)
                .await
                .expect("consume"),
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
            grant(1, false), // consumed before: none
            grant(2, false), // refused at the ledger: none
            grant(3, false), // unused: the same grant
            grant(4, false), // expired: the next generation
            grant(5, true),  // new, pending spend
            grant(5, true),  // the same token again in the same batch: the same grant
        ];
        let outcomes = store.insert_grants(&batch).await.expect("batch");
        assert_eq!(outcomes[0], Err(NoGrant::Consumed));
        assert_eq!(outcomes[1], Err(NoGrant::Refused));
        assert_eq!(outcomes[2].as_ref().map(|g| g.granted), Ok(Granted::Same));
        assert_eq!(code(&outcomes[2]), before[2]);
        assert_eq!(outcomes[3].as_ref().map(|g| g.granted), Ok(Granted::Next));
        assert_ne!(code(&outcomes[3]), before[3]);
        assert_eq!(outcomes[4].as_ref().map(|g| g.granted), Ok(Granted::First));
        assert_eq!(outcomes[5].as_ref().map(|g| g.granted), Ok(Granted::Same));
        assert_eq!(code(&outcomes[4]), code(&outcomes[5]));
        assert_eq!(
            store.grant_rows().await.expect("rows"),
            5,
            "one row per token"
        );

        let record = store
            .record(&Nullifier([4; 32]))
            .await
            .expect("read")
            .expect("row");
        assert_eq!((record.generation, record.expires_at), (1, NOW + 300));
        assert_eq!(
            store
                .consume(&before[3].storage_hash(), &kind(), NOW)
                .await
                .expect("consume"),
            ConsumeOutcome::Unknown,
            "the replaced generation is gone"
        );
        assert_eq!(
            store
                .consume(&code(&outcomes[3]).storage_hash(), &kind(), NOW)
                .await
                .expect("consume"),
            ConsumeOutcome::Consumed
        );
        let pending = store.pending_spends(10).await.expect("pending");
        assert_eq!(pending.len(), 1, "one pending spend for nullifier 5");
        assert!(store.insert_grants(&[]).await.expect("empty").is_empty());
    }

    /// The code of a grant is a function of the key, the nullifier and the generation: the
    /// same store (or another process on the same database) gives it again, and the grant key
    /// file is owner-only.
    #[tokio::test]
    async fn codes_derive_from_a_key_kept_beside_the_database() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let first = store(&dir).await;
        let again = store(&dir).await;
        let g = first.insert_grant(&grant(1, false)).await.expect("stored");
        let record = again
            .record(&Nullifier([1; 32]))
            .await
            .expect("read")
            .expect("row");
        let same = again.live(&record, NOW).expect("live");
        assert_eq!(same.code, code(&g));
        assert!(again.live(&record, NOW + 301).is_none(), "expired");
        let key = dir.path().join("grants.db.grant-key");
        let mode = std::fs::metadata(&key)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0);

        // A lost key: the stored hash no longer matches, so the next generation replaces the
        // grant instead of handing out a code nobody can consume.
        std::fs::remove_file(&key).expect("remove");
        let new_key = store(&dir).await;
        assert!(new_key.live(&record, NOW).is_none());
        let next = new_key
            .insert_grant(&grant(1, false))
            .await
            .expect("stored");
        assert_eq!(next.as_ref().map(|g| g.granted), Ok(Granted::Next));
        assert_eq!(
            new_key
                .consume(&code(&next).storage_hash(), &kind(), NOW)
                .await
                .expect("consume"),
            ConsumeOutcome::Consumed
        );
    }

    /// Rows of keys past `redeem_until` are swept in bounded batches; a row with a spend still
    /// to send, and rows of keys still redeemable, stay.
    #[tokio::test]
    async fn the_sweep_deletes_only_rows_no_presentation_can_need() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir).await;
        for n in 1..=5 {
            let mut g = grant(n, n == 5);
            // 4 is of a key still redeemable; 5 has its spend still to send.
            g.redeem_until = if n == 4 { NOW + 3600 } else { NOW + 10 };
            store
                .insert_grant(&g)
                .await
                .expect("stored")
                .expect("granted");
        }
        assert_eq!(
            store.sweep(NOW + 10, 100).await.expect("sweep"),
            0,
            "not yet past"
        );
        assert_eq!(store.sweep(NOW + 11, 2).await.expect("sweep"), 2, "bounded");
        assert_eq!(store.sweep(NOW + 11, 100).await.expect("sweep"), 1);
        assert_eq!(
            store.grant_rows().await.expect("rows"),
            2,
            "4 (redeemable) and 5 (pending)"
        );
        assert!(
            store
                .record(&Nullifier([4; 32]))
                .await
                .expect("read")
                .is_some()
        );
        assert!(
            store
                .record(&Nullifier([5; 32]))
                .await
                .expect("read")
                .is_some()
        );
    }

    /// A fresh database migrated up to, not including, migration `version`.
    async fn database_before(version: i64) -> (tempfile::TempDir, String, SqlitePool) {
        use sqlx::migrate::Migrator;
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("grants.db").display());
        let options = SqliteConnectOptions::from_str(&url)
            .expect("url")
            .create_if_missing(true);
        let pool = scrip_common::pool::durable_pool(options, false)
            .await
            .expect("pool");
        let mut migrator: Migrator = sqlx::migrate!("migrations/sqlite");
        let old: Vec<_> = migrator
            .migrations
            .iter()
            .filter(|m| m.version < version)
            .cloned()
            .collect();
        migrator.migrations = old.into();
        migrator.run(&pool).await.expect("the older schema");
        (dir, url, pool)
    }

    /// Rows of the old table (several grants per nullifier, random codes) become one row per
    /// nullifier that keeps what was decided: a consumed token stays spent, a refused one
    /// refused, and an unused grant stays usable until a repeat replaces it.
    #[tokio::test]
    async fn old_grants_migrate_to_one_row_per_token() {
        let (_dir, url, pool) = database_before(3).await;
        // (hash, nullifier, state, expires_at)
        let rows: [(u8, u8, &str, i64); 7] = [
            (1, 1, "revoked", 9_999_999_999),
            (2, 1, "consumed", 9_999_999_999),
            (3, 2, "refused", 9_999_999_999),
            (4, 3, "revoked", 9_999_999_999),
            (5, 3, "issued", 9_999_999_999),
            (6, 4, "revoked", 9_999_999_999),
            (7, 1, "revoked", 9_999_999_999),
        ];
        for (hash, nullifier, state, expires_at) in rows {
            sqlx::query(
                "INSERT INTO grants (hash, kind, nullifier, expires_at, state, created_at) \
                 VALUES (?, 'queue', ?, ?, ?, 1)",
            )
            .bind(&[hash; 32][..])
            .bind(&[nullifier; 32][..])
            .bind(expires_at)
            .bind(state)
            .execute(&pool)
            .await
            .expect("old row");
        }
        pool.close().await;

        let store = RedeemerStore::connect(&url, false).await.expect("migrated");
        assert_eq!(store.grant_rows().await.expect("rows"), 4);
        let outcome = |n: u8| grant(n, false);
        let results = store
            .insert_grants(&[outcome(1), outcome(2), outcome(3), outcome(4)])
            .await
            .expect("repeats");
        assert_eq!(results[0], Err(NoGrant::Consumed));
        assert_eq!(results[1], Err(NoGrant::Refused));
        assert_eq!(results[2].as_ref().map(|g| g.granted), Ok(Granted::Next));
        assert_eq!(results[3].as_ref().map(|g| g.granted), Ok(Granted::Next));
        let consume = |hash: u8| {
            let store = store.clone();
            async move { store.consume(&[hash; 32], &kind(), NOW).await }
        };
        assert_eq!(consume(2).await.expect("consume"), ConsumeOutcome::Used);
        assert_eq!(consume(3).await.expect("consume"), ConsumeOutcome::Revoked);
        assert_eq!(
            consume(5).await.expect("consume"),
            ConsumeOutcome::Unknown,
            "replaced"
        );
        assert_eq!(consume(6).await.expect("consume"), ConsumeOutcome::Unknown);

        // Rows without a known redeem_until are bounded at start, then swept with the rest.
        assert!(store.has_unknown_windows().await.expect("read"));
        assert_eq!(store.bound_unknown_windows(NOW).await.expect("bound"), 2);
        assert!(!store.has_unknown_windows().await.expect("read"));
        assert_eq!(store.sweep(NOW + 1, 100).await.expect("sweep"), 2);
    }

    /// Rows of the one-row-per-token layout (0003, keyed by nullifier) are carried over to
    /// the table in row order, every column kept: a repeat, a consume and the sweep find
    /// them as before, and a nullifier still has one row at most.
    #[tokio::test]
    async fn grants_keyed_by_nullifier_are_carried_over_in_row_order() {
        let (dir, url, pool) = database_before(4).await;
        let key = GrantKey::load_or_create(&dir.path().join("grants.db.grant-key")).expect("key");
        // (nullifier, state, expires_at, redeem_until)
        let rows: [(u8, &str, u64, Option<i64>); 4] = [
            (1, "issued", NOW + 100, Some(to_i64(NOW + 1000))),
            (2, "consumed", NOW + 100, Some(to_i64(NOW + 1000))),
            (3, "refused", NOW + 100, Some(to_i64(NOW - 1))),
            (4, "issued", NOW + 100, None),
        ];
        for (n, state, expires_at, redeem_until) in rows {
            let code = key.code(&kind(), &Nullifier([n; 32]), 2);
            sqlx::query(
                "INSERT INTO grants (nullifier, kind, generation, hash, state, expires_at, \
                 redeem_until, created_at) VALUES (?, 'queue', 2, ?, ?, ?, ?, ?)",
            )
            .bind(&[n; 32][..])
            .bind(&code.storage_hash()[..])
            .bind(state)
            .bind(to_i64(expires_at))
            .bind(redeem_until)
            .bind(i64::from(n))
            .execute(&pool)
            .await
            .expect("0003 row");
        }
        pool.close().await;

        let store = RedeemerStore::connect(&url, false).await.expect("migrated");
        let layout: String = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'grants'",
        )
        .fetch_one(&store.pool)
        .await
        .expect("schema");
        assert!(layout.contains("id INTEGER PRIMARY KEY"), "{layout}");
        assert!(!layout.contains("WITHOUT ROWID"), "{layout}");
        assert_eq!(store.grant_rows().await.expect("rows"), 4);
        for (n, state, expires_at, redeem_until) in rows {
            let record = store
                .record(&Nullifier([n; 32]))
                .await
                .expect("read")
                .expect("carried over");
            assert_eq!(record.state.as_str(), state);
            assert_eq!(record.generation, 2);
            assert_eq!(record.expires_at, expires_at);
            assert_eq!(record.redeem_until, redeem_until.map(to_u64));
        }
        // The issued grant is handed out again as it was; the consumed one stays spent.
        let again = store
            .insert_grants(&[grant(1, false), grant(2, false), grant(5, false)])
            .await
            .expect("repeats");
        assert_eq!(again[0].as_ref().map(|g| g.granted), Ok(Granted::Same));
        assert_eq!(again[1], Err(NoGrant::Consumed));
        assert_eq!(again[2].as_ref().map(|g| g.granted), Ok(Granted::First));
        assert_eq!(
            store
                .consume(&code(&again[0]).storage_hash(), &kind(), NOW)
                .await
                .expect("consume"),
            ConsumeOutcome::Consumed
        );
        // One row per nullifier is still enforced by the database itself.
        let twice = sqlx::query(
            "INSERT INTO grants (nullifier, kind, generation, hash, state, expires_at, \
             redeem_until, created_at) VALUES (?, 'queue', 0, ?, 'issued', 0, 0, 0)",
        )
        .bind(&[5u8; 32][..])
        .bind(&[9u8; 32][..])
        .execute(&store.pool)
        .await;
        assert!(twice.is_err(), "a second row for one nullifier");
        assert_eq!(
            store.sweep(NOW, 100).await.expect("sweep"),
            1,
            "nullifier 3"
        );
        assert!(
            store
                .record(&Nullifier([3; 32]))
                .await
                .expect("read")
                .is_none()
        );
    }
}
