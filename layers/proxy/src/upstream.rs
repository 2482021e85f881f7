//! Which upstream serves a cached repository, and which hosts may be reached at all.
//!
//! A configured endpoint may be anywhere (it was chosen by the operator). Trust is an
//! *origin* (scheme, host, port), and only the request for that entry's repository has it:
//! anything else — a host a client names (`f/<host>/…`, `?ns=<host>`), a redirect or a token
//! realm the upstream names, even on another port of a configured host or at another
//! configured upstream — must be public: a name that resolves to a loopback, private,
//! link-local (cloud metadata), unique-local or otherwise special address is refused, and the
//! connection goes to the address that was checked, never to a second lookup (no DNS
//! rebinding between the check and the connect).
//!
//! ```
//! use donjon_proxy::upstream::{is_public, Upstreams};
//!
//! let up = Upstreams::default();
//! assert_eq!(up.resolve("docker.io", "library/nginx").unwrap().base.to_string(), "https://registry-1.docker.io/");
//! assert!(up.resolve("127.0.0.1", "a").is_err(), "a client may not name a loopback upstream");
//! assert!(!is_public("169.254.169.254".parse().unwrap()));
//! ```

use std::net::{IpAddr, SocketAddr};

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
    /// Other origins this entry's token realm may be on (they get its credentials).
    pub(crate) realms: Vec<Origin>,
}

/// Where a URL points: scheme, lower-case host and port (the scheme's default when absent),
/// the unit of trust for connections and credentials.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// The host, lower-case, without IPv6 brackets.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Origin {
    /// The origin of an absolute `http(s)` URL; `None` for anything else.
    pub fn of(uri: &Uri) -> Option<Origin> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let host = uri.host()?.trim_matches(['[', ']']).to_ascii_lowercase();
        Some(Origin { port: uri.port_u16().unwrap_or(default), scheme, host })
    }
}

/// The host of Docker Hub's token service, which gets Docker Hub's credentials over HTTPS.
const DOCKER_HUB_REALM_HOST: &str = "auth.docker.io";

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
    /// Whether `base` is a configured endpoint: only then may it resolve to a non-public
    /// address, and only for requests to its own origin.
    pub configured: bool,
    /// Origins besides `base`'s that may serve this upstream's token realm with its
    /// credentials, and be reached wherever they resolve.
    pub realms: Vec<Origin>,
}

impl Upstream {
    /// Whether a request to `uri` on this upstream's behalf may go to a non-public address:
    /// `uri` is the configured endpoint's own origin, or a realm origin configured for it.
    pub fn trusts(&self, uri: &Uri) -> bool {
        let Some(o) = Origin::of(uri) else { return false };
        (self.configured && Origin::of(&self.base).as_ref() == Some(&o)) || self.realms.contains(&o)
    }

    /// Whether this upstream's credentials may go to a token realm at `uri`: the endpoint's
    /// own origin, its host over HTTPS, or a realm origin configured for it.
    pub fn credentials_for_realm(&self, uri: &Uri) -> bool {
        let (Some(o), Some(base)) = (Origin::of(uri), Origin::of(&self.base)) else { return false };
        let hub =
            base.host == "registry-1.docker.io" && o.scheme == "https" && o.host == DOCKER_HUB_REALM_HOST;
        o == base || (o.scheme == "https" && o.host == base.host) || self.realms.contains(&o) || hub
    }
}

/// Why an upstream cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `offline`: no upstream is asked.
    #[error("the proxy is offline: only cached content is served")]
    Offline,
    /// A client named a host that is not public, and has no entry.
    #[error(
        "upstream {0} is not a public host and has no entry of its own; to mirror it, configure it: \
         registry_proxies: {{registries: [{{host: \"{0}\", insecure: true}}]}} (insecure: plain HTTP)"
    )]
    NotPublic(String),
    /// The upstream sent us (a redirect, a token realm) to a place that is not public.
    #[error(
        "the upstream sent this request to {0}, which is not a public address: redirects and token \
         realms may lead only to public hosts or to the upstream's own origin (a private token \
         server is listed in the entry's `realms`)"
    )]
    Elsewhere(String),
    /// Not a host name.
    #[error("{0:?} is not an upstream host")]
    BadHost(String),
}

/// The configured upstreams, and the rule for the others.
#[derive(Debug, Default)]
pub struct Upstreams {
    entries: Vec<Entry>,
    offline: bool,
}

