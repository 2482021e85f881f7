//! CNCF Distribution's `config.yml`, mapped onto the layers' settings: `storage` is the store's
//! own section ([`StorageConfig`]); `storage.delete` and `catalog` go to the content layer,
//! `validation.manifests.indexes` to the upload layer, `http` and `log` to the server and the
//! binary. `REGISTRY_<SECTION>_<KEY>` environment variables override the file, as in
//! Distribution.
//!
//! `auth` is the auth layer's own section ([`AuthConfig`](donjon_auth::AuthConfig)): the
//! `htpasswd` provider, with donjon's access rules beside it, or `token`, another token
//! server's. Sections this version reads but does not implement are reported; those that
//! would leave the registry less protected than asked (`auth.silly`) stop the start-up.

use std::path::PathBuf;

use donjon_core::config::{duration, Accepted, ConfigError, Warnings};
use donjon_store::StorageConfig;
use donjon_upload::IndexChildren;
use serde::Deserialize;
use serde_yaml::Value;

use super::{LogFormat, Logging, Settings, Tls};

/// The keys of Distribution's `config.yml` donjon reads.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(super) struct File {
    version: Option<Accepted>,
    log: LogFile,
    loglevel: Option<String>,
    storage: StorageConfig,
    http: Http,
    auth: donjon_auth::AuthConfig,
    proxy: Option<ProxyFile>,
    notifications: Option<crate::notify::NotificationsConfig>,
    ui: Option<donjon_browse::BrowseConfig>,
    redis: Option<Accepted>,
    health: Option<Accepted>,
    validation: Option<ValidationFile>,
    middleware: Option<Accepted>,
    compatibility: Option<Accepted>,
    /// Distribution 2's bug trackers (bugsnag, newrelic).
    reporting: Option<Accepted>,
    catalog: Catalog,
}

/// Distribution's `proxy` section: one upstream for everything not here.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct ProxyFile {
    remoteurl: Option<String>,
    username: Option<String>,
    password: Option<String>,
    ttl: Option<Accepted>,
}

