//! The auth layer's response future: the inner service's future when the decision needed no
//! wait (a cached token, an anonymous caller), a boxed one when it did (a bcrypt check, the
//! token endpoint).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use donjon_core::Body;
use http::Response;
use pin_project_lite::pin_project;

/// A boxed future of the same output.
pub type Boxed<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

pin_project! {
    /// The future of [`Auth`](crate::Auth).
    #[project = Proj]
    pub enum AuthFuture<F, E> {
        /// Passed on at once.
        Inner { #[pin] fut: F },
        /// Decided after a wait, or answered here.
        Boxed { fut: Boxed<E> },
    }
}

impl<F, E> Future for AuthFuture<F, E>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Inner { fut } => fut.poll(cx),
            Proj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}
