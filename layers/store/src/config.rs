//! The store's configuration: Distribution's `storage` section ([`StorageConfig`], with its
//! `filesystem`, `s3`, `delete`, `maintenance` and `redirect` keys), and the content layer's
//! own settings ([`ContentConfig`]: deletes, catalog page size). Their defaults are defined
//! here and nowhere else.
//!
//! ```
//! use std::sync::Arc;
//! use donjon_core::{config::Warnings, memory::MemoryStore};
//! use donjon_store::{Backend, ContentConfig, StorageConfig};
//!
//! let yaml = "s3: {bucket: registry, regionendpoint: 'minio:9000', secure: false}\n\
//!             maintenance: {uploadpurging: {age: 2h, interval: 30m}}\n";
//! let storage: StorageConfig = serde_yaml::from_str(yaml).unwrap();
//! let mut warnings = Warnings::default();
//! storage.check(&mut warnings).unwrap();
//! let Backend::S3(s3) = storage.backend().unwrap() else { unreachable!() };
//! assert_eq!(s3.endpoint.as_deref(), Some("http://minio:9000"));
//! assert_eq!(storage.upload_purging().unwrap().age.as_secs(), 7200);
//!
//! let layer = ContentConfig { delete_enabled: true, ..Default::default() }
//!     .build(Arc::new(MemoryStore::default()));
//! # let _ = layer;
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use donjon_core::config::{duration, Accepted, ConfigError, Warnings};
use donjon_core::Store;
use serde::{Deserialize, Serialize};

use crate::{ContentStoreLayer, CopyLimits, S3Config, UploadPurging};

/// The content layer's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContentConfig {
    /// Whether clients may delete blobs, manifests and tags (Distribution's
    /// `storage.delete.enabled`; default no, as in Distribution).
    pub delete_enabled: bool,
    /// The largest catalog page, and its default `n` (Distribution's `catalog.maxentries`;
    /// default 1000).
    pub catalog_max_entries: usize,
}

impl Default for ContentConfig {
    fn default() -> Self {
        Self { delete_enabled: false, catalog_max_entries: 1000 }
    }
}

impl ContentConfig {
    /// Checks the values.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.catalog_max_entries == 0 {
            return Err(ConfigError::new("catalog.maxentries", "must be above zero"));
        }
        Ok(())
    }

    /// The layer over `store`.
    pub fn build(&self, store: Arc<dyn Store>) -> ContentStoreLayer {
        ContentStoreLayer::with_config(store, self)
    }
}

#[donjon_core::config::async_trait]
impl donjon_core::config::LayerConfig for ContentConfig {
    type Layer = ContentStoreLayer;
    async fn layer(
        &self,
        cx: &donjon_core::config::BuildContext,
    ) -> Result<Option<ContentStoreLayer>, ConfigError> {
        Ok(Some(self.build(cx.store.clone())))
    }
}

/// Distribution's `storage` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// `storage.filesystem`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemConfig>,
    /// `storage.s3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Section>,
    /// `storage.delete`.
    pub delete: DeleteConfig,
    /// `storage.maintenance`.
    pub maintenance: MaintenanceConfig,
    /// `storage.redirect`: presigned redirects for blob reads from object storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectConfig>,
    /// Read; not implemented (reported).
    #[serde(skip_serializing)]
    pub cache: Option<Accepted>,
    /// Read; not implemented (reported).
    #[serde(skip_serializing)]
    pub tag: Option<Accepted>,
    /// Refused: content would be lost on restart.
    #[serde(skip_serializing)]
    pub inmemory: Option<Accepted>,
}

/// `storage.filesystem`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FilesystemConfig {
    /// The store's root (`-d`/`data_dir` win over it).
    pub rootdirectory: Option<PathBuf>,
    /// Go's thread limit; tokio's blocking pool has its own bound. Accepted, not used.
    #[serde(skip_serializing)]
    pub maxthreads: Option<Accepted>,
}

/// `storage.delete`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DeleteConfig {
    /// Whether deletes are allowed; unset is [`ContentConfig`]'s default.
    pub enabled: Option<bool>,
}

