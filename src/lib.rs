//! donjon: an OCI image registry built as a stack of tower layers.
//!
//! [`Registry`] is the whole registry as one `tower::Service`, generic over the request body,
//! `Clone + Send + Sync`, with `Error = Infallible`. [`RegistryLayer`] wraps an existing service
//! instead, so that requests outside `/v2/` reach it unchanged (mount the registry in an axum
//! or hyper application).
//!
//! ```
//! use std::sync::Arc;
//! use donjon::{Registry, Body};
//! use donjon_core::memory::MemoryStore;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let registry = Registry::builder(Arc::new(MemoryStore::default())).build();
//! let resp = registry
//!     .oneshot(http::Request::get("/v2/").body(Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(resp.status(), 200);
//! assert_eq!(resp.headers()["docker-distribution-api-version"], "registry/2.0");
//! # });
//! ```
//!
//! # Layout
//!
#![doc = include_str!("../docs/stack.md")]
//!
//! A new layer is what the others are: a crate that depends on `donjon-core` only, a
//! configuration section that implements `donjon_core::config::LayerConfig`, a field of
//! [`RegistryBuilder`] with a method that sets it, and one line in `RegistryBuilder::compose`,
//! where the stack is assembled and its type erased (`option_layer` when it is optional). Shared words
//! (the `Route` and its `Action`, the `Principal`, the OCI `Error`, the `Store` trait, the
//! storage layout, `ConfigError`) live in `donjon-core`. Each layer crate owns its settings
//! (`StorageConfig`, `ContentConfig`, `UploadConfig`, `AuthConfig`: serde structs with their defaults, a
//! `check` and a `build` that makes the layer); [`config`] only maps Distribution's and
//! Trow's file shapes and flags onto them, so a new layer's section is one more field there.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;
use tower_layer::Layer;
use tower_service::Service;

pub mod config;
pub mod healthcheck;
pub mod log_fields;
pub mod middleware;
pub use donjon_notify as notify;
pub mod server;

/// The version and the commit it was built from, as `donjon --version` prints them:
/// `0.1.0 (3f2a9c1d4e5b)` (`unknown` for a build outside a git checkout without `DONJON_COMMIT`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DONJON_COMMIT"), ")");

pub use donjon_auth::{self as auth, AuthConfig, AuthLayer};
pub use donjon_browse::{self as browse, BrowseConfig, BrowseLayer};
pub use donjon_core::{self as core, Body, BoxError, Error, ErrorCode, Route, Store};
pub use donjon_proxy::{self as proxy, ProxyCacheLayer, ProxyConfig};
pub use donjon_store::{
    ContentConfig, ContentStoreLayer, FsStore, ReadOnlyLayer, ReadOnlySwitch, StorageConfig, UploadPurging,
};
pub use donjon_upload::{IndexChildren, UploadConfig, UploadLayer};
pub use donjon_validate::{self as validate, ValidationConfig, ValidationLayer};

/// The composed registry, its type erased once: a boxed, clone-able service over requests with
/// a boxed body.
pub type BoxRegistry = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// Builds a [`Registry`] or a [`RegistryLayer`]: the layers, each with its own defaults.
#[derive(Clone, Debug)]
pub struct RegistryBuilder {
    store: Arc<dyn Store>,
    browse: Option<BrowseLayer>,
    validation: Option<ValidationLayer>,
    auth: Option<AuthLayer>,
    proxy: Option<ProxyCacheLayer>,
    /// This registry's own host names: a mirror request (`?ns=`) naming one is local.
    local_names: Vec<String>,
    read_only: ReadOnlySwitch,
    gc: Option<donjon_store::gc::GcSchedule>,
    upload: UploadLayer,
    content: ContentStoreLayer,
}

impl RegistryBuilder {
    /// Whether clients may delete blobs, manifests and tags (default: yes).
    pub fn delete_enabled(mut self, enabled: bool) -> Self {
        self.content = self.content.delete_enabled(enabled);
        self
    }

    /// The manifest size limit (default 4 MiB).
    pub fn max_manifest_size(mut self, bytes: usize) -> Self {
        self.upload = self.upload.max_manifest_size(bytes);
        self
    }

