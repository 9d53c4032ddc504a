//! The issuer's HTTP API (PROTOCOL.md section 9).

use crate::ratelimit::{Failure, RateLimiter};
use crate::service::{Issuer, OpenError, RefreshError};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use scrip_common::metrics::{Counter, MetricsBuilder, MetricsRegistry, Outcomes};
use scrip_common::ratelimit::SourceKey;
use scrip_common::server::{ApiError, ApiJson, finish, health_answer};
use scrip_spec::CardCode;
use scrip_spec::TokenRequest;
use scrip_spec::api::issuer::IssuerErrorCode as Code;
use scrip_spec::api::issuer::standard::{
    CARD_CODE_HEADER, DIRECTORY_PATH, DirectoryKey, IssuerDirectory, REQUEST_MEDIA_TYPE,
    REQUEST_PATH, RESPONSE_MEDIA_TYPE,
};
use scrip_spec::api::issuer::{
    BalanceRequest, BalanceResponse, IssuerKeys, OpenRequest, OpenResponse, RefreshRequest,
    RefreshResponse, ReplayRequest, ReplayResponse,
};
use scrip_spec::api::issuer::{KeyedTokenRequest, RequestId};
use scrip_spec::api::{ErrorDetails, Health};
use sha2::{Digest as _, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest body: an opening of 1,000 requests is about 430 KB of JSON.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What `/metrics` shows (PROTOCOL.md section 9.5).
#[derive(Debug)]
pub struct Metrics {
    registry: MetricsRegistry,
    /// `POST /v1/cards/open` by `opened` (repeats answered from the record included),
    /// `refused` or `rate_limited`.
    openings: Outcomes,
    /// `POST /v1/cards/balance` by `answered`, `refused` or `rate_limited`.
    balances: Outcomes,
    tokens_signed: Counter,
    /// `POST /v1/refresh` by `refreshed` (repeats included), `refused` or `rate_limited`.
    refreshes: Outcomes,
}

impl Metrics {
    /// The issuer's metrics, with those the service keeps itself.
    fn new(service: &crate::service::ServiceMetrics) -> Self {
        let mut m = MetricsBuilder::new("issuer");
        m.register(
            "blind_signatures",
            "Private-key operations: blind signatures made (repeats answered from the record make none)",
            service.blind_signatures.clone(),
        );
        m.register(
            "outbox_set_aside",
            "Ledger requests the ledger refused for good, set aside in the outbox for the operator",
            service.outbox_set_aside.clone(),
        );
        let openings = m.outcomes(
            "openings",
            "Card openings, by result",
            &["opened", "refused", "rate_limited"],
        );
        let balances = m.outcomes(
            "balance_checks",
            "Card balance checks, by result",
            &["answered", "refused", "rate_limited"],
        );
        m.register(
            "tokens_refreshed",
            "Tokens taken in by completed refreshes (repeats answered from the record not counted)",
            service.tokens_refreshed.clone(),
        );
        let refreshes = m.outcomes(
            "refreshes",
            "Token refreshes, by result",
            &["refreshed", "refused", "rate_limited"],
        );
        let tokens_signed = m.counter(
            "tokens_signed",
            "Blind signatures handed out in openings (repeats included)",
        );
        Self {
            registry: m.build(),
            openings,
            balances,
            tokens_signed,
            refreshes,
        }
    }
}

/// Handler state.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The issuer.
    pub issuer: Arc<Issuer>,
    /// The rate limits.
    pub limiter: Arc<RateLimiter>,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
}

impl From<OpenError> for ApiError {
    fn from(e: OpenError) -> Self {
        use StatusCode as S;
        let msg = e.to_string();
        match e {
            OpenError::Malformed(_) => ApiError::new(S::BAD_REQUEST, Code::MalformedRequest, msg),
            OpenError::TooLarge(_) => ApiError::new(S::PAYLOAD_TOO_LARGE, Code::BodyTooLarge, msg),
            OpenError::MalformedCode(_) => {
                ApiError::new(S::BAD_REQUEST, Code::MalformedCardCode, msg)
            }
            OpenError::InvalidCard { .. } => ApiError::new(S::FORBIDDEN, Code::InvalidCard, msg),
            OpenError::RequestIdReused => ApiError::new(S::CONFLICT, Code::RequestIdReused, msg),
            OpenError::UnknownKey { index } => at_index(Code::UnknownKey, msg, index),
            OpenError::KeyNotIssuable { index } => at_index(Code::KeyNotIssuable, msg, index),
            OpenError::KeyMismatch { index } => at_index(Code::KeyMismatch, msg, index),
            OpenError::BadBlindedMessage { index } => at_index(Code::InvalidRequest, msg, index),
            OpenError::InsufficientCredits { remaining, .. } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, Code::InsufficientCredits, msg).details(
                    ErrorDetails {
                        remaining_credits: Some(remaining),
                        ..ErrorDetails::default()
                    },
                )
            }
            OpenError::Internal(err) => ApiError::unavailable(
                Code::Unavailable,
                "issuer operation failed",
                &err,
                "the issuer could not complete the request; nothing was charged, retry with the same request id",
            ),
        }
    }
}

