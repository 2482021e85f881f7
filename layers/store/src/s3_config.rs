//! How to reach an S3 bucket: Distribution's `storage.s3` keys, as plain data. Always built, so
//! that configuration can name it without the `s3` feature; [`S3Store`](crate::S3Store) needs
//! the feature.
//!
//! ```
//! let c = donjon_store::S3Config { bucket: "registry".into(), ..Default::default() };
//! assert!(c.redirect.is_none());
//! ```

/// S3's most parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;
/// S3's smallest part (all but the last).
const MIN_PART: u64 = 5 << 20;
/// S3's largest part, and the largest object one `CopyObject` moves.
pub(crate) const MAX_PART: u64 = 5 << 30;

/// Distribution's `multipartcopythresholdsize`, `multipartcopychunksize` and
/// `multipartcopymaxconcurrency`, with its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CopyLimits {
    /// Objects up to this size are moved by one `CopyObject` (at most 5 GiB, S3's limit).
    pub threshold: u64,
    /// The size of each copied part (raised so that no copy needs more than 10,000).
    pub chunk: u64,
    /// Parts copied at once.
    pub concurrency: usize,
}

impl Default for CopyLimits {
    fn default() -> Self {
        Self { threshold: 32 << 20, chunk: 32 << 20, concurrency: 100 }
    }
}

impl CopyLimits {
    /// Whether an object of `size` needs a part copy.
    pub(crate) fn by_parts(&self, size: u64) -> bool {
        size > self.threshold.min(MAX_PART)
    }

    /// The byte ranges of the parts an object of `size` is copied in.
    pub(crate) fn parts(&self, size: u64) -> Vec<std::ops::Range<u64>> {
        let part = self.chunk.max(size.div_ceil(MAX_PARTS)).clamp(MIN_PART, MAX_PART);
        (0..size.div_ceil(part)).map(|i| i * part..((i + 1) * part).min(size)).collect()
    }
}

/// How to reach the bucket: Distribution's `storage.s3` keys.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct S3Config {
    /// `bucket`
    pub bucket: String,
    /// `region` (any string when `endpoint` is set)
    pub region: Option<String>,
    /// `regionendpoint`: a custom endpoint (MinIO, Garage, Ceph…)
    pub endpoint: Option<String>,
    /// `accesskey`; without it, the AWS environment and web-identity chain
    pub access_key: Option<String>,
    /// `secretkey` (never printed)
    #[serde(skip_serializing)]
    pub secret_key: Option<String>,
    /// `rootdirectory`: the key prefix
    pub root: Option<String>,
    /// `forcepathstyle`
    pub path_style: bool,
    /// `skipverify`: accept any TLS certificate
    pub skip_verify: bool,
    /// `chunksize`: the multipart part size (at least 5 MiB; default 10 MiB)
    pub chunk_size: Option<usize>,
    /// Whether to use conditional writes (`If-Match`/`If-None-Match`); on by default.
    pub conditional_writes: Option<bool>,
    /// Answer blob GETs with a 307 to a presigned URL valid this long, instead of streaming
    /// (Distribution's default: redirects on, 20 minutes). `None`: stream.
    #[serde(serialize_with = "secs")]
    pub redirect: Option<std::time::Duration>,
    /// How objects are copied inside the bucket (an upload's commit, garbage collection).
    pub copy: CopyLimits,
}

fn secs<S: serde::Serializer>(d: &Option<std::time::Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format!("{}s", d.as_secs())),
        None => s.serialize_none(),
    }
}

impl std::fmt::Debug for S3Config {
    /// Everything but the secret key, which never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<redacted>"))
            .field("root", &self.root)
            .field("path_style", &self.path_style)
            .field("skip_verify", &self.skip_verify)
            .field("chunk_size", &self.chunk_size)
            .field("conditional_writes", &self.conditional_writes)
            .field("redirect", &self.redirect)
            .field("copy", &self.copy)
            .finish()
    }
}

impl std::fmt::Display for S3Config {
    /// Where the content is: `s3://bucket/prefix at endpoint`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}", self.bucket)?;
        if let Some(root) = self.root.as_deref().map(|r| r.trim_matches('/')).filter(|r| !r.is_empty()) {
            write!(f, "/{root}")?;
        }
        match (&self.endpoint, &self.region) {
            (Some(e), _) => write!(f, " at {e}"),
            (None, Some(r)) => write!(f, " in {r}"),
            (None, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_key_is_never_printed() {
        let c = S3Config {
            bucket: "b".into(),
            root: Some("/donjon/".into()),
            endpoint: Some("http://127.0.0.1:3900".into()),
            secret_key: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.to_string(), "s3://b/donjon at http://127.0.0.1:3900");
    }

    #[test]
    fn parts_cover_the_object_in_order_within_s3s_limits() {
        let l = CopyLimits { threshold: 32 << 20, chunk: 32 << 20, concurrency: 4 };
        assert!(!l.by_parts(32 << 20));
        assert!(l.by_parts((32 << 20) + 1));
        let p = l.parts(100 << 20);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0], 0..32 << 20);
        assert_eq!(p[3], 96 << 20..100 << 20);
        // 10,000 parts at most: a 1 TiB object gets parts over 100 MiB.
        let p = l.parts(1 << 40);
        assert!(p.len() <= 10_000);
        assert_eq!(p.last().unwrap().end, 1 << 40);
        assert!(p.windows(2).all(|w| w[0].end == w[1].start));
        // A part is never under S3's 5 MiB, and a threshold over 5 GiB is 5 GiB.
        let tiny = CopyLimits { threshold: 1, chunk: 1, concurrency: 1 };
        assert_eq!(tiny.parts(12 << 20)[0], 0..5 << 20);
        let huge = CopyLimits { threshold: u64::MAX, ..l };
        assert!(huge.by_parts((5 << 30) + 1));
    }
}
