//! The HTTP/1.1 client: hyper-util's pooled legacy client, a generated streaming body, and
//! response draining with time-to-first-byte.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::gen;

/// The request body type: a fixed buffer or generated data.
pub type Body = BoxBody<Bytes, Infallible>;

/// Bytes per socket read. A small buffer that stays in the CPU cache makes the client cheaper:
/// one 1 GiB stream over loopback measured 3.6-4.4 GB/s with 32 KiB reads against 2.6-3.2 GB/s
/// with hyper's adaptive buffer (up to 400 KiB), the server unchanged. The harness must not be
/// what limits the registry it measures.
const READ_BUF: usize = 32 * 1024;

/// Bytes per frame of a generated body.
const FRAME: usize = 256 * 1024;

/// A body streaming bytes `[pos, end)` of generated blob `seed`.
pub struct GenBody {
    seed: u64,
    pos: u64,
    end: u64,
}

impl GenBody {
    pub fn new(seed: u64, start: u64, end: u64) -> Self {
        GenBody { seed, pos: start, end }
    }
}

impl http_body::Body for GenBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.pos >= self.end {
            return Poll::Ready(None);
        }
        let n = (self.end - self.pos).min(FRAME as u64) as usize;
        let mut buf = vec![0u8; n];
        gen::fill(self.seed, self.pos, &mut buf);
        self.pos += n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end.saturating_sub(self.pos))
    }
}

pub fn empty() -> Body {
    Empty::new().boxed()
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

pub fn generated(seed: u64, start: u64, end: u64) -> Body {
    GenBody::new(seed, start, end).boxed()
}

/// Why an operation failed. The `key` groups failures in the report.
#[derive(Debug)]
pub struct Fail {
    pub key: String,
    pub detail: String,
}

impl Fail {
    fn status(method: &Method, what: &str, status: StatusCode, body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_string();
        Fail {
            key: format!("HTTP {} on {method} {what}", status.as_u16()),
            detail: format!("{method} {what}: {status}: {text}"),
        }
    }

    pub fn other(key: impl Into<String>, detail: impl Into<String>) -> Self {
        Fail { key: key.into(), detail: detail.into() }
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// A completed response: status, headers, body size, and when its first body byte arrived.
pub struct Done {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub bytes: u64,
    /// Time from sending to the first body byte (to the response head when the body is empty).
    pub ttfb: Duration,
    /// The first bytes of the body, kept only when asked (for small documents).
    pub body: Vec<u8>,
}

/// A registry endpoint.
pub struct Http {
    client: Client<HttpConnector, Body>,
    base: String,
    auth: Option<HeaderValue>,
    /// Print every request, its status and its time to stderr.
    pub trace: bool,
}

impl Http {
    pub fn new(url: &str, user: Option<&str>, password: Option<&str>, pool: usize) -> Result<Self, String> {
        let base = url.trim_end_matches('/').to_string();
        if base.starts_with("https://") {
            return Err(format!("{url}: https is not supported by this harness; use http://"));
        }
        let uri: Uri = base.parse().map_err(|e| format!("{url}: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!("{url}: expected http://HOST[:PORT]"));
        }
        let auth = match (user, password) {
            (Some(u), p) => {
                let v =
                    format!("Basic {}", crate::util::base64(format!("{u}:{}", p.unwrap_or("")).as_bytes()));
                Some(HeaderValue::from_str(&v).map_err(|e| e.to_string())?)
            }
            (None, Some(_)) => return Err("--password needs --user".into()),
            (None, None) => None,
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool.max(1))
            .pool_idle_timeout(Duration::from_secs(30))
            .http1_read_buf_exact_size(READ_BUF)
            .build(connector);
        Ok(Http { client, base, auth, trace: false })
    }

    /// An absolute URL for a path (`/v2/...`) or a `Location` value (absolute or relative).
    pub fn resolve(&self, loc: &str) -> String {
        if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_string()
        } else if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            format!("{}/{loc}", self.base)
        }
    }

    /// Sends one request and drains its response, following redirects for GET and HEAD.
    /// Non-2xx answers are failures. `keep` bounds how much of the body is kept in `Done::body`.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, HeaderValue)],
        body: Body,
        keep: usize,
    ) -> Result<Done, Fail> {
        let start = Instant::now();
        let mut url = url.to_string();
        let mut body = Some(body);
        for _hop in 0..4 {
            let uri: Uri = url.parse().map_err(|e| Fail::other("bad URL", format!("{url}: {e}")))?;
            if uri.scheme_str() == Some("https") {
                return Err(Fail::other("https redirect (unsupported)", format!("{method} {url}")));
            }
            let same_host = url.starts_with(&self.base);
            let mut req = Request::builder().method(method.clone()).uri(uri);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let (Some(a), true) = (&self.auth, same_host) {
                req = req.header(header::AUTHORIZATION, a);
            }
            let req = req
                .body(body.take().unwrap_or_else(empty))
                .map_err(|e| Fail::other("bad request", format!("{method} {url}: {e}")))?;
            let resp = self.client.request(req).await.map_err(|e| conn_fail(&method, &url, &e))?;
            if resp.status().is_redirection() && (method == Method::GET || method == Method::HEAD) {
                if let Some(loc) = resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()) {
                    let next = self.resolve(loc);
                    drain(resp, 0, start, &method, &url).await?;
                    url = next;
                    continue;
                }
            }
            let what = short_path(&url);
            let done = drain(resp, keep, start, &method, &what).await?;
            if self.trace {
                eprintln!(
                    "  {method} {what} -> {} in {:.3} ms",
                    done.status.as_u16(),
                    start.elapsed().as_secs_f64() * 1e3
                );
            }
            if !done.status.is_success() {
                return Err(Fail::status(&method, &shape(&what), done.status, &done.body));
            }
            return Ok(done);
        }
        Err(Fail::other("too many redirects", format!("{method} {url}")))
    }
}

