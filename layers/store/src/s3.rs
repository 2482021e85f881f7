//! The object-storage store (feature `s3`), on the `object_store` crate, in the same CNCF
//! Distribution layout as the filesystem store: a bucket Distribution's S3 driver wrote is
//! served as it is.
//!
//! Stateless by design, so any number of replicas can share one bucket with no shared secret and
//! no sticky sessions:
//! - An upload session is an object (`_uploads/<id>/donjon-session.json`) holding its size, the
//!   SHA-256 state, and the S3 multipart upload it feeds. A PATCH or PUT may land on any replica,
//!   or after a restart, and never re-reads the upload to hash it.
//! - Bytes are sent to S3 as multipart parts of `chunksize` (at least 5 MiB, S3's minimum). What
//!   does not fill a part yet is written as a small segment object, so a client that sends a
//!   few bytes per PATCH costs no process memory between requests; the segments are read back
//!   once, when a part fills or at commit.
//! - Commit verifies the digest from the saved state first, then makes the blob visible: a
//!   monolithic upload (digest known up front) completes its multipart upload at the final key
//!   only after verification; a session's upload is completed at a temporary key and copied
//!   server-side (never downloaded and uploaded again).
//! - Session updates use conditional writes (`If-Match`) where the backend has them (AWS S3,
//!   MinIO); elsewhere (Garage) the last writer wins, which only matters for two PATCHes of one
//!   session at once. Tags and links are single small objects: each write replaces one whole.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use donjon_store::s3::{S3Config, S3Store};
//! let config = S3Config {
//!     bucket: "registry".into(),
//!     region: Some("garage".into()),
//!     endpoint: Some("http://127.0.0.1:3900".into()),
//!     access_key: Some("GK...".into()),
//!     secret_key: Some("...".into()),
//!     ..S3Config::default()
//! };
//! let store = S3Store::connect(config).await?;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use tokio::task::JoinHandle;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};
use serde::{Deserialize, Serialize};

use donjon_core::digest::{Algorithm, Digest, Digester};
use donjon_core::layout;
use donjon_core::manifest;
use donjon_core::store::{
    BlobRead, ByteStream, Descriptor, Manifest, ManifestPut, RangeSpec, Result, Store, StoreError, Stored,
};
use donjon_core::{BoxError, Name, Reference, Tag};

pub use crate::s3_config::{CopyLimits, S3Config};
use crate::s3_copy::PartCopier;

/// S3's smallest part (all parts of a multipart upload but the last).
pub const MIN_PART: usize = 5 * 1024 * 1024;

/// The object-storage store.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

/// What the store needs of an object store: objects, and multipart uploads that another process
/// can continue. `object_store`'s S3 client is one; its in-memory store is another (tests).
pub trait Backend: ObjectStore + MultipartStore {}

impl<T: ObjectStore + MultipartStore> Backend for T {}

struct Inner {
    s3: Arc<dyn Backend>,
    /// Presigns blob URLs, where the backend can (S3) and redirects are on.
    signer: Option<Arc<dyn Signer>>,
    /// The layout's root: `<rootdirectory>/docker/registry/v2`.
    base: String,
    bucket: String,
    chunk: usize,
    conditional: bool,
    redirect: Option<std::time::Duration>,
    /// Copies of large objects by parts (S3 only).
    copier: Option<PartCopier>,
    copy: CopyLimits,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store").field("bucket", &self.inner.bucket).field("base", &self.inner.base).finish()
    }
}

/// An object store failure as the store's error; one that never reached the server (refused,
/// timed out, cut) is `ConnectionRefused`, which clients get as 503 `UNAVAILABLE`.
fn io(e: object_store::Error) -> StoreError {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut unreachable = false;
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<HttpError>() {
            unreachable = matches!(
                h.kind(),
                HttpErrorKind::Connect | HttpErrorKind::Timeout | HttpErrorKind::Interrupted
            );
            break;
        }
        source = s.source();
    }
    let kind = if unreachable { std::io::ErrorKind::ConnectionRefused } else { std::io::ErrorKind::Other };
    StoreError::Io(std::io::Error::new(kind, e))
}

/// How long a connection to the object store may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long object_store retries one request (a few tries with backoff) before the error is
/// the client's.
const RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Garbage collection's quarantine, beside Distribution's tree.
const QUARANTINE: &str = "gc/quarantine";

