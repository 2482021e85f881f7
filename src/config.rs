//! Configuration: a YAML file (`--config-file`), Distribution's `REGISTRY_<SECTION>_<KEY>`
//! environment overrides, then flags; flags win.
//!
//! The file may be a CNCF Distribution `config.yml` (its `storage`, `http` and `log` sections
//! keep their meaning) or a donjon/Trow one. Keys donjon does not know are reported as
//! warnings; sections it knows but does not implement yet are reported too, and those that
//! would leave the registry less protected than the user asked for (`auth`,
//! `image_validation`) stop the start-up instead.
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

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use donjon_upload::IndexChildren;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

/// Command-line flags (Trow's names).
#[derive(clap::Parser, Debug, Clone, Default)]
#[command(name = "donjon", version, about = "An OCI container image registry")]
pub struct Cli {
    /// Address to listen on: HOST:PORT, :PORT or PORT [default: 127.0.0.1:8000]
    #[arg(long)]
    pub bind: Option<String>,
    /// Directory for images and uploads [default: ./data]
    #[arg(short = 'd', long)]
    pub data_dir: Option<PathBuf>,
    /// YAML configuration file (donjon's, Trow's or a Distribution config.yml)
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// The registry's public host name
    #[arg(short = 'n', long)]
    pub hostname: Option<String>,
    /// Serve TLS with this PEM certificate chain and key: --tls CERT,KEY
    #[arg(long, value_delimiter = ',', num_args = 1, value_name = "CERT,KEY")]
    pub tls: Option<Vec<PathBuf>>,
    /// Check the configuration, print the effective settings and exit
    #[arg(long)]
    pub dry_run: bool,
}

/// TLS files.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The effective settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Listen address.
    pub bind: SocketAddr,
    /// Data directory (the filesystem store's root).
    pub data_dir: PathBuf,
    /// Where content is kept.
    pub storage: Storage,
    /// Upload purging, unless disabled.
    pub upload_purging: Option<UploadPurging>,
    /// Public host name, if set.
    pub hostname: Option<String>,
    /// TLS, if set.
    pub tls: Option<Tls>,
    /// Whether deletes are allowed.
    pub delete_enabled: bool,
    /// Manifest size limit in bytes.
    pub max_manifest_size: usize,
    /// Connection timeouts and limits (donjon's `connections` section), and the drain on
    /// shutdown (`drain_timeout`, Distribution's `http.draintimeout`).
    pub connections: crate::server::Options,
    /// Headers added to every response (Distribution's `http.headers`).
    #[serde(serialize_with = "header_list")]
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The largest catalog page (Distribution's `catalog.maxentries`).
    pub catalog_max_entries: usize,
    /// Log level, format and the access log.
    pub log: Logging,
    /// Which children of a pushed index must be present (`validation.manifests.indexes`).
    #[serde(serialize_with = "index_children")]
    pub index_children: IndexChildren,
    /// Things in the configuration that were ignored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn index_children<S: serde::Serializer>(rule: &IndexChildren, s: S) -> Result<S::Ok, S::Error> {
    match rule {
        IndexChildren::All => s.serialize_str("all"),
        IndexChildren::None => s.serialize_str("none"),
        IndexChildren::Platforms(list) => s.collect_seq(list.iter().map(ToString::to_string)),
    }
}

