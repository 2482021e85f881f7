//! donjon's auth layer: who may pull, push and delete where, as Distribution's token auth
//! does it, so docker, podman, skopeo, containerd, oras and helm log in as they do anywhere.
//!
//! [`AuthLayer`] sits under the route parser. For every registry route it finds what the
//! request needs (pull, push, delete, the catalog), who is calling (a Bearer token, Basic
//! credentials, or nobody), and either passes the request on with a
//! [`Principal`](donjon_core::Principal) in its extensions (the subject and its grants, for the
//! layers below), or answers with the spec's error body: `UNAUTHORIZED` (401) with a
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge naming the scope needed,
//! `DENIED` (403) to a logged-in user without the right, `TOOMANYREQUESTS` (429) to an address
//! that failed to log in too often. The decision never touches the store, so a refusal says
//! nothing about whether a repository exists. Requests that are not registry routes pass
//! untouched.
//!
//! It also serves the token endpoint, `/v2/token`: `GET` with Basic credentials (or none, for
//! anonymous access) and repeated `scope`s, and the OAuth2 `POST` form (`grant_type=password`
//! or `refresh_token`) that containerd and docker use, answering
//! `{"token","access_token","expires_in","issued_at"[,"refresh_token"]}` for what the rules
//! allow of what was asked.
//!
//! Or, as Distribution's `auth.token`, it checks the tokens of another token server
//! ([`AuthLayer::external`], [`issuer`]): what they grant is what their `access` claim says.
//!
//! ```
//! use std::time::Duration;
//! use donjon_auth::{rules::Rules, token::{SigningKey, Tokens}, users::Users, AuthLayer};
//! use donjon_core::{memory::MemoryStore, Body, RouteLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let key = SigningKey::generate().unwrap();
//! let auth = AuthLayer::new(
//!     Users::new(None, Some(("admin", "secret"))).unwrap(),
//!     Rules::authenticated_may_do_anything(),
//!     Tokens::new(key, "donjon", "registry.example", Duration::from_secs(300)),
//! );
//! let svc = ServiceBuilder::new().layer(RouteLayer::new()).layer(auth).service(service_fn(
//!     |_req: http::Request<Body>| async { Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty())) },
//! ));
//! let req = http::Request::get("/v2/library/busybox/manifests/latest").body(Body::empty()).unwrap();
//! let resp = svc.oneshot(req).await.unwrap();
//! assert_eq!(resp.status(), 401);
//! assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains("repository:library/busybox:pull"));
//! # });
//! ```
//!
//! # Layout
//!
//! - `layer`, `service`: [`AuthLayer`] and [`Auth`] (the decision and the token endpoint),
//!   core's `Claiming` service around the layer's policy (a bcrypt check decides later).
//! - [`config`]: [`AuthConfig`], Distribution's `auth` section with donjon's rules beside it.
//! - [`users`]: htpasswd (bcrypt, off the async workers, cached briefly, reloaded on change)
//!   and Trow's single user.
//! - [`rules`]: repository globs → actions for users, groups, the authenticated, anonymous
//!   callers; the first match wins.
//! - [`token`]: ES256 JWTs, the signing key file, refresh tokens.
//! - [`issuer`]: another token server's tokens: certificate bundles (`x5c`, libtrust key IDs,
//!   thumbprints) and JWK Sets.
//! - [`scope`]: scopes and `WWW-Authenticate` challenges; [`limiter`]: failed-login counts.
#![forbid(unsafe_code)]

pub mod config;
pub mod issuer;
mod layer;
pub mod limiter;
pub mod rules;
pub mod scope;
mod service;
pub mod token;
pub mod users;

pub use config::AuthConfig;
pub use layer::AuthLayer;
pub use service::Auth;
