//! The upload layer's settings: the manifest size limit and which children of a pushed index
//! must be present. Distribution's `validation.manifests.indexes` section maps onto
//! [`IndexChildren`]; donjon's own shape is `all`, `none` or a list of `os/arch[/variant]`.
//!
//! ```
//! use std::sync::Arc;
//! use donjon_core::memory::MemoryStore;
//! use donjon_upload::{IndexChildren, UploadConfig};
//!
//! let config: UploadConfig =
//!     serde_json::from_str(r#"{"max_manifest_size": 8388608, "index_children": ["linux/amd64"]}"#)
//!         .unwrap();
//! assert_eq!(config.index_children, IndexChildren::Platforms(vec!["linux/amd64".parse().unwrap()]));
//! let layer = config.build(Arc::new(MemoryStore::default()));
//! # let _ = layer;
//! ```

use std::sync::Arc;

use donjon_core::config::ConfigError;
use donjon_core::manifest::Platform;
use donjon_core::Store;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{IndexChildren, UploadLayer};

/// The default manifest size limit: 4 MiB, as Distribution and most clients assume.
pub const DEFAULT_MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// The upload layer's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UploadConfig {
    /// The largest manifest accepted, in bytes (default 4 MiB); larger ones get
    /// `MANIFEST_INVALID` with 413.
    pub max_manifest_size: usize,
    /// Which children of a pushed index must be present (default: all).
    pub index_children: IndexChildren,
    /// Whether an image manifest may name blobs the repository does not hold (default: no,
    /// as in Distribution); see [`UploadLayer::accept_missing_blobs`].
    pub accept_missing_blobs: bool,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            max_manifest_size: DEFAULT_MAX_MANIFEST_SIZE,
            index_children: IndexChildren::All,
            accept_missing_blobs: false,
        }
    }
}

impl UploadConfig {
    /// Checks the values.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.max_manifest_size < 1024 {
            return Err(ConfigError::new("max_manifest_size", "must be at least 1024 bytes"));
        }
        Ok(())
    }

    /// The layer over `store`.
    pub fn build(&self, store: Arc<dyn Store>) -> UploadLayer {
        UploadLayer::new(store)
            .max_manifest_size(self.max_manifest_size)
            .index_children(self.index_children.clone())
            .accept_missing_blobs(self.accept_missing_blobs)
    }
}

#[donjon_core::config::async_trait]
impl donjon_core::config::LayerConfig for UploadConfig {
    type Layer = UploadLayer;
    async fn layer(
        &self,
        cx: &donjon_core::config::BuildContext,
    ) -> Result<Option<UploadLayer>, ConfigError> {
        Ok(Some(self.build(cx.store.clone())))
    }
}

impl Serialize for IndexChildren {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IndexChildren::All => s.serialize_str("all"),
            IndexChildren::None => s.serialize_str("none"),
            IndexChildren::Platforms(list) => s.collect_seq(list.iter().map(ToString::to_string)),
        }
    }
}

impl<'de> Deserialize<'de> for IndexChildren {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<String>),
        }
        use serde::de::Error;
        match Raw::deserialize(d)? {
            Raw::Word(w) => IndexChildren::from_word(&w)
                .ok_or_else(|| D::Error::custom(format!("{w:?} is not all, none or a list of os/arch"))),
            Raw::List(items) => IndexChildren::platforms(&items).map_err(D::Error::custom),
        }
    }
}

impl IndexChildren {
    /// `all` or `none`, in any case.
    pub fn from_word(word: &str) -> Option<Self> {
        match word.to_ascii_lowercase().as_str() {
            "all" => Some(Self::All),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    /// The children for these `os/arch[/variant]` platforms.
    pub fn platforms<T: AsRef<str>>(items: &[T]) -> Result<Self, String> {
        items
            .iter()
            .map(|p| p.as_ref().parse::<Platform>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::Platforms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_defaults() {
        let c: UploadConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, UploadConfig::default());
        assert_eq!(c.max_manifest_size, 4 << 20);
        let c: UploadConfig = serde_json::from_str(r#"{"index_children": "None"}"#).unwrap();
        assert_eq!(c.index_children, IndexChildren::None);
        assert_eq!(serde_json::to_string(&IndexChildren::All).unwrap(), r#""all""#);
        let e = serde_json::from_str::<UploadConfig>(r#"{"index_children": ["amd64"]}"#).unwrap_err();
        assert!(e.to_string().contains("amd64"), "{e}");
        assert!(serde_json::from_str::<UploadConfig>(r#"{"index_children": "some"}"#).is_err());
        assert!(UploadConfig { max_manifest_size: 10, ..Default::default() }.check().is_err());
    }
}
