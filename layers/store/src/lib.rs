//! donjon's content store: [`ContentStoreLayer`], which answers the registry's reads and deletes
//! (blobs, manifests, tags, catalog, referrers) from a [`Store`](donjon_core::Store), and the
//! filesystem backend [`FsStore`].
//!
//! ```
//! use std::sync::Arc;
//! use donjon_core::{memory::MemoryStore, Body, RouteLayer};
//! use donjon_store::ContentStoreLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = Arc::new(MemoryStore::default());
//! let svc = ServiceBuilder::new()
//!     .layer(RouteLayer::new())
//!     .layer(ContentStoreLayer::new(store))
//!     .service(service_fn(|_req: http::Request<Body>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(Body::from("app")))
//!     }));
//! let resp = svc.oneshot(http::Request::get("/v2/").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(resp.status(), 200);
//! # });
//! ```
//!
//! # Layout
//!
//! - `layer` and `service`: [`ContentStoreLayer`] and [`ContentStore`], the reads and deletes.
//! - `fs`: [`FsStore`], the filesystem backend; `fs/file.rs` its file I/O (durable writes,
//!   links, page-cache reads without a thread hop), `fs/hashing.rs` the hashing and early
//!   syncing of uploads (on a thread of their own past 1 MiB) and the hash state file.
//! - `s3` (feature `s3`): `S3Store`, on any `object_store` backend; `s3_config`: its keys.
//! - `config`: [`StorageConfig`] (Distribution's `storage` section: which backend, upload
//!   purging) and [`ContentConfig`] (deletes, catalog size), with their defaults and checks.
//! - [`gc`]: online garbage collection ([`gc::collect`], from `donjon-core`), and its schedule.
//! - [`purge`]: upload purging, the future the layer hands out.
//! - [`read_only`]: [`ReadOnlyLayer`], Distribution's `storage.maintenance.readonly`, with a
//!   [`ReadOnlySwitch`] that can be turned while the registry runs.
#![forbid(unsafe_code)]

mod config;
mod fs;
mod layer;
pub mod purge;
pub mod read_only;
#[cfg(feature = "s3")]
pub mod s3;
mod s3_config;
#[cfg(feature = "s3")]
mod s3_copy;
mod service;

pub use config::{
    Backend, ContentConfig, DeleteConfig, FilesystemConfig, GcConfig, MaintenanceConfig, ReadOnlyConfig,
    RedirectConfig, S3Section, StorageConfig, UploadPurgingConfig,
};
pub use donjon_core::gc;
pub use fs::FsStore;
pub use layer::ContentStoreLayer;
pub use purge::{upload_purger, UploadPurging};
pub use read_only::{ReadOnlyLayer, ReadOnlySwitch};
#[cfg(feature = "s3")]
pub use s3::S3Store;
pub use s3_config::{CopyLimits, S3Config};
pub use service::ContentStore;
