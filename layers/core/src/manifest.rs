//! Manifest media types and the parts of a manifest the registry checks: what it references
//! (blobs, child manifests, `subject`) and how it describes itself.
//!
//! ```
//! use donjon_core::manifest::{self, OCI_INDEX};
//!
//! let m = manifest::parse(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#, None).unwrap();
//! assert_eq!(m.media_type, OCI_INDEX);
//! assert!(m.manifests.is_empty());
//! ```

use serde::Deserialize;

use crate::digest::Digest;
use crate::error::{Error, ErrorCode};
use crate::store::Descriptor;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1 (deprecated everywhere; refused).
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Docker schema 1, signed (deprecated everywhere; refused).
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// The OCI empty descriptor's media type.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: Digest,
    #[serde(default)]
    size: Option<i64>,
    #[serde(default)]
    urls: Option<Vec<String>>,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// A platform, as an index names its children's: `os/architecture[/variant]`.
///
/// ```
/// use donjon_core::manifest::Platform;
///
/// let want: Platform = "linux/arm64".parse().unwrap();
/// assert!(want.matches(&"linux/arm64/v8".parse().unwrap()));
/// assert!(!want.matches(&"linux/amd64".parse().unwrap()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Platform {
    /// `os`, e.g. `linux`.
    pub os: String,
    /// `architecture`, e.g. `amd64`.
    pub architecture: String,
    /// `variant`, e.g. `v8`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Whether `other` is this platform: same os and architecture, and the same variant when
    /// this one names a variant.
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        match parts[..] {
            [os, arch] if [os, arch].iter().all(ok) => {
                Ok(Self { os: os.into(), architecture: arch.into(), variant: None })
            }
            [os, arch, variant] if [os, arch, variant].iter().all(ok) => {
                Ok(Self { os: os.into(), architecture: arch.into(), variant: Some(variant.into()) })
            }
            _ => Err(format!("{s:?} is not a platform: expected os/architecture[/variant]")),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// A blob a manifest references, with the size its descriptor claims.
#[derive(Clone, Debug)]
pub struct BlobRef {
    /// Its digest.
    pub digest: Digest,
    /// The descriptor's `size`.
    pub size: Option<u64>,
    /// What it is to the manifest (`config`, `layers[3]`), for messages.
    pub role: String,
}

/// How deep a manifest's JSON may nest. Real manifests nest about 5 levels; clients stop far
/// sooner than an attacker would like (serde_json at 128, Go's `encoding/json` at 10,000), so a
/// deeper manifest, even in fields the registry ignores, would break every client that pulls it.
pub const MAX_JSON_DEPTH: usize = 64;

/// The deepest nesting of arrays and objects in `bytes`, counted outside strings; stops
/// counting past `limit`.
pub fn json_depth(bytes: &[u8], limit: usize) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                if max > limit {
                    return max;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Whether `media_type` can be a manifest's: the OCI and Docker types, or another
/// `application/…+json` (artifact manifests of other tools). Anything else (`text/html`, say)
/// would be served back with that type.
pub fn is_manifest_media_type(media_type: &str) -> bool {
    [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].contains(&media_type)
        || media_type.strip_prefix("application/").is_some_and(|rest| {
            rest.ends_with("+json") && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b".+-_".contains(&b))
        })
}

/// A child manifest an index lists.
#[derive(Clone, Debug)]
pub struct Child {
    /// Its digest.
    pub digest: Digest,
    /// The platform the index says it is for.
    pub platform: Option<Platform>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    subject: Option<RawDescriptor>,
    #[serde(default)]
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What the registry needs to know of a manifest.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// Its media type.
    pub media_type: String,
    /// Blobs it references (config and layers), excluding foreign layers fetched from `urls`.
    pub blobs: Vec<BlobRef>,
    /// Child manifests (indexes and lists).
    pub manifests: Vec<Child>,
    /// The manifest it refers to.
    pub subject: Option<Digest>,
    /// `artifactType`, or for an image manifest without one, its config's media type.
    pub artifact_type: Option<String>,
    /// Annotations.
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Parsed {
    /// The descriptor of this manifest, as the referrers API lists it.
    pub fn descriptor(&self, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest,
            size,
            artifact_type: self.artifact_type.clone(),
            annotations: self.annotations.clone().filter(|a| !a.is_empty()),
        }
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::ManifestInvalid, msg.into())
}

fn blob_ref(d: &RawDescriptor, role: String) -> BlobRef {
    BlobRef { digest: d.digest.clone(), size: d.size.and_then(|s| u64::try_from(s).ok()), role }
}

fn layer_refs<'a>(layers: impl IntoIterator<Item = &'a RawDescriptor>) -> Vec<BlobRef> {
    layers
        .into_iter()
        .enumerate()
        .filter(|(_, d)| !is_foreign(d))
        .map(|(i, d)| blob_ref(d, format!("layers[{i}]")))
        .collect()
}

