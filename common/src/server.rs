//! The HTTP plumbing every scrip service shares: one error type rendered as
//! `{"error": {"code", "message", …}}` (the [`ErrorAnswer`] of `scrip_spec::api`), a JSON
//! extractor that answers in that format, the common fallbacks and limits, and the server loop
//! with its connection timeouts. The ledger, the issuer, the redeemer and the example relay all
//! use it.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use scrip_spec::api::{ErrorAnswer, ErrorCode, ErrorDetails, ErrorObject, GenericCode, Health};

use crate::HEADER_READ_TIMEOUT;
use crate::metrics::MetricsRegistry;
use std::time::Duration;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    // Boxed: handlers return `Result<_, ApiError>`, and a small error keeps every one cheap.
    error: Box<ErrorObject<&'static str>>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with its status, its service's code and a message for people.
    pub fn new(status: StatusCode, code: impl ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            error: Box::new(ErrorObject {
                code: code.as_str(),
                message: message.into(),
                details: ErrorDetails::default(),
            }),
            retry_after: None,
        }
    }

    /// 503 for a failure inside the service: the details go to the log (as `what` failed),
    /// never to the client, who gets `code` and `message`.
    pub fn unavailable(
        code: impl ErrorCode,
        what: &str,
        error: &dyn std::fmt::Debug,
        message: impl Into<String>,
    ) -> Self {
        tracing::error!(?error, "{what}");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// Sets the fields the code carries besides its message.
    pub fn details(mut self, details: ErrorDetails) -> Self {
        self.error.details = details;
        self
    }

    /// Adds a `Retry-After` header.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(ErrorAnswer { error: *self.error })).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A JSON body whose rejections are [`ApiError`]s: 413 `body_too_large` over the body limit,
/// 400 `malformed_request` for anything else that is not a JSON object of the right shape.
///
/// The body must be an object: serde's derived structs would also take a JSON array with the
/// fields by position, which no client sends on purpose.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(malformed(
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                body_too_large()
            } else {
                malformed(format!(
                    "the request body could not be read: {}",
                    rejection.body_text()
                ))
            }
        })?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(malformed("the request body must be a JSON object"));
        }
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| malformed(format!("malformed request body: {e}")))
    }
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        GenericCode::MalformedRequest,
        message,
    )
}

/// 400 `malformed_query`: a query string that does not parse.
pub fn malformed_query(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        GenericCode::MalformedQuery,
        message,
    )
}

/// The code and message of an error answer made outside a handler, by its status.
fn default_error(status: StatusCode) -> (GenericCode, &'static str) {
    match status {
        StatusCode::REQUEST_TIMEOUT => (
            GenericCode::Timeout,
            "the request took too long to arrive or to answer",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            GenericCode::BodyTooLarge,
            "the request body is larger than this endpoint accepts",
        ),
        StatusCode::NOT_FOUND => (GenericCode::NotFound, "no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => (
            GenericCode::MethodNotAllowed,
            "this endpoint does not take that method",
        ),
        StatusCode::TOO_MANY_REQUESTS => (GenericCode::RateLimited, "too many requests"),
        s if s.is_server_error() => (GenericCode::Internal, "the service could not answer"),
        _ => (GenericCode::MalformedRequest, "the request is malformed"),
    }
}

fn body_too_large() -> ApiError {
    let (code, message) = default_error(StatusCode::PAYLOAD_TOO_LARGE);
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
}

/// Gives every error answer made outside a handler (path and body rejections, the time
/// limit's 408, hyper's own) the JSON form, keeping its status and its text as the message.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (code, default) = default_error(status);
    // Server errors made here carry no detail out: it could be internal.
    let message = if text.is_empty() || status.is_server_error() {
        default.to_owned()
    } else {
        text
    };
    let mut answer = ApiError::new(status, code, message).into_response();
    if let Some(v) = retry_after {
        answer.headers_mut().insert(header::RETRY_AFTER, v);
    }
    answer
}