impl Upstreams {
    pub(crate) fn new(entries: Vec<Entry>, offline: bool) -> Self {
        Self { entries, offline }
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
                            return Err(Refused::NotPublic(name));
                        }
                    }
                }
                format!("{scheme}://{name}/").parse().map_err(|_| Refused::BadHost(host.to_string()))?
            }
        };
        let realms = entry.map(|e| e.realms.clone()).unwrap_or_default();
        Ok(Upstream {
            host: host.to_string(),
            repo: repo.to_string(),
            base,
            credentials: entry.and_then(|e| e.credentials.clone()),
            configured: entry.is_some(),
            realms,
        })
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

/// Logs a refusal at `warn`, once per place refused (up to 1,024 places), so that a mirror
/// client that quietly falls back to the upstream (containerd does, after a body-less `HEAD`
/// refusal) leaves a trace of why in the registry's log.
pub(crate) fn warn_once(r: &Refused) {
    static SEEN: std::sync::Mutex<Option<std::collections::HashSet<String>>> = std::sync::Mutex::new(None);
    // Keyed by the message's first 256 characters: an upstream cannot pin memory with long
    // names (the set holds at most 1,024 of them).
    let key: String = r.to_string().chars().take(256).collect();
    let first = SEEN.lock().map(|mut s| {
        let seen = s.get_or_insert_with(Default::default);
        seen.len() < 1024 && seen.insert(key)
    });
    if first.unwrap_or(false) {
        tracing::warn!("proxy: {r}");
    }
}

/// Resolves upstream names for the connector; with `public_only`, refuses names that resolve
/// to no public address and drops the non-public answers. The connector connects to what
/// this returns, and nothing else. The client keeps one connector of each kind, and uses the
/// open one only for an origin [`Upstream::trusts`].
#[derive(Clone, Debug)]
pub(crate) struct GuardedResolver {
    pub(crate) public_only: bool,
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
        let public_only = self.public_only;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !public_only {
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
            realms: vec![],
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
        let local = up.resolve("10.0.0.1", "a").unwrap();
        assert_eq!(local.base.to_string(), "http://10.0.0.1/");
        assert!(local.trusts(&"http://10.0.0.1/v2/a/blobs/x".parse().unwrap()));
        let mut port = entry("127.0.0.1__5000", None, "u");
        port.insecure = true;
        let up = Upstreams::new(vec![port], false);
        let at_port = up.resolve("127.0.0.1__5000", "a").unwrap();
        assert_eq!(at_port.base.to_string(), "http://127.0.0.1:5000/");
        assert!(Upstreams::new(vec![], false).resolve("127.0.0.1__5000", "a").is_err());
        assert!(at_port.trusts(&"http://127.0.0.1:5000/x".parse().unwrap()));
        for other in ["http://127.0.0.1:5001/x", "https://127.0.0.1:5000/x", "http://evil.example/x"] {
            assert!(!at_port.trusts(&other.parse().unwrap()), "{other}: another origin");
        }
    }

    #[test]
    fn trust_and_credentials_are_per_origin() {
        let mut e = entry("reg.example", None, "u");
        e.url = Some("http://10.0.0.5:5000".parse().unwrap());
        e.realms = vec![Origin { scheme: "http".into(), host: "10.0.0.5".into(), port: 5001 }];
        let up = Upstreams::new(vec![e, entry("other.example", None, "o")], false);
        let reg = up.resolve("reg.example", "a").unwrap();
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert!(reg.trusts(&uri("http://10.0.0.5:5000/v2/")));
        assert!(reg.trusts(&uri("http://10.0.0.5:5001/token")), "a configured realm origin");
        assert!(!reg.trusts(&uri("http://10.0.0.5:5002/")), "another port of the same host");
        assert!(!reg.trusts(&uri("https://other.example/")), "another configured upstream");
        assert!(reg.credentials_for_realm(&uri("http://10.0.0.5:5000/token")), "the same origin");
        assert!(reg.credentials_for_realm(&uri("http://10.0.0.5:5001/token")), "configured for it");
        assert!(!reg.credentials_for_realm(&uri("http://10.0.0.5:5002/token")), "plain HTTP, another port");
        assert!(!reg.credentials_for_realm(&uri("https://auth.example/token")), "another host");
        let o = up.resolve("other.example", "a").unwrap();
        assert!(o.credentials_for_realm(&uri("https://other.example:8443/token")), "its host, over HTTPS");
        assert!(!o.credentials_for_realm(&uri("http://other.example:8080/token")), "its host, plain HTTP");
        let hub = Upstreams::default().resolve("docker.io", "library/nginx").unwrap();
        assert!(hub.credentials_for_realm(&uri("https://auth.docker.io/token")));
        assert!(!hub.trusts(&uri("https://registry-1.docker.io/v2/")), "not configured: public only");
        let unconfigured = Upstreams::default().resolve("ghcr.io", "a").unwrap();
        assert!(!unconfigured.trusts(&uri("https://ghcr.io/v2/")));
    }
}
