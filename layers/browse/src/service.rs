//! [`Browse`], the service of [`BrowseLayer`]: answers `/ui/…` and passes
//! every other request on.
//!
//! Everything a page shows is asked of the registry below it, as an API client would ask:
//! `GET /v2/_catalog`, `/v2/<name>/tags/list`, `/v2/<name>/manifests/<ref>`, the config blob and
//! `/v2/<name>/referrers/<digest>`, with the caller's own rights. A signed-in caller's cookie
//! holds a refresh token of the registry's token endpoint (never the password); each page
//! exchanges it for an access token scoped to what it shows. So the page shows exactly what
//! the caller may pull, and its refusals are the API's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Extensions, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use tower_service::Service;

use donjon_core::claim::{Claim, Claimed, Claiming};
use donjon_core::principal::ClientConn;
use donjon_core::store::RangeSpec;
use donjon_core::{Body, Digest, Name, Reference, Store, Tag};

use crate::html::{self, Page};
use crate::BrowseLayer;

/// The cookie holding a signed-in caller's refresh token.
pub const COOKIE: &str = "donjon_ui";

/// The media types a manifest request accepts.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The largest manifest, config or token answer read (the registry's manifest limit is 4 MiB).
const READ_MAX: usize = 4 << 20;

/// What every service of the layer shares.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) public_host: Option<String>,
    pub(crate) token_path: Option<String>,
    pub(crate) store: Option<Arc<dyn Store>>,
    pub(crate) pull_through: bool,
    pub(crate) page: usize,
    pub(crate) scan: usize,
}

impl Default for Shared {
    fn default() -> Self {
        Self { public_host: None, token_path: None, store: None, pull_through: false, page: 100, scan: 2_000 }
    }
}

/// The service of [`BrowseLayer`]: it answers `/ui/…` and passes every other request on.
pub type Browse<S> = Claiming<BrowseLayer, S>;

impl<S> Claim<S, Body> for BrowseLayer
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    fn claim(&self, req: Request<Body>, inner: &S) -> Claimed<Body> {
        let path = req.uri().path();
        if path != "/ui" && !path.starts_with("/ui/") {
            return Claimed::Pass(req);
        }
        // Each sub-request takes a clone of the inner service and waits for its readiness.
        let inner = inner.clone();
        let shared = self.shared.clone();
        Claimed::answer(async move { secured(handle(shared, inner, req).await) })
    }
}

/// One request's view of the registry below: its sub-requests carry the caller's connection
/// (for the failed-login limit) and rights.
struct Ctx<S> {
    shared: Arc<Shared>,
    inner: S,
    extensions: Extensions,
    host: Option<HeaderValue>,
    forwarded_proto: Option<HeaderValue>,
    /// The refresh token of the cookie.
    session: Option<String>,
    /// The access token this page got for its scopes.
    bearer: Option<HeaderValue>,
    /// The cookie turned out stale: the answer clears it.
    clear_cookie: bool,
}

/// A sub-request's answer, read whole (bounded).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The OCI error body's first message, or the status.
    fn reason(&self) -> String {
        self.json()
            .and_then(|v| {
                let e = v.get("errors")?.get(0)?;
                Some(format!(
                    "{}: {}",
                    e.get("code")?.as_str()?,
                    e.get("message").and_then(Value::as_str).unwrap_or("")
                ))
            })
            .unwrap_or_else(|| self.status.to_string())
    }
}

/// Why a page could not be shown.
enum Failure {
    /// The registry wants credentials (or better ones): the login form.
    Login(String),
    /// Anything else: an error page with this status.
    Status(StatusCode, String),
}

