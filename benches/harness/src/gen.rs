//! Deterministic blob content, generated on the fly and addressable at any offset.
//!
//! A blob is a function of `(seed, size)`. It is cut into 64 KiB blocks; block `b` is a fixed
//! 64 KiB pseudo-random base block, rotated by an amount derived from `(seed, b)`, with its first
//! 16 bytes replaced by `seed` and `b` (little-endian). So blobs with different seeds differ, no
//! two blocks of a blob are equal, the data does not compress, and producing it costs about one
//! `memcpy`: the harness never holds a whole blob in memory and spends little CPU making it.

use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

/// The block size of the generator.
pub const BLOCK: usize = 64 * 1024;
const HEADER: usize = 16;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut s = 0x646F_6E6A_6F6E_u64; // "donjon"
        let mut v = Vec::with_capacity(BLOCK);
        while v.len() < BLOCK {
            v.extend_from_slice(&splitmix(&mut s).to_le_bytes());
        }
        v
    })
}

fn rotation(seed: u64, block: u64) -> usize {
    let mut s = seed ^ block.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (splitmix(&mut s) % BLOCK as u64) as usize
}

/// Fills `buf` with the bytes of blob `seed` starting at byte `offset`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let base = base();
    let mut pos = offset;
    let mut i = 0;
    while i < buf.len() {
        let block = pos / BLOCK as u64;
        let within = (pos % BLOCK as u64) as usize;
        let n = (BLOCK - within).min(buf.len() - i);
        let out = &mut buf[i..i + n];
        // Byte j of the block is base[(rot + j) % BLOCK]: at most two contiguous copies.
        let start = (rotation(seed, block) + within) % BLOCK;
        let first = (BLOCK - start).min(n);
        out[..first].copy_from_slice(&base[start..start + first]);
        out[first..].copy_from_slice(&base[..n - first]);
        if within < HEADER {
            let mut header = [0u8; HEADER];
            header[..8].copy_from_slice(&seed.to_le_bytes());
            header[8..].copy_from_slice(&block.to_le_bytes());
            let h = (HEADER - within).min(n);
            out[..h].copy_from_slice(&header[within..within + h]);
        }
        pos += n as u64;
        i += n;
    }
}

/// The `sha256:<hex>` digest of blob `(seed, size)`, computed by generating it once.
pub fn digest(seed: u64, size: u64) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        fill(seed, pos, &mut buf[..n]);
        h.update(&buf[..n]);
        pos += n as u64;
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// The digests of several blobs of one size, computed on all cores.
pub fn digests(seeds: &[u64], size: u64) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(seeds.len().max(1));
    let mut out = vec![String::new(); seeds.len()];
    let per = seeds.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (seeds, out) in seeds.chunks(per).zip(out.chunks_mut(per)) {
            s.spawn(move || {
                for (seed, o) in seeds.iter().zip(out) {
                    *o = digest(*seed, size);
                }
            });
        }
    });
    out
}

/// The `sha256:<hex>` digest of `data`.
pub fn sha256_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A small, deterministic pseudo-random stream (for choosing operations in `mixed`).
pub fn unit_float(seed: u64, i: u64) -> f64 {
    let mut s = seed ^ i.wrapping_mul(0x2545_F491_4F6C_DD1D);
    (splitmix(&mut s) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(seed: u64, size: usize) -> Vec<u8> {
        let mut v = vec![0u8; size];
        fill(seed, 0, &mut v);
        v
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        assert_eq!(whole(7, 300_000), whole(7, 300_000));
        assert_ne!(whole(7, 4096), whole(8, 4096));
        // A shorter blob is a prefix of a longer one with the same seed.
        assert_eq!(whole(7, 1000)[..], whole(7, 300_000)[..1000]);
    }

    #[test]
    fn any_offset_matches_the_whole() {
        let all = whole(42, 5 * BLOCK + 123);
        for &(off, len) in &[(0, 1), (3, 20), (15, 2), (BLOCK - 5, 10), (BLOCK, BLOCK), (100, 3 * BLOCK + 77)]
        {
            let mut part = vec![0u8; len];
            fill(42, off as u64, &mut part);
            assert_eq!(part[..], all[off..off + len], "offset {off} len {len}");
        }
    }

    #[test]
    fn blocks_differ_and_do_not_compress_trivially() {
        let v = whole(1, 4 * BLOCK);
        let blocks: Vec<&[u8]> = v.chunks(BLOCK).collect();
        for i in 0..blocks.len() {
            for j in i + 1..blocks.len() {
                assert_ne!(blocks[i], blocks[j]);
            }
        }
        let zeros = v.iter().filter(|&&b| b == 0).count();
        assert!(zeros < v.len() / 100, "{zeros} zero bytes");
    }

    #[test]
    fn precomputed_digest_matches_sha256_of_generated_bytes() {
        for &size in &[0usize, 1, 17, BLOCK, (1 << 20) + 3, 3 * (1 << 20) - 1] {
            let bytes = whole(99, size);
            assert_eq!(digest(99, size as u64), sha256_of(&bytes), "size {size}");
        }
        assert_eq!(sha256_of(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let seeds = [1, 2, 3, 4, 5];
        let ds = digests(&seeds, 70_000);
        for (s, d) in seeds.iter().zip(&ds) {
            assert_eq!(*d, digest(*s, 70_000));
        }
    }

    #[test]
    fn unit_floats_are_in_range_and_spread() {
        let n = 10_000;
        let below = (0..n).map(|i| unit_float(5, i)).inspect(|f| assert!((0.0..1.0).contains(f)));
        let below = below.filter(|&f| f < 0.9).count();
        assert!((8_700..9_300).contains(&below), "{below}");
    }
}