fn child(d: &RawDescriptor) -> Child {
    let platform = d.platform.as_ref().map(|p| Platform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant: p.variant.clone().filter(|v| !v.is_empty()),
    });
    Child { digest: d.digest.clone(), platform }
}

fn is_foreign(d: &RawDescriptor) -> bool {
    let mt = d.media_type.as_deref().unwrap_or("");
    (mt.contains("foreign") || mt.contains("nondistributable"))
        && d.urls.as_ref().is_some_and(|u| !u.is_empty())
}

/// Parses and checks a manifest's JSON. `content_type` is the `Content-Type` it was pushed
/// with: when the body names a `mediaType`, the two must agree; when it names none, the
/// header decides, then the shape (`manifests` → index, otherwise image manifest).
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, Error> {
    let depth = json_depth(bytes, MAX_JSON_DEPTH);
    if depth > MAX_JSON_DEPTH {
        return Err(invalid(format!(
            "the manifest's JSON nests deeper than {MAX_JSON_DEPTH} levels; clients could not decode it"
        )));
    }
    let schema1 = |media_type: &str| {
        Error::new(
            ErrorCode::ManifestInvalid,
            format!(
                "{media_type} (Docker schema 1) is deprecated and not accepted: push the image as \
                 Docker schema 2 or OCI (for example `skopeo copy --format v2s2`)"
            ),
        )
        .with_warning("Docker schema 1 manifests are deprecated and not accepted by this registry")
    };
    let header = content_type.map(|c| c.split(';').next().unwrap_or("").trim());
    if let Some(h @ (DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)) = header {
        return Err(schema1(h));
    }
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("manifest is not valid JSON of a known shape: {e}")))?;
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let media_type = match (&raw.media_type, content_type) {
        (Some(body), Some(header)) if body != header => {
            return Err(invalid(format!(
                "Content-Type {header:?} does not match the manifest's mediaType {body:?}"
            )))
        }
        (Some(body), _) => body.clone(),
        (None, Some(header)) => header.to_string(),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    if raw.schema_version == Some(1) || [DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED].contains(&media_type.as_str())
    {
        let named = if media_type == DOCKER_SCHEMA1_SIGNED { DOCKER_SCHEMA1_SIGNED } else { DOCKER_SCHEMA1 };
        return Err(schema1(named));
    }
    if !is_manifest_media_type(&media_type) {
        return Err(invalid(format!(
            "{media_type:?} is not a manifest media type: expected an OCI or Docker manifest or index, \
             or another application/…+json type"
        )));
    }
    if raw.media_type.is_none() && media_type.contains("docker") {
        return Err(invalid("a Docker manifest must carry its mediaType"));
    }
    match raw.schema_version {
        Some(2) => {}
        _ => return Err(invalid("schemaVersion must be 2")),
    }
    let is_index = media_type == OCI_INDEX || media_type == DOCKER_LIST;
    let is_image = media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST;
    let mut blobs = vec![];
    let mut manifests = vec![];
    for d in [&raw.config, &raw.subject]
        .into_iter()
        .flatten()
        .chain(raw.layers.iter().flatten())
        .chain(raw.manifests.iter().flatten())
    {
        if d.size.is_some_and(|s| s < 0) {
            return Err(invalid(format!("descriptor {} has a negative size", d.digest)));
        }
    }
    if is_index {
        let children = raw.manifests.as_ref().ok_or_else(|| invalid("an index needs manifests"))?;
        manifests.extend(children.iter().map(child));
    } else if is_image {
        let config = raw.config.as_ref().ok_or_else(|| invalid("an image manifest needs a config"))?;
        blobs.push(blob_ref(config, "config".into()));
        let layers = raw.layers.as_ref().ok_or_else(|| invalid("an image manifest needs layers"))?;
        blobs.extend(layer_refs(layers));
    } else {
        // Another manifest type: check what it references by shape.
        blobs.extend(raw.config.iter().map(|d| blob_ref(d, "config".into())));
        blobs.extend(layer_refs(raw.layers.iter().flatten()));
        manifests.extend(raw.manifests.iter().flatten().map(child));
    }
    let artifact_type = raw
        .artifact_type
        .clone()
        .or_else(|| (!is_index).then(|| raw.config.as_ref().and_then(|c| c.media_type.clone())).flatten());
    Ok(Parsed {
        media_type,
        blobs,
        manifests,
        subject: raw.subject.map(|s| s.digest),
        artifact_type,
        annotations: raw.annotations,
    })
}

