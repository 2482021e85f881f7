use std::sync::Arc;

use donjon_core::Store;
use tower_layer::Layer;

use crate::service::ContentStore;
use crate::ContentConfig;

/// Answers registry reads and deletes from a [`Store`]: `GET /v2/`, blobs (with `Range`),
/// manifests, tags, catalog and referrers. Requests without a registry route pass to the inner
/// service; registry routes with a method no layer above handled get `UNSUPPORTED`.
///
/// ```
/// use std::sync::Arc;
/// use donjon_core::memory::MemoryStore;
/// use donjon_store::ContentStoreLayer;
///
/// let layer = ContentStoreLayer::new(Arc::new(MemoryStore::default()))
///     .delete_enabled(true) // off by default, as in Distribution
///     .catalog_max_entries(500);
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct ContentStoreLayer {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) delete_enabled: bool,
    pub(crate) catalog_max: usize,
}

impl ContentStoreLayer {
    /// Serves `store` with [`ContentConfig`]'s defaults: deletes enabled, catalog pages of at
    /// most 1000 entries.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_config(store, &ContentConfig::default())
    }

    /// Serves `store` as `config` says ([`ContentConfig::build`]).
    pub fn with_config(store: Arc<dyn Store>, config: &ContentConfig) -> Self {
        let shared =
            Shared { store, delete_enabled: config.delete_enabled, catalog_max: config.catalog_max_entries };
        Self { shared: Arc::new(shared) }
    }

    /// Whether `DELETE` of blobs, manifests and tags is allowed (Distribution's
    /// `storage.delete.enabled`). Refused deletes answer `UNSUPPORTED` (405).
    pub fn delete_enabled(mut self, enabled: bool) -> Self {
        Arc::make_mut(&mut self.shared).delete_enabled = enabled;
        self
    }

    /// The largest catalog page, and the default `n`.
    pub fn catalog_max_entries(mut self, n: usize) -> Self {
        Arc::make_mut(&mut self.shared).catalog_max = n.max(1);
        self
    }
}

impl ContentStoreLayer {
    /// The background future of upload purging over this layer's store
    /// ([`crate::purge::upload_purger`]): spawn it to run it.
    pub fn upload_purger(
        &self,
        p: crate::UploadPurging,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        crate::purge::upload_purger(self.shared.store.clone(), p)
    }
}

impl<S> Layer<S> for ContentStoreLayer {
    type Service = ContentStore<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ContentStore::new(self.clone(), inner)
    }
}
