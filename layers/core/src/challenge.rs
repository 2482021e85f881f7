//! Registry authentication as a client meets it: `WWW-Authenticate` challenges, the token
//! request a `Bearer` challenge calls for and its answer, Basic credentials, and a token cache
//! (the Docker registry token flow of CNCF Distribution, Harbor, Zot, Docker Hub, and donjon's
//! own auth layer: <https://distribution.github.io/distribution/spec/auth/token/>).
//!
//! Everything here is decided without a socket; a client sends the requests. The load harness
//! (`donjon-bench`), the pull-through cache's upstream client and the `donjon ls`/`inspect`/`rm`
//! commands share it.
//!
//! ```
//! use donjon_core::challenge::{self, parse_challenges, Tokens};
//! use http::Method;
//!
//! // A registry's 401 names the token endpoint, the service and the scope it wants.
//! let c = parse_challenges(
//!     r#"Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull""#,
//! );
//! assert_eq!(c[0].scheme, "bearer");
//! let url = challenge::token_url(&c[0]).unwrap();
//! assert_eq!(url, "https://auth.example/token?service=reg.example&scope=repository%3Aa%2Fb%3Apull");
//!
//! // The endpoint's JSON answer becomes the `Authorization` of the retry, and is kept by the
//! // scope of the request, so the next request of that scope carries it from the start.
//! let (value, ttl) = challenge::parse_token(br#"{"token":"t0k","expires_in":300}"#).unwrap();
//! assert_eq!(value, "Bearer t0k");
//! let tokens = Tokens::default();
//! let scope = challenge::scope_for(&Method::GET, "/v2/a/b/manifests/latest");
//! tokens.put(&scope, value, ttl);
//! assert!(tokens.get("repository:a/b:pull").is_some());
//! assert_eq!(challenge::basic("user", "pass").unwrap(), "Basic dXNlcjpwYXNz");
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use http::Method;
use serde::Deserialize;

/// How long a token lives when its answer has no `expires_in` (the spec's default).
const DEFAULT_TTL: u64 = 60;

/// How long before its announced expiry a token stops being used, to absorb clock and transit.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// One challenge of a `WWW-Authenticate` header: `Bearer realm="...",service="..."`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lowercased: `basic`, `bearer`.
    pub scheme: String,
    /// Parameters in order, names lowercased, values unquoted.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of parameter `name` (lowercase).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The challenges of every `WWW-Authenticate` header of a response.
pub fn challenges(headers: &HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

/// Parses a `WWW-Authenticate` value (RFC 9110 §11.6.1): one or more challenges, each a scheme
/// and `name=value` parameters separated by commas, values either tokens or quoted strings
/// (which may hold commas, as `scope="repository:a:pull,push"` does). A quoted value that
/// never ends is dropped, with its parameter.
pub fn parse_challenges(s: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return out;
        }
        let end = rest.find(|c: char| c == '=' || c == ',' || c.is_ascii_whitespace()).unwrap_or(rest.len());
        let (name, after) = rest.split_at(end);
        match (after.trim_start().strip_prefix('='), out.last_mut()) {
            (Some(value), Some(challenge)) => {
                let (value, r) = param_value(value.trim_start());
                if let Some(value) = value {
                    challenge.params.push((name.to_ascii_lowercase(), value));
                }
                rest = r;
            }
            _ => {
                out.push(Challenge { scheme: name.to_ascii_lowercase(), params: Vec::new() });
                rest = after;
            }
        }
    }
}

/// A parameter value at the start of `s` (quoted, with `\` escapes, or a bare token), and what
/// follows it; `None` for a quoted string that never ends.
fn param_value(s: &str) -> (Option<String>, &str) {
    let Some(quoted) = s.strip_prefix('"') else {
        let end = s.find(|c: char| c == ',' || c.is_ascii_whitespace()).unwrap_or(s.len());
        return (Some(s[..end].to_string()), &s[end..]);
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => value.extend(chars.next().map(|(_, c)| c)),
            '"' => return (Some(value), &quoted[i + 1..]),
            c => value.push(c),
        }
    }
    (None, "")
}

