//! The access log: one `tracing` line per request (method, path, status, bytes, duration,
//! request id), written when the response body ends or is dropped, so that a long blob transfer
//! is logged with its real size and duration, and a transfer the client abandoned says so.
//! The same moment records the request's metrics (route kind, method, status, bytes,
//! duration; `donjon_core::metrics`).
//!
//! donjon's own rather than tower-http's `Trace`, which cannot count a body's bytes and boxes
//! the body again. The request id comes from tower-http's `RequestId` extension (set by
//! `SetRequestIdLayer` outside this layer).
//!
//! ```
//! use donjon::middleware::AccessLogLayer;
//! # let _ = AccessLogLayer::new();
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_http::request_id::RequestId;
use tower_service::Service;

use crate::{Body, BoxError};

/// Logs one line per request when its response body ends (or is dropped).
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
}

#[derive(Debug)]
pub(super) struct Line {
    method: Method,
    path: String,
    status: StatusCode,
    start: Instant,
    request_id: Option<HeaderValue>,
    /// The route kind the registry stamped on the response (`other` outside its API).
    route: &'static str,
    /// The request body's announced length.
    request_bytes: Option<u64>,
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
            request_id: req.extensions().get::<RequestId>().map(|id| id.header_value().clone()),
            route: "other",
            request_bytes: req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
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
            if let Some(k) = resp.extensions().get::<donjon_core::route::RouteKind>() {
                l.route = k.0;
            }
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
    pub(super) bytes: u64,
    expected: Option<u64>,
    pub(super) line: Option<Line>,
}

impl LoggedBody {
    fn finish(&mut self, aborted: bool) {
        if let Some(l) = self.line.take() {
            let took = l.start.elapsed();
            let m = donjon_core::metrics::metrics();
            m.record_request(l.route, l.method.as_str(), l.status.as_u16(), self.bytes, took);
            if let Some(n) = l.request_bytes.filter(|n| *n > 0) {
                m.record_request_bytes(l.route, l.method.as_str(), n);
            }
            let ms = took.as_secs_f64() * 1000.0;
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
    pub(super) fn aborted(&self) -> bool {
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

crate::middleware::layer_for!(AccessLog, AccessLogLayer);
