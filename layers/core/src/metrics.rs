//! Prometheus metrics: one registry for the process, which every layer records into and
//! `/metrics` encodes (the OpenMetrics text format), with `prometheus-client`, the Prometheus
//! project's own Rust client: typed families, no global default registry of its own, no
//! macros, a small dependency.
//!
//! No label carries a repository name, so the number of series stays bounded whatever the
//! registry holds.
//!
//! ```
//! use donjon_core::metrics::metrics;
//!
//! metrics().record_request("manifest", "GET", 200, 1234, std::time::Duration::from_millis(3));
//! let text = metrics().encode();
//! assert!(text.contains(r#"donjon_http_requests_total{route="manifest",method="GET",status="200"} "#));
//! ```

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a request: what kind of route, which method, which status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `manifest`, `blob`, `upload`, … (`other` outside the registry's API).
    pub route: &'static str,
    /// `GET`, `PUT`, …
    pub method: String,
    /// The response status.
    pub status: u16,
}

/// Labels of a latency or byte count: the route kind and method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route kind.
    pub route: &'static str,
    /// The method.
    pub method: String,
}

/// Labels of a store operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `filesystem`, `s3`, `memory`.
    pub backend: &'static str,
    /// The `Store` method: `blob_read`, `manifest_put`, …
    pub op: &'static str,
}

/// The label of a notification endpoint: its configured name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// The endpoint's name.
    pub endpoint: String,
}

/// One label: a word.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The word.
    pub kind: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 0.5 ms … about 80 s
    Histogram::new(exponential_buckets(0.0005, 2.5, 14))
}

