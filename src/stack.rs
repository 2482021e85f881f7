//! The binary's outer layers around the [`Registry`](crate::Registry): request ids
//! (tower-http's `x-request-id`, set when the client sent none and echoed back), health
//! endpoints, panic recovery and the access log (one `tracing` line per request: method, path,
//! status, bytes, duration, request id), emitted when the response body ends, so a long blob
//! transfer is logged with its real size and duration.
//!
//! Panic recovery and the access log are donjon's own rather than tower-http's `CatchPanic` and
//! `Trace`: those box the response body a second time, and `Trace` cannot count a body's bytes.
//!
//! ```
//! use std::sync::Arc;
//! use donjon::{stack, Registry};
//! use donjon_core::memory::MemoryStore;
//!
//! let registry = Registry::builder(Arc::new(MemoryStore::default())).build();
//! let svc = stack::wrap(registry);
//! # let _ = svc;
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::{CatchUnwind, FutureExt};
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestId, SetRequestId};
use tower_service::Service;

use crate::{Body, BoxError, Error, ErrorCode};

/// The binary's outer layers, as one type.
pub type Wrapped<S> =
    SetRequestId<PropagateRequestId<AccessLog<ExtraHeaders<Health<CatchPanic<S>>>>>, MakeRequestUuid>;

/// Wraps a service in the binary's outer layers.
pub fn wrap<S>(inner: S) -> Wrapped<S> {
    wrap_with_headers(inner, Vec::new())
}

/// [`wrap`], adding `headers` to every response (Distribution's `http.headers`).
pub fn wrap_with_headers<S>(inner: S, headers: Vec<(HeaderName, HeaderValue)>) -> Wrapped<S> {
    let name = HeaderName::from_static("x-request-id");
    let inner = ExtraHeaders { inner: Health { inner: CatchPanic { inner } }, headers: headers.into() };
    SetRequestId::new(PropagateRequestId::new(AccessLog { inner }, name.clone()), name, MakeRequestUuid)
}

/// Adds configured headers to every response (Distribution's `http.headers`, e.g.
/// `X-Content-Type-Options: nosniff`); a header the response already has is left alone.
#[derive(Clone, Debug)]
pub struct ExtraHeaders<S> {
    inner: S,
    headers: std::sync::Arc<[(HeaderName, HeaderValue)]>,
}

impl<S, B> Service<Request<B>> for ExtraHeaders<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ExtraHeadersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ExtraHeadersFuture { fut: self.inner.call(req), headers: self.headers.clone() }
    }
}

pin_project! {
    /// The future of [`ExtraHeaders`].
    pub struct ExtraHeadersFuture<F> {
        #[pin]
        fut: F,
        headers: std::sync::Arc<[(HeaderName, HeaderValue)]>,
    }
}

impl<F> Future for ExtraHeadersFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = ready!(this.fut.poll(cx))?;
        for (k, v) in this.headers.iter() {
            if !resp.headers().contains_key(k) {
                resp.headers_mut().insert(k.clone(), v.clone());
            }
        }
        Poll::Ready(Ok(resp))
    }
}

/// Answers `/healthz` and `/readiness` (Trow's paths) with 200.
#[derive(Clone, Debug)]
pub struct Health<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Health<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = donjon_core::future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match req.uri().path() {
            "/healthz" | "/readiness" if req.method() == Method::GET || req.method() == Method::HEAD => {
                donjon_core::future::ResponseFuture::handled(async {
                    let mut r = Response::new(Body::from(r#"{"is_healthy":true,"message":"ok"}"#));
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    r
                })
            }
            _ => donjon_core::future::ResponseFuture::inner(self.inner.call(req)),
        }
    }
}

/// Turns a panic in a handler into a 500 with an OCI error body, instead of a dropped
/// connection.
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for CatchPanic<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let fut = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)));
        match fut {
            Ok(fut) => CatchPanicFuture::Running { fut: AssertUnwindSafe(fut).catch_unwind() },
            Err(_) => CatchPanicFuture::Panicked { done: false },
        }
    }
}

