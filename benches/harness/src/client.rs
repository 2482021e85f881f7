//! The HTTP/1.1 client: hyper-util's pooled legacy client over TCP or TLS (hyper-rustls, the
//! system's roots plus `--ca-cert`), registry authentication (Basic, and the token flow of
//! [`donjon_core::challenge`]), a generated streaming body, and response draining with time-to-first-byte.

use std::convert::Infallible;
use std::path::Path;
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

use crate::gen;
use donjon_core::challenge::{self as auth, Tokens};

/// The body type the hyper client sends: a fixed buffer or generated data.
pub type Body = BoxBody<Bytes, Infallible>;

/// Bytes per socket read. A small buffer that stays in the CPU cache makes the client cheaper:
/// one 1 GiB stream over loopback measured 3.6-4.4 GB/s with 32 KiB reads against 2.6-3.2 GB/s
/// with hyper's adaptive buffer (up to 400 KiB), the server unchanged. The harness must not be
/// what limits the registry it measures.
const READ_BUF: usize = 32 * 1024;

/// Bytes per frame of a generated body.
const FRAME: usize = 256 * 1024;

/// Bytes of a token endpoint's answer kept for parsing.
const TOKEN_ANSWER_MAX: usize = 64 * 1024;

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

/// A request body as a recipe rather than a stream: every attempt of a request makes its body
/// afresh, so the one retry after an authentication challenge can resend even a generated
/// gigabyte.
#[derive(Clone, Debug)]
pub enum Payload {
    Empty,
    Full(Bytes),
    /// Bytes `[start, end)` of generated blob `seed`.
    Generated {
        seed: u64,
        start: u64,
        end: u64,
    },
}

impl Payload {
    fn body(&self) -> Body {
        match self {
            Payload::Empty => Empty::new().boxed(),
            Payload::Full(b) => Full::new(b.clone()).boxed(),
            Payload::Generated { seed, start, end } => GenBody::new(*seed, *start, *end).boxed(),
        }
    }
}

pub fn empty() -> Payload {
    Payload::Empty
}

pub fn full(b: impl Into<Bytes>) -> Payload {
    Payload::Full(b.into())
}

pub fn generated(seed: u64, start: u64, end: u64) -> Payload {
    Payload::Generated { seed, start, end }
}

/// Why an operation failed. The `key` groups failures in the report.
#[derive(Debug)]
pub struct Fail {
    pub key: String,
    pub detail: String,
}

impl Fail {
    fn status(method: &Method, what: &str, status: StatusCode, body: &[u8]) -> Self {
        Fail {
            key: format!("HTTP {} on {method} {what}", status.as_u16()),
            detail: format!("{method} {what}: {status}: {}", excerpt(body)),
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

/// The start of a body, as text, for error messages.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_string()
}

/// A completed response: status, headers, body size, and when its first body byte arrived.
#[derive(Debug)]
pub struct Done {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub bytes: u64,
    /// Time from sending to the first body byte (to the response head when the body is empty).
    pub ttfb: Duration,
    /// The first bytes of the body, kept only when asked (for small documents).
    pub body: Vec<u8>,
}

/// Scheme, lowercased host and port (explicit or the scheme's default) of a URL.
type Origin = (String, String, u16);

fn origin(uri: &Uri) -> Option<Origin> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let port = uri.port_u16().or(match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })?;
    Some((scheme, uri.host()?.to_ascii_lowercase(), port))
}

/// A registry endpoint.
///
/// # Authentication
///
/// Credentials go to the registry's own origin only, never to a redirect's target (a presigned
/// object-store URL carries its own), except that a token request sends Basic credentials to
/// the realm the registry names. With `--user`, Basic is sent pre-emptively, as registries with
/// plain Basic auth expect. A registry that answers `401` with a `Bearer` challenge gets the
/// token flow instead: the client asks the challenge's realm for a token for its service and
/// scope (with Basic credentials when given, anonymously otherwise), retries the request once
/// with it, and caches it by the scope the request needs ([`auth::scope_for`]) until shortly
/// before it expires, so that later requests of that scope carry it from the start. A `401`
/// despite a cached token drops it for a fresh one.
///
/// Which requests meet the challenge: bodies are [`Payload`] recipes, so any request can be
/// resent, but a large body is never streamed only to be refused, because every workload reaches
/// a scope with a bodiless request first. Reads are bodiless; a push starts with the empty
/// `POST /blobs/uploads/`, whose challenge yields the `pull,push` token that its `PATCH` and
/// `PUT` (and the manifest `PUT` of the same repository) then find in the cache.
pub struct Http {
    client: donjon_core::https::Client<Body>,
    base: String,
    origin: Origin,
    basic: Option<HeaderValue>,
    tokens: Tokens,
    /// Print every request, its status and its time to stderr.
    pub trace: bool,
}

