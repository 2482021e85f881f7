//! How to reach an S3 bucket: Distribution's `storage.s3` keys, as plain data. Always built, so
//! that configuration can name it without the `s3` feature; [`S3Store`](crate::S3Store) needs
//! the feature.
//!
//! ```
//! let c = donjon_store::S3Config { bucket: "registry".into(), ..Default::default() };
//! assert!(c.redirect.is_none());
//! ```

/// How to reach the bucket: Distribution's `storage.s3` keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
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
}

fn secs<S: serde::Serializer>(d: &Option<std::time::Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format!("{}s", d.as_secs())),
        None => s.serialize_none(),
    }
}
