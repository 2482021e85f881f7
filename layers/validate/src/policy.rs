//! The image policy: which image references a cluster may run, and why.
//!
//! References and prefixes are normalised first ([`ImageRef`]: `nginx` is
//! `docker.io/library/nginx:latest`). A prefix matches on name boundaries only: the reference
//! is the prefix itself, or goes on after it with `/`, `:` or `@` (a prefix that ends with one
//! of those matches whatever follows). The longest matching prefix decides; on a tie, deny
//! wins; when none matches, the default does. A reference to this registry's own host names
//! that names a cached copy (`<host>/f/quay.io/app:1`) must also be allowed as the upstream
//! reference it stands for (`quay.io/app:1`), so the cache is no way around a deny.
//!
//! ```
//! use donjon_validate::{Policy, ValidationConfig};
//!
//! let config: ValidationConfig =
//!     serde_yaml::from_str("{default: Deny, allow: [quay.io/, docker.io/library/], deny: [nginx]}").unwrap();
//! let policy = Policy::new(&config, &[]).unwrap();
//! assert!(policy.decide("quay.io/coreos/etcd:v3").allowed);
//! assert!(policy.decide("busybox").allowed);
//! let d = policy.decide("nginx:1.25");
//! assert!(!d.allowed);
//! assert_eq!(d.reason, "docker.io/library/nginx:1.25 is denied by `docker.io/library/nginx` (deny list)");
//! let d = policy.decide("ghcr.io/x/y");
//! assert_eq!(d.reason, "ghcr.io/x/y:latest is neither explicitly allowed nor denied (using default behaviour: Deny)");
//! ```

use donjon_core::config::ConfigError;
use donjon_core::image_ref::{is_host, normal_host, ImageRef};
use donjon_core::mirror::{self, DOCKER_HUB};
use donjon_core::{Name, Reference};

use crate::config::{ValidationConfig, Verdict};

/// One rule: a normalised prefix (or a whole reference) and what it decides.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    pattern: String,
    /// Matches the whole reference only (Trow's `--allow-images`), not what starts with it.
    exact: bool,
    allow: bool,
    /// Where the rule came from, for the reason: `allow list`, `--allow-images`, …
    source: &'static str,
}

impl Rule {
    fn matches(&self, s: &str) -> bool {
        let p = self.pattern.as_str();
        if self.exact {
            // `a/b:1` also covers `a/b:1@sha256:…`, the same image pinned.
            return s == p || s.strip_prefix(p).is_some_and(|r| r.starts_with('@'));
        }
        prefix_matches(p, s)
    }
}

/// Whether the normalised prefix `p` covers the normalised reference `s`, on name boundaries.
pub(crate) fn prefix_matches(p: &str, s: &str) -> bool {
    let Some(rest) = s.strip_prefix(p) else { return false };
    rest.is_empty() || p.ends_with(['/', ':', '@']) || rest.starts_with(['/', ':', '@'])
}

/// What the policy says of one image, and why, in words a person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The image as the object spells it.
    pub image: String,
    /// The image normalised, when it parses.
    pub normal: Option<String>,
    /// Whether it may run.
    pub allowed: bool,
    /// Why.
    pub reason: String,
    /// The image in this registry that must exist for the decision to stand (the policy's
    /// `check_local`); the service looks it up in the store.
    pub must_exist: Option<(Name, Reference)>,
}

/// The compiled policy. See the module docs.
#[derive(Clone, Debug)]
pub struct Policy {
    default_allow: bool,
    rules: Vec<Rule>,
    local_hosts: Vec<String>,
    check_local: bool,
    /// The pull-through cache's default upstream (docker's `--registry-mirror`), whose images
    /// this registry's plain names may be.
    default_upstream: Option<String>,
}