    /// Which children of a pushed index must be present (default: all of them).
    pub fn index_children(mut self, rule: IndexChildren) -> Self {
        self.upload = self.upload.index_children(rule);
        self
    }

    /// Whether an image manifest may name blobs that were not pushed (default: no, as in
    /// Distribution; [`UploadLayer::accept_missing_blobs`]).
    pub fn accept_missing_blobs(mut self, accept: bool) -> Self {
        self.upload = self.upload.accept_missing_blobs(accept);
        self
    }

    /// The largest catalog page (default 1000).
    pub fn catalog_max_entries(mut self, n: usize) -> Self {
        self.content = self.content.catalog_max_entries(n);
        self
    }

    /// The read-only web page at `/ui/` (default: none). It sits above the route parser and
    /// asks the layers below for what it shows, with the caller's rights; [`build`](Self::build)
    /// tells it what it needs of the auth layer (the token endpoint for its login form), the
    /// store (tag push times) and the pull-through cache (which names are cached).
    pub fn browse(mut self, layer: impl Into<Option<BrowseLayer>>) -> Self {
        self.browse = layer.into();
        self
    }

    /// The Kubernetes admission webhooks `/validate-image` and `/mutate-image` (default:
    /// none). They sit above auth: the API server calls them with no registry credentials.
    pub fn validation(mut self, layer: impl Into<Option<ValidationLayer>>) -> Self {
        self.validation = layer.into();
        self
    }

    /// Authentication and access rules (default: none, everyone may do everything).
    pub fn auth(mut self, layer: impl Into<Option<AuthLayer>>) -> Self {
        self.auth = layer.into();
        self
    }

    /// The pull-through cache (default: none; `f/…` names are then ordinary repositories
    /// and `?ns=` is ignored).
    pub fn proxy(mut self, layer: impl Into<Option<ProxyCacheLayer>>) -> Self {
        self.proxy = layer.into();
        self
    }

    /// This registry's own host names (Trow's `-n`): a containerd mirror request whose `ns`
    /// names one of them addresses this registry's own content, not an upstream.
    pub fn local_names<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.local_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// Read-only mode's switch (default: a switch of its own, off): while it is on, pushes and
    /// deletes answer `UNSUPPORTED`. Keep a clone to turn it while the registry runs.
    pub fn read_only(mut self, switch: ReadOnlySwitch) -> Self {
        self.read_only = switch;
        self
    }

    /// The store the layers share, for building more layers over it.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The upload layer, built elsewhere (`None` keeps the default one).
    pub fn upload(mut self, layer: impl Into<Option<UploadLayer>>) -> Self {
        if let Some(l) = layer.into() {
            self.upload = l;
        }
        self
    }

    /// The content store layer, built elsewhere (`None` keeps the default one).
    pub fn content(mut self, layer: impl Into<Option<ContentStoreLayer>>) -> Self {
        if let Some(l) = layer.into() {
            self.content = l;
        }
        self
    }

    /// Garbage collection on a schedule (default: none), run by [`background`](Self::background).
    pub fn garbage_collection(mut self, schedule: donjon_store::gc::GcSchedule) -> Self {
        self.gc = Some(schedule);
        self
    }

