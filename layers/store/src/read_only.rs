//! Read-only mode (Distribution's `storage.maintenance.readonly`): while the switch is on,
//! every push and delete (the route's `Action::Push` and `Action::Delete`: upload sessions,
//! manifest PUT, mounts, DELETE) answers `UNSUPPORTED` (405) saying the registry is
//! read-only; pulls, tags, catalog and referrers work. The switch is shared, so it can be
//! turned without a restart (the binary turns it on `SIGHUP` from its configuration file).
//!
//! ```
//! use donjon_core::{Body, RouteLayer};
//! use donjon_store::{ReadOnlyLayer, ReadOnlySwitch};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let switch = ReadOnlySwitch::new(true);
//! let svc = ServiceBuilder::new()
//!     .layer(RouteLayer::new())
//!     .layer(ReadOnlyLayer::new(switch.clone()))
//!     .service(service_fn(|_req: http::Request<Body>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
//!     }));
//! let push = http::Request::post("/v2/a/blobs/uploads/").body(Body::empty()).unwrap();
//! assert_eq!(svc.clone().oneshot(push).await.unwrap().status(), 405);
//! switch.set(false);
//! let push = http::Request::post("/v2/a/blobs/uploads/").body(Body::empty()).unwrap();
//! assert_eq!(svc.oneshot(push).await.unwrap().status(), 200);
//! # });
//! ```

use http::Request;
use tower_layer::Layer;

use donjon_core::claim::{Claim, Claimed, Claiming};
pub use donjon_core::store::ReadOnlySwitch;
use donjon_core::{Action, Error, ErrorCode, Route};

/// Refuses writes while its switch is on. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct ReadOnlyLayer {
    switch: ReadOnlySwitch,
}

impl ReadOnlyLayer {
    /// A layer reading `switch`.
    pub fn new(switch: ReadOnlySwitch) -> Self {
        Self { switch }
    }
}

impl<S> Layer<S> for ReadOnlyLayer {
    type Service = ReadOnly<S>;

    fn layer(&self, inner: S) -> ReadOnly<S> {
        ReadOnly::new(self.clone(), inner)
    }
}

/// See [`ReadOnlyLayer`].
pub type ReadOnly<S> = Claiming<ReadOnlyLayer, S>;

impl<S, B> Claim<S, B> for ReadOnlyLayer {
    fn claim(&self, req: Request<B>, _: &S) -> Claimed<B> {
        let writes = req
            .extensions()
            .get::<Route>()
            .and_then(|r| r.action(req.method()))
            .is_some_and(|a| matches!(a, Action::Push | Action::Delete));
        if writes && self.switch.is_on() {
            let e = Error::new(
                ErrorCode::Unsupported,
                "the registry is read-only (storage.maintenance.readonly): pushes and deletes are refused, pulls work",
            );
            return Claimed::Respond(e.into_response());
        }
        Claimed::Pass(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use donjon_core::Body;
    use donjon_core::RouteLayer;
    use http::Response;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    #[tokio::test]
    async fn refuses_every_write_and_no_read() {
        let switch = ReadOnlySwitch::new(true);
        let svc = ServiceBuilder::new()
            .layer(RouteLayer::new())
            .layer(ReadOnlyLayer::new(switch.clone()))
            .service(service_fn(|_req: Request<Body>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
            }));
        let d = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let call = |method: &str, path: String| {
            let svc = svc.clone();
            let req = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
            async move { svc.oneshot(req).await.unwrap().status().as_u16() }
        };
        for (m, p) in [
            ("POST", "/v2/a/blobs/uploads/".to_string()),
            ("POST", format!("/v2/a/blobs/uploads/?mount={d}&from=b")),
            ("PATCH", "/v2/a/blobs/uploads/some-id".into()),
            ("PUT", "/v2/a/blobs/uploads/some-id?digest=x".into()),
            ("GET", "/v2/a/blobs/uploads/some-id".into()),
            ("PUT", "/v2/a/manifests/latest".into()),
            ("DELETE", "/v2/a/manifests/latest".into()),
            ("DELETE", format!("/v2/a/blobs/{d}")),
        ] {
            assert_eq!(call(m, p.clone()).await, 405, "{m} {p}");
        }
        for (m, p) in [
            ("GET", "/v2/".to_string()),
            ("GET", "/v2/a/manifests/latest".into()),
            ("HEAD", format!("/v2/a/blobs/{d}")),
            ("GET", "/v2/a/tags/list".into()),
            ("GET", "/v2/_catalog".into()),
            ("GET", format!("/v2/a/referrers/{d}")),
            ("GET", "/healthz".into()),
        ] {
            assert_eq!(call(m, p.clone()).await, 200, "{m} {p}");
        }
        assert!(switch.set(false));
        assert_eq!(call("PUT", "/v2/a/manifests/latest".into()).await, 200);
    }
}
