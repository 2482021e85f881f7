//! `donjon ls`, `donjon inspect` and `donjon rm`: a small client for any OCI registry (donjon,
//! CNCF Distribution, Harbor, Zot, Docker Hub...), speaking the distribution spec's API only.
//! Not a tower layer: a library of its own, beside the layers because like them it depends on
//! `donjon-core` alone, so that the registry library an embedder mounts does not compile it.
//!
//! ```text
//! $ donjon ls --insecure 127.0.0.1:8000                 # repositories (every catalog page)
//! $ donjon ls --insecure 127.0.0.1:8000/team/app        # tags
//! $ donjon inspect registry.example.com/team/app:v1     # manifest, platforms, layers, referrers
//! $ echo "$PW" | donjon rm -u alice --password-stdin registry.example.com/team/app:old
//! $ donjon inspect --json registry.example.com/team/app@sha256:… | jq .layersSize
//! ```
//!
//! Requests go over HTTPS (hyper-rustls, with Mozilla's roots, the system's, and `--ca-file`'s),
//! or plain HTTP with `--insecure` or an `http://` in front of the registry. Authentication is
//! the registry's choice, answered on its `401`: a `Basic` challenge gets the credentials, a
//! `Bearer` one sends the client to the token endpoint it names (with Basic credentials when
//! there are some, anonymously otherwise; a docker `identitytoken` by the OAuth2 refresh-token
//! grant), and the token is kept for the requests of the same scope
//! ([`donjon_core::challenge`] holds that half). Credentials are `--user` and `--password` (or
//! `--password-stdin`), else what `docker login` or `podman login` wrote ([`credentials`]),
//! else none.
//!
//! Exit status: 0 on success, 1 when a request failed (the registry's OCI error code and
//! message are printed), 2 for a usage error. Warnings go to stderr, results to stdout.
//!
//! # Layout
//!
//! - [`target`]: `REGISTRY[/REPO[:TAG|@DIGEST]]`; TLS (the roots, `--ca-file`) is
//!   [`donjon_core::https`]'s.
//! - [`credentials`]: docker's and podman's auth files; credential helpers are run here.
//! - this crate's root: the HTTP client and the authentication flow ([`Client`]), [`run`].
//! - [`commands`]: what each command asks and the structures it prints (`--json` serializes
//!   them); [`output`]: sizes and columns for people.

pub mod commands;
pub mod credentials;
pub mod output;
pub mod target;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use donjon_core::challenge::{self, Challenge, Tokens};
use donjon_core::response::resolve_location;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};

use commands::Print as _;
use credentials::{Credentials, Found, Secret};
use target::{Registry, Target};

/// The longest wait for one answer (headers and body).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The most redirects followed.
const REDIRECTS: usize = 5;
/// The largest token endpoint answer read.
const TOKEN_ANSWER_MAX: usize = 1 << 20;
/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a command failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Fail {
    /// The command line is wrong: exit status 2.
    Usage(String),
    /// A request failed, or its answer is not what the spec says: exit status 1.
    Request(String),
}

impl Fail {
    fn request(s: impl Into<String>) -> Self {
        Self::Request(s.into())
    }
}

/// A warning, on stderr.
pub fn warn(msg: &str) {
    error_line(&format!("warning: {msg}"));
}

/// `donjon: <msg>` on stderr. A closed stderr (or stdout, in [`run`]) is no reason to panic as
/// `eprintln!` would: `donjon ls | head -1` is a normal use.
fn error_line(msg: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "donjon: {msg}");
}

