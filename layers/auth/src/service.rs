use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use donjon_core::claim::{Claim, Claimed, Claiming};
use donjon_core::principal::{ClientConn, Grant, Principal};
use donjon_core::route::{Action, Route};
use donjon_core::{Body, BoxError, Error, ErrorCode, Name};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::layer::{Issuer, Own, Shared};
use crate::scope::{basic_challenge, challenge, Scope};
use crate::token::{Access, Claims};
use crate::AuthLayer;

/// The most verified tokens remembered.
const VERIFIED_MAX: usize = 8192;
/// The largest token request body (an OAuth2 form).
const FORM_MAX: usize = 64 * 1024;

/// The service of [`AuthLayer`]: it answers the token endpoint, refuses what the caller may
/// not do, and passes the rest on with the caller's [`Principal`].
pub type Auth<S> = Claiming<AuthLayer, S>;

/// What a verified token grants, remembered until it expires.
#[derive(Clone, Debug)]
pub(crate) struct Verified {
    principal: Principal,
    catalog: bool,
    exp: u64,
}

/// Credentials a request carries.
enum Credentials {
    None,
    Bearer(String),
    Basic(String, String),
    Malformed,
}

fn credentials(headers: &HeaderMap) -> Credentials {
    let Some(v) = headers.get(header::AUTHORIZATION) else { return Credentials::None };
    let Ok(v) = v.to_str() else { return Credentials::Malformed };
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Credentials::Bearer(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok();
        let text = decoded.and_then(|d| String::from_utf8(d).ok());
        if let Some((u, p)) = text.as_deref().and_then(|t| t.split_once(':')) {
            return Credentials::Basic(u.to_string(), p.to_string());
        }
    }
    Credentials::Malformed
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn action_of(name: &str) -> Option<Action> {
    match name {
        "pull" => Some(Action::Pull),
        "push" => Some(Action::Push),
        "delete" => Some(Action::Delete),
        _ => None,
    }
}

/// The client's address, when the server (or the application) put a [`ClientConn`] on the
/// request. Without one nothing is counted: one shared count would let anyone lock everyone
/// out.
fn client_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    req.extensions().get::<ClientConn>().map(|c| c.peer.ip())
}

/// The token endpoint's URL: the configured one; else this request's scheme and host, where
/// the host is one of the registry's names (the first one when the `Host` names none), or,
/// without names, the address the client connected to. A `Host` header alone never decides
/// where clients send their passwords.
fn realm<B>(s: &Shared, req: &Request<B>) -> String {
    if let Some(r) = &s.realm {
        return r.clone();
    }
    let conn = req.extensions().get::<ClientConn>();
    let tls = conn.is_some_and(|c| c.tls);
    let forwarded = req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok());
    let scheme = match forwarded {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ if tls || req.uri().scheme_str() == Some("https") => "https",
        _ => "http",
    };
    let given = donjon_core::response::request_host(req);
    let host = match (s.hosts.first(), conn.and_then(|c| c.local)) {
        (Some(first), _) => given.and_then(|g| named(&s.hosts, g)).unwrap_or_else(|| first.clone()),
        (None, Some(local)) => local.to_string(),
        // Mounted without a connection's facts: the embedder should set a realm.
        (None, None) => given.unwrap_or("localhost").to_string(),
    };
    format!("{scheme}://{host}/v2/token")
}

/// `given` (a `Host`), when it is one of `names`: the same `host[:port]`, or a name written
/// without a port on any port of it (`reg.example` covers `reg.example:8000`), with the port
/// the request used, which is what its client reached.
fn named(names: &[String], given: &str) -> Option<String> {
    let given_at: http::uri::Authority = given.parse().ok()?;
    names.iter().find_map(|n| {
        if n.eq_ignore_ascii_case(given) {
            return Some(n.clone());
        }
        let portless = n.parse::<http::uri::Authority>().is_ok_and(|a| a.port().is_none());
        (portless && given_at.host().eq_ignore_ascii_case(n)).then(|| match given_at.port_u16() {
            Some(port) => format!("{n}:{port}"),
            None => n.clone(),
        })
    })
}

