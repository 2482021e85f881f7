//! The auth layer's settings: Distribution's `auth` section (`htpasswd: {realm, path}`) and
//! donjon's own keys beside it: the access rules, groups, the token service and lifetimes, and
//! the signing key. Trow's `--user`/`--password` arrive as [`AuthConfig::user`]. Or
//! Distribution's `auth.token` (`realm, service, issuer, rootcertbundle, jwks,
//! signingalgorithms`): another token server issues the tokens, and donjon checks them.
//!
//! ```
//! use donjon_auth::AuthConfig;
//! use donjon_core::config::Warnings;
//!
//! let yaml = r#"
//! access:
//!   - {repository: "public/**", who: anyone, actions: [pull]}
//!   - {repository: "**", who: authenticated, actions: [pull, push, delete]}
//! "#;
//! let c: AuthConfig = serde_yaml::from_str(yaml).unwrap();
//! c.check(&mut Warnings::default()).unwrap();
//! assert!(c.enabled());
//! let rules = c.rules().unwrap();
//! assert_eq!(rules.actions(None, "public/x").len(), 1);
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use donjon_core::config::{duration, Accepted, ConfigError, Warnings};
use donjon_core::route::Action;
use donjon_core::Store;
use serde::{Deserialize, Serialize};

use crate::issuer::TrustedIssuer;
use crate::rules::{Rule, Rules, Who};
use crate::token::{SigningKey, Tokens};
use crate::users::Users;
use crate::AuthLayer;

/// Access tokens live five minutes, as Docker Hub's do.
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// The `auth` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Distribution's `auth.htpasswd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub htpasswd: Option<HtpasswdConfig>,
    /// Distribution's `auth.token`: another token server issues the tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenConfig>,
    /// Distribution's `auth.silly`: refused (it lets anyone in).
    #[serde(skip_serializing)]
    pub silly: Option<Accepted>,
    /// The service tokens are for (their audience; default: the host name, else `donjon`).
    pub service: Option<String>,
    /// The tokens' issuer (default `donjon`).
    pub issuer: Option<String>,
    /// The token endpoint's URL in challenges (default: built from each request's host).
    pub realm: Option<String>,
    /// The PEM file of the signing key (default: `auth/token-signing-key.pem` that the store
    /// keeps, in the data directory or the bucket, made on first start).
    pub signing_key: Option<PathBuf>,
    /// How long access tokens live (default 5m).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub token_lifetime: Option<Duration>,
    /// How long refresh tokens (a `docker login`'s identity token) live (default 720h).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub refresh_lifetime: Option<Duration>,
    /// Groups of users, for rules (`group:NAME`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Vec<String>>,
    /// The rules, first match wins. Without any: every authenticated user may do anything,
    /// anonymous callers nothing (Distribution's behaviour).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<RuleConfig>,
    /// Failed logins an address may make: `per_user` (10), `per_address` (30), `window` (1m),
    /// `ipv6_prefix` (64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_limit: Option<crate::limiter::LoginLimit>,
    /// Trow's `--user`/`--password`: one more user (the password may be `file://PATH`).
    #[serde(skip)]
    pub user: Option<(String, String)>,
}

/// Distribution's `auth.htpasswd`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HtpasswdConfig {
    /// The realm of Basic challenges.
    #[serde(default)]
    pub realm: Option<String>,
    /// The file (bcrypt entries).
    pub path: PathBuf,
}

/// Distribution's `auth.token`: the token server clients are sent to, and what its tokens
/// must be: from `issuer`, for `service`, signed by a certificate of `rootcertbundle` (or one
/// it issued, in an `x5c` chain) or a key of `jwks`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenConfig {
    /// The token server's URL, for challenges.
    pub realm: String,
    /// The service tokens are for (their `aud`).
    pub service: String,
    /// The tokens' `iss`.
    pub issuer: String,
    /// A PEM file of certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootcertbundle: Option<PathBuf>,
    /// A JWK Set file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<PathBuf>,
    /// The only signature algorithms accepted (default: each key's own).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signingalgorithms: Vec<String>,
    /// Distribution's realm built from each request's host: refused (set `realm`).
    #[serde(skip_serializing)]
    pub autoredirect: Option<Accepted>,
    /// Its path.
    #[serde(skip_serializing)]
    pub autoredirectpath: Option<Accepted>,
}

