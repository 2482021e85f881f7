//! The filesystem store, in CNCF Distribution's storage layout (v2), so that a directory
//! Distribution wrote is served as it is, and Distribution can serve what donjon writes.
//!
//! ```text
//! <root>/docker/registry/v2/blobs/<alg>/<2 hex>/<hex>/data
//! <root>/docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link
//! <root>/docker/registry/v2/repositories/<name>/_manifests/revisions/<alg>/<hex>/link
//! <root>/docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//! <root>/docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link
//! <root>/docker/registry/v2/repositories/<name>/_uploads/<id>/{data,startedat,donjon-hashstate}
//! <root>/docker/registry/v2/repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>.json  (donjon)
//! ```
//!
//! Every small file is written to a temporary name, `fsync`ed, renamed over its target, and the
//! directory `fsync`ed: a crash leaves the old or the new state, never a torn one. A blob's data
//! is renamed into place only after its digest has been verified.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! let store = donjon_store::FsStore::open("./data").await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use donjon_core::digest::{Algorithm, Digest, Digester};
use donjon_core::layout;
use donjon_core::manifest;
use donjon_core::store::{
    BlobRead, ByteStream, Descriptor, Manifest, ManifestPut, RangeSpec, Result, Store, StoreError, Stored,
};
use donjon_core::time::rfc3339_now;
use donjon_core::{Name, Reference, Tag};

mod file;
mod hashing;

use file::*;
use hashing::*;

const MEDIATYPE: &str = "donjon-mediatype";

/// The filesystem store.
#[derive(Clone)]
pub struct FsStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `<root>/docker/registry/v2`
    base: PathBuf,
    root: PathBuf,
    /// One lock per live upload session, so two requests on one session take turns.
    sessions: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// Slots for uploads hashing on threads of their own ([`Hashing`]).
    hash_threads: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for FsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStore").field("root", &self.inner.root).finish()
    }
}

/// What a "permission denied" under `root` (the data directory) needs said: who this process
/// is, who owns the deepest folder of `path` that exists (the one it could not write in), and
/// the fix. A `chown -R` is offered only inside the data directory; above it (a data directory
/// not made yet), making and handing over the data directory alone.
fn denied(root: &Path, path: &Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let (uid, gid) = (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw());
    let Some((dir, meta)) = path.ancestors().find_map(|d| fs::metadata(d).ok().map(|m| (d, m))) else {
        return format!("; donjon runs as uid {uid} gid {gid}");
    };
    let fix = if dir.starts_with(root) {
        format!("chown -R {uid}:{gid} {}", root.display())
    } else {
        format!("mkdir -p {0} && chown {uid}:{gid} {0}", root.display())
    };
    format!(
        "; donjon runs as uid {uid} gid {gid}, and {} is owned by uid {} gid {} with mode {:o}: \
         make the data directory writable for this user ({fix}, or `fsGroup: {gid}` in a \
         Kubernetes pod's securityContext)",
        dir.display(),
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o7777,
    )
}

impl FsStore {
    /// The catalog's page, or with `folders` the repository folders' ([`Store::catalog`],
    /// [`Store::repository_folders`]).
    async fn walk(&self, last: Option<&str>, n: usize, folders: bool) -> Result<Vec<String>> {
        let root = self.inner.base.join("repositories");
        let list = |prefix: String| {
            let dir = root.join(prefix);
            async move {
                Ok(blocking(move || {
                    let mut names: Vec<String> = subdirs(&dir)?.into_iter().map(|(name, _)| name).collect();
                    // A repository whose manifests were all deleted keeps its folders, but is
                    // no longer in the catalog.
                    if !folders
                        && names.iter().any(|n| n == "_manifests")
                        && !holds_manifests(&dir.join("_manifests"))?
                    {
                        names.retain(|n| n != "_manifests");
                    }
                    Ok(names)
                })
                .await?)
            }
        };
        donjon_core::store::catalog_walk(list, last, n, folders).await
    }

