//! The storage contract every backend (memory, filesystem, object storage) implements.
//!
//! The rules: blobs are content-addressed and shared, but a repository reads only
//! the blobs it links; a blob becomes visible only after its digest is verified; upload sessions
//! live in the store, not in process memory, with their hash state; tag moves are atomic.
//!
//! ```
//! # #[cfg(feature = "test-util")]
//! # tokio_test_block_on(async {
//! use donjon_core::{memory::MemoryStore, Digest, Name, Store};
//! use std::sync::Arc;
//!
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
//! let repo: Name = "demo".parse().unwrap();
//! let id = store.upload_create(&repo, donjon_core::Algorithm::Sha256).await.unwrap();
//! let body = donjon_core::store::bytes_stream(bytes::Bytes::from_static(b"hi"));
//! store.upload_write(&repo, &id, 0, body).await.unwrap();
//! let digest = Digest::sha256_of(b"hi");
//! store.upload_commit(&repo, &id, &digest).await.unwrap();
//! assert_eq!(store.blob_size(&repo, &digest).await.unwrap(), 2);
//! # });
//! # #[cfg(feature = "test-util")]
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::body::BoxError;
pub use crate::body::ByteStream;
use crate::digest::{Algorithm, Digest};
use crate::name::{Name, Reference, Tag};

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The blob does not exist, or the repository does not link it.
    #[error("blob unknown: {0}")]
    BlobUnknown(Digest),
    /// No manifest with that reference in the repository.
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    /// No such repository.
    #[error("repository unknown: {0}")]
    NameUnknown(Name),
    /// No such upload session (never started, finished or cancelled).
    #[error("upload session unknown")]
    UploadUnknown,
    /// The committed content does not hash to the digest the client gave.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What the client claimed.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A read range outside the blob.
    #[error("range not satisfiable (size {size})")]
    RangeInvalid {
        /// The blob's size.
        size: u64,
    },
    /// A chunk that does not start where the upload ends.
    #[error("chunk does not start at the upload's end ({size})")]
    UploadOffset {
        /// The upload's current size.
        size: u64,
    },
    /// The client's body failed mid-stream; what arrived before is kept.
    #[error("request body: {0}")]
    Body(BoxError),
    /// The backend failed.
    #[error("storage i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A stored entry could not be understood.
    #[error("corrupt entry: {0}")]
    Corrupt(String),
}

/// Result alias.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A requested byte range of a blob, before the blob's size is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// The whole blob.
    Full,
    /// `bytes=start-` or `bytes=start-end` (inclusive end).
    From {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: Option<u64>,
    },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl RangeSpec {
    /// Parses a `Range` header value; `None` for anything but one `bytes=` range (which the
    /// caller then serves as a whole, as RFC 9110 allows).
    pub fn parse(value: &str) -> Option<Self> {
        let spec = value.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return Some(Self::Suffix(b.parse().ok()?));
        }
        let start = a.parse().ok()?;
        let end = if b.is_empty() { None } else { Some(b.parse().ok()?) };
        if matches!(end, Some(e) if e < start) {
            return None;
        }
        Some(Self::From { start, end })
    }

    /// The byte range within a blob of `size` bytes; `None` when it cannot be satisfied.
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            Self::Full => Some(0..size),
            Self::From { start, end } => {
                if start >= size {
                    return None;
                }
                let end = end.map_or(size, |e| e.saturating_add(1).min(size));
                Some(start..end)
            }
            // RFC 9110 §14.1.3: a suffix range of an empty representation is unsatisfiable.
            Self::Suffix(0) => None,
            Self::Suffix(_) if size == 0 => None,
            Self::Suffix(n) => Some(size.saturating_sub(n)..size),
        }
    }
}

/// An open blob read.
pub struct BlobRead {
    /// The blob's whole size.
    pub size: u64,
    /// The bytes being sent.
    pub range: Range<u64>,
    /// The content of `range`.
    pub body: ByteStream,
}

impl fmt::Debug for BlobRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobRead").field("size", &self.size).field("range", &self.range).finish()
    }
}

/// A stored manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its bytes, exactly as pushed.
    pub bytes: Bytes,
}

