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
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

pub mod config;
pub mod server;
pub mod stack;

pub use donjon_core::{self as core, Body, BoxError, Error, ErrorCode, Route, Store};
pub use donjon_store::{ContentStoreLayer, FsStore};
pub use donjon_upload::{IndexChildren, UploadLayer};

type Stack<S> = donjon_core::RouteService<donjon_upload::Upload<donjon_store::ContentStore<Fallback<S>>>>;

/// Builds a [`Registry`] or a [`RegistryLayer`].
#[derive(Clone, Debug)]
pub struct RegistryBuilder {
    store: Arc<dyn Store>,
    delete_enabled: bool,
    max_manifest_size: usize,
    catalog_max_entries: usize,
    index_children: IndexChildren,
}

impl RegistryBuilder {
    /// Whether clients may delete blobs, manifests and tags (default: yes).
    pub fn delete_enabled(mut self, enabled: bool) -> Self {
        self.delete_enabled = enabled;
        self
    }

    /// The manifest size limit (default 4 MiB).
    pub fn max_manifest_size(mut self, bytes: usize) -> Self {
        self.max_manifest_size = bytes;
        self
    }

    /// Which children of a pushed index must be present (default: all of them).
    pub fn index_children(mut self, rule: IndexChildren) -> Self {
        self.index_children = rule;
        self
    }

    /// The largest catalog page (default 1000).
    pub fn catalog_max_entries(mut self, n: usize) -> Self {
        self.catalog_max_entries = n;
        self
    }

    /// The layer, to wrap an application's own service.
    pub fn layer(self) -> RegistryLayer {
        RegistryLayer {
            upload: UploadLayer::new(self.store.clone())
                .max_manifest_size(self.max_manifest_size)
                .index_children(self.index_children),
            content: ContentStoreLayer::new(self.store)
                .delete_enabled(self.delete_enabled)
                .catalog_max_entries(self.catalog_max_entries),
        }
    }

    /// The standalone registry: requests outside `/v2/` get a 404.
    pub fn build(self) -> Registry {
        Registry { inner: self.layer().layer(NotFound) }
    }
}

/// The registry's layers as one [`Layer`]: routing, uploads, content store. Requests that are
/// not registry requests reach the wrapped service unchanged; its response body is boxed once.
#[derive(Clone, Debug)]
pub struct RegistryLayer {
    upload: UploadLayer,
    content: ContentStoreLayer,
}

impl RegistryLayer {
    /// A builder over `store`.
    pub fn builder(store: Arc<dyn Store>) -> RegistryBuilder {
        Registry::builder(store)
    }
}

impl<S> Layer<S> for RegistryLayer {
    type Service = RegistryService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let fallback = Fallback { inner };
        let content = self.content.layer(fallback);
        let upload = self.upload.layer(content);
        RegistryService { inner: donjon_core::RouteLayer::new().layer(upload) }
    }
}

/// The service of [`RegistryLayer`].
#[derive(Clone, Debug)]
pub struct RegistryService<S> {
    inner: Stack<S>,
}

impl<S, B, ResB> Service<Request<B>> for RegistryService<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = <Stack<S> as Service<Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.inner.call(req)
    }
}

/// The whole registry as one service. See the crate docs.
#[derive(Clone, Debug)]
pub struct Registry {
    inner: RegistryService<NotFound>,
}

impl Registry {
    /// A builder over `store`.
    pub fn builder(store: Arc<dyn Store>) -> RegistryBuilder {
        RegistryBuilder {
            store,
            delete_enabled: true,
            max_manifest_size: donjon_upload::DEFAULT_MAX_MANIFEST_SIZE,
            catalog_max_entries: 1000,
            index_children: IndexChildren::All,
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
    type Future = <RegistryService<NotFound> as Service<Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request<B>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.inner.call(req)
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
