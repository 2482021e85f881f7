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

use http::{header, HeaderMap, HeaderName, HeaderValue, Uri};

/// `Docker-Content-Digest`
pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
/// `Docker-Upload-UUID`
pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
/// `OCI-Subject`
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
/// `OCI-Filters-Applied`
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
/// `OCI-Tag`: one for each tag a manifest push set.
pub const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");
/// `OCI-Chunk-Min-Length`
pub const OCI_CHUNK_MIN_LENGTH: HeaderName = HeaderName::from_static("oci-chunk-min-length");

/// A response with no body: `status`, `Content-Length: 0`.
pub fn empty(status: http::StatusCode) -> http::Response<crate::Body> {
    let mut r = http::Response::new(crate::Body::empty());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

/// A response with `bytes` as its body (none for a `HEAD`, with the same `Content-Length`).
pub fn with_body(
    status: http::StatusCode,
    content_type: &str,
    bytes: bytes::Bytes,
    head: bool,
) -> http::Response<crate::Body> {
    let len = bytes.len();
    let mut r = http::Response::new(if head { crate::Body::empty() } else { crate::Body::from(bytes) });
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, header_value(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// [`with_body`] as `application/json`.
pub fn json(status: http::StatusCode, bytes: bytes::Bytes, head: bool) -> http::Response<crate::Body> {
    with_body(status, "application/json", bytes, head)
}

/// What a handler returns: its response, or the OCI error that becomes one.
pub type HandlerResult<T = http::Response<crate::Body>> = Result<T, crate::Error>;

/// `text` as an HTTP quoted-string (RFC 9110): `"` and `\` escaped, anything but visible ASCII
/// and space as `?`, so that the result is always a valid header value.
///
/// ```
/// use donjon_core::response::quoted_string;
///
/// assert_eq!(quoted_string(r#"a "b" \ é"#), r#""a \"b\" \\ ?""#);
/// ```
pub fn quoted_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// The most bytes of `Warning` headers one response may carry, all together (the spec's bound).
pub const MAX_WARNING_BYTES: usize = 4096;

/// Adds `Warning: 299 - "<text>"` to a response's headers: the spec's only form (code 299,
/// agent `-`, no date), the text quoted and reduced to visible ASCII. Returns `false`, adding
/// nothing, when the response's warnings would then exceed [`MAX_WARNING_BYTES`].
///
/// ```
/// use donjon_core::response::add_warning;
///
/// let mut h = http::HeaderMap::new();
/// assert!(add_warning(&mut h, r#"the repository "old" is deprecated"#));
/// assert_eq!(h["warning"], r#"299 - "the repository \"old\" is deprecated""#);
/// assert!(!add_warning(&mut h, &"x".repeat(5000)));
/// ```
pub fn add_warning(headers: &mut HeaderMap, text: &str) -> bool {
    let value = format!("299 - {}", quoted_string(text));
    let used: usize = headers.get_all(header::WARNING).iter().map(|v| v.len()).sum();
    if used + value.len() > MAX_WARNING_BYTES {
        return false;
    }
    match HeaderValue::from_str(&value) {
        Ok(v) => {
            headers.append(header::WARNING, v);
            true
        }
        Err(_) => false,
    }
}

/// The `Range` value of an upload holding `size` bytes: `0-<size-1>`, and `0-0` when empty
/// (Distribution's convention, which clients expect).
pub fn upload_range(size: u64) -> HeaderValue {
    header_value(&format!("0-{}", size.saturating_sub(1)))
}

/// A header value from a string that is known to be visible ASCII (digests, names, paths).
pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}

/// What a `last` in a `Link` is encoded with: all but RFC 3986's unreserved characters.
const LINK_PARAM: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A list request's page: `n` (how many; `None` when absent or empty) and `last` (the entry
/// to start after), or `PAGINATION_NUMBER_INVALID` for an `n` that is not a number.
pub fn page(uri: &Uri) -> HandlerResult<(Option<usize>, Option<String>)> {
    let n = match query_param(uri, "n") {
        None => None,
        Some(v) if v.is_empty() => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            crate::Error::new(crate::ErrorCode::PaginationNumberInvalid, format!("invalid page size n={v:?}"))
        })?),
    };
    let last = query_param(uri, "last").map(|l| l.into_owned()).filter(|l| !l.is_empty());
    Ok((n, last))
}

/// The `Link` to a list's next page: `<path?n=…&last=…>; rel="next"`.
pub fn next_link(path: &str, n: usize, last: &str) -> HeaderValue {
    let last = percent_encoding::utf8_percent_encode(last, LINK_PARAM);
    header_value(&format!("<{path}?n={n}&last={last}>; rel=\"next\""))
}

