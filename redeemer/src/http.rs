//! The sidecar's HTTP API (PROTOCOL.md section 10): `POST /v1/redeem`,
//! `GET /v1/redeem/{kind}` (RFC 9577), `POST /v1/grants/consume`, `/healthz`, `/metrics`.

use crate::service::{ConsumeError, RedeemError, Redeemer};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use scrip_common::ratelimit::{SourceConfig, SourceKey, WindowCounter};
use scrip_common::server::{ApiError, ApiJson, finish, health_answer};
use scrip_spec::api::private_token::{HeaderError, parse_authorization, www_authenticate};
use scrip_spec::api::redeemer::{
    ConsumeRequest, ConsumeResponse, PaidResponse, RedeemRequest, RedeemResponse,
    RedeemerErrorCode as Code,
};
use scrip_spec::api::{ErrorDetails, Health};
use scrip_spec::{CapacityKind, Token};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the routes share: the redeemer, and the per-source limit on `/v1/redeem`.
#[derive(Clone)]
struct AppState {
    redeemer: Arc<Redeemer>,
    limit: Arc<RedeemLimit>,
}

struct RedeemLimit {
    sources: SourceConfig,
    counter: WindowCounter<SourceKey>,
}

/// Largest body: a token is 354 bytes (472 in base64url).
pub const MAX_BODY_BYTES: usize = 4096;

impl From<RedeemError> for ApiError {
    fn from(e: RedeemError) -> Self {
        use StatusCode as S;
        let message = e.to_string();
        match e {
            RedeemError::UnknownKey => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, Code::UnknownKey, message)
            }
            RedeemError::KeyNotRedeemable => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, Code::KeyNotRedeemable, message)
            }
            RedeemError::WrongKind { .. } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, Code::WrongKind, message)
            }
            RedeemError::WrongChallenge => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, Code::WrongChallenge, message)
            }
            RedeemError::InvalidSignature => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, Code::InvalidSignature, message)
            }
            RedeemError::AlreadySpent {
                first_spent_at,
                first_spent_by,
            } => ApiError::new(S::CONFLICT, Code::AlreadySpent, message).details(ErrorDetails {
                first_spent_at: Some(first_spent_at),
                first_spent_by: Some(first_spent_by),
                ..ErrorDetails::default()
            }),
            RedeemError::LedgerUnavailable => {
                ApiError::new(S::SERVICE_UNAVAILABLE, Code::LedgerUnavailable, message)
            }
            RedeemError::Internal(err) => ApiError::unavailable(
                Code::Unavailable,
                "redemption failed",
                &err,
                "the redeemer could not complete the request; ask the ledger for the token's status before retrying",
            ),
        }
    }
}

impl From<ConsumeError> for ApiError {
    fn from(e: ConsumeError) -> Self {
        use StatusCode as S;
        let message = e.to_string();
        match e {
            ConsumeError::Malformed(_) => {
                ApiError::new(S::BAD_REQUEST, Code::MalformedGrant, message)
            }
            ConsumeError::Unknown => ApiError::new(S::NOT_FOUND, Code::UnknownGrant, message),
            ConsumeError::Revoked => ApiError::new(S::FORBIDDEN, Code::GrantRevoked, message),
            ConsumeError::Used => ApiError::new(S::CONFLICT, Code::GrantUsed, message),
            ConsumeError::Expired => ApiError::new(S::GONE, Code::GrantExpired, message),
            ConsumeError::WrongKind { .. } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, Code::WrongKind, message)
            }
            ConsumeError::Internal(err) => ApiError::unavailable(
                Code::Unavailable,
                "consume failed",
                &err,
                "the redeemer could not check the grant; retry",
            ),
        }
    }
}

fn parse_kind(kind: &str) -> Result<CapacityKind, ApiError> {
    CapacityKind::new(kind).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::MalformedRequest,
            e.to_string(),
        )
    })
}