impl Http {
    /// A client for the registry at `url` (`http://` or `https://`), trusting the system's roots
    /// and the PEM certificates of `ca_cert`, with at most `pool` idle connections per host.
    pub fn new(
        url: &str,
        user: Option<&str>,
        password: Option<&str>,
        pool: usize,
        ca_cert: Option<&Path>,
    ) -> Result<Self, String> {
        let base = url.trim_end_matches('/').to_string();
        let uri: Uri = base.parse().map_err(|e| format!("{url}: {e}"))?;
        let origin = match (uri.scheme_str(), origin(&uri)) {
            (Some("http" | "https"), Some(o)) => o,
            _ => return Err(format!("{url}: expected http(s)://HOST[:PORT]")),
        };
        let basic = match (user, password) {
            (Some(u), p) => Some(auth::basic(u, p.unwrap_or(""))?),
            (None, Some(_)) => return Err("--password needs --user".into()),
            (None, None) => None,
        };
        let tls = donjon_core::https::tls_config(ca_cert).map_err(|e| format!("--ca-cert: {e}"))?;
        let client = donjon_core::https::ClientBuilder::new()
            .pool_max_idle_per_host(pool.max(1))
            .pool_idle_timeout(Duration::from_secs(30))
            .read_buf_exact_size(READ_BUF)
            .build(tls);
        Ok(Http { client, base, origin, basic, tokens: Tokens::default(), trace: false })
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

    /// Sends one request and drains its response, answering an authentication challenge of the
    /// registry and following redirects (to any origin, http or https) for GET and HEAD.
    /// Non-2xx answers are failures. `keep` bounds how much of the body is kept in `Done::body`.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, HeaderValue)],
        body: Payload,
        keep: usize,
    ) -> Result<Done, Fail> {
        let start = Instant::now();
        let mut url = url.to_string();
        for _hop in 0..4 {
            let uri: Uri = url.parse().map_err(|e| Fail::other("bad URL", format!("{url}: {e}")))?;
            let resp = if origin(&uri).as_ref() == Some(&self.origin) {
                self.send_to_registry(&method, &uri, headers, &body).await?
            } else {
                self.send(&method, &uri, headers, &body, None).await?
            };
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

    /// One request to the registry with the best credentials at hand (a cached token for its
    /// scope, else Basic), resent once with new ones if it is challenged.
    async fn send_to_registry(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &[(header::HeaderName, HeaderValue)],
        body: &Payload,
    ) -> Result<Response<Incoming>, Fail> {
        let scope = auth::scope_for(method, uri.path());
        let sent = self.tokens.get(&scope).or_else(|| self.basic.clone());
        let resp = self.send(method, uri, headers, body, sent.as_ref()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenges = auth::challenges(resp.headers());
        // Basic is worth a retry only if it was not what was just refused.
        let basic = self.basic.as_ref().filter(|b| sent.as_ref() != Some(*b));
        let retry = if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            self.discard(resp, method, uri).await;
            self.token(bearer, &scope, sent.as_ref()).await?
        } else if let Some(basic) = basic.filter(|_| challenges.iter().any(|c| c.scheme == "basic")) {
            self.discard(resp, method, uri).await;
            basic.clone()
        } else {
            return Ok(resp);
        };
        self.send(method, uri, headers, body, Some(&retry)).await
    }

    /// The token answering `challenge` for requests of `scope`: the cached one if another
    /// request fetched it since this one sent `sent`, else a new one from the realm.
    async fn token(
        &self,
        challenge: &auth::Challenge,
        scope: &str,
        sent: Option<&HeaderValue>,
    ) -> Result<HeaderValue, Fail> {
        let _one_at_a_time = self.tokens.fetching.lock().await;
        if let Some(t) = self.tokens.get(scope).filter(|t| Some(t) != sent) {
            return Ok(t);
        }
        let url = auth::token_url(challenge).map_err(|e| Fail::other("bad Bearer challenge", e))?;
        let (token, ttl) = self.fetch_token(&url).await?;
        if self.trace {
            eprintln!("  token for {:?}: {} s", challenge.param("scope").unwrap_or(""), ttl.as_secs());
        }
        self.tokens.put(scope, token.clone(), ttl);
        Ok(token)
    }

    /// `GET url` at a token endpoint, with Basic credentials when there are some.
    async fn fetch_token(&self, url: &str) -> Result<(HeaderValue, Duration), Fail> {
        let realm = url.split('?').next().unwrap_or(url);
        let uri: Uri = url.parse().map_err(|e| Fail::other("bad Bearer challenge", format!("{url}: {e}")))?;
        let start = Instant::now();
        let resp = self.send(&Method::GET, &uri, &[], &Payload::Empty, self.basic.as_ref()).await?;
        let done = drain(resp, TOKEN_ANSWER_MAX, start, &Method::GET, realm).await?;
        if !done.status.is_success() {
            return Err(Fail::other(
                format!("token request failed (HTTP {})", done.status.as_u16()),
                format!("token request to {realm} failed: {}: {}", done.status, excerpt(&done.body)),
            ));
        }
        auth::parse_token(&done.body)
            .map_err(|e| Fail::other("bad token answer", format!("token request to {realm}: {e}")))
    }

    /// Drains a challenged response so that its connection can serve the retry.
    async fn discard(&self, resp: Response<Incoming>, method: &Method, uri: &Uri) {
        let what = short_path(&uri.to_string());
        if self.trace {
            eprintln!("  {method} {what} -> 401, authenticating");
        }
        let _ = drain(resp, 0, Instant::now(), method, &what).await;
    }

    /// One request, as is.
    async fn send(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &[(header::HeaderName, HeaderValue)],
        body: &Payload,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, Fail> {
        let mut req = Request::builder().method(method.clone()).uri(uri.clone());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        let req =
            req.body(body.body()).map_err(|e| Fail::other("bad request", format!("{method} {uri}: {e}")))?;
        self.client.request(req).await.map_err(|e| conn_fail(method, &uri.to_string(), &e))
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use tokio::net::TcpListener;

    use super::*;
    use std::sync::Arc;

    type Handler = Arc<dyn Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

    /// Serves `handler` on 127.0.0.1 (over TLS with `tls`) until the test ends; its base URL.
    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>, handler: Handler) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url =
            format!("{}://{}", if tls.is_some() { "https" } else { "http" }, listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (tls, handler) = (tls.clone(), handler.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let resp = handler(&req);
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = match tls {
                        Some(tls) => match tls.accept(tcp).await {
                            Ok(s) => http1::Builder::new().serve_connection(TokioIo::new(s), svc).await,
                            Err(_) => return,
                        },
                        None => http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await,
                    };
                });
            }
        });
        url
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Full<Bytes>> {
        let mut r = Response::builder().status(status);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(Full::new(Bytes::from(body.to_string()))).unwrap()
    }

