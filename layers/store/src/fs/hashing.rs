//! An upload's hashing and syncing while its body arrives: the digest computed in order beside
//! the task that writes (on a thread of its own past 1 MiB), early `fdatasync`s so that the
//! commit waits for the tail only, and the resumable hash state file.

use std::fs;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;

use donjon_core::digest::{Algorithm, Digester};

pub(super) const HASHSTATE: &str = "donjon-hashstate";

/// Bytes an upload request hashes on its own task before it may move the hash to a thread.
pub(super) const HASH_AWAY: u64 = 1024 * 1024;

/// Body chunks queued for an upload's hashing thread (each at most hyper's read buffer, about
/// 400 KiB): enough to keep it busy, little enough to bound what an upload holds.
pub(super) const HASH_QUEUE: usize = 8;

/// Uploads of one store that may hash on threads of their own at once; the others hash inline.
pub(super) const HASH_THREADS: usize = 8;

/// An upload's SHA-256, computed in order beside the task that receives and writes the body.
///
/// Small requests hash on their task. Past `HASH_AWAY` bytes the state moves to a thread of its
/// own, fed through a queue of `HASH_QUEUE` chunks, so that receiving, hashing and writing use
/// three threads: 1 GiB pushes at 0.80-1.10 GB/s against 0.67-0.85 inline (7 rounds each,
/// alternating); a hop to the blocking pool per chunk instead gave 0.85-0.94. The thread is not the blocking pool's (a client
/// that trickles its body would hold a pool thread the file operations of every other request
/// need), and at most `HASH_THREADS` exist per store: past that an upload hashes inline.
#[allow(clippy::large_enum_variant)] // one per upload request, on its stack
pub(super) enum Hashing {
    Here { digester: Digester, seen: u64 },
    Away { queue: tokio::sync::mpsc::Sender<Bytes>, result: tokio::sync::oneshot::Receiver<Digester> },
}

impl Hashing {
    pub(super) fn new(digester: Digester) -> Self {
        Hashing::Here { digester, seen: 0 }
    }

    pub(super) async fn update(
        &mut self,
        chunk: Bytes,
        threads: &Arc<tokio::sync::Semaphore>,
    ) -> io::Result<()> {
        match self {
            Hashing::Away { queue, .. } => {
                queue.send(chunk).await.map_err(|_| io::Error::other("the hashing thread stopped"))
            }
            Hashing::Here { digester, seen } => {
                *seen += chunk.len() as u64;
                let permit = (*seen >= HASH_AWAY).then(|| Arc::clone(threads).try_acquire_owned().ok());
                let Some(Some(permit)) = permit else {
                    digester.update(&chunk);
                    return Ok(());
                };
                let mut d = std::mem::replace(digester, Digester::new(digester.algorithm()));
                let (queue, mut rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
                let (tx, result) = tokio::sync::oneshot::channel();
                std::thread::Builder::new().name("donjon-hash".into()).spawn(move || {
                    let _permit = permit;
                    while let Some(c) = rx.blocking_recv() {
                        d.update(&c);
                    }
                    let _ = tx.send(d);
                })?;
                queue.send(chunk).await.map_err(|_| io::Error::other("the hashing thread stopped"))?;
                *self = Hashing::Away { queue, result };
                Ok(())
            }
        }
    }

    pub(super) async fn done(self) -> io::Result<Digester> {
        match self {
            Hashing::Here { digester, .. } => Ok(digester),
            Hashing::Away { queue, result } => {
                drop(queue);
                result.await.map_err(|_| io::Error::other("the hashing thread stopped"))
            }
        }
    }
}

/// Bytes an upload request writes between two early `fdatasync`s.
pub(super) const EARLY_SYNC: u64 = 32 * 1024 * 1024;

/// Puts an upload's bytes on the disk while more arrive: every `EARLY_SYNC` bytes an
/// `fdatasync` starts on the blocking pool (one at a time), so that the commit's `fsync` waits
/// for the tail of the blob only, not for all of it. Without it a 1 GiB push was the sum of
/// receiving it into the page cache and then writing it out; with it the two overlap.
pub(super) struct EarlySync {
    file: Arc<fs::File>,
    synced_at: u64,
    running: Option<tokio::task::JoinHandle<io::Result<()>>>,
    failed: Option<io::Error>,
}

impl EarlySync {
    pub(super) fn new(file: fs::File, size: u64) -> Self {
        Self { file: Arc::new(file), synced_at: size, running: None, failed: None }
    }

    /// Notes that the file now holds `written` bytes, and starts a sync if one is due, none is
    /// running and none has failed.
    pub(super) fn wrote(&mut self, written: u64) {
        if written - self.synced_at < EARLY_SYNC || self.failed.is_some() {
            return;
        }
        if let Some(done) = self.running.take_if(|h| h.is_finished()) {
            match done.now_or_never() {
                Some(Ok(Ok(()))) | None => {}
                Some(Ok(Err(e))) => self.failed = Some(e),
                Some(Err(e)) => self.failed = Some(io::Error::other(e)),
            }
        }
        if self.running.is_none() && self.failed.is_none() {
            let file = Arc::clone(&self.file);
            self.running = Some(tokio::task::spawn_blocking(move || file.sync_data()));
            self.synced_at = written;
        }
    }

