//! The upstream client: hyper-util's pooled client over hyper-rustls (HTTP/2 when the upstream
//! offers it by ALPN, HTTP/1.1 otherwise), Mozilla's and the system's roots plus an optional CA
//! file, connect and read timeouts, and retries with backoff for the `GET`s and `HEAD`s it
//! sends (the only methods it sends).
//!
//! Upstream auth is the Docker token flow: a `401` with `WWW-Authenticate: Bearer realm=…`
//! sends the client to the realm, anonymously or with the entry's credentials (Docker Hub,
//! GHCR and Quay all want the anonymous dance), and the token is kept per endpoint and scope
//! until it expires. A `Basic` challenge gets the credentials directly. Redirects (blob
//! downloads from a CDN or a presigned bucket URL) are followed without the credentials, and
//! to public hosts only unless they stay on the configured endpoint's own origin. A token
//! realm gets the credentials only on the endpoint's origin, its host over HTTPS, or an origin
//! configured for it (`realms`). Every request of one [`UpstreamClient::send`] (retries,
//! redirects, the token dance) fits in one overall deadline.
//!
//! ```
//! use donjon_proxy::client::{parse_challenge, Challenge};
//!
//! let c = parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#);
//! assert_eq!(c, Some(Challenge::Bearer {
//!     realm: "https://auth.docker.io/token".into(),
//!     service: Some("registry.docker.io".into()),
//! }));
//! assert_eq!(parse_challenge(r#"Basic realm="x""#), Some(Challenge::Basic));
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use donjon_core::challenge;
use donjon_core::https::ClientBuilder;
use donjon_core::response::resolve_location;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;

use crate::upstream::{is_public, Credentials, GuardedResolver, Refused, Upstream};

/// The client for one side: open (any address) or guarded (public only).
type Client = donjon_core::https::Client<Empty<Bytes>, GuardedResolver>;

/// How many times a `GET`/`HEAD` is sent when the connection fails or the upstream answers
/// 502, 503 or 504.
const ATTEMPTS: u32 = 3;
/// The most redirects followed.
const REDIRECTS: usize = 5;
/// The most tokens kept.
const TOKENS_MAX: usize = 4096;

/// Why an upstream request failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream answered with this status (after the token dance).
    #[error("upstream answered {0}")]
    Status(StatusCode),
    /// No connection, or it broke.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// No answer in time.
    #[error("upstream timed out")]
    Timeout,
    /// The upstream may not be asked.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The upstream answered with a body that is not what was asked for (not a manifest).
    #[error("the upstream's answer is not a manifest: {0}")]
    NotAManifest(String),
    /// The upstream sent more than it may: its `Content-Length`, or the configured ceiling.
    #[error("{0}")]
    TooLarge(String),
}

/// A `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// The token flow: where to get one.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` to ask for.
        service: Option<String>,
    },
    /// Credentials on each request.
    Basic,
}

/// The first challenge of a `WWW-Authenticate` value this client answers (parsed by
/// [`donjon_core::challenge`]: RFC 9110 `auth-scheme` and `auth-param`s, quoted strings with
/// `\` escapes); `None` when there is none, or a Bearer challenge has no realm.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let c = challenge::parse_challenges(value)
        .into_iter()
        .find(|c| c.scheme == "basic" || c.scheme == "bearer")?;
    if c.scheme == "basic" {
        return Some(Challenge::Basic);
    }
    let realm = c.param("realm").filter(|r| !r.is_empty())?.to_string();
    Some(Challenge::Bearer { realm, service: c.param("service").map(str::to_string) })
}

/// The pooled clients, and the tokens they hold.
#[derive(Clone)]
pub struct UpstreamClient {
    /// For the origins an [`Upstream`] trusts (its configured endpoint): any address.
    open: Client,
    /// For everything else: public addresses only.
    guarded: Client,
    tokens: Arc<Mutex<HashMap<(String, String), (String, Instant)>>>,
    read_timeout: Duration,
    total_timeout: Duration,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").field("read_timeout", &self.read_timeout).finish_non_exhaustive()
    }
}

/// How long the upstream client waits.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// For a connection (TCP and TLS).
    pub connect: Duration,
    /// For response headers, and between two pieces of a body.
    pub read: Duration,
    /// For one [`UpstreamClient::send`], retries, redirects and the token dance included.
    pub total: Duration,
}

impl UpstreamClient {
    /// A client trusting `ca_file` besides the usual roots.
    pub fn new(timeouts: Timeouts, ca_file: Option<&Path>) -> Result<Self, String> {
        let tls = donjon_core::https::tls_config(ca_file)?;
        let client = |public_only: bool| {
            ClientBuilder::new()
                .connect_timeout(timeouts.connect)
                .http2(true)
                .pool_idle_timeout(Duration::from_secs(90))
                .build_with_resolver(tls.clone(), GuardedResolver { public_only })
        };
        Ok(Self {
            open: client(false),
            guarded: client(true),
            tokens: Arc::default(),
            read_timeout: timeouts.read,
            total_timeout: timeouts.total,
        })
    }