/// Runs a client command on `arg` (`REGISTRY[/REPO]` for [`Op::Ls`], an image reference for
/// the others), printing its output on stdout and an error on stderr; the exit status: 0, 1
/// when a request failed, 2 when the command line is wrong.
pub fn run(op: Op, arg: &str, args: Options) -> ExitCode {
    let args = &args;
    let result = (|| {
        let target = Target::parse(arg, args.insecure).map_err(Fail::Usage)?;
        op.check(&target)?;
        let flags = flag_credentials(args)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Fail::request(format!("cannot start the runtime: {e}")))?;
        runtime.block_on(async {
            let creds = match flags {
                Some(c) => Some(c),
                None => stored_credentials(&target).await,
            };
            let client = Client::new(target.registry.clone(), creds, args.ca_file.as_deref())?;
            op.run(&client, &target, args.json).await
        })
    })();
    match result {
        Ok(out) => {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush());
            ExitCode::SUCCESS
        }
        Err(Fail::Usage(e)) => {
            error_line(&e);
            ExitCode::from(2)
        }
        Err(Fail::Request(e)) => {
            error_line(&e);
            ExitCode::FAILURE
        }
    }
}

/// The flags the client commands share (the binary's `--user`, `--password`, …).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The user to log in as; without it, the credentials docker or podman stored.
    pub user: Option<String>,
    /// The user's password (or token).
    pub password: Option<String>,
    /// Read the password from the standard input.
    pub password_stdin: bool,
    /// Plain HTTP instead of HTTPS (unless the registry is written with `https://`).
    pub insecure: bool,
    /// Also trust this PEM file's certificates.
    pub ca_file: Option<std::path::PathBuf>,
    /// JSON for scripts instead of text for people.
    pub json: bool,
}

/// A client command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A registry's repositories, or a repository's tags.
    Ls,
    /// A manifest: its platforms, layers, config, annotations and referrers.
    Inspect,
    /// Delete a tag or a manifest.
    Rm,
}

impl Op {
    /// What each command needs named.
    fn check(self, t: &Target) -> Result<(), Fail> {
        let usage = |s: &str| Err(Fail::Usage(format!("{t}: {s}")));
        match (self, &t.repo, &t.reference) {
            (Op::Ls, _, Some(_)) => usage("ls takes REGISTRY or REGISTRY/REPO, without a tag or digest"),
            (Op::Inspect | Op::Rm, None, _) => {
                usage("name a repository: REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST")
            }
            (Op::Rm, Some(_), None) => {
                usage("name the tag (REGISTRY/REPO:TAG) or the manifest (REGISTRY/REPO@DIGEST) to delete")
            }
            _ => Ok(()),
        }
    }

    async fn run(self, c: &Client, t: &Target, json: bool) -> Result<String, Fail> {
        match (self, &t.repo) {
            (Op::Ls, None) => commands::list_repositories(c).await?.print(json),
            (Op::Ls, Some(repo)) => commands::list_tags(c, repo).await?.print(json),
            (Op::Inspect, Some(repo)) => {
                let reference =
                    t.reference.clone().unwrap_or(donjon_core::Reference::Tag(donjon_core::Tag::latest()));
                commands::inspect(c, repo, &reference).await?.print(json)
            }
            (Op::Rm, Some(repo)) => match &t.reference {
                Some(reference) => commands::remove(c, repo, reference).await?.print(json),
                None => Err(Fail::Usage("nothing to delete".into())),
            },
            (Op::Inspect | Op::Rm, None) => Err(Fail::Usage("name a repository".into())),
        }
    }
}

/// `--user` with `--password` or `--password-stdin`.
fn flag_credentials(args: &Options) -> Result<Option<Credentials>, Fail> {
    let password = if args.password_stdin {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Fail::Usage(format!("--password-stdin: cannot read the standard input: {e}")))?;
        Some(s.trim_end_matches(['\n', '\r']).to_string())
    } else {
        if args.password.is_some() {
            // As docker login says: other users of the machine may read a command line.
            warn("--password on the command line can be read by other users of this machine: use --password-stdin");
        }
        args.password.clone()
    };
    match (&args.user, password) {
        (Some(user), Some(password)) => Ok(Some(Credentials {
            user: user.clone(),
            secret: Secret::Password(password),
            source: "--user".into(),
        })),
        (Some(_), None) => Err(Fail::Usage("--user needs --password or --password-stdin".into())),
        (None, Some(_)) => Err(Fail::Usage("--password and --password-stdin need --user".into())),
        (None, None) => Ok(None),
    }
}