/// How long a replica that offered a secret waits before it looks at every offer made.
const SECRET_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// The layout's key prefix under `rootdirectory`.
fn base_key(root: &str) -> String {
    match root.trim_matches('/') {
        "" => layout::BASE.to_string(),
        root => format!("{root}/{}", layout::BASE),
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// The state of an upload session, saved after every request.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct Session {
    /// Bytes received.
    size: u64,
    /// The hash state over those bytes, hex.
    hash: String,
    /// Its algorithm (`digest-algorithm`); sessions saved before it existed are sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    algorithm: Option<Algorithm>,
    /// The multipart upload at the session's `data` key, once a part was sent.
    multipart: Option<String>,
    /// ETags of the parts sent, in order.
    parts: Vec<String>,
    /// Bytes in those parts.
    parts_size: u64,
    /// Bytes after the parts, as segment objects: (offset, length).
    /// Segment objects, in order: (offset, length, name). Names are unique per write, so two
    /// racing requests on one session can never overwrite each other's bytes.
    segments: Vec<(u64, u64, String)>,
}

impl S3Store {
    /// The catalog's page, or with `folders` the repository folders' ([`Store::catalog`],
    /// [`Store::repository_folders`]).
    async fn walk(&self, last: Option<&str>, n: usize, folders: bool) -> Result<Vec<String>> {
        let list = |prefix: String| async move {
            let dir = if prefix.is_empty() {
                self.key("repositories")
            } else {
                self.key(&format!("repositories/{prefix}"))
            };
            let listed = self.inner.s3.list_with_delimiter(Some(&dir)).await.map_err(io)?;
            let mut names: Vec<String> =
                listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_owned)).collect();
            // `_manifests` as a folder is not proof: filer-backed stores (SeaweedFS) list a
            // folder whose objects were just deleted for a while after. A link under it is.
            if !folders && names.iter().any(|n| n == "_manifests") {
                let mut under = self.inner.s3.list(Some(&dir.clone().join("_manifests")));
                let mut holds = false;
                while let Some(meta) = under.try_next().await.map_err(io)? {
                    if meta.location.filename() == Some("link") {
                        holds = true;
                        break;
                    }
                }
                if !holds {
                    names.retain(|n| n != "_manifests");
                }
            }
            Ok(names)
        };
        donjon_core::store::catalog_walk(list, last, n, folders).await
    }

    /// Connects, and checks that the bucket answers with these credentials: a bad endpoint,
    /// wrong keys or a missing bucket fail here, in one line, not at the first push.
    pub async fn connect(config: S3Config) -> std::result::Result<Self, String> {
        if config.bucket.is_empty() {
            return Err("storage.s3.bucket is required".into());
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
        if let Some(r) = &config.region {
            b = b.with_region(r);
        } else if config.endpoint.is_some() {
            b = b.with_region("us-east-1");
        }
        if let Some(e) = &config.endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        if let (Some(a), Some(s)) = (&config.access_key, &config.secret_key) {
            b = b.with_access_key_id(a).with_secret_access_key(s);
        }
        // Path style when asked, and always for a custom endpoint given as an address.
        b = b.with_virtual_hosted_style_request(!config.path_style && config.endpoint.is_none());
        let conditional = config.conditional_writes.unwrap_or(true);
        b = b.with_conditional_put(if conditional {
            S3ConditionalPut::ETagMatch
        } else {
            S3ConditionalPut::Disabled
        });
        let options = ClientOptions::new()
            .with_allow_invalid_certificates(config.skip_verify)
            .with_allow_http(config.endpoint.as_deref().is_some_and(|e| e.starts_with("http://")))
            .with_connect_timeout(CONNECT_TIMEOUT);
        b = b.with_client_options(options.clone());
        // object_store's default retries for three minutes: a registry client has given up long
        // before. A few quick tries, then 503 (an unreachable store) the client can retry.
        b = b.with_retry(object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: std::time::Duration::from_millis(100),
                max_backoff: std::time::Duration::from_secs(2),
                base: 2.,
            },
            max_retries: 3,
            retry_timeout: RETRY_TIMEOUT,
        });
        let region = b.get_config_value(&AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let s3 = Arc::new(b.build().map_err(|e| format!("S3 configuration: {e}"))?);
        let copier = PartCopier::new(s3.clone(), &options, &config.bucket, &region)
            .map_err(|e| format!("S3 configuration: {e}"))?;
        let base = base_key(config.root.as_deref().unwrap_or(""));
        let chunk = config.chunk_size.unwrap_or(10 * 1024 * 1024).max(MIN_PART);
        let signer: Option<Arc<dyn Signer>> = config.redirect.map(|_| s3.clone() as Arc<dyn Signer>);
        let mut store = Self::assemble(s3, signer, &base, chunk, conditional, config.redirect);
        if let Some(inner) = Arc::get_mut(&mut store.inner) {
            inner.copier = Some(copier);
            inner.copy = config.copy;
        }
        let where_ = config.endpoint.as_deref().unwrap_or("AWS");
        store.inner.s3.list_with_delimiter(Some(&Path::from(store.inner.base.as_str()))).await.map_err(
            |e| format!("S3 bucket {:?} at {where_} is not usable: {}", config.bucket, one_line(&e)),
        )?;
        Ok(store)
    }

    /// A store on any [`Backend`] (for example `object_store::memory::InMemory`, which has
    /// conditional writes): the same layout and session logic as on S3, without redirects.
    pub fn with_backend(
        backend: Arc<dyn Backend>,
        root: &str,
        chunk_size: usize,
        conditional_writes: bool,
    ) -> Self {
        let base = base_key(root);
        Self::assemble(backend, None, &base, chunk_size.max(1), conditional_writes, None)
    }

    fn assemble(
        s3: Arc<dyn Backend>,
        signer: Option<Arc<dyn Signer>>,
        base: &str,
        chunk: usize,
        conditional: bool,
        redirect: Option<std::time::Duration>,
    ) -> Self {
        let bucket = s3.to_string();
        Self {
            inner: Arc::new(Inner {
                s3,
                signer,
                base: base.into(),
                bucket,
                chunk,
                conditional,
                redirect,
                copier: None,
                copy: CopyLimits::default(),
            }),
        }
    }

    /// Copies `from` (of `size` bytes) to `to` inside the bucket: by one `CopyObject`, or,
    /// past the copy threshold, as a multipart upload of parts copied at once.
    async fn copy(&self, from: &Path, to: &Path, size: u64) -> object_store::Result<()> {
        let limits = self.inner.copy;
        let Some(copier) = self.inner.copier.as_ref().filter(|_| limits.by_parts(size)) else {
            return self.inner.s3.copy(from, to).await;
        };
        let upload = self.inner.s3.create_multipart(to).await?;
        let parts = futures_util::stream::iter(limits.parts(size).into_iter().enumerate())
            .map(|(i, range)| copier.copy_part(from, to, &upload, i, range))
            .buffered(limits.concurrency.max(1))
            .try_collect::<Vec<_>>()
            .await;
        let done = match parts {
            Ok(parts) => self.inner.s3.complete_multipart(to, &upload, parts).await.map(drop),
            Err(e) => Err(object_store::Error::Generic { store: "S3", source: e.into() }),
        };
        if done.is_err() {
            let _ = self.inner.s3.abort_multipart(to, &upload).await;
        }
        done
    }

    fn key(&self, rel: &str) -> Path {
        Path::from(format!("{}/{rel}", self.inner.base))
    }

    fn blob_key(&self, d: &Digest) -> Path {
        self.key(&layout::blob_data(d))
    }

    fn repo(&self, repo: &Name, rel: &str) -> Path {
        self.key(&format!("{}/{rel}", layout::repository(repo)))
    }

    fn layer_link(&self, repo: &Name, d: &Digest) -> Path {
        self.key(&layout::layer_link(repo, d))
    }

    fn revision(&self, repo: &Name, d: &Digest, file: &str) -> Path {
        self.key(&format!("{}/{file}", layout::revision_dir(repo, d)))
    }

    fn tag(&self, repo: &Name, tag: &str, rel: &str) -> Path {
        self.key(&format!("{}/{rel}", layout::tag_dir(repo, tag)))
    }

    fn upload(&self, repo: &Name, id: &str, rel: &str) -> Path {
        self.key(&format!("{}/{rel}", layout::upload_dir(repo, id)))
    }

    fn referrer(&self, repo: &Name, subject: &Digest, rel: &str) -> Path {
        self.key(&format!("{}/{rel}", layout::referrers_dir(repo, subject)))
    }

    /// `rootdirectory/` (or nothing), where the registry's own objects sit beside
    /// Distribution's tree.
    fn outer_root(&self) -> &str {
        self.inner.base.strip_suffix(layout::BASE).unwrap_or("")
    }

    /// Where garbage collection holds a blob it is about to delete.
    fn quarantined(&self, d: &Digest) -> Path {
        Path::from(format!("{}{QUARANTINE}/{}/{}", self.outer_root(), d.algorithm().as_str(), d.hex()))
    }

    /// The `<alg>/<hex>/link` objects under the repository's `under`, with their times.
    async fn links_under(&self, repo: &Name, under: &str) -> Result<Vec<Stored>> {
        let listed: Vec<object_store::ObjectMeta> =
            self.inner.s3.list(Some(&self.repo(repo, under))).try_collect().await.map_err(io)?;
        let mut out: Vec<Stored> = listed
            .into_iter()
            .filter_map(|m| {
                let parts: Vec<&str> = m.location.as_ref().rsplitn(4, '/').collect();
                match parts.as_slice() {
                    ["link", hex, alg, ..] => {
                        let digest = format!("{alg}:{hex}").parse::<Digest>().ok()?;
                        Some(Stored { digest, size: 0, modified: m.last_modified.into() })
                    }
                    _ => None,
                }
            })
            .collect();
        if out.is_empty() {
            let top = self.inner.s3.list_with_delimiter(Some(&self.repo(repo, ""))).await.map_err(io)?;
            if top.common_prefixes.is_empty() && top.objects.is_empty() {
                return Err(StoreError::NameUnknown(repo.clone()));
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    async fn exists(&self, p: &Path) -> Result<bool> {
        match self.inner.s3.head(p).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(io(e)),
        }
    }

    async fn get_bytes(&self, p: &Path) -> Result<Option<Bytes>> {
        match self.inner.s3.get(p).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(io)?)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn put(&self, p: &Path, data: impl Into<PutPayload>) -> Result<()> {
        self.inner.s3.put(p, data.into()).await.map_err(io)?;
        Ok(())
    }

    async fn read_link(&self, p: &Path) -> Result<Option<Digest>> {
        let Some(b) = self.get_bytes(p).await? else { return Ok(None) };
        let text = String::from_utf8_lossy(&b);
        text.trim().parse().map(Some).map_err(|e| StoreError::Corrupt(format!("{p}: {e}")))
    }

    async fn delete_prefix(&self, prefix: &Path) -> Result<usize> {
        let keys: Vec<Path> =
            self.inner.s3.list(Some(prefix)).map_ok(|m| m.location).try_collect().await.map_err(io)?;
        let n = keys.len();
        for k in keys {
            match self.inner.s3.delete(&k).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(n)
    }

    async fn linked(&self, repo: &Name, d: &Digest) -> Result<()> {
        if self.exists(&self.layer_link(repo, d)).await?
            || self.exists(&self.revision(repo, d, "link")).await?
        {
            Ok(())
        } else {
            Err(StoreError::BlobUnknown(d.clone()))
        }
    }

    async fn load(&self, repo: &Name, id: &str) -> Result<(Session, Option<String>)> {
        if !donjon_core::store::valid_upload_id(id) {
            return Err(StoreError::UploadUnknown);
        }
        match self.inner.s3.get(&self.upload(repo, id, "donjon-session.json")).await {
            Ok(r) => {
                let etag = r.meta.e_tag.clone();
                let b = r.bytes().await.map_err(io)?;
                let s = serde_json::from_slice(&b)
                    .map_err(|e| StoreError::Corrupt(format!("session {id}: {e}")))?;
                Ok((s, etag))
            }
            Err(e) if is_not_found(&e) => Err(StoreError::UploadUnknown),
            Err(e) => Err(io(e)),
        }
    }

    async fn save(&self, repo: &Name, id: &str, s: &Session, etag: Option<String>) -> Result<()> {
        let json = serde_json::to_vec(s).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mode = match (self.inner.conditional, etag) {
            (true, Some(e)) => PutMode::Update(UpdateVersion { e_tag: Some(e), version: None }),
            _ => PutMode::Overwrite,
        };
        let opts = PutOptions { mode, ..Default::default() };
        match self.inner.s3.put_opts(&self.upload(repo, id, "donjon-session.json"), json.into(), opts).await {
            Ok(_) => Ok(()),
            // Another request on this session saved first: the client must ask where it stands.
            Err(object_store::Error::Precondition { .. }) => {
                let (now, _) = self.load(repo, id).await?;
                Err(StoreError::UploadOffset { size: now.size })
            }
            Err(e) => Err(io(e)),
        }
    }

    fn hasher(s: &Session) -> Result<Digester> {
        let state = hex::decode(&s.hash).map_err(|_| StoreError::Corrupt("session hash state".into()))?;
        Digester::resume(s.algorithm.unwrap_or(Algorithm::Sha256), &state)
            .ok_or_else(|| StoreError::Corrupt("session hash state".into()))
    }

    /// Reads the session's segments back, in order.
    async fn segments(&self, repo: &Name, id: &str, s: &Session) -> Result<BytesMut> {
        let total: u64 = s.segments.iter().map(|(_, n, _)| n).sum();
        // Capacity from a stored number: bounded by what a part can hold, whatever it says.
        let mut out = BytesMut::with_capacity(usize::try_from(total).unwrap_or(0).min(self.inner.chunk));
        for (off, _, name) in &s.segments {
            let b = self
                .get_bytes(&self.upload(repo, id, name))
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("session {id}: segment {off} is missing")))?;
            out.extend_from_slice(&b);
        }
        Ok(out)
    }

    /// Sends `data` (the segments, read back, then fresh bytes) as the session's next part.
    async fn send_part(&self, repo: &Name, id: &str, s: &mut Session, data: Bytes) -> Result<()> {
        let key = self.upload(repo, id, "data");
        let mp = match &s.multipart {
            Some(m) => m.clone(),
            None => {
                let m = self.inner.s3.create_multipart(&key).await.map_err(io)?;
                s.multipart = Some(m.clone());
                m
            }
        };
        let len = data.len() as u64;
        let part = self.inner.s3.put_part(&key, &mp, s.parts.len(), data.into()).await.map_err(io)?;
        s.parts.push(part.content_id);
        s.parts_size += len;
        Ok(())
    }

    async fn end_session(&self, repo: &Name, id: &str, s: &Session) -> Result<()> {
        if let Some(mp) = &s.multipart {
            let _ = self.inner.s3.abort_multipart(&self.upload(repo, id, "data"), mp).await;
        }
        self.delete_prefix(&self.upload(repo, id, "")).await?;
        Ok(())
    }

    async fn link(&self, repo: &Name, d: &Digest) -> Result<()> {
        self.put(&self.layer_link(repo, d), Bytes::from(d.to_string())).await
    }
}

