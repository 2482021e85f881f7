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

use donjon_core::config::{duration, ConfigError, Warnings};
use serde::de::IgnoredAny;
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
    /// The longest wait for an upstream connection (default 10s).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// The longest wait for an upstream's response headers, and between two pieces of its
    /// body (default 60s).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub read_timeout: Option<Duration>,
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
    pub stream: Option<IgnoredAny>,
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
}

/// Upstream connections time out after this long without progress, by default.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// Checks the section; what cannot work names its key.
    pub fn check(&self, warnings: &mut Warnings) -> Result<(), ConfigError> {
        if self.eviction_interval.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("registry_proxies.eviction_interval", "must be above zero"));
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
            });
        }
        Ok(Arc::new(Upstreams::new(entries, self.offline)))
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