fn unauthorized<B>(
    s: &Shared,
    req: &Request<B>,
    scope: Option<Scope>,
    error: Option<&str>,
) -> Response<Body> {
    let mut scopes: Vec<Scope> = scope.into_iter().collect();
    // A mount also needs pull on the repository it mounts from.
    if let (Some(Route::UploadStart { .. }), Some(from)) = (
        req.extensions().get::<Route>(),
        donjon_core::response::query_param(req.uri(), "from").and_then(|f| f.parse::<Name>().ok()),
    ) {
        scopes.push(Scope::repository(from.as_str(), &["pull"]));
    }
    donjon_core::metrics::metrics().record_auth_refusal("unauthenticated");
    let mut resp = Error::new(ErrorCode::Unauthorized, "authentication required").into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge(&realm(s, req), s.service(), &scopes, error));
    resp
}

fn denied() -> Response<Body> {
    donjon_core::metrics::metrics().record_auth_refusal("denied");
    Error::new(ErrorCode::Denied, "requested access to the resource is denied").into_response()
}

fn too_many(wait: std::time::Duration) -> Response<Body> {
    donjon_core::metrics::metrics().record_auth_refusal("limited");
    let mut resp =
        Error::new(ErrorCode::TooManyRequests, "too many failed logins from this address; try again later")
            .into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
    resp
}

impl Shared {
    /// The service tokens are for.
    fn service(&self) -> &str {
        match &self.issuer {
            Issuer::Own(own) => own.tokens.service(),
            Issuer::External(ext) => ext.service(),
        }
    }

    /// What a token grants, from the cache or verified now.
    fn token(&self, token: &str) -> Result<Verified, String> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now();
        if let Some(v) = self.verified.lock().ok().and_then(|c| c.get(&key).cloned()) {
            if v.exp > now {
                return Ok(v);
            }
        }
        let claims = match &self.issuer {
            Issuer::Own(own) => own.tokens.verify(token)?,
            Issuer::External(ext) => ext.verify(token)?,
        };
        let v = self.verified_of(claims);
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= VERIFIED_MAX {
                cache.retain(|_, v| v.exp > now);
                if cache.len() >= VERIFIED_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, v.clone());
        }
        Ok(v)
    }

    fn verified_of(&self, c: Claims) -> Verified {
        let mut catalog = false;
        let mut grants: Vec<Grant> = vec![];
        for a in &c.access {
            match a.kind.as_str() {
                "registry" if a.name == "catalog" => catalog = true,
                "repository" => {
                    let actions: Vec<Action> = if a.actions.iter().any(|x| x == "*") {
                        vec![Action::Pull, Action::Push, Action::Delete]
                    } else {
                        a.actions.iter().filter_map(|x| action_of(x)).collect()
                    };
                    // Names never hold `*`, so a grant on one is that repository only.
                    if !a.name.contains('*') {
                        match grants.iter_mut().find(|g| g.pattern == a.name) {
                            Some(g) => g.actions.extend(actions),
                            None => grants.push(Grant::new(a.name.clone(), actions)),
                        }
                    }
                }
                _ => {}
            }
        }
        let principal = match c.sub.as_str() {
            "" => Principal::anonymous(grants),
            sub => Principal::user(sub, grants),
        };
        Verified { principal, catalog, exp: c.exp }
    }

    /// The decision for a caller whose identity is settled: the principal to pass down, or the
    /// refusal. `via_token`: the rights come from a token (so a refusal is a challenge for a
    /// better one, never a bare 403).
    fn decide<B>(
        &self,
        req: &Request<B>,
        route: &Route,
        caller: Caller,
    ) -> Result<Principal, Response<Body>> {
        let scope = Scope::needed(route, req.method());
        let (principal, via_token, catalog) = match caller {
            Caller::Token(v) => (v.principal, true, v.catalog),
            Caller::User(u, own) => {
                let p = own.rules.principal(Some(&u));
                let catalog = p.pulls_anywhere();
                (p, false, catalog)
            }
            Caller::Anonymous => (self.anonymous.clone(), false, self.anonymous.pulls_anywhere()),
        };
        let known = principal.subject.is_some();
        let allowed = match route.action(req.method()) {
            // `/v2/`: a login, or any token.
            None => known || via_token,
            Some(Action::Catalog) => catalog,
            Some(action) => route.name().is_some_and(|n| principal.may(n, action)),
        };
        if allowed {
            // The catalog lists what the caller may pull: its rules, not the token's scopes.
            if matches!(route, Route::Catalog) && via_token {
                let sub = principal.subject.as_deref().map(str::to_string);
                return Ok(match &self.issuer {
                    Issuer::Own(own) => own.rules.principal(sub.as_deref()),
                    // Another token server granted the catalog: it lists every repository,
                    // as Distribution's does.
                    Issuer::External(_) => {
                        let all = vec![Grant::new("**", vec![Action::Pull])];
                        match sub {
                            Some(sub) => Principal::user(&sub, all),
                            None => Principal::anonymous(all),
                        }
                    }
                });
            }
            return Ok(principal);
        }
        if known && !via_token {
            return Err(denied());
        }
        let error = via_token.then_some("insufficient_scope");
        let mut resp = unauthorized(self, req, scope, error);
        // A logged-in user whose rules would not allow it either: a better token will not
        // come, so the body says DENIED (what docker prints), beside the challenge.
        if let (true, Some(sub), Issuer::Own(own)) = (via_token, principal.subject.as_deref(), &self.issuer) {
            let rules = own.rules.principal(Some(sub));
            let allowed_by_rules = match route.action(req.method()) {
                None => true,
                Some(Action::Catalog) => rules.pulls_anywhere(),
                Some(a) => route.name().is_some_and(|n| rules.may(n, a)),
            };
            if !allowed_by_rules {
                let mut d = denied();
                *d.status_mut() = StatusCode::UNAUTHORIZED;
                if let Some(h) = resp.headers_mut().remove(header::WWW_AUTHENTICATE) {
                    d.headers_mut().insert(header::WWW_AUTHENTICATE, h);
                }
                resp = d;
            }
        }
        Err(resp)
    }
}

