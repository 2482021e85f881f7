//! donjon's upload layer: blob upload sessions (`POST`, `PATCH`, `PUT`, `GET`, `DELETE` on
//! `/v2/<name>/blobs/uploads/`), monolithic uploads, cross-repository mounts, and manifest
//! `PUT` with its checks (JSON shape, digest, referenced blobs and manifests, size limit,
//! `subject` → referrers).
//!
//! ```
//! use std::sync::Arc;
//! use donjon_core::{memory::MemoryStore, Body, RouteLayer};
//! use donjon_upload::UploadLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = Arc::new(MemoryStore::default());
//! let svc = ServiceBuilder::new()
//!     .layer(RouteLayer::new())
//!     .layer(UploadLayer::new(store).max_manifest_size(1 << 20))
//!     .service(service_fn(|_req: http::Request<Body>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
//!     }));
//! let resp = svc
//!     .oneshot(http::Request::post("/v2/demo/blobs/uploads/").body(Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(resp.status(), 202);
//! assert!(resp.headers()["location"].to_str().unwrap().starts_with("/v2/demo/blobs/uploads/"));
//! # });
//! ```
//!
//! # Layout
//!
//! - `layer`: [`UploadLayer`], its limits and [`IndexChildren`] (which children of an index
//!   must be present).
//! - `config`: [`UploadConfig`], the layer's settings and their defaults.
//! - `service`: the handlers — session start, mount, monolithic upload, `PATCH`, the closing
//!   `PUT`, status, cancel, and manifest `PUT` with its checks (media type, depth, digest,
//!   referenced blobs with their sizes, tags, referrers).
#![forbid(unsafe_code)]

mod config;
mod layer;
mod service;

pub use config::{UploadConfig, DEFAULT_MAX_MANIFEST_SIZE};
pub use layer::{IndexChildren, UploadLayer};
pub use service::Upload;