impl<S> Ctx<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    fn new(shared: Arc<Shared>, inner: S, req: &Request<Body>) -> Self {
        let session = cookie(req.headers(), COOKIE).filter(|_| shared.token_path.is_some());
        Self {
            shared,
            inner,
            extensions: req.extensions().clone(),
            // HTTP/2 carries the host as the URI's authority, not as a header.
            host: donjon_core::response::request_host(req).and_then(|h| HeaderValue::try_from(h).ok()),
            forwarded_proto: req.headers().get("x-forwarded-proto").cloned(),
            session,
            bearer: None,
            clear_cookie: false,
        }
    }

    /// Whether the caller reached us over TLS (directly, or by a proxy that says so).
    fn tls(&self) -> bool {
        self.extensions.get::<ClientConn>().is_some_and(|c| c.tls)
            || self.forwarded_proto.as_ref().is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"))
    }

    /// The host name pull commands name.
    fn registry_host(&self) -> String {
        self.shared
            .public_host
            .clone()
            .or_else(|| self.host.as_ref().and_then(|h| h.to_str().ok()).map(str::to_string))
            .unwrap_or_else(|| "localhost".into())
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, Failure> {
        let mut req = Request::new(Body::from(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri
            .parse()
            .map_err(|_| Failure::Status(StatusCode::BAD_REQUEST, format!("not a registry path: {uri}")))?;
        *req.headers_mut() = headers;
        if let Some(h) = &self.host {
            req.headers_mut().insert(header::HOST, h.clone());
        }
        if let Some(p) = &self.forwarded_proto {
            req.headers_mut().insert("x-forwarded-proto", p.clone());
        }
        *req.extensions_mut() = self.extensions.clone();
        let resp = match self.inner.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = resp.into_parts();
        let body = http_body_util::Limited::new(body, READ_MAX)
            .collect()
            .await
            .map_err(|e| Failure::Status(StatusCode::BAD_GATEWAY, format!("reading {uri}: {e}")))?
            .to_bytes();
        Ok(Answer { status: parts.status, headers: parts.headers, body })
    }

    /// Exchanges the session's refresh token for an access token to `scopes`.
    async fn authorize(&mut self, scopes: &[String]) -> Result<(), Failure> {
        let (Some(path), Some(refresh)) = (self.shared.token_path.clone(), self.session.clone()) else {
            return Ok(());
        };
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", &refresh)
            .append_pair("client_id", "donjon-ui")
            .append_pair("scope", &scopes.join(" "))
            .finish();
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        let a = self.send(Method::POST, &path, h, Bytes::from(form)).await?;
        if !a.status.is_success() {
            // A password changed, a key rotated, a token expired: sign in again.
            self.session = None;
            self.clear_cookie = true;
            return Err(Failure::Login("Your session has ended. Sign in again.".into()));
        }
        let token = a.json().and_then(|v| {
            v.get("token").or_else(|| v.get("access_token")).and_then(Value::as_str).map(str::to_string)
        });
        self.bearer = token.and_then(|t| HeaderValue::try_from(format!("Bearer {t}")).ok());
        Ok(())
    }

    /// A `GET` with this page's token, whatever its answer.
    async fn fetch(&self, uri: &str, accept: Option<&'static str>) -> Result<Answer, Failure> {
        let mut h = HeaderMap::new();
        if let Some(b) = &self.bearer {
            h.insert(header::AUTHORIZATION, b.clone());
        }
        if let Some(a) = accept {
            h.insert(header::ACCEPT, HeaderValue::from_static(a));
        }
        self.send(Method::GET, uri, h, Bytes::new()).await
    }

    /// A `GET` whose refusal becomes the page's: the login, or an error page.
    async fn get(&self, uri: &str, accept: Option<&'static str>) -> Result<Answer, Failure> {
        let a = self.fetch(uri, accept).await?;
        match a.status {
            s if s.is_success() => Ok(a),
            StatusCode::UNAUTHORIZED if self.session.is_none() && self.shared.token_path.is_some() => {
                Err(Failure::Login("Sign in to see this.".into()))
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(Failure::Status(StatusCode::FORBIDDEN, format!("You may not see this ({}).", a.reason())))
            }
            StatusCode::NOT_FOUND => Err(Failure::Status(StatusCode::NOT_FOUND, a.reason())),
            s => Err(Failure::Status(s, a.reason())),
        }
    }
}

/// The headers every answer of the page carries: a strict policy (no inline script or style,
/// nothing from elsewhere, never framed), no sniffing, no referrer.
fn secured(mut resp: Response<Body>) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it a browser's form posts say `Origin: null`, which the login's
    // same-origin check must refuse.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    resp
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn redirect(to: &str) -> Response<Body> {
    let mut resp = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", Bytes::new());
    if let Ok(v) = HeaderValue::try_from(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// The value of cookie `name` of the request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

fn session_cookie(value: &str, secure: bool) -> Option<HeaderValue> {
    // No Max-Age: the browser forgets it when it closes. Strict: never sent by another site.
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::try_from(format!("{COOKIE}={value}; Path=/ui/; HttpOnly; SameSite=Strict{secure}")).ok()
}

fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static("donjon_ui=; Path=/ui/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The embedded stylesheet and script.
const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

async fn handle<S>(shared: Arc<Shared>, inner: S, req: Request<Body>) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let q = |key: &str| -> Option<String> {
        form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
    };
    let method = req.method().clone();
    let head = method == Method::HEAD;
    if method != Method::GET && !head && method != Method::POST {
        let mut r = respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "GET or POST\n");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
        return r;
    }
    match path.as_str() {
        "/ui" => return redirect("/ui/"),
        "/ui/assets/ui.css" => return asset("text/css; charset=utf-8", CSS),
        "/ui/assets/ui.js" => return asset("text/javascript; charset=utf-8", JS),
        _ => {}
    }
    let mut ctx = Ctx::new(shared, inner, &req);
    let page = match (method == Method::POST, path.as_str()) {
        (true, "/ui/login") => return login(&mut ctx, req).await,
        (true, "/ui/logout") => {
            if !same_origin(&req) {
                return forbidden_origin();
            }
            let mut r = redirect("/ui/");
            r.headers_mut().insert(header::SET_COOKIE, cleared_cookie());
            return r;
        }
        (true, _) => {
            Err(Failure::Status(StatusCode::METHOD_NOT_ALLOWED, "only the login form is posted".into()))
        }
        (false, "/ui/login") => Err(Failure::Login(String::new())),
        (false, "/ui/") => catalog(&mut ctx, q("q").unwrap_or_default(), q("last")).await,
        (false, p) => match p.strip_prefix("/ui/r/") {
            Some(rest) => repository_or_image(&mut ctx, rest, q("sort").as_deref(), q("from")).await,
            None => Err(Failure::Status(StatusCode::NOT_FOUND, format!("no page at {p}"))),
        },
    };
    let next = if path == "/ui/login" {
        q("next").unwrap_or_else(|| "/ui/".into())
    } else {
        path_and_query(&path, &query)
    };
    let signed_in = ctx.session.is_some();
    let mut resp = match page {
        Ok(p) => html_response(StatusCode::OK, &p.finish(&ctx.chrome(signed_in))),
        Err(Failure::Login(message)) if ctx.shared.token_path.is_some() => html_response(
            if path == "/ui/login" { StatusCode::OK } else { StatusCode::UNAUTHORIZED },
            &html::login(&next, &message).finish(&ctx.chrome(false)),
        ),
        Err(Failure::Login(_)) => html_response(
            StatusCode::UNAUTHORIZED,
            &html::error(
                StatusCode::UNAUTHORIZED,
                "This registry asks for credentials its own token endpoint does not issue; \
                use docker login, or donjon ls.",
            )
            .finish(&ctx.chrome(false)),
        ),
        Err(Failure::Status(s, m)) => html_response(s, &html::error(s, &m).finish(&ctx.chrome(signed_in))),
    };
    if ctx.clear_cookie {
        resp.headers_mut().insert(header::SET_COOKIE, cleared_cookie());
    }
    if head {
        *resp.body_mut() = Body::empty();
    }
    resp
}

fn path_and_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

fn asset(content_type: &'static str, text: &'static str) -> Response<Body> {
    let mut r = respond(StatusCode::OK, content_type, Bytes::from_static(text.as_bytes()));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    r
}

fn html_response(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = respond(status, "text/html; charset=utf-8", Bytes::from(body.to_string()));
    // Pages show what this caller may see: never kept by a shared cache.
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A `POST` from a page of ours: the browser says so (`Sec-Fetch-Site`, `Origin` naming the
/// host the request was sent to), or it is a client that sends neither (not a browser, so not a
/// cross-site form).
fn same_origin(req: &Request<Body>) -> bool {
    let h = req.headers();
    let site_ok = h.get("sec-fetch-site").is_none_or(|v| v == "same-origin" || v == "none");
    let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let origin_ok = match (origin, donjon_core::response::request_host(req)) {
        (Some(o), Some(host)) => o.split_once("://").is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
        (None, _) => true,
    };
    site_ok && origin_ok
}

fn forbidden_origin() -> Response<Body> {
    respond(StatusCode::FORBIDDEN, "text/plain; charset=utf-8", "a form of another site\n")
}

/// `POST /ui/login`: the form's credentials, exchanged at the token endpoint for a refresh token,
/// which the cookie keeps.
async fn login<S>(ctx: &mut Ctx<S>, req: Request<Body>) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    if !same_origin(&req) {
        return forbidden_origin();
    }
    let Some(path) = ctx.shared.token_path.clone() else {
        return html_response(
            StatusCode::NOT_FOUND,
            &html::error(StatusCode::NOT_FOUND, "This registry has no login.").finish(&ctx.chrome(false)),
        );
    };
    let form = match http_body_util::Limited::new(req.into_body(), 16 << 10).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return respond(StatusCode::PAYLOAD_TOO_LARGE, "text/plain; charset=utf-8", "form too large\n")
        }
    };
    let field = |key: &str| {
        form_urlencoded::parse(&form).find(|(k, _)| k == key).map(|(_, v)| v.into_owned()).unwrap_or_default()
    };
    let (user, password) = (field("username"), field("password"));
    let next =
        Some(field("next")).filter(|n| n.starts_with("/ui/") && !n.contains("//")).unwrap_or("/ui/".into());
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "password")
        .append_pair("username", &user)
        .append_pair("password", &password)
        .append_pair("client_id", "donjon-ui")
        .append_pair("access_type", "offline")
        .finish();
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    let answer = ctx.send(Method::POST, &path, h, Bytes::from(body)).await;
    let refresh = match &answer {
        Ok(a) if a.status.is_success() => {
            a.json().and_then(|v| v.get("refresh_token").and_then(Value::as_str).map(str::to_string))
        }
        _ => None,
    };
    match refresh.as_deref().and_then(|r| session_cookie(r, ctx.tls())) {
        Some(c) => {
            let mut r = redirect(&next);
            r.headers_mut().insert(header::SET_COOKIE, c);
            r
        }
        None => {
            let (status, message) = match &answer {
                Ok(a) if a.status == StatusCode::TOO_MANY_REQUESTS => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many failed logins from this address: wait, then try again.",
                ),
                Ok(a) if a.status.is_success() => {
                    (StatusCode::UNAUTHORIZED, "This user cannot sign in here.")
                }
                _ => (StatusCode::UNAUTHORIZED, "Wrong user name or password."),
            };
            html_response(status, &html::login(&next, message).finish(&ctx.chrome(false)))
        }
    }
}