fn one_line(e: &object_store::Error) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

fn segment_name(offset: u64) -> String {
    format!("segments/{offset:020}-{}", uuid::Uuid::new_v4().simple())
}

/// Part uploads run as tasks, at most this many at once, so that receiving a body and sending
/// it to S3 overlap; memory per transfer stays within a few parts.
const PARALLEL_PARTS: usize = 3;

/// The parts of one multipart upload being sent; their ids come back in order.
struct Parts {
    s3: Arc<dyn Backend>,
    key: Path,
    id: String,
    next: usize,
    inflight: VecDeque<JoinHandle<object_store::Result<PartId>>>,
    done: Vec<PartId>,
}

impl Parts {
    fn new(s3: &Arc<dyn Backend>, key: &Path, id: &str, next: usize) -> Self {
        Self {
            s3: s3.clone(),
            key: key.clone(),
            id: id.into(),
            next,
            inflight: VecDeque::new(),
            done: vec![],
        }
    }

    async fn reap_one(&mut self) -> Result<()> {
        if let Some(h) = self.inflight.pop_front() {
            let part = h.await.map_err(|e| StoreError::Io(std::io::Error::other(e)))?.map_err(io)?;
            self.done.push(part);
        }
        Ok(())
    }

    async fn send(&mut self, data: Bytes) -> Result<()> {
        while self.inflight.len() >= PARALLEL_PARTS {
            self.reap_one().await?;
        }
        let (s3, key, id, idx) = (self.s3.clone(), self.key.clone(), self.id.clone(), self.next);
        self.next += 1;
        self.inflight.push_back(tokio::spawn(async move { s3.put_part(&key, &id, idx, data.into()).await }));
        Ok(())
    }