/// The credentials docker's and podman's files hold for the registry, asking a credential
/// helper when one keeps them; `None` (anonymous) when none does.
async fn stored_credentials(t: &Target) -> Option<Credentials> {
    let host = &t.registry.host;
    let (found, warnings) =
        credentials::lookup(&credentials::Env::from_process(), host, t.repo.as_ref().map(|r| r.as_str()));
    for w in warnings {
        warn(&w);
    }
    for f in found {
        match f {
            Found::Credentials(c) => return Some(c),
            Found::Helper { helper, file, key } => match run_helper(&helper, &credentials::helper_server(host)).await {
                Ok(Some(c)) => return Some(c),
                Ok(None) => {}
                Err(e) => warn(&format!(
                    "the credentials for {host} are kept by docker-credential-{helper} ({key} in {}), which failed: {e}; going on without them",
                    file.display()
                )),
            },
        }
    }
    None
}

/// `docker-credential-<helper> get` with `server` on its stdin: `Ok(None)` when it has no
/// credentials for it.
async fn run_helper(helper: &str, server: &str) -> Result<Option<Credentials>, String> {
    if helper.is_empty() || !helper.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(format!("{helper:?} is not a helper name"));
    }
    let program = format!("docker-credential-{helper}");
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt as _;
        // A helper that exits without reading is judged by its answer, not by this write.
        let _ = stdin.write_all(server.as_bytes()).await;
    }
    let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("{program} gave no answer within {} s", HELPER_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if stdout.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{program} get: {}: {}",
            out.status,
            excerpt(format!("{stdout} {stderr}").trim().as_bytes())
        ));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let a: Answer = serde_json::from_str(&stdout).map_err(|e| format!("{program} get: not its JSON: {e}"))?;
    if a.secret.is_empty() {
        return Ok(None);
    }
    let source = format!("docker-credential-{helper}");
    // docker's convention: `<token>` as the user name means the secret is an identity token.
    Ok(Some(if a.username == "<token>" {
        Credentials { user: String::new(), secret: Secret::IdentityToken(a.secret), source }
    } else {
        Credentials { user: a.username, secret: Secret::Password(a.secret), source }
    }))
}

type HttpClient = donjon_core::https::Client<Full<Bytes>>;

/// A registry's answer, its body read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// One header's value, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The OCI error codes of the body (`{"errors":[{"code":…}]}`).
    pub fn codes(&self) -> Vec<String> {
        oci_errors(&self.body).into_iter().map(|(c, _)| c).collect()
    }

    /// The status and the registry's words: `HTTP 404 Not Found: NAME_UNKNOWN: repository name
    /// not known to registry`, or an excerpt of a body that is no OCI error.
    pub fn error_text(&self) -> String {
        let status =
            format!("HTTP {} {}", self.status.as_u16(), self.status.canonical_reason().unwrap_or(""));
        let errors = oci_errors(&self.body);
        let words = if errors.is_empty() {
            excerpt(&self.body)
        } else {
            errors
                .iter()
                .map(|(c, m)| if m.is_empty() { c.clone() } else { format!("{c}: {m}") })
                .collect::<Vec<_>>()
                .join("; ")
        };
        if words.is_empty() {
            status.trim_end().to_string()
        } else {
            format!("{}: {words}", status.trim_end())
        }
    }
}

/// The `code`s and `message`s of an OCI error body.
fn oci_errors(body: &[u8]) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| b.errors.into_iter().map(|e| (e.code, e.message)).collect())
        .unwrap_or_default()
}

/// At most 200 characters of a body, on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 200 {
        format!("{}…", one.chars().take(200).collect::<String>())
    } else {
        one
    }
}

/// An HTTP client for one registry, answering its authentication challenges.
pub struct Client {
    http: HttpClient,
    registry: Registry,
    base: String,
    creds: Option<Credentials>,
    basic: Option<HeaderValue>,
    tokens: Tokens,
    /// The registry asked for Basic once: later requests carry it from the start.
    basic_first: AtomicBool,
    /// What `GET /v2/` said (asked only with credentials).
    probe: std::sync::Mutex<Option<Probe>>,
}

