//! The proxy layer's settings: Trow's `registry_proxies` section (`registries[]` with `host`,
//! `path_prefix`, `insecure`, `username`, `password`, `password_file`; `offline`), with donjon's
//! keys beside it: `url` (send a host's traffic to another endpoint: a chain of mirrors, or a
//! test upstream), how often a tag is checked upstream, timeouts and a CA file.
//!
//! Which entry serves a repository: among the entries for its host, the one whose
//! `path_prefix` is the longest match on `/` boundaries; an entry without a prefix is the
//! host's fallback; no entry at all means anonymous access to a public host.
//!
//! ```
//! use donjon_proxy::ProxyConfig;
//!
//! let yaml = r#"
//! registries:
//!   - {host: docker.io, username: me, password: secret}
//!   - {host: ghcr.io, path_prefix: my-org, username: bot, password: token}
//!   - {host: internal.example, url: "http://10.0.0.5:5000"}
//! check_interval: 5m
//! "#;
//! let c: ProxyConfig = serde_yaml::from_str(yaml).unwrap();
//! let up = c.upstreams().unwrap();
//! let hub = up.resolve("docker.io", "library/nginx").unwrap();
//! assert_eq!(hub.base.to_string(), "https://registry-1.docker.io/");
//! assert_eq!(up.resolve("internal.example", "x").unwrap().base.to_string(), "http://10.0.0.5:5000/");
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use donjon_core::config::{duration, Accepted, ConfigError, Warnings};
use serde::{Deserialize, Serialize};

use crate::upstream::{Credentials, Upstreams};

/// The `registry_proxies` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyConfig {
    /// The upstream registries with settings of their own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registries: Vec<RegistryConfig>,
    /// Trow's `offline`: serve what is cached, never ask an upstream.
    pub offline: bool,
    /// The upstream host of reads of local names that are not here (`docker.io`): what makes
    /// donjon docker's `--registry-mirror` or a podman mirror, whose requests carry no `ns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// How long a tag's cached copy is served without asking upstream again (default 0: a
    /// `HEAD` upstream on every tag pull, as Trow does; Docker Hub does not count a `HEAD`
    /// against its pull limit).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub check_interval: Option<Duration>,
    /// The longest wait for an upstream connection (default 5s).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// The longest wait for an upstream's response headers, and between two pieces of its
    /// body (default 15s).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub read_timeout: Option<Duration>,
    /// The longest a client waits for an upstream's answer, retries, redirects and the token
    /// dance included (default 20s): a dead or silent upstream costs a client this, then a
    /// `502 UNAVAILABLE`.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub upstream_timeout: Option<Duration>,
    /// The largest blob fetched from an upstream (default 64GiB; `max_size`, when smaller):
    /// a blob announced larger is refused, and one streamed past it is cut off and dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_blob_size: Option<bytesize::ByteSize>,
    /// A PEM file of CA certificates to trust besides the system's and Mozilla's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Where blobs being fetched are spooled (default `<data dir>/proxy-spool`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
    /// Trow's `max_size`: past this much cached content (`20GiB`, `500MB`; a bare number is
    /// bytes), the least recently pulled cached manifests are evicted, and the blobs only
    /// they needed collected. Pushed content is never evicted, nor counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<bytesize::ByteSize>,
    /// Cached manifests not pulled for this long are evicted (default: never).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// How often eviction looks (default 10m).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub eviction_interval: Option<Duration>,
    /// Trow's `stream`: donjon always streams; read and ignored.
    #[serde(skip_serializing)]
    pub stream: Option<Accepted>,
}

/// One entry of `registries`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// The host, as references and `ns=` name it (`docker.io`, `ghcr.io`).
    pub host: String,
    /// Repositories under this prefix use this entry (longest prefix wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Plain HTTP.
    pub insecure: bool,
    /// The user for the upstream's token service or Basic auth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Their password (never printed).
    #[serde(skip_serializing)]
    pub password: Option<String>,
    /// A file holding the password (its first line): a mounted secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Where to send this host's requests instead (`https://mirror.example:5000`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Token services on other origins that may get this entry's credentials
    /// (`http://10.0.0.5:5001`): by default only the endpoint's own origin, or its host over
    /// HTTPS (and `auth.docker.io` for Docker Hub), do.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub realms: Vec<String>,
}