/// `validation.manifests.indexes`: Distribution's `platforms: All|None|List` with its
/// `platformlist`, or a list of `os/arch[/variant]` directly. `validation.disabled` turns the
/// check off, as in Distribution.
fn index_rule(v: Option<ValidationFile>, warnings: &mut Vec<String>) -> Result<IndexChildren, ConfigError> {
    let Some(v) = v else { return Ok(IndexChildren::All) };
    let _ = v.enabled;
    let manifests = v.manifests.unwrap_or_default();
    if manifests.urls.is_some() {
        warnings
            .push("`validation.manifests.urls` is not implemented by this donjon version; ignored".into());
    }
    if v.disabled == Some(true) {
        return Ok(IndexChildren::None);
    }
    let indexes = manifests.indexes.unwrap_or_default();
    let key = "validation.manifests.indexes.platforms";
    let list_of = |items: Vec<String>| {
        items
            .iter()
            .map(|p| p.parse().map_err(|e| ConfigError(format!("{key}: {e}"))))
            .collect::<Result<Vec<_>, _>>()
            .map(IndexChildren::Platforms)
    };
    match indexes.platforms {
        None | Some(Value::Null) => Ok(IndexChildren::All),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "all" => Ok(IndexChildren::All),
            "none" => Ok(IndexChildren::None),
            "list" => {
                let list = indexes.platformlist.unwrap_or_default();
                if list.is_empty() {
                    return Err(ConfigError(format!(
                        "{key} is List, but validation.manifests.indexes.platformlist names no platform"
                    )));
                }
                list_of(
                    list.into_iter()
                        .map(|p| match p.variant {
                            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                            None => format!("{}/{}", p.os, p.architecture),
                        })
                        .collect(),
                )
            }
            other => {
                Err(ConfigError(format!("{key}: {other:?} is not All, None, List or a list of os/arch")))
            }
        },
        Some(Value::Sequence(items)) => list_of(
            items
                .into_iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ConfigError(format!("{key}: entries are os/arch strings")))
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => Err(ConfigError(format!("{key}: expected All, None, List or a list of os/arch"))),
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "snake_case")]
struct File {
    // donjon's and Trow's own keys
    bind: Option<String>,
    data_dir: Option<PathBuf>,
    hostname: Option<String>,
    tls: Option<TlsFile>,
    max_manifest_size: Option<usize>,
    drain_timeout: Option<String>,
    connections: Option<crate::server::Options>,
    registry_proxies: Option<Value>,
    image_validation: Option<Value>,
    // Distribution's
    version: Option<Value>,
    log: Option<LogFile>,
    loglevel: Option<String>,
    storage: Option<StorageFile>,
    http: Option<Http>,
    auth: Option<Value>,
    proxy: Option<Value>,
    notifications: Option<Value>,
    redis: Option<Value>,
    health: Option<Value>,
    validation: Option<ValidationFile>,
    middleware: Option<Value>,
    compatibility: Option<Value>,
    catalog: Option<Catalog>,
}

/// Distribution 3's `validation` section.
#[derive(Deserialize, Default, Debug)]
struct ValidationFile {
    /// Deprecated in Distribution for `disabled`; only `disabled` decides.
    enabled: Option<Value>,
    disabled: Option<bool>,
    manifests: Option<ManifestValidationFile>,
}

#[derive(Deserialize, Default, Debug)]
struct ManifestValidationFile {
    urls: Option<Value>,
    indexes: Option<IndexesFile>,
}

#[derive(Deserialize, Default, Debug)]
struct IndexesFile {
    /// `All`, `None`, `List` (Distribution's), or a list of `os/arch[/variant]`.
    platforms: Option<Value>,
    platformlist: Option<Vec<PlatformFile>>,
}

#[derive(Deserialize, Debug)]
struct PlatformFile {
    architecture: String,
    os: String,
    variant: Option<String>,
}

/// Distribution's `log` section.
#[derive(Deserialize, Default, Debug)]
struct LogFile {
    level: Option<String>,
    formatter: Option<String>,
    fields: Option<Value>,
    accesslog: Option<AccessLogFile>,
    hooks: Option<Value>,
    reportcaller: Option<Value>,
}

#[derive(Deserialize, Default, Debug)]
struct AccessLogFile {
    disabled: Option<bool>,
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
}

#[derive(Deserialize, Default, Debug)]
struct TlsFile {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    certificate: Option<PathBuf>,
}

#[derive(Deserialize, Default, Debug)]
struct StorageFile {
    filesystem: Option<Filesystem>,
    delete: Option<Delete>,
    maintenance: Option<Maintenance>,
    cache: Option<Value>,
    redirect: Option<Value>,
    tag: Option<Value>,
    s3: Option<S3File>,
    inmemory: Option<Value>,
}

#[derive(Deserialize, Default, Debug)]
struct Maintenance {
    uploadpurging: Option<UploadPurgingFile>,
    readonly: Option<Value>,
}

#[derive(Deserialize, Default, Debug)]
struct UploadPurgingFile {
    enabled: Option<bool>,
    age: Option<String>,
    interval: Option<String>,
    dryrun: Option<bool>,
}

pub use donjon_store::UploadPurging;

