//! The ledger's HTTP API (axum): JSON in and out, errors as
//! `{"error": {"code": "...", "message": "..."}}`.

use crate::api::{ApiError, ApiJson, finish, metric};
use crate::config::LedgerConfig;
use crate::rules::Refusal;
use crate::service::{Ledger, LedgerError};
use crate::store::connect;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use scrip_spec::encoding::b64_decode;
use scrip_spec::ledger::{Cosignature, LedgerRequest};
use scrip_spec::{CapacityKind, Nullifier, OperatorKey, Signed};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Largest request body: a spend of 10,000 nullifiers in JSON is about 500 KB.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Most entries one log page returns.
pub const MAX_LOG_PAGE: u32 = 1000;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests_accepted: AtomicU64,
    requests_refused: AtomicU64,
    nullifiers_accepted: AtomicU64,
    nullifiers_refused: AtomicU64,
    internal_errors: AtomicU64,
}

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The ledger.
    pub ledger: Arc<Ledger>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl From<LedgerError> for ApiError {
    fn from(err: LedgerError) -> Self {
        use StatusCode as S;
        match err {
            LedgerError::Refused(r) => {
                let (status, code) = match &r {
                    Refusal::UnknownOperator { .. } => (S::UNAUTHORIZED, "unknown_operator"),
                    Refusal::BadSignature => (S::UNAUTHORIZED, "bad_signature"),
                    Refusal::Stale { .. } => (S::UNAUTHORIZED, "stale_request"),
                    Refusal::WrongLedger => (S::FORBIDDEN, "wrong_ledger"),
                    Refusal::Forbidden { .. } => (S::FORBIDDEN, "forbidden"),
                    Refusal::Replayed => (S::CONFLICT, "replayed_request"),
                    Refusal::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "batch_too_large"),
                    Refusal::Invalid { .. } => (S::UNPROCESSABLE_ENTITY, "invalid_request"),
                };
                ApiError::new(status, code, r.to_string())
            }
            other => {
                // Internal details go to the log, never to the client.
                tracing::error!(error = ?other, "ledger operation failed");
                ApiError::new(
                    S::SERVICE_UNAVAILABLE,
                    "ledger_unavailable",
                    "the ledger could not complete the request; nothing was changed, retry later",
                )
            }
        }
    }
}

/// The ledger's routes.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/info", get(info))
        .route("/v1/entries", post(submit))
        .route("/v1/nullifiers/{nullifier}", get(nullifier))
        .route("/v1/keys", get(keys))
        .route("/v1/log", get(log))
        .route("/v1/totals", get(totals))
        .route("/v1/checkpoint", get(checkpoint))
        .route("/v1/checkpoint/cosign", post(cosign));
    finish(routes, MAX_BODY_BYTES, Duration::from_secs(30)).with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    // Healthy means the database answers, not just that the process runs.
    state.ledger.totals().await?;
    Ok("ok")
}

async fn metrics(State(state): State<AppState>) -> String {
    let m = &state.metrics;
    let info = state.ledger.info().await;
    let line = |name: &str, help: &str, kind: &str, v: u64| metric(name, help, kind, v);
    [
        line(
            "scrip_ledger_requests_accepted_total",
            "Signed requests accepted.",
            "counter",
            m.requests_accepted.load(Ordering::Relaxed),
        ),
        line(
            "scrip_ledger_requests_refused_total",
            "Signed requests refused.",
            "counter",
            m.requests_refused.load(Ordering::Relaxed),
        ),
        line(
            "scrip_ledger_nullifiers_accepted_total",
            "Nullifiers spent.",
            "counter",
            m.nullifiers_accepted.load(Ordering::Relaxed),
        ),
        line(
            "scrip_ledger_nullifiers_refused_total",
            "Nullifiers refused (double spends and bad keys).",
            "counter",
            m.nullifiers_refused.load(Ordering::Relaxed),
        ),
        line(
            "scrip_ledger_internal_errors_total",
            "Requests that failed inside the ledger.",
            "counter",
            m.internal_errors.load(Ordering::Relaxed),
        ),
        line(
            "scrip_ledger_head_seq",
            "Sequence number of the last entry.",
            "gauge",
            info.head_seq,
        ),
    ]
    .concat()
}

async fn info(State(state): State<AppState>) -> Json<crate::service::LedgerInfo> {
    Json(state.ledger.info().await)
}

async fn submit(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<Signed<LedgerRequest>>,
) -> Result<Json<crate::service::Receipt>, ApiError> {
    let m = &state.metrics;
    // The append runs in its own task: if the client goes away or the request times out, the
    // append still finishes (or fails) as a whole, and the ledger's head stays in step.
    let ledger = state.ledger.clone();
    let outcome = tokio::spawn(async move { ledger.submit(request).await })
        .await
        .unwrap_or_else(|join| {
            Err(LedgerError::Store(crate::store::StoreError::Corrupt {
                what: format!("append task failed: {join}"),
            }))
        });
    match outcome {
        Ok(receipt) => {
            let accepted = receipt
                .spends
                .iter()
                .filter(|s| s.status == crate::service::SpendStatus::Accepted)
                .count() as u64;
            m.requests_accepted.fetch_add(1, Ordering::Relaxed);
            m.nullifiers_accepted.fetch_add(accepted, Ordering::Relaxed);
            m.nullifiers_refused
                .fetch_add(receipt.spends.len() as u64 - accepted, Ordering::Relaxed);
            Ok(Json(receipt))
        }
        Err(e) => {
            if matches!(e, LedgerError::Refused(_)) {
                m.requests_refused.fetch_add(1, Ordering::Relaxed);
            } else {
                m.internal_errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(e.into())
        }
    }
}

/// A nullifier's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum NullifierStatus {
    /// Not in the spent set.
    Unspent,
    /// Spent.
    Spent {
        /// When.
        spent_at: u64,
        /// By which operator.
        spent_by: String,
        /// In which entry.
        seq: u64,
    },
}

