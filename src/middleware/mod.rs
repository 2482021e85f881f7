//! The binary's outer middleware around the [`Registry`](crate::Registry): request ids
//! (tower-http's `x-request-id`, set when the client sent none and echoed back), the access log,
//! Distribution's `http.headers`, the health endpoints, `/metrics` and panic recovery, each a
//! tower `Layer` of its own, composed by [`wrap`] and erased once.
//!
//! ```
//! use std::sync::Arc;
//! use donjon::{middleware, Body, Registry};
//! use donjon_core::memory::MemoryStore;
//!
//! let registry = Registry::builder(Arc::new(MemoryStore::default())).build();
//! let svc: middleware::Wrapped<Body> = middleware::wrap(registry, vec![]);
//! # let _ = svc;
//! ```

use std::convert::Infallible;

use http::{HeaderName, HeaderValue, Request, Response};
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_service::Service;

use crate::Body;

/// `new`, `get_ref` and `into_inner` for a middleware service `$svc { inner }`, and `$layer`,
/// its `Layer` (tower-http's shape).
macro_rules! layer_for {
    ($svc:ident, $layer:ident) => {
        impl<S> $svc<S> {
            /// Wraps `inner`.
            pub fn new(inner: S) -> Self {
                Self { inner }
            }

            /// The wrapped service.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }

            /// Unwraps it.
            pub fn into_inner(self) -> S {
                self.inner
            }
        }

        #[doc = concat!("The layer of [`", stringify!($svc), "`].")]
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $layer;

        impl $layer {
            /// The layer.
            pub fn new() -> Self {
                Self
            }
        }

        impl<S> tower_layer::Layer<S> for $layer {
            type Service = $svc<S>;

            fn layer(&self, inner: S) -> $svc<S> {
                $svc::new(inner)
            }
        }
    };
}
pub(crate) use layer_for;

pub mod access_log;
pub mod catch_panic;
pub mod extra_headers;
pub mod health;
pub mod metrics;

pub use access_log::{AccessLog, AccessLogLayer, LoggedBody};
pub use catch_panic::{CatchPanic, CatchPanicLayer};
pub use extra_headers::{ExtraHeaders, ExtraHeadersLayer};
pub use health::{Health, HealthLayer};
pub use metrics::{Metrics, MetricsLayer};

/// A service wrapped in the outer middleware, over requests with body `B`.
pub type Wrapped<B> = BoxCloneSyncService<Request<B>, Response<LoggedBody>, Infallible>;

/// Wraps `inner` in the outer middleware, outermost first: request id, access log, `headers`
/// (Distribution's `http.headers`) on every response, health endpoints, `GET /metrics`, panic
/// recovery.
pub fn wrap<S, B>(inner: S, headers: Vec<(HeaderName, HeaderValue)>) -> Wrapped<B>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    wrap_with(inner, headers, Some("/metrics"), None)
}

/// [`wrap`], with the metrics at `metrics_path`, or not on this listener (`None`: the binary
/// serves them on `http.debug.addr` instead), and event notifications when `events` is given.
pub fn wrap_with<S, B>(
    inner: S,
    headers: Vec<(HeaderName, HeaderValue)>,
    metrics_path: Option<&str>,
    events: Option<crate::notify::EventsLayer>,
) -> Wrapped<B>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    let name = HeaderName::from_static("x-request-id");
    let stack = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(name.clone(), MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(name))
        .layer(AccessLogLayer::new())
        .layer(ExtraHeadersLayer::new(headers))
        .layer(HealthLayer::new())
        .option_layer(metrics_path.map(MetricsLayer::new))
        .option_layer(events)
        .layer(CatchPanicLayer::new())
        .service(inner);
    BoxCloneSyncService::new(stack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;
    use bytes::Bytes;
    use http::{header, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn svc(
        status: u16,
        body: &'static [u8],
    ) -> impl Service<Request<Body>, Response = Response<LoggedBody>, Error = Infallible> {
        let inner = tower::service_fn(move |_req: Request<Body>| async move {
            let mut r = Response::new(Body::from(Bytes::from_static(body)));
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            Ok::<_, Infallible>(r)
        });
        wrap(inner, vec![])
    }

    fn req(method: &str, path: &str) -> Request<Body> {
        Request::builder().method(method).uri(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn head_is_logged_at_once_and_not_as_aborted() {
        let resp = svc(404, b"{\"errors\":[]}").oneshot(req("HEAD", "/v2/x/blobs/y")).await.unwrap();
        assert!(resp.body().line.is_none(), "logged when the response was ready");
    }

    #[tokio::test]
    async fn a_body_read_to_its_length_is_complete() {
        let resp = svc(200, b"abcdef").oneshot(req("GET", "/v2/x")).await.unwrap();
        let mut body = resp.into_body();
        while let Some(f) = body.frame().await {
            f.unwrap();
        }
        assert_eq!(body.bytes, 6);
        assert!(!body.aborted());
    }

    #[tokio::test]
    async fn a_body_dropped_half_way_is_aborted() {
        let inner = tower::service_fn(move |_req: Request<Body>| async move {
            let chunks: Vec<Result<Bytes, BoxError>> =
                vec![Ok(Bytes::from_static(b"abc")), Ok(Bytes::from_static(b"def"))];
            let mut r = Response::new(Body::from_stream(Box::pin(futures_util::stream::iter(chunks))));
            r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(6));
            Ok::<_, Infallible>(r)
        });
        let resp = wrap(inner, vec![]).oneshot(req("GET", "/v2/big")).await.unwrap();
        let mut body = resp.into_body();
        body.frame().await.unwrap().unwrap();
        assert!(body.aborted());
    }

    #[tokio::test]
    async fn panics_become_500() {
        let inner = tower::service_fn(|_req: Request<Body>| async {
            if true {
                panic!("boom");
            }
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let resp = wrap(inner, vec![]).oneshot(req("GET", "/v2/")).await.unwrap();
        assert_eq!(resp.status(), 500);
    }

    #[tokio::test]
    async fn request_ids_are_set_and_kept() {
        let resp = svc(200, b"").oneshot(req("GET", "/v2/")).await.unwrap();
        assert_eq!(resp.headers()["x-request-id"].len(), 36);
        let mut r = req("GET", "/v2/");
        r.headers_mut().insert("x-request-id", HeaderValue::from_static("mine"));
        let resp = svc(200, b"").oneshot(r).await.unwrap();
        assert_eq!(resp.headers()["x-request-id"], "mine");
    }

    #[tokio::test]
    async fn configured_headers_are_added() {
        let inner = tower::service_fn(|_req: Request<Body>| async {
            let mut r = Response::new(Body::empty());
            r.headers_mut().insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
            Ok::<_, Infallible>(r)
        });
        let headers = vec![
            (HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff")),
            (HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY")),
        ];
        let resp = wrap(inner, headers).oneshot(req("GET", "/v2/")).await.unwrap();
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        assert_eq!(resp.headers()["x-frame-options"], "SAMEORIGIN", "the response's own wins");
    }

    #[tokio::test]
    async fn health_endpoints() {
        let resp = svc(404, b"").oneshot(req("GET", "/healthz")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let resp = svc(404, b"").oneshot(req("GET", "/readiness")).await.unwrap();
        assert_eq!(resp.status(), 200);
        // Distribution's, which its Helm chart probes.
        let resp = svc(404, b"").oneshot(req("GET", "/")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let resp = svc(404, b"").oneshot(req("GET", "/other")).await.unwrap();
        assert_eq!(resp.status(), 404);
    }
}
