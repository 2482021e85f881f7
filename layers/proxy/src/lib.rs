//! donjon's pull-through cache: reads of `f/<host>/<repo>` (and of `?ns=<host>` and Trow's
//! `f/docker/…`, which the route parser turns into that name) are served from the upstream
//! registry and cached in the store, as ordinary content under that name, so the cache is
//! Distribution's layout on the filesystem or in a bucket and survives restarts.
//!
//! - **Manifests**: a tag is checked upstream with a `HEAD` (at most once per
//!   `check_interval`), fetched when it moved, verified against its digest and stored under
//!   the tag; a digest is fetched once and never checked again. When the upstream fails or
//!   times out, the cached copy is served and a warning logged; an upstream 404, 401 or 403
//!   is passed on as such.
//! - **Blobs**: a miss starts one streaming fill that every concurrent request of the digest
//!   shares ([`fill`]); the first byte reaches the client as soon as the upstream sends it;
//!   the digest is verified before the blob is committed to the store. A cached blob is the
//!   store's, served by the content layer below.
//! - **Writes** into pull-through names are refused (`UNSUPPORTED`); tags, referrers and the
//!   catalog list what is cached.
//!
//! ```
//! use std::sync::Arc;
//! use donjon_core::{memory::MemoryStore, Body, RouteLayer};
//! use donjon_proxy::{ProxyCacheLayer, ProxyConfig};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let proxy = ProxyCacheLayer::new(Arc::new(MemoryStore::default()), &ProxyConfig::default(), dir.path()).unwrap();
//! let svc = ServiceBuilder::new().layer(RouteLayer::new()).layer(proxy).service(service_fn(
//!     |_req: http::Request<Body>| async { Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty())) },
//! ));
//! let put = http::Request::put("/v2/f/docker.io/library/busybox/manifests/latest").body(Body::empty()).unwrap();
//! assert_eq!(svc.oneshot(put).await.unwrap().status(), 405, "the cache takes no pushes");
//! # });
//! ```
//!
//! # Layout
//!
//! - `layer`, `service`: [`ProxyCacheLayer`] and [`ProxyCache`]: core's `Claiming` service
//!   around the layer's policy (reads of cached names decided after a fetch).
//! - [`config`]: [`ProxyConfig`], Trow's `registry_proxies` with donjon's keys beside it.
//! - [`upstream`]: which upstream serves a name; which hosts may be reached (no SSRF).
//! - [`client`]: the pooled HTTPS client, retries, the upstream token dance.
//! - [`fill`]: single-flight streaming fills of missed blobs.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
mod evict;
pub mod fill;
mod layer;
mod service;
pub mod upstream;

pub use config::{ProxyConfig, RegistryConfig};
pub use layer::ProxyCacheLayer;
pub use service::ProxyCache;