async fn drain(
    resp: Response<Incoming>,
    keep: usize,
    start: Instant,
    method: &Method,
    what: &str,
) -> Result<Done, Fail> {
    let head_at = start.elapsed();
    let status = resp.status();
    let (parts, mut body) = resp.into_parts();
    // Keep error bodies for the report even when the caller does not want the body.
    let keep = if status.is_success() { keep } else { keep.max(512) };
    let mut kept = Vec::new();
    let mut bytes = 0u64;
    let mut first: Option<Duration> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Fail::other(
                format!("body error on {method} {}", shape(what)),
                format!("{method} {what}: after {bytes} bytes: {}", chain(&e)),
            )
        })?;
        if let Some(d) = frame.data_ref() {
            if !d.is_empty() && first.is_none() {
                first = Some(start.elapsed());
            }
            bytes += d.len() as u64;
            if kept.len() < keep {
                kept.extend_from_slice(&d[..d.len().min(keep - kept.len())]);
            }
        }
    }
    let _ = body.is_end_stream();
    Ok(Done { status, headers: parts.headers, bytes, ttfb: first.unwrap_or(head_at), body: kept })
}

fn conn_fail(method: &Method, url: &str, e: &hyper_util::client::legacy::Error) -> Fail {
    let msg = chain(e);
    let kind = if e.is_connect() { "connect error" } else { "connection error" };
    Fail::other(format!("{kind} on {method} {}", shape(&short_path(url))), format!("{method} {url}: {msg}"))
}

/// An error and its sources, joined.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn short_path(url: &str) -> String {
    match url.find("://").and_then(|i| url[i + 3..].find('/').map(|j| i + 3 + j)) {
        Some(p) => url[p..].to_string(),
        None => url.to_string(),
    }
}

/// A path with its variable parts (digests, upload ids, queries) elided, to group failures.
fn shape(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let mut out = Vec::new();
    let segs: Vec<&str> = path.split('/').collect();
    for (i, s) in segs.iter().enumerate() {
        let prev = if i > 0 { segs[i - 1] } else { "" };
        if s.starts_with("sha256:") || s.starts_with("sha512:") {
            out.push("<digest>");
        } else if prev == "uploads" && !s.is_empty() {
            out.push("<id>");
        } else {
            out.push(s);
        }
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gen_body_streams_the_generated_bytes() {
        let size = 3 * FRAME as u64 + 5;
        let body = GenBody::new(3, 0, size);
        assert_eq!(body.size_hint().exact(), Some(size));
        let got = body.collect().await.unwrap().to_bytes();
        let mut want = vec![0u8; size as usize];
        gen::fill(3, 0, &mut want);
        assert_eq!(got[..], want[..]);
        let part = GenBody::new(3, 1000, 2000).collect().await.unwrap().to_bytes();
        assert_eq!(part[..], want[1000..2000]);
    }

    #[test]
    fn shapes_and_resolution() {
        assert_eq!(shape("/v2/a/b/blobs/sha256:abcd"), "/v2/a/b/blobs/<digest>");
        assert_eq!(shape("/v2/a/blobs/uploads/1234?digest=x"), "/v2/a/blobs/uploads/<id>");
        assert_eq!(shape("/v2/a/blobs/uploads/"), "/v2/a/blobs/uploads/");
        assert_eq!(short_path("http://h:1/v2/x?y"), "/v2/x?y");
        let h = Http::new("http://127.0.0.1:5000/", None, None, 1).unwrap();
        assert_eq!(h.resolve("/v2/x"), "http://127.0.0.1:5000/v2/x");
        assert_eq!(h.resolve("http://o/v2/x"), "http://o/v2/x");
        assert!(Http::new("https://x", None, None, 1).is_err());
        assert!(Http::new("ftp://x", None, None, 1).is_err());
        assert!(Http::new("http://x", None, Some("p"), 1).is_err());
    }
}
