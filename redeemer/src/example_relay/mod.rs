//! An example relay to copy: it creates message queues and stores file chunks only for a
//! valid grant, checked with one local HTTP call to the sidecar (`POST /v1/grants/consume`),
//! exactly as an SMP or XFTP server would (see `spec/INTEGRATION.md`).
//!
//! - `POST /queues` with `Authorization: Bearer <grant>` (kind `queue`) → `201 {"queue_id"}`.
//! - `PUT /chunks/{id}` with the bytes and a grant of the chunk's size class (`chunk-64k`,
//!   `chunk-256k`, `chunk-1m`, `chunk-4m`) → `201`. Chunks are deleted after their retention
//!   (48 hours by default).
//! - `GET /chunks/{id}` → the bytes.
//! - `GET /downloads/{name}` with `Authorization: PrivateToken token=…` (RFC 9577; a token of
//!   `download_kind`, `chunk-1m` by default) → a file of `data_dir/downloads/`; without a
//!   token, 401 with the challenges ([`crate::private_token`]).
//! - `GET /healthz` → whether the sidecar answers and the data directory is there.
//! - `GET /metrics` → request durations and grant checks by result, in the Prometheus format.
//!
//! The relay never sees a token and never logs a grant code.

use crate::private_token::{TokenGate, require_token};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use scrip_common::clients::{ClientError, Http, RedeemerClient};
use scrip_common::metrics::{MetricsBuilder, MetricsRegistry, Outcomes};
use scrip_common::server::{ApiError, finish, health_answer};
use scrip_spec::api::Health;
use scrip_spec::api::redeemer::ConsumeRequest;
use scrip_spec::api::relay::{ChunkStored, QueueCreated, RelayErrorCode as Code};
use std::sync::Arc;
use std::time::Duration;

pub mod config;
pub use config::RelayConfig;

/// Largest chunk: the 4 MiB class.
pub const MAX_CHUNK: usize = 4 * 1024 * 1024;

/// The size classes, smallest first.
const CLASSES: [(usize, &str); 4] = [
    (64 * 1024, "chunk-64k"),
    (256 * 1024, "chunk-256k"),
    (1024 * 1024, "chunk-1m"),
    (MAX_CHUNK, "chunk-4m"),
];

/// The kind of grant a chunk of `len` bytes needs.
pub fn chunk_kind(len: usize) -> Option<&'static str> {
    CLASSES.iter().find(|(max, _)| len <= *max).map(|(_, k)| *k)
}

#[derive(Debug, Clone)]
struct Relay {
    config: Arc<RelayConfig>,
    sidecar: RedeemerClient,
    metrics: MetricsRegistry,
    /// Grant checks by `accepted`, `missing` (no grant sent), `refused` or `unavailable`.
    grant_checks: Outcomes,
}

fn error(status: StatusCode, code: impl scrip_spec::api::ErrorCode, message: &str) -> Response {
    ApiError::new(status, code, message).into_response()
}

impl Relay {
    /// The one check a relay makes: consume the grant for `kind` at the sidecar.
    async fn consume(&self, headers: &HeaderMap, kind: &str) -> Result<(), Response> {
        let grant = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                self.grant_checks.inc("missing");
                error(
                    StatusCode::UNAUTHORIZED,
                    Code::GrantRequired,
                    "send Authorization: Bearer <grant>",
                )
            })?;
        let request = ConsumeRequest {
            grant: grant.to_owned(),
            kind: kind.to_owned(),
        };
        match self.sidecar.consume(&request).await {
            Ok(_) => {
                self.grant_checks.inc("accepted");
                Ok(())
            }
            Err(ClientError::Refused {
                status,
                error: refusal,
                ..
            }) => {
                // Log the refusal, never the grant.
                tracing::info!(status, code = %refusal.code, kind, "grant refused");
                let (status, result) = if status >= 500 {
                    (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
                } else {
                    (StatusCode::FORBIDDEN, "refused")
                };
                self.grant_checks.inc(result);
                // The sidecar's code and message, written for whoever presents the grant.
                let message = format!("the grant was refused: {}", refusal.message);
                Err(error(status, refusal.code, &message))
            }
            Err(_) => {
                self.grant_checks.inc("unavailable");
                tracing::error!("the redeemer sidecar is unreachable");
                Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Code::Unavailable,
                    "cannot check the grant now; retry",
                ))
            }
        }
    }
}

