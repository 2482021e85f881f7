//! Pull-through namespaces: where content from other registries lives in this one.
//!
//! Everything cached from a registry `<host>` is stored under the repository name
//! `f/<host>/<repo>` (Trow's addressing), in the ordinary layout, so it is content of the store
//! like any other. Clients reach it three ways, all turned into that one name by the route
//! parser, before any layer (auth included) looks at it:
//!
//! - `/v2/f/<host>/<repo>/…`, as Trow serves it;
//! - `/v2/f/docker/<repo>/…`, Trow's older form for Docker Hub (`docker.io`);
//! - `/v2/<repo>/…?ns=<host>`, what containerd sends to a mirror, for the hosts a
//!   [`Mirrors`] accepts.
//!
//! Docker Hub's single names get `library/` (`f/docker.io/nginx` is `f/docker.io/library/nginx`).
//! A host with a port, which the name grammar cannot hold, is spelled with `__` for the `:`
//! (`f/localhost:5000/x` is `f/localhost__5000/x`; host names never hold `_`).
//!
//! ```
//! use donjon_core::mirror::{cached_name, split, Mirrors};
//! use donjon_core::Name;
//!
//! let name = cached_name("docker.io", "nginx").unwrap();
//! assert_eq!(name.as_str(), "f/docker.io/library/nginx");
//! assert_eq!(split(&name), Some(("docker.io", "library/nginx")));
//!
//! let mirrors = Mirrors::any().local(["registry.example"]);
//! let repo: Name = "library/nginx".parse().unwrap();
//! assert_eq!(mirrors.rewrite("docker.io", &repo).unwrap().as_str(), "f/docker.io/library/nginx");
//! assert!(mirrors.rewrite("registry.example", &repo).is_none(), "this registry's own name");
//! ```

use std::collections::HashSet;

use crate::name::{Name, NameError};

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";

/// The repository name under which content of `repo` at `host` is cached.
pub fn cached_name(host: &str, repo: &str) -> Result<Name, NameError> {
    let host = canonical_host(host);
    let repo =
        if host == DOCKER_HUB && !repo.contains('/') { format!("library/{repo}") } else { repo.to_string() };
    format!("f/{host}/{repo}").parse()
}

/// A host as cached names spell it: lower case, `__` for a port's `:`; Trow's `docker` and
/// Docker Hub's other names are `docker.io`.
pub fn canonical_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "docker" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => host.replacen(':', "__", 1),
    }
}

/// The `host[:port]` a cached name's host stands for.
pub fn network_host(cached: &str) -> String {
    cached.replacen("__", ":", 1)
}

/// The host and upstream repository of a cached name; `None` for other names.
pub fn split(name: &Name) -> Option<(&str, &str)> {
    let rest = name.as_str().strip_prefix("f/")?;
    let (host, repo) = rest.split_once('/')?;
    Some((host, repo))
}

/// Whether `name` is a pull-through name.
pub fn is_cached(name: &Name) -> bool {
    split(name).is_some()
}

/// The name a route should carry: cached names canonical (`f/docker/x` → `f/docker.io/library/x`),
/// others as they are.
pub fn canonical(name: &Name) -> Option<Name> {
    let (host, repo) = split(name)?;
    let wanted = cached_name(host, repo).ok()?;
    (wanted != *name).then_some(wanted)
}

/// Which `?ns=<host>` values send a request to a pull-through namespace: every host but this
/// registry's own names, or only some.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mirrors {
    any: bool,
    hosts: HashSet<String>,
    local: HashSet<String>,
}

impl Mirrors {
    /// Every `ns` (but the [`local`](Self::local) ones).
    pub fn any() -> Self {
        Self { any: true, ..Self::default() }
    }

    /// Only these hosts.
    pub fn hosts<I: IntoIterator<Item = S>, S: AsRef<str>>(hosts: I) -> Self {
        Self { hosts: hosts.into_iter().map(|h| canonical_host(h.as_ref())).collect(), ..Self::default() }
    }

    /// This registry's own names (`-n`): an `ns` naming one of them addresses local content.
    pub fn local<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, names: I) -> Self {
        self.local.extend(names.into_iter().map(|h| canonical_host(h.as_ref())));
        self
    }

    /// The cached name for `name` requested with `?ns=<ns>`, when that is a mirror request.
    pub fn rewrite(&self, ns: &str, name: &Name) -> Option<Name> {
        let host = canonical_host(ns);
        if host.is_empty() || self.local.contains(&host) || is_cached(name) {
            return None;
        }
        if !(self.any || self.hosts.contains(&host)) {
            return None;
        }
        // A host the name grammar cannot hold (`localhost:5000`) has no cached name.
        cached_name(&host, name.as_str()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        s.parse().unwrap()
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(canonical(&n("f/docker/nginx")).unwrap().as_str(), "f/docker.io/library/nginx");
        assert_eq!(canonical(&n("f/docker/bitnami/redis")).unwrap().as_str(), "f/docker.io/bitnami/redis");
        assert_eq!(canonical(&n("f/docker.io/nginx")).unwrap().as_str(), "f/docker.io/library/nginx");
        assert!(canonical(&n("f/docker.io/library/nginx")).is_none());
        assert!(canonical(&n("f/ghcr.io/a")).is_none(), "single names elsewhere stay");
        assert!(canonical(&n("library/nginx")).is_none());
        assert!(canonical(&n("f/onlyhost")).is_none());
        assert_eq!(split(&n("f/quay.io/a/b/c")), Some(("quay.io", "a/b/c")));
    }

    #[test]
    fn mirror_rewrites() {
        let some = Mirrors::hosts(["ghcr.io", "docker"]);
        assert_eq!(some.rewrite("docker.io", &n("nginx")).unwrap().as_str(), "f/docker.io/library/nginx");
        assert_eq!(some.rewrite("GHCR.IO", &n("a/b")).unwrap().as_str(), "f/ghcr.io/a/b");
        assert!(some.rewrite("quay.io", &n("a")).is_none());
        assert!(Mirrors::default().rewrite("docker.io", &n("a")).is_none());
        let any = Mirrors::any().local(["reg.example"]);
        assert!(any.rewrite("reg.example", &n("a")).is_none());
        assert_eq!(any.rewrite("localhost:5000", &n("a")).unwrap().as_str(), "f/localhost__5000/a");
        assert_eq!(network_host("localhost__5000"), "localhost:5000");
        assert!(any.rewrite("[::1]:5000", &n("a")).is_none(), "no cached name holds an IPv6 literal");
        assert!(any.rewrite("quay.io", &n("f/quay.io/a")).is_none(), "already cached");
        assert!(any.rewrite("", &n("a")).is_none());
    }
}