    /// Waits for the sync in flight; the first error of any.
    pub(super) async fn finish(self) -> io::Result<()> {
        let last = match self.running {
            Some(h) => h.await.map_err(io::Error::other)?,
            None => Ok(()),
        };
        self.failed.map_or(last, Err)
    }
}

/// A hash state file: the size hashed (8 bytes, little-endian), the algorithm, the state.
pub(super) fn hashstate(size: u64, h: &Digester) -> Vec<u8> {
    let mut state = size.to_le_bytes().to_vec();
    state.push(algorithm_byte(h.algorithm()));
    state.extend_from_slice(&h.state());
    state
}

/// How a hash state file names its algorithm.
pub(super) fn algorithm_byte(a: Algorithm) -> u8 {
    match a {
        Algorithm::Sha256 => 0,
        Algorithm::Sha512 => 1,
    }
}

pub(super) fn algorithm_of_byte(b: u8) -> Option<Algorithm> {
    match b {
        0 => Some(Algorithm::Sha256),
        1 => Some(Algorithm::Sha512),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use donjon_core::Digest;

    use super::*;
    use crate::fs::file::tests::patterned;

    #[tokio::test]
    async fn early_sync_starts_every_early_sync_bytes_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (file, _) = patterned(dir.path(), 10);
        let mut early = EarlySync::new(file, 10);
        early.wrote(10 + EARLY_SYNC - 1);
        assert!(early.running.is_none(), "nothing is due before EARLY_SYNC bytes");
        early.wrote(10 + EARLY_SYNC);
        assert!(early.running.is_some());
        assert_eq!(early.synced_at, 10 + EARLY_SYNC);
        early.finish().await.unwrap();
    }

    #[tokio::test]
    async fn early_sync_failures_are_reported_and_stop_further_syncs() {
        // fdatasync on /dev/null fails (EINVAL): the upload must hear of it, because the error
        // it consumed would not show at the commit's fsync.
        let null = fs::File::open("/dev/null").unwrap();
        let mut early = EarlySync::new(null, 0);
        early.wrote(EARLY_SYNC);
        while !early.running.as_ref().unwrap().is_finished() {
            tokio::task::yield_now().await;
        }
        early.wrote(2 * EARLY_SYNC);
        assert!(early.failed.is_some() && early.running.is_none(), "no new sync after a failure");
        assert!(early.finish().await.is_err());
    }

    async fn hash_in_chunks(h: &mut Hashing, data: &[u8], threads: &Arc<tokio::sync::Semaphore>) {
        for c in data.chunks(300_000) {
            h.update(Bytes::copy_from_slice(c), threads).await.unwrap();
        }
    }

    #[tokio::test]
    async fn hashing_moves_to_a_thread_past_hash_away_and_stays_in_order() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let threads = Arc::new(tokio::sync::Semaphore::new(1));
        let mut h = Hashing::new(Digester::new(Algorithm::Sha256));
        hash_in_chunks(&mut h, &data, &threads).await;
        assert!(matches!(h, Hashing::Away { .. }));
        assert_eq!(threads.available_permits(), 0, "the thread holds the slot");
        assert_eq!(h.done().await.unwrap().finish(), Digest::sha256_of(&data));
        // The slot comes back when the thread ends.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), threads.acquire()).await.unwrap();
        // No slot free: the same bytes hash inline, to the same digest.
        let none = Arc::new(tokio::sync::Semaphore::new(0));
        let mut h = Hashing::new(Digester::new(Algorithm::Sha256));
        hash_in_chunks(&mut h, &data, &none).await;
        assert!(matches!(h, Hashing::Here { .. }));
        assert_eq!(h.done().await.unwrap().finish(), Digest::sha256_of(&data));
    }

    #[test]
    fn a_trickling_upload_holds_no_blocking_pool_thread() {
        // The binary bounds the blocking pool; every file operation needs it. An upload whose
        // hash moved to a thread and whose client then goes quiet must not hold a pool thread.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        rt.block_on(async {
            let threads = Arc::new(tokio::sync::Semaphore::new(1));
            let mut h = Hashing::new(Digester::new(Algorithm::Sha256));
            hash_in_chunks(&mut h, &[7; 2 * 1024 * 1024], &threads).await;
            assert!(matches!(h, Hashing::Away { .. }));
            let pool = tokio::task::spawn_blocking(|| 42);
            let r = tokio::time::timeout(std::time::Duration::from_secs(5), pool).await;
            assert_eq!(r.expect("the blocking pool is free").unwrap(), 42);
            h.done().await.unwrap();
        });
    }
}
