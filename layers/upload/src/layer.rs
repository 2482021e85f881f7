use std::sync::Arc;

use donjon_core::manifest::{Child, Platform};
use donjon_core::Store;
use tower_layer::Layer;

use crate::service::Upload;
use crate::DEFAULT_MAX_MANIFEST_SIZE;

/// Which children of a pushed index must already be in the repository (Distribution 3's
/// `validation.manifests.indexes.platforms`). The blobs of an image manifest are required
/// unless [`UploadLayer::accept_missing_blobs`] says otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum IndexChildren {
    /// Every child: an index is complete when it is accepted (the default).
    #[default]
    All,
    /// None: a sparse index is accepted, and its absent children answer 404 until pushed
    /// (what a mirror that stores one platform of an image needs).
    None,
    /// The children for these platforms; children for others, or with no platform, may be
    /// absent.
    Platforms(Vec<Platform>),
}

impl IndexChildren {
    /// Whether `child` must be present.
    pub fn requires(&self, child: &Child) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::Platforms(list) => {
                child.platform.as_ref().is_some_and(|p| list.iter().any(|want| want.matches(p)))
            }
        }
    }
}

/// Handles blob uploads and manifest pushes into a [`Store`]; every other request passes to the
/// inner service.
///
/// ```
/// use std::sync::Arc;
/// use donjon_core::memory::MemoryStore;
/// use donjon_upload::{IndexChildren, UploadLayer};
///
/// let layer = UploadLayer::new(Arc::new(MemoryStore::default()))
///     .max_manifest_size(8 << 20)
///     .index_children(IndexChildren::Platforms(vec!["linux/amd64".parse().unwrap()]));
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct UploadLayer {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) max_manifest: usize,
    pub(crate) index_children: IndexChildren,
    pub(crate) accept_missing_blobs: bool,
}

impl UploadLayer {
    /// Uploads into `store`, manifests up to 4 MiB, complete indexes only.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let shared = Shared {
            store,
            max_manifest: DEFAULT_MAX_MANIFEST_SIZE,
            index_children: IndexChildren::All,
            accept_missing_blobs: false,
        };
        Self { shared: Arc::new(shared) }
    }

    /// The largest manifest accepted; larger ones get `MANIFEST_INVALID` with 413.
    pub fn max_manifest_size(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.shared).max_manifest = bytes;
        self
    }

    /// Which children of an index must be present when it is pushed.
    pub fn index_children(mut self, rule: IndexChildren) -> Self {
        Arc::make_mut(&mut self.shared).index_children = rule;
        self
    }

    /// Whether an image manifest may name a config or layer this repository does not hold (the
    /// distribution-spec's sparse data set: a layer that is pulled from elsewhere, or never).
    /// Off by default, as in Distribution, which always answers `MANIFEST_BLOB_UNKNOWN`; a
    /// blob that is present must still have the size its descriptor claims.
    pub fn accept_missing_blobs(mut self, accept: bool) -> Self {
        Arc::make_mut(&mut self.shared).accept_missing_blobs = accept;
        self
    }
}

impl<S> Layer<S> for UploadLayer {
    type Service = Upload<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Upload::new(self.clone(), inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(platform: Option<&str>) -> Child {
        Child { digest: donjon_core::Digest::sha256_of(b"x"), platform: platform.map(|p| p.parse().unwrap()) }
    }

    #[test]
    fn which_children_are_required() {
        let list =
            IndexChildren::Platforms(vec!["linux/amd64".parse().unwrap(), "linux/arm/v7".parse().unwrap()]);
        assert!(list.requires(&child(Some("linux/amd64"))));
        assert!(list.requires(&child(Some("linux/arm/v7"))));
        assert!(!list.requires(&child(Some("linux/arm/v6"))));
        assert!(!list.requires(&child(Some("windows/amd64"))));
        assert!(!list.requires(&child(None)));
        assert!(IndexChildren::All.requires(&child(None)));
        assert!(!IndexChildren::None.requires(&child(Some("linux/amd64"))));
    }
}
