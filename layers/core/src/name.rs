//! Repository names, tags and manifest references, validated against the spec's grammar.
//!
//! ```
//! use donjon_core::{Name, Reference, Tag};
//!
//! assert!("library/ubuntu".parse::<Name>().is_ok());
//! assert!("Library/Ubuntu".parse::<Name>().is_err());
//! assert!("../etc".parse::<Name>().is_err());
//! assert!("v1.0".parse::<Tag>().is_ok());
//! assert!(matches!("sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".parse(),
//!     Ok(Reference::Digest(_))));
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::digest::{Digest, DigestError};

/// The longest repository name accepted (the spec: fewer than 256 characters).
pub const MAX_NAME_LEN: usize = 255;

/// A repository name: `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` components joined by `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid repository name {0:?}: components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/', at most 255 characters")]
pub struct NameError(pub String);

fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // a separator run: '.', '_', '__' or one or more '-'
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl Name {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(component_ok) {
            return Err(NameError(s.chars().take(300).collect()));
        }
        Ok(Self(s.into()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({})", self.0)
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(Arc<str>);

/// Why a tag was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tag {0:?}: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
pub struct TagError(pub String);

impl Tag {
    /// `latest`, what a reference without tag or digest means.
    pub fn latest() -> Self {
        Self("latest".into())
    }

    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = TagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
        let ok = !b.is_empty()
            && b.len() <= 128
            && first(b[0])
            && b[1..].iter().all(|&x| first(x) || x == b'.' || x == b'-');
        if ok {
            Ok(Self(s.into()))
        } else {
            Err(TagError(s.chars().take(200).collect()))
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    /// By tag.
    Tag(Tag),
    /// By digest.
    Digest(Digest),
}

/// Why a reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Not a tag.
    #[error(transparent)]
    Tag(#[from] TagError),
    /// Looks like a digest but is not a valid one.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Self::Digest(s.parse()?))
        } else {
            Ok(Self::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(t) => t.fmt(f),
            Self::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "library/ubuntu", "a.b_c__d---e/f0", "f/docker.io/library/nginx", "0"] {
            assert!(ok.parse::<Name>().is_ok(), "{ok:?} refused");
        }
        let long = "a".repeat(256);
        for bad in [
            "", "/", "a/", "/a", "a//b", "A", "a..b", "a___b", "-a", "a-", "a/../b", "..", ".", "a/.",
            "a%2fb", "a b", "a\\b", "é", &long,
        ] {
            assert!(bad.parse::<Name>().is_err(), "{bad:?} accepted");
        }
        assert!("a".repeat(255).parse::<Name>().is_ok());
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.0.0", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok:?} refused");
        }
        for bad in ["", ".x", "-x", "..", "a/b", "a:b", "%2e", &"t".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn references() {
        assert!(matches!("latest".parse::<Reference>(), Ok(Reference::Tag(_))));
        assert!(matches!("sha256:abc".parse::<Reference>(), Err(ReferenceError::Digest(_))));
    }
}