/// An OCI content descriptor, as listed by the referrers API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// The artifact type, for artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A manifest to store: already validated by the caller.
#[derive(Clone, Debug)]
pub struct ManifestPut {
    /// Its digest (of `bytes`).
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// The bytes.
    pub bytes: Bytes,
    /// The tags to point at it: the tag it was pushed by, and any `?tag=` parameters.
    pub tags: Vec<Tag>,
    /// The manifest it refers to (`subject`), and its own descriptor for the referrers index.
    pub referrer: Option<(Digest, Descriptor)>,
}

/// A stored object as garbage collection sees it: what it is, how large (0 for a link), and
/// when it was last written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The blob, manifest or linked digest.
    pub digest: Digest,
    /// Bytes of a blob; 0 for a link.
    pub size: u64,
    /// When it was last written (a re-push or a mount writes a link again).
    pub modified: std::time::SystemTime,
}

/// The storage contract. Implementations: [`crate::memory::MemoryStore`] (tests),
/// `donjon_store::FsStore`, and the object-storage backend.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The size of a blob the repository links.
    async fn blob_size(&self, repo: &Name, digest: &Digest) -> Result<u64>;

    /// Opens a blob the repository links, for the given range.
    async fn blob_read(&self, repo: &Name, digest: &Digest, range: RangeSpec) -> Result<BlobRead>;

    /// Where a client may fetch the blob directly (a presigned object-storage URL), when the
    /// backend offers it and it is enabled; `None` streams the blob through the registry. Only
    /// called for blobs the repository links.
    async fn blob_redirect(&self, _repo: &Name, _digest: &Digest) -> Result<Option<String>> {
        Ok(None)
    }

    /// Links an existing blob into `repo` (a cross-repository mount). `BlobUnknown` when the
    /// blob's content is not stored.
    async fn blob_link(&self, repo: &Name, digest: &Digest) -> Result<()>;

    /// Removes the repository's link to a blob. `BlobUnknown` when it was not linked.
    async fn blob_unlink(&self, repo: &Name, digest: &Digest) -> Result<()>;

    /// Starts an upload session that hashes with `algorithm` as its bytes arrive (the spec's
    /// `digest-algorithm`); returns its id. A commit with a digest of another algorithm still
    /// works, at the cost of hashing the whole content again.
    async fn upload_create(&self, repo: &Name, algorithm: Algorithm) -> Result<String>;

    /// The number of bytes a session holds.
    async fn upload_size(&self, repo: &Name, id: &str) -> Result<u64>;

    /// Appends `data` at `offset`, which must be the session's current size (`UploadOffset`
    /// otherwise). Hashes while writing. When `data` fails mid-way, what arrived is kept and
    /// the session stays resumable. Returns the new size.
    async fn upload_write(&self, repo: &Name, id: &str, offset: u64, data: ByteStream) -> Result<u64>;

    /// Verifies the session's content against `digest`, makes the blob visible, links it into
    /// `repo` and ends the session. On a mismatch nothing becomes visible and the session ends.
    async fn upload_commit(&self, repo: &Name, id: &str, digest: &Digest) -> Result<u64>;

    /// Ends a session and drops its bytes.
    async fn upload_cancel(&self, repo: &Name, id: &str) -> Result<()>;

    /// Stores a whole blob whose digest is known before its bytes (a monolithic upload), and
    /// links it into `repo`. The bytes are verified like any upload's. The default goes through
    /// an upload session; backends that can write straight to the final place override it.
    async fn blob_put(&self, repo: &Name, digest: &Digest, data: ByteStream) -> Result<u64> {
        let id = self.upload_create(repo, digest.algorithm()).await?;
        let result = match self.upload_write(repo, &id, 0, data).await {
            Ok(_) => self.upload_commit(repo, &id, digest).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = self.upload_cancel(repo, &id).await;
        }
        result
    }

    /// Puts `file`, whose bytes the caller has already hashed to `digest` as they arrived (a
    /// pull-through fill), in place as that blob and links it into `repo`, without reading it
    /// again (the filesystem store gives it a second name; the caller's stays its own).
    /// `Ok(false)`: this backend cannot (the default), and the caller `blob_put`s it.
    async fn blob_adopt(&self, _repo: &Name, _digest: &Digest, _file: &std::path::Path) -> Result<bool> {
        Ok(false)
    }

    /// The smallest chunk, except the last, that the backend stores without buffering it
    /// (the spec's `OCI-Chunk-Min-Length`, sent when a session starts); `None` for any size.
    fn chunk_min_length(&self) -> Option<u64> {
        None
    }

    /// Ends the upload sessions started before `cutoff` (Distribution's upload purging), and
    /// returns how many there were. With `dry_run`, only counts them.
    async fn purge_uploads(&self, cutoff: std::time::SystemTime, dry_run: bool) -> Result<usize>;

    /// Reads a manifest by tag or digest.
    async fn manifest_get(&self, repo: &Name, reference: &Reference) -> Result<Manifest>;

    /// Whether the repository holds the manifest with this digest.
    async fn manifest_exists(&self, repo: &Name, digest: &Digest) -> Result<bool>;

    /// Stores a manifest, its revision link, its tag and its referrers entry.
    async fn manifest_put(&self, repo: &Name, manifest: ManifestPut) -> Result<()>;

    /// Deletes a manifest revision, every tag pointing at it, and its referrers entry.
    async fn manifest_delete(&self, repo: &Name, digest: &Digest) -> Result<()>;

    /// Deletes one tag, leaving the manifest.
    async fn tag_delete(&self, repo: &Name, tag: &Tag) -> Result<()>;

    /// All tags of a repository, in lexical order. `NameUnknown` when the repository is absent.
    async fn tags(&self, repo: &Name) -> Result<Vec<String>>;

    /// All tags of a repository with the time each was last pushed (moved), in lexical order;
    /// `None` where the backend does not keep it (the default: none). For the web page's
    /// "sort by push time".
    async fn tag_times(&self, repo: &Name) -> Result<Vec<(String, Option<std::time::SystemTime>)>> {
        Ok(self.tags(repo).await?.into_iter().map(|t| (t, None)).collect())
    }

    /// Up to `n` repository names after `last`, in lexical order: the repositories that hold a
    /// manifest (one whose manifests were all deleted is not listed).
    async fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>>;

    /// Up to `n` repository folders after `last`, in lexical order: the catalog's, and those
    /// that hold only links (manifests all deleted, or blobs pushed and no manifest yet). What
    /// garbage collection and cache eviction walk, so that such links go with their blobs.
    /// (No default: a wrapper that forgot it would hide them from both.)
    async fn repository_folders(&self, last: Option<&str>, n: usize) -> Result<Vec<String>>;

    /// The descriptors of the manifests whose `subject` is `subject`.
    async fn referrers(&self, repo: &Name, subject: &Digest) -> Result<Vec<Descriptor>>;

    /// Every blob of the blob store (manifests are blobs too), with its size and the time its
    /// bytes were written; for garbage collection. Blobs in quarantine are not listed.
    async fn blob_list(&self) -> Result<Vec<Stored>>;

    /// The manifest revisions of `repo`, with the time each revision link was written.
    /// `NameUnknown` when the repository is absent.
    async fn revision_list(&self, repo: &Name) -> Result<Vec<Stored>>;

    /// The blobs `repo` links (its `_layers`), with the time each link was written.
    /// `NameUnknown` when the repository is absent.
    async fn layer_list(&self, repo: &Name) -> Result<Vec<Stored>>;

    /// Moves a blob out of the blob store into garbage collection's quarantine, outside
    /// Distribution's tree: no repository can read it any more, and no upload or mount finds
    /// it. `false` when it was not in the blob store.
    async fn blob_quarantine(&self, digest: &Digest) -> Result<bool>;

    /// Ends a blob's quarantine: `restore` puts it back in the blob store (where a new copy of
    /// it was written meanwhile, that copy stays); otherwise its bytes are deleted for good.
    /// Nothing in quarantine under that digest is not an error.
    async fn blob_release(&self, digest: &Digest, restore: bool) -> Result<()>;

    /// The blobs in quarantine (left by a collection that did not finish, or running now).
    async fn quarantine_list(&self) -> Result<Vec<Digest>>;

    /// A small object of the registry's own beside the content, such as the auth layer's
    /// token signing key: what is kept under `name` (a relative path, see
    /// [`valid_secret_name`]), or, when nothing is, `init`, stored so that every process on
    /// this storage gets the same bytes (the first writer wins). It is private to the registry
    /// (mode 0600 in 0700 folders on a filesystem) and outside Distribution's tree, so neither
    /// a pull nor Distribution's tools ever see it.
    async fn secret(&self, name: &str, init: Bytes) -> Result<Bytes>;
}