async fn nullifier(
    State(state): State<AppState>,
    Path(text): Path<String>,
) -> Result<Json<NullifierStatus>, ApiError> {
    let bytes = b64_decode(&text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    let Some(bytes) = bytes else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_nullifier",
            "a nullifier is 32 bytes in unpadded base64url (43 characters)",
        ));
    };
    Ok(Json(
        match state.ledger.nullifier(&Nullifier(bytes)).await? {
            None => NullifierStatus::Unspent,
            Some((first, name)) => NullifierStatus::Spent {
                spent_at: first.spent_at,
                spent_by: name,
                seq: first.seq,
            },
        },
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFilter {
    issuer: Option<String>,
    kind: Option<String>,
}

/// The key directory's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyDirectory {
    /// Keys, oldest first.
    pub keys: Vec<crate::store::KeyRecord>,
}

async fn keys(
    State(state): State<AppState>,
    filter: Result<Query<KeyFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<KeyDirectory>, ApiError> {
    let Query(filter) = filter
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_query", e.body_text()))?;
    let kind = filter
        .kind
        .as_deref()
        .map(CapacityKind::new)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_query", e.to_string()))?;
    Ok(Json(KeyDirectory {
        keys: state
            .ledger
            .keys(filter.issuer.as_deref(), kind.as_ref())
            .await,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogRange {
    #[serde(default)]
    from: u64,
    limit: Option<u32>,
}

/// A page of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogPage {
    /// Entries in order.
    pub entries: Vec<scrip_spec::ledger::LogEntry>,
    /// Where the next page starts, if the log goes on.
    pub next: Option<u64>,
}

async fn log(
    State(state): State<AppState>,
    range: Result<Query<LogRange>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LogPage>, ApiError> {
    let Query(range) = range
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_query", e.body_text()))?;
    let limit = range.limit.unwrap_or(MAX_LOG_PAGE).clamp(1, MAX_LOG_PAGE);
    let entries = state.ledger.entries(range.from, limit).await?;
    let next = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.seq + 1))
        .flatten();
    Ok(Json(LogPage { entries, next }))
}

async fn totals(
    State(state): State<AppState>,
) -> Result<Json<scrip_spec::ledger::Totals>, ApiError> {
    Ok(Json(state.ledger.totals().await?))
}

async fn checkpoint(
    State(state): State<AppState>,
) -> Result<Json<crate::service::CheckpointView>, ApiError> {
    state
        .ledger
        .latest_checkpoint()
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_checkpoint",
                "no checkpoint has been made yet",
            )
        })
}

async fn cosign(
    State(state): State<AppState>,
    ApiJson(cosignature): ApiJson<Signed<Cosignature>>,
) -> Result<StatusCode, ApiError> {
    state.ledger.cosign(cosignature).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A running ledger service bound to its port.
pub struct Application {
    listener: tokio::net::TcpListener,
    state: AppState,
    checkpoint_secs: u64,
}

impl Application {
    /// Opens the store and the ledger and binds the listener (port 0 picks a free port).
    pub async fn build(config: &LedgerConfig) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let key_text = std::fs::read_to_string(&config.key_file).with_context(|| {
            format!(
                "cannot read the ledger key file {}",
                config.key_file.display()
            )
        })?;
        let key = OperatorKey::from_text(&key_text)?;
        let store = connect(&config.database).await?;
        let ledger = Ledger::open(store, key).await?;
        Self::from_ledger(Arc::new(ledger), config.listen, config.checkpoint_secs).await
    }

    /// Serves an already opened ledger.
    pub async fn from_ledger(
        ledger: Arc<Ledger>,
        listen: std::net::SocketAddr,
        checkpoint_secs: u64,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        Ok(Self {
            listener,
            state: AppState {
                ledger,
                metrics: Arc::default(),
            },
            checkpoint_secs,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, making a checkpoint every `checkpoint_secs` when the
    /// log grew, and a last one on the way out.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let ledger = self.state.ledger.clone();
        let period = Duration::from_secs(self.checkpoint_secs.max(1));
        let checkpoints = tokio::spawn({
            let ledger = ledger.clone();
            async move {
                let mut tick = tokio::time::interval(period);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = ledger.checkpoint().await {
                        tracing::error!(error = ?e, "checkpoint failed");
                    }
                }
            }
        });
        let result = crate::api::serve(self.listener, router(self.state), shutdown).await;
        checkpoints.abort();
        if let Err(e) = ledger.checkpoint().await {
            tracing::error!(error = ?e, "final checkpoint failed");
        }
        result
    }
}