/// The scope a request needs, in the grammar registries use in their challenges:
/// `repository:<name>:pull` for reads, `repository:<name>:pull,push` for writes,
/// `repository:<name>:delete`, `registry:catalog:*`; empty for anything else (`/v2/`).
///
/// It keys the token cache, so that a request finds the token an earlier one of the same scope
/// was given without being challenged first. The token itself is always asked for with the
/// challenge's own scope, so a registry that wants something else still works: only the cache
/// key would be approximate.
pub fn scope_for(method: &Method, path: &str) -> String {
    let Some((_, rest)) = path.split_once("/v2/") else {
        return String::new();
    };
    if rest == "_catalog" {
        return "registry:catalog:*".into();
    }
    let Some(name) = repository_of(rest) else {
        return String::new();
    };
    let actions = match *method {
        Method::GET | Method::HEAD => "pull",
        Method::DELETE => "delete",
        _ => "pull,push",
    };
    format!("repository:{name}:{actions}")
}

/// The repository name of a path below `/v2/`: `<name>/blobs/<digest>`,
/// `<name>/blobs/uploads/[<id>]`, `<name>/manifests/<reference>`, `<name>/referrers/<digest>`,
/// `<name>/tags/list`. Names may hold `/`; references, digests and upload ids may not.
fn repository_of(rest: &str) -> Option<&str> {
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(name);
    }
    let (head, _reference) = rest.rsplit_once('/')?;
    let (head, kind) = head.rsplit_once('/')?;
    match kind {
        "blobs" | "manifests" | "referrers" => Some(head),
        "uploads" => head.strip_suffix("/blobs"),
        _ => None,
    }
}

/// The token request a `Bearer` challenge calls for:
/// `<realm>?service=<service>&scope=<scope>`, one `scope` per space-separated scope.
pub fn token_url(c: &Challenge) -> Result<String, String> {
    let realm = realm(c)?;
    let mut query = Vec::new();
    if let Some(service) = c.param("service") {
        query.push(format!("service={}", form_encode(service)));
    }
    for scope in c.param("scope").unwrap_or_default().split(' ').filter(|s| !s.is_empty()) {
        query.push(format!("scope={}", form_encode(scope)));
    }
    if query.is_empty() {
        return Ok(realm.to_string());
    }
    let sep = if realm.contains('?') { '&' } else { '?' };
    Ok(format!("{realm}{sep}{}", query.join("&")))
}

/// RFC 3986's unreserved characters: what a query value keeps as it is.
const UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn form_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// The `Authorization` value and lifetime of a token endpoint's JSON answer (`token`, or OAuth's
/// `access_token`, and `expires_in` seconds).
pub fn parse_token(body: &[u8]) -> Result<(HeaderValue, Duration), String> {
    let a: TokenAnswer = serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let token = a.token.or(a.access_token).filter(|t| !t.is_empty());
    let token = token.ok_or("the answer has neither `token` nor `access_token`")?;
    let value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the token is not a valid header value".to_string())?;
    Ok((value, Duration::from_secs(a.expires_in.unwrap_or(DEFAULT_TTL).max(1))))
}

/// The `Authorization` value for Basic credentials.
pub fn basic(user: &str, password: &str) -> Result<HeaderValue, String> {
    let v = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
    HeaderValue::from_str(&v).map_err(|e| format!("Basic credentials: {e}"))
}

/// The form of the OAuth2 refresh-token grant a `Bearer` challenge's realm takes instead of a
/// `GET` (`POST`, `application/x-www-form-urlencoded`): what `docker login` keeps as an
/// `identitytoken`, exchanged for an access token with the challenge's service and scope.
///
/// ```
/// use donjon_core::challenge::{parse_challenges, refresh_token_form};
///
/// let c = &parse_challenges(r#"Bearer realm="https://h/token",service="s",scope="repository:a:pull""#)[0];
/// let (realm, form) = refresh_token_form(c, "r3fresh", "donjon").unwrap();
/// assert_eq!(realm, "https://h/token");
/// assert_eq!(form, "grant_type=refresh_token&refresh_token=r3fresh&client_id=donjon&service=s&scope=repository%3Aa%3Apull");
/// ```
pub fn refresh_token_form(
    c: &Challenge,
    refresh_token: &str,
    client_id: &str,
) -> Result<(String, String), String> {
    let realm = realm(c)?;
    let mut form = vec![
        "grant_type=refresh_token".to_string(),
        format!("refresh_token={}", form_encode(refresh_token)),
        format!("client_id={}", form_encode(client_id)),
    ];
    if let Some(service) = c.param("service") {
        form.push(format!("service={}", form_encode(service)));
    }
    // The grant takes one space-separated `scope`.
    if let Some(scope) = c.param("scope").filter(|s| !s.is_empty()) {
        form.push(format!("scope={}", form_encode(scope)));
    }
    Ok((realm.to_string(), form.join("&")))
}