impl TokenConfig {
    /// The trusted issuer, its files read.
    pub fn issuer(&self) -> Result<TrustedIssuer, ConfigError> {
        for (key, value) in [("realm", &self.realm), ("service", &self.service), ("issuer", &self.issuer)] {
            if value.is_empty() {
                return Err(ConfigError::new(format!("auth.token.{key}"), "is required"));
            }
        }
        if self.autoredirect.is_some() || self.autoredirectpath.is_some() {
            return Err(ConfigError::new(
                "auth.token.autoredirect",
                "is not supported: set auth.token.realm to the token server's URL",
            ));
        }
        let read = |key: &str, path: &Path| {
            std::fs::read(path).map_err(|e| {
                ConfigError::new(format!("auth.token.{key}"), format!("cannot read {}: {e}", path.display()))
            })
        };
        let mut issuer = TrustedIssuer::new(&self.issuer, &self.service);
        if let Some(p) = &self.rootcertbundle {
            issuer = issuer.root_cert_bundle(&read("rootcertbundle", p)?).map_err(|e| {
                ConfigError::new("auth.token.rootcertbundle", format!("{}: {e}", p.display()))
            })?;
        }
        if let Some(p) = &self.jwks {
            issuer = issuer
                .jwks(&read("jwks", p)?)
                .map_err(|e| ConfigError::new("auth.token.jwks", format!("{}: {e}", p.display())))?;
        }
        if issuer.key_count() == 0 {
            return Err(ConfigError::new(
                "auth.token",
                "needs at least one signing key: rootcertbundle or jwks",
            ));
        }
        if !self.signingalgorithms.is_empty() {
            issuer = issuer
                .signing_algorithms(&self.signingalgorithms)
                .map_err(|e| ConfigError::new("auth.token.signingalgorithms", e))?;
        }
        Ok(issuer)
    }
}

/// One rule: `{repository: GLOB, who: WHO | [WHO…], actions: [pull, push, delete]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleConfig {
    /// A repository name or glob (`*` within a component, `**` across).
    pub repository: String,
    /// `anyone`, `anonymous`, `authenticated`, `user:NAME`, `group:NAME`, or a list.
    pub who: OneOrMany,
    /// What they may do; `[]` denies.
    #[serde(default)]
    pub actions: Vec<String>,
}