/// `storage.maintenance`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MaintenanceConfig {
    /// `storage.maintenance.uploadpurging`.
    pub uploadpurging: UploadPurgingConfig,
    /// `storage.maintenance.readonly`.
    pub readonly: ReadOnlyConfig,
    /// `storage.maintenance.gc` (donjon's): garbage collection on a schedule.
    pub gc: GcConfig,
}

/// `storage.maintenance.gc`: online garbage collection on a schedule (off by default), and
/// the defaults of `donjon garbage-collect`. See [`crate::gc`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct GcConfig {
    /// Whether to collect on a schedule.
    pub enabled: bool,
    /// How often (default 24 h; the first run comes after one interval, at most 1 h).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Nothing written more recently than this is removed (default 1 h).
    #[serde(with = "duration")]
    pub grace: Duration,
    /// How long hidden blobs wait for a second look (default 1 min).
    #[serde(with = "duration")]
    pub settle: Duration,
    /// Delete manifests no tag reaches (Distribution's `--delete-untagged`).
    pub delete_untagged: bool,
    /// Log what would go; change nothing.
    pub dryrun: bool,
}

impl Default for GcConfig {
    fn default() -> Self {
        let o = crate::gc::GcOptions::default();
        Self {
            enabled: false,
            interval: Duration::from_secs(24 * 3600),
            grace: o.grace,
            settle: o.settle,
            delete_untagged: o.delete_untagged,
            dryrun: o.dry_run,
        }
    }
}

impl GcConfig {
    /// The options of one run.
    pub fn options(&self) -> crate::gc::GcOptions {
        crate::gc::GcOptions {
            grace: self.grace,
            delete_untagged: self.delete_untagged,
            dry_run: self.dryrun,
            settle: self.settle,
            only: None,
        }
    }
}

/// `storage.maintenance.readonly`: refuse pushes and deletes (see [`crate::ReadOnlyLayer`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ReadOnlyConfig {
    /// Whether the registry starts read-only.
    pub enabled: bool,
}

/// `storage.maintenance.uploadpurging`, with Distribution's defaults: on, sessions older than
/// a week, checked daily.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct UploadPurgingConfig {
    /// Whether to purge at all.
    pub enabled: bool,
    /// Sessions older than this are purged.
    #[serde(with = "duration")]
    pub age: Duration,
    /// How often.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Count, but do not delete.
    pub dryrun: bool,
}

impl Default for UploadPurgingConfig {
    fn default() -> Self {
        let d = UploadPurging::default();
        Self { enabled: true, age: d.age, interval: d.interval, dryrun: d.dry_run }
    }
}

/// `storage.redirect`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RedirectConfig {
    /// Stream blobs instead of redirecting to presigned URLs.
    pub disable: bool,
    /// How long a presigned URL stays valid (donjon's key; default 20 min, Distribution's):
    /// long enough for the slowest client to fetch the blob, since it starts its GET then.
    #[serde(
        default,
        with = "donjon_core::config::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expiry: Option<Duration>,
}

