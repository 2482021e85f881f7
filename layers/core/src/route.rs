//! The path is parsed once, here, into a [`Route`] that travels in the request's extensions.
//!
//! Repository names contain `/`, so the parser works from the right end of the path. Names,
//! tags and digests are checked against the spec's grammar; a malformed `/v2/` path is answered
//! with `NAME_INVALID`, `DIGEST_INVALID` or `TAG_INVALID` right here. Paths outside `/v2/` pass
//! through without a route, to whatever the stack falls back to.
//!
//! ```
//! use donjon_core::{Route, route::parse};
//!
//! let route = parse("/v2/library/busybox/manifests/latest").unwrap().unwrap();
//! assert!(matches!(route, Route::Manifest { .. }));
//! assert_eq!(route.name().unwrap().as_str(), "library/busybox");
//! assert!(parse("/healthz").unwrap().is_none());
//! assert!(parse("/v2/../etc/tags/list").is_err());
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::Body;
use crate::digest::{Digest, DigestError};
use crate::error::{Error, ErrorCode};
use crate::mirror::Mirrors;
use crate::name::{Name, Reference, ReferenceError};
use crate::{API_VERSION, API_VERSION_HEADER};

/// A registry endpoint, parsed from the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/token`: the token endpoint (the realm of the Docker token flow), answered by an
    /// auth layer; a 404 without one.
    Token,
    /// `/v2/<name>/tags/list`
    Tags {
        /// Repository.
        name: Name,
    },
    /// `/v2/<name>/manifests/<reference>`
    Manifest {
        /// Repository.
        name: Name,
        /// Tag or digest.
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`
    Blob {
        /// Repository.
        name: Name,
        /// Digest.
        digest: Digest,
    },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart {
        /// Repository.
        name: Name,
    },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload {
        /// Repository.
        name: Name,
        /// Session id.
        id: String,
    },
    /// `/v2/<name>/referrers/<digest>`
    Referrers {
        /// Repository.
        name: Name,
        /// The subject.
        digest: Digest,
    },
}

impl Route {
    /// The same route on another repository.
    pub fn with_name(self, new: Name) -> Self {
        match self {
            Self::Base | Self::Catalog | Self::Token => self,
            Self::Tags { .. } => Self::Tags { name: new },
            Self::Manifest { reference, .. } => Self::Manifest { name: new, reference },
            Self::Blob { digest, .. } => Self::Blob { name: new, digest },
            Self::UploadStart { .. } => Self::UploadStart { name: new },
            Self::Upload { id, .. } => Self::Upload { name: new, id },
            Self::Referrers { digest, .. } => Self::Referrers { name: new, digest },
        }
    }

    /// The kind of endpoint, for metrics: `base`, `catalog`, `token`, `tags`, `manifest`,
    /// `blob`, `upload`, `referrers`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Catalog => "catalog",
            Self::Token => "token",
            Self::Tags { .. } => "tags",
            Self::Manifest { .. } => "manifest",
            Self::Blob { .. } => "blob",
            Self::UploadStart { .. } | Self::Upload { .. } => "upload",
            Self::Referrers { .. } => "referrers",
        }
    }

    /// The repository the route addresses, if any.
    pub fn name(&self) -> Option<&Name> {
        match self {
            Self::Base | Self::Catalog | Self::Token => None,
            Self::Tags { name }
            | Self::Manifest { name, .. }
            | Self::Blob { name, .. }
            | Self::UploadStart { name }
            | Self::Upload { name, .. }
            | Self::Referrers { name, .. } => Some(name),
        }
    }
}

fn name_of(s: &str) -> Result<Name, Error> {
    s.parse().map_err(|e: crate::name::NameError| Error::new(ErrorCode::NameInvalid, e.to_string()))
}

fn digest_of(s: &str) -> Result<Digest, Error> {
    s.parse().map_err(|e: DigestError| digest_error(e))
}

fn digest_error(e: DigestError) -> Error {
    Error::new(ErrorCode::DigestInvalid, e.to_string())
}

/// Parses a request path. `Ok(None)`: not a registry path. `Err`: a registry path whose name,
/// tag or digest breaks the grammar.
pub fn parse(path: &str) -> Result<Option<Route>, Error> {
    let Some(rest) = path.strip_prefix("/v2") else {
        return Ok(None);
    };
    if rest.is_empty() || rest == "/" {
        return Ok(Some(Route::Base));
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Ok(None);
    };
    if rest == "_catalog" {
        return Ok(Some(Route::Catalog));
    }
    if rest == "token" {
        return Ok(Some(Route::Token));
    }
    if rest.contains('%') {
        // Names, tags, digests and ids never need escapes; an escape can only smuggle in
        // `/` or `..`.
        return Err(Error::new(
            ErrorCode::NameInvalid,
            "percent-encoded characters are not allowed in registry paths",
        ));
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name_upto = |k: usize| -> Result<Name, Error> {
        if k == 0 {
            return Err(Error::new(ErrorCode::NameInvalid, "missing repository name"));
        }
        let joined = segs[..k].join("/");
        // `f/<host>:<port>/…`: the port's `:` is spelled `__` in names (see `mirror`).
        match (segs[0], segs.get(1)) {
            ("f", Some(host)) if k > 2 && host.contains(':') => {
                name_of(&format!("f/{}/{}", crate::mirror::canonical_host(host), segs[2..k].join("/")))
            }
            _ => name_of(&joined),
        }
    };
    // Longest suffixes first: `blobs/uploads/` and `blobs/uploads/<id>` before `blobs/<digest>`.
    if n >= 3 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let name = name_upto(n - 3)?;
        let id = segs[n - 1];
        if id.is_empty() {
            return Ok(Some(Route::UploadStart { name }));
        }
        if !crate::store::valid_upload_id(id) {
            return Err(Error::new(ErrorCode::BlobUploadUnknown, "invalid upload id"));
        }
        return Ok(Some(Route::Upload { name, id: id.to_string() }));
    }
    if n >= 2 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Ok(Some(Route::UploadStart { name: name_upto(n - 2)? }));
    }
    if n >= 2 {
        let (kind, last) = (segs[n - 2], segs[n - 1]);
        match kind {
            "tags" if last == "list" => return Ok(Some(Route::Tags { name: name_upto(n - 2)? })),
            "manifests" => {
                let name = name_upto(n - 2)?;
                let reference = last.parse().map_err(|e: ReferenceError| match e {
                    ReferenceError::Digest(d) => digest_error(d),
                    ReferenceError::Tag(t) => Error::new(ErrorCode::TagInvalid, t.to_string()),
                })?;
                return Ok(Some(Route::Manifest { name, reference }));
            }
            "blobs" => {
                let name = name_upto(n - 2)?;
                return Ok(Some(Route::Blob { name, digest: digest_of(last)? }));
            }
            "referrers" => {
                let name = name_upto(n - 2)?;
                return Ok(Some(Route::Referrers { name, digest: digest_of(last)? }));
            }
            _ => {}
        }
    }
    Err(Error::new(ErrorCode::NameUnknown, "no registry endpoint at this path")
        .with_status(http::StatusCode::NOT_FOUND))
}

/// Parses the path of every request into a [`Route`] in its extensions; answers malformed
/// registry paths itself; stamps `Docker-Distribution-API-Version` on every registry response.
///
/// ```
/// use donjon_core::{Route, RouteLayer, Body};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let svc = ServiceBuilder::new().layer(RouteLayer::new()).service(service_fn(
///     |req: http::Request<Body>| async move {
///         let found = req.extensions().get::<Route>().is_some();
///         Ok::<_, std::convert::Infallible>(http::Response::new(Body::from(found.to_string())))
///     },
/// ));
/// let resp = svc.oneshot(http::Request::get("/v2/").body(Body::empty()).unwrap()).await.unwrap();
/// assert_eq!(resp.headers()["docker-distribution-api-version"], "registry/2.0");
/// # });
/// ```
#[derive(Clone, Debug, Default)]
pub struct RouteLayer {
    mirrors: Option<Arc<Mirrors>>,
}

impl RouteLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `?ns=<host>` requests for the hosts `mirrors` accepts to their pull-through
    /// namespace (`f/<host>/<name>`), as a containerd mirror needs. Without it `ns` is
    /// ignored. Trow's `f/docker/…` and Docker Hub's single names are made canonical either
    /// way (see [`crate::mirror`]).
    pub fn mirrors(mut self, mirrors: Mirrors) -> Self {
        self.mirrors = Some(Arc::new(mirrors));
        self
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = RouteService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteService { inner, mirrors: self.mirrors.clone() }
    }
}

