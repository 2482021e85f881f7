//! Access rules: who may do what on which repositories. The first rule that matches both the
//! repository and the caller decides; a caller no rule matches may do nothing.
//!
//! ```
//! use donjon_auth::rules::{Rule, Rules, Who};
//! use donjon_core::route::Action;
//!
//! let rules = Rules::new(
//!     vec![
//!         Rule::new("public/**", vec![Who::Anyone], vec![Action::Pull]),
//!         Rule::new("**", vec![Who::Group("ci".into())], vec![Action::Pull, Action::Push]),
//!         Rule::new("**", vec![Who::Authenticated], vec![Action::Pull]),
//!     ],
//!     [("ci".to_string(), vec!["robot".to_string()])].into_iter().collect(),
//! );
//! assert_eq!(rules.actions(None, "public/busybox"), [Action::Pull]);
//! assert!(rules.actions(None, "team/app").is_empty());
//! assert_eq!(rules.actions(Some("robot"), "team/app"), [Action::Pull, Action::Push]);
//! assert_eq!(rules.actions(Some("alice"), "team/app"), [Action::Pull]);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use donjon_core::principal::{glob_match, Grant, Principal};
use donjon_core::route::Action;

/// Whom a rule is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// Every caller, with credentials or without (`anyone`).
    Anyone,
    /// Callers without credentials (`anonymous`).
    Anonymous,
    /// Every authenticated user (`authenticated`).
    Authenticated,
    /// One user (`user:NAME`).
    User(String),
    /// The members of a group (`group:NAME`).
    Group(String),
}

impl FromStr for Who {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "anyone" | "*" => Ok(Self::Anyone),
            "anonymous" => Ok(Self::Anonymous),
            "authenticated" => Ok(Self::Authenticated),
            _ => match s.split_once(':') {
                Some(("user", n)) if !n.is_empty() => Ok(Self::User(n.into())),
                Some(("group", n)) if !n.is_empty() => Ok(Self::Group(n.into())),
                _ => Err(format!("{s:?} is not anyone, anonymous, authenticated, user:NAME or group:NAME")),
            },
        }
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anyone => f.write_str("anyone"),
            Self::Anonymous => f.write_str("anonymous"),
            Self::Authenticated => f.write_str("authenticated"),
            Self::User(n) => write!(f, "user:{n}"),
            Self::Group(n) => write!(f, "group:{n}"),
        }
    }
}

/// One rule: a repository glob (`*` within a path component, `**` across them), whom it is
/// for, and what they may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The repositories (a name or a glob).
    pub repository: String,
    /// For whom; any of them matches.
    pub who: Vec<Who>,
    /// What they may do: pull, push, delete.
    pub actions: Vec<Action>,
}

impl Rule {
    /// A rule.
    pub fn new(repository: impl Into<String>, who: Vec<Who>, actions: Vec<Action>) -> Self {
        Self { repository: repository.into(), who, actions }
    }
}

/// The rules, in order, and the groups they name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
    groups: BTreeMap<String, BTreeSet<String>>,
}

impl Rules {
    /// Rules over these groups (group name → members).
    pub fn new(rules: Vec<Rule>, groups: BTreeMap<String, Vec<String>>) -> Self {
        let groups = groups.into_iter().map(|(g, m)| (g, m.into_iter().collect())).collect();
        Self { rules, groups }
    }

    /// Distribution's behaviour with htpasswd auth: every authenticated user may pull, push and
    /// delete everywhere; anonymous callers nothing.
    pub fn authenticated_may_do_anything() -> Self {
        let all = vec![Action::Pull, Action::Push, Action::Delete];
        Self::new(vec![Rule::new("**", vec![Who::Authenticated], all)], BTreeMap::new())
    }