/// Distribution's `storage.s3` keys.
#[derive(Deserialize, Serialize, Default, Clone)]
#[serde(default)]
pub struct S3Section {
    /// The bucket (required).
    pub bucket: Option<String>,
    /// The region (any string when `regionendpoint` is set).
    pub region: Option<String>,
    /// A custom endpoint; without a scheme, `secure` decides between https and http.
    pub regionendpoint: Option<String>,
    /// The access key (with `secretkey`); without it, the AWS environment chain.
    pub accesskey: Option<String>,
    /// The secret key: never printed.
    #[serde(skip_serializing)]
    pub secretkey: Option<String>,
    /// The key prefix.
    pub rootdirectory: Option<String>,
    /// Path-style addressing.
    pub forcepathstyle: Option<bool>,
    /// Accept any TLS certificate.
    pub skipverify: Option<bool>,
    /// The multipart part size.
    pub chunksize: Option<usize>,
    /// `false`: plain HTTP to an endpoint given without a scheme.
    pub secure: Option<bool>,
    /// Objects larger than this are copied inside the bucket as parts (default 32 MiB; at
    /// most 5 GiB, the most one `CopyObject` moves).
    pub multipartcopythresholdsize: Option<u64>,
    /// The size of each copied part (default 32 MiB).
    pub multipartcopychunksize: Option<u64>,
    /// Parts copied at once (default 100).
    pub multipartcopymaxconcurrency: Option<usize>,
    /// donjon's: use conditional writes (default true; Garage lacks them and ignores them).
    pub conditionalwrites: Option<bool>,
    // Distribution's other keys: accepted, their meaning not applied (yet); reported by
    // `StorageConfig::check`.
    #[allow(missing_docs)]
    #[serde(skip_serializing)]
    pub v4auth: Option<Accepted>,
    #[allow(missing_docs)]
    #[serde(skip_serializing)]
    pub encrypt: Option<Accepted>,
    #[allow(missing_docs)]
    #[serde(skip_serializing)]
    pub keyid: Option<Accepted>,
    #[allow(missing_docs)]
    #[serde(skip_serializing)]
    pub storageclass: Option<Accepted>,
    #[allow(missing_docs)]
    #[serde(skip_serializing)]
    pub objectacl: Option<Accepted>,
    #[allow(missing_docs)]
    #[serde(skip_serializing)]
    pub loglevel: Option<Accepted>,
    #[allow(missing_docs)]
    #[serde(skip_serializing)]
    pub useragent: Option<Accepted>,
    #[allow(missing_docs)]
    #[serde(skip_serializing)]
    pub usedualstack: Option<Accepted>,
    #[allow(missing_docs)]
    #[serde(skip_serializing)]
    pub accelerate: Option<Accepted>,
    #[allow(missing_docs)]
    #[serde(skip_serializing)]
    pub sessiontoken: Option<Accepted>,
}