    fn authorization(req: &Request<Incoming>) -> String {
        req.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
    }

    /// A registry with a token service at `/token`: it challenges every request that does not
    /// carry `Bearer <current>`, and the token service gives `current` for Basic `u:p` only.
    #[derive(Default)]
    struct TokenRegistry {
        current: Mutex<String>,
        token_requests: Mutex<Vec<String>>,
        challenged: AtomicUsize,
    }

    impl TokenRegistry {
        fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
            let current = self.current.lock().unwrap().clone();
            let auth = authorization(req);
            if req.uri().path() == "/token" {
                self.token_requests.lock().unwrap().push(req.uri().query().unwrap_or_default().to_string());
                if auth != donjon_core::challenge::basic("u", "p").unwrap() {
                    return answer(
                        401,
                        &[("www-authenticate", r#"Basic realm="tokens""#)],
                        "bad credentials",
                    );
                }
                let body = format!(r#"{{"token":"{current}","expires_in":300}}"#);
                return answer(200, &[("content-type", "application/json")], &body);
            }
            if auth == format!("Bearer {current}") {
                return answer(200, &[], "ok");
            }
            self.challenged.fetch_add(1, Ordering::SeqCst);
            let host = req.headers()[header::HOST].to_str().unwrap();
            let actions = if req.method() == Method::GET { "pull" } else { "pull,push" };
            let challenge = format!(
                r#"Bearer realm="http://{host}/token",service="test",scope="repository:a/b:{actions}""#
            );
            answer(401, &[("www-authenticate", &challenge)], r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#)
        }

        fn token_requests(&self) -> Vec<String> {
            self.token_requests.lock().unwrap().clone()
        }
    }

    #[tokio::test]
    async fn bearer_tokens_are_fetched_once_per_scope_and_renewed_when_refused() {
        let reg = Arc::new(TokenRegistry::default());
        *reg.current.lock().unwrap() = "good-token".into();
        let r = reg.clone();
        let url = serve(None, Arc::new(move |req| r.handle(req))).await;
        let http = Http::new(&url, Some("u"), Some("p"), 2, None).unwrap();
        let manifest = format!("{url}/v2/a/b/manifests/latest");
        let get = || http.call(Method::GET, &manifest, &[], empty(), 100);

        // The first call is challenged and fetches a token; the second reuses it.
        assert_eq!(get().await.unwrap().body, b"ok");
        assert_eq!(get().await.unwrap().body, b"ok");
        assert_eq!(reg.token_requests(), ["service=test&scope=repository%3Aa%2Fb%3Apull"]);
        assert_eq!(reg.challenged.load(Ordering::SeqCst), 1);

        // A push: the bodiless POST is challenged for the push scope, and the PUT with a body
        // finds that token in the cache.
        let post = format!("{url}/v2/a/b/blobs/uploads/");
        http.call(Method::POST, &post, &[], empty(), 0).await.unwrap();
        let put = format!("{url}/v2/a/b/blobs/uploads/1?digest=sha256:x");
        http.call(Method::PUT, &put, &[], full("blob"), 0).await.unwrap();
        assert_eq!(reg.token_requests().len(), 2);
        assert_eq!(reg.token_requests()[1], "service=test&scope=repository%3Aa%2Fb%3Apull%2Cpush");
        assert_eq!(reg.challenged.load(Ordering::SeqCst), 2);

        // A token the registry no longer takes is replaced, and the request retried.
        *reg.current.lock().unwrap() = "new-token".into();
        assert_eq!(get().await.unwrap().body, b"ok");
        assert_eq!(get().await.unwrap().body, b"ok");
        assert_eq!(reg.token_requests().len(), 3);
        assert_eq!(reg.challenged.load(Ordering::SeqCst), 3);

        // Wrong or missing credentials: the token request fails, and the error says so.
        for (user, password) in [(Some("u"), Some("wrong")), (None, None)] {
            let http = Http::new(&url, user, password, 1, None).unwrap();
            let e = http.call(Method::GET, &manifest, &[], empty(), 0).await.unwrap_err();
            assert_eq!(e.key, "token request failed (HTTP 401)");
            assert!(e.detail.starts_with(&format!("token request to {url}/token failed: 401")), "{e}");
            assert!(e.detail.contains("bad credentials"), "{e}");
        }
    }

    #[tokio::test]
    async fn basic_challenges_and_challenges_without_realm() {
        let url = serve(
            None,
            Arc::new(|req| match (req.uri().path(), authorization(req).as_str()) {
                ("/v2/no-realm/tags/list", _) => {
                    answer(401, &[("www-authenticate", r#"Bearer service="s""#)], "")
                }
                (_, a) if a == donjon_core::challenge::basic("u", "p").unwrap() => answer(200, &[], "ok"),
                _ => answer(401, &[("www-authenticate", r#"Basic realm="registry""#)], "who are you"),
            }),
        )
        .await;
        let tags = format!("{url}/v2/a/tags/list");
        let http = Http::new(&url, Some("u"), Some("p"), 1, None).unwrap();
        assert_eq!(http.call(Method::GET, &tags, &[], empty(), 10).await.unwrap().body, b"ok");
        let e = http.call(Method::GET, &format!("{url}/v2/no-realm/tags/list"), &[], empty(), 0).await;
        let e = e.unwrap_err();
        assert_eq!(e.key, "bad Bearer challenge");
        assert_eq!(e.detail, "WWW-Authenticate without realm");
        // Without credentials, a Basic challenge is the answer.
        let anonymous = Http::new(&url, None, None, 1, None).unwrap();
        let e = anonymous.call(Method::GET, &tags, &[], empty(), 0).await.unwrap_err();
        assert_eq!(e.key, "HTTP 401 on GET /v2/a/tags/list");
        assert!(e.detail.contains("who are you"), "{e}");
    }

    #[tokio::test]
    async fn https_with_ca_cert_and_redirects_to_https() {
        let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, key.cert.pem()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![key.cert.der().clone()],
                PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()).into(),
            )
            .unwrap();
        // An object store behind TLS that records the Authorization it is sent.
        let store_auth = Arc::new(Mutex::new(Vec::new()));
        let seen = store_auth.clone();
        let store = serve(
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
            Arc::new(move |req| {
                seen.lock().unwrap().push(authorization(req));
                answer(200, &[], "secret blob")
            }),
        )
        .await;

        // Trusted through --ca-cert.
        let http = Http::new(&store, None, None, 1, Some(&ca)).unwrap();
        let d = http.call(Method::GET, &http.resolve("/v2/"), &[], empty(), 100).await.unwrap();
        assert_eq!(d.body, b"secret blob");

        // Not trusted without it (or refused at once on a system without roots).
        match Http::new(&store, None, None, 1, None) {
            Ok(http) => {
                let e = http.call(Method::GET, &http.resolve("/v2/"), &[], empty(), 0).await.unwrap_err();
                assert!(e.key.starts_with("connect error on GET"), "{}", e.key);
                assert!(e.detail.contains("certificate"), "{e}");
            }
            Err(e) => assert!(e.contains("no trusted root certificates"), "{e}"),
        }
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let e = Http::new(&store, None, None, 1, Some(&not_pem)).err().unwrap();
        assert!(e.contains("--ca-cert") && e.contains("no certificate"), "{e}");

        // A plain registry redirecting a blob GET to a presigned https URL: followed, and the
        // registry's credentials stay with the registry.
        let target = format!("{store}/bucket/blob?X-Amz-Signature=abc");
        let reg_auth = Arc::new(Mutex::new(Vec::new()));
        let seen = reg_auth.clone();
        let reg = serve(
            None,
            Arc::new(move |req| {
                seen.lock().unwrap().push(authorization(req));
                answer(307, &[("location", &target)], "")
            }),
        )
        .await;
        store_auth.lock().unwrap().clear();
        let http = Http::new(&reg, Some("u"), Some("p"), 1, Some(&ca)).unwrap();
        let d = http.call(Method::GET, &format!("{reg}/v2/a/blobs/sha256:ab"), &[], empty(), 100).await;
        assert_eq!(d.unwrap().body, b"secret blob");
        assert_eq!(*reg_auth.lock().unwrap(), [donjon_core::challenge::basic("u", "p").unwrap()]);
        assert_eq!(*store_auth.lock().unwrap(), [""]);
    }

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
        let h = Http::new("http://127.0.0.1:5000/", None, None, 1, None).unwrap();
        assert_eq!(h.resolve("/v2/x"), "http://127.0.0.1:5000/v2/x");
        assert_eq!(h.resolve("http://o/v2/x"), "http://o/v2/x");
        assert!(Http::new("ftp://x", None, None, 1, None).is_err());
        assert!(Http::new("http://x", None, Some("p"), 1, None).is_err());
        let o = |s: &str| origin(&s.parse().unwrap());
        assert_eq!(o("HTTP://Host/v2/"), o("http://host:80/x"));
        assert_ne!(o("http://127.0.0.1:5000/v2/"), o("http://127.0.0.1:50001/v2/"));
        assert_ne!(o("http://h/"), o("https://h/"));
    }
}
