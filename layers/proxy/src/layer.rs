use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use donjon_core::claim::Claiming;
use donjon_core::mirror::Mirrors;
use donjon_core::{Name, Store};
use tower_layer::Layer;

use crate::client::UpstreamClient;
use crate::fill::Fills;
use crate::service::ProxyCache;
use crate::upstream::Upstreams;

/// Serves reads of pull-through names (`f/<host>/<repo>`, which the route parser also makes of
/// `?ns=<host>` and Trow's `f/docker/…`) from their upstream, caching what it fetches in the
/// store; refuses writes to them; passes every other request on. See the crate docs.
///
/// ```
/// use std::sync::Arc;
/// use donjon_core::memory::MemoryStore;
/// use donjon_proxy::{ProxyCacheLayer, ProxyConfig};
///
/// let dir = tempfile::tempdir().unwrap();
/// let config: ProxyConfig = serde_yaml::from_str("registries: [{host: docker.io}]").unwrap();
/// let layer = ProxyCacheLayer::new(Arc::new(MemoryStore::default()), &config, dir.path()).unwrap();
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct ProxyCacheLayer {
    pub(crate) shared: Arc<Shared>,
}

/// What every service of the layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) client: UpstreamClient,
    pub(crate) fills: Arc<Fills>,
    pub(crate) check_interval: Duration,
    /// The upstream of local names that are not here (docker's `--registry-mirror`).
    pub(crate) default: Option<String>,
    /// When each cached tag was last checked upstream.
    pub(crate) checked: Mutex<HashMap<(Name, String), Instant>>,
    /// When each cached manifest reference was last pulled, for eviction.
    pub(crate) pulled: Mutex<HashMap<(Name, String), SystemTime>>,
    /// Eviction: the size limit, the age limit, how often.
    pub(crate) max_size: Option<u64>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) eviction_interval: Option<Duration>,
    /// When this process started caching (eviction knows no pull before it).
    pub(crate) started: SystemTime,
}

impl Shared {
    /// Notes a pull of a cached manifest (in memory only).
    pub(crate) fn pulled(&self, name: &Name, reference: &donjon_core::Reference) {
        let Ok(mut p) = self.pulled.lock() else { return };
        let key = (name.clone(), reference.to_string());
        if p.len() >= CHECKED_MAX && !p.contains_key(&key) {
            // the longest unpulled entry goes: it only ever makes its manifest look older
            if let Some(oldest) = p.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                p.remove(&oldest);
            }
        }
        p.insert(key, SystemTime::now());
    }

    /// Forgets an evicted manifest's pulls.
    pub(crate) fn forget(&self, name: &Name, digest: &donjon_core::Digest) {
        if let Ok(mut p) = self.pulled.lock() {
            p.remove(&(name.clone(), digest.to_string()));
        }
    }
}

/// The most tag check times remembered (forgetting one only costs a `HEAD`).
pub(crate) const CHECKED_MAX: usize = 65_536;

impl ProxyCacheLayer {
    /// A layer caching into `store`, with `config`'s upstreams; blobs being fetched are spooled
    /// under `data_dir` (or `config.spool_dir`).
    pub fn new(
        store: Arc<dyn Store>,
        config: &crate::ProxyConfig,
        data_dir: &std::path::Path,
    ) -> Result<Self, donjon_core::config::ConfigError> {
        let upstreams = config.upstreams()?;
        let client = UpstreamClient::new(config.timeouts(), config.ca_file.as_deref())
            .map_err(|e| donjon_core::config::ConfigError::new("registry_proxies.ca_file", e))?;
        let spool: PathBuf = config.spool_dir.clone().unwrap_or_else(|| data_dir.join("proxy-spool"));
        let fills = Arc::new(Fills::new(spool, store.clone(), config.read_timeout(), config.max_blob_size()));
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                upstreams,
                client,
                fills,
                check_interval: config.check_interval(),
                default: config.default.as_deref().map(donjon_core::mirror::canonical_host),
                checked: Mutex::default(),
                pulled: Mutex::default(),
                max_size: config.max_size.map(|s| s.as_u64()),
                max_age: config.max_age,
                eviction_interval: config.eviction_interval(),
                started: SystemTime::now(),
            }),
        })
    }

    /// Eviction (`max_size`, `max_age`), as a future to spawn: a pass every
    /// `eviction_interval`, each logged, none while `read_only` is on. Without a limit it does
    /// nothing and ends at once.
    pub fn background(
        &self,
        read_only: donjon_core::store::ReadOnlySwitch,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            let Some(interval) = shared.eviction_interval else { return };
            // The garbage collector's settle and grace; an interval under a minute (tests)
            // shortens them.
            let settle = interval.min(Duration::from_secs(60));
            let grace = interval.min(Duration::from_secs(600));
            loop {
                tokio::time::sleep(interval).await;
                if read_only.is_on() {
                    tracing::debug!("proxy cache eviction: read-only, skipped");
                    continue;
                }
                match crate::evict::evict(&shared, shared.max_size, shared.max_age, settle, grace).await {
                    Ok(e) if e.manifests.is_empty() => {
                        tracing::debug!(
                            cached_bytes = e.cached_bytes,
                            "proxy cache eviction: nothing to evict"
                        )
                    }
                    Ok(e) => {
                        donjon_core::metrics::metrics().proxy_evicted.inc_by(e.manifests.len() as u64);
                        tracing::info!(
                            cached_bytes = e.cached_bytes,
                            manifests = e.manifests.len(),
                            bytes_freed = e.bytes_freed,
                            "proxy cache eviction: {} cached manifest(s) evicted, {} bytes freed",
                            e.manifests.len(),
                            e.bytes_freed
                        )
                    }
                    Err(e) => tracing::error!("proxy cache eviction stopped: {e}"),
                }
            }
        }
    }

    /// Which `?ns=<host>` requests are mirror requests: every host (public hosts may be
    /// proxied without an entry), but this registry's own `names`. For the route parser.
    pub fn mirrors<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, names: I) -> Mirrors {
        Mirrors::any().local(names)
    }
}

impl<S> Layer<S> for ProxyCacheLayer {
    type Service = ProxyCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Claiming::new(self.clone(), inner)
    }
}