    /// Opens (creating if needed) a store rooted at `root`, and checks that it is writable.
    /// Nothing is scanned.
    pub async fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        let base = root.join(layout::BASE);
        let probe_dir = base.clone();
        blocking(move || {
            fs::create_dir_all(probe_dir.join("repositories"))?;
            fs::create_dir_all(probe_dir.join("blobs"))?;
            let probe = probe_dir.join(format!(".probe-{}", uuid::Uuid::new_v4().simple()));
            fs::write(&probe, b"")?;
            fs::remove_file(&probe)
        })
        .await
        .map_err(|e| {
            let why = if e.kind() == io::ErrorKind::PermissionDenied {
                denied(&root, &base)
            } else {
                String::new()
            };
            io::Error::new(e.kind(), format!("data directory {} is not writable: {e}{why}", root.display()))
        })?;
        let hash_threads = Arc::new(tokio::sync::Semaphore::new(HASH_THREADS));
        Ok(Self { inner: Arc::new(Inner { base, root, sessions: Mutex::default(), hash_threads }) })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.inner.base.join(layout::blob_data(d))
    }

    fn repo(&self, repo: &Name) -> PathBuf {
        self.inner.base.join(layout::repository(repo))
    }

    fn layer_link(&self, repo: &Name, d: &Digest) -> PathBuf {
        self.inner.base.join(layout::layer_link(repo, d))
    }

    fn revision_dir(&self, repo: &Name, d: &Digest) -> PathBuf {
        self.inner.base.join(layout::revision_dir(repo, d))
    }

    fn tag_dir(&self, repo: &Name, tag: &str) -> PathBuf {
        self.inner.base.join(layout::tag_dir(repo, tag))
    }

    fn upload_dir(&self, repo: &Name, id: &str) -> PathBuf {
        self.inner.base.join(layout::upload_dir(repo, id))
    }

    fn referrers_dir(&self, repo: &Name, subject: &Digest) -> PathBuf {
        self.inner.base.join(layout::referrers_dir(repo, subject))
    }

    /// Where garbage collection holds a blob it is about to delete: beside Distribution's
    /// tree, under the same root.
    fn quarantined(&self, d: &Digest) -> PathBuf {
        self.inner.root.join(QUARANTINE).join(d.algorithm().as_str()).join(d.hex())
    }

    async fn session_lock(&self, repo: &Name, id: &str) -> Result<tokio::sync::OwnedMutexGuard<()>> {
        if !donjon_core::store::valid_upload_id(id) {
            return Err(StoreError::UploadUnknown);
        }
        let key = format!("{repo}/{id}");
        let lock = {
            let mut map = self.inner.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = map.get(&key).and_then(Weak::upgrade) {
                l
            } else {
                map.retain(|_, w| w.strong_count() > 0);
                let l = Arc::new(tokio::sync::Mutex::new(()));
                map.insert(key, Arc::downgrade(&l));
                l
            }
        };
        Ok(lock.lock_owned().await)
    }

    /// The session's current size and hash state, resuming the saved state when it matches the
    /// data, re-hashing the data otherwise (after a crash mid-write, or a Distribution session).
    /// `algorithm` asks for a given one; `None` takes the session's own (sha256 unless it was
    /// started with another).
    async fn session_state(&self, dir: PathBuf, algorithm: Option<Algorithm>) -> Result<(u64, Digester)> {
        blocking(move || {
            let data = dir.join("data");
            let size = match fs::metadata(&data) {
                Ok(m) => m.len(),
                Err(e) if not_found(&e) => {
                    return Err(io::Error::new(io::ErrorKind::NotFound, "upload"));
                }
                Err(e) => return Err(e),
            };
            let saved = fs::read(dir.join(HASHSTATE)).ok().filter(|s| s.len() > 9);
            let saved_algorithm = saved.as_ref().and_then(|s| algorithm_of_byte(s[8]));
            let algorithm = algorithm.or(saved_algorithm).unwrap_or(Algorithm::Sha256);
            if let Some(saved) = saved.filter(|_| saved_algorithm == Some(algorithm)) {
                let off = u64::from_le_bytes(saved[..8].try_into().unwrap_or_default());
                if off == size {
                    if let Some(h) = Digester::resume(algorithm, &saved[9..]) {
                        return Ok((size, h));
                    }
                }
            }
            let mut h = Digester::new(algorithm);
            let mut f = fs::File::open(&data)?;
            let mut buf = vec![0u8; IO_BUF];
            let mut n_total = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                n_total += n as u64;
            }
            Ok((n_total, h))
        })
        .await
        .map_err(|e| if not_found(&e) { StoreError::UploadUnknown } else { e.into() })
    }

    async fn save_hashstate(&self, dir: PathBuf, size: u64, h: &Digester) -> io::Result<()> {
        let state = hashstate(size, h);
        // Not fsynced: a stale or missing state is detected by its offset and re-hashed.
        blocking(move || write_atomic(&dir.join(HASHSTATE), &state, false)).await
    }
}

/// How old a temporary file or a half-made session must be before the purger takes it as left
/// over by a crash.
const LEFTOVER_AGE: Duration = Duration::from_secs(600);

