use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use donjon_core::claim::Claiming;
use donjon_core::Principal;
use tower_layer::Layer;

use crate::issuer::TrustedIssuer;
use crate::limiter::Limiter;
use crate::rules::Rules;
use crate::service::Auth;
use crate::token::Tokens;
use crate::users::Users;

/// Decides who may do what on registry routes, and serves the token endpoint (`/v2/token`);
/// or, made with [`AuthLayer::external`], checks the tokens of another token server.
/// Requests without a registry route (an application's own paths, health checks, admission
/// webhooks) pass untouched. See the crate docs.
///
/// ```
/// use std::time::Duration;
/// use donjon_auth::{rules::Rules, token::{SigningKey, Tokens}, users::Users, AuthLayer};
///
/// let key = SigningKey::generate().unwrap();
/// let layer = AuthLayer::new(
///     Users::new(None, Some(("admin", "secret"))).unwrap(),
///     Rules::authenticated_may_do_anything(),
///     Tokens::new(key, "donjon", "registry.example", Duration::from_secs(300)),
/// )
/// .realm("https://registry.example/v2/token");
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct AuthLayer {
    pub(crate) shared: Arc<Shared>,
}

/// Where tokens come from.
#[derive(Clone, Debug)]
pub(crate) enum Issuer {
    /// donjon issues them, at its token endpoint, to its users, by its rules.
    Own(Own),
    /// Another token server issues them and decides what they grant; donjon checks them.
    External(TrustedIssuer),
}

/// donjon as its own token server.
#[derive(Clone, Debug)]
pub(crate) struct Own {
    pub(crate) users: Arc<Users>,
    pub(crate) rules: Rules,
    pub(crate) tokens: Tokens,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) issuer: Issuer,
    /// What callers without credentials may do: the rules for them, computed once (nothing,
    /// with an external issuer).
    pub(crate) anonymous: Principal,
    /// The token endpoint's absolute URL, when fixed; else built from each request's host.
    pub(crate) realm: Option<String>,
    /// The realm of the Basic challenge (Distribution's `auth.htpasswd.realm`).
    pub(crate) basic_realm: String,
    /// The registry's host names (`host[:port]`), which a challenge's realm may name.
    pub(crate) hosts: Vec<String>,
    pub(crate) limiter: Limiter,
    /// Verified access tokens: sha256(token) → what they grant and until when.
    pub(crate) verified: Mutex<HashMap<[u8; 32], crate::service::Verified>>,
}

impl AuthLayer {
    /// Users who may log in, the rules of what they may do, and the tokens the endpoint issues
    /// and requests carry.
    pub fn new(users: Users, rules: Rules, tokens: Tokens) -> Self {
        let anonymous = rules.principal(None);
        Self::with_issuer(Issuer::Own(Own { users: Arc::new(users), rules, tokens }), anonymous, None)
    }

    /// Tokens from another token server (docker_auth, Harbor's, GitLab's), which clients get
    /// at `realm`: what a token grants is what its `access` claim lists, and nothing without
    /// one. No token endpoint is served and Basic credentials are not taken, as with
    /// Distribution's `auth.token`.
    ///
    /// ```
    /// use donjon_auth::{issuer::TrustedIssuer, AuthLayer};
    ///
    /// let jwks = r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1",
    ///   "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    /// let issuer = TrustedIssuer::new("auth.example", "registry.example").jwks(jwks.as_bytes()).unwrap();
    /// let layer = AuthLayer::external(issuer, "https://auth.example/token");
    /// # let _ = layer;
    /// ```
    pub fn external(issuer: TrustedIssuer, realm: impl Into<String>) -> Self {
        Self::with_issuer(Issuer::External(issuer), Principal::anonymous(vec![]), Some(realm.into()))
    }

    fn with_issuer(issuer: Issuer, anonymous: Principal, realm: Option<String>) -> Self {
        let shared = Shared {
            issuer,
            anonymous,
            realm,
            basic_realm: "donjon".into(),
            hosts: vec![],
            limiter: Limiter::default(),
            verified: Mutex::new(HashMap::new()),
        };
        Self { shared: Arc::new(shared) }
    }

    fn with(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = match Arc::try_unwrap(self.shared) {
            Ok(s) => s,
            Err(arc) => Shared {
                issuer: arc.issuer.clone(),
                anonymous: arc.anonymous.clone(),
                realm: arc.realm.clone(),
                basic_realm: arc.basic_realm.clone(),
                hosts: arc.hosts.clone(),
                limiter: Limiter::new(arc.limiter.limit().clone()),
                verified: Mutex::new(HashMap::new()),
            },
        };
        f(&mut shared);
        Self { shared: Arc::new(shared) }
    }

    /// The token endpoint's URL in challenges (default: `<scheme>://<Host>/v2/token` of each
    /// request; set it behind a proxy that rewrites the host).
    pub fn realm(self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.with(|s| s.realm = Some(url))
    }

    /// The realm of the Basic challenge the token endpoint answers bad credentials with.
    pub fn basic_realm(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.with(|s| s.basic_realm = name)
    }

    /// This registry's host names (`host[:port]`, Trow's `-n`): without a configured
    /// [`realm`](Self::realm), a challenge names the one the request's `Host` names, else the
    /// first. Without names either, it names the address the client connected to.
    pub fn hosts<I: IntoIterator<Item = S>, S: Into<String>>(self, names: I) -> Self {
        // Distribution's `http.host` is a URL (`https://reg.example:5000`): its authority.
        let authority = |n: String| match n.parse::<http::Uri>() {
            Ok(u) if u.scheme().is_some() => u.authority().map_or(n.clone(), |a| a.to_string()),
            _ => n,
        };
        let names: Vec<String> =
            names.into_iter().map(Into::into).map(authority).filter(|n| !n.is_empty()).collect();
        self.with(|s| s.hosts = names)
    }

    /// How many failed logins an address may make (default: 10 per user and 30 in all a
    /// minute, IPv6 counted by /64). See [`crate::limiter`].
    pub fn login_limit(self, limit: crate::limiter::LoginLimit) -> Self {
        self.with(|s| s.limiter = Limiter::new(limit))
    }

    /// The path of the token endpoint this layer serves (`/v2/token`), or `None` when another
    /// token server issues the tokens (`auth.token`): what a login form posts to.
    pub fn token_endpoint(&self) -> Option<&'static str> {
        match &self.shared.issuer {
            Issuer::Own(_) => Some("/v2/token"),
            Issuer::External(_) => None,
        }
    }

    /// The principal of an anonymous caller, for tests and for layers that want to know
    /// what is public.
    pub fn anonymous(&self) -> Principal {
        self.shared.anonymous.clone()
    }

    /// The layer's background work: reading the htpasswd file again when it changes.
    pub fn background(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let users = match &self.shared.issuer {
            Issuer::Own(own) => Some(own.users.clone()),
            Issuer::External(_) => None,
        };
        async move {
            if let Some(users) = users {
                users.reloader().await
            }
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Claiming::new(self.clone(), inner)
    }
}
