//! `/healthz` and `/readiness` (Trow's paths) answer 200, whatever the layers below do, and so
//! does `/`, which Distribution answers and its Helm chart probes.
//!
//! ```
//! use donjon::middleware::HealthLayer;
//! # let _ = HealthLayer::new();
//! ```

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{header, HeaderValue, Method, Request, Response};
use tower_service::Service;

use crate::Body;

/// Answers `/healthz` and `/readiness` (Trow's paths) and `/` (Distribution's) with 200.
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
            "/healthz" | "/readiness" | "/"
                if req.method() == Method::GET || req.method() == Method::HEAD =>
            {
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

crate::middleware::layer_for!(Health, HealthLayer);
