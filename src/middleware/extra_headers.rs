//! Distribution's `http.headers`: headers added to every response, the response's own value
//! winning.
//!
//! ```
//! use donjon::middleware::ExtraHeadersLayer;
//! use http::{HeaderName, HeaderValue};
//!
//! let layer = ExtraHeadersLayer::new(vec![(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"))]);
//! # let _ = layer;
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::Body;

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

impl<S> ExtraHeaders<S> {
    /// Adds `headers` to `inner`'s responses.
    pub fn new(inner: S, headers: Arc<[(HeaderName, HeaderValue)]>) -> Self {
        Self { inner, headers }
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

/// The layer of [`ExtraHeaders`].
#[derive(Clone, Debug, Default)]
pub struct ExtraHeadersLayer {
    headers: Arc<[(HeaderName, HeaderValue)]>,
}

impl ExtraHeadersLayer {
    /// Adds `headers` to every response.
    pub fn new(headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        Self { headers: headers.into() }
    }
}

impl<S> tower_layer::Layer<S> for ExtraHeadersLayer {
    type Service = ExtraHeaders<S>;

    fn layer(&self, inner: S) -> ExtraHeaders<S> {
        ExtraHeaders::new(inner, self.headers.clone())
    }
}
