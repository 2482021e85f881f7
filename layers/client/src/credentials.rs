//! Where the client commands find credentials when no `--user` is given: what `docker login`
//! and `podman login` wrote, read in this order, the first that has the registry winning:
//!
//! 1. docker's `$DOCKER_CONFIG/config.json`, or `~/.docker/config.json`;
//! 2. podman's `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//!    `~/.config/containers/auth.json`.
//!
//! In each, a `credHelpers` entry for the registry comes first, then the `auths` entry (`auth`,
//! base64 `user:password`, or `username` and `password`; an `identitytoken` is the refresh token
//! of the OAuth2 flow), then a `credsStore` (the helper for every registry). Keys are matched
//! as docker and podman write them: `https://host/v1/`, `http://host`, `host`, or podman's
//! `host/namespace` (the longest one containing the repository wins). Docker Hub's key is
//! `https://index.docker.io/v1/`. A helper is run as `docker-credential-<name> get` (see
//! `super::helper`).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// What is sent.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Password(String),
    /// A refresh token for the `Bearer` token endpoint (docker's `identitytoken`).
    IdentityToken(String),
}

/// Credentials and where they came from (for messages).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub secret: Secret,
    pub source: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        match self {
            Secret::Password(p) => write!(f, "Password({} characters)", p.chars().count()),
            Secret::IdentityToken(t) => write!(f, "IdentityToken({} characters)", t.chars().count()),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.secret {
            Secret::Password(_) => "password",
            Secret::IdentityToken(_) => "identity token",
        };
        write!(f, "Credentials({} with a {kind}, from {})", self.user, self.source)
    }
}

/// One candidate for a registry, in the order the files are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    Credentials(Credentials),
    /// `docker-credential-<helper>` keeps them (named in `file`, under `key`:
    /// `credHelpers` or `credsStore`).
    Helper {
        helper: String,
        file: PathBuf,
        key: &'static str,
    },
}

/// The environment the lookup reads.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub docker_config: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub registry_auth_file: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
}

impl Env {
    /// `DOCKER_CONFIG`, `HOME`, `REGISTRY_AUTH_FILE`, `XDG_RUNTIME_DIR` (empty values are unset).
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        Self {
            docker_config: var("DOCKER_CONFIG"),
            home: var("HOME"),
            registry_auth_file: var("REGISTRY_AUTH_FILE"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
        }
    }

    /// The files read, in order.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        match (&self.docker_config, &self.home) {
            (Some(d), _) => out.push(d.join("config.json")),
            (None, Some(h)) => out.push(h.join(".docker/config.json")),
            (None, None) => {}
        }
        out.extend(self.registry_auth_file.clone());
        out.extend(self.xdg_runtime_dir.as_ref().map(|d| d.join("containers/auth.json")));
        out.extend(self.home.as_ref().map(|h| h.join(".config/containers/auth.json")));
        out
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct File {
    auths: std::collections::BTreeMap<String, Entry>,
    #[serde(rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Entry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// Every candidate for the registry `host` (as [`super::target::Registry::host`] names it:
/// `docker.io` for Docker Hub) and repository `repo`, in order, and warnings about files that
/// could not be read.
pub fn lookup(env: &Env, host: &str, repo: Option<&str>) -> (Vec<Found>, Vec<String>) {
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    for path in env.files() {
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                warnings.push(format!("cannot read {}: {e}", path.display()));
                continue;
            }
        };
        match serde_json::from_slice::<File>(&text) {
            Ok(file) => match in_file(&file, &path, host, repo) {
                Ok(f) => found.extend(f),
                Err(e) => warnings.push(e),
            },
            Err(e) => warnings.push(format!("{} is not a credentials file: {e}", path.display())),
        }
    }
    (found, warnings)
}