/// The `last` of a `Link: <…?last=X&n=N>; rel="next"` header: where the next page starts.
fn link_last(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    let target = link.split_once('<')?.1.split_once('>')?.0;
    let query = target.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "last").map(|(_, v)| v.into_owned())
}

/// `/ui/`: a page of repositories, those whose name holds `filter` when there is one.
///
/// The catalog's pages are followed by their `Link`, not by the last name seen: the registry
/// lists only what the caller may pull, so a page may be short, even empty, with more after it.
/// One page of the web page asks for at most `scan` names of the catalog (unfiltered, a page
/// and one more name at a time), then offers to keep looking from where it stopped.
async fn catalog<S>(ctx: &mut Ctx<S>, filter: String, last: Option<String>) -> Result<Page, Failure>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    ctx.authorize(&["registry:catalog:*".into()]).await?;
    let page = ctx.shared.page;
    let filter = filter.trim().to_ascii_lowercase();
    let per = if filter.is_empty() { page + 1 } else { ctx.shared.scan.min(1000) };
    let mut budget = ctx.shared.scan.max(per);
    let mut shown: Vec<String> = vec![];
    let mut cursor = last.clone().filter(|l| !l.is_empty());
    // Where the next page starts, and whether it is the budget (not a full page) that stopped.
    let (next, looking) = loop {
        let mut uri = format!("/v2/_catalog?n={per}");
        if let Some(l) = &cursor {
            uri.push_str("&last=");
            uri.push_str(&html::query_escape(l));
        }
        let a = ctx.get(&uri, None).await?;
        budget = budget.saturating_sub(per);
        let names: Vec<String> = a
            .json()
            .and_then(|v| serde_json::from_value(v.get("repositories")?.clone()).ok())
            .unwrap_or_default();
        let mut full = false;
        for name in names.into_iter().filter(|n| filter.is_empty() || n.contains(&filter)) {
            if shown.len() == page {
                full = true;
                break;
            }
            shown.push(name);
        }
        let after = link_last(&a.headers);
        if full || (shown.len() == page && after.is_some()) {
            break (shown.last().cloned(), false);
        }
        match after {
            None => break (None, false),
            Some(l) if budget == 0 => break (Some(l), true),
            Some(l) => cursor = Some(l),
        }
    };
    let rows: Vec<html::RepoRow> = shown
        .into_iter()
        .map(|name| {
            let upstream = ctx.upstream_of(&name);
            html::RepoRow { name, upstream }
        })
        .collect();
    Ok(html::catalog(&filter, last.is_some(), &rows, next.as_deref(), looking))
}