/// Whether the registry is read-only (Distribution's `storage.maintenance.readonly`); clones
/// share one switch. Writes are refused while it is on, and background work that writes
/// (garbage collection, cache eviction) waits.
#[derive(Clone, Debug, Default)]
pub struct ReadOnlySwitch(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl ReadOnlySwitch {
    /// A switch, on or off.
    pub fn new(on: bool) -> Self {
        Self(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(on)))
    }

    /// Turns it on or off; returns what it was.
    pub fn set(&self, on: bool) -> bool {
        self.0.swap(on, std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether it is on.
    pub fn is_on(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One page of the catalog, walked in lexical order over a tree of folders (Distribution's
/// `repositories/`): `list(prefix)` names the subfolders of `repositories/<prefix>` (`""` for
/// the top). A folder holding `_manifests` is a repository, and with `folders` one holding
/// `_layers` too. Only what can hold names after `last` is listed, and the walk stops at `n`,
/// so a page costs the folders on its way, not the whole tree: the backends'
/// [`Store::catalog`] and [`Store::repository_folders`].
pub async fn catalog_walk<F, Fut>(list: F, last: Option<&str>, n: usize, folders: bool) -> Result<Vec<String>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>>>,
{
    // Each folder gives two entries: the repository it may be (sorted as `c`) and what is
    // under it (sorted as `c/`), so that `a`, `a-b`, `a.b`, `a/x`, `a0` come in that order.
    fn entries(prefix: &str, children: &[String]) -> Vec<(String, bool)> {
        let mut v = vec![];
        for c in children.iter().filter(|c| !c.starts_with('_') && !c.starts_with('.') && !c.is_empty()) {
            let full = if prefix.is_empty() { c.clone() } else { format!("{prefix}/{c}") };
            v.push((full.clone(), false));
            v.push((full, true));
        }
        let key = |(full, tree): &(String, bool)| if *tree { format!("{full}/") } else { full.clone() };
        // descending, so that pop() takes the smallest
        v.sort_by_key(|e| std::cmp::Reverse(key(e)));
        v
    }
    let mut out = vec![];
    if n == 0 {
        return Ok(out);
    }
    let mut listed: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    let mut stack = vec![entries("", &list(String::new()).await?)];
    while let Some(level) = stack.last_mut() {
        let Some((full, tree)) = level.pop() else {
            stack.pop();
            continue;
        };
        if tree {
            let p = format!("{full}/");
            if last.is_some_and(|l| l > p.as_str() && !l.starts_with(&p)) {
                continue; // everything under it comes before `last`
            }
            let children = match listed.remove(&full) {
                Some(c) => c,
                None => list(full.clone()).await?,
            };
            stack.push(entries(&full, &children));
        } else if last.is_none_or(|l| full.as_str() > l) {
            let children = list(full.clone()).await?;
            let repo = children.iter().any(|c| c == "_manifests" || (folders && c == "_layers"));
            listed.insert(full.clone(), children);
            if repo {
                out.push(full);
                if out.len() == n {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// Whether `name` can name a [`Store::secret`]: `/`-separated components of
/// `[A-Za-z0-9._-]`, none empty, `.` or `..`, nor `docker` first (Distribution's tree).
pub fn valid_secret_name(name: &str) -> bool {
    name.len() <= 256
        && !name.starts_with("docker/")
        && name.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// The error for a name [`valid_secret_name`] refuses.
pub fn invalid_secret_name(name: &str) -> StoreError {
    StoreError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("not a secret's name: {name:?}"),
    ))
}

/// Whether `id` can be an upload session id: what every backend accepts as a file or key name,
/// and what the path parser lets through (`[A-Za-z0-9_-]{1,128}`).
pub fn valid_upload_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A one-chunk [`ByteStream`].
pub fn bytes_stream(bytes: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::once(async move { Ok(bytes) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_catalog_walks_in_lexical_order_and_only_what_a_page_needs() {
        use std::collections::BTreeSet;
        let repos = ["a", "a-b", "a.b", "a/x", "a/x/y", "a/x-z", "a0", "b/c", "b/c/d", "z"];
        // the folders, as a filesystem or bucket holds them
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        for r in repos {
            let mut p = String::new();
            for c in r.split('/') {
                p = if p.is_empty() { c.to_string() } else { format!("{p}/{c}") };
                dirs.insert(p.clone());
            }
            dirs.insert(format!("{r}/_manifests"));
            dirs.insert(format!("{r}/_layers"));
        }
        dirs.insert("b/_uploads".into()); // `b` holds uploads only: not a repository
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let list = |prefix: String| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let children: Vec<String> = dirs
                .iter()
                .filter_map(|d| {
                    let rest = if prefix.is_empty() {
                        Some(d.as_str())
                    } else {
                        d.strip_prefix(&format!("{prefix}/"))
                    }?;
                    (!rest.contains('/')).then(|| rest.to_string())
                })
                .collect();
            async move { Ok(children) }
        };
        let mut want: Vec<&str> = repos.to_vec();
        want.sort();
        assert_eq!(catalog_walk(&list, None, 100, false).await.unwrap(), want);
        // paging two at a time gives the same, in order
        let mut paged = vec![];
        let mut last: Option<String> = None;
        loop {
            let page = catalog_walk(&list, last.as_deref(), 2, false).await.unwrap();
            if page.is_empty() {
                break;
            }
            last = page.last().cloned();
            paged.extend(page);
        }
        assert_eq!(paged, want);
        // a page after `a0` lists no folder under `a`
        calls.store(0, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(catalog_walk(&list, Some("a0"), 1, false).await.unwrap(), ["b/c"]);
        assert!(
            calls.load(std::sync::atomic::Ordering::Relaxed) <= 4,
            "{} listings",
            calls.load(std::sync::atomic::Ordering::Relaxed)
        );
    }

    #[test]
    fn range_parsing() {
        assert_eq!(RangeSpec::parse("bytes=0-9"), Some(RangeSpec::From { start: 0, end: Some(9) }));
        assert_eq!(RangeSpec::parse("bytes=5-"), Some(RangeSpec::From { start: 5, end: None }));
        assert_eq!(RangeSpec::parse("bytes=-3"), Some(RangeSpec::Suffix(3)));
        assert_eq!(RangeSpec::parse("bytes=9-1"), None);
        assert_eq!(RangeSpec::parse("bytes=0-1,3-4"), None);
        assert_eq!(RangeSpec::parse("items=0-1"), None);
    }

    #[test]
    fn range_resolution() {
        let r = |s: &str| RangeSpec::parse(s).unwrap();
        assert_eq!(r("bytes=0-9").resolve(5), Some(0..5));
        assert_eq!(r("bytes=2-3").resolve(5), Some(2..4));
        assert_eq!(r("bytes=5-").resolve(5), None);
        assert_eq!(r("bytes=-2").resolve(5), Some(3..5));
        assert_eq!(r("bytes=-9").resolve(5), Some(0..5));
        assert_eq!(r("bytes=-0").resolve(5), None);
        assert_eq!(RangeSpec::Full.resolve(0), Some(0..0));
        assert_eq!(r("bytes=-5").resolve(0), None, "no byte to describe in an empty blob");
        assert_eq!(r("bytes=0-").resolve(0), None);
        assert_eq!(r(&format!("bytes=0-{}", u64::MAX)).resolve(5), Some(0..5));
        assert_eq!(r(&format!("bytes=-{}", u64::MAX)).resolve(5), Some(0..5));
        assert_eq!(RangeSpec::parse("bytes=0-18446744073709551616"), None, "past u64: not a range");
    }
}
