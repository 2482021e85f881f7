//! donjon's read-only web page: the repositories, tags and images of the registry, at `/ui/`.
//!
//! [`BrowseLayer`] sits above the route parser and answers `/ui/…`; every other request passes
//! on unchanged. A page is built from the registry's own API, asked through the layers below
//! with the caller's rights, so it shows what the caller may pull and nothing else, and it can
//! never delete anything:
//!
//! - `/ui/`: the repositories, a page at a time (`?last=` as the catalog's), with a filter
//!   (`?q=`, a substring of the name) that looks through a bounded number of names per page;
//! - `/ui/r/<name>`: its tags, by name or by push time (`?sort=time`, when the store knows it);
//! - `/ui/r/<name>:<tag>`, `/ui/r/<name>@<digest>`: an image or index: digest, platforms,
//!   layers and sizes, the config's creation time and labels, annotations, referrers by
//!   artifact type, and `docker`/`podman`/`ctr` pull commands with copy buttons;
//! - `/ui/login`: a form whose credentials the registry's token endpoint exchanges for a
//!   refresh token; an `HttpOnly`, `SameSite=Strict` cookie keeps that token (not the password),
//!   and each page trades it for an access token scoped to what it shows.
//!
//! The HTML is rendered here, every name, tag, label and annotation escaped ([`html::esc`]);
//! the stylesheet and a small script are embedded in the binary (no CDN), and the
//! `Content-Security-Policy` allows nothing else: no inline script, no other origin.
//!
//! ```
//! use std::sync::Arc;
//! use donjon_browse::BrowseLayer;
//! use donjon_core::{memory::MemoryStore, Body, RouteLayer};
//! use tower::{Layer, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // The registry below: here only the route parser over a 404.
//! let registry = RouteLayer::new().layer(tower::service_fn(|_req: http::Request<Body>| async {
//!     let mut r = http::Response::new(Body::from(r#"{"repositories":["library/busybox"]}"#));
//!     r.headers_mut().insert("content-type", "application/json".parse().unwrap());
//!     Ok::<_, std::convert::Infallible>(r)
//! }));
//! let ui = BrowseLayer::new().layer(registry);
//! let resp = ui.oneshot(http::Request::get("/ui/").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(resp.status(), 200);
//! assert!(resp.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
//! let page = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
//! assert!(std::str::from_utf8(&page).unwrap().contains(r#"href="/ui/r/library/busybox""#));
//! # });
//! ```
//!
//! # Layout
//!
//! - [`config`]: the `ui` section ([`BrowseConfig`]);
//! - `layer.rs`, `service.rs`: [`BrowseLayer`] and its service [`Browse`] (routing, the
//!   sub-requests, the login);
//! - [`html`]: the pages; `assets/`: the stylesheet and the script.
#![forbid(unsafe_code)]

pub mod config;
pub mod html;
mod layer;
mod service;

pub use config::BrowseConfig;
pub use layer::BrowseLayer;
pub use service::{Browse, COOKIE};
