//! The `ui` section: whether the web page is served.
//!
//! ```
//! use donjon_browse::BrowseConfig;
//!
//! let on: BrowseConfig = serde_yaml::from_str("{}").unwrap();
//! assert!(on.enabled);
//! let off: BrowseConfig = serde_yaml::from_str("enabled: false").unwrap();
//! assert!(off.build().is_none());
//! ```

use serde::{Deserialize, Serialize};

use crate::BrowseLayer;

/// The `ui` section of donjon's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrowseConfig {
    /// Serve the read-only web page at `/ui/` (default: yes).
    pub enabled: bool,
}

impl Default for BrowseConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl BrowseConfig {
    /// The layer, when the page is enabled; the caller adds what it knows of the rest of the
    /// registry (its public name, its token endpoint, its store, whether it caches upstreams).
    pub fn build(&self) -> Option<BrowseLayer> {
        self.enabled.then(BrowseLayer::new)
    }
}

/// The page, its pull commands naming the public host name when one is set.
#[donjon_core::config::async_trait]
impl donjon_core::config::LayerConfig for BrowseConfig {
    type Layer = BrowseLayer;
    async fn layer(
        &self,
        cx: &donjon_core::config::BuildContext,
    ) -> Result<Option<BrowseLayer>, donjon_core::config::ConfigError> {
        Ok(self.build().map(|l| match &cx.hostname {
            Some(h) => l.public_host(h.clone()),
            None => l,
        }))
    }
}
