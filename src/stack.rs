//! The binary's outer layers around the [`Registry`](crate::Registry): health endpoints,
//! panic recovery and the access log (one `tracing` line per request: method, path, status,
//! bytes, duration), emitted when the response body ends, so a long blob transfer is logged
//! with its real size and duration.
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
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{Body, BoxError, Error, ErrorCode};

/// Wraps a service in the binary's outer layers.
pub fn wrap<S>(inner: S) -> AccessLog<Health<CatchPanic<S>>> {
    AccessLog { inner: Health { inner: CatchPanic { inner } } }
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
        let (parts, inner) = resp.into_parts();
        let expected = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut body = LoggedBody { inner: Some(inner), bytes: 0, expected, line };
        if body.is_end_stream() {
            // hyper will not poll an empty body: log now.
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
                "request"
            );
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
        // hyper stops polling once Content-Length bytes are out; short of that, or still
        // streaming without a length, the client went away mid-transfer.
        let aborted = match self.expected {
            Some(n) => self.bytes < n && !self.is_end_stream(),
            None => !self.is_end_stream(),
        };
        self.finish(aborted);
    }
}
