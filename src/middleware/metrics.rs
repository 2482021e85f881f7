//! `GET /metrics`: the process's Prometheus metrics (`donjon_core::metrics`) in the
//! OpenMetrics text format, on the main listener, or on a listener of its own when
//! Distribution's `http.debug.addr` is set (so that it need not be public).
//!
//! ```
//! use donjon::middleware::MetricsLayer;
//! # let _ = MetricsLayer::new("/metrics");
//! ```

use std::sync::Arc;

use donjon_core::claim::{Claim, Claimed, Claiming};
use http::{header, HeaderValue, Method, Request, Response};

use crate::Body;

/// The OpenMetrics text format's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Answers `GET` at its path with the metrics; passes every other request on.
pub type Metrics<S> = Claiming<MetricsLayer, S>;

/// The layer of [`Metrics`].
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    path: Arc<str>,
}

impl MetricsLayer {
    /// Serves the metrics at `path` (Distribution's `http.debug.prometheus.path`, `/metrics`).
    pub fn new(path: &str) -> Self {
        Self { path: path.into() }
    }
}

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Claiming::new(self.clone(), inner)
    }
}

/// The metrics as a response.
pub fn response() -> Response<Body> {
    let mut r = Response::new(Body::from(donjon_core::metrics::metrics().encode()));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}

impl<S, B> Claim<S, B> for MetricsLayer {
    fn claim(&self, req: Request<B>, _: &S) -> Claimed<B> {
        let read = req.method() == Method::GET || req.method() == Method::HEAD;
        if read && req.uri().path() == &*self.path {
            return Claimed::Respond(response());
        }
        Claimed::Pass(req)
    }
}

#[cfg(test)]
mod tests {
    /// Every metric the shipped Grafana dashboard queries is one donjon exports.
    #[test]
    fn the_dashboard_queries_only_metrics_that_exist() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../deploy/monitoring/donjon-dashboard.json")).unwrap();
        let exported = donjon_core::metrics::metrics().families();
        let mut seen = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if !word.starts_with("donjon_") {
                        continue;
                    }
                    seen += 1;
                    let base = ["_bucket", "_count", "_sum", "_total"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    assert!(
                        exported.iter().any(|f| f == base),
                        "the dashboard queries {word}, which donjon does not export"
                    );
                }
            }
        }
        assert!(seen >= 10, "{seen}");
    }
}
