//! A JSON client for one service.

use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A service's base URL and a client; every call returns the status and the JSON body
/// (`null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Http {
    /// The base URL.
    pub base: String,
    /// The client (its connection pool is shared by every call).
    pub client: reqwest::Client,
}

impl Http {
    /// A client for the service at `base`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    /// `POST BASE PATH` with `body` as JSON.
    pub async fn post(&self, path: &str, body: &impl Serialize) -> (StatusCode, Value) {
        answer(
            self.client
                .post(format!("{}{path}", self.base))
                .json(body)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    /// `GET BASE PATH`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        answer(
            self.client
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    /// `GET BASE PATH` as text (`/metrics`).
    pub async fn text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text")
    }
}

/// The spends the ledger at `base` counts, over all its keys (`GET /v1/totals`).
pub async fn spent_total(base: &str) -> u64 {
    let (_, totals) = Http::new(base).get("/v1/totals").await;
    totals["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["spent"].as_u64().unwrap_or(0))
        .sum()
}

async fn answer(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The code of an error answer `{"error": {"code": …}}`, read as `C`.
pub fn error_code<C: DeserializeOwned>(body: &Value) -> Option<C> {
    serde_json::from_value(body["error"]["code"].clone()).ok()
}