/// Upstream connections time out after this long without progress, by default.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A client's whole wait for an upstream answer, by default.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest blob fetched, by default.
const MAX_BLOB_SIZE: u64 = 64 << 30;

impl ProxyConfig {
    /// Whether the section asks for anything: an entry, or `offline`.
    pub fn enabled(&self) -> bool {
        !self.registries.is_empty() || self.offline || self.default.is_some()
    }

    /// How long a tag's cached copy is trusted without a check.
    pub fn check_interval(&self) -> Duration {
        self.check_interval.unwrap_or(Duration::ZERO)
    }

    /// How often eviction looks, when `max_size` or `max_age` asks for it.
    pub fn eviction_interval(&self) -> Option<Duration> {
        (self.max_size.is_some() || self.max_age.is_some())
            .then(|| self.eviction_interval.unwrap_or(Duration::from_secs(600)))
    }

    /// The upstream connection timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout.unwrap_or(CONNECT_TIMEOUT)
    }

    /// The upstream read timeout.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout.unwrap_or(READ_TIMEOUT)
    }

    /// The upstream client's timeouts.
    pub fn timeouts(&self) -> crate::client::Timeouts {
        crate::client::Timeouts {
            connect: self.connect_timeout(),
            read: self.read_timeout(),
            total: self.upstream_timeout.unwrap_or(UPSTREAM_TIMEOUT),
        }
    }

    /// The largest blob fetched: `max_blob_size`, or `max_size` when smaller.
    pub fn max_blob_size(&self) -> u64 {
        let ceiling = self.max_blob_size.map_or(MAX_BLOB_SIZE, |s| s.as_u64());
        self.max_size.map_or(ceiling, |m| ceiling.min(m.as_u64()))
    }

    /// Checks the section; what cannot work names its key.
    pub fn check(&self, warnings: &mut Warnings) -> Result<(), ConfigError> {
        if self.eviction_interval.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("registry_proxies.eviction_interval", "must be above zero"));
        }
        for (key, d) in [
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
            ("upstream_timeout", self.upstream_timeout),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(ConfigError::new(format!("registry_proxies.{key}"), "must be above zero"));
            }
        }
        let _ = warnings;
        self.upstreams().map(drop)
    }

    /// The entries, resolved: passwords read, URLs parsed.
    pub fn upstreams(&self) -> Result<Arc<Upstreams>, ConfigError> {
        let mut entries = vec![];
        for (i, r) in self.registries.iter().enumerate() {
            let at = |k: &str| format!("registry_proxies.registries[{i}].{k}");
            if r.host.trim().is_empty() {
                return Err(ConfigError::new(at("host"), "is empty"));
            }
            let password = match (&r.password, &r.password_file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(at("password_file"), "and password are both set: keep one"))
                }
                (Some(p), None) => Some(p.clone()),
                (None, Some(f)) => Some(
                    std::fs::read_to_string(f).map(|t| t.lines().next().unwrap_or("").to_string()).map_err(
                        |e| {
                            ConfigError::new(at("password_file"), format!("cannot read {}: {e}", f.display()))
                        },
                    )?,
                ),
                (None, None) => None,
            };
            let credentials = match (&r.username, password) {
                (Some(u), Some(p)) => Some(Credentials { username: u.clone(), password: p }),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(ConfigError::new(at("password"), "is missing for the username"))
                }
                (None, Some(_)) => {
                    return Err(ConfigError::new(at("username"), "is missing for the password"))
                }
            };
            let url = match &r.url {
                Some(u) => Some(
                    u.parse::<http::Uri>()
                        .ok()
                        .filter(|u| {
                            matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
                        })
                        .ok_or_else(|| ConfigError::new(at("url"), format!("{u:?} is not an http(s) URL")))?,
                ),
                None => None,
            };
            let mut realms = vec![];
            for (j, r) in r.realms.iter().enumerate() {
                let origin = r
                    .parse::<http::Uri>()
                    .ok()
                    .filter(|u| u.path() == "/" || u.path().is_empty())
                    .as_ref()
                    .and_then(crate::upstream::Origin::of)
                    .ok_or_else(|| {
                        ConfigError::new(
                            at(&format!("realms[{j}]")),
                            format!(
                                "{r:?} is not an origin: write scheme://host[:port], as http://10.0.0.5:5001"
                            ),
                        )
                    })?;
                realms.push(origin);
            }
            entries.push(crate::upstream::Entry {
                host: donjon_core::mirror::canonical_host(r.host.trim()),
                prefix: r
                    .path_prefix
                    .as_deref()
                    .map(|p| p.trim_matches('/').to_string())
                    .filter(|p| !p.is_empty()),
                insecure: r.insecure,
                credentials,
                url,
                realms,
            });
        }
        Ok(Arc::new(Upstreams::new(entries, self.offline)))
    }
}

