//! What the end-to-end tests share: tools and commands, daemons and the donjon binary, a raw
//! HTTP client, skopeo helpers, and the deterministic OCI layouts (`fixtures`).

mod command;
mod containerd;
mod daemon;
mod distribution;
mod docker;
pub(crate) mod fixtures;
mod http;
mod podman;
mod registry;
mod skopeo;

pub(crate) use command::*;
pub(crate) use containerd::*;
pub(crate) use daemon::*;
pub(crate) use distribution::*;
pub(crate) use docker::*;
pub(crate) use donjon_test_support::net::free_port;
pub(crate) use donjon_test_support::s3server;
pub(crate) use http::*;
pub(crate) use podman::*;
pub(crate) use registry::*;
pub(crate) use skopeo::*;

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

/// The default limit of one external command.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(120);
/// The limit for commands moving the large image.
pub(crate) const LARGE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a daemon may take to come up.
pub(crate) const STARTUP: Duration = Duration::from_secs(60);

/// Serializes the suites that start container daemons (containerd, dockerd, podman).
pub(crate) static HEAVY: Mutex<()> = Mutex::new(());

pub(crate) fn heavy_lock() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn e2e_enabled() -> bool {
    std::env::var("DONJON_E2E").as_deref() == Ok("1")
}

macro_rules! require_e2e {
    () => {
        if !e2e_enabled() {
            println!("skipped: set DONJON_E2E=1");
            return;
        }
    };
}
