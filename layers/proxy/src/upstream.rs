//! Which upstream serves a cached repository, and which hosts may be reached at all.
//!
//! A configured host may be anywhere (it was chosen by the operator). Any other host named by
//! a client (`f/<host>/…`, `?ns=<host>`) must be public: a name that resolves to a loopback,
//! private, link-local (cloud metadata), unique-local or otherwise special address is
//! refused, and the connection goes to the address that was checked, never to a second
//! lookup (no DNS rebinding between the check and the connect).
//!
//! ```
//! use donjon_proxy::upstream::{is_public, Upstreams};
//!
//! let up = Upstreams::default();
//! assert_eq!(up.resolve("docker.io", "library/nginx").unwrap().base.to_string(), "https://registry-1.docker.io/");
//! assert!(up.resolve("127.0.0.1", "a").is_err(), "a client may not name a loopback upstream");
//! assert!(!is_public("169.254.169.254".parse().unwrap()));
//! ```

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use donjon_core::mirror::DOCKER_HUB;
use http::Uri;

/// Credentials for an upstream.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// A configured upstream (one `registries[]` entry).
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) host: String,
    pub(crate) prefix: Option<String>,
    pub(crate) insecure: bool,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) url: Option<Uri>,
}

/// Where one cached repository's content comes from.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The host as cached names spell it (`docker.io`).
    pub host: String,
    /// The repository there (`library/nginx`).
    pub repo: String,
    /// The endpoint (`https://registry-1.docker.io/`).
    pub base: Uri,
    /// Credentials, when configured.
    pub credentials: Option<Credentials>,
}

/// Why an upstream cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `offline`: no upstream is asked.
    #[error("the proxy is offline: only cached content is served")]
    Offline,
    /// A client named a host that is not public.
    #[error("upstream {0} is not a public host, and not configured")]
    NotPublic(String),
    /// Not a host name.
    #[error("{0:?} is not an upstream host")]
    BadHost(String),
}

/// The configured upstreams, and the rule for the others.
#[derive(Debug, Default)]
pub struct Upstreams {
    entries: Vec<Entry>,
    offline: bool,
    /// Host names of configured endpoints: the resolver lets them resolve anywhere.
    trusted: HashSet<String>,
}

impl Upstreams {
    pub(crate) fn new(entries: Vec<Entry>, offline: bool) -> Self {
        let mut trusted = HashSet::new();
        for e in &entries {
            match &e.url {
                Some(u) => trusted.extend(u.host().map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())),
                None => {
                    let h = endpoint_host(&e.host);
                    trusted.insert(h.rsplit_once(':').map_or(h.as_str(), |(n, _)| n).to_string());
                }
            }
        }
        Self { entries, offline, trusted }
    }

    /// Whether no upstream is ever asked.
    pub fn offline(&self) -> bool {
        self.offline
    }

    /// The hosts with an entry.
    pub fn configured_hosts(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.host.as_str())
    }

    /// The entry for `repo` at `host`: the longest matching `path_prefix`, else the host's
    /// entry without one.
    fn entry(&self, host: &str, repo: &str) -> Option<&Entry> {
        let covers = |p: &str| repo == p || repo.strip_prefix(p).is_some_and(|r| r.starts_with('/'));
        self.entries
            .iter()
            .filter(|e| e.host == host)
            .filter(|e| e.prefix.as_deref().is_none_or(covers))
            .max_by_key(|e| e.prefix.as_ref().map_or(0, |p| p.len() + 1))
    }

    /// Where `repo` of `host` (as a cached name spells them) is fetched from.
    pub fn resolve(&self, host: &str, repo: &str) -> Result<Upstream, Refused> {
        if self.offline {
            return Err(Refused::Offline);
        }
        let entry = self.entry(host, repo);
        let base = match entry {
            Some(Entry { url: Some(u), .. }) => u.clone(),
            _ => {
                let scheme = if entry.is_some_and(|e| e.insecure) { "http" } else { "https" };
                let name = endpoint_host(host);
                if entry.is_none() {
                    let bare = name.rsplit_once(':').map_or(name.as_str(), |(n, _)| n);
                    if let Ok(ip) = bare.parse::<IpAddr>() {
                        if !is_public(ip) {
                            return Err(Refused::NotPublic(host.to_string()));
                        }
                    }
                }
                format!("{scheme}://{name}/").parse().map_err(|_| Refused::BadHost(host.to_string()))?
            }
        };
        Ok(Upstream {
            host: host.to_string(),
            repo: repo.to_string(),
            base,
            credentials: entry.and_then(|e| e.credentials.clone()),
        })
    }

    /// Whether a name may resolve to non-public addresses (it is a configured endpoint).
    pub(crate) fn trusted(&self, name: &str) -> bool {
        self.trusted.contains(&name.to_ascii_lowercase())
    }
}

