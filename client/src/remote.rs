//! HTTP calls to issuers and redeemers, with their error bodies kept.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;

/// The outcome of a call that got an answer or did not.
#[derive(Debug)]
pub enum Reply<T> {
    /// 2xx with the body.
    Ok(T),
    /// An error answer: status and `error` object.
    Refused {
        /// HTTP status.
        status: u16,
        /// The error object (`code`, `message`, extra fields).
        error: Value,
    },
    /// No answer: the request may or may not have been processed.
    NoAnswer(reqwest::Error),
}

impl<T> Reply<T> {
    /// The error code of a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            Reply::Refused { error, .. } => error["code"].as_str(),
            _ => None,
        }
    }
}

/// A JSON-over-HTTP client.
#[derive(Debug, Clone)]
pub struct Remote {
    http: reqwest::Client,
}

impl Default for Remote {
    fn default() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .pool_idle_timeout(scrip_ledger::api::CLIENT_POOL_IDLE_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }
}

impl Remote {
    /// `POST url` with a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, url: &str, body: &B) -> Reply<T> {
        read(self.http.post(url).json(body).send().await).await
    }

    /// `GET url`.
    pub async fn get<T: DeserializeOwned>(&self, url: &str) -> Reply<T> {
        read(self.http.get(url).send().await).await
    }
}

async fn read<T: DeserializeOwned>(resp: Result<reqwest::Response, reqwest::Error>) -> Reply<T> {
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Reply::NoAnswer(e),
    };
    let status = resp.status();
    if status.is_success() {
        return match resp.json().await {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::NoAnswer(e),
        };
    }
    let body: Value = resp.json().await.unwrap_or_default();
    Reply::Refused {
        status: status.as_u16(),
        error: body["error"].clone(),
    }
}