#[async_trait]
impl Store for FsStore {
    async fn blob_size(&self, repo: &Name, digest: &Digest) -> Result<u64> {
        let layer = self.layer_link(repo, digest);
        let revision = self.revision_dir(repo, digest).join("link");
        let blob = self.blob_path(digest);
        let size = blocking(move || {
            if !(layer.exists() || revision.exists()) {
                return Ok(None);
            }
            match fs::metadata(&blob) {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if not_found(&e) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
        size.ok_or_else(|| StoreError::BlobUnknown(digest.clone()))
    }

    async fn blob_read(&self, repo: &Name, digest: &Digest, range: RangeSpec) -> Result<BlobRead> {
        let layer = self.layer_link(repo, digest);
        let revision = self.revision_dir(repo, digest).join("link");
        let blob = self.blob_path(digest);
        let opened = blocking(move || {
            if !(layer.exists() || revision.exists()) {
                return Ok(None);
            }
            let f = match fs::File::open(&blob) {
                Ok(f) => f,
                Err(e) if not_found(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            let size = f.metadata()?.len();
            let Some(r) = range.resolve(size) else {
                return Ok(Some((f, size, None)));
            };
            Ok(Some((f, size, Some(r))))
        })
        .await?;
        let Some((file, size, r)) = opened else {
            return Err(StoreError::BlobUnknown(digest.clone()));
        };
        let r = r.ok_or(StoreError::RangeInvalid { size })?;
        let len = r.end - r.start;
        Ok(BlobRead { size, body: file_stream(file, r.start, len), range: r })
    }

    async fn blob_link(&self, repo: &Name, digest: &Digest) -> Result<()> {
        let blob = self.blob_path(digest);
        let link = self.layer_link(repo, digest);
        let text = digest.to_string();
        let found = blocking(move || {
            if !blob.exists() {
                return Ok(false);
            }
            write_atomic(&link, text.as_bytes(), true)?;
            Ok(true)
        })
        .await?;
        found.then_some(()).ok_or_else(|| StoreError::BlobUnknown(digest.clone()))
    }

    async fn blob_unlink(&self, repo: &Name, digest: &Digest) -> Result<()> {
        let link = self.layer_link(repo, digest);
        let dir = link.parent().map(Path::to_path_buf).unwrap_or_default();
        let removed = blocking(move || {
            if !link.exists() {
                return Ok(false);
            }
            remove_dir(&dir)
        })
        .await?;
        removed.then_some(()).ok_or_else(|| StoreError::BlobUnknown(digest.clone()))
    }

    async fn upload_create(&self, repo: &Name, algorithm: Algorithm) -> Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self.upload_dir(repo, &id);
        blocking(move || {
            let made = (|| {
                fs::create_dir_all(&dir)?;
                fs::File::create(dir.join("data"))?;
                if algorithm != Algorithm::Sha256 {
                    // The session's algorithm lives in its hash state; none means sha256.
                    write_atomic(&dir.join(HASHSTATE), &hashstate(0, &Digester::new(algorithm)), false)?;
                }
                write_atomic(&dir.join("startedat"), rfc3339_now().as_bytes(), false)
            })();
            if made.is_err() {
                // A full disk, say: no client knows this session, so none stays behind.
                let _ = remove_dir(&dir);
            }
            made
        })
        .await?;
        Ok(id)
    }

    async fn upload_size(&self, repo: &Name, id: &str) -> Result<u64> {
        if !donjon_core::store::valid_upload_id(id) {
            return Err(StoreError::UploadUnknown);
        }
        match tokio::fs::metadata(self.upload_dir(repo, id).join("data")).await {
            Ok(m) => Ok(m.len()),
            Err(e) if not_found(&e) => Err(StoreError::UploadUnknown),
            Err(e) => Err(e.into()),
        }
    }

    async fn upload_write(&self, repo: &Name, id: &str, offset: u64, mut data: ByteStream) -> Result<u64> {
        let _guard = self.session_lock(repo, id).await?;
        let dir = self.upload_dir(repo, id);
        let (size, hasher) = self.session_state(dir.clone(), None).await?;
        if offset != size {
            return Err(StoreError::UploadOffset { size });
        }
        let mut hasher = Hashing::new(hasher);
        let path = dir.join("data");
        let (file, sync) = blocking(move || {
            let file = fs::OpenOptions::new().append(true).open(path)?;
            let sync = file.try_clone()?;
            Ok((file, sync))
        })
        .await?;
        let mut out = tokio::io::BufWriter::with_capacity(IO_BUF, tokio::fs::File::from_std(file));
        let mut early = EarlySync::new(sync, size);
        let mut written = size;
        let mut failure = None;
        while let Some(chunk) = data.next().await {
            match chunk {
                Ok(c) => {
                    // An error here or in the write: the hash state is not saved below, so the
                    // next request re-hashes what the file holds.
                    if let Err(e) = hasher.update(c.clone(), &self.inner.hash_threads).await {
                        failure = Some(StoreError::Io(e));
                        break;
                    }
                    if let Err(e) = out.write_all(&c).await {
                        failure = Some(StoreError::Io(e));
                        break;
                    }
                    written += c.len() as u64;
                    early.wrote(written);
                }
                Err(e) => {
                    failure = Some(StoreError::Body(e));
                    break;
                }
            }
        }
        // Keep what arrived, whatever happened: the client may resume from the new size.
        out.flush().await?;
        drop(out);
        let hasher = hasher.done().await;
        if let Err(e) = early.finish().await {
            // A failed fdatasync may have consumed the kernel's writeback error: the commit's
            // fsync could then succeed over lost bytes. The session cannot be trusted any more.
            blocking(move || remove_dir(&dir)).await?;
            return Err(StoreError::Io(e));
        }
        if matches!(failure, Some(StoreError::Io(_))) {
            // The file may hold part of the failed chunk, or the hash may lack it: the saved
            // state would not match; the next request re-hashes from the data.
            return Err(failure.unwrap_or(StoreError::UploadUnknown));
        }
        self.save_hashstate(dir, written, &hasher?).await?;
        match failure {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    async fn blob_adopt(&self, repo: &Name, digest: &Digest, file: &Path) -> Result<bool> {
        let (blob, link, text, file) =
            (self.blob_path(digest), self.layer_link(repo, digest), digest.to_string(), file.to_path_buf());
        Ok(blocking(move || {
            if !blob.exists() {
                fs::File::open(&file)?.sync_all()?;
                let blob_dir = blob.parent().ok_or_else(|| io::Error::other("blob path"))?;
                fs::create_dir_all(blob_dir)?;
                // A second name for the file: readers that have it open, and the caller's own
                // name, stay as they are.
                match fs::hard_link(&file, &blob) {
                    Ok(()) => sync_dir(blob_dir)?,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    // Another filesystem: the caller streams it instead.
                    Err(e) if e.kind() == io::ErrorKind::CrossesDevices => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            write_atomic(&link, text.as_bytes(), true)?;
            Ok(true)
        })
        .await?)
    }

    async fn upload_commit(&self, repo: &Name, id: &str, digest: &Digest) -> Result<u64> {
        let _guard = self.session_lock(repo, id).await?;
        let dir = self.upload_dir(repo, id);
        let (size, hasher) = self.session_state(dir.clone(), Some(digest.algorithm())).await?;
        let actual = hasher.finish();
        if &actual != digest {
            blocking(move || remove_dir(&dir)).await?;
            return Err(StoreError::DigestMismatch { expected: digest.clone(), actual });
        }
        let blob = self.blob_path(digest);
        let link = self.layer_link(repo, digest);
        let text = digest.to_string();
        blocking(move || {
            let data = dir.join("data");
            if !blob.exists() {
                fs::File::open(&data)?.sync_all()?;
                let blob_dir = blob.parent().ok_or_else(|| io::Error::other("blob path"))?;
                fs::create_dir_all(blob_dir)?;
                // Another upload of the same content may win the race: both renames put
                // identical verified bytes in place, atomically.
                fs::rename(&data, &blob)?;
                sync_dir(blob_dir)?;
            }
            write_atomic(&link, text.as_bytes(), true)?;
            remove_dir(&dir)?;
            Ok(())
        })
        .await?;
        Ok(size)
    }

    async fn upload_cancel(&self, repo: &Name, id: &str) -> Result<()> {
        let _guard = self.session_lock(repo, id).await?;
        let dir = self.upload_dir(repo, id);
        if blocking(move || remove_dir(&dir)).await? {
            Ok(())
        } else {
            Err(StoreError::UploadUnknown)
        }
    }

    async fn purge_uploads(&self, cutoff: SystemTime, dry_run: bool) -> Result<usize> {
        let root = self.inner.base.join("repositories");
        let blobs = self.inner.base.join("blobs");
        // What a crash leaves: temporary files of interrupted writes, and sessions it stopped
        // while they were being made. Old enough, no write can still be using them.
        let leftover = SystemTime::now().checked_sub(LEFTOVER_AGE).unwrap_or(UNIX_EPOCH);
        Ok(blocking(move || {
            let mut purged = 0;
            let mut temps = 0;
            // (folder, whether it is inside a repository's links or the blob store, where
            // names are tags and digests: a tag may be called `_uploads`)
            let mut stack = vec![(root, false), (blobs, true)];
            while let Some((dir, in_links)) = stack.pop() {
                let Some(entries) = read_dir(&dir)? else { continue };
                for e in entries {
                    let e = e?;
                    let name = e.file_name();
                    if !e.file_type()?.is_dir() {
                        if name.to_string_lossy().starts_with(".tmp-") && modified_before(&e.path(), leftover)
                        {
                            temps += 1;
                            if !dry_run {
                                let _ = fs::remove_file(e.path());
                            }
                        }
                        continue;
                    }
                    if in_links {
                        stack.push((e.path(), true));
                    } else if name == "_uploads" {
                        for s in fs::read_dir(e.path())? {
                            let session = s?.path();
                            // `startedat` is written once, when the session starts.
                            let started = fs::metadata(session.join("startedat")).and_then(|m| m.modified());
                            let half_made = !session.join("data").exists() || started.is_err();
                            let stale = match started {
                                Ok(t) => t < cutoff,
                                // no startedat: judge by the dir
                                Err(_) => modified_before(&session, cutoff),
                            } || (half_made && modified_before(&session, leftover));
                            if stale {
                                purged += 1;
                                if !dry_run {
                                    remove_dir(&session)?;
                                }
                            }
                        }
                    } else if ["_layers", "_manifests", "_referrers"].contains(&&*name.to_string_lossy()) {
                        // Where tag and link writes leave their temporary files.
                        stack.push((e.path(), true));
                    } else if !name.to_string_lossy().starts_with('_') {
                        stack.push((e.path(), false));
                    }
                }
            }
            if temps > 0 {
                tracing::info!(
                    files = temps,
                    dry_run,
                    "upload purging: temporary files left by interrupted writes"
                );
            }
            Ok(purged)
        })
        .await?)
    }

    async fn manifest_get(&self, repo: &Name, reference: &Reference) -> Result<Manifest> {
        let tag_link = match reference {
            Reference::Digest(_) => None,
            Reference::Tag(t) => Some(self.tag_dir(repo, t.as_str()).join("current/link")),
        };
        let by_digest = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => None,
        };
        let revisions = self.repo(repo).join("_manifests/revisions");
        let blobs = self.inner.base.join("blobs");
        // One trip to the blocking pool: tag link, revision link, bytes.
        let found = blocking(move || {
            let digest = match (by_digest, tag_link) {
                (Some(d), _) => d,
                (None, Some(link)) => match read_link(&link)? {
                    Some(d) => d,
                    None => return Ok(None),
                },
                (None, None) => return Ok(None),
            };
            let (alg, hex) = (digest.algorithm().as_str(), digest.hex());
            let rev = revisions.join(format!("{alg}/{hex}"));
            if !rev.join("link").exists() {
                return Ok(None);
            }
            let bytes = match fs::read(blobs.join(format!("{alg}/{}/{hex}/data", &hex[..2]))) {
                Ok(b) => b,
                Err(e) if not_found(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            let media_type = match manifest::media_type_of(&bytes) {
                Some(m) => m,
                None => {
                    fs::read_to_string(rev.join(MEDIATYPE)).unwrap_or_else(|_| manifest::OCI_MANIFEST.into())
                }
            };
            Ok(Some((digest, bytes, media_type)))
        })
        .await?;
        let (digest, bytes, media_type) =
            found.ok_or_else(|| StoreError::ManifestUnknown(reference.to_string()))?;
        Ok(Manifest { digest, media_type, bytes: Bytes::from(bytes) })
    }

    async fn manifest_exists(&self, repo: &Name, digest: &Digest) -> Result<bool> {
        Ok(tokio::fs::try_exists(self.revision_dir(repo, digest).join("link")).await?)
    }

    async fn manifest_put(&self, repo: &Name, m: ManifestPut) -> Result<()> {
        let blob = self.blob_path(&m.digest);
        let rev = self.revision_dir(repo, &m.digest);
        let tags: Vec<PathBuf> = m.tags.iter().map(|t| self.tag_dir(repo, t.as_str())).collect();
        let referrer = m.referrer.as_ref().map(|(subject, desc)| {
            let path = self.referrers_dir(repo, subject).join(format!(
                "{}-{}.json",
                m.digest.algorithm().as_str(),
                m.digest.hex()
            ));
            (path, desc.clone())
        });
        let text = m.digest.to_string();
        let (alg, hex) = (m.digest.algorithm().as_str(), m.digest.hex().to_string());
        blocking(move || {
            if !blob.exists() {
                write_atomic(&blob, &m.bytes, true)?;
            }
            if manifest::media_type_of(&m.bytes).as_deref() != Some(m.media_type.as_str()) {
                write_atomic(&rev.join(MEDIATYPE), m.media_type.as_bytes(), true)?;
            }
            write_atomic(&rev.join("link"), text.as_bytes(), true)?;
            if let Some((path, desc)) = referrer {
                let json = serde_json::to_vec(&desc).map_err(io::Error::other)?;
                write_atomic(&path, &json, true)?;
            }
            // Last: a tag moves only once everything it points at is in place; each tag moves
            // whole (one rename), whatever happens to the others.
            for tag in tags {
                write_atomic(&tag.join(format!("index/{alg}/{hex}/link")), text.as_bytes(), true)?;
                write_atomic(&tag.join("current/link"), text.as_bytes(), true)?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    async fn manifest_delete(&self, repo: &Name, digest: &Digest) -> Result<()> {
        let rev = self.revision_dir(repo, digest);
        let tags = self.repo(repo).join("_manifests/tags");
        let blob = self.blob_path(digest);
        let repo_dir = self.repo(repo);
        let d = digest.clone();
        let found = blocking(move || {
            if !rev.join("link").exists() {
                return Ok(false);
            }
            // Tags first: none may point at a revision that is gone.
            if let Ok(entries) = fs::read_dir(&tags) {
                for e in entries.flatten() {
                    if read_link(&e.path().join("current/link")).ok().flatten().as_ref() == Some(&d) {
                        remove_dir(&e.path())?;
                    }
                }
            }
            if let Some(subject) = fs::read(&blob).ok().and_then(|b| manifest::subject_of(&b)) {
                let entry = repo_dir.join(format!(
                    "_referrers/{}/{}/{}-{}.json",
                    subject.algorithm().as_str(),
                    subject.hex(),
                    d.algorithm().as_str(),
                    d.hex()
                ));
                match fs::remove_file(entry) {
                    Err(e) if !not_found(&e) => return Err(e),
                    _ => {}
                }
            }
            remove_dir(&rev)
        })
        .await?;
        found.then_some(()).ok_or_else(|| StoreError::ManifestUnknown(digest.to_string()))
    }

    async fn tag_delete(&self, repo: &Name, tag: &Tag) -> Result<()> {
        let dir = self.tag_dir(repo, tag.as_str());
        if blocking(move || remove_dir(&dir)).await? {
            Ok(())
        } else {
            Err(StoreError::ManifestUnknown(tag.to_string()))
        }
    }

    async fn tags(&self, repo: &Name) -> Result<Vec<String>> {
        let repo_dir = self.repo(repo);
        let found = blocking(move || {
            let Some(entries) = read_dir(&repo_dir.join("_manifests/tags"))? else {
                return Ok(repo_dir.join("_manifests").is_dir().then(Vec::new));
            };
            let mut tags = vec![];
            for e in entries {
                let e = e?;
                let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if name.parse::<Tag>().is_ok() && e.path().join("current/link").exists() {
                    tags.push(name);
                }
            }
            tags.sort();
            Ok(Some(tags))
        })
        .await?;
        found.ok_or_else(|| StoreError::NameUnknown(repo.clone()))
    }

    async fn tag_times(&self, repo: &Name) -> Result<Vec<(String, Option<std::time::SystemTime>)>> {
        let tags = self.tags(repo).await?;
        let dir = self.repo(repo).join("_manifests/tags");
        blocking(move || {
            // A tag's `current/link` is replaced (renamed over) on every push of the tag.
            Ok(tags
                .into_iter()
                .map(|t| {
                    let m = std::fs::metadata(dir.join(&t).join("current/link")).and_then(|m| m.modified());
                    (t, m.ok())
                })
                .collect())
        })
        .await
        .map_err(Into::into)
    }

    async fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        self.walk(last, n, false).await
    }

    async fn repository_folders(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        self.walk(last, n, true).await
    }

    async fn referrers(&self, repo: &Name, subject: &Digest) -> Result<Vec<Descriptor>> {
        let dir = self.referrers_dir(repo, subject);
        Ok(blocking(move || {
            let Some(entries) = read_dir(&dir)? else { return Ok(vec![]) };
            let mut out = vec![];
            for e in entries {
                let path = e?.path();
                if path.extension().and_then(|x| x.to_str()) != Some("json") {
                    continue;
                }
                match fs::read(&path) {
                    Ok(b) => match serde_json::from_slice::<Descriptor>(&b) {
                        Ok(d) => out.push(d),
                        Err(err) => {
                            tracing::warn!(path = %path.display(), %err, "skipping unreadable referrer entry")
                        }
                    },
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            out.sort_by(|a, b| a.digest.cmp(&b.digest));
            Ok(out)
        })
        .await?)
    }

    async fn blob_list(&self) -> Result<Vec<Stored>> {
        let blobs = self.inner.base.join("blobs");
        Ok(blocking(move || {
            let mut out = vec![];
            for (alg, alg_dir) in subdirs(&blobs)? {
                for (_, fan) in subdirs(&alg_dir)? {
                    for (hex, dir) in subdirs(&fan)? {
                        let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>() else { continue };
                        match fs::metadata(dir.join("data")) {
                            Ok(m) => out.push(Stored { digest, size: m.len(), modified: m.modified()? }),
                            Err(e) if not_found(&e) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            out.sort_by(|a, b| a.digest.cmp(&b.digest));
            Ok(out)
        })
        .await?)
    }

    async fn revision_list(&self, repo: &Name) -> Result<Vec<Stored>> {
        let dir = self.repo(repo);
        links_under(dir, "_manifests/revisions").await?.ok_or_else(|| StoreError::NameUnknown(repo.clone()))
    }

    async fn layer_list(&self, repo: &Name) -> Result<Vec<Stored>> {
        let dir = self.repo(repo);
        links_under(dir, "_layers").await?.ok_or_else(|| StoreError::NameUnknown(repo.clone()))
    }

    async fn blob_quarantine(&self, digest: &Digest) -> Result<bool> {
        let blob = self.blob_path(digest);
        let held = self.quarantined(digest);
        Ok(blocking(move || {
            if !blob.exists() {
                return Ok(false);
            }
            let held_dir = held.parent().ok_or_else(|| io::Error::other("quarantine path"))?;
            fs::create_dir_all(held_dir)?;
            match fs::rename(&blob, &held) {
                Ok(()) => {}
                Err(e) if not_found(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
            sync_dir(held_dir)?;
            // The blob's own folder stays, empty: removing it could pull it from under an
            // upload of the same blob between its `create_dir_all` and its rename.
            if let Some(dir) = blob.parent() {
                sync_dir(dir)?;
            }
            Ok(true)
        })
        .await?)
    }

    async fn blob_release(&self, digest: &Digest, restore: bool) -> Result<()> {
        let blob = self.blob_path(digest);
        let held = self.quarantined(digest);
        Ok(blocking(move || {
            if !held.exists() {
                return Ok(());
            }
            if restore && !blob.exists() {
                let dir = blob.parent().ok_or_else(|| io::Error::other("blob path"))?;
                fs::create_dir_all(dir)?;
                fs::rename(&held, &blob)?;
                sync_dir(dir)?;
            } else {
                match fs::remove_file(&held) {
                    Err(e) if !not_found(&e) => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        })
        .await?)
    }

    async fn quarantine_list(&self) -> Result<Vec<Digest>> {
        let dir = self.inner.root.join(QUARANTINE);
        Ok(blocking(move || {
            let mut out = vec![];
            for (alg, alg_dir) in subdirs(&dir)? {
                let Some(entries) = read_dir(&alg_dir)? else { continue };
                for e in entries {
                    let e = e?;
                    let Some(hex) = e.file_name().to_str().map(str::to_owned) else { continue };
                    if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() {
                        out.push(d);
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await?)
    }

    async fn secret(&self, name: &str, init: Bytes) -> Result<Bytes> {
        if !donjon_core::store::valid_secret_name(name) {
            return Err(donjon_core::store::invalid_secret_name(name));
        }
        let path = self.inner.root.join(name);
        Ok(blocking(move || secret_file(&path, &init)).await?)
    }
}

/// Garbage collection's quarantine, under the store's root.
const QUARANTINE: &str = "gc/quarantine";

/// The folders in `dir` with names, none when `dir` is absent.
fn subdirs(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let Some(entries) = read_dir(dir)? else { return Ok(vec![]) };
    let mut out = vec![];
    for e in entries {
        let e = e?;
        if let (Some(name), true) = (e.file_name().to_str(), e.file_type()?.is_dir()) {
            out.push((name.to_owned(), e.path()));
        }
    }
    Ok(out)
}

/// Whether a repository's `_manifests` folder holds a manifest: a revision link or a tag (the
/// first found ends the look).
fn holds_manifests(manifests: &Path) -> io::Result<bool> {
    for (_, alg) in subdirs(&manifests.join("revisions"))? {
        for (_, revision) in subdirs(&alg)? {
            if revision.join("link").exists() {
                return Ok(true);
            }
        }
    }
    for (_, tag) in subdirs(&manifests.join("tags"))? {
        if tag.join("current/link").exists() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The `<alg>/<hex>/link` files under `<repo>/<under>`, with their times; `None` when the
/// repository is absent.
async fn links_under(repo: PathBuf, under: &'static str) -> io::Result<Option<Vec<Stored>>> {
    blocking(move || {
        if !repo.is_dir() {
            return Ok(None);
        }
        let mut out = vec![];
        for (alg, alg_dir) in subdirs(&repo.join(under))? {
            for (hex, dir) in subdirs(&alg_dir)? {
                let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>() else { continue };
                match fs::metadata(dir.join("link")) {
                    Ok(m) => out.push(Stored { digest, size: 0, modified: m.modified()? }),
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(Some(out))
    })
    .await
}

/// The file at `path`, or `init` written there first (mode 0600, its folders 0700): written
/// aside and hard-linked into place, so a second process starting at the same moment finds
/// the first one's bytes, never half of them.
fn secret_file(path: &Path, init: &[u8]) -> io::Result<Bytes> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    match fs::read(path) {
        Ok(b) => return Ok(b.into()),
        Err(e) if !not_found(&e) => return Err(e),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(init)?;
        f.sync_all()?;
        fs::hard_link(&tmp, path)
    };
    let made = write();
    let _ = fs::remove_file(&tmp);
    match made {
        Ok(()) => Ok(Bytes::copy_from_slice(init)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fs::read(path).map(Bytes::from),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    donjon_core::store_contract_tests!(async {
        let dir = tempfile::tempdir().unwrap().keep();
        std::sync::Arc::new(super::FsStore::open(dir).await.unwrap())
    });

    fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_sha512_session_keeps_sha512_state_between_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let repo = name("five12");
        let id = store.upload_create(&repo, Algorithm::Sha512).await.unwrap();
        let state =
            dir.path().join(format!("docker/registry/v2/repositories/five12/_uploads/{id}/{HASHSTATE}"));
        for (off, chunk) in [(0, &b"abc"[..]), (3, b"def")] {
            let data = donjon_core::store::bytes_stream(Bytes::from_static(chunk));
            store.upload_write(&repo, &id, off, data).await.unwrap();
            let saved = std::fs::read(&state).unwrap();
            assert_eq!(saved[8], algorithm_byte(Algorithm::Sha512), "hashed as sha512 from the start");
            assert_eq!(u64::from_le_bytes(saved[..8].try_into().unwrap()), off + 3);
        }
        let d = Digest::of(Algorithm::Sha512, b"abcdef");
        store.upload_commit(&repo, &id, &d).await.unwrap();
    }

    fn age(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::open(path).unwrap().set_modified(old).unwrap();
    }

    #[tokio::test]
    async fn the_purger_removes_what_a_crash_left_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let repo = name("crash/left");
        // A tag that looks like the uploads folder, and a live session.
        let m =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let put = ManifestPut {
            digest: Digest::sha256_of(m),
            media_type: manifest::OCI_INDEX.into(),
            bytes: Bytes::from_static(m),
            tags: vec!["_uploads".parse().unwrap()],
            referrer: None,
        };
        store.manifest_put(&repo, put).await.unwrap();
        let live = store.upload_create(&repo, Algorithm::Sha256).await.unwrap();
        let base = dir.path().join("docker/registry/v2");
        let r = base.join("repositories/crash/left");
        // Left by a crash: temporary files beside a blob and a tag link, and a session that
        // holds only its start time and hash state.
        let blob_tmp = base.join(format!("blobs/sha256/{}/.tmp-dead", &put_hex(m)[..2]));
        let tag_tmp = r.join("_manifests/tags/_uploads/current/.tmp-dead");
        let half = r.join("_uploads/half-made");
        fs::create_dir_all(&half).unwrap();
        fs::write(half.join("startedat"), "2026-01-01T00:00:00Z").unwrap();
        fs::write(half.join(HASHSTATE), "x").unwrap();
        for f in [&blob_tmp, &tag_tmp] {
            fs::write(f, "partial").unwrap();
            age(f);
        }
        age(&half);
        // A fresh temporary file may belong to a write in progress.
        let fresh_tmp = r.join("_layers/.tmp-busy");
        fs::create_dir_all(fresh_tmp.parent().unwrap()).unwrap();
        fs::write(&fresh_tmp, "busy").unwrap();

        assert_eq!(
            store.purge_uploads(SystemTime::now() - Duration::from_secs(86400), true).await.unwrap(),
            1
        );
        assert!(blob_tmp.exists() && half.exists(), "a dry run removes nothing");
        assert_eq!(
            store.purge_uploads(SystemTime::now() - Duration::from_secs(86400), false).await.unwrap(),
            1
        );
        assert!(!blob_tmp.exists() && !tag_tmp.exists() && !half.exists());
        assert!(fresh_tmp.exists());
        let tag = Reference::Tag("_uploads".parse().unwrap());
        assert!(store.manifest_get(&repo, &tag).await.is_ok(), "the tag named _uploads is intact");
        assert_eq!(store.upload_size(&repo, &live).await.unwrap(), 0, "the live session is intact");
    }

    fn put_hex(m: &[u8]) -> String {
        Digest::sha256_of(m).hex().to_string()
    }

    #[tokio::test]
    async fn layout_is_distributions() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let repo = name("library/x");
        let id = store.upload_create(&repo, Algorithm::Sha256).await.unwrap();
        let base = dir.path().join("docker/registry/v2");
        assert!(base.join(format!("repositories/library/x/_uploads/{id}/startedat")).exists());
        store
            .upload_write(&repo, &id, 0, donjon_core::store::bytes_stream(Bytes::from_static(b"abc")))
            .await
            .unwrap();
        let d = Digest::sha256_of(b"abc");
        store.upload_commit(&repo, &id, &d).await.unwrap();
        let blob = base.join(format!("blobs/sha256/{}/{}/data", &d.hex()[..2], d.hex()));
        assert_eq!(fs::read(blob).unwrap(), b"abc");
        let link = base.join(format!("repositories/library/x/_layers/sha256/{}/link", d.hex()));
        assert_eq!(fs::read_to_string(link).unwrap(), d.to_string());
        assert!(!base.join(format!("repositories/library/x/_uploads/{id}")).exists());
    }

    #[tokio::test]
    async fn session_survives_a_new_process() {
        let dir = tempfile::tempdir().unwrap();
        let repo = name("resume");
        let id = {
            let a = FsStore::open(dir.path()).await.unwrap();
            let id = a.upload_create(&repo, Algorithm::Sha256).await.unwrap();
            a.upload_write(&repo, &id, 0, donjon_core::store::bytes_stream(Bytes::from_static(b"hello ")))
                .await
                .unwrap();
            id
        };
        let b = FsStore::open(dir.path()).await.unwrap();
        assert_eq!(b.upload_size(&repo, &id).await.unwrap(), 6);
        b.upload_write(&repo, &id, 6, donjon_core::store::bytes_stream(Bytes::from_static(b"world")))
            .await
            .unwrap();
        b.upload_commit(&repo, &id, &Digest::sha256_of(b"hello world")).await.unwrap();
    }

    #[tokio::test]
    async fn stale_hash_state_is_rehashed() {
        // A crash after the data was appended but before the state was saved.
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let repo = name("crash");
        let id = store.upload_create(&repo, Algorithm::Sha256).await.unwrap();
        store
            .upload_write(&repo, &id, 0, donjon_core::store::bytes_stream(Bytes::from_static(b"abc")))
            .await
            .unwrap();
        let data = store.upload_dir(&repo, &id).join("data");
        let mut f = fs::OpenOptions::new().append(true).open(&data).unwrap();
        f.write_all(b"def").unwrap();
        store.upload_commit(&repo, &id, &Digest::sha256_of(b"abcdef")).await.unwrap();
    }

    #[tokio::test]
    async fn serves_a_tree_written_by_distribution() {
        // The files exactly as Distribution lays them out, written by hand.
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("docker/registry/v2");
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}"#;
        let md = Digest::sha256_of(manifest);
        let cd = Digest::sha256_of(b"{}");
        for (d, data) in [(&md, &manifest[..]), (&cd, &b"{}"[..])] {
            let p = base.join(format!("blobs/sha256/{}/{}/data", &d.hex()[..2], d.hex()));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        }
        let r = base.join("repositories/old/app");
        for (p, d) in [
            (format!("_layers/sha256/{}/link", cd.hex()), &cd),
            (format!("_manifests/revisions/sha256/{}/link", md.hex()), &md),
            ("_manifests/tags/v1/current/link".to_string(), &md),
            (format!("_manifests/tags/v1/index/sha256/{}/link", md.hex()), &md),
        ] {
            fs::create_dir_all(r.join(&p).parent().unwrap()).unwrap();
            fs::write(r.join(&p), d.to_string()).unwrap();
        }
        let store = FsStore::open(dir.path()).await.unwrap();
        let repo = name("old/app");
        let m = store.manifest_get(&repo, &"v1".parse().unwrap()).await.unwrap();
        assert_eq!(m.digest, md);
        assert_eq!(m.media_type, manifest::DOCKER_MANIFEST);
        assert_eq!(store.blob_size(&repo, &cd).await.unwrap(), 2);
        assert_eq!(store.tags(&repo).await.unwrap(), ["v1"]);
        assert_eq!(store.catalog(None, 10).await.unwrap(), ["old/app"]);
    }

    #[tokio::test]
    async fn unwritable_root_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = FsStore::open(file.join("sub")).await.unwrap_err();
        assert!(err.to_string().contains("not writable"), "{err}");
    }

    #[test]
    fn permission_denied_names_the_user_the_owner_and_the_fix() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("data");
        fs::create_dir(&top).unwrap();
        fs::set_permissions(&top, fs::Permissions::from_mode(0o750)).unwrap();
        let uid = rustix::process::getuid().as_raw();
        let msg = denied(&top, &top.join("docker/registry/v2"));
        assert!(msg.contains(&format!("runs as uid {uid} ")), "{msg}");
        assert!(msg.contains(&format!("{} is owned by uid {uid} ", top.display())), "{msg}");
        assert!(msg.contains("mode 750"), "{msg}");
        assert!(msg.contains(&format!("chown -R {uid}:")), "{msg}");
        // A data directory not made yet: its parent is not handed over whole.
        let msg = denied(&top.join("registry"), &top.join("registry/docker/registry/v2"));
        assert!(msg.contains(&format!("mkdir -p {0}/registry && chown {uid}:", top.display())), "{msg}");
        assert!(!msg.contains("chown -R"), "{msg}");
    }

    #[test]
    fn startedat_is_rfc3339() {
        let s = rfc3339_now();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.ends_with('Z') && &s[4..5] == "-" && &s[10..11] == "T", "{s}");
    }
}
