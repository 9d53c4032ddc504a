//! Prometheus metrics on the `prometheus-client` crate, the same for every service: a registry
//! each service builds at start-up with its metrics named `scrip_<service>_…`
//! ([`MetricsBuilder`]), counters of outcomes under one `result` label ([`Outcomes`]), latency
//! histograms ([`Latency`]), the build-info gauge, the `/metrics` answer
//! ([`MetricsRegistry::render`]), and the layer that times every request
//! (`scrip_<service>_http_request_duration_seconds`, installed by [`crate::server::finish`]).
//!
//! `/metrics` is the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]) rather than OpenMetrics:
//! every Prometheus and every agent scrapes it, it is what the services answered before, and it
//! shows the build info as a plain gauge.

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;

/// The `Content-Type` of `/metrics`: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in seconds: 100 µs to 10 s in steps of 1, 2.5, 5, fine
/// enough to tell a SQLite commit from a PostgreSQL round trip and a slow ledger from a dead one.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A histogram of durations in seconds, with [`LATENCY_BUCKETS`]. Clones share their counts.
#[derive(Clone, Debug)]
pub struct Latency(Histogram);

impl Default for Latency {
    fn default() -> Self {
        Self(latency_histogram())
    }
}

impl Latency {
    /// Records one duration.
    pub fn observe(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
    }

    /// Records the time since `started`.
    pub fn since(&self, started: Instant) {
        self.observe(started.elapsed());
    }
}

/// The one label of an outcome counter.
type ResultLabel = [(&'static str, &'static str); 1];

/// A counter of outcomes by their `result` label, such as
/// `scrip_ledger_requests_total{result="accepted"}`. The results are fixed strings, so the
/// label's values are bounded. Clones share their counts.
#[derive(Clone, Debug, Default)]
pub struct Outcomes(Family<ResultLabel, Counter>);

impl Outcomes {
    /// Counts one outcome.
    pub fn inc(&self, result: &'static str) {
        self.inc_by(result, 1);
    }

    /// Counts `n` outcomes.
    pub fn inc_by(&self, result: &'static str, n: u64) {
        self.0.get_or_create(&[("result", result)]).inc_by(n);
    }
}

/// The labels of the request-duration histogram; every value is bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    /// The route's template (`/chunks/{id}`, never the id), or `unmatched`.
    route: String,
    method: &'static str,
    /// The status class: `2xx`, `4xx`, …
    status: &'static str,
}

type HttpHistograms = Family<HttpLabels, Histogram, fn() -> Histogram>;

/// A service's metrics while it registers them at start-up; [`MetricsBuilder::build`] ends the
/// registration. It starts with the build-info gauge and the request-duration histogram.
#[derive(Debug)]
pub struct MetricsBuilder {
    registry: Registry,
    http: HttpHistograms,
}

impl MetricsBuilder {
    /// A registry whose metrics are named `scrip_<service>_…`.
    pub fn new(service: &str) -> Self {
        let mut registry = Registry::with_prefix(format!("scrip_{service}"));
        registry.register(
            "build",
            "The version running (the label); always 1",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let http = HttpHistograms::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response head, by route, method and status class",
            http.clone(),
        );
        Self { registry, http }
    }

    /// Registers a metric made elsewhere under `name` (after the prefix). The library ends
    /// `help` with a full stop.
    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.registry.register(name, help, metric);
    }

    /// A new counter, shown as `<name>_total`.
    pub fn counter(&mut self, name: &str, help: &str) -> Counter {
        let counter = Counter::default();
        self.register(name, help, counter.clone());
        counter
    }

    /// A new gauge.
    pub fn gauge(&mut self, name: &str, help: &str) -> Gauge {
        let gauge = Gauge::default();
        self.register(name, help, gauge.clone());
        gauge
    }

    /// A new outcome counter, shown as `<name>_total{result="…"}`; each of `results` is shown
    /// (at 0) from the start, so that a rate over it never starts from a missing series.
    pub fn outcomes(&mut self, name: &str, help: &str, results: &[&'static str]) -> Outcomes {
        let outcomes = Outcomes::default();
        for result in results {
            outcomes.inc_by(result, 0);
        }
        self.register(name, help, outcomes.0.clone());
        outcomes
    }

    /// A new latency histogram.
    pub fn latency(&mut self, name: &str, help: &str) -> Latency {
        let latency = Latency::default();
        self.register_latency(name, help, &latency);
        latency
    }

    /// Registers a latency histogram made elsewhere (one a library type keeps itself).
    pub fn register_latency(&mut self, name: &str, help: &str, latency: &Latency) {
        self.register(name, help, latency.0.clone());
    }

    /// Ends the registration.
    pub fn build(self) -> MetricsRegistry {
        MetricsRegistry {
            registry: Arc::new(self.registry),
            http: self.http,
        }
    }
}

/// A service's registered metrics: what `/metrics` renders and what the request layer records
/// into. Clones share everything.
#[derive(Clone, Debug)]
pub struct MetricsRegistry {
    registry: Arc<Registry>,
    http: HttpHistograms,
}

impl MetricsRegistry {
    /// Every metric in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// The `/metrics` answer: the text with its [`CONTENT_TYPE`].
    pub fn render(&self) -> Response {
        match self.encode() {
            Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
            // Writing into a String cannot fail; a metric's own encoder could, in principle.
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }

    /// Times every request of `router` into `http_request_duration_seconds`. Added last (outermost),
    /// it sees the final status, the 408 of the time limit and the JSON error answers included.
    pub fn time_requests<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        router.layer(axum::middleware::from_fn_with_state(
            self.http.clone(),
            time_request,
        ))
    }
}