/// What a request does to a repository: the rights an auth layer checks, and how the other
/// layers tell which requests are theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read blobs, manifests, tags, referrers.
    Pull,
    /// Upload blobs, push manifests and tags, mount.
    Push,
    /// Delete blobs, manifests, tags.
    Delete,
    /// List the repositories (`/v2/_catalog`).
    Catalog,
}

impl Action {
    /// The action's name in a token scope (`repository:<name>:pull,push`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::Delete => "delete",
            Self::Catalog => "*",
        }
    }
}

impl Route {
    /// What `method` on this route does; `None` for `/v2/` (which needs no right) and for
    /// methods the route does not take.
    ///
    /// ```
    /// use donjon_core::route::{parse, Action};
    /// use http::Method;
    ///
    /// let r = parse("/v2/a/manifests/v1").unwrap().unwrap();
    /// assert_eq!(r.action(&Method::GET), Some(Action::Pull));
    /// assert_eq!(r.action(&Method::PUT), Some(Action::Push));
    /// assert_eq!(r.action(&Method::DELETE), Some(Action::Delete));
    /// assert_eq!(r.action(&Method::PATCH), None);
    /// ```
    pub fn action(&self, method: &http::Method) -> Option<Action> {
        use http::Method;
        let read = method == Method::GET || method == Method::HEAD;
        match self {
            Self::Base => None,
            Self::Catalog if read => Some(Action::Catalog),
            Self::Tags { .. } | Self::Referrers { .. } if read => Some(Action::Pull),
            Self::Manifest { .. } | Self::Blob { .. } if read => Some(Action::Pull),
            Self::Manifest { .. } if method == Method::PUT => Some(Action::Push),
            Self::Manifest { .. } | Self::Blob { .. } if method == Method::DELETE => Some(Action::Delete),
            Self::UploadStart { .. } if method == Method::POST => Some(Action::Push),
            Self::Upload { .. }
                if [Method::GET, Method::PATCH, Method::PUT, Method::DELETE].contains(method) =>
            {
                Some(Action::Push)
            }
            _ => None,
        }
    }
}

