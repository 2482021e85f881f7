//! How to reach an S3 bucket: Distribution's `storage.s3` keys, as plain data. Always built, so
//! that configuration can name it without the `s3` feature; [`S3Store`](crate::S3Store) needs
//! the feature.
//!
//! ```
//! let c = donjon_store::S3Config { bucket: "registry".into(), ..Default::default() };
//! assert!(c.redirect.is_none());
//! ```

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
}