/// A prefix as references are spelt once normalised: `nginx` → `docker.io/library/nginx`,
/// `quay.io` → `quay.io/`, `registry-1.docker.io/x/y` → `docker.io/x/y`. No tag is added.
pub fn normal_prefix(p: &str) -> Result<String, String> {
    let p = p.trim();
    if p.is_empty() {
        return Err("is empty".into());
    }
    if p.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(format!("{p:?} holds white space"));
    }
    // Without a '/', a host alone (`quay.io`, `localhost:5000`) or a Docker Hub image
    // (`nginx`, `nginx:1.25`).
    let host_alone = |p: &str| match p.rsplit_once(':') {
        // `node:16` is an image and a tag; `registry.example:5000` and `localhost:5000` hosts
        Some((h, port)) => {
            (h.contains('.') || h == "localhost")
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
        }
        None => p == "localhost" || p.contains('.'),
    };
    let (host, rest) = match p.split_once('/') {
        Some((first, rest)) if is_host(first) => (normal_host(first), rest),
        None if host_alone(p) => (normal_host(p), ""),
        _ => (DOCKER_HUB.to_string(), p),
    };
    let name_part = rest.split([':', '@']).next().unwrap_or("");
    let rest = if host == DOCKER_HUB
        && !rest.is_empty()
        && !name_part.contains('/')
        && !rest.starts_with(['/', ':', '@'])
    {
        format!("library/{rest}")
    } else {
        rest.to_string()
    };
    if rest.split([':', '@']).next().unwrap_or("").bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("{p:?} can never match: repository names are lower case"));
    }
    Ok(format!("{host}/{rest}"))
}

impl Policy {
    /// Compiles `config`; `local_hosts` are this registry's own host names (Trow's `-n`). An
    /// error names the entry (`image_validation.allow[2]`).
    pub fn new(config: &ValidationConfig, local_hosts: &[String]) -> Result<Self, ConfigError> {
        let mut rules = vec![];
        let lists = [("allow", &config.allow, true), ("deny", &config.deny, false)];
        for (key, list, allow) in lists {
            for (i, p) in list.iter().enumerate() {
                let pattern = normal_prefix(p)
                    .map_err(|e| ConfigError::new(format!("image_validation.{key}[{i}]"), e))?;
                let source = if allow { "allow list" } else { "deny list" };
                // `deny: [bitnami]` means the namespace as much as `library/bitnami`: a deny
                // covers both readings (an allow only the one docker gives it)
                if let (false, Some(ns)) = (allow, pattern.strip_prefix("docker.io/library/")) {
                    if !p.contains("library/") && !ns.is_empty() {
                        rules.push(Rule { pattern: format!("docker.io/{ns}"), exact: false, allow, source });
                    }
                }
                rules.push(Rule { pattern, exact: false, allow, source });
            }
        }
        for (i, image) in config.allow_images.iter().enumerate() {
            let r = image.parse::<ImageRef>().map_err(|e| {
                ConfigError::new(format!("image_validation.allow_images[{i}]"), e.to_string())
            })?;
            rules.push(Rule { pattern: r.to_string(), exact: true, allow: true, source: "allowed images" });
        }
        let local_hosts: Vec<String> = local_hosts.iter().map(|h| normal_host(h)).collect();
        for (i, image) in config.deny_local_images.iter().enumerate() {
            for host in &local_hosts {
                let r = format!("{host}/{image}").parse::<ImageRef>().map_err(|e| {
                    ConfigError::new(format!("image_validation.deny_local_images[{i}]"), e.to_string())
                })?;
                rules.push(Rule {
                    pattern: r.to_string(),
                    exact: true,
                    allow: false,
                    source: "denied local images",
                });
            }
        }
        for (i, prefix) in config.deny_local_prefixes.iter().enumerate() {
            for host in &local_hosts {
                let pattern = normal_prefix(&format!("{host}/{}", prefix.trim_start_matches('/')))
                    .map_err(|e| ConfigError::new(format!("image_validation.deny_local_prefixes[{i}]"), e))?;
                rules.push(Rule { pattern, exact: false, allow: false, source: "denied local prefixes" });
            }
        }
        if config.check_local && local_hosts.is_empty() {
            return Err(ConfigError::new(
                "image_validation.check_local",
                "needs this registry's host names (-n / hostname) to know which references are local",
            ));
        }
        Ok(Self {
            default_allow: config.default == Verdict::Allow,
            rules,
            local_hosts,
            check_local: config.check_local,
            default_upstream: None,
        })
    }

    /// Judges this registry's plain names also as the images the pull-through cache's
    /// `default` upstream would serve for them.
    pub fn default_upstream(mut self, host: Option<&str>) -> Self {
        self.default_upstream = host.map(normal_host);
        self
    }

    /// Whether `host` (normalised) is one of this registry's own names.
    pub fn is_local(&self, host: &str) -> bool {
        self.local_hosts.iter().any(|h| h == host)
    }