/// The candidate of one file.
fn in_file(file: &File, path: &Path, host: &str, repo: Option<&str>) -> Result<Option<Found>, String> {
    let helper =
        |helper: &str, key| Found::Helper { helper: helper.to_string(), file: path.to_path_buf(), key };
    if let Some((_, h)) = best(file.cred_helpers.iter(), host, repo) {
        return Ok(Some(helper(h, "credHelpers")));
    }
    let entry = best(file.auths.iter(), host, repo);
    if let Some((key, e)) = entry {
        let source = format!("{} (auths.{key:?})", path.display());
        let (user, password) = match (&e.auth, &e.username, &e.password) {
            (Some(a), _, _) if !a.is_empty() => {
                let (u, p) = decode_auth(a).map_err(|why| format!("{source}: {why}"))?;
                (Some(u), Some(p))
            }
            (_, u, p) => (u.clone(), p.clone()),
        };
        if let Some(token) = e.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            let user = user.unwrap_or_default();
            return Ok(Some(Found::Credentials(Credentials {
                user,
                secret: Secret::IdentityToken(token.clone()),
                source,
            })));
        }
        if let (Some(user), Some(password)) = (user, password) {
            return Ok(Some(Found::Credentials(Credentials {
                user,
                secret: Secret::Password(password),
                source,
            })));
        }
    }
    Ok(file.creds_store.as_deref().filter(|s| !s.is_empty()).map(|s| helper(s, "credsStore")))
}

/// `auth`: base64 of `user:password`.
fn decode_auth(a: &str) -> Result<(String, String), String> {
    let a = a.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(a)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(a.trim_end_matches('=')))
        .map_err(|_| "`auth` is not base64".to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "`auth` is not UTF-8".to_string())?;
    let (u, p) = text.split_once(':').ok_or("`auth` is not user:password")?;
    Ok((u.to_string(), p.to_string()))
}

/// The entry whose key names `host` (and a namespace holding `repo`) most closely.
fn best<'a, V>(
    entries: impl Iterator<Item = (&'a String, &'a V)>,
    host: &str,
    repo: Option<&str>,
) -> Option<(&'a String, &'a V)> {
    entries
        .filter_map(|(k, v)| {
            let (h, path) = key_parts(k);
            let path_ok =
                path.is_empty() || repo.is_some_and(|r| r == path || r.starts_with(&format!("{path}/")));
            (h == host && path_ok).then_some((path.len(), (k, v)))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, e)| e)
}

/// A key's host (lower case, Docker Hub's names as `docker.io`) and namespace: a key with a
/// scheme is docker's (`https://index.docker.io/v1/`: its path is no namespace), one without
/// may be podman's `host/namespace`.
fn key_parts(key: &str) -> (String, &str) {
    let (with_scheme, rest) = match key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")) {
        Some(r) => (true, r),
        None => (false, key),
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = host.to_ascii_lowercase();
    let host = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => super::target::DOCKER_HUB.to_string(),
        _ => host,
    };
    (host, if with_scheme { "" } else { path.trim_end_matches('/') })
}

