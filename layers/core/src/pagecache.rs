//! Reading what the page cache holds without a thread hop: `preadv2(RWF_NOWAIT)` copies the
//! cached part of a range on the calling task and never waits for the disk, so a reader only
//! goes to the blocking pool for what is not cached. The filesystem store's blob reader and the
//! pull-through cache's spool reader (which reads what the fill just wrote) both use it.
//!
//! ```
//! use std::io::Write as _;
//! let mut f = tempfile::tempfile().unwrap();
//! f.write_all(b"hello, page cache").unwrap();
//! let mut buf = [0u8; 5];
//! # #[cfg(target_os = "linux")]
//! assert_eq!(donjon_core::pagecache::read_cached(&f, &mut buf, 7), Some(5));
//! ```

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

/// Up to `len` bytes of `file` at `pos`, into a buffer of their own: what the page cache holds
/// read here ([`read_cached`]), else exactly `len` bytes read on the blocking pool (an
/// `UnexpectedEof` error when the file is shorter).
pub async fn read_at(file: &Arc<File>, pos: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    if let Some(n) = read_cached(file, &mut buf, pos) {
        buf.truncate(n);
        return Ok(Bytes::from(buf));
    }
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt as _;
        file.read_exact_at(&mut buf, pos).map(|()| Bytes::from(buf))
    })
    .await
    .map_err(io::Error::other)?
}

/// Reads into `buf` at `pos` only what the page cache already holds; `None` when that is nothing
/// (or the kernel cannot say: before Linux 4.14, or on a filesystem without `RWF_NOWAIT`).
#[cfg(target_os = "linux")]
pub fn read_cached(file: &File, buf: &mut [u8], pos: u64) -> Option<usize> {
    let flags = rustix::io::ReadWriteFlags::NOWAIT;
    match rustix::io::preadv2(file, &mut [std::io::IoSliceMut::new(buf)], pos, flags) {
        Ok(n) if n > 0 => Some(n),
        // EAGAIN: not cached. 0 at a position inside the file: truncated; the blocking read says so.
        _ => None,
    }
}

/// Elsewhere the kernel cannot say: always `None`.
#[cfg(not(target_os = "linux"))]
pub fn read_cached(_: &File, _: &mut [u8], _: u64) -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn cached_bytes_are_read_without_the_blocking_pool() {
        // What was just written is in the page cache: RWF_NOWAIT reads it on the calling thread.
        // (ext4 does, as on the CI machine; a `None` here would mean a thread hop per chunk.)
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000).map(|i| (i * 7 + i / 4093) as u8).collect();
        let path = dir.path().join("blob");
        std::fs::write(&path, &data).unwrap();
        let file = File::open(path).unwrap();
        let mut buf = vec![0; 4096];
        assert_eq!(read_cached(&file, &mut buf, 1000), Some(4096));
        assert!(buf == data[1000..5096]);
        // At the end of the file there is nothing to read: the caller falls back and reports it.
        assert_eq!(read_cached(&file, &mut buf, 100_000), None);
    }
}