/// Distribution 3's `validation` section.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct ValidationFile {
    /// Deprecated in Distribution for `disabled`; only `disabled` decides.
    enabled: Option<Accepted>,
    disabled: Option<bool>,
    manifests: ManifestValidationFile,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct ManifestValidationFile {
    urls: Option<Accepted>,
    indexes: IndexesFile,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct IndexesFile {
    /// `All`, `None`, `List` (Distribution's), or a list of `os/arch[/variant]`.
    platforms: Option<Value>,
    platformlist: Vec<PlatformFile>,
}

#[derive(Deserialize, Debug)]
struct PlatformFile {
    architecture: String,
    os: String,
    variant: Option<String>,
}

/// Distribution's `log` section.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct LogFile {
    level: Option<String>,
    formatter: Option<String>,
    /// Added to every line: `{service: registry}` (the stock config's).
    fields: std::collections::BTreeMap<String, Value>,
    accesslog: AccessLogFile,
    hooks: Option<Accepted>,
    reportcaller: Option<Accepted>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct AccessLogFile {
    disabled: bool,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct Catalog {
    maxentries: Option<usize>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct Http {
    addr: Option<String>,
    host: Option<String>,
    net: Option<Accepted>,
    prefix: Option<Accepted>,
    secret: Option<Accepted>,
    relativeurls: Option<Accepted>,
    #[serde(with = "duration::option")]
    draintimeout: Option<std::time::Duration>,
    tls: Option<HttpTls>,
    headers: Option<Value>,
    debug: Option<HttpDebug>,
    http2: Option<Accepted>,
    /// Distribution 3's HTTP/2 over plain TCP: donjon always serves it.
    h2c: Option<Accepted>,
}

/// `http.debug`: where the metrics are served when not on the main listener.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct HttpDebug {
    addr: Option<String>,
    prometheus: Option<Prometheus>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct Prometheus {
    enabled: Option<bool>,
    path: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct HttpTls {
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    clientcas: Option<Accepted>,
    minimumtls: Option<Accepted>,
    ciphersuites: Option<Accepted>,
    letsencrypt: Option<Accepted>,
}

impl File {
    /// Maps the file onto `s`: what Distribution's keys say, over the defaults.
    pub(super) fn apply(self, s: &mut Settings, w: &mut Warnings) -> Result<(), ConfigError> {
        s.auth = self.auth;
        if let Some(p) = self.proxy {
            let url = p.remoteurl.ok_or_else(|| ConfigError::new("proxy.remoteurl", "is required"))?;
            let host = url
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| u.host().map(str::to_string))
                .ok_or_else(|| ConfigError::new("proxy.remoteurl", format!("{url:?} is not a URL")))?;
            // Docker Hub's API endpoint caches as docker.io, as references name it.
            let host = donjon_core::mirror::canonical_host(&host);
            w.not_implemented(p.ttl.is_some(), "proxy.ttl (cached content is kept until deleted)");
            s.proxy.registries.push(donjon_proxy::RegistryConfig {
                host: host.clone(),
                url: Some(url),
                username: p.username,
                password: p.password,
                ..Default::default()
            });
            s.proxy.default = Some(host);
        }
        if let Some(ui) = self.ui {
            s.ui = ui;
        }
        if let Some(n) = self.notifications {
            n.check()?;
            s.notifications = n;
        }
        w.not_implemented(self.redis.is_some(), "redis");
        w.not_implemented(self.middleware.is_some(), "middleware");
        w.not_implemented(self.reporting.is_some(), "reporting");
        let _ = (&self.version, &self.health, &self.compatibility);

        self.storage.check(w)?;
        if let Some(root) = self.storage.root_directory() {
            s.data_dir = root.to_path_buf();
        }
        if let Some(enabled) = self.storage.delete.enabled {
            s.content.delete_enabled = enabled;
        }
        s.storage = self.storage;
        if let Some(n) = self.catalog.maxentries {
            s.content.catalog_max_entries = n;
        }
        if let Some(v) = self.validation {
            s.upload.index_children = index_rule(v, w)?;
        }

        let http = self.http;
        w.not_implemented(http.prefix.is_some(), "http.prefix");
        let _ = (&http.secret, &http.relativeurls, &http.http2, &http.net);
        if let Some(debug) = http.debug {
            if let Some(addr) = debug.addr {
                let a = super::parse_bind(&addr).map_err(|e| ConfigError::new("http.debug.addr", e))?;
                s.metrics.addr = Some(a);
            }
            if let Some(p) = debug.prometheus {
                if let Some(enabled) = p.enabled {
                    s.metrics.enabled = enabled;
                }
                if let Some(path) = p.path {
                    if !path.starts_with('/') {
                        return Err(ConfigError::new(
                            "http.debug.prometheus.path",
                            format!("{path:?} must start with /"),
                        ));
                    }
                    s.metrics.path = path;
                }
            }
        }
        s.headers = parse_headers(http.headers.as_ref())?;
        if let Some(addr) = http.addr {
            s.bind = super::parse_bind(&addr).map_err(|e| ConfigError::new("http.addr", e))?;
        }
        if let Some(host) = http.host {
            s.hostname = Some(host);
        }
        if let Some(d) = http.draintimeout {
            s.connections.drain_timeout = d;
        }
        if let Some(tls) = http.tls {
            let _ = (&tls.minimumtls, &tls.ciphersuites);
            if tls.clientcas.is_some() || tls.letsencrypt.is_some() {
                return Err(ConfigError::new("http.tls", "clientcas and letsencrypt are not supported"));
            }
            if let (Some(cert), Some(key)) = (tls.certificate, tls.key) {
                s.tls = Some(Tls { cert, key });
            }
        }
        s.log = logging(self.log, self.loglevel, w)?;
        Ok(())
    }
}

fn logging(log: LogFile, loglevel: Option<String>, w: &mut Warnings) -> Result<Logging, ConfigError> {
    w.not_implemented(log.hooks.is_some(), "log.hooks");
    let mut fields = std::collections::BTreeMap::new();
    for (k, v) in log.fields {
        let v = match v {
            Value::String(s) => s,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Null => String::new(),
            _ => {
                return Err(ConfigError::new(
                    format!("log.fields.{k}"),
                    "must be a string, number or boolean",
                ))
            }
        };
        fields.insert(k, v);
    }
    let _ = &log.reportcaller;
    let format = match log.formatter.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") | Some("logstash") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::new(
                "log.formatter",
                format!("unknown formatter {other:?} (text, json or logstash)"),
            ))
        }
    };
    let level = log.level.or(loglevel).unwrap_or_else(|| "info".into()).to_ascii_lowercase();
    if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        return Err(ConfigError::new(
            "log.level",
            format!("unknown level {level:?} (error, warn, info or debug)"),
        ));
    }
    Ok(Logging { level, format, access_log: !log.accesslog.disabled, fields })
}