/// The server name a credential helper is asked about: Docker Hub's legacy URL, else the host.
pub fn helper_server(host: &str) -> String {
    if host == super::target::DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn env(dir: &Path) -> Env {
        Env {
            docker_config: Some(dir.join("docker")),
            home: Some(dir.join("home")),
            registry_auth_file: None,
            xdg_runtime_dir: Some(dir.join("run")),
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn creds(f: &Found) -> (&str, &Secret) {
        match f {
            Found::Credentials(c) => (&c.user, &c.secret),
            other => panic!("not credentials: {other:?}"),
        }
    }

    #[test]
    fn docker_config_keys_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let e = env(dir.path());
        write(
            &dir.path().join("docker/config.json"),
            &format!(
                r#"{{"auths": {{
                    "https://index.docker.io/v1/": {{"auth": "{}"}},
                    "http://reg.example:5000": {{"auth": "{}"}},
                    "tok.example": {{"auth": "{}", "identitytoken": "refresh-me"}},
                    "old.example": {{"username": "u", "password": "p"}},
                    "empty.example": {{}}
                }}}}"#,
                b64("hubber:hub:pw"),
                b64("alice:alice-pw"),
                b64("bob:"),
            ),
        );
        // podman's file comes later: docker's wins where both have the registry.
        write(
            &dir.path().join("run/containers/auth.json"),
            &format!(
                r#"{{"auths": {{"reg.example:5000": {{"auth": "{}"}}, "empty.example": {{"auth": "{}"}}}}}}"#,
                b64("podman:x"),
                b64("p:y")
            ),
        );

        let (f, w) = lookup(&e, "docker.io", Some("library/busybox"));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(creds(&f[0]), ("hubber", &Secret::Password("hub:pw".into())), "a password may hold ':'");
        let (f, _) = lookup(&e, "reg.example:5000", Some("a"));
        assert_eq!(f.len(), 2);
        assert_eq!(creds(&f[0]), ("alice", &Secret::Password("alice-pw".into())));
        assert_eq!(creds(&f[1]), ("podman", &Secret::Password("x".into())));
        let Found::Credentials(c) = &f[0] else { unreachable!() };
        assert!(
            c.source.ends_with(r#"docker/config.json (auths."http://reg.example:5000")"#),
            "{}",
            c.source
        );
        let (f, _) = lookup(&e, "tok.example", None);
        assert_eq!(creds(&f[0]), ("bob", &Secret::IdentityToken("refresh-me".into())));
        let (f, _) = lookup(&e, "old.example", None);
        assert_eq!(creds(&f[0]), ("u", &Secret::Password("p".into())));
        // An empty docker entry (a credsStore's placeholder) is skipped; podman's applies.
        let (f, _) = lookup(&e, "empty.example", None);
        assert_eq!(creds(&f[0]), ("p", &Secret::Password("y".into())));
        assert!(lookup(&e, "reg.example", None).0.is_empty(), "the port is part of the key");
    }

    #[test]
    fn helpers_and_stores() {
        let dir = tempfile::tempdir().unwrap();
        let e = env(dir.path());
        let file = dir.path().join("docker/config.json");
        write(
            &file,
            &format!(
                r#"{{"credsStore": "desktop", "credHelpers": {{"gcr.io": "gcloud"}},
                    "auths": {{"inline.example": {{"auth": "{}"}}, "gcr.io": {{"auth": "{}"}}}}}}"#,
                b64("i:n"),
                b64("g:c"),
            ),
        );
        let helper = |h: &str, key| Found::Helper { helper: h.into(), file: file.clone(), key };
        assert_eq!(lookup(&e, "gcr.io", None).0, [helper("gcloud", "credHelpers")]);
        assert_eq!(lookup(&e, "other.example", None).0, [helper("desktop", "credsStore")]);
        assert_eq!(creds(&lookup(&e, "inline.example", None).0[0]).0, "i");
        assert_eq!(helper_server("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(helper_server("gcr.io"), "gcr.io");
    }

    #[test]
    fn podman_namespaces_and_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = env(dir.path());
        e.docker_config = None;
        let auth_file = dir.path().join("custom.json");
        e.registry_auth_file = Some(auth_file.clone());
        write(
            &auth_file,
            &format!(
                r#"{{"auths": {{"quay.example": {{"auth": "{}"}}, "quay.example/team": {{"auth": "{}"}}, "quay.example/team/app": {{"auth": "{}"}}}}}}"#,
                b64("host:1"),
                b64("team:2"),
                b64("app:3"),
            ),
        );
        write(
            &dir.path().join("home/.docker/config.json"),
            &format!(r#"{{"auths": {{"quay.example": {{"auth": "{}"}}}}}}"#, b64("home:0")),
        );
        let users = |repo| {
            lookup(&e, "quay.example", repo).0.iter().map(|f| creds(f).0.to_string()).collect::<Vec<_>>()
        };
        // ~/.docker/config.json without DOCKER_CONFIG, then REGISTRY_AUTH_FILE.
        assert_eq!(users(Some("team/app")), ["home", "app"]);
        assert_eq!(users(Some("team/other")), ["home", "team"]);
        assert_eq!(users(Some("teamwork")), ["home", "host"], "a namespace is whole components");
        assert_eq!(users(None), ["home", "host"]);
        assert_eq!(
            e.files(),
            [
                dir.path().join("home/.docker/config.json"),
                auth_file,
                dir.path().join("run/containers/auth.json"),
                dir.path().join("home/.config/containers/auth.json"),
            ]
        );
    }

    #[test]
    fn broken_files_are_warned_about_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let e = env(dir.path());
        write(&dir.path().join("docker/config.json"), "{not json");
        write(&dir.path().join("run/containers/auth.json"), r#"{"auths": {"h": {"auth": "%%%"}}}"#);
        write(
            &dir.path().join("home/.config/containers/auth.json"),
            &format!(r#"{{"auths": {{"h": {{"auth": "{}"}}}}}}"#, b64("ok:pw")),
        );
        let (f, w) = lookup(&e, "h", None);
        assert_eq!(creds(&f[0]).0, "ok");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("config.json is not a credentials file"), "{}", w[0]);
        assert!(w[1].contains("`auth` is not base64"), "{}", w[1]);
    }
}
