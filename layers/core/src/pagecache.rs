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