    fn default_word(&self) -> &'static str {
        if self.default_allow {
            "Allow"
        } else {
            "Deny"
        }
    }

    /// The verdict of the rules alone on a normalised reference.
    fn rules_say(&self, normal: &str) -> (bool, String) {
        let mut best: Option<&Rule> = None;
        for r in self.rules.iter().filter(|r| r.matches(normal)) {
            best = match best {
                None => Some(r),
                Some(b) if r.pattern.len() > b.pattern.len() => Some(r),
                // deny wins a tie
                Some(b) if r.pattern.len() == b.pattern.len() && !r.allow && b.allow => Some(r),
                keep => keep,
            };
        }
        match best {
            Some(r) => {
                let verb = if r.allow { "allowed" } else { "denied" };
                (r.allow, format!("{normal} is {verb} by `{}` ({})", r.pattern, r.source))
            }
            None => (
                self.default_allow,
                format!(
                    "{normal} is neither explicitly allowed nor denied (using default behaviour: {})",
                    self.default_word()
                ),
            ),
        }
    }

    /// What the policy says of `image` as an object spells it.
    pub fn decide(&self, image: &str) -> Decision {
        let r = match image.parse::<ImageRef>() {
            Ok(r) => r,
            Err(e) => {
                let reason = e.to_string();
                return Decision {
                    image: image.into(),
                    normal: None,
                    allowed: false,
                    reason,
                    must_exist: None,
                };
            }
        };
        let normal = r.to_string();
        // What the reference is judged as: itself; for a name of this registry that a
        // pull-through serves, the upstream image too (so the cache is no way around a deny);
        // and, where a digest is pinned beside a tag, the digest alone (what runs).
        let mut checks: Vec<(ImageRef, Option<String>)> = vec![(r.clone(), None)];
        let mut must_exist = None;
        if self.is_local(r.host()) {
            if let Some(up) = upstream_of(&r) {
                let why = format!("{normal} is a cached copy of {up}");
                checks.push((up, Some(why)));
            } else {
                if let Some(up) = self.default_upstream.as_deref().and_then(|d| from_default(&r, d)) {
                    let why = format!("{normal} may be served from the default upstream as {up}");
                    checks.push((up, Some(why)));
                }
                if self.check_local {
                    must_exist = Some((r.repo().clone(), r.reference()));
                }
            }
        }
        for (c, why) in checks.clone() {
            if let (Some(p), true) = (c.pinned(), c.tag().is_some()) {
                let why = why.unwrap_or_else(|| normal.clone());
                checks.push((p.clone(), Some(format!("{why} pins {p}"))));
            }
        }
        let (mut allowed, mut reason) = self.rules_say(&normal);
        for (c, why) in &checks[1..] {
            let (ok, because) = self.rules_say(&c.to_string());
            if allowed && !ok {
                allowed = false;
                reason = format!("{}, and {because}", why.as_deref().unwrap_or(&normal));
            }
        }
        if !allowed {
            must_exist = None;
        }
        Decision { image: image.into(), normal: Some(normal), allowed, reason, must_exist }
    }
}

/// The upstream image a name of this registry's pull-through cache stands for
/// (`<host>/f/docker/nginx:1` → `docker.io/library/nginx:1`), in its normal form.
fn upstream_of(r: &ImageRef) -> Option<ImageRef> {
    let canonical = mirror::canonical(r.repo()).unwrap_or_else(|| r.repo().clone());
    let (host, repo) = mirror::split(&canonical)?;
    let repo = repo.parse().ok()?;
    Some(r.with_location(&mirror::network_host(host), repo))
}

/// The image the default upstream would serve for a name of this registry that is not here.
fn from_default(r: &ImageRef, default: &str) -> Option<ImageRef> {
    let cached = mirror::cached_name(default, r.repo().as_str()).ok()?;
    upstream_of(&r.with_location(r.host(), cached))
}

