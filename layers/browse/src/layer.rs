//! [`BrowseLayer`]: what the page knows of the registry it shows.

use std::sync::Arc;

use donjon_core::claim::Claiming;
use donjon_core::Store;
use tower_layer::Layer;

use crate::service::{Browse, Shared};

/// Serves the read-only web page under `/ui/`; every other request passes on unchanged. See
/// the [crate docs](crate).
#[derive(Clone, Debug)]
pub struct BrowseLayer {
    pub(crate) shared: Arc<Shared>,
}

impl Default for BrowseLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl BrowseLayer {
    /// The page, with no login form (the registry has no token endpoint of its own), the
    /// request's `Host` in pull commands, and tags sorted by name only.
    pub fn new() -> Self {
        Self { shared: Arc::new(Shared::default()) }
    }

    /// The registry's public host name (Trow's `-n`), for the pull commands the page offers;
    /// default: the request's `Host`.
    pub fn public_host(mut self, host: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.shared).public_host = Some(host.into());
        self
    }

    /// The path of the registry's own token endpoint (`/v2/token`): the login form obtains a
    /// refresh token there, and each page an access token for what it shows.
    pub fn token_endpoint(mut self, path: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.shared).token_path = Some(path.into());
        self
    }

    /// The store, for the time each tag was pushed (a repository's tags sorted by push time).
    /// What is shown is still asked of the registry below, with the caller's rights.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        Arc::make_mut(&mut self.shared).store = Some(store);
        self
    }

    /// Whether `f/<host>/…` repositories are the pull-through cache's: they are then shown as
    /// cached content of `<host>`.
    pub fn pull_through(mut self, on: bool) -> Self {
        Arc::make_mut(&mut self.shared).pull_through = on;
        self
    }

    /// Repositories and tags per page (default 100).
    pub fn page_size(mut self, n: usize) -> Self {
        Arc::make_mut(&mut self.shared).page = n.max(1);
        self
    }

    /// How many repository names one filtered catalog page looks through at most before it
    /// offers to go on (default 2,000), so that a filter that matches little stays fast.
    pub fn filter_budget(mut self, n: usize) -> Self {
        Arc::make_mut(&mut self.shared).scan = n.max(1);
        self
    }
}

impl<S> Layer<S> for BrowseLayer {
    type Service = Browse<S>;

    fn layer(&self, inner: S) -> Browse<S> {
        Claiming::new(self.clone(), inner)
    }
}
