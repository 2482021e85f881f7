//! An in-memory [`Store`], for tests and examples. It keeps the same rules as the real
//! backends: links per repository, verification before visibility, atomic tag moves.
//!
//! ```
//! use donjon_core::memory::MemoryStore;
//! let store = std::sync::Arc::new(MemoryStore::default());
//! # let _: std::sync::Arc<dyn donjon_core::Store> = store;
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::digest::{Algorithm, Digest, Digester};
use crate::name::{Name, Reference, Tag};
use crate::store::{
    BlobRead, ByteStream, Descriptor, Manifest, ManifestPut, RangeSpec, Result, Store, StoreError, Stored,
};

#[derive(Default, Debug)]
struct Repo {
    /// Linked blobs, and when each link was written.
    layers: BTreeMap<Digest, SystemTime>,
    /// Manifest revisions: media type, and when the revision was written.
    manifests: HashMap<Digest, (String, SystemTime)>,
    tags: BTreeMap<String, Digest>,
    referrers: HashMap<Digest, BTreeMap<Digest, Descriptor>>,
}

struct Upload {
    data: BytesMut,
    hasher: Digester,
    started: std::time::SystemTime,
}

#[derive(Default)]
struct State {
    blobs: HashMap<Digest, (Bytes, SystemTime)>,
    quarantine: HashMap<Digest, (Bytes, SystemTime)>,
    repos: BTreeMap<String, Repo>,
    uploads: HashMap<(String, String), Arc<tokio::sync::Mutex<Upload>>>,
    secrets: HashMap<String, Bytes>,
}