impl Decision {
    /// The decision once the store said that the local image it needs is not there.
    pub fn missing(mut self) -> Self {
        let normal = self.normal.as_deref().unwrap_or(&self.image);
        self.reason = format!("Local image {normal} disallowed as not contained in this registry");
        self.allowed = false;
        self.must_exist = None;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str, local: &[&str]) -> Policy {
        let config: ValidationConfig = serde_yaml::from_str(yaml).unwrap();
        Policy::new(&config, &local.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn prefixes_normalise() {
        for (p, want) in [
            ("nginx", "docker.io/library/nginx"),
            ("docker.io/nginx", "docker.io/library/nginx"),
            ("docker.io/", "docker.io/"),
            ("docker.io", "docker.io/"),
            ("registry-1.docker.io/", "docker.io/"),
            ("index.docker.io/bitnami/", "docker.io/bitnami/"),
            ("bitnami/", "docker.io/bitnami/"),
            ("library/", "docker.io/library/"),
            ("quay.io", "quay.io/"),
            ("Quay.IO/coreos", "quay.io/coreos"),
            ("localhost:5000/", "localhost:5000/"),
            ("localhost", "localhost/"),
            ("nginx:1.25", "docker.io/library/nginx:1.25"),
            (&format!("nginx@{D}"), &format!("docker.io/library/nginx@{D}")),
            ("127.0.0.1", "127.0.0.1/"),
            ("127.0.0.1:8000", "127.0.0.1:8000/"),
            ("node:16", "docker.io/library/node:16"),
            ("quay.io:443/", "quay.io/"),
            ("nginx:1.25.3", "docker.io/library/nginx:1.25.3"),
        ] {
            assert_eq!(normal_prefix(p).as_deref(), Ok(want), "{p}");
        }
        for bad in ["", "  ", "a b", "quay.io/CoreOS"] {
            assert!(normal_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn boundaries() {
        let p = policy("{default: Deny, allow: [docker.io/library/ng, quay.io, localhost]}", &[]);
        assert!(!p.decide("nginx").allowed, "ng does not allow nginx");
        assert!(p.decide("ng").allowed);
        assert!(p.decide("ng:1").allowed);
        assert!(p.decide(&format!("ng@{D}")).allowed);
        assert!(p.decide("quay.io/a/b").allowed);
        assert!(!p.decide("quay.io.evil.example/a").allowed);
        assert!(!p.decide("quay.io:8080/a").allowed, "another port is another host");
        assert!(p.decide("localhost/x").allowed);
        assert!(!p.decide("localhost:5000/x").allowed);
        let p = policy("{default: Deny, allow: ['docker.io/library/nginx:']}", &[]);
        assert!(p.decide("nginx:1.25").allowed, "a prefix ending in ':' allows every tag");
    }

    #[test]
    fn longest_wins_and_deny_wins_a_tie() {
        let p = policy(
            "{default: Allow, allow: [quay.io/org/good, 'docker.io/'], deny: [quay.io/org/, docker.io/library/]}",
            &[],
        );
        assert!(p.decide("quay.io/org/good:1").allowed, "longer allow beats shorter deny");
        assert!(!p.decide("quay.io/org/bad").allowed);
        assert!(!p.decide("nginx").allowed, "longer deny beats shorter allow");
        assert!(p.decide("bitnami/redis").allowed, "docker.io/ allows the rest of Docker Hub");
        assert!(p.decide("ghcr.io/x").allowed, "default Allow");
        let p = policy("{default: Allow, allow: [quay.io/], deny: [quay.io]}", &[]);
        let d = p.decide("quay.io/x");
        assert!(!d.allowed, "a tie goes to deny: {}", d.reason);
        assert!(d.reason.contains("deny list"), "{}", d.reason);
    }

    #[test]
    fn reasons_name_the_image_and_the_rule() {
        let p = policy("{default: Deny, allow: [quay.io/]}", &[]);
        let d = p.decide("quay.io/a");
        assert_eq!(d.reason, "quay.io/a:latest is allowed by `quay.io/` (allow list)");
        let d = p.decide("nginx");
        assert_eq!(d.reason, "docker.io/library/nginx:latest is neither explicitly allowed nor denied (using default behaviour: Deny)");
        let d = p.decide("Bad Ref");
        assert!(!d.allowed && d.reason.starts_with("invalid image reference \"Bad Ref\""), "{}", d.reason);
    }

    #[test]
    fn cached_copies_answer_for_their_upstream() {
        let p = policy(
            "{default: Deny, allow: ['registry.example/', quay.io/], deny: [docker.io/library/nginx]}",
            &["registry.example"],
        );
        assert!(p.decide("registry.example/f/quay.io/app:1").allowed);
        let d = p.decide("registry.example/f/docker.io/library/nginx:1.25");
        assert!(!d.allowed);
        assert!(d.reason.contains("cached copy of docker.io/library/nginx:1.25"), "{}", d.reason);
        let d = p.decide(&format!("registry.example/f/docker.io/library/nginx@{D}"));
        assert!(!d.allowed, "{}", d.reason);
        // a host with a port, spelt with `__` in cached names
        let p = policy(
            "{default: Deny, allow: ['registry.example/'], deny: ['localhost:5000/']}",
            &["registry.example"],
        );
        assert!(!p.decide("registry.example/f/localhost__5000/x").allowed);
    }

    #[test]
    fn no_spelling_gets_around_a_deny() {
        let p = policy(
            "{default: Allow, deny: [docker.io/library/nginx, 'quay.io/bad/', bitnami, 'quay.io/x@sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824']}",
            &["registry.example"],
        );
        for bad in [
            "nginx:1.25".to_string(),
            "registry-1.docker.io:443/library/nginx".into(),
            "quay.io:443/bad/app".into(),
            // the cache's names, however spelt, answer for their upstream
            "registry.example/f/docker.io/nginx:1.25".into(),
            "registry.example/f/docker/nginx".into(),
            "registry.example/f/index.docker.io/library/nginx".into(),
            "registry.example:443/f/docker.io/library/nginx".into(),
            // a namespace named by one word
            "bitnami/redis:7".into(),
            // a tag beside a denied digest
            format!("quay.io/x:fine@{D}"),
        ] {
            let d = p.decide(&bad);
            assert!(!d.allowed, "{bad} allowed: {}", d.reason);
        }
        assert!(p.decide("quay.io/good/app").allowed);
        assert!(p.decide("node:16").allowed);
    }

    #[test]
    fn the_default_upstream_answers_for_plain_local_names() {
        let config: ValidationConfig =
            serde_yaml::from_str("{default: Allow, deny: [docker.io/library/nginx]}").unwrap();
        let p = Policy::new(&config, &["registry.example".to_string()])
            .unwrap()
            .default_upstream(Some("docker.io"));
        let d = p.decide("registry.example/nginx:1");
        assert!(!d.allowed, "{}", d.reason);
        assert!(d.reason.contains("default upstream as docker.io/library/nginx:1"), "{}", d.reason);
        assert!(p.decide("registry.example/team/app").allowed);
    }

    #[test]
    fn local_images_must_exist_when_asked() {
        let p =
            policy("{default: Deny, allow: ['registry.example/'], check_local: true}", &["registry.example"]);
        let d = p.decide("registry.example/team/app:1");
        assert!(d.allowed);
        assert_eq!(
            d.must_exist.as_ref().map(|(n, r)| (n.as_str(), r.to_string())),
            Some(("team/app", "1".into()))
        );
        assert!(p.decide("quay.io/x").must_exist.is_none());
        let p = policy("{default: Deny, allow: ['registry.example/']}", &["registry.example"]);
        assert!(p.decide("registry.example/team/app:1").must_exist.is_none(), "off by default");
        let config: ValidationConfig = serde_yaml::from_str("{check_local: true}").unwrap();
        let e = Policy::new(&config, &[]).unwrap_err();
        assert_eq!(e.key, "image_validation.check_local");
    }

    #[test]
    fn trows_older_lists() {
        let yaml = "{allow_images: ['quay.io/coreos/etcd:latest'], deny_local_prefixes: [beta], deny_local_images: ['team/app:old']}";
        let p = policy(yaml, &["registry.example"]);
        assert!(p.decide("quay.io/coreos/etcd").allowed);
        // a digest beside the tag is what runs, and no entry allows that digest
        let d = p.decide(&format!("quay.io/coreos/etcd:latest@{D}"));
        assert!(!d.allowed && d.reason.contains(&format!("pins quay.io/coreos/etcd@{D}")), "{}", d.reason);
        assert!(!p.decide("quay.io/coreos/etcd:v3").allowed, "an image entry is not a prefix");
        let p = policy(&yaml.replace('}', ", allow: ['registry.example/']}"), &["registry.example"]);
        assert!(p.decide("registry.example/team/app:new").allowed);
        assert!(!p.decide("registry.example/team/app:old").allowed);
        assert!(!p.decide("registry.example/beta/x").allowed);
        assert!(p.decide("registry.example/betamax/x").allowed, "prefixes match on name boundaries");
    }

    #[test]
    fn bad_entries_name_their_key() {
        let config: ValidationConfig = serde_yaml::from_str("{allow: [quay.io/, 'a b']}").unwrap();
        assert_eq!(Policy::new(&config, &[]).unwrap_err().key, "image_validation.allow[1]");
        let config: ValidationConfig = serde_yaml::from_str("{allow_images: ['Nope']}").unwrap();
        assert_eq!(Policy::new(&config, &[]).unwrap_err().key, "image_validation.allow_images[0]");
    }
}