impl From<RefreshError> for ApiError {
    fn from(e: RefreshError) -> Self {
        use StatusCode as S;
        let msg = e.to_string();
        match e {
            RefreshError::Malformed { .. } => {
                ApiError::new(S::BAD_REQUEST, Code::MalformedRequest, msg)
            }
            RefreshError::TooLarge { .. } => {
                ApiError::new(S::PAYLOAD_TOO_LARGE, Code::BodyTooLarge, msg)
            }
            RefreshError::RequestIdReused => ApiError::new(S::CONFLICT, Code::RequestIdReused, msg),
            RefreshError::UnknownInputKey { index } => at_index(Code::UnknownInputKey, msg, index),
            RefreshError::InputNotRedeemable { index } => {
                at_index(Code::InputNotRedeemable, msg, index)
            }
            RefreshError::InvalidToken { index, .. } => at_index(Code::InvalidToken, msg, index),
            RefreshError::DuplicateToken { index } => at_index(Code::DuplicateToken, msg, index),
            RefreshError::UnknownKey { index } => at_index(Code::UnknownKey, msg, index),
            RefreshError::KeyNotIssuable { index } => at_index(Code::KeyNotIssuable, msg, index),
            RefreshError::KeyMismatch { index } => at_index(Code::KeyMismatch, msg, index),
            RefreshError::BadBlindedMessage { index } => at_index(Code::InvalidRequest, msg, index),
            RefreshError::ValueExceeded { .. } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, Code::ValueExceeded, msg)
            }
            RefreshError::LedgerRefused { .. } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, Code::InvalidRequest, msg)
            }
            RefreshError::AlreadySpent {
                index,
                first_spent_at,
                first_spent_by,
            } => ApiError::new(S::CONFLICT, Code::AlreadySpent, msg).details(ErrorDetails {
                index: Some(index as u64),
                first_spent_at,
                first_spent_by,
                ..ErrorDetails::default()
            }),
            RefreshError::Internal(err) => ApiError::unavailable(
                Code::Unavailable,
                "refresh not completed",
                &err,
                "the issuer could not complete the refresh now; retry with the same request id and content, which finishes it",
            ),
        }
    }
}

/// A 422 about the request at `index` of the opening.
fn at_index(code: Code, message: String, index: usize) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).details(ErrorDetails {
        index: Some(index as u64),
        ..ErrorDetails::default()
    })
}

/// The issuer's routes.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/keys", get(keys))
        .route("/v1/cards/open", post(open))
        .route("/v1/cards/balance", post(balance))
        .route("/v1/requests/replay", post(replay))
        .route("/v1/refresh", post(refresh))
        .route(DIRECTORY_PATH, get(directory))
        .route(REQUEST_PATH, post(token_request));
    let registry = state.metrics.registry.clone();
    finish(routes, MAX_BODY_BYTES, Duration::from_secs(60), &registry).with_state(state)
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    // A write, not a read: a full disk still answers reads while it refuses every opening.
    let store = match state.issuer.store().write_probe().await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = ?e, "health check failed");
            false
        }
    };
    health_answer(Health::from_checks([("store", store)]))
}

async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    state.issuer.count_set_aside().await;
    state.metrics.registry.render()
}

async fn keys(State(state): State<AppState>) -> Json<IssuerKeys> {
    Json(state.issuer.public_keys())
}

/// Who asks and about which card, for the rate limits.
struct Asker {
    source: SourceKey,
    /// The storage hash of the code asked about, if it parses.
    card: Option<[u8; 32]>,
}

impl Asker {
    fn new(state: &AppState, peer: SocketAddr, headers: &HeaderMap, code: &str) -> Self {
        Self {
            source: state.limiter.source(peer.ip(), headers),
            card: CardCode::parse(code).ok().map(|c| c.storage_hash()),
        }
    }