    /// The read timeout: for response headers, and between two pieces of a body.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// `method` on `/v2/<repo>/<path>` of the upstream, after the token dance if it asks for
    /// one. Any status comes back as the response; only failures to get one are errors,
    /// among them the overall deadline passing (the body is the caller's to time).
    pub async fn send(
        &self,
        up: &Upstream,
        method: Method,
        path: &str,
        accept: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        tokio::time::timeout(self.total_timeout, self.send_once(up, method, path, accept))
            .await
            .map_err(|_| UpstreamError::Timeout)?
    }

    async fn send_once(
        &self,
        up: &Upstream,
        method: Method,
        path: &str,
        accept: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let uri: Uri = format!("{}v2/{}/{path}", up.base, up.repo)
            .parse()
            .map_err(|_| UpstreamError::Unreachable(format!("bad upstream path {path:?}")))?;
        let scope = format!("repository:{}:pull", up.repo);
        let key = (up.base.to_string(), scope.clone());
        let mut auth = self.cached_token(&key);
        let mut answered = false;
        loop {
            let resp = self.follow(up, &method, uri.clone(), accept, auth.as_deref()).await?;
            if resp.status() != StatusCode::UNAUTHORIZED || answered {
                return Ok(resp);
            }
            answered = true;
            let challenge = resp.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
            match challenge.and_then(parse_challenge) {
                Some(Challenge::Bearer { realm, service }) => {
                    auth = Some(self.fetch_token(up, &realm, service.as_deref(), &scope).await?);
                }
                Some(Challenge::Basic) => match &up.credentials {
                    Some(c) => auth = Some(basic(c)),
                    None => return Ok(resp),
                },
                None => return Ok(resp),
            }
        }
    }

    /// One request on `up`'s behalf, its redirects followed (without credentials), retried as
    /// `send` says. Each hop is judged like the first: the open client only for an origin
    /// `up` trusts, the public-only one for any other.
    async fn follow(
        &self,
        up: &Upstream,
        method: &Method,
        mut uri: Uri,
        accept: Option<&HeaderValue>,
        mut auth: Option<&str>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        for _ in 0..=REDIRECTS {
            let client = self.client_for(up, &uri).map_err(|e| refusal(up, &uri, e))?;
            let resp = self
                .with_retries(client, method, &uri, accept, auth)
                .await
                .map_err(|e| refusal(up, &uri, e))?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let Some(next) = resp.headers().get(header::LOCATION).and_then(|l| l.to_str().ok()) else {
                return Ok(resp);
            };
            uri = resolve_location(&uri, next)
                .ok_or_else(|| UpstreamError::Unreachable(format!("bad redirect {next:?}")))?;
            auth = None;
        }
        Err(UpstreamError::Unreachable("too many redirects".into()))
    }

    /// The client for a request to `uri` on `up`'s behalf: the open one for an origin `up`
    /// trusts; else the public-only one, after refusing a non-public IP literal (which the
    /// connector connects to without asking the resolver).
    fn client_for(&self, up: &Upstream, uri: &Uri) -> Result<&Client, UpstreamError> {
        if up.trusts(uri) {
            return Ok(&self.open);
        }
        let host = uri.host().unwrap_or("").trim_matches(['[', ']']);
        match host.parse::<IpAddr>() {
            Ok(ip) if !is_public(ip) => Err(Refused::NotPublic(authority(uri)).into()),
            // Names are checked by the resolver, on the addresses connected to.
            _ => Ok(&self.guarded),
        }
    }