/// A string or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<&str> {
        match self {
            Self::One(s) => vec![s.as_str()],
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

impl AuthConfig {
    /// Whether the section asks for authentication at all.
    pub fn enabled(&self) -> bool {
        self.htpasswd.is_some() || self.user.is_some() || !self.access.is_empty() || self.token.is_some()
    }

    /// The rules, parsed.
    pub fn rules(&self) -> Result<Rules, ConfigError> {
        if self.access.is_empty() {
            return Ok(Rules::authenticated_may_do_anything());
        }
        let mut rules = vec![];
        for (i, r) in self.access.iter().enumerate() {
            let at = |k: &str| format!("auth.access[{i}].{k}");
            if r.repository.is_empty() {
                return Err(ConfigError::new(at("repository"), "is empty"));
            }
            let who = r
                .who
                .items()
                .iter()
                .map(|w| w.parse::<Who>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::new(at("who"), e))?;
            let actions = r
                .actions
                .iter()
                .map(|a| match a.as_str() {
                    "pull" => Ok(vec![Action::Pull]),
                    "push" => Ok(vec![Action::Push]),
                    "delete" => Ok(vec![Action::Delete]),
                    "*" => Ok(vec![Action::Pull, Action::Push, Action::Delete]),
                    other => Err(ConfigError::new(
                        at("actions"),
                        format!("{other:?} is not pull, push, delete or *"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?
                .concat();
            rules.push(Rule::new(r.repository.clone(), who, actions));
        }
        Ok(Rules::new(rules, self.groups.clone()))
    }

    /// Checks the section: what cannot work names its key; rules naming undefined groups are
    /// warned about.
    pub fn check(&self, warnings: &mut Warnings) -> Result<(), ConfigError> {
        self.refusals()?;
        if let Some(l) = &self.login_limit {
            let bad = |k: &str, why: &str| Err(ConfigError::new(format!("auth.login_limit.{k}"), why));
            if l.per_user == 0 {
                return bad("per_user", "must be at least 1");
            }
            if l.per_address == 0 {
                return bad("per_address", "must be at least 1");
            }
            if l.window.is_zero() {
                return bad("window", "must be above zero");
            }
            if l.ipv6_prefix > 128 {
                return bad("ipv6_prefix", "is a prefix length: 0 to 128 (64 counts a client's /64 as one)");
            }
        }
        if let Some(t) = &self.token {
            return t.issuer().map(drop);
        }
        let rules = self.rules()?;
        for g in rules.undefined_groups() {
            warnings.push(format!("auth.access names group {g:?}, which auth.groups does not define"));
        }
        if let Some(h) = &self.htpasswd {
            let text = std::fs::read_to_string(&h.path).map_err(|e| {
                ConfigError::new("auth.htpasswd.path", format!("cannot read {}: {e}", h.path.display()))
            })?;
            crate::users::Htpasswd::parse(&text, &h.path.display().to_string())
                .map_err(|e| ConfigError::new("auth.htpasswd.path", e))?;
        }
        if let Some((_, p)) = &self.user {
            password(p).map_err(|e| ConfigError::new("--password", e))?;
        }
        if let Some(file) = &self.signing_key {
            SigningKey::load(file).map_err(|e| ConfigError::new("auth.signing_key", e))?;
        }
        if self.enabled() && self.htpasswd.is_none() && self.user.is_none() {
            warnings
                .push("auth has rules but no users (auth.htpasswd or --user): only anonymous access works");
        }
        Ok(())
    }

    /// The keys refused outright, and those that cannot go together.
    fn refusals(&self) -> Result<(), ConfigError> {
        if self.token.is_some() {
            let own = [
                ("auth.htpasswd", self.htpasswd.is_some()),
                ("--user", self.user.is_some()),
                ("auth.access", !self.access.is_empty()),
                ("auth.groups", !self.groups.is_empty()),
                ("auth.signing_key", self.signing_key.is_some()),
            ];
            if let Some((key, _)) = own.iter().find(|(_, set)| *set) {
                return Err(ConfigError::new(
                    *key,
                    "goes with donjon's own tokens; with auth.token the token server decides who may do what",
                ));
            }
        }
        if self.silly.is_some() {
            return Err(ConfigError::new("auth.silly", "is not supported: it lets anyone in"));
        }
        Ok(())
    }

    /// The layer, when the section asks for one. The signing key is the file `signing_key`
    /// names, else the one `store` keeps (made on first start); `hostname` is the default
    /// service.
    pub async fn build(
        &self,
        store: &dyn Store,
        hostname: Option<&str>,
    ) -> Result<Option<AuthLayer>, ConfigError> {
        if !self.enabled() {
            return Ok(None);
        }
        // The rest of `check` is what `Users::new` and `rules` do again here.
        self.refusals()?;
        if let Some(t) = &self.token {
            return Ok(Some(AuthLayer::external(t.issuer()?, t.realm.clone())));
        }
        let fixed = match &self.user {
            Some((u, p)) => Some((u.clone(), password(p).map_err(|e| ConfigError::new("--password", e))?)),
            None => None,
        };
        let users = Users::new(
            self.htpasswd.as_ref().map(|h| h.path.as_path()),
            fixed.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        )
        .map_err(|e| ConfigError::new("auth.htpasswd.path", e))?;
        let key = match &self.signing_key {
            Some(file) => SigningKey::load(file),
            None => SigningKey::shared(store).await,
        }
        .map_err(|e| ConfigError::new("auth.signing_key", e))?;
        let service = self.service.as_deref().or(hostname).unwrap_or("donjon");
        let mut tokens = Tokens::new(
            key,
            self.issuer.as_deref().unwrap_or("donjon"),
            service,
            self.token_lifetime.unwrap_or(TOKEN_LIFETIME),
        );
        if let Some(t) = self.refresh_lifetime {
            tokens = tokens.refresh_lifetime(t);
        }
        let mut layer = AuthLayer::new(users, self.rules()?, tokens);
        if let Some(r) = self.htpasswd.as_ref().and_then(|h| h.realm.clone()) {
            layer = layer.basic_realm(r);
        }
        if let Some(l) = &self.login_limit {
            layer = layer.login_limit(l.clone());
        }
        if let Some(r) = &self.realm {
            layer = layer.realm(r.clone());
        }
        Ok(Some(layer))
    }
}

/// The layer, when the section asks for one: its realm's hosts are the registry's names (a
/// warning when none is known, as challenges then name the address a client connected to).
#[donjon_core::config::async_trait]
impl donjon_core::config::LayerConfig for AuthConfig {
    type Layer = AuthLayer;
    async fn layer(&self, cx: &donjon_core::config::BuildContext) -> Result<Option<AuthLayer>, ConfigError> {
        let Some(layer) = self.build(&*cx.store, cx.hostname.as_deref()).await? else { return Ok(None) };
        if self.realm.is_none() && cx.names.is_empty() && self.token.is_none() {
            tracing::warn!(
                "auth: neither auth.realm nor the registry's names (-n) are set: token challenges name \
                 the address each client connected to; behind a proxy, a load balancer or a port \
                 mapping, set auth.realm (or -n HOST[:PORT])"
            );
        }
        Ok(Some(layer.hosts(cx.names.clone())))
    }
}

/// A password as given, or the first line of the file a `file://PATH` names (a Kubernetes
/// secret mounted as a file).
fn password(p: &str) -> Result<String, String> {
    match p.strip_prefix("file://") {
        Some(path) => std::fs::read_to_string(path)
            .map(|t| t.lines().next().unwrap_or("").to_string())
            .map_err(|e| format!("cannot read {path}: {e}")),
        None => Ok(p.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use donjon_core::memory::MemoryStore;

    fn parse(yaml: &str) -> AuthConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn rules_errors_name_their_key() {
        let mut w = Warnings::default();
        let e = parse("access: [{repository: x, who: nobody, actions: [pull]}]").check(&mut w).unwrap_err();
        assert_eq!(e.key, "auth.access[0].who");
        let e = parse("access: [{repository: x, who: anyone, actions: [fly]}]").check(&mut w).unwrap_err();
        assert_eq!(e.key, "auth.access[0].actions");
        let e = parse("token: {realm: x}").check(&mut w).unwrap_err();
        assert_eq!(e.key, "auth.token.service");
        let e = parse("token: {realm: x, service: s, issuer: i}").check(&mut w).unwrap_err();
        assert_eq!(e.key, "auth.token", "{e}");
        let e =
            parse("token: {realm: x, service: s, issuer: i, jwks: /nonexistent}").check(&mut w).unwrap_err();
        assert_eq!(e.key, "auth.token.jwks", "{e}");
        let e = parse("{token: {realm: x, service: s, issuer: i}, htpasswd: {path: /h}}")
            .check(&mut w)
            .unwrap_err();
        assert_eq!(e.key, "auth.htpasswd", "{e}");
        let e = parse("htpasswd: {realm: r, path: /nonexistent/htpasswd}").check(&mut w).unwrap_err();
        assert_eq!(e.key, "auth.htpasswd.path");
        parse("access: [{repository: x, who: [group:ops, anonymous], actions: [pull]}]")
            .check(&mut w)
            .unwrap();
        assert!(w.iter().any(|m| m.contains("\"ops\"")), "{w:?}");
    }

    #[tokio::test]
    async fn passwords_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "hunter2\n").unwrap();
        assert_eq!(password(&format!("file://{}", p.display())).unwrap(), "hunter2");
        assert_eq!(password("plain").unwrap(), "plain");
        assert!(password("file:///nonexistent").is_err());
        let c =
            AuthConfig { user: Some(("u".into(), format!("file://{}", p.display()))), ..Default::default() };
        let store = MemoryStore::default();
        let layer = c.build(&store, Some("reg.example")).await.unwrap().unwrap();
        assert!(layer.anonymous().grants.is_empty());
        let kept = store.secret(crate::token::KEY_NAME, "probe".into()).await.unwrap();
        assert!(kept.starts_with(b"-----BEGIN PRIVATE KEY-----"), "the key is kept in the store");
        let c = AuthConfig { signing_key: Some(dir.path().join("none.pem")), ..c };
        assert_eq!(c.build(&store, None).await.unwrap_err().key, "auth.signing_key");
    }

    #[tokio::test]
    async fn off_unless_asked() {
        let store = MemoryStore::default();
        assert!(AuthConfig::default().build(&store, None).await.unwrap().is_none());
        let kept = store.secret(crate::token::KEY_NAME, "probe".into()).await.unwrap();
        assert_eq!(&kept[..], b"probe", "no key is made for a registry without auth");
    }
}