    /// Refuses the request with 429 if a limit says so (section 9.6), counting it in
    /// `outcomes`.
    fn admit(&self, state: &AppState, outcomes: &Outcomes) -> Result<(), ApiError> {
        let Some((limit, wait)) = state.limiter.check(&self.source, self.card.as_ref()) else {
            return Ok(());
        };
        outcomes.inc("rate_limited");
        tracing::debug!(?limit, wait, "card request rate limited");
        // One message for every limit: a card's limit only ever counts cards that exist, and
        // the answer must not tell a guesser which codes do.
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::RateLimited,
            format!("too many refused card requests; retry in {wait} s"),
        )
        .retry_after(wait))
    }

    /// Counts a refusal in `outcomes` and in the limits.
    fn refused(&self, state: &AppState, outcomes: &Outcomes, error: &OpenError) {
        outcomes.inc("refused");
        if let Some(failure) = Failure::of(error, self.card) {
            state.limiter.failed(&self.source, failure);
        }
    }
}

async fn open(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<OpenRequest>,
) -> Result<Json<OpenResponse>, ApiError> {
    let asker = Asker::new(&state, peer, &headers, &request.card_code);
    Ok(Json(opening(&state, &asker, request).await?))
}

/// `GET /.well-known/private-token-issuer-directory` (RFC 9578 section 4): the keys that sign
/// now, every one announced on the ledger (an unannounced key is never loaded).
async fn directory(State(state): State<AppState>) -> Json<IssuerDirectory> {
    let token_keys = state
        .issuer
        .public_keys()
        .keys
        .iter()
        .map(|k| DirectoryKey {
            token_type: scrip_spec::TOKEN_TYPE,
            token_key: scrip_spec::encoding::b64_encode_padded(k.public_key.spki()),
            not_before: Some(k.valid_from),
        })
        .collect();
    Json(IssuerDirectory {
        issuer_request_uri: REQUEST_PATH.to_owned(),
        token_keys,
    })
}

/// `POST /v1/token-request` (RFC 9578 section 5): one `TokenRequest` as
/// `application/private-token-request`, paid by the card in `Scrip-Card-Code`, answered with
/// its `TokenResponse` as `application/private-token-response`. It is an opening of one
/// token: the same price check, charge and limits. Its request id is derived from the card and
/// the body, so a repeat of the same request is answered again and charged once.
async fn token_request(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    let malformed =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, Code::MalformedRequest, message);
    let media_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !media_type.is_some_and(|m| m.eq_ignore_ascii_case(REQUEST_MEDIA_TYPE)) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::MalformedRequest,
            format!("send one TokenRequest as Content-Type: {REQUEST_MEDIA_TYPE}"),
        ));
    }
    let code = headers
        .get(CARD_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_owned();
    let asker = Asker::new(&state, peer, &headers, &code);
    if code.is_empty() {
        return Err(malformed(format!(
            "send the card that pays in the {CARD_CODE_HEADER} header"
        )));
    }
    let request = TokenRequest::from_bytes(&body).map_err(|e| malformed(e.to_string()))?;
    let key = state
        .issuer
        .key_for_truncated_id(request.truncated_token_key_id)?;
    // The hash the rate limits already keep (a code that does not parse is refused anyway).
    let card = asker.card.unwrap_or_default();
    let request_id = RequestId(
        Sha256::new()
            .chain_update(b"scrip/v1/private-token-request")
            .chain_update(card)
            .chain_update(&body)
            .finalize()
            .into(),
    );
    let opened = opening(
        &state,
        &asker,
        OpenRequest {
            card_code: code,
            request_id,
            requests: vec![KeyedTokenRequest {
                token_key_id: key,
                token_request: request,
            }],
        },
    )
    .await?;
    let response = opened
        .responses
        .first()
        .map(|r| r.to_bytes())
        .ok_or_else(|| {
            ApiError::unavailable(
                Code::Unavailable,
                "an opening of one token answered none",
                &"",
                "retry",
            )
        })?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, RESPONSE_MEDIA_TYPE)],
        response,
    )
        .into_response())
}

