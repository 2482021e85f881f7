//! Image references as pod specs, `docker pull` and `podman pull` spell them
//! (`[host[:port]/]path[:tag][@digest]`), normalised as docker normalises them: a first
//! component is a host when it holds a `.` or a `:`, is `localhost`, or has upper-case
//! letters; otherwise the host is `docker.io`, whose single names are under `library/`; a
//! reference with neither tag nor digest means `:latest`.
//!
//! ```
//! use donjon_core::image_ref::ImageRef;
//!
//! let r: ImageRef = "nginx".parse().unwrap();
//! assert_eq!(r.to_string(), "docker.io/library/nginx:latest");
//! let r: ImageRef = "localhost:5000/team/app@sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".parse().unwrap();
//! assert_eq!(r.host(), "localhost:5000");
//! assert_eq!(r.repo().as_str(), "team/app");
//! assert!(r.tag().is_none() && r.digest().is_some());
//! assert!("Nginx".parse::<ImageRef>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::mirror::DOCKER_HUB;
use crate::name::{Name, Reference, Tag};

/// A normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    host: String,
    repo: Name,
    tag: Option<Tag>,
    digest: Option<Digest>,
}

/// Why an image reference was refused; the message names the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {why}")]
pub struct ImageRefError {
    input: String,
    why: String,
}

impl ImageRefError {
    fn new(input: &str, why: impl Into<String>) -> Self {
        Self { input: input.chars().take(300).collect(), why: why.into() }
    }
}

/// Whether the first component of a reference names a host, by docker's rule.
pub fn is_host(component: &str) -> bool {
    component.contains(['.', ':'])
        || component == "localhost"
        || component.bytes().any(|b| b.is_ascii_uppercase())
}

/// A host as references compare: lower case, without the default port `:443`, Docker Hub's
/// other names as `docker.io`. A host that is one only for its capitals (`MyHost`) keeps them,
/// or it would stop being one.
pub fn normal_host(host: &str) -> String {
    let lower = host.to_ascii_lowercase();
    let lower = match lower.strip_suffix(":443") {
        // Only when it is the port: `name:443`, `[v6]:443`. `a:1:443` is no host:port and
        // stays as written, so that normalising twice changes nothing (found by fuzzing).
        Some(h) if h.ends_with(']') || !h.contains(':') => h.to_string(),
        _ => lower,
    };
    match lower.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        l if is_host(l) => lower,
        _ => host.to_string(),
    }
}

/// Whether `host` is a registry host: `host`, `host:port`, `[v6]` or `[v6]:port`, with DNS
/// labels of at most 63 characters.
pub fn host_ok(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return false };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(p) => ("x", Some(p)),
                None => return false,
            },
        }
    } else {
        match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label) && port_ok
}

impl ImageRef {
    /// `host[:port]`, lower case (`docker.io` for Docker Hub), see [`normal_host`].
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The repository at that host.
    pub fn repo(&self) -> &Name {
        &self.repo
    }

    /// The tag, if any (`latest` when the reference named neither tag nor digest).
    pub fn tag(&self) -> Option<&Tag> {
        self.tag.as_ref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What a registry is asked for: the digest when there is one, else the tag.
    pub fn reference(&self) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => Reference::Digest(d.clone()),
            (None, Some(t)) => Reference::Tag(t.clone()),
            (None, None) => Reference::Tag(Tag::latest()),
        }
    }

    /// The digest alone, without the tag beside it: what a runtime pulls (`None` without a
    /// digest).
    pub fn pinned(&self) -> Option<Self> {
        let digest = self.digest.clone()?;
        Some(Self { host: self.host.clone(), repo: self.repo.clone(), tag: None, digest: Some(digest) })
    }

    /// The same image at another host and repository, with the same tag and digest.
    pub fn with_location(&self, host: &str, repo: Name) -> Self {
        Self { host: normal_host(host), repo, tag: self.tag.clone(), digest: self.digest.clone() }
    }
}

