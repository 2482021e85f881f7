use std::sync::Arc;

use donjon_core::Store;
use tower_layer::Layer;

use crate::service::Upload;

/// The default manifest size limit: 4 MiB, as Distribution and most clients assume.
pub const DEFAULT_MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// Handles blob uploads and manifest pushes into a [`Store`]; every other request passes to the
/// inner service.
///
/// ```
/// use std::sync::Arc;
/// use donjon_core::memory::MemoryStore;
/// let layer = donjon_upload::UploadLayer::new(Arc::new(MemoryStore::default()))
///     .max_manifest_size(8 << 20);
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct UploadLayer {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) max_manifest: usize,
}

impl UploadLayer {
    /// Uploads into `store`, manifests up to 4 MiB.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { shared: Arc::new(Shared { store, max_manifest: DEFAULT_MAX_MANIFEST_SIZE }) }
    }

    /// The largest manifest accepted; larger ones get `MANIFEST_INVALID` with 413.
    pub fn max_manifest_size(self, bytes: usize) -> Self {
        Self { shared: Arc::new(Shared { store: self.shared.store.clone(), max_manifest: bytes }) }
    }
}

impl<S> Layer<S> for UploadLayer {
    type Service = Upload<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Upload { inner, shared: self.shared.clone() }
    }
}
