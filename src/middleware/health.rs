//! `/healthz` and `/readiness` (Trow's paths) answer 200, whatever the layers below do, and so
//! does `/`, which Distribution answers and its Helm chart probes.
//!
//! ```
//! use donjon::middleware::HealthLayer;
//! # let _ = HealthLayer::new();
//! ```

use donjon_core::claim::{Claim, Claimed, Claiming};
use http::{header, HeaderValue, Method, Request, Response};

use crate::Body;

/// Answers `/healthz` and `/readiness` (Trow's paths) and `/` (Distribution's) with 200.
pub type Health<S> = Claiming<HealthLayer, S>;

/// The layer of [`Health`].
#[derive(Clone, Copy, Debug, Default)]
pub struct HealthLayer;

impl HealthLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> tower_layer::Layer<S> for HealthLayer {
    type Service = Health<S>;

    fn layer(&self, inner: S) -> Health<S> {
        Claiming::new(*self, inner)
    }
}

impl<S, B> Claim<S, B> for HealthLayer {
    fn claim(&self, req: Request<B>, _: &S) -> Claimed<B> {
        let read = req.method() == Method::GET || req.method() == Method::HEAD;
        if !(read && matches!(req.uri().path(), "/healthz" | "/readiness" | "/")) {
            return Claimed::Pass(req);
        }
        let mut r = Response::new(Body::from(r#"{"is_healthy":true,"message":"ok"}"#));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Claimed::Respond(r)
    }
}
