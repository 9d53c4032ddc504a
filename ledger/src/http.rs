//! The ledger's HTTP API (axum): JSON in and out, errors as
//! `{"error": {"code": "...", "message": "..."}}`.

use crate::config::LedgerConfig;
use crate::node::{Node, NodeSettings};
use crate::rules::Refusal;
use crate::service::{Ledger, LedgerError};
use crate::store::connect;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use scrip_common::metrics::{Gauge, MetricsBuilder, MetricsRegistry, Outcomes};
use scrip_common::server::{ApiError, ApiJson, finish, health_answer, malformed_query};
use scrip_spec::api::Health;
use scrip_spec::api::ledger::{
    CheckpointView, CommitteeView, KeyDirectory, KeyFilter, LedgerErrorCode as Code, LedgerInfo,
    LogPage, LogRange, MAX_LOG_PAGE, MAX_SPENT_PREFIX_BYTES, MIN_SPENT_PREFIX_BYTES,
    NullifierPrefix, NullifierStatus, Receipt, SpendStatus, SpentByPrefix, SpentNullifier,
};
use scrip_spec::encoding::b64_decode;
use scrip_spec::ledger::{Cosignature, LedgerRequest};
use scrip_spec::{Nullifier, OperatorKey, Signed};
use std::sync::Arc;
use std::time::Duration;

/// The checkpoint interval given to committee nodes, which make no checkpoints.
const CHECKPOINT_NEVER: u64 = 86_400;

/// Largest request body: a spend of 10,000 tokens in JSON is about 4.8 MB.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// What `/metrics` shows (PROTOCOL.md section 11.9).
#[derive(Debug)]
pub struct Metrics {
    registry: MetricsRegistry,
    /// `POST /v1/entries` by `accepted`, `refused` (a rule) or `internal` (503).
    requests: Outcomes,
    /// Nullifiers by `accepted` or `refused` (already spent, or a key check).
    nullifiers: Outcomes,
    head_seq: Gauge,
}

impl Metrics {
    /// The ledger's metrics, its own timings included.
    pub fn new(ledger: &Ledger) -> Self {
        let mut m = MetricsBuilder::new("ledger");
        let requests = m.outcomes(
            "requests",
            "Signed requests to POST /v1/entries, by result",
            &["accepted", "refused", "internal"],
        );
        let nullifiers = m.outcomes(
            "nullifiers",
            "Nullifiers in spend requests, by result (refused: already spent or a key check)",
            &["accepted", "refused"],
        );
        let head_seq = m.gauge("head_seq", "Sequence number of the last entry");
        let timings = ledger.timings();
        m.register_latency(
            "writer_wait_seconds",
            "Time a submitted request waits for the writer lock",
            &timings.writer_wait,
        );
        m.register_latency(
            "store_commit_seconds",
            "Time the store takes to append and commit a submitted request's entry",
            &timings.store_commit,
        );
        m.register_latency(
            "token_verification_seconds",
            "Time spent verifying a submitted request's tokens",
            &timings.token_verification,
        );
        m.register_latency(
            "request_seconds",
            "Time from a request's arrival at the ledger to its receipt (checks, token verification, writer lock and commit)",
            &timings.request,
        );
        Self {
            registry: m.build(),
            requests,
            nullifiers,
            head_seq,
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The ledger.
    pub ledger: Arc<Ledger>,
    /// On a committee ledger, this node: requests go through its consensus.
    pub node: Option<Arc<Node>>,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
}

impl From<LedgerError> for ApiError {
    fn from(err: LedgerError) -> Self {
        use StatusCode as S;
        match err {
            LedgerError::Refused(r) => {
                let (status, code) = match &r {
                    Refusal::UnknownOperator { .. } => (S::UNAUTHORIZED, Code::UnknownOperator),
                    Refusal::BadSignature | Refusal::BadApproval { .. } => {
                        (S::UNAUTHORIZED, Code::BadSignature)
                    }
                    Refusal::Stale { .. } => (S::UNAUTHORIZED, Code::StaleRequest),
                    Refusal::WrongLedger => (S::FORBIDDEN, Code::WrongLedger),
                    Refusal::Forbidden { .. } => (S::FORBIDDEN, Code::Forbidden),
                    Refusal::Replayed => (S::CONFLICT, Code::ReplayedRequest),
                    Refusal::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, Code::BatchTooLarge),
                    Refusal::Invalid { .. } => (S::UNPROCESSABLE_ENTITY, Code::InvalidRequest),
                    Refusal::InvalidToken { .. } => (S::UNPROCESSABLE_ENTITY, Code::InvalidToken),
                    Refusal::NoQuorum { .. } => (S::FORBIDDEN, Code::NoQuorum),
                    Refusal::StaleProposal { .. } => (S::CONFLICT, Code::StaleProposal),
                    Refusal::RefreshTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, Code::BatchTooLarge),
                    Refusal::AlreadySpent { .. } => (S::CONFLICT, Code::AlreadySpent),
                };
                let error = ApiError::new(status, code, r.to_string());
                match r {
                    Refusal::AlreadySpent {
                        index,
                        first_spent_at,
                        first_spent_by,
                        ..
                    } => error.details(scrip_spec::api::ErrorDetails {
                        index: Some(index as u64),
                        first_spent_at: Some(first_spent_at),
                        first_spent_by: Some(first_spent_by),
                        ..Default::default()
                    }),
                    _ => error,
                }
            }
            LedgerError::NotOrdered { .. } | LedgerError::Busy | LedgerError::NotInCommittee => {
                ApiError::new(
                    S::SERVICE_UNAVAILABLE,
                    Code::LedgerUnavailable,
                    err.to_string(),
                )
            }
            other => ApiError::unavailable(
                Code::LedgerUnavailable,
                "ledger operation failed",
                &other,
                "the ledger could not complete the request; nothing was changed, retry later",
            ),
        }
    }
}

