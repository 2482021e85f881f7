//! A panic in a handler becomes a 500 with an OCI error body, not a dropped connection.
//!
//! donjon's own rather than tower-http's `CatchPanic`, which boxes the response body a second
//! time.
//!
//! ```
//! use donjon::middleware::CatchPanicLayer;
//! # let _ = CatchPanicLayer::new();
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::future::{CatchUnwind, FutureExt};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{Body, Error, ErrorCode};

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

crate::middleware::layer_for!(CatchPanic, CatchPanicLayer);