/// How a registry wants to be logged in to.
#[derive(Clone, Debug)]
enum Probe {
    /// It challenged no one.
    Open,
    Basic,
    /// Tokens from there.
    Bearer(Challenge),
}

impl Client {
    /// A client for `registry` (trusting `ca_file` beside the usual roots) with `creds`.
    pub fn new(registry: Registry, creds: Option<Credentials>, ca_file: Option<&Path>) -> Result<Self, Fail> {
        let tls =
            donjon_core::https::tls_config(ca_file).map_err(|e| Fail::Usage(format!("--ca-file: {e}")))?;
        let http = donjon_core::https::ClientBuilder::new().connect_timeout(CONNECT_TIMEOUT).build(tls);
        let basic = match &creds {
            Some(Credentials { user, secret: Secret::Password(p), .. }) => {
                Some(challenge::basic(user, p).map_err(|e| Fail::Usage(format!("the credentials: {e}")))?)
            }
            _ => None,
        };
        let base = registry.base_url();
        Ok(Self {
            http,
            registry,
            base,
            creds,
            basic,
            tokens: Tokens::default(),
            basic_first: AtomicBool::new(false),
            probe: std::sync::Mutex::new(None),
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// An absolute URL for a path of the registry (`/v2/…`); an absolute URL as it is.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            return path.to_string();
        }
        format!("{}/{}", self.base.trim_end_matches('/'), path.trim_start_matches('/'))
    }

    /// `GET` of a path of the registry, its body read up to `limit` bytes.
    pub async fn get(&self, path: &str, accept: Option<&str>, limit: usize) -> Result<Answer, Fail> {
        self.request(Method::GET, path, accept, limit).await
    }

    /// `method` on a path of the registry (or a URL the registry gave), answering a challenge
    /// once: every status comes back as an [`Answer`]; only a failure to get one is an error.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        limit: usize,
    ) -> Result<Answer, Fail> {
        let url = self.url(path);
        let uri: Uri = url.parse().map_err(|_| Fail::request(format!("bad URL {url:?}")))?;
        let scope = challenge::scope_for(&method, uri.path());
        let own = self.same_origin(&uri);
        if own && self.creds.is_some() {
            self.log_in(&scope).await?;
        }
        let sent = if own {
            self.tokens
                .get(&scope)
                .or_else(|| self.basic.clone().filter(|_| self.basic_first.load(Ordering::Relaxed)))
        } else {
            None
        };
        let a = self.exchange(&method, &url, accept, sent.clone(), None, limit).await?;
        if a.status != StatusCode::UNAUTHORIZED || !own {
            return Ok(a);
        }
        let challenges = challenge::challenges(&a.headers);
        let retry = if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let (token, ttl) = self.token(bearer).await?;
            self.tokens.put(&scope, token.clone(), ttl);
            token
        } else if let Some(basic) = self.basic.clone().filter(|b| sent.as_ref() != Some(b)) {
            if !challenges.iter().any(|c| c.scheme == "basic") {
                return Ok(a);
            }
            self.basic_first.store(true, Ordering::Relaxed);
            basic
        } else {
            return Ok(a);
        };
        self.exchange(&method, &url, accept, Some(retry), None, limit).await
    }

    /// With credentials, what they are good for is asked before the first request, as docker
    /// does: a registry that lets anyone list or pull may show more to a user (the catalog of
    /// a donjon with private repositories), and would never challenge. `GET /v2/` names the
    /// scheme; then Basic goes with every request, or a token for the request's `scope` is
    /// fetched before it is sent.
    async fn log_in(&self, scope: &str) -> Result<(), Fail> {
        let known = self.probe.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let probe = match known {
            Some(p) => p,
            None => {
                let a = self.exchange(&Method::GET, &self.url("/v2/"), None, None, None, 64 << 10).await?;
                let cs = challenge::challenges(&a.headers);
                let refused = a.status == StatusCode::UNAUTHORIZED;
                let p = match cs.iter().find(|c| c.scheme == "bearer") {
                    Some(c) if refused => Probe::Bearer(c.clone()),
                    _ if refused && cs.iter().any(|c| c.scheme == "basic") => Probe::Basic,
                    _ => Probe::Open,
                };
                *self.probe.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
                p
            }
        };
        match probe {
            Probe::Open => {}
            Probe::Basic => self.basic_first.store(true, Ordering::Relaxed),
            Probe::Bearer(mut c) if !scope.is_empty() && self.tokens.get(scope).is_none() => {
                c.params.retain(|(k, _)| k != "scope" && k != "error");
                c.params.push(("scope".into(), scope.to_string()));
                let (token, ttl) = self.token(&c).await?;
                self.tokens.put(scope, token, ttl);
            }
            Probe::Bearer(_) => {}
        }
        Ok(())
    }

    /// A token answering `c`: by the refresh-token grant for an identity token, else a `GET`
    /// with the Basic credentials (or none).
    async fn token(&self, c: &Challenge) -> Result<(HeaderValue, Duration), Fail> {
        let realm = c.param("realm").unwrap_or_default().to_string();
        let bad = |e: String| Fail::request(format!("{}: bad Bearer challenge: {e}", self.registry.host));
        let a = match &self.creds {
            Some(Credentials { secret: Secret::IdentityToken(t), .. }) => {
                let (realm, form) = challenge::refresh_token_form(c, t, "donjon").map_err(bad)?;
                let body = Some(("application/x-www-form-urlencoded", Bytes::from(form)));
                self.exchange(&Method::POST, &realm, None, None, body, TOKEN_ANSWER_MAX).await?
            }
            _ => {
                let url = challenge::token_url(c).map_err(bad)?;
                // A registry reached over TLS does not get its users' passwords sent in clear.
                if self.basic.is_some() && self.base.starts_with("https://") && url.starts_with("http://") {
                    return Err(Fail::request(format!(
                        "{} sends the login to {realm}, over plain HTTP: refused (the password would cross in clear)",
                        self.registry.host
                    )));
                }
                self.exchange(&Method::GET, &url, None, self.basic.clone(), None, TOKEN_ANSWER_MAX).await?
            }
        };
        if !a.status.is_success() {
            return Err(Fail::request(format!(
                "the token endpoint {realm} refused {}: {}",
                self.who(),
                a.error_text()
            )));
        }
        challenge::parse_token(&a.body).map_err(|e| Fail::request(format!("the token endpoint {realm}: {e}")))
    }

    /// Who the requests are from, for messages.
    fn who(&self) -> String {
        match &self.creds {
            None => "an anonymous request".into(),
            Some(c) if c.user.is_empty() => format!("the identity token from {}", c.source),
            Some(c) => format!("user {} (credentials from {})", c.user, c.source),
        }
    }

    /// A failed answer as the error of `what`, with what may help: how to log in after a
    /// `401`, who was refused after a `403`.
    pub fn failure(&self, what: &str, a: &Answer) -> Fail {
        let hint = match (a.status, &self.creds) {
            (StatusCode::UNAUTHORIZED, None) => " (no credentials were sent: give --user with --password or --password-stdin, or log in with docker login or podman login)".to_string(),
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, Some(_)) => format!(" (as {})", self.who()),
            _ => String::new(),
        };
        Fail::request(format!("{what}: {}{hint}", a.error_text()))
    }

    fn same_origin(&self, uri: &Uri) -> bool {
        uri.scheme_str() == Some(self.registry.scheme)
            && uri.authority().is_some_and(|a| a.as_str().eq_ignore_ascii_case(&self.registry.api_host))
    }

    /// One request and its redirects (for `GET` and `HEAD`; the credentials stay behind when
    /// a redirect leaves the registry), its body read.
    async fn exchange(
        &self,
        method: &Method,
        url: &str,
        accept: Option<&str>,
        mut auth: Option<HeaderValue>,
        body: Option<(&'static str, Bytes)>,
        limit: usize,
    ) -> Result<Answer, Fail> {
        let mut url = url.to_string();
        for _ in 0..=REDIRECTS {
            let uri: Uri = url.parse().map_err(|_| Fail::request(format!("bad URL {url:?}")))?;
            let mut req = Request::builder()
                .method(method.clone())
                .uri(uri.clone())
                .header(header::USER_AGENT, concat!("donjon/", env!("CARGO_PKG_VERSION")));
            if let Some(a) = accept {
                req = req.header(header::ACCEPT, a);
            }
            if let Some(a) = &auth {
                req = req.header(header::AUTHORIZATION, a.clone());
            }
            let payload = match &body {
                Some((content_type, b)) => {
                    req = req.header(header::CONTENT_TYPE, *content_type);
                    b.clone()
                }
                None => Bytes::new(),
            };
            let req =
                req.body(Full::new(payload)).map_err(|e| Fail::request(format!("{method} {url}: {e}")))?;
            let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(req))
                .await
                .map_err(|_| {
                    Fail::request(format!("{method} {url}: no answer within {} s", REQUEST_TIMEOUT.as_secs()))
                })?
                .map_err(|e| Fail::request(format!("{method} {url}: {}", connect_error(&e, &uri))))?;
            let status = resp.status();
            if status.is_redirection() && (method == Method::GET || method == Method::HEAD) {
                if let Some(next) = resp.headers().get(header::LOCATION).and_then(|l| l.to_str().ok()) {
                    let next = resolve_location(&uri, next)
                        .ok_or_else(|| Fail::request(format!("{method} {url}: bad redirect {next:?}")))?;
                    if !self.same_origin(&next) {
                        auth = None;
                    }
                    url = next.to_string();
                    continue;
                }
            }
            let (parts, body) = resp.into_parts();
            let collected = tokio::time::timeout(REQUEST_TIMEOUT, Limited::new(body, limit).collect())
                .await
                .map_err(|_| {
                    Fail::request(format!(
                        "{method} {url}: the answer did not end within {} s",
                        REQUEST_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Fail::request(format!(
                            "{method} {url}: the answer is larger than {}",
                            output::size(limit as u64)
                        ))
                    } else {
                        Fail::request(format!("{method} {url}: reading the answer: {e}"))
                    }
                })?;
            return Ok(Answer { status, headers: parts.headers, body: collected.to_bytes() });
        }
        Err(Fail::request(format!("{method} {url}: more than {REDIRECTS} redirects")))
    }
}