impl FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ImageRefError::new(s, "it is empty"));
        }
        if s.len() > 4096 || s.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(ImageRefError::new(s, "it holds white space or control characters, or is too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let d = d.parse::<Digest>().map_err(|e| ImageRefError::new(s, e.to_string()))?;
                (rest, Some(d))
            }
            None => (s, None),
        };
        let (host, path) = match rest.split_once('/') {
            Some((first, path)) if is_host(first) => (first, path),
            _ => (DOCKER_HUB, rest),
        };
        if !host_ok(host) {
            return Err(ImageRefError::new(
                s,
                format!("{host:?} is not a host name, host:port or [IPv6]:port"),
            ));
        }
        // A tag is after the last ':' that follows the last '/'.
        let last = path.rsplit('/').next().unwrap_or(path);
        let (path, tag) = match last.rfind(':') {
            Some(i) => {
                let at = path.len() - last.len() + i;
                let tag = path[at + 1..].parse::<Tag>().map_err(|e| ImageRefError::new(s, e.to_string()))?;
                (&path[..at], Some(tag))
            }
            None => (path, None),
        };
        let host = normal_host(host);
        let path = if host == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let repo = path.parse::<Name>().map_err(|_| {
            ImageRefError::new(
                s,
                format!(
                    "the repository {path:?} must be lower-case components of [a-z0-9._-] separated by '/'"
                ),
            )
        })?;
        if host.len() + 1 + repo.as_str().len() > crate::name::MAX_NAME_LEN {
            return Err(ImageRefError::new(s, "host and repository together are longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(Tag::latest()),
            (tag, _) => tag,
        };
        Ok(Self { host, repo, tag, digest })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn norm(s: &str) -> String {
        s.parse::<ImageRef>().unwrap_or_else(|e| panic!("{s}: {e}")).to_string()
    }

    #[test]
    fn normalises_every_form() {
        let cases = [
            ("nginx", "docker.io/library/nginx:latest".to_string()),
            ("nginx:1.25", "docker.io/library/nginx:1.25".into()),
            ("library/nginx", "docker.io/library/nginx:latest".into()),
            ("bitnami/redis:7", "docker.io/bitnami/redis:7".into()),
            ("docker.io/nginx", "docker.io/library/nginx:latest".into()),
            ("index.docker.io/library/nginx", "docker.io/library/nginx:latest".into()),
            ("registry-1.docker.io/x/y", "docker.io/x/y:latest".into()),
            ("localhost/x", "localhost/x:latest".into()),
            ("localhost:5000/a/b:tag", "localhost:5000/a/b:tag".into()),
            (&format!("host.example:5000/a/b:tag@{D}"), format!("host.example:5000/a/b:tag@{D}")),
            (&format!("nginx@{D}"), format!("docker.io/library/nginx@{D}")),
            (&format!("quay.io/org/app@{D}"), format!("quay.io/org/app@{D}")),
            ("Registry.Example/x", "registry.example/x:latest".into()),
            ("quay.io:443/org/app", "quay.io/org/app:latest".into()),
            ("registry-1.docker.io:443/library/nginx", "docker.io/library/nginx:latest".into()),
            ("MyHost/x", "MyHost/x:latest".into()),
            ("[::1]:5000/x", "[::1]:5000/x:latest".into()),
            ("10.0.0.1:5000/a", "10.0.0.1:5000/a:latest".into()),
            ("ghcr.io/a/b/c/d:v1.2.3-rc_1", "ghcr.io/a/b/c/d:v1.2.3-rc_1".into()),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input), want, "{input}");
            // normal forms are fixed points
            assert_eq!(norm(&want), want, "{want} again");
        }
    }

    #[test]
    fn normal_hosts_are_fixed_points() {
        for (host, want) in [
            ("quay.io:443", "quay.io"),
            ("[::1]:443", "[::1]"),
            ("Registry-1.Docker.IO:443", "docker.io"),
            ("a:1:443", "a:1:443"),
            // The fuzzer's: one `:443` less each time, before.
            ("[:1]:55:443:443", "[:1]:55:443:443"),
        ] {
            assert_eq!(normal_host(host), want, "{host}");
            assert_eq!(normal_host(want), want, "{want} again");
        }
    }

    #[test]
    fn parts() {
        let r: ImageRef = format!("localhost:5000/a/b:t@{D}").parse().unwrap();
        assert_eq!(r.host(), "localhost:5000");
        assert_eq!(r.repo().as_str(), "a/b");
        assert_eq!(r.tag().map(Tag::as_str), Some("t"));
        assert_eq!(r.reference(), Reference::Digest(D.parse().unwrap()));
        let r: ImageRef = "a/b".parse().unwrap();
        assert_eq!(r.reference().to_string(), "latest");
    }

    #[test]
    fn refuses_what_does_not_parse() {
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx@",
            "nginx@sha256:abc",
            "a b",
            "host:port/x",
            "host:/x",
            "-host.example/x",
            "host.example/",
            "host.example//x",
            "nginx:bad/tag",
            ":tag",
            "[::1/x",
            "[zz]:1/x",
            "a\n",
            "host.example:123456/x",
        ] {
            let e = bad.parse::<ImageRef>();
            assert!(e.is_err(), "{bad:?} accepted as {:?}", e.map(|r| r.to_string()));
        }
        let e = "Nginx".parse::<ImageRef>().unwrap_err().to_string();
        assert!(e.contains("lower-case"), "{e}");
        let long = format!("host.example/{}", "a".repeat(250));
        assert!(long.parse::<ImageRef>().is_err());
    }
}
