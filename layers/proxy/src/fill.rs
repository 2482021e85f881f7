//! Single-flight, streaming blob fills.
//!
//! The first miss of a digest starts one fill: a task that downloads the blob from upstream
//! into a spool file, hashing as it writes, and publishes how far it got. Every request for
//! that digest while the fill runs (the first one too) reads the spool file at its own pace
//! from its own offset, so a client gets bytes as soon as the upstream sends them, a slow
//! reader slows neither the fill nor the others, and memory stays one buffer per reader.
//!
//! The last byte is held back until the digest is verified: a transfer that breaks, or whose
//! bytes do not hash to the digest, ends every reader with an error, never with a complete-
//! looking body. Once verified, the spool file is committed to the store (linked into every
//! repository whose requests shared the fill), and only then is the fill forgotten, so a
//! request never falls between the fill and the store.
//!
//! The task does not depend on the clients: one that goes away leaves the fill running for
//! the others and for the cache. It is bounded instead: a blob announced larger than the
//! ceiling (`max_blob_size`, or the cache's `max_size`) is refused before a byte is spooled,
//! and one streamed past its `Content-Length` or the ceiling is cut off and dropped at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use donjon_core::body::ByteStream;
use donjon_core::{BoxError, Digest, Digester, Name, Store};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;

use crate::client::UpstreamError;

/// The most readers read in one go.
const READ_CHUNK: usize = 256 * 1024;
/// The most the fill gathers from the upstream before writing it out (it writes sooner when
/// no more has arrived).
const WRITE_BATCH: usize = 1 << 20;

/// How a fill stands.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    /// The blob's size, from the upstream's `Content-Length`.
    pub(crate) size: Option<u64>,
    /// Bytes in the spool file.
    pub(crate) written: u64,
    /// `Some(Ok)`: all written and verified; `Some(Err)`: the fill failed.
    pub(crate) end: Option<Result<(), UpstreamError>>,
    /// Whether the upstream answered (with its size) yet.
    pub(crate) started: bool,
}

/// One running fill.
pub(crate) struct Fill {
    path: PathBuf,
    progress: watch::Receiver<Progress>,
    /// The repositories whose requests share it: each gets the blob linked at the commit.
    repos: Mutex<Vec<Name>>,
}

impl Fill {
    /// Waits until the upstream answered (or the fill failed) and returns how it stands.
    pub(crate) async fn started(&self) -> Progress {
        let mut rx = self.progress.clone();
        loop {
            let p = rx.borrow_and_update().clone();
            if p.started || p.end.is_some() {
                return p;
            }
            if rx.changed().await.is_err() {
                return Progress {
                    end: Some(Err(UpstreamError::Unreachable("the fill stopped".into()))),
                    ..p
                };
            }
        }
    }

    /// The bytes `start..end` (exclusive; `None`: to the end), as they arrive: each piece read
    /// straight into its own buffer (`pread` on the blocking pool), which the response sends.
    pub(crate) fn reader(self: &Arc<Self>, file: std::fs::File, start: u64, end: Option<u64>) -> ByteStream {
        struct St {
            file: Arc<std::fs::File>,
            pos: u64,
            end: Option<u64>,
            rx: watch::Receiver<Progress>,
            done: bool,
        }
        let st = St { file: Arc::new(file), pos: start, end, rx: self.progress.clone(), done: false };
        let stream = futures_util::stream::unfold(st, |mut st| async move {
            if st.done {
                return None;
            }
            loop {
                if st.end.is_some_and(|e| st.pos >= e) {
                    return None;
                }
                let p = st.rx.borrow_and_update().clone();
                if let Some(Err(e)) = &p.end {
                    st.done = true;
                    return Some((Err(BoxError::from(format!("upstream transfer failed: {e}"))), st));
                }
                let verified = matches!(p.end, Some(Ok(())));
                // The last byte waits for the digest.
                let mut limit = if verified { p.written } else { p.written.saturating_sub(1) };
                if let Some(e) = st.end {
                    limit = limit.min(e);
                }
                if st.pos < limit {
                    let n = ((limit - st.pos) as usize).min(READ_CHUNK);
                    // What the fill just wrote is in the page cache: read here, no thread hop.
                    match donjon_core::pagecache::read_at(&st.file, st.pos, n).await {
                        Ok(chunk) => {
                            st.pos += chunk.len() as u64;
                            return Some((Ok(chunk), st));
                        }
                        Err(e) => {
                            st.done = true;
                            return Some((Err(BoxError::from(e)), st));
                        }
                    }
                }
                if verified {
                    return None;
                }
                if st.rx.changed().await.is_err() {
                    st.done = true;
                    return Some((Err(BoxError::from("the fill stopped")), st));
                }
            }
        });
        Box::pin(stream)
    }
}

/// A batch being written to the spool file and hashed, each on a blocking thread at once.
struct InFlight {
    /// Both done: the hash state, updated.
    done: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Digester, UpstreamError>> + Send>>,
    len: u64,
}