/// Counts a call of `peer` against the per-source limit: every call counts, valid or not,
/// since each costs a signature check or a lookup.
fn count_call(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<(), ApiError> {
    let source = state.limit.sources.source(peer.ip(), headers);
    match state.limit.counter.hit(&source) {
        None => Ok(()),
        Some(wait) => {
            state.redeemer.metrics.rate_limited();
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Code::RateLimited,
                format!("too many redemptions from this source; retry in {wait} s"),
            )
            .retry_after(wait))
        }
    }
}

async fn redeem(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RedeemRequest>,
) -> Result<Json<RedeemResponse>, ApiError> {
    count_call(&state, peer, &headers)?;
    let redeemer = state.redeemer;
    let token = scrip_spec::encoding::b64_decode(&request.token)
        .map_err(|_| "the token is not unpadded base64url".to_owned())
        .and_then(|b| Token::from_bytes(&b).map_err(|e| e.to_string()))
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, Code::MalformedToken, m))?;
    let kind = parse_kind(&request.kind)?;
    // Its own task: a client that goes away cannot cut a spend between ledger and grant.
    let task = tokio::spawn(async move {
        let grant = redeemer.redeem(&token, &kind).await?;
        Ok::<_, RedeemError>(RedeemResponse {
            grant: grant.code.to_string(),
            kind: grant.kind,
            expires_at: grant.expires_at,
        })
    });
    let answer = task
        .await
        .map_err(|e| ApiError::from(RedeemError::Internal(e.into())))??;
    Ok(Json(answer))
}

async fn consume(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ConsumeRequest>,
) -> Result<Json<ConsumeResponse>, ApiError> {
    let kind = parse_kind(&request.kind)?;
    state.redeemer.consume(&request.grant, &kind).await?;
    Ok(Json(ConsumeResponse { ok: true, kind }))
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let redeemer = &state.redeemer;
    // A write, not a read: a full disk answers reads and refuses every grant and consume.
    let store = match redeemer.store().writable().await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = ?e, "health check: the store refuses writes");
            false
        }
    };
    let ledger = redeemer.ledger_reachable().await;
    // Strict mode cannot grant without the ledger; optimistic mode can, for a while.
    let mut health = Health::from_checks([("store", store), ("ledger", ledger)]);
    if store && redeemer.config().mode == crate::config::Mode::Optimistic {
        health.status = scrip_spec::api::HealthStatus::Ok;
    }
    health_answer(health)
}

async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    state.redeemer.metrics.registry().render()
}