fn panic_response() -> Response<Body> {
    tracing::error!("a request handler panicked");
    Error::new(ErrorCode::Unknown, "internal error").into_response()
}

pin_project! {
    /// The future of [`CatchPanic`].
    #[project = CatchPanicProj]
    pub enum CatchPanicFuture<F> {
        /// The handler runs.
        Running { #[pin] fut: CatchUnwind<AssertUnwindSafe<F>> },
        /// `call` itself panicked.
        Panicked { done: bool },
    }
}

impl<F> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CatchPanicProj::Running { fut } => match ready!(fut.poll(cx)) {
                Ok(r) => Poll::Ready(r),
                Err(_) => Poll::Ready(Ok(panic_response())),
            },
            CatchPanicProj::Panicked { done } => {
                *done = true;
                Poll::Ready(Ok(panic_response()))
            }
        }
    }
}

/// Logs one line per request when its response body ends (or is dropped).
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
}

#[derive(Debug)]
struct Line {
    method: Method,
    path: String,
    status: StatusCode,
    start: Instant,
    request_id: Option<HeaderValue>,
}

impl<S, B> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<LoggedBody>;
    type Error = Infallible;
    type Future = AccessLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let line = Line {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            status: StatusCode::OK,
            start: Instant::now(),
            request_id: req.headers().get("x-request-id").cloned(),
        };
        AccessLogFuture { fut: self.inner.call(req), line: Some(line) }
    }
}

pin_project! {
    /// The future of [`AccessLog`].
    pub struct AccessLogFuture<F> {
        #[pin]
        fut: F,
        line: Option<Line>,
    }
}

impl<F> Future for AccessLogFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<LoggedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = ready!(this.fut.poll(cx))?;
        let mut line = this.line.take();
        if let Some(l) = &mut line {
            l.status = resp.status();
        }
        let head = line.as_ref().is_some_and(|l| l.method == Method::HEAD);
        let (parts, inner) = resp.into_parts();
        let expected = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut body = LoggedBody { inner: Some(inner), bytes: 0, expected, line };
        if body.is_end_stream() || head {
            // hyper will not poll an empty body, nor the body of a HEAD response: log now.
            body.finish(false);
        }
        let out = Response::from_parts(parts, body);
        Poll::Ready(Ok(out))
    }
}

/// A response body that counts its bytes and writes the access log line at its end.
#[derive(Debug)]
pub struct LoggedBody {
    inner: Option<Body>,
    bytes: u64,
    expected: Option<u64>,
    line: Option<Line>,
}

impl LoggedBody {
    fn finish(&mut self, aborted: bool) {
        if let Some(l) = self.line.take() {
            let ms = l.start.elapsed().as_secs_f64() * 1000.0;
            tracing::info!(
                target: "donjon::access",
                method = %l.method,
                path = %l.path,
                status = l.status.as_u16(),
                bytes = self.bytes,
                duration_ms = format_args!("{ms:.2}"),
                aborted,
                request_id = l.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
                "request"
            );
        }
    }
}

impl LoggedBody {
    /// Whether the transfer stopped early: hyper stops polling once `Content-Length` bytes are
    /// out; short of that, or still streaming without a length, the client went away.
    fn aborted(&self) -> bool {
        match self.expected {
            Some(n) => self.bytes < n && !self.is_end_stream(),
            None => !self.is_end_stream(),
        }
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                }
            }
            Some(Err(_)) => this.finish(true),
            None => this.finish(false),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or(SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let aborted = self.aborted();
        self.finish(aborted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        wrap(inner)
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
        let resp = wrap(inner).oneshot(req("GET", "/v2/big")).await.unwrap();
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
        let resp = wrap(inner).oneshot(req("GET", "/v2/")).await.unwrap();
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
        let resp = wrap_with_headers(inner, headers).oneshot(req("GET", "/v2/")).await.unwrap();
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        assert_eq!(resp.headers()["x-frame-options"], "SAMEORIGIN", "the response's own wins");
    }

    #[tokio::test]
    async fn health_endpoints() {
        let resp = svc(404, b"").oneshot(req("GET", "/healthz")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let resp = svc(404, b"").oneshot(req("GET", "/readiness")).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
}