/// Every metric donjon keeps. Layers record through [`metrics`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    families: Vec<String>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabels>,
    bytes_out: Family<RouteLabels, Counter>,
    bytes_in: Family<RouteLabels, Counter>,
    /// Upload requests (`POST`, `PATCH`, `PUT` of sessions) being served now.
    pub uploads_in_flight: Gauge,
    store_seconds: Histograms<StoreLabels>,
    store_errors: Family<StoreLabels, Counter>,
    gc_runs: Family<KindLabel, Counter>,
    /// Bytes garbage collection freed.
    pub gc_freed_bytes: Counter,
    /// Blobs garbage collection freed.
    pub gc_freed_blobs: Counter,
    auth_refusals: Family<KindLabel, Counter>,
    proxy_requests: Family<KindLabel, Counter>,
    /// Bytes the pull-through cache fetched from upstreams.
    pub proxy_upstream_bytes: Counter,
    /// Cached manifests evicted.
    pub proxy_evicted: Counter,
    notifications_sent: Family<EndpointLabel, Counter>,
    notifications_failed: Family<EndpointLabel, Counter>,
    notifications_dropped: Family<EndpointLabel, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("donjon");
        let mut families: Vec<String> = vec![];
        macro_rules! register {
            ($name:literal, $help:literal, $metric:expr) => {{
                families.push(format!("donjon_{}", $name));
                registry.register($name, $help, $metric.clone());
            }};
        }
        let requests = Family::default();
        register!("http_requests", "Requests answered, by route kind, method and status", requests);
        let request_seconds: Histograms<RouteLabels> = Family::new_with_constructor(latency);
        register!(
            "http_request_duration_seconds",
            "Time from a request to the end of its response body",
            request_seconds
        );
        let bytes_out = Family::default();
        register!("http_response_bytes", "Response body bytes sent", bytes_out);
        let bytes_in = Family::default();
        register!("http_request_bytes", "Request body bytes announced (Content-Length)", bytes_in);
        let uploads_in_flight = Gauge::default();
        register!("upload_requests_in_flight", "Upload requests being served", uploads_in_flight);
        let store_seconds: Histograms<StoreLabels> = Family::new_with_constructor(latency);
        register!(
            "store_operation_duration_seconds",
            "Store operations, by backend and operation (to the first byte of a read)",
            store_seconds
        );
        let store_errors = Family::default();
        register!(
            "store_errors",
            "Store operations that failed other than by naming something absent",
            store_errors
        );
        let gc_runs = Family::default();
        register!("gc_runs", "Garbage collections, by result (ok, dry_run, error)", gc_runs);
        let gc_freed_bytes = Counter::default();
        register!("gc_freed_bytes", "Bytes garbage collection freed", gc_freed_bytes);
        let gc_freed_blobs = Counter::default();
        register!("gc_freed_blobs", "Blobs garbage collection freed", gc_freed_blobs);
        let auth_refusals = Family::default();
        register!(
            "auth_refusals",
            "Requests refused by the auth layer (unauthenticated, denied, bad_credentials, limited)",
            auth_refusals
        );
        let proxy_requests = Family::default();
        register!("proxy_requests", "Pull-through reads: manifest_cached, manifest_fetch, blob_cached, blob_fetch, stale (cached copy served, upstream failing)", proxy_requests);
        let proxy_upstream_bytes = Counter::default();
        register!("proxy_upstream_bytes", "Blob bytes fetched from upstreams", proxy_upstream_bytes);
        let proxy_evicted = Counter::default();
        register!("proxy_evicted_manifests", "Cached manifests evicted", proxy_evicted);
        let notifications_sent = Family::default();
        register!("notifications_sent", "Events an endpoint took", notifications_sent);
        let notifications_failed = Family::default();
        register!(
            "notifications_failed",
            "POSTs of events that failed (and are retried)",
            notifications_failed
        );
        let notifications_dropped = Family::default();
        register!(
            "notifications_dropped",
            "Events dropped, oldest first, for an endpoint too far behind",
            notifications_dropped
        );
        Self {
            registry,
            families,
            requests,
            request_seconds,
            bytes_out,
            bytes_in,
            uploads_in_flight,
            store_seconds,
            store_errors,
            gc_runs,
            gc_freed_bytes,
            gc_freed_blobs,
            auth_refusals,
            proxy_requests,
            proxy_upstream_bytes,
            proxy_evicted,
            notifications_sent,
            notifications_failed,
            notifications_dropped,
        }
    }

    /// A request answered: its route kind, method, status, response bytes and duration.
    pub fn record_request(&self, route: &'static str, method: &str, status: u16, bytes: u64, took: Duration) {
        let method = method.to_string();
        self.requests.get_or_create(&RequestLabels { route, method: method.clone(), status }).inc();
        let labels = RouteLabels { route, method };
        self.request_seconds.get_or_create(&labels).observe(took.as_secs_f64());
        if bytes > 0 {
            self.bytes_out.get_or_create(&labels).inc_by(bytes);
        }
    }

    /// A request body announced: its bytes.
    pub fn record_request_bytes(&self, route: &'static str, method: &str, bytes: u64) {
        self.bytes_in.get_or_create(&RouteLabels { route, method: method.to_string() }).inc_by(bytes);
    }

    /// A store operation done.
    pub fn record_store(&self, backend: &'static str, op: &'static str, took: Duration, failed: bool) {
        let labels = StoreLabels { backend, op };
        self.store_seconds.get_or_create(&labels).observe(took.as_secs_f64());
        if failed {
            self.store_errors.get_or_create(&labels).inc();
        }
    }

    /// A garbage collection run: `ok`, `dry_run` or `error`.
    pub fn record_gc(&self, result: &'static str) {
        self.gc_runs.get_or_create(&KindLabel { kind: result }).inc();
    }

    /// A refusal by the auth layer.
    pub fn record_auth_refusal(&self, kind: &'static str) {
        self.auth_refusals.get_or_create(&KindLabel { kind }).inc();
    }

    /// A pull-through read: `manifest_cached`, `manifest_fetch`, `blob_cached`, `blob_fetch`,
    /// `stale`.
    pub fn record_proxy(&self, kind: &'static str) {
        self.proxy_requests.get_or_create(&KindLabel { kind }).inc();
    }

    /// The names of every family (`donjon_http_requests`, …), whether or not it has a sample
    /// yet (the text format leaves out a family without one).
    pub fn families(&self) -> &[String] {
        &self.families
    }

    /// Events an endpoint took.
    pub fn record_notifications_sent(&self, endpoint: &str, n: u64) {
        self.notifications_sent.get_or_create(&EndpointLabel { endpoint: endpoint.to_string() }).inc_by(n);
    }

    /// A POST of events that failed.
    pub fn record_notifications_failed(&self, endpoint: &str) {
        self.notifications_failed.get_or_create(&EndpointLabel { endpoint: endpoint.to_string() }).inc();
    }

    /// Events dropped for an endpoint too far behind.
    pub fn record_notifications_dropped(&self, endpoint: &str, n: u64) {
        self.notifications_dropped.get_or_create(&EndpointLabel { endpoint: endpoint.to_string() }).inc_by(n);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("metrics could not be encoded: {e}");
        }
        out
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_encoded_with_its_help() {
        let m = metrics();
        m.record_request("blob", "GET", 200, 10, Duration::from_millis(2));
        m.record_store("filesystem", "blob_read", Duration::from_micros(300), true);
        m.record_gc("ok");
        m.gc_freed_bytes.inc_by(5);
        m.record_auth_refusal("unauthenticated");
        m.record_proxy("blob_fetch");
        let text = m.encode();
        for want in [
            "# HELP donjon_http_requests Requests answered",
            r#"donjon_http_requests_total{route="blob",method="GET",status="200"}"#,
            r#"donjon_http_request_duration_seconds_bucket{le="#,
            r#"donjon_http_response_bytes_total{route="blob",method="GET"} "#,
            r#"donjon_store_operation_duration_seconds_count{backend="filesystem",op="blob_read"} "#,
            r#"donjon_store_errors_total{backend="filesystem",op="blob_read"} "#,
            r#"donjon_gc_runs_total{kind="ok"} "#,
            "donjon_gc_freed_bytes_total ",
            r#"donjon_auth_refusals_total{kind="unauthenticated"} "#,
            r#"donjon_proxy_requests_total{kind="blob_fetch"} "#,
            "donjon_upload_requests_in_flight ",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }
}