/// `GET /v1/redeem/{kind}`: RFC 9577 at the sidecar, for an origin's auth check (a
/// [`crate::private_token`] layer, or nginx `auth_request`). Without a token: 401 with one
/// challenge per key of `kind` that can be spent now. With `Authorization: PrivateToken
/// token=…`: the token is checked and spent exactly as by `POST /v1/redeem`, and its grant
/// used at once, so 200 means "serve this one request". A token refused (spent before, an
/// unknown key, a bad signature) gets 401 with fresh challenges; a malformed header 400.
async fn redeem_by_header(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(kind): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = count_call(&state, peer, &headers) {
        return refused.into_response();
    }
    let kind = match parse_kind(&kind) {
        Ok(kind) => kind,
        Err(refused) => return refused.into_response(),
    };
    let challenges = state.redeemer.challenges(&kind).await;
    if challenges.is_empty() {
        // Nothing to pay with here: not the redeemer failing, so not a 5xx.
        return ApiError::new(
            StatusCode::NOT_FOUND,
            Code::NoKey,
            format!("no {kind} key can be spent now; there is nothing to challenge for"),
        )
        .into_response();
    }
    let with_challenges = |refused: ApiError, status: StatusCode| {
        let mut resp = refused.into_response();
        *resp.status_mut() = status;
        if let Ok(value) = HeaderValue::from_str(&www_authenticate(&challenges)) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        resp
    };
    let parsed = match headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => Err(HeaderError::NotPrivateToken { what: "token" }),
        Some(Err(_)) => Err(HeaderError::Grammar),
        Some(Ok(value)) => parse_authorization(value),
    };
    let token = match parsed {
        Ok(token) => token,
        Err(HeaderError::NotPrivateToken { .. }) => {
            let asked = ApiError::new(
                StatusCode::UNAUTHORIZED,
                Code::TokenRequired,
                format!("send a {kind} token: Authorization: PrivateToken token=..."),
            );
            return with_challenges(asked, StatusCode::UNAUTHORIZED);
        }
        Err(e) => {
            let malformed =
                ApiError::new(StatusCode::BAD_REQUEST, Code::MalformedToken, e.to_string());
            return with_challenges(malformed, StatusCode::BAD_REQUEST);
        }
    };
    let redeemer = state.redeemer.clone();
    let paid_kind = kind.clone();
    // Its own task, as for `POST /v1/redeem`: a client that goes away cannot cut a spend
    // between the ledger and the grant's use.
    let task = tokio::spawn(async move {
        let grant = redeemer.redeem(&token, &paid_kind).await?;
        redeemer
            .consume(&grant.code.to_string(), &paid_kind)
            .await
            .map_err(|e| match e {
                // A concurrent presentation of the same token got the same grant and used it
                // first (or, optimistic, the ledger found the token spent elsewhere): the
                // token is spent, as a later presentation would be told.
                ConsumeError::Used | ConsumeError::Revoked => RedeemError::AlreadySpent {
                    first_spent_at: scrip_spec::now(),
                    first_spent_by: redeemer.config().name.clone(),
                },
                e => RedeemError::Internal(anyhow::anyhow!("the new grant was refused: {e}")),
            })?;
        Ok::<_, RedeemError>(())
    });
    match task.await {
        Ok(Ok(())) => Json(PaidResponse {
            kind: kind.to_string(),
        })
        .into_response(),
        Ok(Err(e @ (RedeemError::LedgerUnavailable | RedeemError::Internal(_)))) => {
            ApiError::from(e).into_response()
        }
        // RFC 9577: a token refused is answered with a fresh challenge.
        Ok(Err(e)) => with_challenges(ApiError::from(e), StatusCode::UNAUTHORIZED),
        Err(e) => ApiError::from(RedeemError::Internal(e.into())).into_response(),
    }
}

/// The sidecar's routes.
pub fn router(redeemer: Arc<Redeemer>) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/redeem", post(redeem))
        .route("/v1/redeem/{kind}", get(redeem_by_header))
        .route("/v1/grants/consume", post(consume));
    let registry = redeemer.metrics.registry().clone();
    let config = &redeemer.config().rate_limit;
    let limit = Arc::new(RedeemLimit {
        sources: config.sources(),
        counter: WindowCounter::new(config.per_source(), Duration::from_secs(config.window_secs)),
    });
    finish(routes, MAX_BODY_BYTES, Duration::from_secs(30), &registry)
        .with_state(AppState { redeemer, limit })
}

/// A running sidecar.
pub struct Application {
    listener: tokio::net::TcpListener,
    redeemer: Arc<Redeemer>,
}

impl Application {
    /// Binds the configured address (port 0 picks a free port).
    pub async fn new(redeemer: Arc<Redeemer>) -> anyhow::Result<Self> {
        let listener = scrip_common::server::bind(redeemer.config().listen).await?;
        Ok(Self { listener, redeemer })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`; in optimistic mode, flushes pending spends on the way out.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let redeemer = self.redeemer.clone();
        let result =
            scrip_common::server::serve(self.listener, router(self.redeemer), shutdown).await;
        if redeemer.config().mode == crate::config::Mode::Optimistic
            && let Err(e) = redeemer.flush_pending().await
        {
            tracing::warn!(error = %e, "pending spends not flushed at shutdown; sent on next start");
        }
        result
    }
}
