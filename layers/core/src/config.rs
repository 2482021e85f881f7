//! What every layer's configuration shares: the [`ConfigError`] that names the key (and the
//! file, once the composer knows it), the [`Warnings`] a section collects for things it
//! accepts but ignores, and the one duration format (`30s`, `1h30m`, `500ms`, Go's `168h`, or
//! a bare number of seconds).
//!
//! Each layer crate owns a `#[derive(Deserialize, Default)]` struct for its section, checks it
//! with a `check(&self, &mut Warnings)` that returns a [`ConfigError`] naming the key, and turns
//! it into the layer with `build()`. The binary's configuration only maps file shapes onto
//! those structs.
//!
//! ```
//! use std::time::Duration;
//! use donjon_core::config::{duration, ConfigError};
//!
//! #[derive(serde::Deserialize)]
//! struct Section {
//!     #[serde(with = "duration")]
//!     every: Duration,
//! }
//! let s: Section = serde_json::from_str(r#"{"every": "1h30m"}"#).unwrap();
//! assert_eq!(s.every, Duration::from_secs(5400));
//! assert_eq!(duration::parse("45").unwrap(), Duration::from_secs(45));
//!
//! let e = ConfigError::new("storage.s3.bucket", "is required").in_file("config.yml");
//! assert_eq!(e.to_string(), "config.yml: storage.s3.bucket: is required");
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;

/// A configuration that cannot be used: which key, what is wrong, and in which file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when the configuration came from one.
    pub file: Option<PathBuf>,
    /// The key's full path (`storage.s3.bucket`); empty for the file as a whole.
    pub key: String,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

impl ConfigError {
    /// An error about `key` (its full dotted path).
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { file: None, key: key.into(), message: message.into() }
    }

    /// The same error, naming the file it is in (a file already named stays).
    pub fn in_file(mut self, file: impl AsRef<Path>) -> Self {
        if self.file.is_none() {
            self.file = Some(file.as_ref().to_path_buf());
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// What a section accepted but does not apply, for the start-up log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Warnings(Vec<String>);

impl Warnings {
    /// Adds a warning.
    pub fn push(&mut self, text: impl Into<String>) {
        self.0.push(text.into());
    }

    /// The one wording for a key this version reads but does not implement.
    pub fn not_implemented(&mut self, present: bool, key: &str) {
        if present {
            self.push(format!("`{key}` is not implemented by this donjon version; ignored"));
        }
    }

    /// The warnings, in the order they were found.
    pub fn into_vec(self) -> Vec<String> {
        self.0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over them.
    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }
}

/// A key a section accepts and does not use (Distribution's `version`, `health`, `http.secret`,
/// …): read whole, whatever its value, so that the loader never reports it as unknown. (serde's
/// `IgnoredAny` would be reported: reading into it is what "ignored" means to the loader.)
///
/// ```
/// use donjon_core::config::Accepted;
/// let v: Accepted = serde_json::from_str(r#"{"a": [1, {"b": "c"}], "t": null}"#).unwrap();
/// assert_eq!(v, Accepted);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accepted;

impl<'de> serde::Deserialize<'de> for Accepted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AcceptedVisitor)
    }
}

impl serde::Serialize for Accepted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

struct AcceptedVisitor;

