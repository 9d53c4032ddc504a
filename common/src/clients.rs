//! Typed HTTP clients of the ledger, the issuer and the redeemer, with one reader of answers:
//! a 2xx body as the endpoint's type from `scrip_spec::api`, an error answer as its service's
//! [`ErrorCode`], and no answer as [`ClientError::Unreachable`] (the request may or may not
//! have been applied).

use crate::CLIENT_POOL_IDLE_TIMEOUT;
use scrip_spec::api::issuer::{
    BalanceRequest, BalanceResponse, IssuerErrorCode, IssuerKeys, OpenRequest, OpenResponse,
    RefreshRequest, RefreshResponse, ReplayRequest, ReplayResponse, RequestId,
};
use scrip_spec::api::ledger::{
    CheckpointView, CommitteeView, KeyDirectory, KeyRecord, LedgerErrorCode, LedgerInfo, LogPage,
    NullifierPrefix, NullifierStatus, Receipt, SpentByPrefix,
};
use scrip_spec::api::redeemer::{
    ConsumeRequest, ConsumeResponse, RedeemRequest, RedeemResponse, RedeemerErrorCode,
};
use scrip_spec::api::relay::{ChunkStored, QueueCreated, RelayErrorCode};
use scrip_spec::api::{ErrorAnswer, ErrorCode, ErrorDetails, ErrorObject, Health};
use scrip_spec::encoding::b64_encode;
use scrip_spec::ledger::{LedgerRequest, Totals};
use scrip_spec::{CapacityKind, GrantCode, Nullifier, Signed, Token};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError<C: ErrorCode> {
    /// No answer: the service is down or unreachable, or the connection broke. The request
    /// may or may not have been applied.
    #[error("the {service} at {url} is unreachable")]
    Unreachable {
        /// Which service.
        service: &'static str,
        /// Its base URL.
        url: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// The service answered with an error.
    #[error("the {service} refused: {} ({status}): {}", .error.code.as_str(), .error.message)]
    Refused {
        /// Which service.
        service: &'static str,
        /// HTTP status.
        status: u16,
        /// The error object.
        error: ErrorObject<C>,
    },
    /// A 2xx answer that is not what the protocol says. Whether the request was applied is
    /// unknown, as with no answer.
    #[error("the {service}'s answer could not be read")]
    BadAnswer {
        /// Which service.
        service: &'static str,
        /// Why.
        #[source]
        source: AnswerError,
    },
}

/// The most bytes of one answer a client reads: well above the largest the protocol makes (a
/// log page of about 5 MiB, or one entry as large as the biggest request a ledger takes), so
/// that a faulty or hostile service, a committee peer among them, cannot fill a client's
/// memory with one endless answer.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Why an answer's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The connection broke or timed out while the body was read.
    #[error("the answer was cut short")]
    Read(#[source] reqwest::Error),
    /// The body is larger than a client reads; the rest was not read.
    #[error("the answer is larger than {limit} bytes")]
    TooLarge {
        /// The bound, [`MAX_ANSWER_BYTES`].
        limit: usize,
    },
    /// The body is not the JSON the protocol says.
    #[error("the answer is not the JSON the protocol says")]
    Json(#[source] serde_json::Error),
}

/// Reads `resp`'s body, at most `limit` bytes: a larger one is refused without reading on, by
/// its declared length or once the bytes read pass the bound.
async fn bounded_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, AnswerError> {
    if resp
        .content_length()
        .is_some_and(|declared| declared > limit as u64)
    {
        return Err(AnswerError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(AnswerError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(AnswerError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads `resp`'s body, at most [`MAX_ANSWER_BYTES`], as JSON.
async fn json_answer<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, AnswerError> {
    let body = bounded_body(resp, MAX_ANSWER_BYTES).await?;
    serde_json::from_slice(&body).map_err(AnswerError::Json)
}

impl<C: ErrorCode> ClientError<C> {
    /// The error code, if the service answered with one.
    pub fn code(&self) -> Option<C> {
        match self {
            ClientError::Refused { error, .. } => Some(error.code),
            _ => None,
        }
    }

    /// The HTTP status, if the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the outcome is unknown: no answer, an unreadable answer, a 5xx or a 408 (the
    /// service may still complete the request).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ClientError::Refused { status, .. } => *status >= 500 || *status == 408,
            _ => true,
        }
    }
}

/// The connection pool and time limit the typed clients share.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    /// A pool whose every call gives up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(CLIENT_POOL_IDLE_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self { client }
    }

    /// A client that opens a new connection for every call and keeps none, so calls a
    /// service should not be able to group (a wallet's status queries) share no connection.
    pub fn unpooled(timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default();
        Self { client }
    }
}

/// One service's base URL on a shared [`Http`] pool: the common part of the typed clients.
#[derive(Debug, Clone)]
struct Endpoint {
    service: &'static str,
    base: String,
    http: Http,
}

impl Endpoint {
    fn new(service: &'static str, base_url: &str, http: Http) -> Self {
        Self {
            service,
            base: base_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get<T: DeserializeOwned, C: ErrorCode>(
        &self,
        path: &str,
    ) -> Result<T, ClientError<C>> {
        self.read(self.http.client.get(self.url(path)).send().await)
            .await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned, C: ErrorCode>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError<C>> {
        let request = self.http.client.post(self.url(path)).json(body);
        self.read(request.send().await).await
    }

    /// Reads `/healthz`: its JSON on 200 and 503 alike.
    async fn health<C: ErrorCode>(&self) -> Result<Health, ClientError<C>> {
        let resp = self.http.client.get(self.url("/healthz")).send().await;
        let resp = resp.map_err(|source| self.unreachable(source))?;
        json_answer(resp)
            .await
            .map_err(|source| ClientError::BadAnswer {
                service: self.service,
                source,
            })
    }

    fn unreachable<C: ErrorCode>(&self, source: reqwest::Error) -> ClientError<C> {
        ClientError::Unreachable {
            service: self.service,
            url: self.base.clone(),
            source,
        }
    }

    async fn read<T: DeserializeOwned, C: ErrorCode>(
        &self,
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, ClientError<C>> {
        let resp = resp.map_err(|source| self.unreachable(source))?;
        let status = resp.status();
        if status.is_success() {
            return json_answer(resp)
                .await
                .map_err(|source| ClientError::BadAnswer {
                    service: self.service,
                    source,
                });
        }
        let error = match json_answer::<ErrorAnswer<C>>(resp).await {
            Ok(answer) => answer.error,
            // Not our error shape (a proxy's page, say): keep the status, say so.
            Err(_) => ErrorObject {
                code: C::unknown(),
                message: "no message".into(),
                details: ErrorDetails::default(),
            },
        };
        Err(ClientError::Refused {
            service: self.service,
            status: status.as_u16(),
            error,
        })
    }
}

/// A typed client of one service: its base URL on a shared [`Http`] pool, and `/healthz`.
macro_rules! service_client {
    ($(#[$meta:meta])* $name:ident, $service:literal, $code:ty) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name {
            endpoint: Endpoint,
        }

        impl $name {
            #[doc = concat!("A client of the ", $service, " at `base_url` on a shared pool.")]
            pub fn on(base_url: &str, http: Http) -> Self {
                Self {
                    endpoint: Endpoint::new($service, base_url, http),
                }
            }

            /// The base URL.
            pub fn url(&self) -> &str {
                &self.endpoint.base
            }

            /// `GET /healthz`: its checks, on 200 and 503 alike.
            pub async fn health(&self) -> Result<Health, ClientError<$code>> {
                self.endpoint.health().await
            }
        }
    };
}

/// A ledger client's error.
pub type LedgerClientError = ClientError<LedgerErrorCode>;
/// An issuer client's error.
pub type IssuerClientError = ClientError<IssuerErrorCode>;
/// A redeemer client's error.
pub type RedeemerClientError = ClientError<RedeemerErrorCode>;
/// A relay client's error.
pub type RelayClientError = ClientError<RelayErrorCode>;

/// A client of the ledger, for issuers, redeemers, wallets and auditors. On a committee
/// ledger it sends each request to every node and takes an outcome only when `f + 1` nodes
/// answered the same one, each receipt signed by its node (PROTOCOL.md section 11.3).
#[derive(Debug, Clone)]
pub struct LedgerClient {
    endpoint: Endpoint,
    known: std::sync::Arc<std::sync::Mutex<Known>>,
    refresh: Duration,
}

/// How often a client asks a committee whether its membership changed.
pub const COMMITTEE_REFRESH: Duration = Duration::from_secs(60);

/// What a client knows of the ledger's nodes.
#[derive(Debug, Clone)]
enum Known {
    /// Nothing yet: the ledger's info was never read.
    Unknown,
    /// A one-node ledger.
    OneNode,
    /// A committee.
    Committee {
        /// The nodes asked.
        nodes: std::sync::Arc<Committee>,
        /// When `f + 1` of them last said which committee is the latest (`None`: never yet;
        /// the nodes are then the genesis's).
        checked: Option<std::time::Instant>,
        /// The latest committee in the configured node's info: its word alone, used only if
        /// the genesis's nodes cannot say.
        named: Vec<scrip_spec::committee::CommitteeMember>,
    },
}

/// The nodes of a committee ledger.
#[derive(Debug)]
struct Committee {
    ledger_id: scrip_spec::ledger::Hash32,
    nodes: Vec<(scrip_spec::OperatorId, Endpoint)>,
    quorum: usize,
}

impl Committee {
    async fn submit(&self, request: &Signed<LedgerRequest>) -> Result<Receipt, LedgerClientError> {
        use scrip_spec::committee::ReceiptStatement;
        let digest = scrip_spec::ledger::Hash32(scrip_spec::ledger::request_digest(request));
        let request = std::sync::Arc::new(request.clone());
        let mut answers = tokio::task::JoinSet::new();
        for (node, endpoint) in &self.nodes {
            let (node, endpoint, request) = (*node, endpoint.clone(), request.clone());
            answers.spawn(async move {
                let answer: Result<Receipt, LedgerClientError> =
                    endpoint.post("/v1/entries", request.as_ref()).await;
                (node, answer)
            });
        }
        let mut receipts: Vec<(ReceiptStatement, usize)> = Vec::new();
        let mut refusals: Vec<((u16, LedgerErrorCode), usize)> = Vec::new();
        let mut last_error = None;
        while let Some(joined) = answers.join_next().await {
            let Ok((node, answer)) = joined else { continue };
            match answer {
                Ok(receipt) => {
                    let statement = ReceiptStatement {
                        ledger_id: self.ledger_id,
                        request: digest,
                        seq: receipt.seq,
                        entry_hash: receipt.entry_hash,
                        spends: receipt.spends.clone(),
                    };
                    // A node speaks for itself only, about this request only.
                    let signed_by_node = receipt.attestation.as_ref().is_some_and(|a| {
                        a.node == node
                            && a.request == digest
                            && scrip_spec::operator::verify_detached(
                                &node,
                                &statement,
                                &a.signature,
                            )
                            .is_ok()
                    });
                    if !signed_by_node {
                        tracing::warn!(node = %node, "a ledger node answered a receipt it did not sign properly; ignored");
                        continue;
                    }
                    if tally(&mut receipts, statement) >= self.quorum {
                        answers.abort_all();
                        return Ok(receipt);
                    }
                }
                Err(e) if !e.outcome_unknown() => {
                    let (Some(status), Some(code)) = (e.status(), e.code()) else {
                        continue;
                    };
                    if tally(&mut refusals, (status, code)) >= self.quorum {
                        answers.abort_all();
                        return Err(e);
                    }
                    last_error = Some(e);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(self.no_quorum(
            "outcome of the request (send the same request again to learn it)",
            last_error,
        ))
    }
}

/// Counts one more node's answer `key` among `counts`; returns how many gave it so far.
fn tally<K: PartialEq>(counts: &mut Vec<(K, usize)>, key: K) -> usize {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => {
            *n += 1;
            *n
        }
        None => {
            counts.push((key, 1));
            1
        }
    }
}

impl Committee {
    /// Whether these are the nodes of `members`, in order.
    fn is(&self, members: &[scrip_spec::committee::CommitteeMember]) -> bool {
        self.nodes.len() == members.len()
            && self.nodes.iter().zip(members).all(|((key, endpoint), m)| {
                *key == m.node_key && endpoint.base == m.api_url.trim_end_matches('/')
            })
    }

    /// `GET path` from every node; the answer `f + 1` nodes gave alike, so one node cannot
    /// hand a client a directory or a status of its own making (a 503 if none did).
    async fn get_agreed<T>(&self, path: &str) -> Result<T, LedgerClientError>
    where
        T: DeserializeOwned + PartialEq + Clone + Send + 'static,
    {
        let mut answers = tokio::task::JoinSet::new();
        for (_, endpoint) in &self.nodes {
            let (endpoint, path) = (endpoint.clone(), path.to_owned());
            answers.spawn(async move { endpoint.get::<T, LedgerErrorCode>(&path).await });
        }
        let mut seen: Vec<(T, usize)> = Vec::new();
        let mut last_error = None;
        while let Some(joined) = answers.join_next().await {
            let Ok(answer) = joined else { continue };
            match answer {
                Ok(value) => {
                    if tally(&mut seen, value.clone()) >= self.quorum {
                        answers.abort_all();
                        return Ok(value);
                    }
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(self.no_quorum("answer", last_error))
    }

    fn no_quorum(&self, what: &str, last_error: Option<LedgerClientError>) -> LedgerClientError {
        ClientError::Refused {
            service: "ledger",
            status: 503,
            error: ErrorObject {
                code: LedgerErrorCode::LedgerUnavailable,
                message: format!(
                    "fewer than {} of the {} ledger nodes gave the same {what}, so it cannot be trusted yet; retry (last error: {})",
                    self.quorum,
                    self.nodes.len(),
                    last_error.map_or_else(|| "none".to_owned(), |e| e.to_string())
                ),
                details: ErrorDetails::default(),
            },
        }
    }
}

impl LedgerClient {
    /// A client of the ledger at `base_url` on a shared pool.
    pub fn on(base_url: &str, http: Http) -> Self {
        Self {
            endpoint: Endpoint::new("ledger", base_url, http),
            known: std::sync::Arc::new(std::sync::Mutex::new(Known::Unknown)),
            refresh: COMMITTEE_REFRESH,
        }
    }

    /// Asks a committee for membership changes every `every` instead of every
    /// [`COMMITTEE_REFRESH`].
    pub fn refreshing_committee_every(mut self, every: Duration) -> Self {
        self.refresh = every;
        self
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.endpoint.base
    }

    /// `GET /healthz`: its checks, on 200 and 503 alike.
    pub async fn health(&self) -> Result<Health, LedgerClientError> {
        self.endpoint.health().await
    }

    /// The committee to ask: `None` for a one-node ledger, or while the ledger cannot be read.
    /// It starts from the genesis's committee (read from the ledger at [`LedgerClient::url`]
    /// with the first info) and follows the latest that `f + 1` of the nodes it knows name
    /// alike (`GET /v1/committee`), asked again every [`COMMITTEE_REFRESH`], so the node a
    /// client is configured with cannot hand it a committee of its own.
    async fn committee(&self) -> Option<std::sync::Arc<Committee>> {
        if matches!(*self.known(), Known::Unknown) {
            let _ = self.info().await;
        }
        let Known::Committee {
            nodes,
            checked,
            named,
        } = self.known().clone()
        else {
            return None;
        };
        if checked.is_some_and(|checked| checked.elapsed() < self.refresh) {
            return Some(nodes);
        }
        let now = match nodes.get_agreed::<CommitteeView>("/v1/committee").await {
            Ok(view) if !view.members.is_empty() && !nodes.is(&view.members) => {
                tracing::info!(
                    nodes = view.members.len(),
                    "the ledger's committee changed; following it"
                );
                std::sync::Arc::new(self.committee_of(nodes.ledger_id, &view.members))
            }
            // The genesis's nodes cannot say (fewer than f + 1 of them answer alike, for
            // example because most were retired and stopped): the configured node's word is
            // all there is.
            Err(e) if checked.is_none() && !named.is_empty() && !nodes.is(&named) => {
                tracing::warn!(
                    error = %e,
                    url = %self.endpoint.base,
                    "the genesis's committee nodes do not confirm the latest committee; taking \
                     the one the configured ledger node names, on its word alone"
                );
                std::sync::Arc::new(self.committee_of(nodes.ledger_id, &named))
            }
            // Unchanged, or no f + 1 agree yet: keep the one known.
            _ => nodes,
        };
        *self.known() = Known::Committee {
            nodes: now.clone(),
            checked: Some(std::time::Instant::now()),
            named: Vec::new(),
        };
        Some(now)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn committee_of(
        &self,
        ledger_id: scrip_spec::ledger::Hash32,
        members: &[scrip_spec::committee::CommitteeMember],
    ) -> Committee {
        Committee {
            ledger_id,
            nodes: members
                .iter()
                .map(|m| {
                    (
                        m.node_key,
                        Endpoint::new("ledger", &m.api_url, self.endpoint.http.clone()),
                    )
                })
                .collect(),
            quorum: scrip_spec::committee::answer_quorum(members.len()),
        }
    }

    fn remember_committee(&self, info: &LedgerInfo) {
        let mut known = self.known();
        if !matches!(*known, Known::Unknown) || info.genesis.ledger_id() != info.ledger_id {
            return;
        }
        // The genesis's committee is vouched for by the ledger id; the info's (the latest the
        // node applied) only by the node, so it is confirmed with the genesis's nodes first.
        *known = if info.genesis.committee.is_empty() {
            Known::OneNode
        } else {
            Known::Committee {
                nodes: std::sync::Arc::new(
                    self.committee_of(info.ledger_id, &info.genesis.committee),
                ),
                checked: None,
                named: info.committee.clone(),
            }
        };
    }

    /// A client of the ledger at `base_url` (for example `http://127.0.0.1:7400`), 30 s per call.
    pub fn new(base_url: &str) -> Self {
        Self::with_timeout(base_url, Duration::from_secs(30))
    }

    /// A client whose every call gives up after `timeout`.
    pub fn with_timeout(base_url: &str, timeout: Duration) -> Self {
        Self::on(base_url, Http::new(timeout))
    }

    /// Ledger id, genesis, members, catalog and head.
    pub async fn info(&self) -> Result<LedgerInfo, LedgerClientError> {
        let info = self.endpoint.get("/v1/info").await?;
        self.remember_committee(&info);
        Ok(info)
    }

    /// Submits a signed request: to the ledger, or to every node of a committee ledger,
    /// answering the outcome `f + 1` nodes agree on (a 503 if they do not).
    pub async fn submit(
        &self,
        request: &Signed<LedgerRequest>,
    ) -> Result<Receipt, LedgerClientError> {
        match self.committee().await {
            Some(committee) => committee.submit(request).await,
            None => self.endpoint.post("/v1/entries", request).await,
        }
    }

    /// The key directory, optionally filtered.
    pub async fn keys(
        &self,
        issuer: Option<&str>,
        kind: Option<&CapacityKind>,
    ) -> Result<Vec<KeyRecord>, LedgerClientError> {
        let mut query = Vec::new();
        if let Some(i) = issuer {
            query.push(format!("issuer={}", urlencode(i)));
        }
        if let Some(k) = kind {
            query.push(format!("kind={k}"));
        }
        let path = format!("/v1/keys?{}", query.join("&"));
        let dir: KeyDirectory = match self.committee().await {
            Some(committee) => committee.get_agreed(&path).await?,
            None => self.endpoint.get(&path).await?,
        };
        Ok(dir.keys)
    }

    /// A nullifier's status.
    pub async fn nullifier(
        &self,
        nullifier: &Nullifier,
    ) -> Result<NullifierStatus, LedgerClientError> {
        let path = format!("/v1/nullifiers/{}", b64_encode(nullifier.0));
        match self.committee().await {
            Some(committee) => committee.get_agreed(&path).await,
            None => self.endpoint.get(&path).await,
        }
    }

    /// The spent nullifiers that start with `prefix` (a wallet's private status query).
    pub async fn spent_with_prefix(
        &self,
        prefix: &NullifierPrefix,
    ) -> Result<SpentByPrefix, LedgerClientError> {
        self.endpoint.get(&format!("/v1/spent/{prefix}")).await
    }

    /// A page of the log.
    pub async fn log(&self, from: u64, limit: u32) -> Result<LogPage, LedgerClientError> {
        self.endpoint
            .get(&format!("/v1/log?from={from}&limit={limit}"))
            .await
    }

    /// The ledger's info with its shared state (members, catalog, `governance_seq`, admin
    /// quorum, latest committee) as `f + 1` nodes report it alike on a committee, so one node
    /// cannot tell a service it is no member, or an admin a wrong `governance_seq`. The head
    /// and the session stay the configured node's word: they differ between nodes at any
    /// moment (PROTOCOL.md section 11.12).
    pub async fn agreed_info(&self) -> Result<LedgerInfo, LedgerClientError> {
        /// The part of `GET /v1/info` that every node in the same state answers alike.
        #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
        struct SharedState {
            ledger_id: scrip_spec::ledger::Hash32,
            operators: Vec<scrip_spec::ledger::OperatorInfo>,
            catalog: scrip_spec::Catalog,
            governance_seq: u64,
            admin_quorum: u32,
            committee: Vec<scrip_spec::committee::CommitteeMember>,
        }
        let mut info = self.info().await?;
        let Some(committee) = self.committee().await else {
            return Ok(info);
        };
        let shared: SharedState = committee.get_agreed("/v1/info").await?;
        if shared.ledger_id != info.ledger_id {
            return Err(committee.no_quorum(
                "ledger id as the configured node (it serves another ledger)",
                None,
            ));
        }
        info.operators = shared.operators;
        info.catalog = shared.catalog;
        info.governance_seq = shared.governance_seq;
        info.admin_quorum = shared.admin_quorum;
        info.committee = shared.committee;
        Ok(info)
    }

    /// The current catalog (kinds and prices), as [`Self::agreed_info`] reports it, so one
    /// node cannot make an issuer or a wallet price tokens by a catalog of its own.
    pub async fn catalog(&self) -> Result<scrip_spec::Catalog, LedgerClientError> {
        Ok(self.agreed_info().await?.catalog)
    }

    /// Entry `seq` as the ledger holds it: on a committee, as `f + 1` nodes hold it alike, so
    /// an auditor that read the log from one node can check that node served the committee's
    /// log (the entries are hash-chained: the last one vouches for all before it). `None` if
    /// the log does not reach `seq`.
    pub async fn agreed_entry(
        &self,
        seq: u64,
    ) -> Result<Option<scrip_spec::ledger::LogEntry>, LedgerClientError> {
        /// A page without `next`, which differs between nodes whose logs end differently.
        #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
        struct Entries {
            entries: Vec<scrip_spec::ledger::LogEntry>,
        }
        let path = format!("/v1/log?from={seq}&limit=1");
        let page: Entries = match self.committee().await {
            Some(committee) => committee.get_agreed(&path).await?,
            None => self.endpoint.get(&path).await?,
        };
        Ok(page.entries.into_iter().find(|e| e.seq == seq))
    }

    /// The latest checkpoint and its cosignatures.
    pub async fn checkpoint(&self) -> Result<CheckpointView, LedgerClientError> {
        self.endpoint.get("/v1/checkpoint").await
    }

    /// Current totals.
    pub async fn totals(&self) -> Result<Totals, LedgerClientError> {
        self.endpoint.get("/v1/totals").await
    }
}

service_client!(
    /// A client of one issuer, for wallets and the load generator.
    IssuerClient,
    "issuer",
    IssuerErrorCode
);

impl IssuerClient {
    /// `GET /v1/keys`: the keys the issuer offers.
    pub async fn keys(&self) -> Result<IssuerKeys, IssuerClientError> {
        self.endpoint.get("/v1/keys").await
    }

    /// `POST /v1/cards/balance`.
    pub async fn balance(&self, card_code: &str) -> Result<BalanceResponse, IssuerClientError> {
        let body = BalanceRequest {
            card_code: card_code.to_owned(),
        };
        self.endpoint.post("/v1/cards/balance", &body).await
    }

    /// `POST /v1/cards/open`.
    pub async fn open(&self, request: &OpenRequest) -> Result<OpenResponse, IssuerClientError> {
        self.endpoint.post("/v1/cards/open", request).await
    }

    /// `POST /v1/refresh`: tokens of this issuer exchanged for new blind signatures.
    pub async fn refresh(
        &self,
        request: &RefreshRequest,
    ) -> Result<RefreshResponse, IssuerClientError> {
        self.endpoint.post("/v1/refresh", request).await
    }

    /// `POST /v1/requests/replay`: a recorded opening or completed refresh.
    pub async fn replay(
        &self,
        request_id: &RequestId,
    ) -> Result<ReplayResponse, IssuerClientError> {
        let body = ReplayRequest {
            request_id: *request_id,
        };
        self.endpoint.post("/v1/requests/replay", &body).await
    }
}

service_client!(
    /// A client of one redeemer sidecar, for wallets, relays and the load generator.
    RedeemerClient,
    "redeemer",
    RedeemerErrorCode
);

impl RedeemerClient {
    /// `POST /v1/redeem`: a token for a grant of `kind`.
    pub async fn redeem(
        &self,
        token: &Token,
        kind: &CapacityKind,
    ) -> Result<RedeemResponse, RedeemerClientError> {
        let body = RedeemRequest {
            token: b64_encode(token.to_bytes()),
            kind: kind.to_string(),
        };
        self.endpoint.post("/v1/redeem", &body).await
    }

    /// `POST /v1/grants/consume`: uses up a grant for a kind.
    pub async fn consume(
        &self,
        request: &ConsumeRequest,
    ) -> Result<ConsumeResponse, RedeemerClientError> {
        self.endpoint.post("/v1/grants/consume", request).await
    }
}

service_client!(
    /// A client of a relay that takes grants as the example relay does (`POST /queues`,
    /// `PUT /chunks/{id}`, `GET /chunks/{id}`, each grant as `Authorization: Bearer`), for
    /// `scrip relay use` and the demo.
    RelayClient,
    "relay",
    RelayErrorCode
);

impl RelayClient {
    /// A client of the relay at `base_url`; a 4 MiB chunk has a minute to go up.
    pub fn new(base_url: &str) -> Self {
        Self::on(base_url, Http::new(Duration::from_secs(60)))
    }

    /// `POST /queues`: a new queue for a `queue` grant.
    pub async fn create_queue(&self, grant: &GrantCode) -> Result<QueueCreated, RelayClientError> {
        let e = &self.endpoint;
        let request = e.http.client.post(e.url("/queues")).bearer_auth(grant);
        e.read(request.send().await).await
    }

    /// `PUT /chunks/{id}`: stores `bytes` as chunk `id` for a grant of the chunk's size class.
    pub async fn put_chunk(
        &self,
        id: &str,
        grant: &GrantCode,
        bytes: Vec<u8>,
    ) -> Result<ChunkStored, RelayClientError> {
        let e = &self.endpoint;
        let url = e.url(&format!("/chunks/{}", urlencode(id)));
        let request = e.http.client.put(url).bearer_auth(grant).body(bytes);
        e.read(request.send().await).await
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

/// Why a service may not act for its operator on the ledger.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The ledger did not answer.
    #[error("cannot reach the ledger at {url}; start it or fix ledger_url")]
    Unreachable {
        /// The ledger's URL.
        url: String,
        /// Why.
        #[source]
        source: LedgerClientError,
    },
    /// The key is not a member.
    #[error("operator key {id} is not a member of the ledger; have it admitted first")]
    NotAMember {
        /// The operator key's id.
        id: scrip_spec::OperatorId,
    },
    /// The key is a member under another name.
    #[error(
        "the ledger knows this operator key as {known:?}, not {configured:?}; fix `name` in the config"
    )]
    OtherName {
        /// The name on the ledger.
        known: String,
        /// The name configured.
        configured: String,
    },
    /// The member lacks the role the service needs.
    #[error(
        "operator {name:?} lacks the {role:?} role on the ledger; its requests would be refused"
    )]
    MissingRole {
        /// The member.
        name: String,
        /// The role.
        role: scrip_spec::ledger::Role,
    },
}

/// [`member_info`], waiting up to `wait` for a ledger that does not answer yet (a service
/// started before its ledger, as boot order often has it), with a log line at each try.
pub async fn member_info_waiting(
    ledger: &LedgerClient,
    operator: &scrip_spec::OperatorKey,
    name: &str,
    role: Option<scrip_spec::ledger::Role>,
    wait: Duration,
) -> Result<LedgerInfo, MembershipError> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(500);
    loop {
        match member_info(ledger, operator, name, role).await {
            Err(MembershipError::Unreachable { source, .. }) if started.elapsed() < wait => {
                let left = wait.saturating_sub(started.elapsed());
                tracing::warn!(
                    ledger = %ledger.url(),
                    error = %source,
                    retry_in_ms = pause.min(left).as_millis() as u64,
                    gives_up_in_secs = left.as_secs(),
                    "the ledger is not answering yet; waiting for it before serving"
                );
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

/// The ledger's info, once it is confirmed that `operator` is the member called `name` and,
/// if given, holds `role`: what an issuer or a redeemer checks before it serves.
pub async fn member_info(
    ledger: &LedgerClient,
    operator: &scrip_spec::OperatorKey,
    name: &str,
    role: Option<scrip_spec::ledger::Role>,
) -> Result<LedgerInfo, MembershipError> {
    let info = ledger
        .agreed_info()
        .await
        .map_err(|source| MembershipError::Unreachable {
            url: ledger.url().to_owned(),
            source,
        })?;
    let me = info
        .operators
        .iter()
        .find(|o| o.id == operator.id())
        .ok_or(MembershipError::NotAMember { id: operator.id() })?;
    if me.name != name {
        return Err(MembershipError::OtherName {
            known: me.name.clone(),
            configured: name.to_owned(),
        });
    }
    if let Some(role) = role
        && !me.roles.contains(&role)
    {
        return Err(MembershipError::MissingRole {
            name: me.name.clone(),
            role,
        });
    }
    Ok(info)
}