/// Who a request is from, once its credentials are checked.
enum Caller<'a> {
    Token(Verified),
    /// A user of donjon's own, by Basic credentials.
    User(String, &'a Own),
    Anonymous,
}

impl<S, B> Claim<S, B> for AuthLayer
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn claim(&self, mut req: Request<B>, _: &S) -> Claimed<B> {
        let Some(route) = req.extensions().get::<Route>().cloned() else {
            return Claimed::Pass(req);
        };
        let shared = self.shared.clone();
        if route == Route::Token {
            if let Issuer::Own(_) = shared.issuer {
                return Claimed::answer(async move { token_endpoint(&shared, req).await });
            }
            // Another server issues the tokens: the registry has no token endpoint.
            return Claimed::Pass(req);
        }
        let caller = match credentials(req.headers()) {
            Credentials::None => Caller::Anonymous,
            Credentials::Bearer(t) => match shared.token(&t) {
                Ok(v) => Caller::Token(v),
                Err(e) => {
                    tracing::debug!(error = %e, "token refused");
                    let scope = Scope::needed(&route, req.method());
                    return Claimed::Respond(unauthorized(&shared, &req, scope, Some("invalid_token")));
                }
            },
            Credentials::Malformed => {
                return Claimed::Respond(unauthorized(
                    &shared,
                    &req,
                    Scope::needed(&route, req.method()),
                    None,
                ));
            }
            // With another token server, registry requests carry its tokens only.
            Credentials::Basic(..) if matches!(shared.issuer, Issuer::External(_)) => {
                return Claimed::Respond(unauthorized(
                    &shared,
                    &req,
                    Scope::needed(&route, req.method()),
                    None,
                ));
            }
            Credentials::Basic(user, password) => {
                // The attempt is counted before bcrypt runs (a failure unless it succeeds).
                let attempt =
                    match client_ip(&req).map(|ip| shared.limiter.begin(ip, &user, &password)).transpose() {
                        Ok(a) => a,
                        Err(wait) => return Claimed::Respond(too_many(wait)),
                    };
                // bcrypt (or its cache) first; then the same decision as for the others.
                return Claimed::later(async move {
                    let Issuer::Own(own) = &shared.issuer else { return Err(denied()) };
                    if !own.users.verify(&user, &password).await {
                        let scope = Scope::needed(&route, req.method());
                        return Err(unauthorized(&shared, &req, scope, None));
                    }
                    attempt.map(crate::limiter::Attempt::succeeded);
                    let p = shared.decide(&req, &route, Caller::User(user, own))?;
                    admit(&mut req, p);
                    Ok(req)
                });
            }
        };
        match shared.decide(&req, &route, caller) {
            Ok(p) => {
                admit(&mut req, p);
                Claimed::Pass(req)
            }
            Err(resp) => Claimed::Respond(resp),
        }
    }
}

