//! [`MeteredStore`]: any [`Store`] with each operation's latency and faults recorded in the
//! process's metrics (`donjon_store_operation_duration_seconds`, `donjon_store_errors_total`,
//! by backend and operation). Answers that name something absent (`BLOB_UNKNOWN` and the
//! like) are the store working, not faults; I/O errors (a full disk among them) and corrupt
//! objects are.
//!
//! ```
//! use std::sync::Arc;
//! use donjon_core::{memory::MemoryStore, metered::MeteredStore, Store};
//!
//! let store: Arc<dyn Store> = Arc::new(MeteredStore::new(Arc::new(MemoryStore::default()), "memory"));
//! # let _ = store;
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use crate::digest::{Algorithm, Digest};
use crate::name::{Name, Reference, Tag};
use crate::store::{
    BlobRead, ByteStream, Descriptor, Manifest, ManifestPut, RangeSpec, Result, Store, StoreError, Stored,
};

/// See the module docs.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    backend: &'static str,
}

impl MeteredStore {
    /// `inner`, its operations labelled `backend` (`filesystem`, `s3`).
    pub fn new(inner: Arc<dyn Store>, backend: &'static str) -> Self {
        Self { inner, backend }
    }

    async fn timed<T>(&self, op: &'static str, f: impl Future<Output = Result<T>>) -> Result<T> {
        let start = Instant::now();
        let r = f.await;
        let fault = matches!(&r, Err(StoreError::Io(_) | StoreError::Corrupt(_)));
        crate::metrics::metrics().record_store(self.backend, op, start.elapsed(), fault);
        r
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn blob_size(&self, repo: &Name, digest: &Digest) -> Result<u64> {
        self.timed("blob_size", self.inner.blob_size(repo, digest)).await
    }
    async fn blob_read(&self, repo: &Name, digest: &Digest, range: RangeSpec) -> Result<BlobRead> {
        self.timed("blob_read", self.inner.blob_read(repo, digest, range)).await
    }
    async fn blob_redirect(&self, repo: &Name, digest: &Digest) -> Result<Option<String>> {
        self.timed("blob_redirect", self.inner.blob_redirect(repo, digest)).await
    }
    async fn blob_link(&self, repo: &Name, digest: &Digest) -> Result<()> {
        self.timed("blob_link", self.inner.blob_link(repo, digest)).await
    }
    async fn blob_unlink(&self, repo: &Name, digest: &Digest) -> Result<()> {
        self.timed("blob_unlink", self.inner.blob_unlink(repo, digest)).await
    }
    async fn upload_create(&self, repo: &Name, algorithm: Algorithm) -> Result<String> {
        self.timed("upload_create", self.inner.upload_create(repo, algorithm)).await
    }
    async fn upload_size(&self, repo: &Name, id: &str) -> Result<u64> {
        self.timed("upload_size", self.inner.upload_size(repo, id)).await
    }
    async fn upload_write(&self, repo: &Name, id: &str, offset: u64, data: ByteStream) -> Result<u64> {
        self.timed("upload_write", self.inner.upload_write(repo, id, offset, data)).await
    }
    async fn upload_commit(&self, repo: &Name, id: &str, digest: &Digest) -> Result<u64> {
        self.timed("upload_commit", self.inner.upload_commit(repo, id, digest)).await
    }
    async fn upload_cancel(&self, repo: &Name, id: &str) -> Result<()> {
        self.timed("upload_cancel", self.inner.upload_cancel(repo, id)).await
    }
    async fn blob_put(&self, repo: &Name, digest: &Digest, data: ByteStream) -> Result<u64> {
        self.timed("blob_put", self.inner.blob_put(repo, digest, data)).await
    }
    async fn blob_adopt(&self, repo: &Name, digest: &Digest, file: &std::path::Path) -> Result<bool> {
        self.timed("blob_adopt", self.inner.blob_adopt(repo, digest, file)).await
    }
    fn chunk_min_length(&self) -> Option<u64> {
        self.inner.chunk_min_length()
    }
    async fn purge_uploads(&self, cutoff: std::time::SystemTime, dry_run: bool) -> Result<usize> {
        self.timed("purge_uploads", self.inner.purge_uploads(cutoff, dry_run)).await
    }
    async fn manifest_get(&self, repo: &Name, reference: &Reference) -> Result<Manifest> {
        self.timed("manifest_get", self.inner.manifest_get(repo, reference)).await
    }
    async fn manifest_exists(&self, repo: &Name, digest: &Digest) -> Result<bool> {
        self.timed("manifest_exists", self.inner.manifest_exists(repo, digest)).await
    }
    async fn manifest_put(&self, repo: &Name, manifest: ManifestPut) -> Result<()> {
        self.timed("manifest_put", self.inner.manifest_put(repo, manifest)).await
    }
    async fn manifest_delete(&self, repo: &Name, digest: &Digest) -> Result<()> {
        self.timed("manifest_delete", self.inner.manifest_delete(repo, digest)).await
    }
    async fn tag_delete(&self, repo: &Name, tag: &Tag) -> Result<()> {
        self.timed("tag_delete", self.inner.tag_delete(repo, tag)).await
    }
    async fn tags(&self, repo: &Name) -> Result<Vec<String>> {
        self.timed("tags", self.inner.tags(repo)).await
    }
    async fn tag_times(&self, repo: &Name) -> Result<Vec<(String, Option<std::time::SystemTime>)>> {
        self.timed("tag_times", self.inner.tag_times(repo)).await
    }
    async fn catalog(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        self.timed("catalog", self.inner.catalog(last, n)).await
    }
    async fn repository_folders(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        self.timed("repository_folders", self.inner.repository_folders(last, n)).await
    }
    async fn referrers(&self, repo: &Name, subject: &Digest) -> Result<Vec<Descriptor>> {
        self.timed("referrers", self.inner.referrers(repo, subject)).await
    }
    async fn blob_list(&self) -> Result<Vec<Stored>> {
        self.timed("blob_list", self.inner.blob_list()).await
    }
    async fn revision_list(&self, repo: &Name) -> Result<Vec<Stored>> {
        self.timed("revision_list", self.inner.revision_list(repo)).await
    }
    async fn layer_list(&self, repo: &Name) -> Result<Vec<Stored>> {
        self.timed("layer_list", self.inner.layer_list(repo)).await
    }
    async fn blob_quarantine(&self, digest: &Digest) -> Result<bool> {
        self.timed("blob_quarantine", self.inner.blob_quarantine(digest)).await
    }
    async fn blob_release(&self, digest: &Digest, restore: bool) -> Result<()> {
        self.timed("blob_release", self.inner.blob_release(digest, restore)).await
    }
    async fn quarantine_list(&self) -> Result<Vec<Digest>> {
        self.timed("quarantine_list", self.inner.quarantine_list()).await
    }
    async fn secret(&self, name: &str, init: Bytes) -> Result<Bytes> {
        self.timed("secret", self.inner.secret(name, init)).await
    }
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    crate::store_contract_tests!(async {
        let inner = std::sync::Arc::new(crate::memory::MemoryStore::default());
        std::sync::Arc::new(super::MeteredStore::new(inner, "memory"))
    });
}