/// A connection error and its causes on one line, with a hint for the usual mistakes.
fn connect_error(e: &(dyn std::error::Error + 'static), uri: &Uri) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    let https = uri.scheme_str() == Some("https");
    if https
        && (s.contains("corrupt message") || s.contains("InvalidContentType") || s.contains("wrong version"))
    {
        s.push_str(" (does the registry speak plain HTTP? then give --insecure)");
    } else if https && s.contains("certificate") {
        s.push_str(" (a self-signed registry: give its certificate with --ca-file)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let a = |status: u16, body: &str| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        };
        let e = a(
            404,
            r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{}}]}"#,
        );
        assert_eq!(e.error_text(), "HTTP 404 Not Found: NAME_UNKNOWN: repository name not known to registry");
        assert_eq!(e.codes(), ["NAME_UNKNOWN"]);
        let e = a(405, r#"{"errors":[{"code":"UNSUPPORTED"},{"code":"DENIED","message":"no"}]}"#);
        assert_eq!(e.error_text(), "HTTP 405 Method Not Allowed: UNSUPPORTED; DENIED: no");
        assert_eq!(
            a(502, "<html>\n  <b>Bad gateway</b>\n</html>").error_text(),
            "HTTP 502 Bad Gateway: <html> <b>Bad gateway</b> </html>"
        );
        assert_eq!(a(500, "").error_text(), "HTTP 500 Internal Server Error");
        assert!(a(500, &"x".repeat(500)).error_text().ends_with("x…"));
    }
}
