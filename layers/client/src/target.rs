//! What a client command names: `REGISTRY`, `REGISTRY/REPO`, `REGISTRY/REPO:TAG` or
//! `REGISTRY/REPO@DIGEST`, the registry always written out (the first component is the host,
//! whatever it looks like), with an optional `http://` or `https://` in front.
//!
//! Docker Hub is `docker.io` (also `index.docker.io`, `registry-1.docker.io`): its API is asked
//! at `registry-1.docker.io`, and a one-component repository is under `library/`, as docker
//! reads `busybox`.

use donjon_core::image_ref::host_ok;
use std::fmt;

use donjon_core::{Digest, Name, Reference, Tag};

/// The host docker and podman name Docker Hub with.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API answers.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A registry: how to reach it and how it is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host[:port]` as named (lower case; `docker.io` for Docker Hub), for messages and the
    /// credentials lookup.
    pub host: String,
    /// `host[:port]` the requests go to.
    pub api_host: String,
}

impl Registry {
    /// `scheme://api_host`, without a trailing `/`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.api_host)
    }

    pub fn is_docker_hub(&self) -> bool {
        self.host == DOCKER_HUB
    }
}

/// A parsed command argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub registry: Registry,
    pub repo: Option<Name>,
    pub reference: Option<Reference>,
}

impl Target {
    /// Parses `s`; without a scheme in it, `insecure` chooses `http` over `https`.
    pub fn parse(s: &str, insecure: bool) -> Result<Self, String> {
        let bad = |why: &str| format!("{s:?}: {why}");
        if s.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(bad("white space or control characters"));
        }
        let (scheme, rest) = if let Some(r) = s.strip_prefix("https://") {
            ("https", r)
        } else if let Some(r) = s.strip_prefix("http://") {
            ("http", r)
        } else if s.contains("://") {
            return Err(bad("only http:// and https:// registries"));
        } else {
            (if insecure { "http" } else { "https" }, s)
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !host_ok(host) {
            return Err(bad("expected REGISTRY[/REPO[:TAG|@DIGEST]], REGISTRY a host[:port]"));
        }
        let host = host.to_ascii_lowercase();
        let hub = matches!(host.as_str(), "docker.io" | "index.docker.io" | "registry-1.docker.io");
        let registry = Registry {
            scheme,
            api_host: if hub { DOCKER_HUB_API.to_string() } else { host.clone() },
            host: if hub { DOCKER_HUB.to_string() } else { host },
        };
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            return Ok(Self { registry, repo: None, reference: None });
        }
        let (name_tag, digest) = match path.split_once('@') {
            Some((n, d)) => (n, Some(d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?)),
            None => (path, None),
        };
        // A tag follows the last `:` after the last `/`.
        let (name, tag) = match name_tag.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t.parse::<Tag>().map_err(|e| bad(&e.to_string()))?)),
            _ => (name_tag, None),
        };
        let name = if registry.is_docker_hub() && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_string()
        };
        let repo: Name = name.parse().map_err(|e: donjon_core::name::NameError| bad(&e.to_string()))?;
        // With both, the digest is what is asked for (docker's rule); the tag is only a name.
        let reference = match (digest, tag) {
            (Some(d), _) => Some(Reference::Digest(d)),
            (None, Some(t)) => Some(Reference::Tag(t)),
            (None, None) => None,
        };
        Ok(Self { registry, repo: Some(repo), reference })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.registry.host)?;
        if let Some(repo) = &self.repo {
            write!(f, "/{repo}")?;
        }
        match &self.reference {
            Some(Reference::Tag(t)) => write!(f, ":{t}"),
            Some(Reference::Digest(d)) => write!(f, "@{d}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn registries_repositories_and_references() {
        let t = Target::parse("127.0.0.1:5000", false).unwrap();
        assert_eq!(t.registry.base_url(), "https://127.0.0.1:5000");
        assert_eq!((t.repo, t.reference), (None, None));
        let t = Target::parse("Registry.Example/", true).unwrap();
        assert_eq!(t.registry.base_url(), "http://registry.example");
        assert_eq!(t.to_string(), "registry.example");

        let t = Target::parse("localhost:8000/team/app:v1.2", false).unwrap();
        assert_eq!(t.repo.as_ref().unwrap().as_str(), "team/app");
        assert_eq!(t.reference, Some(Reference::Tag("v1.2".parse().unwrap())));
        assert_eq!(t.to_string(), "localhost:8000/team/app:v1.2");

        let t = Target::parse(&format!("http://[::1]:5000/a@{D}"), false).unwrap();
        assert_eq!(t.registry.base_url(), "http://[::1]:5000");
        assert_eq!(t.reference, Some(Reference::Digest(D.parse().unwrap())));
        // An explicit scheme wins over --insecure.
        let t = Target::parse(&format!("https://h/a:v1@{D}"), true).unwrap();
        assert_eq!(t.registry.scheme, "https");
        assert_eq!(t.reference, Some(Reference::Digest(D.parse().unwrap())), "the digest wins");
        let t = Target::parse("h:1/f/docker.io/library/nginx", false).unwrap();
        assert_eq!(t.repo.unwrap().as_str(), "f/docker.io/library/nginx");
    }

    #[test]
    fn docker_hub() {
        for s in ["docker.io/busybox", "index.docker.io/library/busybox"] {
            let t = Target::parse(s, false).unwrap();
            assert_eq!(t.registry.host, "docker.io");
            assert_eq!(t.registry.base_url(), "https://registry-1.docker.io");
            assert_eq!(t.repo.unwrap().as_str(), "library/busybox");
        }
        assert_eq!(Target::parse("docker.io/team/app", false).unwrap().repo.unwrap().as_str(), "team/app");
    }

    #[test]
    fn refusals_say_why() {
        for bad in [
            "",
            "/repo",
            "host:port/x",
            "ftp://h/x",
            "h/Upper",
            "h/a:bad tag",
            "h/a:-x",
            "h/a@sha256:abc",
            "h/a//b",
            "[zz]:1/a",
        ] {
            let e = Target::parse(bad, false).unwrap_err();
            assert!(e.starts_with(&format!("{bad:?}")), "{bad:?}: {e}");
        }
        assert!(Target::parse("h/a@sha256:abc", false).unwrap_err().contains("hex"));
    }
}