/// Distribution's `storage.s3` keys.
#[derive(Deserialize, Default, Debug, Clone)]
struct S3File {
    bucket: Option<String>,
    region: Option<String>,
    regionendpoint: Option<String>,
    accesskey: Option<String>,
    secretkey: Option<String>,
    rootdirectory: Option<String>,
    forcepathstyle: Option<bool>,
    skipverify: Option<bool>,
    chunksize: Option<usize>,
    secure: Option<bool>,
    /// donjon's: use conditional writes (default true; Garage lacks them and ignores them).
    conditionalwrites: Option<bool>,
    // Accepted, with their Distribution meaning not (yet) applied: reported.
    v4auth: Option<Value>,
    encrypt: Option<Value>,
    keyid: Option<Value>,
    storageclass: Option<Value>,
    objectacl: Option<Value>,
    multipartcopychunksize: Option<Value>,
    multipartcopymaxconcurrency: Option<Value>,
    multipartcopythresholdsize: Option<Value>,
    loglevel: Option<Value>,
    useragent: Option<Value>,
    usedualstack: Option<Value>,
    accelerate: Option<Value>,
    sessiontoken: Option<Value>,
}

/// Where the registry keeps its content.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// The filesystem store, rooted at `data_dir`.
    Filesystem,
    /// An S3 bucket.
    S3(donjon_store::S3Config),
}

#[derive(Deserialize, Default, Debug)]
struct Filesystem {
    rootdirectory: Option<PathBuf>,
    maxthreads: Option<Value>,
}

#[derive(Deserialize, Default, Debug)]
struct Delete {
    enabled: Option<bool>,
}

#[derive(Deserialize, Default, Debug)]
struct Catalog {
    maxentries: Option<usize>,
}

#[derive(Deserialize, Default, Debug)]
struct Http {
    addr: Option<String>,
    host: Option<String>,
    net: Option<String>,
    prefix: Option<String>,
    secret: Option<Value>,
    relativeurls: Option<Value>,
    draintimeout: Option<String>,
    tls: Option<HttpTls>,
    headers: Option<Value>,
    debug: Option<Value>,
    http2: Option<Value>,
}

#[derive(Deserialize, Default, Debug)]
struct HttpTls {
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    clientcas: Option<Value>,
    minimumtls: Option<Value>,
    ciphersuites: Option<Value>,
    letsencrypt: Option<Value>,
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

/// Distribution's `http.headers`: a map of names to lists of values (a plain string is taken too).
fn parse_headers(v: Option<&Value>) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, ConfigError> {
    let Some(map) = v.and_then(Value::as_mapping) else {
        return match v {
            None | Some(Value::Null) => Ok(vec![]),
            Some(_) => Err(ConfigError("http.headers must map header names to values".into())),
        };
    };
    let mut out = vec![];
    for (k, vals) in map {
        let name = k.as_str().and_then(|k| http::HeaderName::from_bytes(k.as_bytes()).ok());
        let name = name.ok_or_else(|| ConfigError(format!("http.headers: invalid header name {k:?}")))?;
        let vals: Vec<&Value> = match vals {
            Value::Sequence(seq) => seq.iter().collect(),
            other => vec![other],
        };
        for v in vals {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(ConfigError(format!("http.headers.{name}: values must be strings"))),
            };
            let value = http::HeaderValue::from_str(&text)
                .map_err(|_| ConfigError(format!("http.headers.{name}: invalid value {text:?}")))?;
            out.push((name.clone(), value));
        }
    }
    Ok(out)
}

fn parse_bind(s: &str) -> Result<SocketAddr, ConfigError> {
    let s = s.trim();
    let with_host = if let Some(port) = s.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else if s.parse::<u16>().is_ok() {
        format!("127.0.0.1:{s}")
    } else {
        s.to_string()
    };
    with_host.to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(|| {
        ConfigError(format!("invalid listen address {s:?}: expected HOST:PORT, :PORT or PORT"))
    })
}

fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let s = s.trim();
    // Go's forms (`168h`, `1h30m`, `500ms`) are humantime's; a bare number is seconds.
    humantime::parse_duration(s)
        .or_else(|e| s.parse::<u64>().map(Duration::from_secs).map_err(|_| e))
        .map_err(|e| {
            ConfigError(format!("invalid duration {s:?} ({e}): expected e.g. 30s, 2m, 1h30m, 500ms"))
        })
}

