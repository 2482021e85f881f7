//! The vocabulary every donjon layer shares: spec types ([`Digest`], [`Name`], [`Reference`]),
//! the parsed [`Route`] and the [`RouteLayer`] that produces it, the OCI [`Error`] response,
//! the response [`Body`], and the [`Store`] contract with its backends' shared test suite.
//!
//! Layers depend on this crate only, never on each other.
//!
//! ```
//! use donjon_core::{Digest, Name, Reference};
//!
//! let name: Name = "library/busybox".parse().unwrap();
//! let reference: Reference = "latest".parse().unwrap();
//! let digest = Digest::sha256_of(b"hello");
//! assert_eq!(name.as_str(), "library/busybox");
//! assert!(matches!(reference, Reference::Tag(_)));
//! assert!(digest.as_str().starts_with("sha256:"));
//! ```
//!
//! # Layout
//!
//! - [`route`]: the path parser, [`Route`], its [`Action`], and [`RouteLayer`], which puts the
//!   route in the request's extensions; [`name`] and [`digest`]: the spec's grammar;
//!   [`image_ref`]: image references as pod specs spell them, normalised as docker does.
//! - [`claim`]: the one shape of a layer's service, a [`claim::Claim`] policy in front of the
//!   service below, and [`future`]: the response future it returns.
//! - [`error`]: the OCI [`Error`] and its response; [`response`]: header names and response
//!   helpers (`empty`, `json`, `add_warning`, `parse_content_range`); [`body`]: the [`Body`].
//! - [`manifest`]: what a manifest references and how it describes itself; [`principal`]: who
//!   is calling (set by an auth layer) and from where ([`ClientConn`], set by the server);
//!   [`time`]: RFC 3339 timestamps.
//! - [`challenge`]: registry authentication as a client meets it (`WWW-Authenticate`
//!   challenges, token requests and answers, Basic credentials, a token cache), for donjon's
//!   own clients: the pull-through cache's, the load harness's, `donjon ls`.
//! - [`metrics`]: the process's Prometheus metrics, which every layer records into;
//!   [`metered`]: a `Store` that records each operation's latency and faults there;
//! - [`config`]: what the layers' configuration sections share: [`config::ConfigError`]
//!   naming key and file, warnings, the duration format.
//! - [`store`]: the [`Store`] contract; [`gc`]: online garbage collection over any store (the
//!   store's maintenance and the proxy's eviction share it); [`layout`]: Distribution's storage paths;
//!   `memory` and `contract` (feature `test-util`): a store for tests and the suite every
//!   backend runs.
#![forbid(unsafe_code)]

pub mod body;
pub mod challenge;
pub mod claim;
pub mod config;
pub mod digest;
pub mod error;
pub mod future;
pub mod gc;
#[cfg(feature = "https")]
pub mod https;
pub mod image_ref;
pub mod layout;
pub mod manifest;
pub mod metered;
pub mod metrics;
pub mod mirror;
pub mod name;
pub mod pagecache;
pub mod principal;
pub mod response;
pub mod route;
pub mod store;
pub mod time;

#[cfg(any(test, feature = "test-util"))]
pub mod contract;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;

pub use body::{Body, BoxError};
pub use digest::{Algorithm, Digest, Digester};
pub use error::{Error, ErrorCode};
pub use name::{Name, Reference, Tag};
pub use principal::{ActorSlot, ClientConn, Principal};
pub use route::{Action, Route, RouteLayer, RouteService};
pub use store::{Store, StoreError};

/// The header every `/v2/` response carries.
pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";
/// Its value.
pub const API_VERSION: &str = "registry/2.0";