/// The request goes on as `p`'s (the access log's actor, the principal for the layers below).
fn admit<B>(req: &mut Request<B>, p: Principal) {
    if let Some(slot) = req.extensions().get::<donjon_core::ActorSlot>() {
        slot.set(p.subject.clone());
    }
    req.extensions_mut().insert(p);
}

/// The parameters of a token request: the query of a `GET`, the form of a `POST`.
#[derive(Default)]
struct TokenRequest {
    scopes: Vec<String>,
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    offline: bool,
}

impl TokenRequest {
    fn from_pairs(pairs: form_urlencoded::Parse<'_>) -> Self {
        let mut r = Self::default();
        for (k, v) in pairs {
            match k.as_ref() {
                // Repeated (GET), or space-separated (the OAuth2 form): both are taken.
                "scope" => r.scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_string)),
                "grant_type" => r.grant_type = Some(v.into_owned()),
                "username" => r.username = Some(v.into_owned()),
                "password" => r.password = Some(v.into_owned()),
                "refresh_token" => r.refresh_token = Some(v.into_owned()),
                "offline_token" => r.offline |= v == "true",
                "access_type" => r.offline |= v == "offline",
                _ => {}
            }
        }
        r
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": error, "error_description": description }).to_string();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `GET`/`POST /v2/token`: who is asking (Basic credentials, the form's password or refresh
/// token, or nobody), and a token for what the rules let them have of what they asked.
async fn token_endpoint<B>(s: &Shared, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let Issuer::Own(own) = &s.issuer else {
        return Error::new(ErrorCode::NameUnknown, "no token endpoint").into_response();
    };
    let Own { users, rules, tokens } = own;
    let ip = client_ip(&req);
    let basic = match credentials(req.headers()) {
        Credentials::Basic(u, p) => Some((u, p)),
        _ => None,
    };
    let params = match token_params(req).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let subject = match authenticate(s, own, &params, basic, ip).await {
        Ok(sub) => sub,
        Err(resp) => return resp,
    };
    let user = subject.as_deref();
    let issued = tokens.issue(user, granted(rules, user, &params.scopes));
    let mut body = serde_json::json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at,
    });
    // A refresh token only when asked for offline access (docker's `offline_token=true` at
    // login, the OAuth2 form's `access_type=offline`): it lives long, so it is not handed out
    // unasked.
    if let (true, Some(u)) = (params.offline, user) {
        if let Some(fp) = users.fingerprint(u) {
            body["refresh_token"] = serde_json::Value::String(tokens.issue_refresh(u, &fp));
        }
    }
    let mut resp = Response::new(Body::from(body.to_string()));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The token request's parameters: the query of a GET (which may carry no credentials: URLs
/// are logged), the form of a POST.
async fn token_params<B>(req: Request<B>) -> Result<TokenRequest, Response<Body>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if req.method() == Method::GET || req.method() == Method::HEAD {
        let params =
            TokenRequest::from_pairs(form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()));
        // A URL's query is written to access logs, proxies' and browsers' histories.
        if params.password.is_some() || params.refresh_token.is_some() {
            donjon_core::metrics::metrics().record_auth_refusal("credentials_in_query");
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "credentials in the query string are refused (URLs end up in logs): send them as \
                 Basic auth, or in a POST form (application/x-www-form-urlencoded)",
            ));
        }
        Ok(params)
    } else if req.method() == Method::POST {
        match http_body_util::Limited::new(req.into_body(), FORM_MAX).collect().await {
            Ok(b) => Ok(TokenRequest::from_pairs(form_urlencoded::parse(&b.to_bytes()))),
            Err(_) => {
                Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "unreadable or too large form"))
            }
        }
    } else {
        Err(Error::method_not_allowed().into_response())
    }
}