/// Applies `REGISTRY_A_B_C=value` as `a.b.c: value` on the YAML tree (Distribution's override
/// rule). Values are parsed as YAML scalars, so `true` and `5000` keep their types.
fn apply_env(root: &mut Value, env: impl Iterator<Item = (String, String)>) {
    for (k, v) in env {
        let Some(path) = k.strip_prefix("REGISTRY_") else {
            continue;
        };
        let keys: Vec<String> = path.split('_').map(str::to_ascii_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            continue;
        }
        let value: Value = serde_yaml::from_str(&v).unwrap_or(Value::String(v));
        let mut node = &mut *root;
        for (i, key) in keys.iter().enumerate() {
            if !node.is_mapping() {
                *node = Value::Mapping(Default::default());
            }
            let Some(map) = node.as_mapping_mut() else {
                break;
            };
            let key = Value::String(key.clone());
            if i == keys.len() - 1 {
                map.insert(key, value.clone());
                break;
            }
            node = map.entry(key).or_insert(Value::Mapping(Default::default()));
        }
    }
}

impl Settings {
    /// Reads the file named by `--config-file`, applies the environment overrides (pass
    /// `std::env::vars()`), then the flags.
    pub fn load(cli: &Cli, env: impl Iterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        match &cli.config_file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?;
                Self::from_yaml(cli, &text, env).map_err(|e| ConfigError(format!("{}: {}", p.display(), e.0)))
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
        let mut tree = serde_yaml::from_str::<Value>(yaml).map_err(|e| ConfigError(e.to_string()))?;
        if tree.is_null() {
            tree = Value::Mapping(Default::default());
        }
        apply_env(&mut tree, env);
        let mut warnings = vec![];
        let file: File = serde_ignored::deserialize(tree, |path| {
            let path = path.to_string().replace(".?", "");
            warnings.push(format!("unknown configuration key `{path}` ignored"));
        })
        .map_err(|e| ConfigError(e.to_string()))?;

        if file.auth.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(ConfigError(
                "`auth` is configured, but this donjon version has no authentication yet; refusing to start an open registry".into(),
            ));
        }
        if file.image_validation.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(ConfigError(
                "`image_validation` is configured, but this donjon version does not validate images yet; refusing to start".into(),
            ));
        }
        let not_yet = |present: bool, key: &str, warnings: &mut Vec<String>| {
            if present {
                warnings.push(format!("`{key}` is not implemented by this donjon version; ignored"));
            }
        };
        let storage = file.storage.unwrap_or_default();
        let http = file.http.unwrap_or_default();
        not_yet(file.registry_proxies.is_some(), "registry_proxies", &mut warnings);
        not_yet(file.proxy.is_some(), "proxy", &mut warnings);
        not_yet(file.notifications.is_some(), "notifications", &mut warnings);
        not_yet(file.redis.is_some(), "redis", &mut warnings);
        not_yet(file.middleware.is_some(), "middleware", &mut warnings);
        let maintenance = storage.maintenance.unwrap_or_default();
        not_yet(maintenance.readonly.is_some(), "storage.maintenance.readonly", &mut warnings);
        let purging = maintenance.uploadpurging.unwrap_or_default();
        // Distribution's defaults: on, a week, daily.
        let upload_purging = if purging.enabled.unwrap_or(true) {
            let defaults = UploadPurging::default();
            let age = purging.age.as_deref().map(parse_duration).transpose()?.unwrap_or(defaults.age);
            let interval =
                purging.interval.as_deref().map(parse_duration).transpose()?.unwrap_or(defaults.interval);
            if interval.is_zero() {
                return Err(ConfigError(
                    "storage.maintenance.uploadpurging.interval must be above zero".into(),
                ));
            }
            Some(UploadPurging { age, interval, dry_run: purging.dryrun.unwrap_or(false) })
        } else {
            None
        };
        not_yet(storage.cache.is_some(), "storage.cache", &mut warnings);
        not_yet(storage.tag.is_some(), "storage.tag", &mut warnings);
        not_yet(http.prefix.is_some(), "http.prefix", &mut warnings);
        let headers = parse_headers(http.headers.as_ref())?;
        let s3 = match storage.s3.clone() {
            None => None,
            Some(f) => {
                if storage.filesystem.as_ref().is_some_and(|f| f.rootdirectory.is_some()) {
                    return Err(ConfigError(
                        "both storage.filesystem and storage.s3 are configured: choose one".into(),
                    ));
                }
                for (set, key) in [
                    (f.v4auth.is_some(), "v4auth"),
                    (f.encrypt.is_some(), "encrypt"),
                    (f.keyid.is_some(), "keyid"),
                    (f.storageclass.is_some(), "storageclass"),
                    (f.objectacl.is_some(), "objectacl"),
                    (f.multipartcopychunksize.is_some(), "multipartcopychunksize"),
                    (f.multipartcopymaxconcurrency.is_some(), "multipartcopymaxconcurrency"),
                    (f.multipartcopythresholdsize.is_some(), "multipartcopythresholdsize"),
                    (f.loglevel.is_some(), "loglevel"),
                    (f.useragent.is_some(), "useragent"),
                    (f.usedualstack.is_some(), "usedualstack"),
                    (f.accelerate.is_some(), "accelerate"),
                    (f.sessiontoken.is_some(), "sessiontoken"),
                ] {
                    not_yet(set, &format!("storage.s3.{key}"), &mut warnings);
                }
                let bucket = f
                    .bucket
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| ConfigError("storage.s3.bucket is required".into()))?;
                // Distribution's `secure: false` means plain HTTP to an endpoint given without
                // a scheme.
                let endpoint = f.regionendpoint.map(|e| {
                    if e.contains("://") {
                        e
                    } else if f.secure == Some(false) {
                        format!("http://{e}")
                    } else {
                        format!("https://{e}")
                    }
                });
                if f.accesskey.is_some() != f.secretkey.is_some() {
                    return Err(ConfigError("storage.s3.accesskey and secretkey go together".into()));
                }
                Some(donjon_store::S3Config {
                    bucket,
                    region: f.region,
                    endpoint,
                    access_key: f.accesskey,
                    secret_key: f.secretkey,
                    root: f.rootdirectory,
                    path_style: f.forcepathstyle.unwrap_or(false),
                    skip_verify: f.skipverify.unwrap_or(false),
                    chunk_size: f.chunksize,
                    conditional_writes: f.conditionalwrites,
                    // Distribution's: redirects on unless disabled; presigned URLs live 20 minutes.
                    redirect: (storage
                        .redirect
                        .as_ref()
                        .and_then(|r| r.get("disable"))
                        .and_then(Value::as_bool)
                        != Some(true))
                    .then_some(Duration::from_secs(20 * 60)),
                })
            }
        };
        if s3.is_none() && storage.redirect.is_some() {
            warnings.push("storage.redirect applies to object storage only; ignored".into());
        }
        if storage.inmemory.is_some() {
            return Err(ConfigError("`storage.inmemory` is not supported; use storage.filesystem".into()));
        }
        if let Some(tls) = &http.tls {
            let _ = (&tls.minimumtls, &tls.ciphersuites);
            if tls.clientcas.is_some() || tls.letsencrypt.is_some() {
                return Err(ConfigError(
                    "http.tls.clientcas and http.tls.letsencrypt are not supported".into(),
                ));
            }
        }
        let log = file.log.unwrap_or_default();
        not_yet(log.fields.is_some(), "log.fields", &mut warnings);
        not_yet(log.hooks.is_some(), "log.hooks", &mut warnings);
        let format = match log.formatter.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") | Some("logstash") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError(format!(
                    "log.formatter: unknown formatter {other:?} (text, json or logstash)"
                )))
            }
        };
        let level = log.level.or(file.loglevel).unwrap_or_else(|| "info".into()).to_ascii_lowercase();
        if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
            return Err(ConfigError(format!(
                "log.level: unknown level {level:?} (error, warn, info or debug)"
            )));
        }
        let logging =
            Logging { level, format, access_log: !log.accesslog.and_then(|a| a.disabled).unwrap_or(false) };
        let _ = (
            &file.version,
            &log.reportcaller,
            &file.health,
            &file.compatibility,
            &http.secret,
            &http.relativeurls,
            &http.debug,
            &http.http2,
            &http.net,
            &storage.filesystem.as_ref().map(|f| &f.maxthreads),
        );

        let bind = cli.bind.clone().or(file.bind).or(http.addr).unwrap_or_else(|| "127.0.0.1:8000".into());
        let data_dir = cli
            .data_dir
            .clone()
            .or(file.data_dir)
            .or(storage.filesystem.and_then(|f| f.rootdirectory))
            .unwrap_or_else(|| PathBuf::from("./data"));
        let tls = match &cli.tls {
            Some(v) if v.len() == 2 => Some(Tls { cert: v[0].clone(), key: v[1].clone() }),
            Some(v) => return Err(ConfigError(format!("--tls takes CERT,KEY; got {} value(s)", v.len()))),
            None => {
                let from_file =
                    file.tls.and_then(|t| Some(Tls { cert: t.cert.or(t.certificate)?, key: t.key? }));
                let from_http = http.tls.and_then(|t| Some(Tls { cert: t.certificate?, key: t.key? }));
                from_file.or(from_http)
            }
        };
        let drain = file.drain_timeout.or(http.draintimeout).map(|s| parse_duration(&s)).transpose()?;
        Ok(Settings {
            bind: parse_bind(&bind)?,
            data_dir,
            storage: s3.map_or(Storage::Filesystem, Storage::S3),
            upload_purging,
            hostname: cli.hostname.clone().or(file.hostname).or(http.host),
            tls,
            delete_enabled: storage.delete.and_then(|d| d.enabled).unwrap_or(true),
            max_manifest_size: file.max_manifest_size.unwrap_or(donjon_upload::DEFAULT_MAX_MANIFEST_SIZE),
            connections: {
                let mut c = file.connections.unwrap_or_default();
                if let Some(d) = drain {
                    c.drain_timeout = d;
                }
                c.validate().map_err(ConfigError)?;
                c
            },
            headers,
            catalog_max_entries: file.catalog.and_then(|c| c.maxentries).unwrap_or(1000),
            log: logging,
            index_children: index_rule(file.validation, &mut warnings)?,
            warnings,
        })
    }

    /// The settings as YAML, for `--dry-run`.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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
        assert!(s.delete_enabled);
        assert!(s.tls.is_none());
        assert_eq!(s.max_manifest_size, 4 << 20);
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
        assert!(!s.delete_enabled);
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
        assert!(!s.delete_enabled);
        let s = load(&["-d", "/c"], Some(yaml), &env).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/c"));
    }

    #[test]
    fn unknown_keys_are_reported() {
        let s = load(&[], Some("storage:\n  filesystem:\n    rootdirectry: /typo\nfoo: 1\n"), &[]).unwrap();
        assert!(s.warnings.iter().any(|w| w.contains("storage.filesystem.rootdirectry")), "{:?}", s.warnings);
        assert!(s.warnings.iter().any(|w| w.contains("`foo`")), "{:?}", s.warnings);
    }

    #[test]
    fn auth_is_refused_rather_than_ignored() {
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
        let Storage::S3(s3) = &s.storage else { panic!("{:?}", s.storage) };
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
        let Storage::S3(s3) = &s.storage else { panic!() };
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
        let p = s.upload_purging.unwrap();
        assert_eq!((p.age.as_secs(), p.interval.as_secs(), p.dry_run), (168 * 3600, 24 * 3600, false));
        let yaml = "storage:\n  maintenance:\n    uploadpurging: {enabled: true, age: 2h, interval: 30m, dryrun: true}\n";
        let p = load(&[], Some(yaml), &[]).unwrap().upload_purging.unwrap();
        assert_eq!((p.age.as_secs(), p.interval.as_secs(), p.dry_run), (7200, 1800, true));
        let off = "storage:\n  maintenance:\n    uploadpurging: {enabled: false}\n";
        assert!(load(&[], Some(off), &[]).unwrap().upload_purging.is_none());
        assert!(load(&[], Some("storage:\n  maintenance:\n    uploadpurging: {age: soon}\n"), &[]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("168h").unwrap(), Duration::from_secs(168 * 3600));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
    }

    #[test]
    fn distribution_index_validation() {
        let p = |s: &str| -> donjon_core::manifest::Platform { s.parse().unwrap() };
        let rule = |yaml: &str| load(&[], Some(yaml), &[]).map(|s| s.index_children);
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
}
