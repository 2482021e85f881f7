//! The store's file I/O: durable small writes (temporary file, `fsync`, rename, `fsync` of the
//! directory), links, directory walks, and blob reads that skip the thread hop when the page
//! cache has the bytes.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::TryStreamExt;

use donjon_core::digest::Digest;
use donjon_core::store::ByteStream;

/// Size of the buffers used to stream blobs to and from disk.
pub(super) const IO_BUF: usize = 256 * 1024;

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)?
}

pub(super) fn not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Writes `data` to `path` atomically and durably: temp file, fsync, rename, fsync directory.
pub(super) fn write_atomic(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("path without parent"))?;
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The entries of directory `dir`, or `None` if it does not exist.
pub(super) fn read_dir(dir: &Path) -> io::Result<Option<fs::ReadDir>> {
    match fs::read_dir(dir) {
        Ok(e) => Ok(Some(e)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) fn read_link(path: &Path) -> io::Result<Option<Digest>> {
    match fs::read_to_string(path) {
        Ok(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) fn remove_dir(path: &Path) -> io::Result<bool> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(true),
        Err(e) if not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Streams `len` bytes of `file` from its current position: each chunk is read by the blocking
/// pool straight into the buffer that goes to the socket (tokio's `File` would read into its
/// own buffer and copy).
/// Streams bytes `[offset, offset + len)` of `file`, in chunks of at most `IO_BUF`.
///
/// Each chunk is first read on the calling task with `preadv2(RWF_NOWAIT)`, which copies what the
/// page cache holds and never waits for the disk; only a read that would wait goes to the blocking
/// pool. A pull of a cached blob so makes no thread hop per chunk (three context switches per
/// chunk before: 37,751 for 3 GiB, against Distribution's 2,258), and a cold one still never
/// blocks the runtime. The kernel's own read-ahead keeps later chunks of a cold blob cached.
pub(super) fn file_stream(file: fs::File, offset: u64, len: u64) -> ByteStream {
    let end = offset + len;
    let stream = futures_util::stream::try_unfold((Arc::new(file), offset), move |(file, pos)| async move {
        if pos >= end {
            return Ok(None);
        }
        let len = usize::try_from(end - pos).map_or(IO_BUF, |n| n.min(IO_BUF));
        let chunk = donjon_core::pagecache::read_at(&file, pos, len).await.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::new(e.kind(), "blob shorter than its size"),
            _ => e,
        })?;
        let next = pos + chunk.len() as u64;
        Ok(Some((chunk, (file, next))))
    });
    Box::pin(stream.map_err(|e: io::Error| Box::new(e) as donjon_core::BoxError))
}

pub(super) fn modified_before(path: &Path, t: SystemTime) -> bool {
    fs::metadata(path).and_then(|m| m.modified()).is_ok_and(|m| m < t)
}

#[cfg(test)]
pub(crate) mod tests {
    use futures_util::StreamExt;

    use super::*;

    /// A file of `len` patterned bytes, and the bytes.
    pub(crate) fn patterned(dir: &Path, len: usize) -> (fs::File, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4093) as u8).collect();
        let path = dir.join("blob");
        fs::write(&path, &data).unwrap();
        (fs::File::open(path).unwrap(), data)
    }

    async fn collect(mut s: ByteStream) -> (Vec<u8>, Vec<usize>, Option<String>) {
        let (mut all, mut sizes) = (Vec::new(), Vec::new());
        while let Some(chunk) = s.next().await {
            match chunk {
                Ok(c) => {
                    sizes.push(c.len());
                    all.extend_from_slice(&c);
                }
                Err(e) => return (all, sizes, Some(e.to_string())),
            }
        }
        (all, sizes, None)
    }

    #[tokio::test]
    async fn file_stream_reads_any_range_in_bounded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * IO_BUF + 12_345;
        let (file, data) = patterned(dir.path(), len);
        for (start, n) in [(0, len), (1, len - 1), (IO_BUF - 1, IO_BUF + 2), (len - 1, 1), (5, 0)] {
            let f = file.try_clone().unwrap();
            let (got, sizes, err) = collect(file_stream(f, start as u64, n as u64)).await;
            assert_eq!(err, None);
            assert!(got == data[start..start + n], "range {start}+{n}");
            assert!(sizes.iter().all(|&c| c > 0 && c <= IO_BUF), "chunks {sizes:?}");
        }
    }

    #[tokio::test]
    async fn file_stream_fails_when_the_file_is_shorter_than_its_size() {
        // A blob truncated behind the registry's back must end the body with an error (the
        // connection is cut), never a clean short body that a client could take as complete.
        let dir = tempfile::tempdir().unwrap();
        let (file, data) = patterned(dir.path(), IO_BUF + 100);
        let (got, _, err) = collect(file_stream(file, 0, (IO_BUF + 200) as u64)).await;
        assert_eq!(got, data);
        assert!(err.unwrap().contains("blob shorter than its size"));
    }
}
