//! An HTTP client of the ledger, for issuers, redeemers, wallets and auditors.

use crate::http::{KeyDirectory, LogPage, NullifierStatus};
use crate::service::{LedgerInfo, Receipt};
use crate::store::KeyRecord;
use scrip_spec::encoding::b64_encode;
use scrip_spec::ledger::{LedgerRequest, Totals};
use scrip_spec::{CapacityKind, Nullifier, Signed};
use std::time::Duration;

/// Why a call to the ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: the ledger is down or unreachable. The request may or may not have been
    /// applied; a spend's outcome can be asked by nullifier.
    #[error("the ledger at {url} is unreachable")]
    Unreachable {
        /// The ledger's base URL.
        url: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// The ledger answered with an error.
    #[error("the ledger refused: {code} ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The error code.
        code: String,
        /// The message.
        message: String,
    },
    /// The answer is not what the protocol says.
    #[error("the ledger's answer could not be read")]
    BadAnswer {
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
}

impl ClientError {
    /// The ledger's error code, if it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A ledger client.
#[derive(Debug, Clone)]
pub struct LedgerClient {
    base: String,
    http: reqwest::Client,
}

impl LedgerClient {
    /// A client of the ledger at `base_url` (for example `http://127.0.0.1:7400`).
    pub fn new(base_url: &str) -> Self {
        Self::with_timeout(base_url, Duration::from_secs(30))
    }

    /// A client whose every call gives up after `timeout`.
    pub fn with_timeout(base_url: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(crate::api::CLIENT_POOL_IDLE_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, ClientError> {
        let resp = resp.map_err(|source| ClientError::Unreachable {
            url: self.base.clone(),
            source,
        })?;
        let status = resp.status();
        if status.is_success() {
            return resp
                .json()
                .await
                .map_err(|source| ClientError::BadAnswer { source });
        }
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        Err(ClientError::Refused {
            status: status.as_u16(),
            code: body["error"]["code"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned(),
            message: body["error"]["message"]
                .as_str()
                .unwrap_or("no message")
                .to_owned(),
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await;
        self.read(resp).await
    }

    /// Ledger id, genesis, members, catalog and head.
    pub async fn info(&self) -> Result<LedgerInfo, ClientError> {
        self.get("/v1/info").await
    }

    /// Submits a signed request.
    pub async fn submit(&self, request: &Signed<LedgerRequest>) -> Result<Receipt, ClientError> {
        let resp = self
            .http
            .post(format!("{}/v1/entries", self.base))
            .json(request)
            .send()
            .await;
        self.read(resp).await
    }

    /// The key directory, optionally filtered.
    pub async fn keys(
        &self,
        issuer: Option<&str>,
        kind: Option<&CapacityKind>,
    ) -> Result<Vec<KeyRecord>, ClientError> {
        let mut query = Vec::new();
        if let Some(i) = issuer {
            query.push(format!("issuer={}", urlencode(i)));
        }
        if let Some(k) = kind {
            query.push(format!("kind={k}"));
        }
        let dir: KeyDirectory = self.get(&format!("/v1/keys?{}", query.join("&"))).await?;
        Ok(dir.keys)
    }

    /// A nullifier's status.
    pub async fn nullifier(&self, nullifier: &Nullifier) -> Result<NullifierStatus, ClientError> {
        self.get(&format!("/v1/nullifiers/{}", b64_encode(nullifier.0)))
            .await
    }

    /// A page of the log.
    pub async fn log(&self, from: u64, limit: u32) -> Result<LogPage, ClientError> {
        self.get(&format!("/v1/log?from={from}&limit={limit}"))
            .await
    }

    /// The latest checkpoint and its cosignatures.
    pub async fn checkpoint(&self) -> Result<crate::service::CheckpointView, ClientError> {
        self.get("/v1/checkpoint").await
    }

    /// Current totals.
    pub async fn totals(&self) -> Result<Totals, ClientError> {
        self.get("/v1/totals").await
    }
}

/// Percent-encodes a query value (operator names are letters, digits, `-`, `.`, `_`; anything
/// else is escaped).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
