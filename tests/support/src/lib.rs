//! What donjon's test suites share, in one crate that is never published: the root crate's
//! integration tests, the e2e suite, the fault tests, donjon-store's S3 tests and the S3
//! benchmark all depend on it instead of including files by path.
//!
//! ```
//! use donjon_test_support::{net, oci};
//!
//! let addr = net::free_addr();
//! assert!(addr.ip().is_loopback());
//! assert!(oci::digest(b"").starts_with("sha256:e3b0c442"));
//! ```
//!
//! # Layout
//!
//! - [`s3server`]: the S3 server a test runs on, a private [`seaweedfs`] cluster (the default)
//!   or a single-node [`garage`], on free loopback ports, killed by their PIDs when dropped.
//! - [`net`]: free ports, waiting for a listener; [`process`]: a child killed by its PID on
//!   drop.
//! - [`client`]: a pooling HTTP/1.1 client and the response as tests read it ([`client::Resp`]).
//! - [`oci`]: digests, media types, a small image manifest.
//! - `server` (feature `server`): an in-process donjon over TCP, the binary on a free port.

pub mod client;
pub mod garage;
pub mod net;
pub mod oci;
pub mod process;
pub mod s3server;
pub mod seaweedfs;
#[cfg(feature = "server")]
pub mod server;