impl<S> Ctx<S> {
    /// The upstream a pull-through repository caches: `f/<host>/…` names it.
    fn upstream_of(&self, name: &str) -> Option<String> {
        let rest = name.strip_prefix("f/").filter(|_| self.shared.pull_through)?;
        rest.split_once('/').map(|(host, _)| donjon_core::mirror::network_host(host))
    }

    fn chrome(&self, signed_in: bool) -> html::Chrome {
        html::Chrome { login: self.shared.token_path.is_some(), signed_in }
    }
}

/// `/ui/r/<name>` (tags), `/ui/r/<name>:<tag>` and `/ui/r/<name>@<digest>` (an image).
async fn repository_or_image<S>(
    ctx: &mut Ctx<S>,
    rest: &str,
    sort: Option<&str>,
    from: Option<String>,
) -> Result<Page, Failure>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let rest = percent_encoding::percent_decode_str(rest).decode_utf8_lossy().into_owned();
    let unknown = |what: &str| {
        Failure::Status(StatusCode::NOT_FOUND, format!("{what:?} is not a repository, tag or digest"))
    };
    // Only what the spec's grammar accepts reaches a sub-request or a pull command.
    let (name, reference) = match rest.split_once('@') {
        Some((n, d)) => (n, Some(Reference::Digest(d.parse::<Digest>().map_err(|_| unknown(d))?))),
        None => match rest.rsplit_once(':') {
            Some((n, t)) => (n, Some(Reference::Tag(t.parse::<Tag>().map_err(|_| unknown(t))?))),
            None => (rest.trim_end_matches('/'), None),
        },
    };
    let name: Name = name.parse().map_err(|_| unknown(name))?;
    ctx.authorize(&[format!("repository:{}:pull", name.as_str())]).await?;
    match reference {
        None => repository(ctx, &name, sort, from.and_then(|f| f.parse().ok()).unwrap_or(0)).await,
        Some(r) => image(ctx, &name, &r).await,
    }
}