    /// The background work of the layers, as one future to spawn: upload purging when `p` is
    /// given (the binary passes Distribution's `storage.maintenance.uploadpurging`), scheduled
    /// garbage collection, the auth layer's htpasswd reloading and the pull-through cache's
    /// eviction.
    pub fn background(&self, purging: Option<UploadPurging>) -> impl Future<Output = ()> + Send + 'static {
        let mut jobs: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = vec![];
        if let Some(p) = purging {
            jobs.push(Box::pin(self.content.upload_purger(p)));
        }
        if let Some(a) = &self.auth {
            jobs.push(Box::pin(a.background()));
        }
        if let Some(g) = &self.gc {
            jobs.push(Box::pin(donjon_store::gc::collector(
                self.store.clone(),
                g.clone(),
                self.read_only.clone(),
            )));
        }
        if let Some(p) = &self.proxy {
            jobs.push(Box::pin(p.background(self.read_only.clone())));
        }
        async move {
            futures_util::future::join_all(jobs).await;
        }
    }

    /// The one place the stack is assembled, outermost first; its type is erased here.
    fn compose<F>(&self, fallback: F) -> BoxRegistry
    where
        F: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        F::Future: Send + 'static,
    {
        let mut route = donjon_core::RouteLayer::new();
        if let Some(p) = &self.proxy {
            route = route.mirrors(p.mirrors(&self.local_names));
        }
        let browse = self.browse.clone().map(|b| {
            let b = b.store(self.store.clone()).pull_through(self.proxy.is_some());
            match self.auth.as_ref().map(|a| a.token_endpoint()) {
                Some(Some(path)) => b.token_endpoint(path),
                _ => b,
            }
        });
        let stack = ServiceBuilder::new()
            .option_layer(browse)
            .layer(route)
            .option_layer(self.validation.clone())
            .option_layer(self.auth.clone())
            .option_layer(self.proxy.clone())
            .layer(ReadOnlyLayer::new(self.read_only.clone()))
            .layer(self.upload.clone())
            .layer(self.content.clone())
            .service(fallback);
        BoxCloneSyncService::new(stack)
    }

    /// The layer, to wrap an application's own service.
    pub fn layer(self) -> RegistryLayer {
        RegistryLayer { builder: self }
    }

    /// The standalone registry: requests outside `/v2/` get a 404.
    pub fn build(self) -> Registry {
        Registry { inner: self.compose(NotFound) }
    }
}

/// The registry's layers as one [`Layer`]: routing, uploads, content store. Requests that are
/// not registry requests reach the wrapped service with their body boxed into [`Body`]; its
/// response body is boxed once.
#[derive(Clone, Debug)]
pub struct RegistryLayer {
    builder: RegistryBuilder,
}

impl RegistryLayer {
    /// A builder over `store`.
    pub fn builder(store: Arc<dyn Store>) -> RegistryBuilder {
        Registry::builder(store)
    }
}

impl<S, ResB> Layer<S> for RegistryLayer
where
    S: Service<Request<Body>, Response = Response<ResB>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Service = Registry;

    fn layer(&self, inner: S) -> Registry {
        Registry { inner: self.builder.compose(Fallback { inner }) }
    }
}

/// The whole registry as one service, generic over the request body. See the crate docs.
#[derive(Clone)]
pub struct Registry {
    inner: BoxRegistry,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// A builder over `store`.
    pub fn builder(store: Arc<dyn Store>) -> RegistryBuilder {
        RegistryBuilder {
            store: store.clone(),
            browse: None,
            validation: None,
            auth: None,
            proxy: None,
            local_names: vec![],
            read_only: ReadOnlySwitch::default(),
            gc: None,
            upload: UploadLayer::new(store.clone()),
            content: ContentStoreLayer::new(store),
        }
    }
}

impl<B> Service<Request<B>> for Registry
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = <BoxRegistry as Service<Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.inner.call(req.map(Body::new))
    }
}

/// The innermost service of the standalone registry: every request that reaches it is for a
/// path the registry does not serve.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotFound;

impl<B> Service<Request<B>> for NotFound {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let e = Error::new(ErrorCode::NameUnknown, format!("no registry endpoint at {}", req.uri().path()))
            .with_status(http::StatusCode::NOT_FOUND);
        std::future::ready(Ok(e.into_response()))
    }
}

/// Adapts the wrapped service's response body to [`Body`].
#[derive(Clone, Debug)]
pub struct Fallback<S> {
    inner: S,
}

impl<S, B, ResB> Service<Request<B>> for Fallback<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = FallbackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        FallbackFuture { fut: self.inner.call(req) }
    }
}

pin_project! {
    /// The future of [`Fallback`].
    pub struct FallbackFuture<F> {
        #[pin]
        fut: F,
    }
}

impl<F, E, ResB> Future for FallbackFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let resp = ready!(self.project().fut.poll(cx))?;
        Poll::Ready(Ok(resp.map(Body::new)))
    }
}