    fn applies(&self, who: &Who, user: Option<&str>) -> bool {
        match (who, user) {
            (Who::Anyone, _) => true,
            (Who::Anonymous, None) => true,
            (Who::Authenticated, Some(_)) => true,
            (Who::User(n), Some(u)) => n == u,
            (Who::Group(g), Some(u)) => self.groups.get(g).is_some_and(|m| m.contains(u)),
            _ => false,
        }
    }

    /// The rules that apply to `user` (`None`: anonymous), in order, as grants.
    pub fn grants(&self, user: Option<&str>) -> Vec<Grant> {
        self.rules
            .iter()
            .filter(|r| r.who.iter().any(|w| self.applies(w, user)))
            .map(|r| Grant::new(r.repository.clone(), r.actions.clone()))
            .collect()
    }

    /// `user`'s principal: who it is and its grants.
    pub fn principal(&self, user: Option<&str>) -> Principal {
        match user {
            Some(u) => Principal::user(u, self.grants(user)),
            None => Principal::anonymous(self.grants(None)),
        }
    }

    /// What `user` may do on `repo`: the actions of the first rule matching both.
    pub fn actions(&self, user: Option<&str>, repo: &str) -> Vec<Action> {
        self.rules
            .iter()
            .find(|r| {
                glob_match(r.repository.as_bytes(), repo.as_bytes())
                    && r.who.iter().any(|w| self.applies(w, user))
            })
            .map_or_else(Vec::new, |r| r.actions.clone())
    }

    /// Whether `user` may list the catalog: when some rule lets it pull somewhere (the listing
    /// shows only what it may pull).
    pub fn may_list(&self, user: Option<&str>) -> bool {
        self.principal(user).pulls_anywhere()
    }

    /// The groups rules name that are not defined.
    pub fn undefined_groups(&self) -> Vec<&str> {
        self.rules
            .iter()
            .flat_map(|r| &r.who)
            .filter_map(|w| match w {
                Who::Group(g) if !self.groups.contains_key(g) => Some(g.as_str()),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::new(
            vec![
                Rule::new("public/**", vec![Who::Anyone], vec![Action::Pull]),
                Rule::new("private/**", vec![Who::User("alice".into())], vec![Action::Pull, Action::Push]),
                Rule::new("private/**", vec![Who::Anyone], vec![]),
                Rule::new(
                    "**",
                    vec![Who::Group("admins".into())],
                    vec![Action::Pull, Action::Push, Action::Delete],
                ),
                Rule::new("**", vec![Who::Authenticated], vec![Action::Pull]),
            ],
            [("admins".to_string(), vec!["root".to_string()])].into_iter().collect(),
        )
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let r = rules();
        assert_eq!(r.actions(None, "public/x"), [Action::Pull]);
        assert_eq!(r.actions(Some("root"), "public/x"), [Action::Pull], "public/** comes first, for anyone");
        assert_eq!(r.actions(Some("alice"), "private/a"), [Action::Pull, Action::Push]);
        assert!(r.actions(Some("root"), "private/a").is_empty(), "an empty rule denies");
        assert_eq!(r.actions(Some("root"), "team/x").len(), 3);
        assert_eq!(r.actions(Some("bob"), "team/x"), [Action::Pull]);
        assert!(r.actions(None, "team/x").is_empty());
    }

    #[test]
    fn principals_follow_the_same_order() {
        let r = rules();
        let p = r.principal(Some("root"));
        assert!(!p.may(&"private/a".parse().unwrap(), Action::Pull));
        assert!(p.may(&"team/x".parse().unwrap(), Action::Delete));
        assert!(r.may_list(None));
        assert!(!Rules::authenticated_may_do_anything().may_list(None));
        assert!(Rules::authenticated_may_do_anything().may_list(Some("x")));
    }

    #[test]
    fn who_parses() {
        assert_eq!("group:ci".parse::<Who>().unwrap(), Who::Group("ci".into()));
        assert_eq!("user:bob".parse::<Who>().unwrap().to_string(), "user:bob");
        assert!("bob".parse::<Who>().is_err());
        assert!("user:".parse::<Who>().is_err());
    }
}