async fn repository<S>(
    ctx: &mut Ctx<S>,
    name: &Name,
    sort: Option<&str>,
    from: usize,
) -> Result<Page, Failure>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let a = ctx.get(&format!("/v2/{}/tags/list", name.as_str()), None).await?;
    let listed: Vec<String> =
        a.json().and_then(|v| serde_json::from_value(v.get("tags")?.clone()).ok()).unwrap_or_default();
    // Whatever sits below (a user's own service, an upstream's list) may answer anything: the
    // page shows, links and offers to copy only what is a tag.
    let listed: Vec<String> = listed.into_iter().filter(|t| t.parse::<donjon_core::Tag>().is_ok()).collect();
    // The registry said which tags the caller may see; the store says when each was pushed.
    let times: std::collections::HashMap<String, SystemTime> = match &ctx.shared.store {
        Some(store) => store
            .tag_times(name)
            .await
            .map(|t| t.into_iter().filter_map(|(t, at)| Some((t, at?))).collect())
            .unwrap_or_default(),
        None => Default::default(),
    };
    let by_time = sort == Some("time") && !times.is_empty();
    let mut tags: Vec<(String, Option<SystemTime>)> =
        listed.into_iter().map(|t| (t.clone(), times.get(&t).copied())).collect();
    if by_time {
        tags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    } else {
        tags.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let page = ctx.shared.page;
    let total = tags.len();
    let shown: Vec<(String, Option<SystemTime>)> = tags.into_iter().skip(from).take(page).collect();
    let upstream = ctx.upstream_of(name.as_str());
    Ok(html::repository(
        name.as_str(),
        upstream.as_deref(),
        &shown,
        html::Paging { from, page, total },
        by_time,
        !times.is_empty(),
        &ctx.registry_host(),
        !ctx.tls(),
    ))
}