/// The `/healthz` answer every service gives: 200 when every check passed, 503 when not, with
/// the checks as JSON either way.
pub fn health_answer(health: Health) -> (StatusCode, Json<Health>) {
    let status = if health.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}

/// Adds what every service has: a body limit, a time limit (408 after it), the JSON form for
/// every error answer made outside a handler, unknown routes and methods included, and the
/// request-duration histogram of `metrics` around all of it.
pub fn finish<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    max_body: usize,
    timeout: Duration,
    metrics: &MetricsRegistry,
) -> Router<S> {
    let router = router
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(move |request, next| {
            refuse_declared_oversize(request, next, max_body)
        }))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::map_response(json_errors));
    metrics.time_requests(router)
}

/// 413 at once for a request whose `Content-Length` is over the limit, before its body is
/// read: hyper sends `100 Continue` only once a handler reads the body, so a client that asked
/// for it gets the refusal instead of an invitation to send megabytes that will be thrown away.
async fn refuse_declared_oversize(
    request: Request,
    next: axum::middleware::Next,
    max_body: usize,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        let mut answer = body_too_large().into_response();
        // The unread body follows on this connection: it cannot carry another request.
        answer
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return answer;
    }
    next.run(request).await
}

/// Binds a listener; the error names the address (port 0 picks a free port).
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}: {e}; is another process using it?"),
        )
    })
}

/// How long requests in flight may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight finish
/// (up to 30 s). Each request carries its peer address as `ConnectInfo<SocketAddr>`.
///
/// `axum::serve` gives hyper no timer, so a client sending its request head a byte at a time
/// (or never) would keep its connection forever; here the head must arrive within
/// [`HEADER_READ_TIMEOUT`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use tower::ServiceExt as _;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, for one: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(request.map(axum::body::Body::new))
            },
        );
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(
                hyper_util::rt::TokioIo::new(LingeringClose::new(stream)),
                service,
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the shutdown grace period were dropped");
    }
    Ok(())
}

/// Longest a closed connection is drained, and the most bytes read from it, before the socket
/// is let go.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 64 * 1024 * 1024;
/// Most connections drained at once; beyond, a closed connection is let go at once, so a flood
/// of connections cannot make the drains hold file descriptors and buffers without bound.
const MAX_LINGERING: usize = 1024;

/// Drain slots (see [`MAX_LINGERING`]).
static LINGERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_LINGERING);

/// A connection that, once hyper is done with it, is half-closed and drained before it is let
/// go.
///
/// A socket closed while the peer's data is still unread makes the kernel send a reset, and a
/// reset makes the peer's kernel throw away what it had received but the client had not read
/// yet: the 413 answering a body over the limit was lost that way about once in 400 tries,
/// while the client was still sending the body. Sending our FIN first and reading (and
/// discarding) what still arrives, for a bounded time and amount, lets the answer be read.
#[derive(Debug)]
struct LingeringClose {
    stream: Option<tokio::net::TcpStream>,
}

impl LingeringClose {
    fn new(stream: tokio::net::TcpStream) -> Self {
        Self {
            stream: Some(stream),
        }
    }

    fn stream(&mut self) -> std::io::Result<&mut tokio::net::TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }
}

impl tokio::io::AsyncRead for LingeringClose {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }
}

impl tokio::io::AsyncWrite for LingeringClose {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.stream() {
            Ok(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => std::pin::Pin::new(s).poll_flush(cx),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.stream() {
            Ok(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }
}

impl Drop for LingeringClose {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let Ok(slot) = LINGERING.try_acquire() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                drain(stream).await;
                drop(slot);
            });
        }
    }
}

/// Half-closes `stream` and reads it until the peer closes, [`LINGER_TIME`] passes or
/// [`LINGER_BYTES`] were read.
async fn drain(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = stream.shutdown().await;
    let mut buf = vec![0u8; 8 * 1024];
    let mut read = 0usize;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while read < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}
