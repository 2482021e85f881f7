//! Who is calling, and what they may do: the request extension an auth layer sets and the
//! layers below read (to refuse a cross-repository mount from a repository the caller may not
//! pull, to list only the repositories it may pull, to log the subject). Without an auth layer
//! no request carries one. [`ClientConn`] is the connection's peer and protocol, which the
//! server puts on every request.
//!
//! Grants are ordered: the first grant whose pattern covers a repository decides what may be
//! done there, so an earlier, narrower grant can give less than a later, wider one.
//!
//! ```
//! use donjon_core::principal::{Grant, Principal};
//! use donjon_core::route::Action;
//!
//! let p = Principal::user("alice", vec![
//!     Grant::new("team/secret", vec![Action::Pull]),
//!     Grant::new("team/**", vec![Action::Pull, Action::Push]),
//! ]);
//! assert!(p.may(&"team/app".parse().unwrap(), Action::Push));
//! assert!(!p.may(&"team/secret".parse().unwrap(), Action::Push));
//! assert!(!p.may(&"other/app".parse().unwrap(), Action::Pull));
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use crate::name::Name;
use crate::route::Action;

/// The connection a request came on: the client's address, and whether it is TLS. The server
/// puts it on every request; an application that mounts the registry may put its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConn {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS (so that links the registry writes say `https`).
    pub tls: bool,
    /// The address the client connected to (this side of the connection), when known: what
    /// links and challenges name when no host name is configured, instead of a `Host` header
    /// anyone can write.
    pub local: Option<SocketAddr>,
}

/// Rights over the repositories a pattern covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// A repository name, or a glob: `*` matches within one path component, `**` across
    /// components (`team/**` covers `team/app` and `team/a/b`, not `teammate/app`).
    pub pattern: String,
    /// What may be done there.
    pub actions: Vec<Action>,
}

impl Grant {
    /// A grant of `actions` on the repositories `pattern` covers.
    pub fn new(pattern: impl Into<String>, actions: Vec<Action>) -> Self {
        Self { pattern: pattern.into(), actions }
    }

    /// Whether the grant covers `repo`.
    pub fn covers(&self, repo: &Name) -> bool {
        glob_match(self.pattern.as_bytes(), repo.as_str().as_bytes())
    }
}

/// Whether `pattern` matches all of `text`: `**` any run of bytes, `*` any run without `/`,
/// everything else itself. Dynamic programming over the pattern's tokens: O(pattern × text),
/// never exponential.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    enum Tok {
        Byte(u8),
        Star,
        Deep,
    }
    let mut toks = vec![];
    let mut i = 0;
    while i < pattern.len() {
        if pattern[i] == b'*' {
            let deep = pattern.get(i + 1) == Some(&b'*');
            toks.push(if deep { Tok::Deep } else { Tok::Star });
            i += if deep { 2 } else { 1 };
        } else {
            toks.push(Tok::Byte(pattern[i]));
            i += 1;
        }
    }
    // row[j]: whether the tokens from k on match text[j..]; computed for k from the end.
    let mut row = vec![false; text.len() + 1];
    row[text.len()] = true;
    for tok in toks.iter().rev() {
        let mut next = vec![false; text.len() + 1];
        for j in (0..=text.len()).rev() {
            next[j] = match tok {
                Tok::Byte(b) => j < text.len() && text[j] == *b && row[j + 1],
                // Empty, or one more byte (not `/` for `*`) and still this token.
                Tok::Star => row[j] || (j < text.len() && text[j] != b'/' && next[j + 1]),
                Tok::Deep => row[j] || (j < text.len() && next[j + 1]),
            };
        }
        row = next;
    }
    row[0]
}

/// Where an auth layer leaves the name of the caller it authenticated, for a layer outside it
/// that wants to know after the answer (event notifications' `actor`): that layer puts one in
/// the request's extensions; an auth layer that finds it fills it. Costs nothing when absent.
#[derive(Clone, Debug, Default)]
pub struct ActorSlot(Arc<std::sync::Mutex<Option<Arc<str>>>>);

impl ActorSlot {
    /// Notes the caller.
    pub fn set(&self, subject: Option<Arc<str>>) {
        if let Ok(mut s) = self.0.lock() {
            *s = subject;
        }
    }

    /// The caller noted, if any.
    pub fn get(&self) -> Option<Arc<str>> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}

/// The authenticated caller (or an anonymous one) and the rights granted to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principal {
    /// The user or service name; `None` for anonymous.
    pub subject: Option<Arc<str>>,
    /// What it may do, first covering grant first.
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

    /// What it may do on `repo`: the actions of the first grant that covers it.
    pub fn actions(&self, repo: &Name) -> &[Action] {
        self.grants.iter().find(|g| g.covers(repo)).map_or(&[], |g| &g.actions)
    }

    /// Whether it may do `action` on `repo`.
    pub fn may(&self, repo: &Name, action: Action) -> bool {
        self.actions(repo).contains(&action)
    }

    /// Whether some grant lets it pull (what listing the catalog takes: the listing then shows
    /// only what it may pull).
    pub fn pulls_anywhere(&self) -> bool {
        self.grants.iter().any(|g| g.actions.contains(&Action::Pull))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("**", "a/b/c"));
        assert!(m("team/**", "team/a/b"));
        assert!(!m("team/**", "teammate/a"));
        assert!(m("team/*", "team/app"));
        assert!(!m("team/*", "team/a/b"));
        assert!(m("*/app", "x/app"));
        assert!(!m("*/app", "x/y/app"));
        assert!(m("**/app", "x/y/app"));
        assert!(m("lib*", "library"));
        assert!(!m("library", "library/x"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
        assert!(m("**/a*b", "x/a/c/ab"), "a later * fails on `/`, an earlier ** takes more");
        // A pathological pattern stays fast.
        let long = "a".repeat(200);
        assert!(!m("*a*a*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn the_first_covering_grant_decides() {
        let p = Principal::anonymous(vec![
            Grant::new("private/**", vec![]),
            Grant::new("**", vec![Action::Pull]),
        ]);
        assert!(!p.may(&"private/x".parse().unwrap(), Action::Pull));
        assert!(p.may(&"public/x".parse().unwrap(), Action::Pull));
        assert_eq!(p.actions(&"x".parse().unwrap()), [Action::Pull]);
    }
}