/// The answer to `GET /v2/<name>/tags/list` over all of a repository's `tags`, sorted: the
/// page the request's `n` and `last` ask for, with a `Link` when more follow.
///
/// ```
/// use donjon_core::response::tags_list;
///
/// let uri: http::Uri = "/v2/a/tags/list?n=1&last=1.0".parse().unwrap();
/// let tags = vec!["1.0".to_string(), "1.1".to_string(), "2.0".to_string()];
/// let r = tags_list(&"a".parse().unwrap(), tags, &uri).unwrap();
/// assert_eq!(r.headers()["link"], r#"</v2/a/tags/list?n=1&last=1.1>; rel="next""#);
/// ```
pub fn tags_list(name: &crate::Name, mut tags: Vec<String>, uri: &Uri) -> HandlerResult {
    let (n, last) = page(uri)?;
    if let Some(l) = &last {
        tags.retain(|t| t.as_str() > l.as_str());
    }
    let more = n.is_some_and(|n| tags.len() > n);
    if let Some(n) = n {
        tags.truncate(n);
    }
    let body = serde_json::json!({ "name": name.as_str(), "tags": tags }).to_string();
    let mut r = json(http::StatusCode::OK, body.into(), false);
    if let (true, Some(n), Some(l)) = (more, n, tags.last()) {
        r.headers_mut().insert(header::LINK, next_link(&format!("/v2/{name}/tags/list"), n, l));
    }
    Ok(r)
}

/// The first value of query parameter `key`, percent-decoded (`+` stays `+`).
pub fn query_param<'a>(uri: &'a Uri, key: &str) -> Option<Cow<'a, str>> {
    query_params(uri, key).next()
}

/// An upload chunk's `Content-Range`: `<start>-<end>` (inclusive), also in the
/// `bytes <start>-<end>/<total>` form; `None` unless `start <= end < u64::MAX` (a range to
/// u64::MAX describes more bytes than a length can count).
///
/// ```
/// use donjon_core::response::parse_content_range;
///
/// assert_eq!(parse_content_range("0-1023"), Some((0, 1023)));
/// assert_eq!(parse_content_range("bytes 10-19/20"), Some((10, 19)));
/// assert_eq!(parse_content_range("9-1"), None);
/// ```
pub fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let s = value.trim();
    let s = s.strip_prefix("bytes").map_or(s, |r| r.trim_start_matches([' ', '=']));
    let s = s.split('/').next().unwrap_or("");
    let (a, b) = s.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b && b < u64::MAX).then_some((a, b))
}

/// Every value of query parameter `key`, in order, percent-decoded.
pub fn query_params<'a, 'k>(uri: &'a Uri, key: &'k str) -> impl Iterator<Item = Cow<'a, str>> + use<'a, 'k> {
    uri.query().into_iter().flat_map(|q| q.split('&')).filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy())
    })
}

/// Whether query parameter `key` is present at all.
pub fn has_query_param(uri: &Uri, key: &str) -> bool {
    query_param(uri, key).is_some()
}

/// The host a request was sent to: its `Host` header (HTTP/1.1), or its URI's authority
/// (HTTP/2's `:authority`, where browsers send no `Host`).
///
/// ```
/// let h1 = http::Request::get("/v2/").header("host", "reg.example").body(()).unwrap();
/// assert_eq!(donjon_core::response::request_host(&h1), Some("reg.example"));
/// let h2 = http::Request::get("https://reg.example:5000/v2/").body(()).unwrap();
/// assert_eq!(donjon_core::response::request_host(&h2), Some("reg.example:5000"));
/// ```
pub fn request_host<B>(req: &http::Request<B>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// A `Location` (a redirect, a next page) against the URL it answered: absolute, scheme-relative
/// (`//host/x`), absolute-path (`/x`) or relative to the path's folder (`x`).
///
/// ```
/// use donjon_core::response::resolve_location;
/// let base: http::Uri = "https://reg.example/v2/a/blobs/x".parse().unwrap();
/// assert_eq!(resolve_location(&base, "/cdn/x").unwrap(), "https://reg.example/cdn/x");
/// assert_eq!(resolve_location(&base, "//cdn.example/x").unwrap(), "https://cdn.example/x");
/// assert_eq!(resolve_location(&base, "y").unwrap(), "https://reg.example/v2/a/blobs/y");
/// ```
pub fn resolve_location(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?;
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}").parse().ok();
    }
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}").parse().ok();
    }
    let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
    format!("{scheme}://{authority}{dir}/{location}").parse().ok()
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
        let uri: Uri = "/x?tag=a&n=1&tag=b%2Dc&tag=".parse().unwrap();
        assert_eq!(super::query_params(&uri, "tag").collect::<Vec<_>>(), ["a", "b-c", ""]);
    }

    #[test]
    fn warnings_stay_within_the_spec_bound() {
        let mut h = HeaderMap::new();
        let text = "w".repeat(1000);
        let mut n = 0;
        while add_warning(&mut h, &text) {
            n += 1;
        }
        assert_eq!(n, 4, "four of 1009 bytes fit in 4096");
        let total: usize = h.get_all(header::WARNING).iter().map(|v| v.len()).sum();
        assert!(total <= MAX_WARNING_BYTES);
        let mut h = HeaderMap::new();
        assert!(add_warning(&mut h, "caf\u{e9}\nline"));
        assert_eq!(h[header::WARNING], "299 - \"caf??line\"");
    }

    #[test]
    fn ranges() {
        assert_eq!(upload_range(1), "0-0");
        assert_eq!(upload_range(1024), "0-1023");
    }
}
