//! Configuration: a YAML file (`--config-file`), Distribution's `REGISTRY_<SECTION>_<KEY>`
//! environment overrides, then flags; flags win.
//!
//! The settings are the layers' own: [`StorageConfig`](donjon_store::StorageConfig) and
//! [`ContentConfig`](donjon_store::ContentConfig) from the store crate,
//! [`UploadConfig`](donjon_upload::UploadConfig) from the upload crate, and the server's
//! [`Options`](crate::server::Options). This module only maps file shapes onto them:
//!
//! - `distribution`: a CNCF Distribution `config.yml` (`storage`, `http`, `log`, `catalog`,
//!   `validation`) and the `REGISTRY_*` environment;
//! - `trow`: Trow's flags ([`Cli`]) and donjon's and Trow's own top-level keys, which win over
//!   Distribution's for the same thing.
//!
//! A file may mix both. Keys neither shape knows are reported as warnings with their full
//! path; sections read but not implemented yet are reported too, and those that would leave
//! the registry less protected than the user asked for (`auth.silly`) stop
//! the start-up. Errors name the key and the file.
//!
//! ```
//! use donjon::config::{Cli, Settings};
//! use clap::Parser;
//!
//! let cli = Cli::parse_from(["donjon", "--bind", "127.0.0.1:5000", "-d", "/var/lib/donjon"]);
//! let settings = Settings::load(&cli, std::iter::empty()).unwrap();
//! assert_eq!(settings.bind.port(), 5000);
//! assert_eq!(settings.data_dir, std::path::PathBuf::from("/var/lib/donjon"));
//! ```

mod distribution;
mod trow;

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

pub use donjon_core::config::ConfigError;
use donjon_core::config::Warnings;
use donjon_store::{ContentConfig, StorageConfig};
use donjon_upload::UploadConfig;

use crate::notify::NotificationsConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_yaml::Value;
pub use trow::{Cli, Command};

/// TLS files.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The effective settings: the layers' configuration and the binary's own.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Listen address.
    pub bind: SocketAddr,
    /// Data directory (the filesystem store's root).
    pub data_dir: PathBuf,
    /// Public host name, if set.
    pub hostname: Option<String>,
    /// All of this registry's host names (`-n a,b`), the public one first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// TLS, if set.
    pub tls: Option<Tls>,
    /// The store: which backend, upload purging (Distribution's `storage` section).
    pub storage: StorageConfig,
    /// The content layer: deletes, catalog page size.
    pub content: ContentConfig,
    /// The upload layer: manifest size, index children.
    pub upload: UploadConfig,
    /// The auth layer: users, rules, tokens (Distribution's `auth` section, Trow's `--user`).
    pub auth: donjon_auth::AuthConfig,
    /// The pull-through cache (Trow's `registry_proxies`, Distribution's `proxy`).
    pub proxy: donjon_proxy::ProxyConfig,
    /// Image validation webhooks (Trow's `image_validation` and its older flags).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<donjon_validate::ValidationConfig>,
    /// The web page at `/ui/` (donjon's `ui` section; on by default).
    pub ui: donjon_browse::BrowseConfig,
    /// Connection timeouts and limits (donjon's `connections` section), and the drain on
    /// shutdown (`drain_timeout`, Distribution's `http.draintimeout`).
    pub connections: crate::server::Options,
    /// Headers added to every response (Distribution's `http.headers`).
    #[serde(serialize_with = "header_list")]
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Where `/metrics` is served (Distribution's `http.debug`).
    pub metrics: MetricsSettings,
    /// Event notifications (Distribution's `notifications.endpoints`).
    #[serde(skip_serializing_if = "NotificationsConfig::is_empty")]
    pub notifications: NotificationsConfig,
    /// Log level, format and the access log.
    pub log: Logging,
    /// Things in the configuration that were ignored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            data_dir: PathBuf::from("./data"),
            hostname: None,
            names: vec![],
            tls: None,
            storage: StorageConfig::default(),
            content: ContentConfig::default(),
            upload: UploadConfig::default(),
            auth: donjon_auth::AuthConfig::default(),
            proxy: donjon_proxy::ProxyConfig::default(),
            validation: None,
            ui: donjon_browse::BrowseConfig::default(),
            connections: crate::server::Options::default(),
            headers: vec![],
            metrics: MetricsSettings::default(),
            notifications: NotificationsConfig::default(),
            log: Logging::default(),
            warnings: vec![],
        }
    }
}

