//! The mutating side: references of configured upstream hosts are rewritten to this
//! registry's pull-through names (`quay.io/org/app:1` → `<registry>/f/quay.io/org/app:1`),
//! tag and digest kept, as RFC 6902 `replace` operations. References to this registry and
//! ignored ones are left alone, so a second pass changes nothing.
//!
//! ```
//! use donjon_validate::{Mutator, MutateConfig};
//!
//! let config = MutateConfig { hosts: vec!["docker.io".into()], ..Default::default() };
//! let m = Mutator::new(&config, &["registry.example:5000".into()]).unwrap();
//! assert_eq!(m.rewrite("nginx:1.25").as_deref(), Some("registry.example:5000/f/docker.io/library/nginx:1.25"));
//! assert_eq!(m.rewrite("registry.example:5000/f/docker.io/library/nginx:1.25"), None);
//! assert_eq!(m.rewrite("quay.io/x"), None, "not a configured host");
//! ```

use donjon_core::config::ConfigError;
use donjon_core::image_ref::{normal_host, ImageRef};
use donjon_core::mirror;
use serde_json::{json, Value};

use crate::config::MutateConfig;
use crate::policy::{normal_prefix, prefix_matches};
use crate::review::ImageAt;

/// Rewrites references to go through this registry's cache. See the module docs.
#[derive(Clone, Debug)]
pub struct Mutator {
    registry: String,
    hosts: Vec<String>,
    ignore: Vec<String>,
    local_hosts: Vec<String>,
}

impl Mutator {
    /// The mutator of `config`; `local_hosts` are this registry's own names (`-n`), the first
    /// of which is the default `registry`.
    pub fn new(config: &MutateConfig, local_hosts: &[String]) -> Result<Self, ConfigError> {
        let registry = match config.registry.as_deref().or(local_hosts.first().map(String::as_str)) {
            Some(r) => normal_host(r.trim_end_matches('/')),
            None => {
                return Err(ConfigError::new(
                    "image_validation.mutate.registry",
                    "is needed (or a host name, -n): rewritten references must name this registry as the nodes reach it",
                ))
            }
        };
        if format!("{registry}/x").parse::<ImageRef>().map(|r| r.host() != registry).unwrap_or(true) {
            return Err(ConfigError::new(
                "image_validation.mutate.registry",
                format!("{registry:?} is not a registry host (host.domain, host:port or localhost)"),
            ));
        }
        if config.hosts.is_empty() {
            return Err(ConfigError::new(
                "image_validation.mutate.hosts",
                "names no upstream host (and registry_proxies names none either)",
            ));
        }
        let mut ignore = vec![];
        for (i, p) in config.ignore.iter().enumerate() {
            ignore.push(
                normal_prefix(p)
                    .map_err(|e| ConfigError::new(format!("image_validation.mutate.ignore[{i}]"), e))?,
            );
        }
        let mut local: Vec<String> = local_hosts.iter().map(|h| normal_host(h)).collect();
        local.push(registry.clone());
        Ok(Self {
            registry,
            hosts: config.hosts.iter().map(|h| normal_host(h)).collect(),
            ignore,
            local_hosts: local,
        })
    }

    /// The reference `image` becomes, or `None` when it stays as it is.
    pub fn rewrite(&self, image: &str) -> Option<String> {
        let r = image.parse::<ImageRef>().ok()?;
        if self.local_hosts.iter().any(|h| h == r.host()) || !self.hosts.iter().any(|h| h == r.host()) {
            return None;
        }
        let normal = r.to_string();
        if self.ignore.iter().any(|p| prefix_matches(p, &normal)) {
            return None;
        }
        let name = mirror::cached_name(r.host(), r.repo().as_str()).ok()?;
        let out = r.with_location(&self.registry, name).to_string();
        // The registry's own names must stay within the grammar: a rewrite that does not
        // parse back is not made.
        out.parse::<ImageRef>().ok()?;
        Some(out)
    }

    /// The JSON Patch that rewrites `found`: one `replace` per rewritten image.
    pub fn patch(&self, found: &[ImageAt]) -> Vec<Value> {
        found
            .iter()
            .filter_map(|at| {
                let value = self.rewrite(&at.image)?;
                Some(json!({ "op": "replace", "path": at.pointer, "value": value }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn mutator(yaml: &str) -> Mutator {
        let c: MutateConfig = serde_yaml::from_str(yaml).unwrap();
        Mutator::new(&c, &["registry.example".into()]).unwrap()
    }

    #[test]
    fn rewrites_configured_hosts_keeping_tag_and_digest() {
        let m =
            mutator("{hosts: [docker.io, quay.io, 'localhost:5000'], ignore: [docker.io/library/busybox]}");
        for (from, to) in [
            ("nginx", "registry.example/f/docker.io/library/nginx:latest".to_string()),
            ("docker.io/bitnami/redis:7", "registry.example/f/docker.io/bitnami/redis:7".into()),
            ("index.docker.io/library/nginx:1", "registry.example/f/docker.io/library/nginx:1".into()),
            (&format!("quay.io/org/app:1@{D}"), format!("registry.example/f/quay.io/org/app:1@{D}")),
            (&format!("quay.io/org/app@{D}"), format!("registry.example/f/quay.io/org/app@{D}")),
            ("localhost:5000/x", "registry.example/f/localhost__5000/x:latest".into()),
        ] {
            let got = m.rewrite(from);
            assert_eq!(got.as_deref(), Some(to.as_str()), "{from}");
            assert_eq!(m.rewrite(&to), None, "a second pass leaves {to} alone");
        }
        for alone in ["busybox", "busybox:1.36", "ghcr.io/x/y", "registry.example/team/app", "not a ref"] {
            assert_eq!(m.rewrite(alone), None, "{alone}");
        }
    }

    #[test]
    fn needs_a_registry_and_hosts() {
        let c = MutateConfig { hosts: vec!["docker.io".into()], ..Default::default() };
        assert_eq!(Mutator::new(&c, &[]).unwrap_err().key, "image_validation.mutate.registry");
        let c = MutateConfig {
            registry: Some("noport".into()),
            hosts: vec!["docker.io".into()],
            ..Default::default()
        };
        assert_eq!(Mutator::new(&c, &[]).unwrap_err().key, "image_validation.mutate.registry");
        let c = MutateConfig::default();
        assert_eq!(Mutator::new(&c, &["r.example".into()]).unwrap_err().key, "image_validation.mutate.hosts");
        let c = MutateConfig {
            registry: Some("r.example:8443".into()),
            hosts: vec!["quay.io".into()],
            ..Default::default()
        };
        let m = Mutator::new(&c, &[]).unwrap();
        assert_eq!(m.rewrite("quay.io/a").as_deref(), Some("r.example:8443/f/quay.io/a:latest"));
    }
}
