//! The `image_validation` section: Trow's keys (`default`, `allow`, `deny`), the lists of
//! Trow's older flags, and donjon's `check_local` and `mutate`.
//!
//! ```
//! use donjon_validate::ValidationConfig;
//!
//! let c: ValidationConfig = serde_yaml::from_str(r#"
//! default: Deny
//! allow: [registry.example/, quay.io/]
//! deny: [registry.example/secret/]
//! mutate:
//!   registry: registry.example
//!   hosts: [docker.io, quay.io]
//! "#).unwrap();
//! assert_eq!(c.allow.len(), 2);
//! assert_eq!(c.mutate.unwrap().hosts, ["docker.io", "quay.io"]);
//! assert!(serde_yaml::from_str::<ValidationConfig>("default: Maybe").is_err());
//! ```

use serde::{Deserialize, Deserializer, Serialize};

use donjon_core::config::{ConfigError, Warnings};

/// What an image no rule matches gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// It may run.
    Allow,
    /// It may not (Trow's advice, and the default here).
    #[default]
    Deny,
}

impl<'de> Deserialize<'de> for Verdict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            _ => Err(serde::de::Error::custom(format!("{s:?} is neither Allow nor Deny"))),
        }
    }
}

/// The validation layer's settings. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ValidationConfig {
    /// What an image no rule matches gets (default `Deny`).
    pub default: Verdict,
    /// Prefixes of references that may run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Prefixes of references that may not; on a tie with `allow`, deny wins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Whole references that may run (Trow's `--allow-images`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_images: Vec<String>,
    /// Prefixes of repositories of this registry that may not run, without the host (Trow's
    /// `--disallow-local-prefixes`: `beta` refuses `<host>/beta/app`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_local_prefixes: Vec<String>,
    /// Whole references of this registry that may not run, without the host (Trow's
    /// `--disallow-local-images`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_local_images: Vec<String>,
    /// References to this registry's own host names are allowed only when the image is here
    /// (looked up in the store). Trow's older flags implied it.
    pub check_local: bool,
    /// The mutating webhook (off unless present).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutate: Option<MutateConfig>,
}

/// `image_validation.mutate`: which references `/mutate-image` sends through this registry's
/// pull-through cache.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct MutateConfig {
    /// This registry as the cluster's nodes reach it (`host[:port]`); default: its first host
    /// name (`-n`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The upstream hosts whose references are rewritten to `<registry>/f/<host>/<repo>`;
    /// default: the hosts of `registry_proxies`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Prefixes of references left as they are (Trow's `ignore_repos`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
}

impl ValidationConfig {
    /// The layer: the policy compiled against this registry's host names (`local_hosts`,
    /// Trow's `-n`, and `mutate.registry`), the mutator when `mutate` is set (its `hosts`
    /// defaulting to `proxied_hosts`, the pull-through cache's upstreams), plain local names
    /// judged also as the images of the cache's `default_upstream`, and `store` for
    /// `check_local`.
    pub fn build(
        &self,
        local_hosts: &[String],
        proxied_hosts: &[String],
        default_upstream: Option<&str>,
        store: Option<std::sync::Arc<dyn donjon_core::Store>>,
    ) -> Result<crate::ValidationLayer, ConfigError> {
        // the registry the mutator names is this one too
        let mut local: Vec<String> = local_hosts.to_vec();
        if let Some(r) = self.mutate.as_ref().and_then(|m| m.registry.clone()) {
            local.push(r);
        }
        let policy = crate::Policy::new(self, &local)?.default_upstream(default_upstream);
        let mut layer = crate::ValidationLayer::new(policy);
        if let Some(m) = &self.mutate {
            let mut m = m.clone();
            if m.hosts.is_empty() {
                m.hosts = proxied_hosts.to_vec();
            }
            layer = layer.mutator(crate::Mutator::new(&m, local_hosts)?);
        }
        if let Some(store) = store {
            layer = layer.store(store);
        }
        Ok(layer)
    }

    /// Checks what can be checked without the registry's host names; `Policy::new` checks
    /// the rest. Nothing here is merely ignored, so there is nothing to warn of.
    pub fn check(&self, _w: &mut Warnings) -> Result<(), ConfigError> {
        if let Some(m) = &self.mutate {
            for (i, h) in m.hosts.iter().enumerate() {
                let ok = !h.is_empty() && !h.contains(['/', ' ']);
                if !ok {
                    return Err(ConfigError::new(
                        format!("image_validation.mutate.hosts[{i}]"),
                        format!("{h:?} is not a host name (host or host:port, no path)"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The webhooks' layer: the policy judges the registry's names as local, the mirrored hosts
/// and default upstream as the cache's, and asks the store for `check_local`.
#[donjon_core::config::async_trait]
impl donjon_core::config::LayerConfig for ValidationConfig {
    type Layer = crate::ValidationLayer;
    async fn layer(
        &self,
        cx: &donjon_core::config::BuildContext,
    ) -> Result<Option<crate::ValidationLayer>, ConfigError> {
        let default = cx.default_upstream.as_deref();
        self.build(&cx.names, &cx.mirrored, default, Some(cx.store.clone())).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trows_file() {
        // Trow's own example, as its user guide writes it.
        let c: ValidationConfig = serde_yaml::from_str(
            "default: Deny\nallow:\n  - my-trow-domain.trow.io/\n  - k8s.gcr.io/\ndeny:\n  - my-trow-domain.trow.io/my-secret-image\n",
        )
        .unwrap();
        assert_eq!(c.default, Verdict::Deny);
        assert_eq!(c.allow, ["my-trow-domain.trow.io/", "k8s.gcr.io/"]);
        assert_eq!(c.deny.len(), 1);
        assert!(c.mutate.is_none());
    }

    #[test]
    fn default_is_deny_and_any_case() {
        assert_eq!(serde_yaml::from_str::<ValidationConfig>("{}").unwrap().default, Verdict::Deny);
        assert_eq!(
            serde_yaml::from_str::<ValidationConfig>("default: allow").unwrap().default,
            Verdict::Allow
        );
        let e = serde_yaml::from_str::<ValidationConfig>("default: yes").unwrap_err().to_string();
        assert!(e.contains("neither Allow nor Deny"), "{e}");
    }

    /// What the mutator rewrites to is judged as this registry's own name: its cached copies
    /// answer for their upstream.
    #[tokio::test]
    async fn the_mutators_registry_is_local_to_the_policy() {
        let c: ValidationConfig = serde_yaml::from_str(
            "{default: Allow, deny: [docker.io/library/nginx], mutate: {registry: 'registry.example:5000', hosts: [docker.io]}}",
        )
        .unwrap();
        let layer = c.build(&["registry.example".into()], &[], None, None).unwrap();
        let d = layer.decide("registry.example:5000/f/docker.io/library/nginx:1").await;
        assert!(!d.allowed, "{}", d.reason);
    }

    #[test]
    fn mutate_hosts_are_hosts() {
        let c: ValidationConfig = serde_yaml::from_str("mutate: {hosts: [docker.io, quay.io/x]}").unwrap();
        let e = c.check(&mut Warnings::default()).unwrap_err();
        assert_eq!(e.key, "image_validation.mutate.hosts[1]");
    }
}