/// The pull-through cache, when an upstream, a default or offline mode is configured; its
/// spool under the data directory.
#[donjon_core::config::async_trait]
impl donjon_core::config::LayerConfig for ProxyConfig {
    type Layer = crate::ProxyCacheLayer;
    async fn layer(
        &self,
        cx: &donjon_core::config::BuildContext,
    ) -> Result<Option<crate::ProxyCacheLayer>, donjon_core::config::ConfigError> {
        if !self.enabled() {
            return Ok(None);
        }
        crate::ProxyCacheLayer::new(cx.store.clone(), self, &cx.data_dir).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> ProxyConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn errors_name_their_key() {
        let e = parse("registries: [{host: ''}]").upstreams().unwrap_err();
        assert_eq!(e.key, "registry_proxies.registries[0].host");
        let e = parse("registries: [{host: a, url: 'ftp://x'}]").upstreams().unwrap_err();
        assert_eq!(e.key, "registry_proxies.registries[0].url");
        let e = parse("registries: [{host: a, username: u}]").upstreams().unwrap_err();
        assert_eq!(e.key, "registry_proxies.registries[0].password");
        let e = parse("registries: [{host: a, username: u, password_file: /nonexistent}]")
            .upstreams()
            .unwrap_err();
        assert_eq!(e.key, "registry_proxies.registries[0].password_file");
        let e = parse("registries: [{host: a, realms: ['http://h:5001/token']}]").upstreams().unwrap_err();
        assert_eq!(e.key, "registry_proxies.registries[0].realms[0]");
        let mut w = Warnings::default();
        let e = parse("upstream_timeout: 0s").check(&mut w).unwrap_err();
        assert_eq!(e.key, "registry_proxies.upstream_timeout");
    }

    #[test]
    fn a_dead_upstream_costs_a_client_seconds_and_the_blob_ceiling_follows_max_size() {
        let c = parse("");
        let t = c.timeouts();
        assert!(t.total < Duration::from_secs(30), "{t:?}");
        assert!(t.read <= t.total && t.connect <= t.total, "{t:?}");
        assert_eq!(c.max_blob_size(), 64 << 30);
        assert_eq!(parse("max_size: 1GiB").max_blob_size(), 1 << 30);
        assert_eq!(parse("max_size: 1GiB\nmax_blob_size: 1MiB").max_blob_size(), 1 << 20);
    }

    #[test]
    fn passwords_from_files_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\nignored\n").unwrap();
        let c =
            parse(&format!("registries: [{{host: ghcr.io, username: u, password_file: {}}}]", f.display()));
        let up = c.upstreams().unwrap();
        let r = up.resolve("ghcr.io", "a/b").unwrap();
        assert_eq!(r.credentials.as_ref().unwrap().password, "s3cret");
        let c = parse("registries: [{host: ghcr.io, username: u, password: hunter2}]");
        assert!(!serde_yaml::to_string(&c).unwrap().contains("hunter2"));
    }
}
