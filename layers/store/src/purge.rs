//! Upload purging (Distribution's `storage.maintenance.uploadpurging`): a background future that
//! ends upload sessions older than `age`, every `interval`, and removes what crashes left. The
//! layer hands it out; the binary spawns it, and so can a library user.
//!
//! ```
//! use std::sync::Arc;
//! use donjon_core::memory::MemoryStore;
//! use donjon_store::{ContentStoreLayer, UploadPurging};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let layer = ContentStoreLayer::new(Arc::new(MemoryStore::default()));
//! let purger = layer.upload_purger(UploadPurging::default());
//! let handle = tokio::spawn(purger);
//! # handle.abort();
//! # });
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use donjon_core::Store;
use serde::Serialize;

/// When upload sessions are purged. The defaults are Distribution's: sessions older than a
/// week, checked daily.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UploadPurging {
    /// Sessions older than this are purged.
    #[serde(with = "secs")]
    pub age: Duration,
    /// How often.
    #[serde(with = "secs")]
    pub interval: Duration,
    /// Count, but do not delete.
    pub dry_run: bool,
}

impl Default for UploadPurging {
    fn default() -> Self {
        Self {
            age: Duration::from_secs(168 * 3600),
            interval: Duration::from_secs(24 * 3600),
            dry_run: false,
        }
    }
}

pub(crate) mod secs {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}s", d.as_secs()))
    }
}

/// The purging loop over `store`. The first run waits (up to ten minutes) so that a start-up
/// never waits on a walk of the store.
pub fn upload_purger(store: Arc<dyn Store>, p: UploadPurging) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let mut wait = p.interval.min(Duration::from_secs(600));
        loop {
            tokio::time::sleep(wait).await;
            wait = p.interval;
            let cutoff = SystemTime::now().checked_sub(p.age).unwrap_or(SystemTime::UNIX_EPOCH);
            match store.purge_uploads(cutoff, p.dry_run).await {
                Ok(n) if p.dry_run => tracing::info!(sessions = n, "upload purging (dry run): would purge"),
                Ok(n) => tracing::info!(sessions = n, "upload purging: purged"),
                Err(e) => tracing::warn!(error = %e, "upload purging failed"),
            }
        }
    }
}