fn new_id() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    scrip_spec::encoding::b64_encode(b)
}

fn valid_id(id: &str) -> bool {
    id.len() == 22
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn create_queue(State(relay): State<Relay>, headers: HeaderMap) -> Response {
    if let Err(refusal) = relay.consume(&headers, "queue").await {
        return refusal;
    }
    let id = new_id();
    let path = relay.config.data_dir.join("queues").join(&id);
    if let Err(e) = tokio::fs::write(&path, b"").await {
        tracing::error!(error = %e, "cannot create queue");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Storage,
            "cannot create the queue",
        );
    }
    (StatusCode::CREATED, Json(QueueCreated { queue_id: id })).into_response()
}

async fn put_chunk(
    State(relay): State<Relay>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !valid_id(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            Code::BadId,
            "a chunk id is 22 base64url characters",
        );
    }
    let Some(kind) = chunk_kind(body.len()) else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::TooLarge,
            "chunks are at most 4 MiB",
        );
    };
    let path = relay.config.data_dir.join("chunks").join(&id);
    if tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return error(
            StatusCode::CONFLICT,
            Code::Exists,
            "a chunk with this id exists",
        );
    }
    if let Err(refusal) = relay.consume(&headers, kind).await {
        return refusal;
    }
    if let Err(e) = tokio::fs::write(&path, &body).await {
        tracing::error!(error = %e, "cannot store chunk");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Storage,
            "cannot store the chunk",
        );
    }
    (
        StatusCode::CREATED,
        Json(ChunkStored {
            chunk_id: id,
            kind: kind.to_owned(),
        }),
    )
        .into_response()
}

async fn get_chunk(State(relay): State<Relay>, Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            Code::BadId,
            "a chunk id is 22 base64url characters",
        );
    }
    match tokio::fs::read(relay.config.data_dir.join("chunks").join(&id)).await {
        Ok(bytes) => bytes.into_response(),
        Err(_) => error(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            "no such chunk (or expired)",
        ),
    }
}

/// The file of download `name` in `data_dir/downloads/`, if `name` is a plain file name (no
/// path, no hidden file).
fn download_path(config: &RelayConfig, name: &str) -> Option<std::path::PathBuf> {
    let plain = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    plain.then(|| config.data_dir.join("downloads").join(name))
}

fn not_a_download_name() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        Code::BadId,
        "not a download's name",
    )
}

fn no_such_download() -> Response {
    error(StatusCode::NOT_FOUND, Code::NotFound, "no such download")
}

/// Before the token gate: a request for a download that is not there is refused without
/// charging (the gate spends the token before the route runs).
async fn download_exists(
    State(relay): State<Relay>,
    Path(name): Path<String>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(path) = download_path(&relay.config, &name) else {
        return not_a_download_name();
    };
    match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() => next.run(request).await,
        _ => no_such_download(),
    }
}

/// `GET /downloads/{name}`, once its token is spent: a file of `data_dir/downloads/`.
async fn download(State(relay): State<Relay>, Path(name): Path<String>) -> Response {
    let Some(path) = download_path(&relay.config, &name) else {
        return not_a_download_name();
    };
    match tokio::fs::read(path).await {
        Ok(bytes) => bytes.into_response(),
        Err(_) => no_such_download(),
    }
}