impl<'de> serde::de::Visitor<'de> for AcceptedVisitor {
    type Value = Accepted;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Accepted, E> {
        Ok(Accepted)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Accepted, E> {
        Ok(Accepted)
    }
    fn visit_i128<E>(self, _: i128) -> Result<Accepted, E> {
        Ok(Accepted)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Accepted, E> {
        Ok(Accepted)
    }
    fn visit_u128<E>(self, _: u128) -> Result<Accepted, E> {
        Ok(Accepted)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Accepted, E> {
        Ok(Accepted)
    }
    fn visit_str<E>(self, _: &str) -> Result<Accepted, E> {
        Ok(Accepted)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Accepted, E> {
        Ok(Accepted)
    }
    fn visit_none<E>(self) -> Result<Accepted, E> {
        Ok(Accepted)
    }
    fn visit_unit<E>(self) -> Result<Accepted, E> {
        Ok(Accepted)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Accepted, D::Error> {
        Accepted::deserialize(d)
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<Accepted, D::Error> {
        Accepted::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Accepted, A::Error> {
        while seq.next_element::<Accepted>()?.is_some() {}
        Ok(Accepted)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Accepted, A::Error> {
        while map.next_entry::<Accepted, Accepted>()?.is_some() {}
        Ok(Accepted)
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Accepted, A::Error> {
        use serde::de::VariantAccess as _;
        let (Accepted, variant) = data.variant::<Accepted>()?;
        variant.newtype_variant::<Accepted>()
    }
}

/// Durations in configuration, for `#[serde(with = "duration")]`: humantime's forms (which
/// include Go's `168h`, `1h30m`, `500ms`) or a number of seconds; written back as humantime.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Parses `30s`, `2m`, `1h30m`, `500ms`, `168h`, or a bare number of seconds.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        humantime::parse_duration(s)
            .or_else(|e| s.parse::<u64>().map(Duration::from_secs).map_err(|_| e))
            .map_err(|e| format!("invalid duration {s:?} ({e}): expected e.g. 30s, 2m, 1h30m, 500ms"))
    }

    /// `d` as people write it: `0s`, `1h`, `1h 30m`, `500ms`.
    pub fn format(d: Duration) -> String {
        humantime::format_duration(d).to_string()
    }

    /// Writes `d` as humantime does (`1h 30m`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    /// Reads a string in [`parse`]'s forms, or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Duration::from_secs(n)),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }

    /// The same for an optional duration (`#[serde(default, with = "duration::option")]`).
    pub mod option {
        use std::time::Duration;

        use serde::{Deserializer, Serializer};

        /// Writes `Some(d)` as [`super::serialize`] does, `None` as nothing.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        /// Reads what [`super::deserialize`] reads; absent or null is `None`.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            #[derive(serde::Deserialize)]
            struct Wrap(#[serde(with = "super")] Duration);
            let w: Option<Wrap> = serde::Deserialize::deserialize(d)?;
            Ok(w.map(|Wrap(d)| d))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn durations_in_every_form() {
        let p = |s| duration::parse(s).unwrap();
        assert_eq!(p("30s"), Duration::from_secs(30));
        assert_eq!(p("2m"), Duration::from_secs(120));
        assert_eq!(p("250ms"), Duration::from_millis(250));
        assert_eq!(p("1h30m"), Duration::from_secs(5400));
        assert_eq!(p("168h"), Duration::from_secs(168 * 3600));
        assert_eq!(p("45"), Duration::from_secs(45));
        assert!(duration::parse("soon").unwrap_err().contains("soon"));

        #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
        struct S {
            #[serde(with = "duration")]
            a: Duration,
            #[serde(default, with = "duration::option")]
            b: Option<Duration>,
        }
        let s: S = serde_json::from_str(r#"{"a": 90}"#).unwrap();
        assert_eq!(s, S { a: Duration::from_secs(90), b: None });
        let s: S = serde_json::from_str(r#"{"a": "1m", "b": "2s"}"#).unwrap();
        assert_eq!(s.b, Some(Duration::from_secs(2)));
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"a":"1m","b":"2s"}"#);
        assert!(serde_json::from_str::<S>(r#"{"a": "soon"}"#).is_err());
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = ConfigError::new("log.level", "unknown level \"loud\"");
        assert_eq!(e.to_string(), "log.level: unknown level \"loud\"");
        let e = e.in_file("/etc/donjon.yml").in_file("other.yml");
        assert_eq!(e.to_string(), "/etc/donjon.yml: log.level: unknown level \"loud\"");
        assert_eq!(ConfigError::new("", "bad YAML").to_string(), "bad YAML");
    }
}

/// The attribute [`LayerConfig`]'s implementations carry.
pub use async_trait::async_trait;

/// What a layer's configuration builds its layer from: the store and the registry's names and
/// places, which several layers need ([`LayerConfig::layer`]).
#[derive(Clone, Debug)]
pub struct BuildContext {
    /// The store every layer shares.
    pub store: std::sync::Arc<dyn crate::Store>,
    /// The registry's own names (`-n`, `http.host`, the public host name): a token realm's
    /// hosts, the admission policy's local registry, the mirror's `ns=` of its own.
    pub names: Vec<String>,
    /// The public host name the web page's pull commands name, when one is set.
    pub hostname: Option<String>,
    /// Where state other than the store lives (the pull-through cache's spool).
    pub data_dir: PathBuf,
    /// The hosts the pull-through cache mirrors, its default upstream last.
    pub mirrored: Vec<String>,
    /// The pull-through cache's default upstream (plain names are its images too).
    pub default_upstream: Option<String>,
}

impl BuildContext {
    /// A context over `store`, with no names, the data in `.`, and no mirror.
    pub fn new(store: std::sync::Arc<dyn crate::Store>) -> Self {
        Self {
            store,
            names: vec![],
            hostname: None,
            data_dir: PathBuf::from("."),
            mirrored: vec![],
            default_upstream: None,
        }
    }
}

/// A layer's configuration section: each builds its layer the same way, from the same
/// context, and says `None` when the section leaves the layer off.
///
/// ```
/// use donjon_core::config::{BuildContext, ConfigError, LayerConfig};
///
/// struct Greeting(Option<String>);
///
/// #[async_trait::async_trait]
/// impl LayerConfig for Greeting {
///     type Layer = String;
///     async fn layer(&self, _: &BuildContext) -> Result<Option<String>, ConfigError> {
///         Ok(self.0.clone())
///     }
/// }
/// # let cx = BuildContext::new(std::sync::Arc::new(donjon_core::memory::MemoryStore::default()));
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// assert_eq!(rt.block_on(Greeting(None).layer(&cx)).unwrap(), None);
/// ```
#[async_trait::async_trait]
pub trait LayerConfig {
    /// The layer this section configures.
    type Layer;
    /// The layer, or `None` when the section leaves it off; an error names the key at fault.
    async fn layer(&self, cx: &BuildContext) -> Result<Option<Self::Layer>, ConfigError>;
}

/// An absent section builds no layer.
#[async_trait::async_trait]
impl<T: LayerConfig + Sync> LayerConfig for Option<T> {
    type Layer = T::Layer;
    async fn layer(&self, cx: &BuildContext) -> Result<Option<T::Layer>, ConfigError> {
        match self {
            Some(c) => c.layer(cx).await,
            None => Ok(None),
        }
    }
}