async fn image<S>(ctx: &mut Ctx<S>, name: &Name, reference: &Reference) -> Result<Page, Failure>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let repo = name.as_str();
    let a = ctx.get(&format!("/v2/{repo}/manifests/{reference}"), Some(ACCEPT)).await?;
    let header_digest = a.headers.get("docker-content-digest").and_then(|v| v.to_str().ok()?.parse().ok());
    let digest: Digest = header_digest.unwrap_or_else(|| Digest::sha256_of(&a.body));
    let content_type =
        a.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let manifest = a.json().unwrap_or(Value::Null);
    let media_type = manifest.get("mediaType").and_then(Value::as_str).unwrap_or(&content_type).to_string();
    let mut config = Value::Null;
    if let Some(c) = manifest.get("config") {
        let is_image = c.get("mediaType").and_then(Value::as_str).is_some_and(|m| {
            m == "application/vnd.oci.image.config.v1+json"
                || m == "application/vnd.docker.container.image.v1+json"
        });
        let d = c.get("digest").and_then(Value::as_str).and_then(|d| d.parse::<Digest>().ok());
        if let (true, Some(d)) = (is_image, d) {
            // An unreadable config still shows the manifest.
            config = ctx.config_blob(name, &d).await.unwrap_or(Value::Null);
        }
    }
    let referrers = match ctx.get(&format!("/v2/{repo}/referrers/{digest}"), None).await {
        Ok(r) => r.json().and_then(|v| v.get("manifests").cloned()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let digest = digest.to_string();
    let tag = match reference {
        Reference::Tag(t) => Some(t.as_str()),
        Reference::Digest(_) => None,
    };
    Ok(html::image(&html::Image {
        repo,
        upstream: ctx.upstream_of(repo),
        tag,
        digest: &digest,
        size: a.body.len() as u64,
        media_type: &media_type,
        manifest: &manifest,
        config: &config,
        referrers: &referrers,
        host: ctx.registry_host(),
        plain_http: !ctx.tls(),
    }))
}

impl<S> Ctx<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    /// An image's config, through the API; when the API redirects to object storage (a
    /// presigned URL this layer does not follow), from the store, which the manifest's `GET`
    /// has just shown the caller may read.
    async fn config_blob(&self, name: &Name, digest: &Digest) -> Option<Value> {
        let a = self.fetch(&format!("/v2/{}/blobs/{digest}", name.as_str()), None).await.ok()?;
        if a.status.is_success() {
            return a.json();
        }
        if !a.status.is_redirection() {
            return None;
        }
        let store = self.shared.store.as_ref()?;
        let read = store.blob_read(name, digest, RangeSpec::Full).await.ok()?;
        if read.size > READ_MAX as u64 {
            return None;
        }
        let body = Body::from_stream(read.body);
        let bytes = http_body_util::Limited::new(body, READ_MAX).collect().await.ok()?.to_bytes();
        serde_json::from_slice(&bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; donjon_ui=tok.en; b=2"));
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("tok.en"));
        h.insert(header::COOKIE, HeaderValue::from_static("donjon_ui="));
        assert_eq!(cookie(&h, COOKIE), None);
    }

    #[test]
    fn a_form_of_another_site_is_refused() {
        let post = |uri: &str, headers: &[(&str, &str)]| {
            let mut r = Request::post(uri);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.body(Body::empty()).unwrap()
        };
        let host = ("host", "reg.example");
        assert!(same_origin(&post("/ui/login", &[host])));
        assert!(same_origin(&post("/ui/login", &[host, ("origin", "https://reg.example")])));
        assert!(!same_origin(&post("/ui/login", &[host, ("origin", "https://evil.example")])));
        assert!(!same_origin(&post("/ui/login", &[host, ("origin", "null")])));
        let cross = [host, ("origin", "https://reg.example"), ("sec-fetch-site", "cross-site")];
        assert!(!same_origin(&post("/ui/login", &cross)));
        // HTTP/2: no Host header, the authority says where it was sent.
        assert!(same_origin(&post("https://reg.example/ui/login", &[("origin", "https://reg.example")])));
        assert!(!same_origin(&post("https://reg.example/ui/login", &[("origin", "https://evil.example")])));
        assert!(!same_origin(&post("/ui/login", &[("origin", "https://reg.example")])));
    }

    #[test]
    fn the_session_cookie_is_strict_and_secure_over_tls() {
        let c = session_cookie("t", true).unwrap();
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("; Secure"), "{c}");
        assert!(!session_cookie("t", false).unwrap().to_str().unwrap().contains("Secure"));
    }

    /// A registry on object storage redirects blob reads to a presigned URL; the image page
    /// still shows the config, read from the store.
    #[tokio::test]
    async fn a_redirected_config_is_read_from_the_store() {
        use tower::Layer;
        let store = Arc::new(donjon_core::memory::MemoryStore::default());
        let repo: Name = "a/b".parse().unwrap();
        let config = br#"{"os":"linux","architecture":"riscv64","created":"2026-01-02T03:04:05Z"}"#;
        let digest = Digest::sha256_of(config);
        let body = donjon_core::store::bytes_stream(Bytes::from_static(config));
        store.blob_put(&repo, &digest, body).await.unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest.to_string(), "size": config.len()},
            "layers": [],
        })
        .to_string();
        let registry = tower::service_fn(move |req: Request<Body>| {
            let manifest = manifest.clone();
            async move {
                let mut r = Response::new(Body::empty());
                if req.uri().path().contains("/blobs/") {
                    *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
                    r.headers_mut()
                        .insert(header::LOCATION, HeaderValue::from_static("https://bucket.example/x"));
                } else if req.uri().path().contains("/manifests/") {
                    *r.body_mut() = Body::from(manifest);
                } else {
                    *r.status_mut() = StatusCode::NOT_FOUND;
                }
                Ok::<_, Infallible>(r)
            }
        });
        let ui = crate::BrowseLayer::new().store(store).layer(registry);
        let req = Request::get("/ui/r/a/b:v1").body(Body::empty()).unwrap();
        let resp = ui.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let page = resp.into_body().collect().await.unwrap().to_bytes();
        let page = String::from_utf8_lossy(&page);
        assert!(page.contains("linux/riscv64") && page.contains("2026-01-02T03:04:05Z"), "{page}");
    }

    /// A registry below that lists something other than tags: the page shows the tags only, and
    /// its pull command names one of them (a fuzzer found `docker pull r/x:{}`).
    #[tokio::test]
    async fn what_is_not_a_tag_is_not_listed() {
        use tower::Layer;
        let registry = tower::service_fn(|_: Request<Body>| async {
            let mut r = Response::new(Body::from(r#"{"tags":["{}","a b","$(id)","v1"]}"#));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok::<_, Infallible>(r)
        });
        let ui = crate::BrowseLayer::new().layer(registry);
        let req = Request::get("/ui/r/a/b").body(Body::empty()).unwrap();
        let resp = ui.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let page = resp.into_body().collect().await.unwrap().to_bytes();
        let page = String::from_utf8_lossy(&page);
        assert!(page.contains("a/b:v1"), "{page}");
        assert!(!page.contains("{}") && !page.contains("$(id)") && !page.contains("a b"), "{page}");
    }
}