/// Who asks: the subject of a valid refresh token, or a user whose password checks (the
/// form's, else Basic's, counted by the limiter), or nobody (anonymous); or the refusal.
async fn authenticate(
    s: &Shared,
    own: &Own,
    params: &TokenRequest,
    basic: Option<(String, String)>,
    ip: Option<IpAddr>,
) -> Result<Option<String>, Response<Body>> {
    let bad_credentials = || {
        donjon_core::metrics::metrics().record_auth_refusal("bad_credentials");
        let mut resp = Error::new(ErrorCode::Unauthorized, "invalid credentials").into_response();
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, basic_challenge(&s.basic_realm));
        resp
    };
    match params.grant_type.as_deref() {
        Some("refresh_token") => {
            let Some(t) = params.refresh_token.as_deref() else {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token is missing",
                ));
            };
            let (sub, fp) = own.tokens.verify_refresh(t).map_err(|_| bad_credentials())?;
            // Refresh tokens are signed: a forged one fails its signature, not here.
            let current = own.users.fingerprint(&sub).unwrap_or_default();
            if !bool::from(current.as_bytes().ct_eq(fp.as_bytes())) || current.is_empty() {
                return Err(bad_credentials());
            }
            Ok(Some(sub))
        }
        Some("password") | None => {
            let given = match (params.username.clone(), params.password.clone()) {
                (Some(u), Some(p)) => Some((u, p)),
                _ => basic,
            };
            let Some((u, p)) = given else { return Ok(None) };
            // Counted before bcrypt runs: a failure unless it succeeds.
            let attempt = ip.map(|ip| s.limiter.begin(ip, &u, &p)).transpose().map_err(too_many)?;
            if !own.users.verify(&u, &p).await {
                return Err(bad_credentials());
            }
            attempt.map(crate::limiter::Attempt::succeeded);
            Ok(Some(u))
        }
        Some(other) => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant_type {other:?}: use password or refresh_token"),
        )),
    }
}

