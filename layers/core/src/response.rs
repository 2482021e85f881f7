//! Header names and small helpers for building registry responses.
//!
//! ```
//! use donjon_core::response::{query_param, upload_range};
//!
//! assert_eq!(upload_range(0), "0-0");
//! assert_eq!(upload_range(10), "0-9");
//! let uri: http::Uri = "/v2/a/tags/list?n=2&last=b%2Bc".parse().unwrap();
//! assert_eq!(query_param(&uri, "last").as_deref(), Some("b+c"));
//! ```

use std::borrow::Cow;

use http::{HeaderName, HeaderValue, Uri};

/// `Docker-Content-Digest`
pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
/// `Docker-Upload-UUID`
pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
/// `OCI-Subject`
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
/// `OCI-Filters-Applied`
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
/// `OCI-Chunk-Min-Length`
pub const OCI_CHUNK_MIN_LENGTH: HeaderName = HeaderName::from_static("oci-chunk-min-length");

/// The `Range` value of an upload holding `size` bytes: `0-<size-1>`, and `0-0` when empty
/// (Distribution's convention, which clients expect).
pub fn upload_range(size: u64) -> HeaderValue {
    header_value(&format!("0-{}", size.saturating_sub(1)))
}

/// A header value from a string that is known to be visible ASCII (digests, names, paths).
pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}

/// The first value of query parameter `key`, percent-decoded (`+` stays `+`).
pub fn query_param<'a>(uri: &'a Uri, key: &str) -> Option<Cow<'a, str>> {
    let query = uri.query()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy())
    })
}

/// Whether query parameter `key` is present at all.
pub fn has_query_param(uri: &Uri, key: &str) -> bool {
    query_param(uri, key).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        let uri: Uri = "/x?a=1&b=&c&d=%41".parse().unwrap();
        assert_eq!(query_param(&uri, "a").as_deref(), Some("1"));
        assert_eq!(query_param(&uri, "b").as_deref(), Some(""));
        assert_eq!(query_param(&uri, "c").as_deref(), Some(""));
        assert_eq!(query_param(&uri, "d").as_deref(), Some("A"));
        assert_eq!(query_param(&uri, "e"), None);
        assert!(!has_query_param(&"/x".parse().unwrap(), "a"));
    }

    #[test]
    fn ranges() {
        assert_eq!(upload_range(1), "0-0");
        assert_eq!(upload_range(1024), "0-1023");
    }
}