/// Where the Prometheus metrics are served: on the main listener by default; on
/// `http.debug.addr` alone when that is set; nowhere when `http.debug.prometheus.enabled` is
/// false.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Whether they are served at all.
    pub enabled: bool,
    /// Their path (default `/metrics`).
    pub path: String,
    /// A listener of their own, instead of the main one.
    pub addr: Option<SocketAddr>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self { enabled: true, path: "/metrics".into(), addr: None }
    }
}

impl MetricsSettings {
    /// The path the main listener serves them at, if it does.
    pub fn on_main_listener(&self) -> Option<&str> {
        (self.enabled && self.addr.is_none()).then_some(self.path.as_str())
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object a line, for log shippers (Distribution's `json` and `logstash`).
    Json,
}

/// Logging, from Distribution's `log` section.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Logging {
    /// The level when `RUST_LOG` is not set: `error`, `warn`, `info` (default), `debug`.
    pub level: String,
    /// Text or JSON.
    pub format: LogFormat,
    /// One line per request (default on).
    pub access_log: bool,
    /// Distribution's `log.fields`: `key=value` on every line (a JSON line's members).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fields: std::collections::BTreeMap<String, String>,
}

impl Default for Logging {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text, access_log: true, fields: Default::default() }
    }
}

fn header_list<S: serde::Serializer>(
    h: &[(http::HeaderName, http::HeaderValue)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(h.len()))?;
    for (k, v) in h {
        m.serialize_entry(k.as_str(), v.to_str().unwrap_or(""))?;
    }
    m.end()
}

/// `HOST:PORT`, `:PORT` (all interfaces) or `PORT` (loopback).
fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let with_host = if let Some(port) = s.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else if s.parse::<u16>().is_ok() {
        format!("127.0.0.1:{s}")
    } else {
        s.to_string()
    };
    with_host
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("invalid listen address {s:?}: expected HOST:PORT, :PORT or PORT"))
}

/// Reads `tree` as one file shape: the value, and the paths of the keys the shape ignored.
/// A type error names the key's full path.
fn read_shape<T: DeserializeOwned>(tree: &Value) -> Result<(T, Vec<String>), ConfigError> {
    let mut ignored = vec![];
    let mut note = |path: serde_ignored::Path<'_>| ignored.push(path.to_string().replace(".?", ""));
    let de = serde_ignored::Deserializer::new(tree.clone(), &mut note);
    let value = serde_path_to_error::deserialize(de)
        .map_err(|e| ConfigError::new(e.path().to_string().replace(".?", ""), e.inner().to_string()))?;
    Ok((value, ignored))
}

/// The keys that neither shape knows: a key one shape ignored counts when the other shape
/// ignored its whole top-level section too (the two shapes' top-level keys are disjoint).
fn unknown_keys(a: Vec<String>, b: Vec<String>) -> BTreeSet<String> {
    let top = |p: &str| p.split(['.', '[']).next().unwrap_or("").to_owned();
    let sections_a: BTreeSet<String> = a.iter().filter(|p| top(p) == **p).cloned().collect();
    let sections_b: BTreeSet<String> = b.iter().filter(|p| top(p) == **p).cloned().collect();
    let from_a = a.iter().filter(|p| sections_b.contains(&top(p)));
    let from_b = b.iter().filter(|p| sections_a.contains(&top(p)));
    from_a.chain(from_b).cloned().collect()
}

