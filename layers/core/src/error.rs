//! The OCI error response: `{"errors":[{"code","message","detail"}]}` with the spec's status.
//!
//! ```
//! use donjon_core::{Error, ErrorCode};
//!
//! let resp = Error::new(ErrorCode::BlobUnknown, "blob unknown to registry").into_response();
//! assert_eq!(resp.status(), 404);
//! assert_eq!(resp.headers()["content-type"], "application/json");
//! ```

use std::borrow::Cow;
use std::fmt;

use http::{header, HeaderName, HeaderValue, StatusCode};

use crate::body::Body;
use crate::store::StoreError;

/// The error codes of the distribution spec, plus the few donjon adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `BLOB_UNKNOWN`
    BlobUnknown,
    /// `BLOB_UPLOAD_INVALID`
    BlobUploadInvalid,
    /// `BLOB_UPLOAD_UNKNOWN`
    BlobUploadUnknown,
    /// `DIGEST_INVALID`
    DigestInvalid,
    /// `MANIFEST_BLOB_UNKNOWN`
    ManifestBlobUnknown,
    /// `MANIFEST_INVALID`
    ManifestInvalid,
    /// `MANIFEST_UNKNOWN`
    ManifestUnknown,
    /// `NAME_INVALID`
    NameInvalid,
    /// `NAME_UNKNOWN`
    NameUnknown,
    /// `SIZE_INVALID`
    SizeInvalid,
    /// `TAG_INVALID` (Distribution's code for a malformed tag)
    TagInvalid,
    /// `UNAUTHORIZED`
    Unauthorized,
    /// `DENIED`
    Denied,
    /// `UNSUPPORTED`
    Unsupported,
    /// `TOOMANYREQUESTS`
    TooManyRequests,
    /// `PAGINATION_NUMBER_INVALID` (Distribution's): an `n` that is not a number.
    PaginationNumberInvalid,
    /// `RANGE_INVALID`: a `Range` or `Content-Range` that cannot be satisfied.
    RangeInvalid,
    /// `UNAVAILABLE`: a backend is failing.
    Unavailable,
    /// `UNKNOWN`
    Unknown,
}