/// The ledger's routes.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/info", get(info))
        .route("/v1/committee", get(committee))
        .route("/v1/entries", post(submit))
        .route("/v1/nullifiers/{nullifier}", get(nullifier))
        .route("/v1/spent/{prefix}", get(spent_by_prefix))
        .route("/v1/keys", get(keys))
        .route("/v1/log", get(log))
        .route("/v1/totals", get(totals))
        .route("/v1/checkpoint", get(checkpoint))
        .route("/v1/checkpoint/cosign", post(cosign));
    let registry = state.metrics.registry.clone();
    finish(routes, MAX_BODY_BYTES, Duration::from_secs(30), &registry).with_state(state)
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    // Healthy means the database takes writes, not just that the process runs or that reads
    // answer: a full disk refuses every spend while reads go on.
    let store = match state.ledger.store().write_probe().await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = ?e, "health check: the store refuses writes");
            false
        }
    };
    health_answer(Health::from_checks([("store", store)]))
}

async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    // Read at scrape time: checkpoints and pruning move the head too.
    let head_seq = state.ledger.info().await.head_seq;
    state
        .metrics
        .head_seq
        .set(i64::try_from(head_seq).unwrap_or(i64::MAX));
    state.metrics.registry.render()
}

async fn info(State(state): State<AppState>) -> Json<LedgerInfo> {
    let mut info = state.ledger.info().await;
    info.session = state.node.as_ref().map(|node| node.session());
    Json(info)
}

async fn committee(State(state): State<AppState>) -> Json<CommitteeView> {
    Json(CommitteeView {
        members: state.ledger.view().latest_committee().to_vec(),
    })
}

async fn submit(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<Signed<LedgerRequest>>,
) -> Result<Json<Receipt>, ApiError> {
    let m = &state.metrics;
    // The append runs in its own task: if the client goes away or the request times out, the
    // append still finishes (or fails) as a whole, and the ledger's head stays in step.
    let ledger = state.ledger.clone();
    let node = state.node.clone();
    let outcome = tokio::spawn(async move {
        match node {
            Some(node) => node.submit(request).await,
            None => ledger.submit(request).await,
        }
    })
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
                .filter(|s| s.status == SpendStatus::Accepted)
                .count() as u64;
            m.requests.inc("accepted");
            m.nullifiers.inc_by("accepted", accepted);
            m.nullifiers
                .inc_by("refused", receipt.spends.len() as u64 - accepted);
            Ok(Json(receipt))
        }
        Err(e) => {
            m.requests.inc(if matches!(e, LedgerError::Refused(_)) {
                "refused"
            } else {
                "internal"
            });
            Err(e.into())
        }
    }
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
            Code::MalformedNullifier,
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

async fn spent_by_prefix(
    State(state): State<AppState>,
    Path(text): Path<String>,
) -> Result<Json<SpentByPrefix>, ApiError> {
    let Some(prefix) = NullifierPrefix::parse_hex(&text) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::MalformedPrefix,
            format!(
                "a nullifier prefix is {MIN_SPENT_PREFIX_BYTES} to {MAX_SPENT_PREFIX_BYTES} bytes in hex (2 to 8 hex digits, in pairs)"
            ),
        ));
    };
    let (rows, complete) = state.ledger.spent_with_prefix(&prefix).await?;
    Ok(Json(SpentByPrefix {
        prefix: prefix.to_string(),
        spent: rows
            .into_iter()
            .map(|(nullifier, first, spent_by)| SpentNullifier {
                nullifier,
                spent_at: first.spent_at,
                spent_by,
                seq: first.seq,
            })
            .collect(),
        complete,
    }))
}