/// The media type of stored manifest bytes, read from its `mediaType` or its shape. `None` for
/// bytes that are not a manifest.
pub fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        config: Option<serde::de::IgnoredAny>,
    }
    let p: Probe = serde_json::from_slice(bytes).ok()?;
    p.media_type.or_else(|| {
        if p.manifests.is_some() {
            Some(OCI_INDEX.into())
        } else if p.config.is_some() {
            Some(OCI_MANIFEST.into())
        } else {
            None
        }
    })
}

/// The subject of stored manifest bytes, if any.
pub fn subject_of(bytes: &[u8]) -> Option<Digest> {
    #[derive(Deserialize)]
    struct Probe {
        subject: Option<RawDescriptor>,
    }
    serde_json::from_slice::<Probe>(bytes).ok()?.subject.map(|s| s.digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":3}}]{extra}}}"#
        )
    }

    #[test]
    fn image_references() {
        let m = parse(image("").as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
        assert!(m.subject.is_none());
    }

    #[test]
    fn subject_and_artifact_type() {
        let extra = format!(
            r#","artifactType":"application/x-sig","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":1}},"annotations":{{"a":"b"}}"#
        );
        let m = parse(image(&extra).as_bytes(), None).unwrap();
        assert_eq!(m.subject.as_ref().unwrap().as_str(), D1);
        assert_eq!(m.artifact_type.as_deref(), Some("application/x-sig"));
        let d = m.descriptor(Digest::sha256_of(b"x"), 9);
        assert_eq!(d.annotations.unwrap()["a"], "b");
    }

    #[test]
    fn rejects_bad_manifests() {
        assert!(parse(b"not json", None).is_err());
        assert!(parse(b"{}", None).is_err());
        assert!(parse(br#"{"schemaVersion":1}"#, None).is_err());
        assert!(parse(image("").as_bytes(), Some(OCI_INDEX)).is_err());
        let bad = image("").replace(D2, "sha256:nothex");
        assert!(parse(bad.as_bytes(), None).is_err());
        let no_cfg = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#);
        assert!(parse(no_cfg.as_bytes(), None).is_err());
    }

    #[test]
    fn index_children() {
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":5}}]}}"#
        );
        let m = parse(idx.as_bytes(), Some(OCI_INDEX)).unwrap();
        assert_eq!(m.media_type, OCI_INDEX);
        assert_eq!(m.manifests.len(), 1);
        assert!(m.manifests[0].platform.is_none());
        let with_platform = idx.replace(
            r#""size":5"#,
            r#""size":5,"platform":{"os":"linux","architecture":"arm","variant":"v7"}"#,
        );
        let m = parse(with_platform.as_bytes(), Some(OCI_INDEX)).unwrap();
        assert_eq!(
            m.manifests[0].platform.as_ref().map(ToString::to_string).as_deref(),
            Some("linux/arm/v7")
        );
        assert_eq!(media_type_of(idx.as_bytes()).as_deref(), Some(OCI_INDEX));
    }

    #[test]
    fn deep_nesting_and_foreign_media_types_are_refused() {
        let deep = |n: usize| image(&format!(r#","x":{}1{}"#, "[".repeat(n), "]".repeat(n)));
        assert!(parse(deep(50).as_bytes(), None).is_ok());
        let e = parse(deep(10_000).as_bytes(), None).unwrap_err();
        assert!(e.message().contains("nests deeper"), "{}", e.message());
        // Brackets inside strings do not count.
        let quoted = image(&format!(r#","x":"{}\"[""#, "[".repeat(500)));
        assert!(parse(quoted.as_bytes(), None).is_ok());
        let html = image("").replace(OCI_MANIFEST, "text/html");
        let e = parse(html.as_bytes(), None).unwrap_err();
        assert!(e.message().contains("text/html"), "{}", e.message());
        assert!(is_manifest_media_type("application/vnd.cncf.helm.chart.content.v1+json"));
        assert!(!is_manifest_media_type("application/xhtml+xml"));
        assert!(!is_manifest_media_type("application/<script>+json"));
    }

    #[test]
    fn descriptor_sizes_and_roles() {
        let m = parse(image("").as_bytes(), None).unwrap();
        assert_eq!((m.blobs[0].role.as_str(), m.blobs[0].size), ("config", Some(2)));
        assert_eq!((m.blobs[1].role.as_str(), m.blobs[1].size), ("layers[0]", Some(3)));
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let m = image("").replace(
            "application/vnd.oci.image.layer.v1.tar\"",
            "application/vnd.oci.image.layer.nondistributable.v1.tar\",\"urls\":[\"https://x\"]",
        );
        assert_eq!(parse(m.as_bytes(), None).unwrap().blobs.len(), 1);
    }
}
