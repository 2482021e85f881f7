use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use donjon_core::Principal;
use tower_layer::Layer;

use crate::limiter::Limiter;
use crate::rules::Rules;
use crate::service::Auth;
use crate::token::Tokens;
use crate::users::Users;

/// Decides who may do what on registry routes, and serves the token endpoint (`/v2/token`).
/// Requests without a registry route (an application's own paths, health checks, admission
/// webhooks) pass untouched. See the crate docs.
///
/// ```
/// use std::time::Duration;
/// use donjon_auth::{rules::Rules, token::{SigningKey, Tokens}, users::Users, AuthLayer};
///
/// let dir = tempfile::tempdir().unwrap();
/// let key = SigningKey::load_or_create(&dir.path().join("key.pem")).unwrap();
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

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) users: Arc<Users>,
    pub(crate) rules: Rules,
    /// What callers without credentials may do: the rules for them, computed once.
    pub(crate) anonymous: Principal,
    pub(crate) tokens: Tokens,
    /// The token endpoint's absolute URL, when fixed; else built from each request's host.
    pub(crate) realm: Option<String>,
    /// The realm of the Basic challenge (Distribution's `auth.htpasswd.realm`).
    pub(crate) basic_realm: String,
    pub(crate) limiter: Limiter,
    /// Verified access tokens: sha256(token) → what they grant and until when.
    pub(crate) verified: Mutex<HashMap<[u8; 32], crate::service::Verified>>,
}

impl AuthLayer {
    /// Users who may log in, the rules of what they may do, and the tokens the endpoint issues
    /// and requests carry.
    pub fn new(users: Users, rules: Rules, tokens: Tokens) -> Self {
        let shared = Shared {
            users: Arc::new(users),
            anonymous: rules.principal(None),
            rules,
            tokens,
            realm: None,
            basic_realm: "donjon".into(),
            limiter: Limiter::default(),
            verified: Mutex::new(HashMap::new()),
        };
        Self { shared: Arc::new(shared) }
    }

    fn with(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = match Arc::try_unwrap(self.shared) {
            Ok(s) => s,
            Err(arc) => Shared {
                users: arc.users.clone(),
                rules: arc.rules.clone(),
                anonymous: arc.anonymous.clone(),
                tokens: arc.tokens.clone(),
                realm: arc.realm.clone(),
                basic_realm: arc.basic_realm.clone(),
                limiter: Limiter::default(),
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

    /// The principal of an anonymous caller, for tests and for layers that want to know
    /// what is public.
    pub fn anonymous(&self) -> Principal {
        self.shared.anonymous.clone()
    }

    /// The layer's background work: reading the htpasswd file again when it changes.
    pub fn background(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shared.users.clone().reloader()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth { inner, shared: self.shared.clone() }
    }
}