/// An opening as both APIs make one: the rate limits, its own task, the metrics.
async fn opening(
    state: &AppState,
    asker: &Asker,
    request: OpenRequest,
) -> Result<OpenResponse, ApiError> {
    let outcomes = &state.metrics.openings;
    asker.admit(state, outcomes)?;
    let count = request.requests.len() as u64;
    let issuer = state.issuer.clone();
    // The opening runs in its own task: a client that goes away cannot cut it between the
    // charge and the record.
    let outcome = tokio::spawn(async move { issuer.open_card(request).await })
        .await
        .unwrap_or_else(|e| Err(OpenError::Internal(e.into())));
    match outcome {
        Ok(resp) => {
            outcomes.inc("opened");
            state.metrics.tokens_signed.inc_by(count);
            Ok(resp)
        }
        Err(e) => {
            asker.refused(state, outcomes, &e);
            Err(e.into())
        }
    }
}

async fn balance(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<BalanceRequest>,
) -> Result<Json<BalanceResponse>, ApiError> {
    let outcomes = &state.metrics.balances;
    let asker = Asker::new(&state, peer, &headers, &request.card_code);
    asker.admit(&state, outcomes)?;
    match state.issuer.balance(&request.card_code).await {
        Ok(balance) => {
            outcomes.inc("answered");
            Ok(Json(balance))
        }
        Err(e) => {
            asker.refused(&state, outcomes, &e);
            Err(e.into())
        }
    }
}

async fn refresh(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<Json<RefreshResponse>, ApiError> {
    let outcomes = &state.metrics.refreshes;
    // Limited like openings, per source only: a refresh names no card.
    let asker = Asker {
        source: state.limiter.source(peer.ip(), &headers),
        card: None,
    };
    asker.admit(&state, outcomes)?;
    let count = request.requests.len() as u64;
    let issuer = state.issuer.clone();
    // Its own task: a client that goes away cannot cut it between the ledger's commit and
    // the record of the signatures.
    let outcome = tokio::spawn(async move { issuer.refresh(request).await })
        .await
        .unwrap_or_else(|e| Err(RefreshError::Internal(e.into())));
    match outcome {
        Ok(resp) => {
            outcomes.inc("refreshed");
            state.metrics.tokens_signed.inc_by(count);
            Ok(Json(resp))
        }
        Err(e) => {
            outcomes.inc("refused");
            if !matches!(e, RefreshError::Internal(_)) {
                state.limiter.failed(&asker.source, Failure::NoLookup);
            }
            Err(e.into())
        }
    }
}

async fn replay(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ReplayRequest>,
) -> Result<Json<ReplayResponse>, ApiError> {
    state
        .issuer
        .replay(&request.request_id)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                Code::UnknownRequest,
                "no opening or completed refresh has this request id",
            )
        })
}

/// A running issuer service.
pub struct Application {
    listener: tokio::net::TcpListener,
    state: AppState,
}

impl Application {
    /// Binds the listener for an opened issuer (port 0 picks a free port).
    pub async fn new(issuer: Arc<Issuer>) -> anyhow::Result<Self> {
        let listener = scrip_common::server::bind(issuer.config().listen).await?;
        let limiter = Arc::new(RateLimiter::new(&issuer.config().rate_limit));
        let metrics = Arc::new(Metrics::new(issuer.metrics()));
        Ok(Self {
            listener,
            state: AppState {
                issuer,
                limiter,
                metrics,
            },
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`; reports issuance at start-up (what an earlier run counted and
    /// did not report), every `report_secs` and once more on the way out, flushes the ledger
    /// outbox and reloads keys every minute.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let issuer = self.state.issuer.clone();
        let report_every = Duration::from_secs(issuer.config().report_secs.max(1));
        let background = tokio::spawn({
            let issuer = issuer.clone();
            async move {
                let mut report = tokio::time::interval(report_every);
                let mut upkeep = tokio::time::interval(Duration::from_secs(60));
                // The first tick of each is at once: the start-up report and flush.
                loop {
                    tokio::select! {
                        _ = report.tick() => {
                            if let Err(e) = issuer.report_issuance().await {
                                tracing::warn!(error = ?e, "issuance report not sent; will retry");
                            }
                        }
                        _ = upkeep.tick() => {
                            if let Err(e) = issuer.flush_outbox().await {
                                tracing::warn!(error = ?e, "ledger outbox not flushed; will retry");
                            }
                            if let Err(e) = issuer.reload_keys().await {
                                tracing::warn!(error = ?e, "key reload failed");
                            }
                        }
                    }
                }
            }
        });
        let result = scrip_common::server::serve(self.listener, router(self.state), shutdown).await;
        background.abort();
        if let Err(e) = issuer.report_issuance().await {
            tracing::warn!(error = ?e, "final issuance report not sent; it stays queued");
        }
        result
    }
}