/// The `host[:port]` to connect to for a cached host name: Docker Hub's API lives elsewhere.
fn endpoint_host(host: &str) -> String {
    if host == DOCKER_HUB {
        "registry-1.docker.io".into()
    } else {
        donjon_core::mirror::network_host(host)
    }
}

/// Whether an address is on the public internet: not loopback, private, link-local (the
/// cloud metadata address among them), carrier-grade NAT, unique-local, multicast,
/// documentation or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
                || (seg[0] == 0x0064 && seg[1] == 0xff9b))
        }
    }
}

/// Resolves upstream names for the connector, refusing non-public answers for names that are
/// not configured endpoints. The connector connects to what this returns, and nothing else.
#[derive(Clone, Debug)]
pub(crate) struct GuardedResolver {
    pub(crate) upstreams: Arc<Upstreams>,
}

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let upstreams = self.upstreams.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if upstreams.trusted(&host) {
                return Ok(addrs.into_iter());
            }
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("upstream {host} resolves to no public address"),
                ));
            }
            Ok(public.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: &str, prefix: Option<&str>, user: &str) -> Entry {
        Entry {
            host: host.into(),
            prefix: prefix.map(str::to_string),
            insecure: false,
            credentials: Some(Credentials { username: user.into(), password: "p".into() }),
            url: None,
        }
    }

    #[test]
    fn the_longest_prefix_on_boundaries_wins() {
        let up = Upstreams::new(
            vec![
                entry("ghcr.io", None, "any"),
                entry("ghcr.io", Some("org"), "org"),
                entry("ghcr.io", Some("org/team"), "team"),
            ],
            false,
        );
        let who = |repo: &str| up.resolve("ghcr.io", repo).unwrap().credentials.unwrap().username;
        assert_eq!(who("org/team/app"), "team");
        assert_eq!(who("org/other"), "org");
        assert_eq!(who("organisation/x"), "any", "prefixes match whole components");
        assert_eq!(who("org"), "org");
        assert!(up.resolve("quay.io", "a").unwrap().credentials.is_none(), "no entry: anonymous");
        assert_eq!(Upstreams::new(vec![], true).resolve("quay.io", "a").unwrap_err(), Refused::Offline);
    }

    #[test]
    fn private_addresses_are_refused_unless_configured() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        let up = Upstreams::new(vec![], false);
        assert!(matches!(up.resolve("10.0.0.1", "a"), Err(Refused::NotPublic(_))));
        let mut local = entry("10.0.0.1", None, "u");
        local.insecure = true;
        let up = Upstreams::new(vec![local], false);
        assert_eq!(up.resolve("10.0.0.1", "a").unwrap().base.to_string(), "http://10.0.0.1/");
        assert!(up.trusted("10.0.0.1"));
        let mut port = entry("127.0.0.1__5000", None, "u");
        port.insecure = true;
        let up = Upstreams::new(vec![port], false);
        assert_eq!(up.resolve("127.0.0.1__5000", "a").unwrap().base.to_string(), "http://127.0.0.1:5000/");
        assert!(Upstreams::new(vec![], false).resolve("127.0.0.1__5000", "a").is_err());
        assert!(!up.trusted("evil.example"));
    }
}