impl std::fmt::Debug for S3Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Section")
            .field("bucket", &self.bucket)
            .field("regionendpoint", &self.regionendpoint)
            .field("secretkey", &self.secretkey.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl S3Section {
    /// The keys given whose meaning donjon does not apply.
    fn not_applied(&self) -> impl Iterator<Item = &'static str> {
        [
            ("v4auth", self.v4auth.is_some()),
            ("encrypt", self.encrypt.is_some()),
            ("keyid", self.keyid.is_some()),
            ("storageclass", self.storageclass.is_some()),
            ("objectacl", self.objectacl.is_some()),
            ("loglevel", self.loglevel.is_some()),
            ("useragent", self.useragent.is_some()),
            ("usedualstack", self.usedualstack.is_some()),
            ("accelerate", self.accelerate.is_some()),
            ("sessiontoken", self.sessiontoken.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
    }
}

/// Where content is kept, as [`StorageConfig::backend`] resolves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The filesystem store (its root is the data directory).
    Filesystem,
    /// An S3 bucket.
    S3(S3Config),
}

/// Presigned URLs live 20 minutes, as in Distribution.
const REDIRECT_LIFETIME: Duration = Duration::from_secs(20 * 60);

impl StorageConfig {
    /// Checks the section: what cannot work is an error naming its key; what is accepted but
    /// not applied goes to `warnings`.
    pub fn check(&self, warnings: &mut Warnings) -> Result<(), ConfigError> {
        if self.inmemory.is_some() {
            return Err(ConfigError::new(
                "storage.inmemory",
                "is not supported (content would be lost on restart); use storage.filesystem",
            ));
        }
        warnings.not_implemented(self.cache.is_some(), "storage.cache");
        warnings.not_implemented(self.tag.is_some(), "storage.tag");
        let gc = &self.maintenance.gc;
        if gc.enabled && gc.interval.is_zero() {
            return Err(ConfigError::new("storage.maintenance.gc.interval", "must be above zero"));
        }
        if gc.enabled && (gc.grace.is_zero() || gc.settle.is_zero()) {
            warnings.push(
                "storage.maintenance.gc: a grace or settle of 0 on a live registry can sweep a blob whose manifest is on its way",
            );
        }
        if self.maintenance.uploadpurging.interval.is_zero() {
            return Err(ConfigError::new("storage.maintenance.uploadpurging.interval", "must be above zero"));
        }
        if let Some(e) = self.redirect.as_ref().and_then(|r| r.expiry) {
            // S3's presigned URLs live 7 days at most (SigV4).
            if e < Duration::from_secs(1) || e > Duration::from_secs(7 * 24 * 3600) {
                return Err(ConfigError::new(
                    "storage.redirect.expiry",
                    "must be between 1s and 7 days (168h)",
                ));
            }
        }
        if let Some(s3) = &self.s3 {
            for key in s3.not_applied() {
                warnings.not_implemented(true, &format!("storage.s3.{key}"));
            }
        } else if self.redirect.is_some() {
            warnings.push("storage.redirect applies to object storage only; ignored");
        }
        self.backend().map(drop)
    }

    /// The backend the section names.
    pub fn backend(&self) -> Result<Backend, ConfigError> {
        let Some(f) = &self.s3 else { return Ok(Backend::Filesystem) };
        if self.filesystem.as_ref().is_some_and(|f| f.rootdirectory.is_some()) {
            return Err(ConfigError::new(
                "storage",
                "both storage.filesystem and storage.s3 are configured: choose one",
            ));
        }
        let bucket = f
            .bucket
            .clone()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| ConfigError::new("storage.s3.bucket", "is required"))?;
        if f.accesskey.is_some() != f.secretkey.is_some() {
            return Err(ConfigError::new("storage.s3.accesskey", "and storage.s3.secretkey go together"));
        }
        let endpoint = f.regionendpoint.as_ref().map(|e| {
            if e.contains("://") {
                e.clone()
            } else if f.secure == Some(false) {
                format!("http://{e}")
            } else {
                format!("https://{e}")
            }
        });
        Ok(Backend::S3(S3Config {
            bucket,
            region: f.region.clone(),
            endpoint,
            access_key: f.accesskey.clone(),
            secret_key: f.secretkey.clone(),
            root: f.rootdirectory.clone(),
            path_style: f.forcepathstyle.unwrap_or(false),
            skip_verify: f.skipverify.unwrap_or(false),
            chunk_size: f.chunksize,
            conditional_writes: f.conditionalwrites,
            copy: {
                let d = CopyLimits::default();
                CopyLimits {
                    threshold: f.multipartcopythresholdsize.unwrap_or(d.threshold),
                    chunk: f.multipartcopychunksize.unwrap_or(d.chunk),
                    concurrency: f.multipartcopymaxconcurrency.unwrap_or(d.concurrency),
                }
            },
            // Distribution's: redirects on unless disabled.
            redirect: match &self.redirect {
                Some(r) if r.disable => None,
                Some(r) => Some(r.expiry.unwrap_or(REDIRECT_LIFETIME)),
                None => Some(REDIRECT_LIFETIME),
            },
        }))
    }

    /// Upload purging, unless disabled.
    pub fn upload_purging(&self) -> Option<UploadPurging> {
        let p = &self.maintenance.uploadpurging;
        p.enabled.then(|| UploadPurging { age: p.age, interval: p.interval, dry_run: p.dryrun })
    }

    /// Scheduled garbage collection, when `storage.maintenance.gc.enabled`.
    pub fn gc_schedule(&self) -> Option<crate::gc::GcSchedule> {
        let g = &self.maintenance.gc;
        g.enabled.then(|| crate::gc::GcSchedule { interval: g.interval, options: g.options() })
    }

    /// The filesystem root the section names, if any (the data directory flag wins over it).
    pub fn root_directory(&self) -> Option<&Path> {
        self.filesystem.as_ref()?.rootdirectory.as_deref()
    }

    /// Opens the backend: the filesystem store at `data_dir`, or the bucket, its operations
    /// recorded in the metrics.
    pub async fn open(&self, data_dir: &Path) -> std::io::Result<Arc<dyn Store>> {
        use donjon_core::metered::MeteredStore;
        match self.backend().map_err(std::io::Error::other)? {
            Backend::Filesystem => {
                let store = Arc::new(crate::FsStore::open(data_dir).await?);
                Ok(Arc::new(MeteredStore::new(store, "filesystem")))
            }
            #[cfg(feature = "s3")]
            Backend::S3(s3) => {
                let store = Arc::new(crate::S3Store::connect(s3).await.map_err(std::io::Error::other)?);
                Ok(Arc::new(MeteredStore::new(store, "s3")))
            }
            #[cfg(not(feature = "s3"))]
            Backend::S3(_) => Err(std::io::Error::other("this donjon was built without the `s3` feature")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> StorageConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_are_distributions() {
        let s = StorageConfig::default();
        assert_eq!(s.backend().unwrap(), Backend::Filesystem);
        let p = s.upload_purging().unwrap();
        assert_eq!((p.age.as_secs(), p.interval.as_secs(), p.dry_run), (168 * 3600, 24 * 3600, false));
        assert_eq!(
            ContentConfig::default(),
            ContentConfig { delete_enabled: false, catalog_max_entries: 1000 },
            "deletes are off unless asked for, as in Distribution"
        );
        assert!(ContentConfig { catalog_max_entries: 0, ..Default::default() }.check().is_err());
    }

    #[test]
    fn checks_name_their_keys() {
        let mut w = Warnings::default();
        let e = parse("s3: {region: x}").check(&mut w).unwrap_err();
        assert_eq!(e.key, "storage.s3.bucket");
        let e = parse("s3: {bucket: b, accesskey: a}").check(&mut w).unwrap_err();
        assert_eq!(e.key, "storage.s3.accesskey");
        let e = parse("inmemory: {}").check(&mut w).unwrap_err();
        assert_eq!(e.key, "storage.inmemory");
        let e = parse("maintenance: {uploadpurging: {interval: 0s}}").check(&mut w).unwrap_err();
        assert_eq!(e.key, "storage.maintenance.uploadpurging.interval");
        assert!(w.is_empty());
        parse("s3: {bucket: b, v4auth: true, storageclass: STANDARD}").check(&mut w).unwrap();
        let w: Vec<_> = w.into_vec();
        assert!(w[0].contains("storage.s3.v4auth") && w[1].contains("storage.s3.storageclass"), "{w:?}");
    }

    #[test]
    fn redirects_are_on_for_20_minutes_unless_said_otherwise() {
        let redirect = |yaml: &str| match parse(yaml).backend().unwrap() {
            Backend::S3(c) => c.redirect,
            Backend::Filesystem => panic!("{yaml}"),
        };
        assert_eq!(redirect("s3: {bucket: b}"), Some(Duration::from_secs(1200)), "Distribution's default");
        assert_eq!(redirect("s3: {bucket: b}\nredirect: {disable: true}"), None);
        assert_eq!(redirect("s3: {bucket: b}\nredirect: {expiry: 5m}"), Some(Duration::from_secs(300)));
        let mut w = Warnings::default();
        let e = parse("s3: {bucket: b}\nredirect: {expiry: 8d}").check(&mut w).unwrap_err();
        assert_eq!(e.key, "storage.redirect.expiry");
    }

    #[test]
    fn the_secret_is_neither_printed_nor_serialised() {
        let s = parse("s3: {bucket: b, accesskey: a, secretkey: hunter2}");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!serde_yaml::to_string(&s).unwrap().contains("hunter2"));
        let Backend::S3(c) = s.backend().unwrap() else { panic!() };
        assert_eq!(c.secret_key.as_deref(), Some("hunter2"));
    }

    #[test]
    fn maintenance_gc_and_readonly() {
        let s = parse("maintenance: {readonly: {enabled: true}, gc: {enabled: true, interval: 6h, grace: 30m, delete_untagged: true}}");
        assert!(s.maintenance.readonly.enabled);
        let g = s.gc_schedule().unwrap();
        assert_eq!(g.interval, Duration::from_secs(6 * 3600));
        assert_eq!(g.options.grace, Duration::from_secs(1800));
        assert_eq!(g.options.settle, Duration::from_secs(60));
        assert!(g.options.delete_untagged && !g.options.dry_run);
        assert!(parse("{}").gc_schedule().is_none(), "off by default");
        let mut w = Warnings::default();
        let e = parse("maintenance: {gc: {enabled: true, interval: 0s}}").check(&mut w).unwrap_err();
        assert_eq!(e.key, "storage.maintenance.gc.interval");
        parse("maintenance: {readonly: {enabled: false}}").check(&mut w).unwrap();
        assert!(w.into_vec().is_empty(), "readonly is implemented now");
    }
}
