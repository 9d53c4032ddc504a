//! Privacy Pass at any origin (RFC 9577): an axum middleware that lets a request through only
//! once the redeemer sidecar has spent the token in its `Authorization` header, and otherwise
//! answers with the sidecar's challenges (401 with `WWW-Authenticate: PrivateToken …`).
//!
//! ```no_run
//! # use scrip_redeemer::private_token::{TokenGate, require_token};
//! # let kind = scrip_spec::CapacityKind::new("chunk-1m").expect("kind");
//! let gate = TokenGate::new("http://127.0.0.1:7600", kind);
//! let paid: axum::Router = axum::Router::new().route(
//!     "/download/{name}",
//!     axum::routing::get(|| async { "the goods" })
//!         .route_layer(axum::middleware::from_fn_with_state(gate, require_token)),
//! );
//! ```
//!
//! A `route_layer` of the method router: the gate runs only for the methods the route serves.
//! A `Router`'s `layer` runs for every method, so a `POST` would spend its token and then get
//! the route's 405.
//!
//! The gate asks the sidecar's `GET /v1/redeem/{kind}` with the client's `Authorization`
//! header, so the token is checked and spent exactly as `POST /v1/redeem` would (strict or
//! optimistic, against the same ledger), and one token pays for one request. The origin sees
//! no token and keeps no state; it needs no key of its own.
//!
//! The gate names the client to the sidecar in `X-Forwarded-For` (the chain the request came
//! with, then its peer's address, from the server's `ConnectInfo`): list the origin in the
//! sidecar's `rate_limit.trusted_proxies` and its per-source limit counts each client, not the
//! origin as one.
//!
//! The token is spent before the inner service runs: a request the route would refuse (a file
//! that is not there) is best refused by a layer outside the gate, as the example relay's
//! downloads are, so that it costs nothing.

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use scrip_common::server::ApiError;
use scrip_spec::CapacityKind;
use scrip_spec::api::redeemer::{PaidResponse, RedeemerErrorCode};
use std::net::SocketAddr;
use std::time::Duration;

/// The longest answer of the sidecar passed on (an error object and its challenges).
const MAX_ANSWER: usize = 64 * 1024;

/// What the gate needs: the sidecar and the kind one request costs.
#[derive(Debug, Clone)]
pub struct TokenGate {
    url: String,
    kind: CapacityKind,
    http: reqwest::Client,
}

impl TokenGate {
    /// A gate charging one token of `kind` per request, checked at the sidecar `sidecar_url`.
    pub fn new(sidecar_url: &str, kind: CapacityKind) -> Self {
        Self {
            url: format!("{}/v1/redeem/{kind}", sidecar_url.trim_end_matches('/')),
            kind,
            // The sidecar never redirects: a redirect is not its answer, and is not followed.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }
}

/// The middleware (`axum::middleware::from_fn_with_state(gate, require_token)`): serves the
/// request once its token is spent (the sidecar's 200 `{"kind"}` of the gate's kind; any other
/// 2xx, or a redirect, is not a payment and gets 503), else answers as the sidecar did.
pub async fn require_token(
    State(gate): State<TokenGate>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut ask = gate.http.get(&gate.url);
    if let Some(auth) = request.headers().get(header::AUTHORIZATION) {
        ask = ask.header(header::AUTHORIZATION, auth);
    }
    if let Some(chain) = forwarded_for(&request) {
        ask = ask.header(FORWARDED_FOR, chain);
    }
    let mut answer = match ask.send().await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!(error = %e, "the redeemer sidecar is unreachable");
            return unavailable();
        }
    };
    let status = answer.status();
    let (headers, body) = (answer.headers().clone(), read_bounded(&mut answer).await);
    let Some(body) = body else {
        return unavailable();
    };
    if status.is_success() || status.is_redirection() {
        // Only the sidecar's payment of this kind serves: a 2xx of another shape is some
        // other server's answer (a sidecar URL that reaches a web page, a 204), not a spend.
        let paid = status == reqwest::StatusCode::OK
            && serde_json::from_slice::<PaidResponse>(&body)
                .is_ok_and(|p| p.kind == gate.kind.as_str());
        if paid {
            // The route gets the request without its Authorization (the token that paid): the
            // origin never sees a token.
            request.headers_mut().remove(header::AUTHORIZATION);
            return next.run(request).await;
        }
        tracing::error!(
            %status,
            url = %gate.url,
            "the redeemer sidecar's answer is not a payment; is the gate's sidecar URL right?"
        );
        return unavailable();
    }
    // The sidecar's refusal as it is: its status, challenges and error object.
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut passed = Response::builder().status(status);
    for name in [
        header::WWW_AUTHENTICATE,
        header::RETRY_AFTER,
        header::CONTENT_TYPE,
    ] {
        if let Some(value) = headers.get(name.as_str())
            && let Ok(value) = HeaderValue::from_bytes(value.as_bytes())
        {
            passed = passed.header(name, value);
        }
    }
    passed
        .body(Body::from(body))
        .unwrap_or_else(|_| unavailable())
}

/// The header that names the client to the sidecar, the default of its `rate_limit.header`.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// `X-Forwarded-For` for the sidecar: the chain the request came with, then the address of
/// the peer that sent it to this origin, as a proxy adds it. The sidecar, with this origin
/// among its `trusted_proxies`, takes the rightmost address it does not trust, so its limit
/// counts this origin's clients one by one, and a client's own entries (to its left) name
/// nobody. Without the peer's address (a server without `ConnectInfo`), none is sent.
fn forwarded_for(request: &Request) -> Option<HeaderValue> {
    let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
    let mut chain: Vec<&str> = request
        .headers()
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let peer = peer.ip().to_string();
    chain.push(&peer);
    HeaderValue::from_str(&chain.join(", ")).ok()
}

/// The body of the sidecar's answer, if it is at most [`MAX_ANSWER`] bytes and arrives whole.
async fn read_bounded(answer: &mut reqwest::Response) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.ok()? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

fn unavailable() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        RedeemerErrorCode::Unavailable,
        "cannot check the token now; retry",
    )
    .into_response()
}
