//! Server-side copies of large objects as a multipart upload of `UploadPartCopy` parts, as
//! Distribution's S3 driver moves them: one `CopyObject` moves at most 5 GiB (S3's limit), and
//! several parts copied at once finish sooner than one long copy. `object_store` has no
//! ranged part copy, so the request is made here, signed with its `AwsAuthorizer`, sent with
//! its HTTP client (the store's TLS options), and the parts completed with its
//! `complete_multipart`.

use std::ops::Range;
use std::sync::Arc;

use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector as _, HttpRequest, ReqwestConnector};
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::signer::Signer as _;
use object_store::ClientOptions;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Tries of one part (each is idempotent).
const TRIES: usize = 3;

/// What a key may hold unencoded in a URL path (RFC 3986's unreserved characters and `/`).
const KEY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');
/// In a query value, `/` is encoded too.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Sends `UploadPartCopy` requests for one S3 client.
pub(crate) struct PartCopier {
    s3: Arc<AmazonS3>,
    http: HttpClient,
    bucket: String,
    region: String,
}

impl std::fmt::Debug for PartCopier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartCopier").field("bucket", &self.bucket).field("region", &self.region).finish()
    }
}

impl PartCopier {
    /// A copier beside `s3`, with the same client options (TLS, plain HTTP, timeouts).
    pub(crate) fn new(
        s3: Arc<AmazonS3>,
        options: &ClientOptions,
        bucket: &str,
        region: &str,
    ) -> object_store::Result<Self> {
        let http = ReqwestConnector::default().connect(options)?;
        Ok(Self { s3, http, bucket: bucket.into(), region: region.into() })
    }

    /// Copies bytes `range` of `from` as part `idx` (from 0) of the multipart upload `upload`
    /// at `to`.
    pub(crate) async fn copy_part(
        &self,
        from: &Path,
        to: &Path,
        upload: &str,
        idx: usize,
        range: Range<u64>,
    ) -> Result<PartId, String> {
        // The object's URL as object_store addresses it (path or virtual-hosted style, the
        // endpoint's encoding): a presigned URL without its query.
        let mut url = self
            .s3
            .signed_url(http::Method::PUT, to, std::time::Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        url.set_query(None);
        let uri = format!("{url}?partNumber={}&uploadId={}", idx + 1, utf8_percent_encode(upload, QUERY));
        let source = format!("{}/{}", self.bucket, utf8_percent_encode(from.as_ref(), KEY));
        let source_range = format!("bytes={}-{}", range.start, range.end - 1);
        let mut last = String::new();
        for attempt in 0..TRIES {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
            }
            match self.send(&uri, &source, &source_range).await {
                Ok(etag) => return Ok(PartId { content_id: etag }),
                Err((e, retry)) if retry => last = e,
                Err((e, _)) => return Err(e),
            }
        }
        Err(last)
    }

    /// One try: the part's ETag, or the failure and whether another try may succeed.
    async fn send(&self, uri: &str, source: &str, range: &str) -> Result<String, (String, bool)> {
        let credential = self.s3.credentials().get_credential().await.map_err(|e| (e.to_string(), true))?;
        let mut req: HttpRequest = http::Request::put(uri)
            .header("x-amz-copy-source", source)
            .header("x-amz-copy-source-range", range)
            .body(object_store::client::HttpRequestBody::empty())
            .map_err(|e| (e.to_string(), false))?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut req, None)
            .map_err(|e| (e.to_string(), false))?;
        let resp = self.http.execute(req).await.map_err(|e| (format!("UploadPartCopy: {e}"), true))?;
        let status = resp.status();
        let body = resp.into_body().bytes().await.map_err(|e| (e.to_string(), true))?;
        let body = String::from_utf8_lossy(&body);
        // S3 may answer 200 with an error in the body.
        match etag(&body) {
            Some(etag) if status.is_success() => Ok(etag),
            _ => {
                Err((format!("UploadPartCopy answered {status}: {}", body.trim()), status.is_server_error()))
            }
        }
    }
}

/// The `ETag` of a `CopyPartResult`.
fn etag(body: &str) -> Option<String> {
    let result = &body[body.find("<CopyPartResult")?..];
    let start = result.find("<ETag>")? + "<ETag>".len();
    let end = start + result[start..].find("</ETag>")?;
    Some(result[start..end].replace("&quot;", "\"").replace("&#34;", "\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etag_comes_from_a_copy_part_result_only() {
        let ok = r#"<?xml version="1.0"?><CopyPartResult><LastModified>x</LastModified><ETag>&quot;abc&quot;</ETag></CopyPartResult>"#;
        assert_eq!(etag(ok).as_deref(), Some("\"abc\""));
        let err = "<Error><Code>InternalError</Code><ETag>no</ETag></Error>";
        assert_eq!(etag(err), None);
    }
}
