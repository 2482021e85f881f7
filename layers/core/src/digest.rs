//! Content digests (`algorithm:hex`) and incremental hashing with a resumable state.
//!
//! ```
//! use donjon_core::{Digest, Digester};
//!
//! let d: Digest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
//!     .parse()
//!     .unwrap();
//! let mut h = Digester::new(d.algorithm());
//! h.update(b"hel");
//! // the state survives a restart: serialize it with the session, resume later
//! let mut h = Digester::resume(d.algorithm(), &h.state()).unwrap();
//! h.update(b"lo");
//! assert_eq!(h.finish(), d);
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};

/// The hash algorithms donjon verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// `sha256`, the default of every client.
    Sha256,
    /// `sha512`.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name in a digest string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// The algorithm a name (`sha256`, `sha512`) stands for; `None` for one donjon does not
    /// verify.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }
}

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The string does not match `algorithm ":" encoded`.
    #[error("invalid digest {0:?}: expected <algorithm>:<hex>")]
    Malformed(String),
    /// A well-formed digest with an algorithm donjon does not verify.
    #[error("unsupported digest algorithm {0:?}: sha256 and sha512 are supported")]
    Unsupported(String),
    /// The hex part has the wrong length or characters.
    #[error("invalid digest {0:?}: the hex part must be {1} lower-case hex characters")]
    BadHex(String, usize),
}

/// A verified-format content digest, e.g. `sha256:<64 hex>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    text: Arc<str>,
}

impl Digest {
    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The whole digest string, `algorithm:hex`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.as_str().len() + 1..]
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Self {
        Self::of(Algorithm::Sha256, data)
    }

    /// The digest of `data` with `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Self {
        let mut d = Digester::new(algorithm);
        d.update(data);
        d.finish()
    }

    fn from_parts(algorithm: Algorithm, hex: &str) -> Self {
        Self { algorithm, text: format!("{}:{}", algorithm.as_str(), hex).into() }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || DigestError::Malformed(s.chars().take(200).collect());
        let (alg, hex) = s.split_once(':').ok_or_else(malformed)?;
        // The spec's grammar: algorithm-component(+ separator)*, encoded [a-zA-Z0-9=_-]+
        let alg_ok = !alg.is_empty()
            && alg
                .split(['+', '.', '_', '-'])
                .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let enc_ok = !hex.is_empty()
            && hex.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
        if !alg_ok || !enc_ok {
            return Err(malformed());
        }
        let algorithm = Algorithm::from_name(alg).ok_or_else(|| DigestError::Unsupported(alg.to_string()))?;
        let n = algorithm.hex_len();
        if hex.len() != n || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::BadHex(s.chars().take(200).collect(), n));
        }
        Ok(Self::from_parts(algorithm, hex))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl serde::Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unsupported digest algorithm {s:?}")))
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher whose state can be saved and resumed, so an upload session can be
/// continued by another process without re-reading its bytes.
#[derive(Clone)]
pub enum Digester {
    /// sha256 state.
    Sha256(Sha256),
    /// sha512 state.
    Sha512(Sha512),
}

impl fmt::Debug for Digester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digester({})", self.algorithm().as_str())
    }
}

impl Digester {
    /// A fresh hasher.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Self::Sha256(Sha256::new()),
            Algorithm::Sha512 => Self::Sha512(Sha512::new()),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Sha256(_) => Algorithm::Sha256,
            Self::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let (alg, hex) = match self {
            Self::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Self::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest::from_parts(alg, &hex)
    }

    /// The digest so far, leaving the state as it is.
    pub fn peek(&self) -> Digest {
        self.clone().finish()
    }

    /// The serialized internal state.
    pub fn state(&self) -> Vec<u8> {
        match self {
            Self::Sha256(h) => h.serialize().to_vec(),
            Self::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// Restores a state saved with [`Digester::state`]; `None` when it is not one.
    pub fn resume(algorithm: Algorithm, state: &[u8]) -> Option<Self> {
        match algorithm {
            Algorithm::Sha256 => {
                let s = state.try_into().ok()?;
                Sha256::deserialize(s).ok().map(Self::Sha256)
            }
            Algorithm::Sha512 => {
                let s = state.try_into().ok()?;
                Sha512::deserialize(s).ok().map(Self::Sha512)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn parses_and_displays() {
        let d: Digest = HELLO.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), HELLO);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(Digest::sha256_of(b"hello"), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "SHA256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            "sha256:2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824",
            "sha256:2cf24dba",
            "sha256:../../../../etc/passwd",
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b982/",
            "sha256:zzf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Digest>(),
            Err(DigestError::Unsupported(_))
        ));
    }

    #[test]
    fn sha512_works() {
        let d = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(d.hex().len(), 128);
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn state_round_trips_mid_block() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
            let mut a = Digester::new(alg);
            a.update(&data[..333]);
            let mut b = Digester::resume(alg, &a.state()).unwrap();
            b.update(&data[333..]);
            assert_eq!(b.finish(), Digest::of(alg, &data));
        }
        assert!(Digester::resume(Algorithm::Sha256, b"garbage").is_none());
    }
}
