//! The one shape of a registry layer's service: a [`Claim`] looks at each request and answers
//! it, refuses it, or passes it on (at once, or after a wait); [`Claiming`] is the one
//! `tower::Service` that does `poll_ready` and `call` around it. tower-http's
//! `ValidateRequest` and `AsyncAuthorizeRequest` are the models: the policy is a plain value,
//! the service is generic.
//!
//! ```
//! use std::convert::Infallible;
//! use donjon_core::claim::{Claim, Claimed, Claiming};
//! use donjon_core::Body;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceExt};
//!
//! /// Answers `/ping`; everything else goes on.
//! #[derive(Clone)]
//! struct Ping;
//!
//! impl<S, B> Claim<S, B> for Ping {
//!     fn claim(&self, req: Request<B>, _inner: &S) -> Claimed<B> {
//!         if req.uri().path() != "/ping" {
//!             return Claimed::Pass(req);
//!         }
//!         Claimed::answer(async { Response::new(Body::from("pong")) })
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let below = service_fn(|_: Request<Body>| async {
//!     let mut r = Response::new(Body::empty());
//!     *r.status_mut() = StatusCode::NOT_FOUND;
//!     Ok::<_, Infallible>(r)
//! });
//! let svc = Claiming::new(Ping, below);
//! let ping = Request::get("/ping").body(Body::empty()).unwrap();
//! assert_eq!(svc.clone().oneshot(ping).await.unwrap().status(), 200);
//! let other = Request::get("/other").body(Body::empty()).unwrap();
//! assert_eq!(svc.oneshot(other).await.unwrap().status(), 404);
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::body::Body;
use crate::future::{Handler, ResponseFuture};

/// What a layer does with one request. Implemented by each layer's policy (usually the layer
/// value itself, an `Arc` of what its services share); `inner` is the service below, for a
/// layer that sends requests of its own through it (the web page's sub-requests).
pub trait Claim<S, B> {
    /// Answers `req` here, or gives it back (changed or not) for the service below.
    fn claim(&self, req: Request<B>, inner: &S) -> Claimed<B>;
}

/// A future that decides after a wait: the request to pass on, or the answer.
pub type Decision<B> = Pin<Box<dyn Future<Output = Result<Request<B>, Response<Body>>> + Send>>;

/// See [`Claim::claim`].
pub enum Claimed<B> {
    /// Not this layer's, or allowed through: the service below answers.
    Pass(Request<B>),
    /// Answered at once (a refusal, mostly).
    Respond(Response<Body>),
    /// Answered by this layer's handler.
    Answer(Handler),
    /// Decided after a wait (a password check, a fetch from an upstream): answered, or passed
    /// on to the service that was polled ready.
    Later(Decision<B>),
}

impl<B> Claimed<B> {
    /// This layer's handler answers.
    pub fn answer(fut: impl Future<Output = Response<Body>> + Send + 'static) -> Self {
        Self::Answer(Box::pin(fut))
    }

    /// `fut` decides: `Ok(request)` passes it on, `Err(response)` answers.
    pub fn later(fut: impl Future<Output = Result<Request<B>, Response<Body>>> + Send + 'static) -> Self {
        Self::Later(Box::pin(fut))
    }
}

/// The service of every layer that claims some requests and passes the rest: `claim` decides,
/// `inner` answers what is passed on.
#[derive(Clone, Debug)]
pub struct Claiming<C, S> {
    claim: C,
    inner: S,
}

impl<C, S> Claiming<C, S> {
    /// `claim` in front of `inner`.
    pub fn new(claim: C, inner: S) -> Self {
        Self { claim, inner }
    }

    /// The service below.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The service below, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The policy.
    pub fn claim(&self) -> &C {
        &self.claim
    }
}

impl<C, S, B> Service<Request<B>> for Claiming<C, S>
where
    C: Claim<S, B>,
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.claim.claim(req, &self.inner) {
            Claimed::Pass(req) => ResponseFuture::inner(self.inner.call(req)),
            Claimed::Respond(resp) => ResponseFuture::ready(resp),
            Claimed::Answer(fut) => ResponseFuture::Handled { fut },
            Claimed::Later(decision) => {
                // The service that was polled ready goes into the future; a clone stays.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::deferred(async move {
                    match decision.await {
                        Ok(req) => inner.call(req).await,
                        Err(resp) => Ok(resp),
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tower::ServiceExt;

    /// `/wait` decides after a wait; `/no` is refused; `/x-*` gets a header and goes on.
    #[derive(Clone)]
    struct Policy;

    impl<S, B: Send + 'static> Claim<S, B> for Policy {
        fn claim(&self, mut req: Request<B>, _: &S) -> Claimed<B> {
            match req.uri().path() {
                "/no" => Claimed::Respond(Response::builder().status(403).body(Body::empty()).unwrap()),
                "/wait/yes" => Claimed::later(async move {
                    tokio::task::yield_now().await;
                    Ok(req)
                }),
                "/wait/no" => Claimed::later(async move {
                    tokio::task::yield_now().await;
                    Err(Response::builder().status(401).body(Body::empty()).unwrap())
                }),
                _ => {
                    req.headers_mut().insert("x-seen", http::HeaderValue::from_static("1"));
                    Claimed::Pass(req)
                }
            }
        }
    }

    /// Only what is passed on reaches the service below, with what the claim added, and a
    /// deferred pass uses the service that was polled ready.
    #[tokio::test]
    async fn what_is_passed_on_reaches_the_service_below() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let below = tower::service_fn(move |req: Request<Body>| {
            seen.fetch_add(1, Ordering::SeqCst);
            let marked = req.headers().contains_key("x-seen");
            async move { Ok::<_, Infallible>(Response::new(Body::from(if marked { "marked" } else { "plain" }))) }
        });
        let svc = Claiming::new(Policy, below);
        let status = |path: &'static str| {
            let svc = svc.clone();
            async move {
                let r = svc.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
                let status = r.status().as_u16();
                let body = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        assert_eq!(status("/no").await, (403, String::new()));
        assert_eq!(status("/wait/no").await, (401, String::new()));
        assert_eq!(calls.load(Ordering::SeqCst), 0, "refusals never reach the service below");
        assert_eq!(status("/wait/yes").await, (200, "plain".into()));
        assert_eq!(status("/x").await, (200, "marked".into()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