impl Settings {
    /// Reads the file named by `--config-file`, applies the environment overrides (pass
    /// `std::env::vars()`), then the flags.
    pub fn load(cli: &Cli, env: impl Iterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        match &cli.config_file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::new("", format!("cannot read it: {e}")).in_file(p))?;
                Self::from_yaml(cli, &text, env).map_err(|e| e.in_file(p))
            }
            None => Self::from_yaml(cli, "", env),
        }
    }

    /// [`Settings::load`] with the file's text given: the YAML, then the environment
    /// overrides, then the flags (`cli.config_file` is not read).
    pub fn from_yaml(
        cli: &Cli,
        yaml: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut tree =
            serde_yaml::from_str::<Value>(yaml).map_err(|e| ConfigError::new("", e.to_string()))?;
        if tree.is_null() {
            tree = Value::Mapping(Default::default());
        }
        distribution::apply_env(&mut tree, env);
        let (dist, ignored_dist) = read_shape::<distribution::File>(&tree)?;
        let (own, ignored_own) = read_shape::<trow::File>(&tree)?;

        let mut warnings = Warnings::default();
        for key in unknown_keys(ignored_dist, ignored_own) {
            warnings.push(format!("unknown configuration key `{key}` ignored"));
        }
        let mut s = Settings::default();
        dist.apply(&mut s, &mut warnings)?;
        own.apply(&mut s, &mut warnings)?;
        cli.apply(&mut s, &mut warnings)?;
        s.auth.check(&mut warnings)?;
        s.proxy.check(&mut warnings)?;
        if s.names.is_empty() {
            s.names = s.hostname.iter().cloned().collect();
        }
        if let Some(v) = &s.validation {
            v.check(&mut warnings)?;
            // Compiled once here so that a bad entry stops the start naming its key.
            v.build(&s.names, &s.proxied_hosts(), s.proxy.default.as_deref(), None)?;
        }
        s.content.check()?;
        s.upload.check()?;
        s.connections.validate()?;
        s.warnings = warnings.into_vec();
        Ok(s)
    }

    /// The upstream hosts of the pull-through cache: what the mutating webhook rewrites
    /// when `image_validation.mutate.hosts` names none.
    pub fn proxied_hosts(&self) -> Vec<String> {
        let configured = self.proxy.registries.iter().map(|r| r.host.clone());
        configured.chain(self.proxy.default.clone()).collect()
    }

    /// What every layer's section builds its layer from
    /// ([`LayerConfig::layer`](donjon_core::config::LayerConfig::layer)).
    pub fn build_context(
        &self,
        store: std::sync::Arc<dyn donjon_core::Store>,
    ) -> donjon_core::config::BuildContext {
        donjon_core::config::BuildContext {
            store,
            names: self.names.clone(),
            hostname: self.hostname.clone(),
            data_dir: self.data_dir.clone(),
            mirrored: self.proxied_hosts(),
            default_upstream: self.proxy.default.clone(),
        }
    }

    /// The validation layer, when `image_validation` (or Trow's older flags) asks for one;
    /// `store` answers `check_local`.
    pub fn validation_layer(
        &self,
        store: Option<std::sync::Arc<dyn donjon_core::Store>>,
    ) -> Result<Option<donjon_validate::ValidationLayer>, ConfigError> {
        let default = self.proxy.default.as_deref();
        self.validation
            .as_ref()
            .map(|v| v.build(&self.names, &self.proxied_hosts(), default, store))
            .transpose()
    }

    /// The settings as YAML, for `--dry-run`.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;
    use donjon_store::Backend;
    use donjon_upload::IndexChildren;

    use super::*;

    fn load(args: &[&str], yaml: Option<&str>, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let mut argv: Vec<String> = vec!["donjon".into()];
        argv.extend(args.iter().map(|s| s.to_string()));
        if let Some(y) = yaml {
            let p = dir.path().join("config.yml");
            std::fs::write(&p, y).unwrap();
            argv.push("--config-file".into());
            argv.push(p.display().to_string());
        }
        let cli = Cli::parse_from(argv);
        Settings::load(&cli, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults() {
        let s = load(&[], None, &[]).unwrap();
        assert_eq!(s.bind, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert!(!s.content.delete_enabled, "deletes are off unless asked for, as in Distribution");
        let on = load(&[], None, &[("REGISTRY_STORAGE_DELETE_ENABLED", "true")]).unwrap();
        assert!(on.content.delete_enabled);
        assert!(s.tls.is_none());
        assert_eq!(s.upload.max_manifest_size, 4 << 20);
    }

    #[test]
    fn distribution_config_yml() {
        let yaml = r#"
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: false
http:
  addr: :5000
  secret: asecretforlocaldevelopment
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
"#;
        let s = load(&[], Some(yaml), &[]).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/registry"));
        assert_eq!(s.bind, "0.0.0.0:5000".parse().unwrap());
        assert!(!s.content.delete_enabled);
        assert!(s.warnings.iter().any(|w| w.contains("storage.cache")), "{:?}", s.warnings);
        assert_eq!(s.headers.len(), 1);
        assert_eq!(s.headers[0].0, "x-content-type-options");
        assert_eq!(s.headers[0].1, "nosniff");
        assert!(load(&[], Some("http:\n  headers:\n    \"bad name\": [x]\n"), &[]).is_err());
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let yaml = "storage:\n  filesystem:\n    rootdirectory: /a\n";
        let env = [
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/b"),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "false"),
        ];
        let s = load(&[], Some(yaml), &env).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/b"));
        assert!(!s.content.delete_enabled);
        let s = load(&["-d", "/c"], Some(yaml), &env).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/c"));
    }

    #[test]
    fn image_validation_from_every_source() {
        // Trow's section
        let yaml = "image_validation:\n  default: Deny\n  allow: [registry.example/, quay.io/]\n  deny: [quay.io/bad/]\n";
        let s = load(&["-n", "registry.example"], Some(yaml), &[]).unwrap();
        let v = s.validation.as_ref().unwrap();
        assert_eq!(v.allow, ["registry.example/", "quay.io/"]);
        assert!(s.validation_layer(None).unwrap().is_some());
        // Trow's policy file flag wins over the section
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("policy.yaml");
        std::fs::write(&f, "default: Allow\ndeny: [docker.io/]\n").unwrap();
        let s = load(&["--image-validation-config-file", f.to_str().unwrap()], Some(yaml), &[]).unwrap();
        assert_eq!(s.validation.as_ref().unwrap().default, donjon_validate::Verdict::Allow);
        assert_eq!(s.validation.as_ref().unwrap().deny, ["docker.io/"]);
        std::fs::write(&f, "default: Allow\nalow: [x]\n").unwrap();
        let s = load(&["--image-validation-config-file", f.to_str().unwrap()], None, &[]).unwrap();
        assert!(s.warnings.iter().any(|w| w.contains("`alow`")), "{:?}", s.warnings);
        std::fs::write(&f, "default: Sometimes\n").unwrap();
        let e = load(&["--image-validation-config-file", f.to_str().unwrap()], None, &[]).unwrap_err();
        assert!(e.to_string().contains("policy.yaml") && e.to_string().contains("Sometimes"), "{e}");
        // a bad entry names its key, at load time
        let e = load(&[], Some("image_validation: {allow: ['a b']}"), &[]).unwrap_err();
        assert_eq!(e.key, "image_validation.allow[0]");
        // no policy, no layer
        assert!(load(&[], None, &[]).unwrap().validation_layer(None).unwrap().is_none());
    }

    #[test]
    fn trows_older_validation_flags() {
        let args = [
            "-n",
            "registry.example,reg.internal:8000",
            "--allow-prefixes",
            "quay.io/coreos, k8s.gcr.io/",
            "--allow-images",
            "docker.io/library/nginx:1.25",
            "--disallow-local-prefixes",
            "beta",
            "--disallow-local-images",
            "team/app:old",
        ];
        let s = load(&args, None, &[]).unwrap();
        assert_eq!(s.hostname.as_deref(), Some("registry.example"));
        assert_eq!(s.names, ["registry.example", "reg.internal:8000"]);
        let v = s.validation.as_ref().unwrap();
        assert!(v.check_local, "the older flags allow local images that are here");
        assert_eq!(v.allow, ["registry.example/", "reg.internal:8000/", "quay.io/coreos", "k8s.gcr.io/"]);
        assert_eq!(v.allow_images, ["docker.io/library/nginx:1.25"]);
        assert_eq!(v.deny_local_prefixes, ["beta"]);
        assert_eq!(v.deny_local_images, ["team/app:old"]);
        // the local check needs the registry's names
        let e = load(&["--allow-prefixes", "quay.io/"], None, &[]).unwrap_err();
        assert_eq!(e.key, "image_validation.check_local");
    }

    #[test]
    fn the_mutating_webhook_defaults_to_the_proxied_hosts() {
        let yaml = "registry_proxies:\n  registries:\n    - host: docker.io\n    - host: quay.io\nimage_validation:\n  default: Allow\n  mutate: {}\n";
        let s = load(&["-n", "registry.example"], Some(yaml), &[]).unwrap();
        assert_eq!(s.proxied_hosts(), ["docker.io", "quay.io"]);
        assert!(s.validation_layer(None).unwrap().is_some());
        let e = load(&[], Some(yaml), &[]).unwrap_err();
        assert_eq!(e.key, "image_validation.mutate.registry");
    }

    #[test]
    fn distributions_configuration_reference_is_taken_saying_only_what_is_not_implemented() {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, "").unwrap();
        let yaml = include_str!("testdata/distribution-reference.yml")
            .replace("HTPASSWD", &htpasswd.display().to_string());
        let s = load(&[], Some(&yaml), &[]).unwrap();
        let not_implemented = |k: &str| format!("`{k}` is not implemented by this donjon version; ignored");
        let want = [
            not_implemented("proxy.ttl (cached content is kept until deleted)"),
            not_implemented("redis"),
            not_implemented("middleware"),
            not_implemented("reporting"),
            not_implemented("storage.cache"),
            not_implemented("storage.tag"),
            "storage.redirect applies to object storage only; ignored".to_string(),
            not_implemented("validation.manifests.urls"),
            not_implemented("http.prefix"),
            not_implemented("log.hooks"),
        ];
        let mut got = s.warnings.clone();
        got.sort();
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(got, want, "no key is called unknown, none is said twice");
        assert_eq!(
            s.log.fields.get("service").map(String::as_str),
            Some("registry"),
            "log.fields is applied"
        );
    }

    #[test]
    fn the_projects_distribution_example_loads_without_a_warning() {
        let yaml = include_str!("../../deploy/config/distribution-config.yml");
        let s = load(&[], Some(yaml), &[]).unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn unknown_keys_are_reported() {
        let s = load(&[], Some("storage:\n  filesystem:\n    rootdirectry: /typo\nfoo: 1\n"), &[]).unwrap();
        assert!(s.warnings.iter().any(|w| w.contains("storage.filesystem.rootdirectry")), "{:?}", s.warnings);
        assert!(s.warnings.iter().any(|w| w.contains("`foo`")), "{:?}", s.warnings);
    }

    #[test]
    fn an_auth_file_that_cannot_be_read_stops_the_start() {
        let e = load(&[], Some("auth:\n  htpasswd:\n    realm: r\n    path: /x\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("auth"), "{e}");
    }

    #[test]
    fn tls_and_bind_flags() {
        let s = load(&["--tls", "c.pem,k.pem", "--bind", "9000", "-n", "reg.example"], None, &[]).unwrap();
        assert_eq!(s.tls, Some(Tls { cert: "c.pem".into(), key: "k.pem".into() }));
        assert_eq!(s.bind.port(), 9000);
        assert_eq!(s.hostname.as_deref(), Some("reg.example"));
        assert!(load(&["--tls", "only.pem"], None, &[]).is_err());
        assert!(load(&["--bind", "nonsense:port"], None, &[]).is_err());
    }

    #[test]
    fn bad_yaml_names_the_file() {
        let e = load(&[], Some("storage: [unclosed"), &[]).unwrap_err();
        assert!(e.to_string().contains("config.yml"), "{e}");
    }

    #[test]
    fn distribution_s3_section() {
        let yaml = r#"
storage:
  s3:
    bucket: registry
    region: garage
    regionendpoint: http://127.0.0.1:3900
    accesskey: GK1
    secretkey: SECRET
    rootdirectory: /donjon
    forcepathstyle: true
    skipverify: false
    chunksize: 10485760
    v4auth: true
  redirect:
    disable: true
"#;
        let s = load(&[], Some(yaml), &[("REGISTRY_STORAGE_S3_BUCKET", "other")]).unwrap();
        let Backend::S3(s3) = &s.storage.backend().unwrap() else { panic!("{:?}", s.storage) };
        assert_eq!(s3.bucket, "other");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(s3.root.as_deref(), Some("/donjon"));
        assert!(s3.path_style);
        assert_eq!(s3.chunk_size, Some(10 << 20));
        assert!(s.warnings.iter().any(|w| w.contains("v4auth")), "{:?}", s.warnings);
        assert!(s3.redirect.is_none(), "redirect.disable: true");
        assert!(!s.to_yaml().contains("SECRET"), "the secret is never printed");
        // the same from the environment alone
        let env = [
            ("REGISTRY_STORAGE_S3_BUCKET", "b"),
            ("REGISTRY_STORAGE_S3_REGIONENDPOINT", "minio:9000"),
            ("REGISTRY_STORAGE_S3_SECURE", "false"),
        ];
        let s = load(&[], None, &env).unwrap();
        let Backend::S3(s3) = &s.storage.backend().unwrap() else { panic!() };
        assert_eq!(s3.endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(s3.redirect, Some(Duration::from_secs(1200)), "Distribution's default: redirects on");
        let e = load(&[], Some("storage:\n  s3:\n    region: x\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("bucket"), "{e}");
        let both = "storage:\n  filesystem: {rootdirectory: /a}\n  s3: {bucket: b}\n";
        assert!(load(&[], Some(both), &[]).is_err());
    }

    #[test]
    fn upload_purging() {
        let s = load(&[], None, &[]).unwrap();
        let p = s.storage.upload_purging().unwrap();
        assert_eq!((p.age.as_secs(), p.interval.as_secs(), p.dry_run), (168 * 3600, 24 * 3600, false));
        let yaml = "storage:\n  maintenance:\n    uploadpurging: {enabled: true, age: 2h, interval: 30m, dryrun: true}\n";
        let p = load(&[], Some(yaml), &[]).unwrap().storage.upload_purging().unwrap();
        assert_eq!((p.age.as_secs(), p.interval.as_secs(), p.dry_run), (7200, 1800, true));
        let off = "storage:\n  maintenance:\n    uploadpurging: {enabled: false}\n";
        assert!(load(&[], Some(off), &[]).unwrap().storage.upload_purging().is_none());
        assert!(load(&[], Some("storage:\n  maintenance:\n    uploadpurging: {age: soon}\n"), &[]).is_err());
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let e =
            load(&[], Some("storage:\n  maintenance:\n    uploadpurging: {age: soon}\n"), &[]).unwrap_err();
        assert_eq!(e.key, "storage.maintenance.uploadpurging.age", "{e}");
        assert!(e.to_string().contains("config.yml") && e.to_string().contains("soon"), "{e}");
        let e = load(&[], Some("connections: {idle_timeout: 0s}\n"), &[]).unwrap_err();
        assert_eq!(e.key, "connections.idle_timeout", "{e}");
        let e = load(&[], Some("catalog: {maxentries: many}\n"), &[]).unwrap_err();
        assert_eq!(e.key, "catalog.maxentries", "{e}");
        let e = load(&["--bind", "nowhere"], None, &[]).unwrap_err();
        assert_eq!((e.key.as_str(), e.file.is_none()), ("--bind", true), "{e}");
    }

    #[test]
    fn missing_blobs_are_refused_unless_accepted() {
        assert!(!load(&[], Some("validation: {disabled: true}\n"), &[]).unwrap().upload.accept_missing_blobs);
        let s = load(&[], Some("accept_missing_blobs: true\n"), &[]).unwrap();
        assert!(s.upload.accept_missing_blobs && s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn both_shapes_in_one_file_and_typos_in_either() {
        let yaml = "bind: 127.0.0.1:7000\nhttp: {addr: ':5000'}\nconnections: {idel_timeout: 5s}\n\
                    max_manifest_size: 8388608\ncatalog: {maxentries: 50}\nstorage: {delete: {enabled: false}}\n";
        let s = load(&[], Some(yaml), &[]).unwrap();
        assert_eq!(s.bind.port(), 7000, "donjon's key wins over Distribution's");
        assert_eq!((s.upload.max_manifest_size, s.content.catalog_max_entries), (8 << 20, 50));
        assert!(!s.content.delete_enabled);
        assert_eq!(s.warnings, ["unknown configuration key `connections.idel_timeout` ignored"]);
        assert!(s.to_yaml().contains("catalog_max_entries: 50"), "{}", s.to_yaml());
    }

    #[test]
    fn distribution_index_validation() {
        let p = |s: &str| -> donjon_core::manifest::Platform { s.parse().unwrap() };
        let rule = |yaml: &str| load(&[], Some(yaml), &[]).map(|s| s.upload.index_children);
        assert_eq!(rule("version: 0.1").unwrap(), IndexChildren::All);
        let list = "validation:\n  manifests:\n    indexes:\n      platforms: List\n      platformlist:\n      - architecture: amd64\n        os: linux\n      - {architecture: arm, os: linux, variant: v7}\n";
        assert_eq!(rule(list).unwrap(), IndexChildren::Platforms(vec![p("linux/amd64"), p("linux/arm/v7")]));
        assert_eq!(
            rule("validation: {manifests: {indexes: {platforms: none}}}").unwrap(),
            IndexChildren::None
        );
        assert_eq!(rule("validation: {manifests: {indexes: {platforms: All}}}").unwrap(), IndexChildren::All);
        assert_eq!(
            rule("validation: {manifests: {indexes: {platforms: [linux/arm64]}}}").unwrap(),
            IndexChildren::Platforms(vec![p("linux/arm64")])
        );
        assert_eq!(rule("validation: {disabled: true}").unwrap(), IndexChildren::None);
        let e = rule("validation: {manifests: {indexes: {platforms: List}}}").unwrap_err().to_string();
        assert!(e.contains("platformlist"), "{e}");
        let e = rule("validation: {manifests: {indexes: {platforms: [amd64]}}}").unwrap_err().to_string();
        assert!(e.contains("validation.manifests.indexes.platforms") && e.contains("amd64"), "{e}");
        let s = load(&[], Some("validation: {manifests: {urls: {allow: [x]}}}"), &[]).unwrap();
        assert!(s.warnings.iter().any(|w| w.contains("validation.manifests.urls")), "{:?}", s.warnings);
        assert!(s.to_yaml().contains("index_children: all"), "{}", s.to_yaml());
    }

    #[test]
    fn auth_with_object_storage_keeps_its_key_in_the_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let h = dir.path().join("htpasswd");
        std::fs::write(&h, "").unwrap();
        let yaml = format!("auth: {{htpasswd: {{path: {}}}}}\nstorage: {{s3: {{bucket: b}}}}\n", h.display());
        let s = load(&[], Some(&yaml), &[]).unwrap();
        assert!(s.auth.enabled() && s.auth.signing_key.is_none());
        let yaml = yaml.replace("auth: {", "auth: {signing_key: /nonexistent/k.pem, ");
        let e = load(&[], Some(&yaml), &[]).unwrap_err();
        assert_eq!(e.key, "auth.signing_key", "a key file that is not there is named: {e}");
        let s = load(&["--user", "u", "--password", "p"], None, &[]).unwrap();
        assert!(s.auth.enabled() && !s.to_yaml().contains(": p\n"));
    }

    /// The Distribution chart's environment: `REGISTRY_AUTH=htpasswd` beside its keys, in any
    /// order (a kubelet's is random); `REGISTRY_STORAGE=s3` switching the file's driver.
    #[test]
    fn the_web_page_is_on_unless_turned_off() {
        assert!(load(&[], None, &[]).unwrap().ui.enabled);
        assert!(!load(&[], Some("ui: {enabled: false}"), &[]).unwrap().ui.enabled);
        assert!(!load(&[], None, &[("REGISTRY_UI_ENABLED", "false")]).unwrap().ui.enabled);
        let s = load(&[], Some("ui: {enabld: false}"), &[]).unwrap();
        assert!(s.ui.enabled && s.warnings.iter().any(|w| w.contains("ui.enabld")), "{:?}", s.warnings);
    }

    #[test]
    fn a_kind_named_in_the_environment_takes_its_keys_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let h = dir.path().join("htpasswd");
        std::fs::write(&h, "").unwrap();
        let h = h.display().to_string();
        let mut env = vec![
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
            ("REGISTRY_AUTH", "htpasswd"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", h.as_str()),
            ("REGISTRY_STORAGE_S3_BUCKET", "b"),
            ("REGISTRY_STORAGE", "s3"),
        ];
        let yaml = "storage:\n  filesystem: {rootdirectory: /var/lib/registry}\n";
        for _ in 0..env.len() {
            env.rotate_left(1);
            let s = load(&[], Some(yaml), &env).unwrap_or_else(|e| panic!("{env:?}: {e}"));
            let ht = s.auth.htpasswd.as_ref().unwrap_or_else(|| panic!("{env:?}: no htpasswd"));
            assert_eq!(ht.realm.as_deref(), Some("Registry Realm"), "{env:?}");
            assert_eq!(ht.path, PathBuf::from(&h), "{env:?}");
            assert!(matches!(s.storage.backend(), Ok(donjon_store::Backend::S3(_))), "{env:?}");
        }
    }

    #[test]
    fn distributions_token_auth_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("keys.json");
        std::fs::write(&jwks, r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#).unwrap();
        let jwks = jwks.display().to_string();
        let env = [
            ("REGISTRY_AUTH_TOKEN_REALM", "https://auth.example/token"),
            ("REGISTRY_AUTH_TOKEN_SERVICE", "registry.example"),
            ("REGISTRY_AUTH_TOKEN_ISSUER", "auth.example"),
            ("REGISTRY_AUTH_TOKEN_JWKS", jwks.as_str()),
        ];
        // No signing key of donjon's own is needed beside object storage: the server signs.
        let s = load(&[], Some("storage: {s3: {bucket: b}}"), &env).unwrap();
        let token = s.auth.token.as_ref().unwrap();
        assert_eq!((token.service.as_str(), token.issuer.as_str()), ("registry.example", "auth.example"));
        assert!(s.auth.enabled());
        assert!(s.to_yaml().contains("realm: https://auth.example/token"), "{}", s.to_yaml());
        let e = load(&[], None, &env[..3]).unwrap_err();
        assert_eq!(e.key, "auth.token", "{e}");
    }

    #[test]
    fn proxies_from_trow_distribution_and_flags() {
        let yaml = "registry_proxies:\n  registries:\n    - {host: ghcr.io, path_prefix: org, username: u, password: p}\n    - {host: quay.io, colour: blue}\n  check_interval: 1m\n";
        let s = load(&[], Some(yaml), &[]).unwrap();
        assert_eq!(s.proxy.registries.len(), 2);
        assert_eq!(s.proxy.check_interval(), std::time::Duration::from_secs(60));
        assert!(
            s.warnings.iter().any(|w| w.contains("registry_proxies.registries.1.colour")),
            "{:?}",
            s.warnings
        );
        assert!(!s.to_yaml().contains("password: p"), "{}", s.to_yaml());
        // Distribution's single upstream: an entry, and the default for what is not here.
        let yaml =
            "proxy: {remoteurl: 'https://registry-1.docker.io', username: me, password: pw, ttl: 168h}\n";
        let s = load(&[], Some(yaml), &[]).unwrap();
        assert_eq!(s.proxy.default.as_deref(), Some("docker.io"));
        assert_eq!(s.proxy.registries[0].url.as_deref(), Some("https://registry-1.docker.io"));
        assert!(s.warnings.iter().any(|w| w.contains("proxy.ttl")), "{:?}", s.warnings);
        let e = load(&[], Some("proxy: {username: me}"), &[]).unwrap_err();
        assert_eq!(e.key, "proxy.remoteurl");
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("hub");
        std::fs::write(&token, "t0k3n\n").unwrap();
        let t = token.display().to_string();
        let s = load(&["--proxy-docker-hub", "--hub-user", "me", "--hub-token-file", &t], None, &[]).unwrap();
        assert_eq!(s.proxy.registries[0].host, "docker.io");
        let up = s.proxy.upstreams().unwrap();
        assert!(up.resolve("docker.io", "library/x").unwrap().credentials.is_some());
        let e = load(&[], Some("registry_proxies: {registries: [{host: a, url: 'nope'}]}"), &[]).unwrap_err();
        assert_eq!(e.key, "registry_proxies.registries[0].url");
    }

    #[test]
    fn the_deploy_mirror_config_loads() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("token");
        std::fs::write(&secret, "t0k3n\n").unwrap();
        let yaml = include_str!("../../deploy/mirror/donjon.yml")
            .replace("/run/secrets/docker-hub-token", &secret.display().to_string())
            .replace("/run/secrets/ghcr-token", &secret.display().to_string());
        let s = load(&[], Some(&yaml), &[]).unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(s.proxy.default.as_deref(), Some("docker.io"));
        let up = s.proxy.upstreams().unwrap();
        assert_eq!(up.resolve("ghcr.io", "my-org/app").unwrap().credentials.unwrap().username, "my-bot");
        assert!(up.resolve("ghcr.io", "other/app").unwrap().credentials.is_none());
    }
}
