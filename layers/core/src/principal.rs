//! Who is calling, and what they may do: the request extension an auth layer sets and the
//! layers below read (for example to refuse a push into a repository granted for pull only, or
//! to log the subject). Without an auth layer no request carries one.
//!
//! ```
//! use donjon_core::principal::{Grant, Principal};
//! use donjon_core::route::Action;
//!
//! let p = Principal::user("alice", vec![Grant::new("team/", vec![Action::Pull, Action::Push])]);
//! assert!(p.may(&"team/app".parse().unwrap(), Action::Push));
//! assert!(!p.may(&"other/app".parse().unwrap(), Action::Pull));
//! assert!(!p.may(&"team/app".parse().unwrap(), Action::Delete));
//! ```

use std::sync::Arc;

use crate::name::Name;
use crate::route::Action;

/// Rights over the repositories whose names start with `prefix` (on a `/` boundary: `team/`
/// covers `team/app`, not `teammate/app`; `""` covers every repository).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// A repository name, or a prefix ending in `/`, or `""` for all.
    pub prefix: String,
    /// What may be done there.
    pub actions: Vec<Action>,
}

impl Grant {
    /// A grant of `actions` on `prefix`.
    pub fn new(prefix: impl Into<String>, actions: Vec<Action>) -> Self {
        Self { prefix: prefix.into(), actions }
    }

    /// Whether the grant covers `repo`.
    pub fn covers(&self, repo: &Name) -> bool {
        let p = self.prefix.as_str();
        p.is_empty() || repo.as_str() == p || (p.ends_with('/') && repo.as_str().starts_with(p))
    }
}

/// The authenticated caller (or an anonymous one) and the rights granted to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principal {
    /// The user or service name; `None` for anonymous.
    pub subject: Option<Arc<str>>,
    /// What it may do.
    pub grants: Arc<[Grant]>,
}

impl Principal {
    /// An anonymous caller with these grants.
    pub fn anonymous(grants: Vec<Grant>) -> Self {
        Self { subject: None, grants: grants.into() }
    }

    /// A named caller with these grants.
    pub fn user(subject: &str, grants: Vec<Grant>) -> Self {
        Self { subject: Some(subject.into()), grants: grants.into() }
    }

    /// Whether it may do `action` on `repo`.
    pub fn may(&self, repo: &Name, action: Action) -> bool {
        self.grants.iter().any(|g| g.covers(repo) && g.actions.contains(&action))
    }
}