async fn keys(
    State(state): State<AppState>,
    filter: Result<Query<KeyFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<KeyDirectory>, ApiError> {
    let Query(filter) = filter.map_err(|e| malformed_query(e.body_text()))?;
    Ok(Json(KeyDirectory {
        keys: state
            .ledger
            .keys(filter.issuer.as_deref(), filter.kind.as_ref())
            .await,
    }))
}

async fn log(
    State(state): State<AppState>,
    range: Result<Query<LogRange>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LogPage>, ApiError> {
    let Query(range) = range.map_err(|e| malformed_query(e.body_text()))?;
    let limit = range.limit.unwrap_or(MAX_LOG_PAGE).clamp(1, MAX_LOG_PAGE);
    let entries = state.ledger.entries(range.from, limit).await?;
    // A page may end early at the byte bound: `next` is set whenever the log goes on.
    let head = state.ledger.view().head.0;
    let next = entries
        .last()
        .map(|e| e.seq + 1)
        .filter(|next| *next <= head);
    Ok(Json(LogPage { entries, next }))
}

async fn totals(
    State(state): State<AppState>,
) -> Result<Json<scrip_spec::ledger::Totals>, ApiError> {
    Ok(Json(state.ledger.totals().await?))
}

async fn checkpoint(State(state): State<AppState>) -> Result<Json<CheckpointView>, ApiError> {
    state
        .ledger
        .latest_checkpoint()
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                Code::NoCheckpoint,
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
    /// Opens the store and the ledger and binds the listener (port 0 picks a free port). On
    /// a committee ledger it also starts this node's consensus.
    pub async fn build(config: &LedgerConfig) -> anyhow::Result<Self> {
        let key = OperatorKey::read_file(&config.key_file)?;
        let store = connect(&config.database).await?;
        let node_key = Arc::new(OperatorKey::from_seed(&key.seed()));
        let ledger = Arc::new(Ledger::open(store, key).await?);
        let node = match config.node_settings(&ledger)? {
            Some(settings) => Some(Node::start(ledger.clone(), node_key, settings).await?),
            None => None,
        };
        let mut app = Self::from_ledger(ledger, config.listen, config.checkpoint_secs).await?;
        app.state.node = node;
        Ok(app)
    }

    /// Serves an already opened ledger.
    pub async fn from_ledger(
        ledger: Arc<Ledger>,
        listen: std::net::SocketAddr,
        checkpoint_secs: u64,
    ) -> anyhow::Result<Self> {
        let listener = scrip_common::server::bind(listen).await?;
        Ok(Self::on_listener(ledger, listener, checkpoint_secs))
    }

    /// Serves an opened committee ledger as the node of `key`, on listeners already bound
    /// (the API's and the one for the other nodes).
    pub async fn node_on_listeners(
        ledger: Arc<Ledger>,
        key: Arc<OperatorKey>,
        api: tokio::net::TcpListener,
        peers: tokio::net::TcpListener,
        settings: NodeSettings,
    ) -> anyhow::Result<Self> {
        let node = Node::start_on(ledger.clone(), key, settings, peers).await?;
        let mut app = Self::on_listener(ledger, api, CHECKPOINT_NEVER);
        app.state.node = Some(node);
        Ok(app)
    }

    fn on_listener(
        ledger: Arc<Ledger>,
        listener: tokio::net::TcpListener,
        checkpoint_secs: u64,
    ) -> Self {
        Self {
            listener,
            state: AppState {
                metrics: Arc::new(Metrics::new(&ledger)),
                ledger,
                node: None,
            },
            checkpoint_secs,
        }
    }

    /// Serves an already opened committee ledger as the node of `key`.
    pub async fn from_node(
        ledger: Arc<Ledger>,
        key: Arc<OperatorKey>,
        listen: std::net::SocketAddr,
        settings: NodeSettings,
    ) -> anyhow::Result<Self> {
        let node = Node::start(ledger.clone(), key, settings).await?;
        let mut app = Self::from_ledger(ledger, listen, CHECKPOINT_NEVER).await?;
        app.state.node = Some(node);
        Ok(app)
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
        // A committee makes no checkpoints of one node's (PROTOCOL.md 11.12).
        let period = Duration::from_secs(self.checkpoint_secs.clamp(1, 10 * 365 * 86_400));
        let committee = ledger.is_committee();
        let checkpoints = tokio::spawn({
            let ledger = ledger.clone();
            async move {
                if committee {
                    return;
                }
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
        let node = self.state.node.clone();
        let result = scrip_common::server::serve(self.listener, router(self.state), shutdown).await;
        checkpoints.abort();
        if let Some(node) = node {
            node.shutdown().await;
        }
        if let Err(e) = ledger.checkpoint().await {
            tracing::error!(error = ?e, "final checkpoint failed");
        }
        result
    }
}