impl InFlight {
    fn start(file: &Arc<std::fs::File>, batch: Vec<Bytes>, mut hasher: Digester) -> Self {
        let len = batch.iter().map(|b| b.len() as u64).sum();
        let batch = Arc::new(batch);
        let (f, b) = (file.clone(), batch.clone());
        let write = tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            b.iter().try_for_each(|chunk| (&*f).write_all(chunk))
        });
        let hash = tokio::task::spawn_blocking(move || {
            batch.iter().for_each(|chunk| hasher.update(chunk));
            hasher
        });
        let done = Box::pin(async move {
            let spool = |e: String| UpstreamError::Unreachable(format!("spool file: {e}"));
            write.await.map_err(|e| spool(e.to_string()))?.map_err(|e| spool(e.to_string()))?;
            hash.await.map_err(|e| spool(e.to_string()))
        });
        Self { done, len }
    }
}

/// Counts a batch as written and tells the readers; the hash state passes through.
fn publish(hasher: Digester, len: u64, written: &mut u64, tx: &watch::Sender<Progress>) -> Digester {
    *written += len;
    donjon_core::metrics::metrics().proxy_upstream_bytes.inc_by(len);
    let w = *written;
    tx.send_modify(|p| p.written = w);
    hasher
}

/// The upstream response a fill downloads, once the task asked for it.
pub(crate) type Start = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<http::Response<Incoming>, UpstreamError>> + Send + 'static>,
>;

/// The fills running now.
pub(crate) struct Fills {
    dir: PathBuf,
    store: Arc<dyn Store>,
    read_timeout: Duration,
    /// The largest blob fetched.
    max_blob: u64,
    running: Mutex<HashMap<Digest, Arc<Fill>>>,
}

impl std::fmt::Debug for Fills {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fills").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Fills {
    pub(crate) fn new(dir: PathBuf, store: Arc<dyn Store>, read_timeout: Duration, max_blob: u64) -> Self {
        Self { dir, store, read_timeout, max_blob, running: Mutex::default() }
    }

    /// The fill running for `digest`, if any.
    pub(crate) fn running(&self, digest: &Digest) -> Option<Arc<Fill>> {
        self.running.lock().ok()?.get(digest).cloned()
    }