/// The service of [`RouteLayer`].
#[derive(Clone, Debug)]
pub struct RouteService<S> {
    inner: S,
    mirrors: Option<Arc<Mirrors>>,
}

impl<S, B> Service<Request<B>> for RouteService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = RouteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match parse(req.uri().path()) {
            Ok(None) => RouteFuture::Inner { fut: self.inner.call(req), route: None },
            Ok(Some(mut route)) => {
                if let Some(name) = route.name() {
                    let ns = self.mirrors.as_ref().and_then(|m| {
                        crate::response::query_param(req.uri(), "ns").and_then(|ns| m.rewrite(&ns, name))
                    });
                    if let Some(new) = ns.or_else(|| crate::mirror::canonical(name)) {
                        route = route.with_name(new);
                    }
                }
                req.extensions_mut().insert(route.clone());
                RouteFuture::Inner { fut: self.inner.call(req), route: Some(route) }
            }
            Err(e) => {
                // A reference that is not a valid tag names no manifest: reads answer 404
                // (what clients and the conformance suite expect), writes TAG_INVALID.
                let e = if e.code() == ErrorCode::TagInvalid && req.method() != http::Method::PUT {
                    Error::new(ErrorCode::ManifestUnknown, e.message().to_string())
                } else {
                    e
                };
                let mut resp = stamp(e.into_response());
                resp.extensions_mut().insert(RouteKind("invalid"));
                RouteFuture::Ready { resp: Some(resp) }
            }
        }
    }
}

/// The kind of route a response answered ([`Route::kind`], or `invalid` for a path the
/// parser refused), in the response's extensions (beside the [`Route`] itself): what metrics
/// label a request with, and what event notifications describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteKind(pub &'static str);

/// The headers of every registry response: the API version, and what keeps a browser from
/// reading manifests and blobs as pages (`nosniff`, and a policy that allows nothing to run).
/// A layer's own value of either wins.
fn stamp(mut resp: Response<Body>) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert(API_VERSION_HEADER, HeaderValue::from_static(API_VERSION));
    h.entry(http::header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    h.entry(http::header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static("default-src 'none'; sandbox"));
    resp
}