    async fn finish(mut self) -> Result<Vec<PartId>> {
        while !self.inflight.is_empty() {
            self.reap_one().await?;
        }
        Ok(std::mem::take(&mut self.done))
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        for h in &self.inflight {
            h.abort();
        }
    }
}

#[async_trait]
impl Store for S3Store {
    async fn blob_size(&self, repo: &Name, digest: &Digest) -> Result<u64> {
        self.linked(repo, digest).await?;
        match self.inner.s3.head(&self.blob_key(digest)).await {
            Ok(m) => Ok(m.size),
            Err(e) if is_not_found(&e) => Err(StoreError::BlobUnknown(digest.clone())),
            Err(e) => Err(io(e)),
        }
    }

    async fn blob_read(&self, repo: &Name, digest: &Digest, range: RangeSpec) -> Result<BlobRead> {
        let size = self.blob_size(repo, digest).await?;
        let r = range.resolve(size).ok_or(StoreError::RangeInvalid { size })?;
        if r.is_empty() {
            return Ok(BlobRead { size, range: r, body: donjon_core::store::bytes_stream(Bytes::new()) });
        }
        let opts = GetOptions { range: Some(GetRange::Bounded(r.clone())), ..Default::default() };
        let got = match self.inner.s3.get_opts(&self.blob_key(digest), opts).await {
            Ok(g) => g,
            Err(e) if is_not_found(&e) => return Err(StoreError::BlobUnknown(digest.clone())),
            Err(e) => return Err(io(e)),
        };
        let body = got.into_stream().map_err(|e| Box::new(e) as BoxError);
        Ok(BlobRead { size, range: r, body: Box::pin(body) })
    }

