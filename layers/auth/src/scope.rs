//! Scopes (`repository:<name>:pull,push`, `registry:catalog:*`) and the `WWW-Authenticate`
//! challenges that name them, as Distribution's token auth writes them.
//!
//! ```
//! use donjon_auth::scope::{challenge, Scope};
//!
//! let s: Scope = "repository:team/app:pull,push".parse().unwrap();
//! assert_eq!((s.kind.as_str(), s.name.as_str()), ("repository", "team/app"));
//! let h = challenge("https://reg.example/v2/token", "reg.example", &[s], None);
//! assert_eq!(
//!     h.to_str().unwrap(),
//!     r#"Bearer realm="https://reg.example/v2/token",service="reg.example",scope="repository:team/app:pull,push""#
//! );
//! ```

use std::fmt;
use std::str::FromStr;

use donjon_core::response::quoted_string as quoted;
use donjon_core::route::{Action, Route};
use http::HeaderValue;

/// One scope of a token request or a challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// `repository` or `registry`.
    pub kind: String,
    /// The repository's name, or `catalog`.
    pub name: String,
    /// The actions asked for.
    pub actions: Vec<String>,
}

impl Scope {
    /// A repository scope.
    pub fn repository(name: &str, actions: &[&str]) -> Self {
        Self {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// The catalog's scope.
    pub fn catalog() -> Self {
        Self { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] }
    }

    /// The scope `method` on `route` needs; `None` for `/v2/`, which needs a login only.
    pub fn needed(route: &Route, method: &http::Method) -> Option<Self> {
        let action = route.action(method)?;
        if action == Action::Catalog {
            return Some(Self::catalog());
        }
        let name = route.name()?.as_str();
        Some(match action {
            Action::Catalog => Self::catalog(),
            Action::Pull => Self::repository(name, &["pull"]),
            // What docker and Distribution ask for a push.
            Action::Push => Self::repository(name, &["pull", "push"]),
            Action::Delete => Self::repository(name, &["delete"]),
        })
    }
}

impl FromStr for Scope {
    type Err = String;

    /// `type:name:actions`. The name may hold `:` only in a `type(class)` form, which is read
    /// as its type; actions are comma-separated.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) =
            s.split_once(':').ok_or_else(|| format!("scope {s:?}: expected type:name:actions"))?;
        let (name, actions) =
            rest.rsplit_once(':').ok_or_else(|| format!("scope {s:?}: expected type:name:actions"))?;
        let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
        if kind.is_empty() || name.is_empty() {
            return Err(format!("scope {s:?}: empty type or name"));
        }
        let actions = actions.split(',').filter(|a| !a.is_empty()).map(str::to_string).collect();
        Ok(Self { kind: kind.into(), name: name.into(), actions })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// `Bearer realm=…,service=…,scope=…` (scopes space-separated), with `error` when given
/// (`invalid_token`, `insufficient_scope`).
pub fn challenge(realm: &str, service: &str, scopes: &[Scope], error: Option<&str>) -> HeaderValue {
    let mut v = format!("Bearer realm={},service={}", quoted(realm), quoted(service));
    if !scopes.is_empty() {
        let joined: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        v.push_str(&format!(",scope={}", quoted(&joined.join(" "))));
    }
    if let Some(e) = error {
        v.push_str(&format!(",error={}", quoted(e)));
    }
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// `Basic realm=…`: what the token endpoint answers to bad credentials.
pub fn basic_challenge(realm: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Basic realm={}", quoted(realm)))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print() {
        let s: Scope = "repository:a/b:pull".parse().unwrap();
        assert_eq!(s, Scope::repository("a/b", &["pull"]));
        assert_eq!(s.to_string(), "repository:a/b:pull");
        let c: Scope = "registry:catalog:*".parse().unwrap();
        assert_eq!(c, Scope::catalog());
        let p: Scope = "repository(plugin):x:pull".parse().unwrap();
        assert_eq!(p.kind, "repository");
        let e: Scope = "repository:x:".parse().unwrap();
        assert!(e.actions.is_empty());
        for bad in ["", "repository", "repository:x", ":x:pull", "repository::pull"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
    }

    #[test]
    fn what_each_route_needs() {
        use http::Method;
        let r = |p: &str| donjon_core::route::parse(p).unwrap().unwrap();
        let need = |p: &str, m: Method| Scope::needed(&r(p), &m).map(|s| s.to_string());
        assert_eq!(need("/v2/", Method::GET), None);
        assert_eq!(need("/v2/_catalog", Method::GET).unwrap(), "registry:catalog:*");
        assert_eq!(need("/v2/a/manifests/x", Method::GET).unwrap(), "repository:a:pull");
        assert_eq!(need("/v2/a/manifests/x", Method::PUT).unwrap(), "repository:a:pull,push");
        assert_eq!(need("/v2/a/blobs/uploads/", Method::POST).unwrap(), "repository:a:pull,push");
        assert_eq!(need("/v2/a/manifests/x", Method::DELETE).unwrap(), "repository:a:delete");
    }

    #[test]
    fn challenges_quote_what_they_carry() {
        let h = challenge("http://h\"x/v2/token", "s", &[], Some("invalid_token"));
        assert_eq!(
            h.to_str().unwrap(),
            r#"Bearer realm="http://h\"x/v2/token",service="s",error="invalid_token""#
        );
        let two = challenge(
            "r",
            "s",
            &[Scope::repository("a", &["pull", "push"]), Scope::repository("b", &["pull"])],
            None,
        );
        assert!(two.to_str().unwrap().ends_with(r#"scope="repository:a:pull,push repository:b:pull""#));
        assert_eq!(basic_challenge("donjon").to_str().unwrap(), r#"Basic realm="donjon""#);
    }
}