/// What the rules let `user` have of the `scopes` asked: per repository, the actions asked
/// and allowed; the catalog when asked and allowed. What is neither is left out, not refused.
fn granted(rules: &crate::rules::Rules, user: Option<&str>, scopes: &[String]) -> Vec<Access> {
    let mut access: Vec<Access> = vec![];
    for scope in scopes {
        let Ok(scope) = scope.parse::<Scope>() else { continue };
        match scope.kind.as_str() {
            "repository" => {
                let Ok(name) = scope.name.parse::<Name>() else { continue };
                let allowed = rules.actions(user, name.as_str());
                let granted: Vec<String> = allowed
                    .iter()
                    .filter(|a| scope.actions.iter().any(|asked| asked == "*" || asked == a.as_str()))
                    .map(|a| a.as_str().to_string())
                    .collect();
                if !granted.is_empty() {
                    access.push(Access::repository(name.as_str(), granted));
                }
            }
            "registry" if scope.name == "catalog" && rules.may_list(user) => access.push(Access::catalog()),
            _ => {}
        }
    }
    access
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::time::Duration;

    use donjon_core::RouteLayer;
    use http_body_util::BodyExt as _;
    use tower::{Layer as _, ServiceExt as _};

    use super::*;
    use crate::rules::{Rule, Rules, Who};
    use crate::token::{SigningKey, Tokens};
    use crate::users::Users;
    use crate::AuthLayer;

    /// alice may pull and push `team/**`; bob may only pull it; anonymous callers may pull
    /// `public/**`. Behind it, a service that answers 200 "inner" with the caller's subject.
    fn registry(
    ) -> impl tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = impl Send>
           + Clone {
        let file = tempfile::NamedTempFile::new().unwrap();
        let alice = bcrypt::hash("alice-pw", 4).unwrap();
        let bob = bcrypt::hash("bob-pw", 4).unwrap();
        std::fs::write(file.path(), format!("alice:{alice}\nbob:{bob}\n")).unwrap();
        let users = Users::new(Some(file.path()), None).unwrap();
        let rules = Rules::new(
            vec![
                Rule::new("team/**", vec![Who::User("alice".into())], vec![Action::Pull, Action::Push]),
                Rule::new("team/**", vec![Who::User("bob".into())], vec![Action::Pull]),
                Rule::new("public/**", vec![Who::Anyone], vec![Action::Pull]),
            ],
            BTreeMap::new(),
        );
        let tokens =
            Tokens::new(SigningKey::generate().unwrap(), "donjon", "donjon", Duration::from_secs(300));
        let auth = AuthLayer::new(users, rules, tokens).hosts(["registry.test"]);
        let inner = tower::service_fn(|req: Request<Body>| async move {
            let who = req.extensions().get::<donjon_core::Principal>().and_then(|p| p.subject.clone());
            Ok::<_, Infallible>(Response::new(Body::from(format!(
                "inner {}",
                who.as_deref().unwrap_or("anonymous")
            ))))
        });
        RouteLayer::new().layer(auth.layer(inner))
    }

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    async fn send(
        svc: &(impl tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone),
        method: &str,
        uri: &str,
        authorization: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(uri).header("host", "registry.test");
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = svc.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
    }

    async fn token(
        svc: &(impl tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone),
        user: &str,
        password: &str,
        scope: &str,
    ) -> String {
        let (status, _, body) = send(
            svc,
            "GET",
            &format!("/v2/token?service=donjon&scope={scope}"),
            Some(&basic(user, password)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn anonymous_callers_get_what_the_rules_give_them_and_a_challenge_for_the_rest() {
        let svc = registry();
        let (status, _, body) = send(&svc, "GET", "/v2/public/tool/manifests/v1", None).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "inner anonymous"));
        let (status, h, _) = send(&svc, "GET", "/v2/team/app/manifests/v1", None).await;
        assert_eq!(status, 401);
        let c = h[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert_eq!(
            c,
            r#"Bearer realm="http://registry.test/v2/token",service="donjon",scope="repository:team/app:pull""#
        );
        // A push names push and pull.
        let (_, h, _) = send(&svc, "PUT", "/v2/team/app/manifests/v1", None).await;
        assert!(h[header::WWW_AUTHENTICATE].to_str().unwrap().contains("repository:team/app:pull,push"));
    }

    #[tokio::test]
    async fn the_token_endpoint_grants_what_the_rules_allow_and_no_more() {
        let svc = registry();
        let t = token(&svc, "bob", "bob-pw", "repository:team/app:pull,push").await;
        let bearer = format!("Bearer {t}");
        let (status, _, body) = send(&svc, "GET", "/v2/team/app/manifests/v1", Some(&bearer)).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "inner bob"));
        let (status, h, _) = send(&svc, "PUT", "/v2/team/app/manifests/v1", Some(&bearer)).await;
        assert_eq!(status, 401, "bob's token was granted pull only");
        assert!(h[header::WWW_AUTHENTICATE].to_str().unwrap().contains("insufficient_scope"));
        // alice's grants push; a token for one repository is not one for another.
        let t = format!("Bearer {}", token(&svc, "alice", "alice-pw", "repository:team/app:pull,push").await);
        assert_eq!(send(&svc, "PUT", "/v2/team/app/manifests/v1", Some(&t)).await.0, 200);
        assert_eq!(send(&svc, "GET", "/v2/team/other/manifests/v1", Some(&t)).await.0, 401);
        // A wrong password gets no token; a forged one is refused as invalid.
        let (status, _, _) =
            send(&svc, "GET", "/v2/token?service=donjon", Some(&basic("alice", "wrong"))).await;
        assert_eq!(status, 401);
        let (status, h, _) = send(&svc, "GET", "/v2/team/app/manifests/v1", Some("Bearer not.a.token")).await;
        assert_eq!(status, 401);
        assert!(h[header::WWW_AUTHENTICATE].to_str().unwrap().contains("invalid_token"));
    }

    #[tokio::test]
    async fn basic_credentials_on_registry_requests_are_decided_like_a_token() {
        let svc = registry();
        let (status, _, body) =
            send(&svc, "GET", "/v2/team/app/tags/list", Some(&basic("bob", "bob-pw"))).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "inner bob"));
        let (status, _, body) =
            send(&svc, "DELETE", "/v2/team/app/manifests/v1", Some(&basic("alice", "alice-pw"))).await;
        assert_eq!(status, 403, "alice may not delete: {body}");
        assert!(body.contains("DENIED"), "{body}");
        let (status, _, _) = send(&svc, "GET", "/v2/team/app/tags/list", Some(&basic("bob", "nope"))).await;
        assert_eq!(status, 401);
        let (status, _, _) = send(&svc, "GET", "/v2/team/app/tags/list", Some("Basic !!!")).await;
        assert_eq!(status, 401, "malformed credentials are none");
    }

    #[test]
    fn a_realm_names_the_registry_as_its_client_reached_it() {
        let names = vec!["registry.test".to_string(), "reg.example:8443".to_string()];
        assert_eq!(
            named(&names, "registry.test:5000").as_deref(),
            Some("registry.test:5000"),
            "any port of a port-less name"
        );
        assert_eq!(named(&names, "REG.example:8443").as_deref(), Some("reg.example:8443"));
        assert_eq!(named(&names, "reg.example:9000"), None, "another port of a name with one");
        assert_eq!(named(&names, "evil.test"), None);
    }
}