    async fn blob_redirect(&self, _repo: &Name, digest: &Digest) -> Result<Option<String>> {
        let (Some(ttl), Some(signer)) = (self.inner.redirect, &self.inner.signer) else { return Ok(None) };
        let url = signer.signed_url(http::Method::GET, &self.blob_key(digest), ttl).await.map_err(io)?;
        Ok(Some(url.to_string()))
    }

    async fn blob_link(&self, repo: &Name, digest: &Digest) -> Result<()> {
        if !self.exists(&self.blob_key(digest)).await? {
            return Err(StoreError::BlobUnknown(digest.clone()));
        }
        self.link(repo, digest).await
    }

    async fn blob_unlink(&self, repo: &Name, digest: &Digest) -> Result<()> {
        let link = self.layer_link(repo, digest);
        if !self.exists(&link).await? {
            return Err(StoreError::BlobUnknown(digest.clone()));
        }
        self.inner.s3.delete(&link).await.map_err(io)
    }

    async fn upload_create(&self, repo: &Name, algorithm: Algorithm) -> Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        let s = Session {
            hash: hex::encode(Digester::new(algorithm).state()),
            algorithm: (algorithm != Algorithm::Sha256).then_some(algorithm),
            ..Session::default()
        };
        self.put(&self.upload(repo, &id, "startedat"), Bytes::from(donjon_core::time::rfc3339_now())).await?;
        self.save(repo, &id, &s, None).await?;
        Ok(id)
    }

    fn chunk_min_length(&self) -> Option<u64> {
        // S3's smallest multipart part: a shorter chunk waits as a segment object, to be read
        // back when the part is sent.
        Some(MIN_PART as u64)
    }

    async fn upload_size(&self, repo: &Name, id: &str) -> Result<u64> {
        Ok(self.load(repo, id).await?.0.size)
    }

    async fn upload_write(&self, repo: &Name, id: &str, offset: u64, mut data: ByteStream) -> Result<u64> {
        let (mut s, etag) = self.load(repo, id).await?;
        if offset != s.size {
            return Err(StoreError::UploadOffset { size: s.size });
        }
        let mut hasher = Self::hasher(&s)?;
        let seg_len = |s: &Session| {
            usize::try_from(s.segments.iter().map(|(_, n, _)| n).sum::<u64>()).unwrap_or(usize::MAX)
        };
        let mut fresh = BytesMut::new();
        let mut garbage: Vec<String> = vec![];
        let mut failure = None;
        let mut parts: Option<Parts> = None;
        while let Some(chunk) = data.next().await {
            let c = match chunk {
                Ok(c) => c,
                Err(e) => {
                    failure = Some(StoreError::Body(e));
                    break;
                }
            };
            hasher.update(&c);
            fresh.extend_from_slice(&c);
            if seg_len(&s) + fresh.len() >= self.inner.chunk {
                let mut part = self.segments(repo, id, &s).await?;
                part.extend_from_slice(&fresh);
                fresh.clear();
                let sent = part.len() as u64;
                let sender = match &mut parts {
                    Some(p) => p,
                    None => {
                        let key = self.upload(repo, id, "data");
                        let mp = match &s.multipart {
                            Some(m) => m.clone(),
                            None => self.inner.s3.create_multipart(&key).await.map_err(io)?,
                        };
                        s.multipart = Some(mp.clone());
                        parts.insert(Parts::new(&self.inner.s3, &key, &mp, s.parts.len()))
                    }
                };
                if let Err(e) = sender.send(part.freeze()).await {
                    failure = Some(e);
                    break;
                }
                s.parts_size += sent;
                garbage.extend(s.segments.drain(..).map(|(_, _, name)| name));
            }
        }
        if let Some(p) = parts {
            match p.finish().await {
                Ok(ids) => s.parts.extend(ids.into_iter().map(|p| p.content_id)),
                Err(e) => failure = Some(e),
            }
        }
        if matches!(failure, Some(StoreError::Io(_)) | Some(StoreError::Corrupt(_))) {
            // A backend failure: the saved session is left as it was; the client resumes from
            // its size (a part sent meanwhile is sent again under the same number).
            return Err(failure.unwrap_or(StoreError::UploadUnknown));
        }
        // Keep what arrived, even when the client went away mid-body.
        if !fresh.is_empty() {
            let off = s.parts_size + seg_len(&s) as u64;
            let len = fresh.len() as u64;
            let name = segment_name(off);
            self.put(&self.upload(repo, id, &name), fresh.freeze()).await?;
            s.segments.push((off, len, name));
        }
        s.size = s.parts_size + seg_len(&s) as u64;
        s.hash = hex::encode(hasher.state());
        self.save(repo, id, &s, etag).await?;
        for off in garbage {
            let _ = self.inner.s3.delete(&self.upload(repo, id, &off)).await;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(s.size),
        }
    }

    async fn upload_commit(&self, repo: &Name, id: &str, digest: &Digest) -> Result<u64> {
        let (mut s, _) = self.load(repo, id).await?;
        let size = s.size;
        let blob = self.blob_key(digest);
        // The session's own algorithm is verified from the saved state, before anything is
        // assembled; another one needs the whole content hashed again.
        let from_state = digest.algorithm() == s.algorithm.unwrap_or(Algorithm::Sha256);
        if from_state {
            let actual = Self::hasher(&s)?.finish();
            if &actual != digest {
                self.end_session(repo, id, &s).await?;
                return Err(StoreError::DigestMismatch { expected: digest.clone(), actual });
            }
            if self.exists(&blob).await? {
                self.end_session(repo, id, &s).await?;
                self.link(repo, digest).await?;
                return Ok(size);
            }
        }
        let tail = self.segments(repo, id, &s).await?.freeze();
        let temp = self.upload(repo, id, "data");
        if s.multipart.is_none() && from_state {
            // Smaller than one part: one PUT at the content address.
            self.put(&blob, tail).await?;
        } else {
            if s.multipart.is_none() {
                self.put(&temp, tail).await?;
            } else {
                if !tail.is_empty() || s.parts.is_empty() {
                    self.send_part(repo, id, &mut s, tail).await?;
                }
                let parts = s.parts.iter().map(|e| PartId { content_id: e.clone() }).collect();
                let mp = s.multipart.clone().unwrap_or_default();
                self.inner.s3.complete_multipart(&temp, &mp, parts).await.map_err(io)?;
                s.multipart = None;
            }
            if !from_state {
                let mut h = Digester::new(digest.algorithm());
                let mut st = self.inner.s3.get(&temp).await.map_err(io)?.into_stream();
                while let Some(c) = st.next().await {
                    h.update(&c.map_err(io)?);
                }
                let actual = h.finish();
                if &actual != digest {
                    self.end_session(repo, id, &s).await?;
                    return Err(StoreError::DigestMismatch { expected: digest.clone(), actual });
                }
            }
            // Into place by a server-side copy.
            self.copy(&temp, &blob, size).await.map_err(io)?;
        }
        self.link(repo, digest).await?;
        self.end_session(repo, id, &s).await?;
        Ok(size)
    }

    async fn upload_cancel(&self, repo: &Name, id: &str) -> Result<()> {
        let (s, _) = self.load(repo, id).await?;
        self.end_session(repo, id, &s).await
    }

    async fn blob_put(&self, repo: &Name, digest: &Digest, mut data: ByteStream) -> Result<u64> {
        let blob = self.blob_key(digest);
        // Already stored: the bytes are still hashed (whoever links must show the content),
        // but not sent again.
        let exists = self.exists(&blob).await?;
        let mut hasher = Digester::new(digest.algorithm());
        let mut buf = BytesMut::new();
        let mut parts: Option<Parts> = None;
        let mut size = 0u64;
        let mut result: Result<()> = async {
            while let Some(chunk) = data.next().await {
                let c = chunk.map_err(StoreError::Body)?;
                hasher.update(&c);
                size += c.len() as u64;
                if exists {
                    continue;
                }
                buf.extend_from_slice(&c);
                if buf.len() >= self.inner.chunk {
                    let sender = match &mut parts {
                        Some(p) => p,
                        None => {
                            let id = self.inner.s3.create_multipart(&blob).await.map_err(io)?;
                            parts.insert(Parts::new(&self.inner.s3, &blob, &id, 0))
                        }
                    };
                    sender.send(buf.split().freeze()).await?;
                }
            }
            Ok(())
        }
        .await;
        let actual = hasher.finish();
        if result.is_ok() && &actual != digest {
            result = Err(StoreError::DigestMismatch { expected: digest.clone(), actual });
        }
        match (result, parts) {
            (Err(e), Some(p)) => {
                let id = p.id.clone();
                drop(p);
                let _ = self.inner.s3.abort_multipart(&blob, &id).await;
                Err(e)
            }
            (Err(e), None) => Err(e),
            (Ok(()), Some(mut p)) => {
                if !buf.is_empty() {
                    p.send(buf.freeze()).await?;
                }
                let id = p.id.clone();
                let ids = match p.finish().await {
                    Ok(ids) => ids,
                    Err(e) => {
                        let _ = self.inner.s3.abort_multipart(&blob, &id).await;
                        return Err(e);
                    }
                };
                self.inner.s3.complete_multipart(&blob, &id, ids).await.map_err(io)?;
                self.link(repo, digest).await?;
                Ok(size)
            }
            (Ok(()), None) => {
                if !exists {
                    self.put(&blob, buf.freeze()).await?;
                }
                self.link(repo, digest).await?;
                Ok(size)
            }
        }
    }

    async fn purge_uploads(&self, cutoff: std::time::SystemTime, dry_run: bool) -> Result<usize> {
        // Object stores list by prefix only: walk the repositories' keys for session markers.
        let root = self.key("repositories");
        let mut listing = self.inner.s3.list(Some(&root));
        let mut stale = vec![];
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(io)?;
            let key = meta.location.as_ref();
            let Some((repo_part, rest)) = key.split_once("/_uploads/") else { continue };
            let Some(id) = rest.strip_suffix("/startedat") else { continue };
            if std::time::SystemTime::from(meta.last_modified) < cutoff {
                let repo = repo_part.rsplit_once("repositories/").map(|(_, r)| r.to_string());
                if let Some(repo) = repo.and_then(|r| r.parse::<Name>().ok()) {
                    stale.push((repo, id.to_string()));
                }
            }
        }
        if !dry_run {
            for (repo, id) in &stale {
                match self.load(repo, id).await {
                    Ok((s, _)) => self.end_session(repo, id, &s).await?,
                    Err(StoreError::UploadUnknown) => {
                        self.delete_prefix(&self.upload(repo, id, "")).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(stale.len())
    }

    async fn manifest_get(&self, repo: &Name, reference: &Reference) -> Result<Manifest> {
        let unknown = || StoreError::ManifestUnknown(reference.to_string());
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => {
                self.read_link(&self.tag(repo, t.as_str(), "current/link")).await?.ok_or_else(unknown)?
            }
        };
        if !self.exists(&self.revision(repo, &digest, "link")).await? {
            return Err(unknown());
        }
        let bytes = self.get_bytes(&self.blob_key(&digest)).await?.ok_or_else(unknown)?;
        let media_type = match manifest::media_type_of(&bytes) {
            Some(m) => m,
            None => self
                .get_bytes(&self.revision(repo, &digest, "donjon-mediatype"))
                .await?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|| manifest::OCI_MANIFEST.into()),
        };
        Ok(Manifest { digest, media_type, bytes })
    }

    async fn manifest_exists(&self, repo: &Name, digest: &Digest) -> Result<bool> {
        self.exists(&self.revision(repo, digest, "link")).await
    }

    async fn manifest_put(&self, repo: &Name, m: ManifestPut) -> Result<()> {
        let blob = self.blob_key(&m.digest);
        if !self.exists(&blob).await? {
            self.put(&blob, m.bytes.clone()).await?;
        }
        if manifest::media_type_of(&m.bytes).as_deref() != Some(m.media_type.as_str()) {
            self.put(&self.revision(repo, &m.digest, "donjon-mediatype"), Bytes::from(m.media_type.clone()))
                .await?;
        }
        let text = Bytes::from(m.digest.to_string());
        self.put(&self.revision(repo, &m.digest, "link"), text.clone()).await?;
        if let Some((subject, desc)) = &m.referrer {
            let json = serde_json::to_vec(desc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let name = format!("{}-{}.json", m.digest.algorithm().as_str(), m.digest.hex());
            self.put(&self.referrer(repo, subject, &name), json).await?;
        }
        let index = format!("index/{}/{}/link", m.digest.algorithm().as_str(), m.digest.hex());
        let tag_puts = m.tags.iter().map(|tag| {
            let text = text.clone();
            let index = &index;
            async move {
                // `current` first: a tag is listed only once it resolves.
                self.put(&self.tag(repo, tag.as_str(), "current/link"), text.clone()).await?;
                self.put(&self.tag(repo, tag.as_str(), index), text).await
            }
        });
        futures_util::future::try_join_all(tag_puts).await?;
        Ok(())
    }

    async fn manifest_delete(&self, repo: &Name, digest: &Digest) -> Result<()> {
        let link = self.revision(repo, digest, "link");
        if !self.exists(&link).await? {
            return Err(StoreError::ManifestUnknown(digest.to_string()));
        }
        for tag in self.tags(repo).await.unwrap_or_default() {
            if self.read_link(&self.tag(repo, &tag, "current/link")).await?.as_ref() == Some(digest) {
                self.delete_prefix(&self.tag(repo, &tag, "")).await?;
            }
        }
        if let Some(subject) =
            self.get_bytes(&self.blob_key(digest)).await?.and_then(|b| manifest::subject_of(&b))
        {
            let name = format!("{}-{}.json", digest.algorithm().as_str(), digest.hex());
            match self.inner.s3.delete(&self.referrer(repo, &subject, &name)).await {
                Err(e) if !is_not_found(&e) => return Err(io(e)),
                _ => {}
            }
        }
        self.delete_prefix(&self.revision(repo, digest, "")).await?;
        Ok(())
    }

    async fn tag_delete(&self, repo: &Name, tag: &Tag) -> Result<()> {
        if self.delete_prefix(&self.tag(repo, tag.as_str(), "")).await? == 0 {
            return Err(StoreError::ManifestUnknown(tag.to_string()));
        }
        Ok(())
    }

    async fn tags(&self, repo: &Name) -> Result<Vec<String>> {
        // A tag is one with a `current/link`. Its folder is not proof: filer-backed stores
        // (SeaweedFS) list a folder whose objects were just deleted for a while after.
        let dir = self.repo(repo, "_manifests/tags");
        let mut listed = self.inner.s3.list(Some(&dir));
        let mut tags = vec![];
        while let Some(meta) = listed.try_next().await.map_err(io)? {
            let mut parts = meta.location.prefix_match(&dir).into_iter().flatten();
            let (Some(tag), Some(current), Some(link), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if current.as_ref() == "current" && link.as_ref() == "link" && tag.as_ref().parse::<Tag>().is_ok()
            {
                tags.push(tag.as_ref().to_string());
            }
        }
        if tags.is_empty() {
            // A bucket has no empty folders: once its last tag and revision are deleted, a
            // repository is known by its remaining links (`_layers`, `_manifests`, `_uploads`),
            // so that it answers an empty list, as on a filesystem, and not NAME_UNKNOWN.
            let top = self.inner.s3.list_with_delimiter(Some(&self.repo(repo, ""))).await.map_err(io)?;
            if !top.common_prefixes.iter().any(|p| p.filename().is_some_and(|f| f.starts_with('_'))) {
                return Err(StoreError::NameUnknown(repo.clone()));
            }
        }
        tags.sort();
        Ok(tags)
    }

    async fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        self.walk(last, n, false).await
    }

    async fn repository_folders(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        self.walk(last, n, true).await
    }

    async fn referrers(&self, repo: &Name, subject: &Digest) -> Result<Vec<Descriptor>> {
        let listed =
            self.inner.s3.list_with_delimiter(Some(&self.referrer(repo, subject, ""))).await.map_err(io)?;
        let mut out = vec![];
        for o in listed.objects {
            if !o.location.as_ref().ends_with(".json") {
                continue;
            }
            if let Some(b) = self.get_bytes(&o.location).await? {
                match serde_json::from_slice::<Descriptor>(&b) {
                    Ok(d) => out.push(d),
                    Err(err) => tracing::warn!(key = %o.location, %err, "skipping unreadable referrer entry"),
                }
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    async fn tag_times(&self, repo: &Name) -> Result<Vec<(String, Option<std::time::SystemTime>)>> {
        let tags = self.tags(repo).await?;
        let listed: Vec<object_store::ObjectMeta> =
            self.inner.s3.list(Some(&self.repo(repo, "_manifests/tags"))).try_collect().await.map_err(io)?;
        // …/_manifests/tags/<tag>/current/link, rewritten on every push of the tag.
        let mut times = std::collections::HashMap::new();
        for m in &listed {
            let parts: Vec<&str> = m.location.as_ref().rsplitn(4, '/').collect();
            if let ["link", "current", tag, ..] = parts.as_slice() {
                times.insert(tag.to_string(), std::time::SystemTime::from(m.last_modified));
            }
        }
        Ok(tags
            .into_iter()
            .map(|t| {
                let time = times.get(&t).copied();
                (t, time)
            })
            .collect())
    }

    async fn blob_list(&self) -> Result<Vec<Stored>> {
        let listed: Vec<object_store::ObjectMeta> =
            self.inner.s3.list(Some(&self.key("blobs"))).try_collect().await.map_err(io)?;
        let mut out: Vec<Stored> = listed
            .into_iter()
            .filter_map(|m| {
                // …/blobs/<alg>/<2 hex>/<hex>/data
                let parts: Vec<&str> = m.location.as_ref().rsplitn(5, '/').collect();
                match parts.as_slice() {
                    ["data", hex, _, alg, ..] => {
                        let digest = format!("{alg}:{hex}").parse::<Digest>().ok()?;
                        Some(Stored { digest, size: m.size, modified: m.last_modified.into() })
                    }
                    _ => None,
                }
            })
            .collect();
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    async fn revision_list(&self, repo: &Name) -> Result<Vec<Stored>> {
        self.links_under(repo, "_manifests/revisions").await
    }

    async fn layer_list(&self, repo: &Name) -> Result<Vec<Stored>> {
        self.links_under(repo, "_layers").await
    }

    async fn blob_quarantine(&self, digest: &Digest) -> Result<bool> {
        let (blob, held) = (self.blob_key(digest), self.quarantined(digest));
        let size = match self.inner.s3.head(&blob).await {
            Ok(m) => m.size,
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(io(e)),
        };
        match self.copy(&blob, &held, size).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(io(e)),
        }
        match self.inner.s3.delete(&blob).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(true),
            Err(e) => Err(io(e)),
        }
    }

    async fn blob_release(&self, digest: &Digest, restore: bool) -> Result<()> {
        let (blob, held) = (self.blob_key(digest), self.quarantined(digest));
        if restore && !self.exists(&blob).await? {
            let copied = match self.inner.s3.head(&held).await {
                Ok(m) => self.copy(&held, &blob, m.size).await,
                Err(e) => Err(e),
            };
            match copied {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(io(e)),
            }
        }
        match self.inner.s3.delete(&held).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    async fn quarantine_list(&self) -> Result<Vec<Digest>> {
        let prefix = Path::from(format!("{}{QUARANTINE}", self.outer_root()));
        let listed: Vec<object_store::ObjectMeta> =
            self.inner.s3.list(Some(&prefix)).try_collect().await.map_err(io)?;
        let mut out: Vec<Digest> = listed
            .into_iter()
            .filter_map(|m| {
                let mut parts = m.location.as_ref().rsplitn(3, '/');
                let hex = parts.next()?;
                let alg = parts.next()?;
                format!("{alg}:{hex}").parse().ok()
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn secret(&self, name: &str, init: Bytes) -> Result<Bytes> {
        if !donjon_core::store::valid_secret_name(name) {
            return Err(donjon_core::store::invalid_secret_name(name));
        }
        // Beside Distribution's tree, under the same root directory.
        let root = self.outer_root();
        let key = Path::from(format!("{root}{name}"));
        if let Some(b) = self.get_bytes(&key).await? {
            return Ok(b);
        }
        // Replicas starting together agree without trusting `If-None-Match`, which some
        // backends ignore (Garage does): each stores its offer under a key of its own, waits
        // until every replica that started with it has done the same, and takes the earliest
        // offer (by the server's clock, then by key). An offer made after that wait is later
        // than every offer already taken, so it never wins. This is paid once, when the
        // bucket has no such secret yet.
        let offers = Path::from(format!("{root}{name}.offers"));
        let own = Path::from(format!("{root}{name}.offers/{}", uuid::Uuid::new_v4().simple()));
        self.inner.s3.put(&own, init.clone().into()).await.map_err(io)?;
        tokio::time::sleep(SECRET_SETTLE).await;
        let listed: Vec<object_store::ObjectMeta> =
            self.inner.s3.list(Some(&offers)).try_collect().await.map_err(io)?;
        // Offers much older than this one are from a secret deleted since (a rotated key):
        // they take no part.
        let time = |m: &object_store::ObjectMeta| std::time::SystemTime::from(m.last_modified);
        let own_time = listed.iter().find(|m| m.location == own).map(time);
        let first = listed
            .into_iter()
            .filter(|m| own_time.is_none_or(|t| time(m) + std::time::Duration::from_secs(60) >= t))
            .min_by(|a, b| (a.last_modified, &a.location).cmp(&(b.last_modified, &b.location)))
            .map(|m| m.location)
            .unwrap_or(own);
        let kept = self.get_bytes(&first).await?.unwrap_or(init);
        // Every replica writes the same bytes here (first writer only, where the backend
        // honours `If-None-Match`); later starts read them in one request. A second look
        // after another pause settles any replica that still disagreed.
        let mode = if self.inner.conditional { PutMode::Create } else { PutMode::Overwrite };
        match self
            .inner
            .s3
            .put_opts(&key, kept.clone().into(), PutOptions { mode, ..Default::default() })
            .await
        {
            Ok(_)
            | Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {}
            Err(e) => return Err(io(e)),
        }
        tokio::time::sleep(SECRET_SETTLE).await;
        let kept = self.get_bytes(&key).await?.unwrap_or(kept);
        Ok(kept)
    }
}