impl ErrorCode {
    /// The code as it appears in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::TagInvalid => "TAG_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::RangeInvalid => "RANGE_INVALID",
            Self::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Self::Unavailable => "UNAVAILABLE",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// The status the spec gives this code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BlobUnknown | Self::BlobUploadUnknown | Self::ManifestUnknown => StatusCode::NOT_FOUND,
            Self::NameUnknown => StatusCode::NOT_FOUND,
            Self::ManifestBlobUnknown => StatusCode::BAD_REQUEST,
            Self::BlobUploadInvalid
            | Self::DigestInvalid
            | Self::ManifestInvalid
            | Self::NameInvalid
            | Self::SizeInvalid
            | Self::TagInvalid
            | Self::PaginationNumberInvalid => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Denied => StatusCode::FORBIDDEN,
            Self::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An OCI error, ready to become a response.
#[derive(Debug, Clone)]
pub struct Error {
    code: ErrorCode,
    message: Cow<'static, str>,
    detail: Option<serde_json::Value>,
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    warnings: Vec<Cow<'static, str>>,
}

impl Error {
    /// An error with the code's own status.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
            status: code.status(),
            headers: vec![],
            warnings: vec![],
        }
    }

    /// Sets the `detail` field.
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Overrides the status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds a response header (`Range`, `Location`, `WWW-Authenticate`…).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds a `Warning` header ([`crate::response::add_warning`]).
    pub fn with_warning(mut self, text: impl Into<Cow<'static, str>>) -> Self {
        self.warnings.push(text.into());
        self
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut e = serde_json::json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(d) = &self.detail {
            e["detail"] = d.clone();
        }
        serde_json::json!({ "errors": [e] })
    }

    /// The response.
    pub fn into_response(self) -> http::Response<Body> {
        let body = self.body().to_string();
        let mut resp = http::Response::new(Body::from(body.clone()));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        for (k, v) in self.headers {
            h.insert(k, v);
        }
        for w in &self.warnings {
            crate::response::add_warning(h, w);
        }
        resp
    }

    /// `UNSUPPORTED`: the method is not allowed on this route.
    pub fn method_not_allowed() -> Self {
        Self::new(ErrorCode::Unsupported, "the operation is unsupported")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BlobUnknown(d) => Self::new(ErrorCode::BlobUnknown, "blob unknown to registry")
                .with_detail(serde_json::json!({ "digest": d.as_str() })),
            StoreError::ManifestUnknown(r) => {
                Self::new(ErrorCode::ManifestUnknown, "manifest unknown to registry")
                    .with_detail(serde_json::json!({ "reference": r }))
            }
            StoreError::NameUnknown(n) => {
                Self::new(ErrorCode::NameUnknown, "repository name not known to registry")
                    .with_detail(serde_json::json!({ "name": n.as_str() }))
            }
            StoreError::UploadUnknown => {
                Self::new(ErrorCode::BlobUploadUnknown, "blob upload unknown to registry")
            }
            StoreError::DigestMismatch { expected, actual } => {
                Self::new(ErrorCode::DigestInvalid, "provided digest did not match uploaded content")
                    .with_detail(serde_json::json!({
                        "expected": expected.as_str(), "actual": actual.as_str()
                    }))
            }
            StoreError::RangeInvalid { size } => {
                let v = HeaderValue::from_str(&format!("bytes */{size}"))
                    .unwrap_or(HeaderValue::from_static("bytes */0"));
                Self::new(ErrorCode::RangeInvalid, "requested range is not satisfiable")
                    .with_detail(serde_json::json!({ "size": size }))
                    .with_header(header::CONTENT_RANGE, v)
            }
            StoreError::UploadOffset { size } => Self::new(
                ErrorCode::BlobUploadInvalid,
                format!("chunk does not start at the end of the upload ({size} bytes so far)"),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            .with_range(size),
            StoreError::Body(e) => {
                Self::new(ErrorCode::BlobUploadInvalid, format!("reading the request body failed: {e}"))
            }
            StoreError::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                tracing::error!(error = %e, "storage full");
                Self::new(
                    ErrorCode::Unavailable,
                    "the registry's storage is full: no space left for this upload",
                )
                .with_status(StatusCode::INSUFFICIENT_STORAGE)
            }
            StoreError::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::NotConnected
                        | std::io::ErrorKind::TimedOut
                ) =>
            {
                tracing::error!(error = %e, "storage unreachable");
                Self::new(
                    ErrorCode::Unavailable,
                    "the registry cannot reach its storage (its object store is down or unreachable): \
                     retry shortly",
                )
                .with_status(StatusCode::SERVICE_UNAVAILABLE)
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("5"))
            }
            StoreError::Io(e) => {
                tracing::error!(error = %e, "storage failure");
                Self::new(ErrorCode::Unavailable, "storage backend failure")
            }
            StoreError::Corrupt(what) => {
                tracing::error!(%what, "corrupt storage entry");
                Self::new(ErrorCode::Unknown, "corrupt storage entry")
            }
        }
    }
}

impl Error {
    /// Sets the `Range: 0-<size-1>` header of an upload's progress.
    pub fn with_range(self, size: u64) -> Self {
        let v = crate::response::upload_range(size);
        self.with_header(header::RANGE, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn body_has_spec_shape() {
        let resp = Error::new(ErrorCode::NameInvalid, "bad name")
            .with_detail(serde_json::json!({"name": "X"}))
            .into_response();
        assert_eq!(resp.status(), 400);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "NAME_INVALID");
        assert_eq!(v["errors"][0]["message"], "bad name");
        assert_eq!(v["errors"][0]["detail"]["name"], "X");
    }

    #[test]
    fn statuses() {
        assert_eq!(ErrorCode::ManifestUnknown.status(), 404);
        assert_eq!(ErrorCode::Unauthorized.status(), 401);
        assert_eq!(ErrorCode::Denied.status(), 403);
        assert_eq!(ErrorCode::Unsupported.status(), 405);
        assert_eq!(ErrorCode::TooManyRequests.status(), 429);
    }

    #[test]
    fn upload_offset_carries_range() {
        let e: Error = StoreError::UploadOffset { size: 10 }.into();
        assert_eq!(e.status(), 416);
        let resp = e.into_response();
        assert_eq!(resp.headers()["range"], "0-9");
    }
}