    async fn with_retries(
        &self,
        client: &Client,
        method: &Method,
        uri: &Uri,
        accept: Option<&HeaderValue>,
        auth: Option<&str>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut wait = Duration::from_millis(100);
        let mut last = UpstreamError::Timeout;
        for attempt in 1..=ATTEMPTS {
            let mut req = Request::builder().method(method.clone()).uri(uri.clone());
            if let Some(a) = accept {
                req = req.header(header::ACCEPT, a.clone());
            }
            if let Some(a) = auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            req = req.header(header::USER_AGENT, concat!("donjon/", env!("CARGO_PKG_VERSION")));
            let req = req.body(Empty::new()).map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
            match tokio::time::timeout(self.read_timeout, client.request(req)).await {
                Ok(Ok(resp)) if !matches!(resp.status().as_u16(), 502..=504) || attempt == ATTEMPTS => {
                    return Ok(resp)
                }
                Ok(Ok(resp)) => last = UpstreamError::Status(resp.status()),
                Ok(Err(e)) => {
                    let mut refused = false;
                    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
                    while let Some(c) = cur {
                        refused |= c
                            .downcast_ref::<std::io::Error>()
                            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied);
                        cur = c.source();
                    }
                    if refused {
                        return Err(Refused::NotPublic(authority(uri)).into());
                    }
                    let msg = chain(&e);
                    last = UpstreamError::Unreachable(msg);
                }
                Err(_) => last = UpstreamError::Timeout,
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 4;
            }
        }
        Err(last)
    }

    fn cached_token(&self, key: &(String, String)) -> Option<String> {
        let tokens = self.tokens.lock().ok()?;
        tokens.get(key).filter(|(_, until)| *until > Instant::now()).map(|(t, _)| t.clone())
    }

    /// A token for `scope` from the realm (anonymous, or with the entry's credentials), as the
    /// `Authorization` value that carries it.
    async fn fetch_token(
        &self,
        up: &Upstream,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, UpstreamError> {
        let query = {
            // The serializer is not Send: it lives in this block only.
            let mut q = form_urlencoded::Serializer::new(String::new());
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope).finish()
        };
        let url = format!("{realm}{}{query}", if realm.contains('?') { '&' } else { '?' });
        let uri: Uri =
            url.parse().map_err(|_| UpstreamError::Unreachable(format!("bad token realm {realm:?}")))?;
        // The realm is the upstream's word: it is judged like a redirect (a public address,
        // unless it is an origin `up` trusts), and gets the credentials only where
        // `credentials_for_realm` says.
        let auth = up.credentials.as_ref().filter(|_| up.credentials_for_realm(&uri)).map(basic);
        let resp = self.follow(up, &Method::GET, uri, None, auth.as_deref()).await?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Status(if resp.status() == StatusCode::UNAUTHORIZED {
                StatusCode::UNAUTHORIZED
            } else {
                resp.status()
            }));
        }
        let body = tokio::time::timeout(
            self.read_timeout,
            http_body_util::Limited::new(resp.into_body(), 1 << 20).collect(),
        )
        .await
        .map_err(|_| UpstreamError::Timeout)?
        .map_err(|e| UpstreamError::Unreachable(format!("token response: {e}")))?
        .to_bytes();
        let (token, ttl) = challenge::parse_token(&body)
            .map_err(|e| UpstreamError::Unreachable(format!("token response: {e}")))?;
        let token = token.to_str().map_err(|e| UpstreamError::Unreachable(e.to_string()))?.to_string();
        // Renewed a little early, so a token does not expire on its way.
        let until = Instant::now() + ttl.saturating_sub(Duration::from_secs(5)).max(Duration::from_secs(1));
        if let Ok(mut tokens) = self.tokens.lock() {
            if tokens.len() >= TOKENS_MAX {
                let now = Instant::now();
                tokens.retain(|_, (_, u)| *u > now);
                if tokens.len() >= TOKENS_MAX {
                    tokens.clear();
                }
            }
            tokens.insert((up.base.to_string(), scope.to_string()), (token.clone(), until));
        }
        Ok(token)
    }
}

fn basic(c: &Credentials) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))
    )
}

/// A refusal to reach `uri` on `up`'s behalf, said as what it is: the upstream itself is not
/// public (a client named it), or the upstream sent us elsewhere; logged once per place.
fn refusal(up: &Upstream, uri: &Uri, e: UpstreamError) -> UpstreamError {
    let UpstreamError::Refused(Refused::NotPublic(_)) = e else { return e };
    let own = crate::upstream::Origin::of(uri) == crate::upstream::Origin::of(&up.base);
    let r = if own { Refused::NotPublic(authority(uri)) } else { Refused::Elsewhere(authority(uri)) };
    crate::upstream::warn_once(&r);
    r.into()
}

/// `host[:port]` of a URL, for messages.
fn authority(uri: &Uri) -> String {
    uri.authority().map_or_else(String::new, |a| a.to_string())
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into())
            })
        );
        let c = parse_challenge(r#"bearer realm="a\"b", error="invalid_token""#).unwrap();
        assert_eq!(c, Challenge::Bearer { realm: "a\"b".into(), service: None });
        assert_eq!(
            parse_challenge("Bearer realm=https://x/t,service=s").unwrap(),
            Challenge::Bearer { realm: "https://x/t".into(), service: Some("s".into()) }
        );
        assert_eq!(parse_challenge("Bearer service=s"), None, "no realm");
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn locations_resolve() {
        let base: Uri = "https://reg.example/v2/a/blobs/x".parse().unwrap();
        assert_eq!(resolve_location(&base, "/cdn/x").unwrap().to_string(), "https://reg.example/cdn/x");
        assert_eq!(
            resolve_location(&base, "https://cdn.example/x?sig=1").unwrap().to_string(),
            "https://cdn.example/x?sig=1"
        );
        assert_eq!(resolve_location(&base, "//cdn.example/y").unwrap().to_string(), "https://cdn.example/y");
    }
}