/// The in-memory store.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn linked(&self, repo: &Name, digest: &Digest) -> Result<Bytes> {
        let st = self.lock();
        let linked = st
            .repos
            .get(repo.as_str())
            .is_some_and(|r| r.layers.contains_key(digest) || r.manifests.contains_key(digest));
        match (linked, st.blobs.get(digest)) {
            (true, Some((b, _))) => Ok(b.clone()),
            _ => Err(StoreError::BlobUnknown(digest.clone())),
        }
    }

    fn session(&self, repo: &Name, id: &str) -> Result<Arc<tokio::sync::Mutex<Upload>>> {
        self.lock().uploads.get(&(repo.to_string(), id.to_string())).cloned().ok_or(StoreError::UploadUnknown)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn blob_size(&self, repo: &Name, digest: &Digest) -> Result<u64> {
        Ok(self.linked(repo, digest)?.len() as u64)
    }

    async fn blob_read(&self, repo: &Name, digest: &Digest, range: RangeSpec) -> Result<BlobRead> {
        let data = self.linked(repo, digest)?;
        let size = data.len() as u64;
        let r = range.resolve(size).ok_or(StoreError::RangeInvalid { size })?;
        let part = data.slice(r.start as usize..r.end as usize);
        Ok(BlobRead { size, range: r, body: crate::store::bytes_stream(part) })
    }

    async fn blob_link(&self, repo: &Name, digest: &Digest) -> Result<()> {
        let mut st = self.lock();
        if !st.blobs.contains_key(digest) {
            return Err(StoreError::BlobUnknown(digest.clone()));
        }
        st.repos.entry(repo.to_string()).or_default().layers.insert(digest.clone(), SystemTime::now());
        Ok(())
    }

    async fn blob_unlink(&self, repo: &Name, digest: &Digest) -> Result<()> {
        let mut st = self.lock();
        let removed = st.repos.get_mut(repo.as_str()).is_some_and(|r| r.layers.remove(digest).is_some());
        if removed {
            Ok(())
        } else {
            Err(StoreError::BlobUnknown(digest.clone()))
        }
    }

    async fn upload_create(&self, repo: &Name, algorithm: Algorithm) -> Result<String> {
        let id = format!("{:032x}", rand_id());
        let up = Upload {
            data: BytesMut::new(),
            hasher: Digester::new(algorithm),
            started: std::time::SystemTime::now(),
        };
        self.lock().uploads.insert((repo.to_string(), id.clone()), Arc::new(tokio::sync::Mutex::new(up)));
        Ok(id)
    }

    async fn upload_size(&self, repo: &Name, id: &str) -> Result<u64> {
        let s = self.session(repo, id)?;
        let len = s.lock().await.data.len() as u64;
        Ok(len)
    }

    async fn upload_write(&self, repo: &Name, id: &str, offset: u64, mut data: ByteStream) -> Result<u64> {
        let s = self.session(repo, id)?;
        let mut up = s.lock().await;
        if offset != up.data.len() as u64 {
            return Err(StoreError::UploadOffset { size: up.data.len() as u64 });
        }
        while let Some(chunk) = data.next().await {
            match chunk {
                Ok(c) => {
                    up.hasher.update(&c);
                    up.data.extend_from_slice(&c);
                }
                Err(e) => return Err(StoreError::Body(e)),
            }
        }
        Ok(up.data.len() as u64)
    }

    async fn upload_commit(&self, repo: &Name, id: &str, digest: &Digest) -> Result<u64> {
        let s = self.session(repo, id)?;
        let up = s.lock().await;
        let actual = if digest.algorithm() == up.hasher.algorithm() {
            up.hasher.peek()
        } else {
            Digest::of(digest.algorithm(), &up.data)
        };
        let data = up.data.clone().freeze();
        drop(up);
        let mut st = self.lock();
        st.uploads.remove(&(repo.to_string(), id.to_string()));
        if &actual != digest {
            return Err(StoreError::DigestMismatch { expected: digest.clone(), actual });
        }
        let size = data.len() as u64;
        st.blobs.entry(digest.clone()).or_insert((data, SystemTime::now()));
        st.repos.entry(repo.to_string()).or_default().layers.insert(digest.clone(), SystemTime::now());
        Ok(size)
    }

    async fn upload_cancel(&self, repo: &Name, id: &str) -> Result<()> {
        self.lock()
            .uploads
            .remove(&(repo.to_string(), id.to_string()))
            .map(|_| ())
            .ok_or(StoreError::UploadUnknown)
    }

    async fn purge_uploads(&self, cutoff: std::time::SystemTime, dry_run: bool) -> Result<usize> {
        let sessions: Vec<_> = self.lock().uploads.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut stale = vec![];
        for (k, v) in sessions {
            if v.lock().await.started < cutoff {
                stale.push(k);
            }
        }
        if !dry_run {
            let mut st = self.lock();
            for k in &stale {
                st.uploads.remove(k);
            }
        }
        Ok(stale.len())
    }

    async fn manifest_get(&self, repo: &Name, reference: &Reference) -> Result<Manifest> {
        let st = self.lock();
        let unknown = || StoreError::ManifestUnknown(reference.to_string());
        let r = st.repos.get(repo.as_str()).ok_or_else(unknown)?;
        let digest = match reference {
            Reference::Tag(t) => r.tags.get(t.as_str()).ok_or_else(unknown)?.clone(),
            Reference::Digest(d) => d.clone(),
        };
        let media_type = r.manifests.get(&digest).ok_or_else(unknown)?.0.clone();
        let bytes = st.blobs.get(&digest).ok_or_else(unknown)?.0.clone();
        Ok(Manifest { digest, media_type, bytes })
    }

    async fn manifest_exists(&self, repo: &Name, digest: &Digest) -> Result<bool> {
        Ok(self.lock().repos.get(repo.as_str()).is_some_and(|r| r.manifests.contains_key(digest)))
    }

    async fn manifest_put(&self, repo: &Name, m: ManifestPut) -> Result<()> {
        let mut st = self.lock();
        st.blobs.entry(m.digest.clone()).or_insert((m.bytes, SystemTime::now()));
        let r = st.repos.entry(repo.to_string()).or_default();
        r.manifests.insert(m.digest.clone(), (m.media_type, SystemTime::now()));
        if let Some((subject, desc)) = m.referrer {
            r.referrers.entry(subject).or_default().insert(m.digest.clone(), desc);
        }
        for tag in m.tags {
            r.tags.insert(tag.to_string(), m.digest.clone());
        }
        Ok(())
    }

    async fn manifest_delete(&self, repo: &Name, digest: &Digest) -> Result<()> {
        let mut st = self.lock();
        let unknown = || StoreError::ManifestUnknown(digest.to_string());
        let r = st.repos.get_mut(repo.as_str()).ok_or_else(unknown)?;
        r.manifests.remove(digest).ok_or_else(unknown)?;
        r.tags.retain(|_, d| d != digest);
        for refs in r.referrers.values_mut() {
            refs.remove(digest);
        }
        Ok(())
    }

    async fn tag_delete(&self, repo: &Name, tag: &Tag) -> Result<()> {
        let mut st = self.lock();
        st.repos
            .get_mut(repo.as_str())
            .and_then(|r| r.tags.remove(tag.as_str()))
            .map(|_| ())
            .ok_or_else(|| StoreError::ManifestUnknown(tag.to_string()))
    }

    async fn tags(&self, repo: &Name) -> Result<Vec<String>> {
        let st = self.lock();
        let r = st.repos.get(repo.as_str()).ok_or_else(|| StoreError::NameUnknown(repo.clone()))?;
        Ok(r.tags.keys().cloned().collect())
    }

    async fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let st = self.lock();
        Ok(st
            .repos
            .iter()
            .filter(|(_, r)| !r.manifests.is_empty() || !r.tags.is_empty())
            .map(|(k, _)| k)
            .filter(|k| last.is_none_or(|l| k.as_str() > l))
            .take(n)
            .cloned()
            .collect())
    }

    async fn repository_folders(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let st = self.lock();
        Ok(st.repos.keys().filter(|k| last.is_none_or(|l| k.as_str() > l)).take(n).cloned().collect())
    }

    async fn referrers(&self, repo: &Name, subject: &Digest) -> Result<Vec<Descriptor>> {
        let st = self.lock();
        Ok(st
            .repos
            .get(repo.as_str())
            .and_then(|r| r.referrers.get(subject))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn blob_list(&self) -> Result<Vec<Stored>> {
        let st = self.lock();
        let mut out: Vec<Stored> = st
            .blobs
            .iter()
            .map(|(d, (b, t))| Stored { digest: d.clone(), size: b.len() as u64, modified: *t })
            .collect();
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    async fn revision_list(&self, repo: &Name) -> Result<Vec<Stored>> {
        let st = self.lock();
        let r = st.repos.get(repo.as_str()).ok_or_else(|| StoreError::NameUnknown(repo.clone()))?;
        let mut out: Vec<Stored> = r
            .manifests
            .iter()
            .map(|(d, (_, t))| Stored { digest: d.clone(), size: 0, modified: *t })
            .collect();
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    async fn layer_list(&self, repo: &Name) -> Result<Vec<Stored>> {
        let st = self.lock();
        let r = st.repos.get(repo.as_str()).ok_or_else(|| StoreError::NameUnknown(repo.clone()))?;
        Ok(r.layers.iter().map(|(d, t)| Stored { digest: d.clone(), size: 0, modified: *t }).collect())
    }

    async fn blob_quarantine(&self, digest: &Digest) -> Result<bool> {
        let mut st = self.lock();
        match st.blobs.remove(digest) {
            Some(b) => {
                st.quarantine.insert(digest.clone(), b);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn blob_release(&self, digest: &Digest, restore: bool) -> Result<()> {
        let mut st = self.lock();
        if let Some(b) = st.quarantine.remove(digest) {
            if restore {
                st.blobs.entry(digest.clone()).or_insert(b);
            }
        }
        Ok(())
    }

    async fn quarantine_list(&self) -> Result<Vec<Digest>> {
        let mut out: Vec<Digest> = self.lock().quarantine.keys().cloned().collect();
        out.sort();
        Ok(out)
    }

    async fn secret(&self, name: &str, init: Bytes) -> Result<Bytes> {
        if !crate::store::valid_secret_name(name) {
            return Err(crate::store::invalid_secret_name(name));
        }
        Ok(self.lock().secrets.entry(name.to_string()).or_insert(init).clone())
    }
}

fn rand_id() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let a = h.finish();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(a);
    ((a as u128) << 64) | h.finish() as u128
}

#[cfg(test)]
mod tests {
    crate::store_contract_tests!(async { std::sync::Arc::new(super::MemoryStore::default()) });
}