    /// Joins the fill of `digest` for `repo`, or starts one with `start` (called only when
    /// none runs). Returns the fill and the spool file, opened before anyone can remove it.
    pub(crate) fn join(
        self: &Arc<Self>,
        digest: &Digest,
        repo: &Name,
        start: impl FnOnce() -> Start,
    ) -> std::io::Result<(Arc<Fill>, std::fs::File)> {
        let mut running = self.running.lock().map_err(|_| std::io::Error::other("fills lock poisoned"))?;
        if let Some(fill) = running.get(digest) {
            let file = std::fs::File::open(&fill.path)?;
            if let Ok(mut repos) = fill.repos.lock() {
                if !repos.contains(repo) {
                    repos.push(repo.clone());
                }
            }
            return Ok((fill.clone(), file));
        }
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{}-{}", digest.hex(), uuid::Uuid::new_v4().simple()));
        let writer = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        let file = std::fs::File::open(&path)?;
        let (tx, rx) = watch::channel(Progress::default());
        let fill = Arc::new(Fill { path: path.clone(), progress: rx, repos: Mutex::new(vec![repo.clone()]) });
        running.insert(digest.clone(), fill.clone());
        drop(running);
        let fills = self.clone();
        let (digest, fill2) = (digest.clone(), fill.clone());
        let start = start();
        tokio::spawn(async move {
            let result = fills.download(&digest, start, writer, &tx).await;
            match result {
                Ok(()) => {
                    tx.send_modify(|p| p.end = Some(Ok(())));
                    fills.commit(&digest, &fill2).await;
                }
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "proxy: blob fill failed; nothing cached");
                    tx.send_modify(|p| p.end = Some(Err(e)));
                }
            }
            if let Ok(mut running) = fills.running.lock() {
                running.remove(&digest);
            }
            // Readers keep their open handles; the name goes.
            let _ = tokio::fs::remove_file(&path).await;
        });
        Ok((fill, file))
    }

    /// Downloads into the spool file, hashing, publishing progress; checks size and digest.
    async fn download(
        &self,
        digest: &Digest,
        start: Start,
        file: std::fs::File,
        tx: &watch::Sender<Progress>,
    ) -> Result<(), UpstreamError> {
        let broken = UpstreamError::Unreachable;
        let resp = start.await?;
        let size = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = |n: u64| {
            UpstreamError::TooLarge(format!(
                "the upstream's blob is {n} bytes or more, past this cache's ceiling of {} bytes \
                 (registry_proxies.max_blob_size, or max_size)",
                self.max_blob
            ))
        };
        if let Some(s) = size.filter(|s| *s > self.max_blob) {
            return Err(too_large(s));
        }
        tx.send_modify(|p| {
            p.size = size;
            p.started = true;
        });
        let file = Arc::new(file);
        let mut hasher = Some(Digester::new(digest.algorithm()));
        let mut body = resp.into_body();
        // Bytes written and published, and the batch being written and hashed meanwhile: the
        // next batch is received while the last one is written (one blocking task) and hashed
        // (another), so receiving, writing and hashing overlap instead of taking turns.
        let mut written = 0u64;
        let mut in_flight: Option<InFlight> = None;
        let mut ended = false;
        while !ended {
            // Wait for a piece, then take what else has arrived already (up to a batch), so
            // the first byte goes out at once and a fast upstream is written in large pieces.
            // A batch written meanwhile is published as soon as it is, not when the next
            // piece comes (a slow upstream's first bytes go out at once).
            let first = loop {
                let Some(f) = in_flight.as_mut() else {
                    break tokio::time::timeout(self.read_timeout, body.frame()).await;
                };
                tokio::select! {
                    biased;
                    done = &mut f.done => {
                        let len = f.len;
                        in_flight = None;
                        hasher = Some(publish(done?, len, &mut written, tx));
                    }
                    frame = tokio::time::timeout(self.read_timeout, body.frame()) => break frame,
                }
            };
            let first = first.map_err(|_| UpstreamError::Timeout)?;
            let (mut batch, mut len) = (Vec::new(), 0usize);
            let mut next = Some(first);
            while let Some(frame) = next.take() {
                match frame {
                    None => ended = true,
                    Some(Err(e)) => return Err(broken(format!("upstream body: {e}"))),
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data() {
                            len += data.len();
                            batch.push(data);
                        }
                        if len < WRITE_BATCH {
                            next = futures_util::FutureExt::now_or_never(body.frame());
                        }
                    }
                }
            }
            let total = written + in_flight.as_ref().map_or(0, |f| f.len) + len as u64;
            if size.is_some_and(|s| total > s) {
                return Err(UpstreamError::TooLarge("the upstream sent more than its Content-Length".into()));
            }
            if total > self.max_blob {
                return Err(too_large(total));
            }
            if let Some(f) = in_flight.take() {
                hasher = Some(publish(f.done.await?, f.len, &mut written, tx));
            }
            if len == 0 {
                continue;
            }
            let h = hasher.take().ok_or_else(|| broken("the hash state was lost".into()))?;
            in_flight = Some(InFlight::start(&file, batch, h));
        }
        if let Some(f) = in_flight.take() {
            hasher = Some(publish(f.done.await?, f.len, &mut written, tx));
        }
        let hasher = hasher.ok_or_else(|| broken("the hash state was lost".into()))?;
        if size.is_some_and(|s| s != written) {
            return Err(broken(format!("upstream sent {written} of {} bytes", size.unwrap_or(0))));
        }
        let got = hasher.finish();
        if got != *digest {
            return Err(broken(format!("upstream bytes hash to {got}, not {digest}")));
        }
        if size.is_none() {
            tx.send_modify(|p| p.size = Some(written));
        }
        Ok(())
    }

    /// Puts the verified spool file into the store (moved into place where the store can take
    /// it so, else streamed), linked into every repository that asked.
    async fn commit(&self, digest: &Digest, fill: &Fill) {
        let repos = fill.repos.lock().map(|r| r.clone()).unwrap_or_default();
        let Some((first, others)) = repos.split_first() else { return };
        match self.store.blob_adopt(first, digest, &fill.path).await {
            Ok(true) => return self.link(digest, others).await,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%digest, error = %e, "proxy: could not cache the blob");
                return;
            }
        }
        let stream = match tokio::fs::File::open(&fill.path).await {
            Ok(f) => file_stream(f),
            Err(e) => {
                tracing::warn!(%digest, error = %e, "proxy: spool file vanished; not cached");
                return;
            }
        };
        if let Err(e) = self.store.blob_put(first, digest, stream).await {
            tracing::warn!(%digest, error = %e, "proxy: could not cache the blob");
            return;
        }
        self.link(digest, others).await;
    }

    async fn link(&self, digest: &Digest, repos: &[Name]) {
        for repo in repos {
            if let Err(e) = self.store.blob_link(repo, digest).await {
                tracing::warn!(%digest, %repo, error = %e, "proxy: could not link the cached blob");
            }
        }
    }
}

/// A file as a stream of 1 MiB chunks.
fn file_stream(file: tokio::fs::File) -> ByteStream {
    let stream = futures_util::stream::unfold(Some((file, vec![0u8; 1 << 20])), |st| async move {
        let (mut f, mut buf) = st?;
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => Some((Ok(Bytes::copy_from_slice(&buf[..n])), Some((f, buf)))),
            Err(e) => Some((Err(BoxError::from(e)), None)),
        }
    });
    Box::pin(stream)
}