/// `validation.manifests.indexes`: Distribution's `platforms: All|None|List` with its
/// `platformlist`, or a list of `os/arch[/variant]` directly. `validation.disabled` turns the
/// check off, as in Distribution.
fn index_rule(v: ValidationFile, w: &mut Warnings) -> Result<IndexChildren, ConfigError> {
    let _ = v.enabled;
    w.not_implemented(v.manifests.urls.is_some(), "validation.manifests.urls");
    if v.disabled == Some(true) {
        return Ok(IndexChildren::None);
    }
    let indexes = v.manifests.indexes;
    let key = "validation.manifests.indexes.platforms";
    let list_of = |items: Vec<String>| IndexChildren::platforms(&items).map_err(|e| ConfigError::new(key, e));
    match indexes.platforms {
        None | Some(Value::Null) => Ok(IndexChildren::All),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("list") => {
            if indexes.platformlist.is_empty() {
                return Err(ConfigError::new(
                    key,
                    "is List, but validation.manifests.indexes.platformlist names no platform",
                ));
            }
            list_of(
                indexes
                    .platformlist
                    .into_iter()
                    .map(|p| match p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    })
                    .collect(),
            )
        }
        Some(Value::String(s)) => IndexChildren::from_word(&s).ok_or_else(|| {
            ConfigError::new(key, format!("{s:?} is not All, None, List or a list of os/arch"))
        }),
        Some(Value::Sequence(items)) => list_of(
            items
                .into_iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ConfigError::new(key, "entries are os/arch strings"))
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => Err(ConfigError::new(key, "expected All, None, List or a list of os/arch")),
    }
}

/// Distribution's `http.headers`: a map of names to lists of values (a plain string is taken too).
fn parse_headers(v: Option<&Value>) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, ConfigError> {
    let key = "http.headers";
    let Some(map) = v.and_then(Value::as_mapping) else {
        return match v {
            None | Some(Value::Null) => Ok(vec![]),
            Some(_) => Err(ConfigError::new(key, "must map header names to values")),
        };
    };
    let mut out = vec![];
    for (k, vals) in map {
        let name = k.as_str().and_then(|k| http::HeaderName::from_bytes(k.as_bytes()).ok());
        let name = name.ok_or_else(|| ConfigError::new(key, format!("invalid header name {k:?}")))?;
        let vals: Vec<&Value> = match vals {
            Value::Sequence(seq) => seq.iter().collect(),
            other => vec![other],
        };
        for v in vals {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(ConfigError::new(format!("{key}.{name}"), "values must be strings")),
            };
            let value = http::HeaderValue::from_str(&text)
                .map_err(|_| ConfigError::new(format!("{key}.{name}"), format!("invalid value {text:?}")))?;
            out.push((name.clone(), value));
        }
    }
    Ok(out)
}

/// Applies `REGISTRY_A_B_C=value` as `a.b.c: value` on the YAML tree (Distribution's override
/// rule). Values are parsed as YAML scalars, so `true` and `5000` keep their types. Applied in
/// the order of their names, as Distribution does, whatever order the environment has (a
/// kubelet's is random), so that a section's name comes before its keys. A string set on a
/// section names its kind (`REGISTRY_AUTH=htpasswd`, `REGISTRY_STORAGE=s3`): it keeps that
/// kind's keys and drops the others, and keys set under it later go in that kind.
pub(super) fn apply_env(root: &mut Value, env: impl Iterator<Item = (String, String)>) {
    let mut vars: Vec<(Vec<String>, String)> = env
        .filter_map(|(k, v)| {
            let keys: Vec<String> =
                k.strip_prefix("REGISTRY_")?.split('_').map(str::to_ascii_lowercase).collect();
            (!keys.iter().any(String::is_empty)).then_some((keys, v))
        })
        .collect();
    vars.sort();
    for (keys, v) in vars {
        let value: Value = serde_yaml::from_str(&v).unwrap_or(Value::String(v));
        let mut node = &mut *root;
        for (i, key) in keys.iter().enumerate() {
            if !node.is_mapping() {
                // `auth: htpasswd` and then `auth.htpasswd.realm`: the name becomes a section.
                let mut map = serde_yaml::Mapping::new();
                if let Value::String(kind) = &*node {
                    map.insert(Value::String(kind.clone()), Value::Mapping(Default::default()));
                }
                *node = Value::Mapping(map);
            }
            let Some(map) = node.as_mapping_mut() else {
                break;
            };
            let key = Value::String(key.clone());
            if i == keys.len() - 1 {
                match (map.get_mut(&key), &value) {
                    // A kind named on a section that the file already fills.
                    (Some(Value::Mapping(section)), Value::String(kind)) => {
                        let kind = Value::String(kind.clone());
                        let keep = section.remove(&kind).unwrap_or(Value::Mapping(Default::default()));
                        section.clear();
                        section.insert(kind, keep);
                    }
                    _ => {
                        map.insert(key, value.clone());
                    }
                }
                break;
            }
            node = map.entry(key).or_insert(Value::Mapping(Default::default()));
        }
    }
}
