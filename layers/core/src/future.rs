//! The response future of [`Claiming`](crate::claim::Claiming), every registry layer's
//! service: the inner service's future (the request was not for this layer), an answer made at
//! once, this layer's own handler, or a boxed future that may still pass the request on (a
//! layer that must wait before it decides, as the auth layer does for a bcrypt check).
//!
//! ```
//! use donjon_core::future::ResponseFuture;
//! use donjon_core::Body;
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let f: ResponseFuture<std::future::Ready<Result<http::Response<Body>, ()>>> =
//!     ResponseFuture::handled(async { http::Response::new(Body::empty()) });
//! assert_eq!(f.await.unwrap().status(), 200);
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use crate::body::Body;

/// A boxed handler future.
pub type Handler = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

pin_project! {
    /// See the module docs.
    #[project = Proj]
    pub enum ResponseFuture<F: Future> {
        /// Passed on to the inner service.
        Inner { #[pin] fut: F },
        /// Answered at once by this layer.
        Ready { #[pin] fut: std::future::Ready<Response<Body>> },
        /// Handled by this layer.
        Handled { fut: Handler },
        /// Decided after a wait: answered here, or passed on.
        Deferred { fut: Pin<Box<dyn Future<Output = F::Output> + Send>> },
    }
}

impl<F: Future> ResponseFuture<F> {
    /// The inner service's future.
    pub fn inner(fut: F) -> Self {
        Self::Inner { fut }
    }

    /// An answer already made (a refusal): no allocation.
    pub fn ready(resp: Response<Body>) -> Self {
        Self::Ready { fut: std::future::ready(resp) }
    }

    /// This layer's handler.
    pub fn handled(fut: impl Future<Output = Response<Body>> + Send + 'static) -> Self {
        Self::Handled { fut: Box::pin(fut) }
    }

    /// A future that may answer or call the inner service (which it then owns) itself.
    pub fn deferred(fut: impl Future<Output = F::Output> + Send + 'static) -> Self {
        Self::Deferred { fut: Box::pin(fut) }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Inner { fut } => fut.poll(cx),
            Proj::Ready { fut } => fut.poll(cx).map(Ok),
            Proj::Handled { fut } => fut.as_mut().poll(cx).map(Ok),
            Proj::Deferred { fut } => fut.as_mut().poll(cx),
        }
    }
}