/// The challenge's `realm`, which must be an absolute http(s) URL.
fn realm(c: &Challenge) -> Result<&str, String> {
    let realm = c.param("realm").filter(|r| !r.is_empty()).ok_or("WWW-Authenticate without realm")?;
    if !(realm.starts_with("http://") || realm.starts_with("https://")) {
        return Err(format!("WWW-Authenticate realm is not an http(s) URL: {realm}"));
    }
    Ok(realm)
}

/// Standard base64 with padding (RFC 4648), for the Basic `Authorization` header.
fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Tokens by scope (see [`scope_for`]), each until shortly before it expires.
#[derive(Default)]
pub struct Tokens {
    map: Mutex<HashMap<String, (HeaderValue, Instant)>>,
    /// Held while a token is fetched, so that the workers a run starts at once, all challenged
    /// together, fetch one token between them instead of one each.
    pub fetching: tokio::sync::Mutex<()>,
}

impl Tokens {
    /// The unexpired token for `scope`.
    pub fn get(&self, scope: &str) -> Option<HeaderValue> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(scope) {
            Some((v, until)) if Instant::now() < *until => Some(v.clone()),
            Some(_) => {
                map.remove(scope);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` for `scope` until shortly before `ttl` ends.
    pub fn put(&self, scope: &str, value: HeaderValue, ttl: Duration) {
        let until = Instant::now() + ttl.saturating_sub(EXPIRY_MARGIN).max(ttl / 2);
        self.map.lock().unwrap_or_else(|e| e.into_inner()).insert(scope.to_string(), (value, until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn bearer_challenge_with_quoted_commas() {
        let cs = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].scheme, "bearer");
        assert_eq!(
            params(&cs[0]),
            [
                ("realm", "https://auth.example/token"),
                ("service", "registry.example"),
                ("scope", "repository:a/b:pull,push")
            ]
        );
        assert_eq!(cs[0].param("scope"), Some("repository:a/b:pull,push"));
        assert_eq!(cs[0].param("error"), None);
    }

    #[test]
    fn basic_and_several_challenges() {
        let cs = parse_challenges(r#"Basic realm="Registry Realm", charset="UTF-8""#);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].scheme, "basic");
        assert_eq!(params(&cs[0]), [("realm", "Registry Realm"), ("charset", "UTF-8")]);

        // Two challenges in one value, bare and escaped values, odd spacing and case.
        let cs = parse_challenges(
            r#"BASIC realm=simple , Bearer REALM = "http://h/t?a=1" ,service=s,error="insufficient_scope",x="q\"d""#,
        );
        assert_eq!(cs.len(), 2, "{cs:?}");
        assert_eq!(cs[0].scheme, "basic");
        assert_eq!(params(&cs[0]), [("realm", "simple")]);
        assert_eq!(cs[1].scheme, "bearer");
        assert_eq!(
            params(&cs[1]),
            [("realm", "http://h/t?a=1"), ("service", "s"), ("error", "insufficient_scope"), ("x", "q\"d")]
        );
        assert!(parse_challenges("").is_empty());
        assert_eq!(parse_challenges("Negotiate")[0].scheme, "negotiate");
    }

    #[test]
    fn challenges_from_several_headers() {
        let mut h = HeaderMap::new();
        h.append(WWW_AUTHENTICATE, HeaderValue::from_static(r#"Basic realm="r""#));
        h.append(WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="http://a/t",scope="x y""#));
        let cs = challenges(&h);
        assert_eq!(cs.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(), ["basic", "bearer"]);
    }

    #[test]
    fn token_urls() {
        let c = &parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push""#,
        )[0];
        assert_eq!(
            token_url(c).unwrap(),
            "https://auth.example/token?service=reg.example&scope=repository%3Aa%2Fb%3Apull%2Cpush"
        );
        // Several scopes, a realm with a query, no service.
        let c = &parse_challenges(
            r#"Bearer realm="http://h/t?x=1",scope="registry:catalog:* repository:c:pull""#,
        )[0];
        assert_eq!(
            token_url(c).unwrap(),
            "http://h/t?x=1&scope=registry%3Acatalog%3A%2A&scope=repository%3Ac%3Apull"
        );
        assert_eq!(token_url(&parse_challenges(r#"Bearer realm="http://h/t""#)[0]).unwrap(), "http://h/t");
        let e = token_url(&parse_challenges(r#"Bearer service="s",scope="x""#)[0]).unwrap_err();
        assert_eq!(e, "WWW-Authenticate without realm");
        assert!(token_url(&parse_challenges(r#"Bearer realm="/token""#)[0]).is_err());
    }

    #[test]
    fn scopes_of_requests() {
        let s = |m: Method, p: &str| scope_for(&m, p);
        assert_eq!(s(Method::GET, "/v2/a/b/manifests/latest"), "repository:a/b:pull");
        assert_eq!(s(Method::HEAD, "/v2/a/manifests/sha256:ab"), "repository:a:pull");
        assert_eq!(s(Method::GET, "/v2/a/b/blobs/sha256:ab"), "repository:a/b:pull");
        assert_eq!(s(Method::POST, "/v2/a/b/blobs/uploads/"), "repository:a/b:pull,push");
        assert_eq!(s(Method::PATCH, "/v2/a/b/blobs/uploads/123-abc"), "repository:a/b:pull,push");
        assert_eq!(s(Method::PUT, "/prefix/v2/a/b/blobs/uploads/123"), "repository:a/b:pull,push");
        assert_eq!(s(Method::PUT, "/v2/a/b/manifests/bench"), "repository:a/b:pull,push");
        assert_eq!(s(Method::DELETE, "/v2/a/manifests/sha256:ab"), "repository:a:delete");
        assert_eq!(s(Method::GET, "/v2/tags/x/tags/list"), "repository:tags/x:pull");
        assert_eq!(s(Method::GET, "/v2/a/referrers/sha256:ab"), "repository:a:pull");
        assert_eq!(s(Method::GET, "/v2/_catalog"), "registry:catalog:*");
        assert_eq!(s(Method::GET, "/v2/"), "");
        assert_eq!(s(Method::GET, "/elsewhere"), "");
    }

    #[test]
    fn token_answers() {
        let (v, ttl) = parse_token(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(v, "Bearer abc");
        assert_eq!(ttl, Duration::from_secs(300));
        let (v, ttl) = parse_token(br#"{"access_token":"xyz","issued_at":"2024-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(v, "Bearer xyz");
        assert_eq!(ttl, Duration::from_secs(DEFAULT_TTL));
        assert!(parse_token(br#"{"expires_in":3}"#).unwrap_err().contains("neither"));
        assert!(parse_token(b"<html>").unwrap_err().contains("not JSON"));
        assert!(parse_token(br#"{"token":"a\nb"}"#).is_err());
    }

    #[test]
    fn unterminated_values_are_dropped() {
        let cs = parse_challenges(r#"Bearer service=s, realm="unterminated"#);
        assert_eq!(params(&cs[0]), [("service", "s")]);
        assert!(token_url(&cs[0]).is_err());
    }

    #[test]
    fn refresh_token_forms() {
        let c =
            &parse_challenges(r#"Bearer realm="http://h/t",scope="repository:a:pull repository:b:pull""#)[0];
        let (realm, form) = refresh_token_form(c, "a b&c", "donjon").unwrap();
        assert_eq!(realm, "http://h/t");
        assert_eq!(
            form,
            "grant_type=refresh_token&refresh_token=a%20b%26c&client_id=donjon&scope=repository%3Aa%3Apull%20repository%3Ab%3Apull"
        );
        assert!(refresh_token_form(&parse_challenges("Bearer")[0], "r", "c").is_err());
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(basic("u", "p:w").unwrap(), "Basic dTpwOnc=");
    }

    #[test]
    fn tokens_expire() {
        let t = Tokens::default();
        assert_eq!(t.get("s"), None);
        t.put("s", HeaderValue::from_static("Bearer a"), Duration::from_secs(300));
        assert_eq!(t.get("s"), Some(HeaderValue::from_static("Bearer a")));
        assert_eq!(t.get("other"), None);
        t.put("s", HeaderValue::from_static("Bearer b"), Duration::ZERO);
        assert_eq!(t.get("s"), None);
    }
}