async fn time_request(
    State(http): State<HttpHistograms>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    // The template, not the path: a path carries ids, and one series per id is unbounded.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let labels = HttpLabels {
        route,
        method,
        status: status_class(response.status()),
    };
    http.get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The method as a label; HTTP allows any token as a method, so the rest are `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// A service's `/metrics` text read back, for tests and probes. Shows as the text.
#[derive(Debug)]
pub struct Scrape {
    service: String,
    text: String,
}

impl std::fmt::Display for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Scrape {
    /// The `/metrics` text of `service` (`ledger`, `issuer`, `redeemer`, `relay`).
    pub fn new(service: &str, text: String) -> Self {
        Self {
            service: service.to_owned(),
            text,
        }
    }

    /// The value of one series, named with its labels as rendered (such as
    /// `scrip_ledger_requests_total{result="accepted"}`).
    pub fn value(&self, series: &str) -> Option<f64> {
        self.text
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// How many requests to `route` (its template) with `method` and a status of class
    /// `status` (`2xx`, …) the request-duration histogram counts, read from its `+Inf` bucket;
    /// `None` unless every bucket line of that series is there.
    pub fn requests_timed(&self, route: &str, method: &str, status: &str) -> Option<u64> {
        let series = format!(
            "scrip_{}_http_request_duration_seconds_bucket{{route=\"{route}\",method=\"{method}\",status=\"{status}\",le=",
            self.service
        );
        let buckets = self.text.lines().filter(|l| l.starts_with(&series)).count();
        let all = self.value(&format!("{series}\"+Inf\"}}"))?;
        (buckets == LATENCY_BUCKETS.len() + 1).then_some(all as u64)
    }

    /// Checks requests timed (route, method, status class, count), series values, and the
    /// build-info gauge at `version`; the first mismatch is the error, with the whole text.
    pub fn check(
        &self,
        timed: &[(&str, &str, &str, u64)],
        values: &[(&str, f64)],
        version: &str,
    ) -> Result<(), String> {
        for (route, method, status, count) in timed {
            let got = self.requests_timed(route, method, status);
            if got != Some(*count) {
                return Err(format!(
                    "{method} {route} {status} timed {got:?}, not {count}:\n{self}"
                ));
            }
        }
        for (series, value) in values {
            let got = self.value(series);
            if got != Some(*value) {
                return Err(format!("{series} is {got:?}, not {value}:\n{self}"));
            }
        }
        match self.build_version() {
            Some(v) if v == version => Ok(()),
            other => Err(format!("build info {other:?}, not {version}:\n{self}")),
        }
    }

    /// The `version` label of the build-info gauge, if the gauge is there at 1.
    pub fn build_version(&self) -> Option<&str> {
        let prefix = format!("scrip_{}_build_info{{version=\"", self.service);
        self.text
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.strip_suffix("\"} 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_registry_renders_buckets_outcomes_and_build_info() {
        let mut builder = MetricsBuilder::new("test");
        let latency = builder.latency("wait_seconds", "A wait");
        let outcomes = builder.outcomes("things", "Things", &["good", "bad"]);
        let gauge = builder.gauge("depth", "A depth");
        latency.observe(Duration::from_micros(50));
        latency.observe(Duration::from_millis(3));
        outcomes.inc("good");
        gauge.set(7);
        let text = builder.build().encode().expect("encode");
        for line in [
            "# TYPE scrip_test_wait_seconds histogram",
            "scrip_test_wait_seconds_bucket{le=\"0.0001\"} 1",
            "scrip_test_wait_seconds_bucket{le=\"0.005\"} 2",
            "scrip_test_wait_seconds_bucket{le=\"+Inf\"} 2",
            "scrip_test_wait_seconds_count 2",
            "scrip_test_things_total{result=\"good\"} 1",
            "scrip_test_things_total{result=\"bad\"} 0",
            "scrip_test_depth 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        let m = Scrape::new("test", text);
        assert_eq!(m.build_version(), Some(env!("CARGO_PKG_VERSION")), "{m}");
        assert_eq!(m.value("scrip_test_depth"), Some(7.0));
    }

    #[tokio::test]
    async fn every_request_is_timed_by_route_template() {
        use tower::ServiceExt as _;
        let metrics = MetricsBuilder::new("test").build();
        let routes = Router::new().route("/things/{id}", axum::routing::get(|| async { "thing" }));
        let app = crate::server::finish(routes, 1024, Duration::from_secs(5), &metrics);
        for uri in ["/things/secret-id", "/nowhere"] {
            let request = axum::http::Request::get(uri)
                .body(axum::body::Body::empty())
                .expect("request");
            app.clone().oneshot(request).await.expect("answer");
        }
        let m = Scrape::new("test", metrics.encode().expect("encode"));
        assert_eq!(
            m.requests_timed("/things/{id}", "GET", "2xx"),
            Some(1),
            "{m}"
        );
        assert_eq!(m.requests_timed("unmatched", "GET", "4xx"), Some(1), "{m}");
        assert_eq!(m.requests_timed("/things/{id}", "GET", "4xx"), None, "{m}");
        assert!(!m.to_string().contains("secret-id"), "{m}");
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").expect("method")),
            "other"
        );
        assert_eq!(status_class(StatusCode::CONFLICT), "4xx");
        assert_eq!(status_class(StatusCode::SERVICE_UNAVAILABLE), "5xx");
    }
}