pin_project! {
    /// The future of [`RouteService`].
    #[project = RouteFutureProj]
    pub enum RouteFuture<F> {
        /// Waiting on the inner service; a registry route, to stamp its response with.
        Inner { #[pin] fut: F, route: Option<Route> },
        /// Answered here.
        Ready { resp: Option<Response<Body>> },
    }
}

impl<F, E> Future for RouteFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RouteFutureProj::Inner { fut, route } => {
                let resp = ready!(fut.poll(cx))?;
                Poll::Ready(Ok(match route.take() {
                    Some(r) => {
                        let mut resp = stamp(resp);
                        resp.extensions_mut().insert(RouteKind(r.kind()));
                        resp.extensions_mut().insert(r);
                        resp
                    }
                    None => resp,
                }))
            }
            RouteFutureProj::Ready { resp } => {
                let resp = resp.take().unwrap_or_else(|| {
                    Error::new(ErrorCode::Unknown, "polled after completion").into_response()
                });
                Poll::Ready(Ok(resp))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn ok(p: &str) -> Route {
        parse(p).unwrap_or_else(|e| panic!("{p}: {e}")).unwrap()
    }

    fn err(p: &str) -> ErrorCode {
        parse(p).err().unwrap_or_else(|| panic!("{p} accepted")).code()
    }

    #[test]
    fn routes() {
        assert_eq!(ok("/v2/"), Route::Base);
        assert_eq!(ok("/v2"), Route::Base);
        assert_eq!(ok("/v2/_catalog"), Route::Catalog);
        assert!(matches!(ok("/v2/a/b/c/tags/list"), Route::Tags { name } if name.as_str() == "a/b/c"));
        assert!(matches!(ok(&format!("/v2/a/blobs/{D}")), Route::Blob { .. }));
        assert!(matches!(ok("/v2/a/blobs/uploads/"), Route::UploadStart { .. }));
        assert!(matches!(ok("/v2/a/blobs/uploads"), Route::UploadStart { .. }));
        assert!(matches!(ok("/v2/a/blobs/uploads/abc-123"), Route::Upload { id, .. } if id == "abc-123"));
        assert!(matches!(ok(&format!("/v2/a/referrers/{D}")), Route::Referrers { .. }));
        // a repository may be called "blobs" or "manifests"
        assert!(
            matches!(ok("/v2/blobs/manifests/latest"), Route::Manifest { name, .. } if name.as_str() == "blobs")
        );
        assert!(
            matches!(ok("/v2/manifests/tags/list"), Route::Tags { name } if name.as_str() == "manifests")
        );
        assert!(matches!(ok("/v2/f/docker.io/library/nginx/manifests/1.25"), Route::Manifest { .. }));
        assert_eq!(parse("/healthz").unwrap(), None);
        assert_eq!(parse("/v2x").unwrap(), None);
    }

    #[test]
    fn bad_paths() {
        assert_eq!(err("/v2/../x/tags/list"), ErrorCode::NameInvalid);
        assert_eq!(err("/v2/a/%2e%2e/tags/list"), ErrorCode::NameInvalid);
        assert_eq!(err("/v2/a%2fb/tags/list"), ErrorCode::NameInvalid);
        assert_eq!(err("/v2/UPPER/tags/list"), ErrorCode::NameInvalid);
        assert_eq!(err("/v2/a/manifests/..foo"), ErrorCode::TagInvalid);
        assert_eq!(err("/v2/a/manifests/sha256:zz"), ErrorCode::DigestInvalid);
        assert_eq!(err("/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e"), ErrorCode::DigestInvalid);
        assert_eq!(err("/v2/a/blobs/uploads/..x"), ErrorCode::BlobUploadUnknown);
        assert_eq!(err("/v2/tags/list"), ErrorCode::NameInvalid);
        assert_eq!(err("/v2/a/unknown"), ErrorCode::NameUnknown);
        let long = format!("/v2/{}/tags/list", "a".repeat(256));
        assert_eq!(err(&long), ErrorCode::NameInvalid);
    }

    #[tokio::test]
    async fn the_layer_puts_mirror_requests_in_their_namespace() {
        use tower::{service_fn, ServiceExt};
        let names = |layer: RouteLayer, uri: &'static str| async move {
            let svc = layer.layer(service_fn(|req: Request<Body>| async move {
                let name = req.extensions().get::<Route>().and_then(|r| r.name().cloned());
                Ok::<_, std::convert::Infallible>(Response::new(Body::from(
                    name.map(|n| n.to_string()).unwrap_or_default(),
                )))
            }));
            let resp = svc.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
            let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        };
        let plain = RouteLayer::new();
        let mirror = RouteLayer::new().mirrors(Mirrors::any().local(["reg.example"]));
        assert_eq!(names(plain.clone(), "/v2/f/docker/nginx/manifests/1").await, "f/docker.io/library/nginx");
        assert_eq!(names(plain.clone(), "/v2/f/localhost:5000/a/b/tags/list").await, "f/localhost__5000/a/b");
        assert_eq!(names(plain.clone(), "/v2/nginx/manifests/1?ns=docker.io").await, "nginx", "ns ignored");
        assert_eq!(
            names(mirror.clone(), "/v2/nginx/manifests/1?ns=docker.io").await,
            "f/docker.io/library/nginx"
        );
        assert_eq!(names(mirror.clone(), "/v2/a/b/tags/list?ns=ghcr.io").await, "f/ghcr.io/a/b");
        assert_eq!(names(mirror.clone(), "/v2/a/manifests/1?ns=reg.example").await, "a", "this registry");
        assert_eq!(names(mirror, "/v2/f/quay.io/a/manifests/1?ns=ghcr.io").await, "f/quay.io/a");
    }
}