/// Deletes chunks older than the retention; returns how many.
pub fn sweep(config: &RelayConfig) -> std::io::Result<usize> {
    let mut deleted = 0;
    for entry in std::fs::read_dir(config.data_dir.join("chunks"))? {
        let entry = entry?;
        let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
        if age >= config.chunk_ttl() {
            std::fs::remove_file(entry.path())?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

async fn healthz(State(relay): State<Relay>) -> (StatusCode, Json<Health>) {
    let sidecar = relay.sidecar.health().await.is_ok_and(|h| h.is_ok());
    let storage = tokio::fs::try_exists(relay.config.data_dir.join("chunks"))
        .await
        .unwrap_or(false);
    health_answer(Health::from_checks([
        ("sidecar", sidecar),
        ("storage", storage),
    ]))
}

async fn metrics(State(relay): State<Relay>) -> Response {
    relay.metrics.render()
}

/// The relay's routes; creates its directories.
pub fn router(config: RelayConfig) -> std::io::Result<Router> {
    std::fs::create_dir_all(config.data_dir.join("queues"))?;
    std::fs::create_dir_all(config.data_dir.join("chunks"))?;
    std::fs::create_dir_all(config.data_dir.join("downloads"))?;
    let mut m = MetricsBuilder::new("relay");
    let grant_checks = m.outcomes(
        "grant_checks",
        "Grants checked at the sidecar, by result",
        &["accepted", "missing", "refused", "unavailable"],
    );
    // Paid downloads: one token per file, through the RFC 9577 gate (no grant involved).
    let gate = TokenGate::new(&config.sidecar, config.download_kind.clone());
    let relay = Relay {
        sidecar: RedeemerClient::on(&config.sidecar, Http::new(Duration::from_secs(10))),
        config: Arc::new(config),
        metrics: m.build(),
        grant_checks,
    };
    // The checks that refuse a request come before the gate, which charges: a download that
    // is not there costs nothing.
    // Route layers of the method router, so they run only for the requests the route serves
    // (a POST gets its 405, any other path its 404, without paying), the existence check
    // first: a download that is not there costs nothing either.
    let paid = get(download)
        .route_layer(axum::middleware::from_fn_with_state(gate, require_token))
        .route_layer(axum::middleware::from_fn_with_state(
            relay.clone(),
            download_exists,
        ));
    let downloads = Router::new().route("/downloads/{name}", paid);
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/queues", post(create_queue))
        .route("/chunks/{id}", get(get_chunk).put(put_chunk))
        .merge(downloads);
    // A 4 MiB chunk at a slow client's pace still arrives well within a minute.
    let registry = relay.metrics.clone();
    Ok(finish(routes, MAX_CHUNK, Duration::from_secs(60), &registry).with_state(relay))
}

/// Serves the relay on `listener` until `shutdown`, sweeping expired chunks every minute.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: RelayConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(config.clone())?;
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(
            Duration::from_secs(60).min(config.chunk_ttl().max(Duration::from_secs(1))),
        );
        loop {
            tick.tick().await;
            match sweep(&config) {
                Ok(n) if n > 0 => tracing::info!(deleted = n, "expired chunks deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "chunk sweep failed"),
            }
        }
    });
    let result = scrip_common::server::serve(listener, app, shutdown).await;
    sweeper.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn size_classes() {
        assert_eq!(chunk_kind(0), Some("chunk-64k"));
        assert_eq!(chunk_kind(64 * 1024), Some("chunk-64k"));
        assert_eq!(chunk_kind(64 * 1024 + 1), Some("chunk-256k"));
        assert_eq!(chunk_kind(MAX_CHUNK), Some("chunk-4m"));
        assert_eq!(chunk_kind(MAX_CHUNK + 1), None);
        assert!(valid_id(&new_id()));
        assert!(!valid_id("../../etc/passwd"));
    }

    #[test]
    fn sweep_deletes_only_expired_chunks() {
        let dir = std::env::temp_dir().join(format!("scrip-relay-{}", std::process::id()));
        let config = RelayConfig {
            chunk_ttl_secs: 3600,
            ..RelayConfig::new(dir.clone())
        };
        let _routes = router(config.clone()).expect("dirs");
        let old = dir.join("chunks").join("old");
        std::fs::write(&old, b"x").expect("write");
        std::fs::File::options()
            .write(true)
            .open(&old)
            .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(7200)))
            .expect("age");
        std::fs::write(dir.join("chunks").join("new"), b"y").expect("write");
        assert_eq!(sweep(&config).expect("sweep"), 1);
        assert!(!old.exists() && dir.join("chunks").join("new").exists());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
