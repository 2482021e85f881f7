//! What `ls`, `inspect` and `rm` ask the registry, and what they print: each returns a
//! structure that `--json` serializes as it is (the shapes below are kept stable: keys are only
//! ever added) and that [`Print::print`] lays out for people otherwise.
//!
//! ```text
//! ls REGISTRY        {"registry": "h:5000", "repositories": ["a", "b/c"]}
//! ls REGISTRY/REPO   {"registry": "h:5000", "repository": "a", "tags": ["1.0", "latest"]}
//! rm …               {"registry": "h:5000", "repository": "a", "reference": "old", "deleted": "tag"}
//!                    ("deleted": "tag" for REPO:TAG, "manifest" for REPO@DIGEST)
//! inspect …          {"registry", "repository", "reference" (as asked), "kind" ("index",
//!                     "manifest" or "other"), "mediaType", "digest", "size", "artifactType"
//!                     (or null), "subject" (a descriptor, or null), "annotations" ({}),
//!                     "referrers": {"<artifactType>": [{"mediaType", "digest", "size",
//!                     "annotations"}]},
//!                     for an index: "manifests": [{"mediaType", "digest", "size",
//!                       "platform": {"os", "architecture", "variant"?, "os.version"?} or null,
//!                       "artifactType"?, "annotations"}],
//!                     for a manifest: "config": {"mediaType", "digest", "size", "created",
//!                       "os", "architecture", "variant", "labels"} (the last five null or {}
//!                       when the config is no image config), "layers": [{"mediaType",
//!                       "digest", "size"}], "layersSize"}
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use donjon_core::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use donjon_core::{Digest, Name, Reference};
use http::{HeaderMap, Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::output::{size, Table};
use super::{warn, Answer, Client, Fail};

/// What `inspect` accepts, so that a registry converts nothing and refuses nothing it holds.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";
/// Docker's image configuration, and OCI's.
const IMAGE_CONFIGS: [&str; 2] =
    ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];
/// The largest listing page, manifest or image configuration read.
const PAGE_MAX: usize = 16 << 20;
/// The most pages one listing follows (a million repositories at the spec's 100 a page).
const MAX_PAGES: usize = 10_000;
/// The page size asked for (a registry may send fewer, and says where the next page is).
const PAGE_SIZE: usize = 100;

/// `--json` or the human layout.
pub trait Print: Serialize {
    fn human(&self) -> String;

    fn print(&self, json: bool) -> Result<String, Fail> {
        if json {
            let mut s = serde_json::to_string_pretty(self).map_err(|e| Fail::Request(e.to_string()))?;
            s.push('\n');
            Ok(s)
        } else {
            Ok(super::output::printable(&self.human()))
        }
    }
}

/// `ls REGISTRY`.
#[derive(Debug, Serialize)]
pub struct Repositories {
    pub registry: String,
    pub repositories: Vec<String>,
}

impl Print for Repositories {
    fn human(&self) -> String {
        self.repositories.iter().map(|r| format!("{r}\n")).collect()
    }
}

/// `ls REGISTRY/REPO`.
#[derive(Debug, Serialize)]
pub struct Tags {
    pub registry: String,
    pub repository: String,
    pub tags: Vec<String>,
}

impl Print for Tags {
    fn human(&self) -> String {
        self.tags.iter().map(|t| format!("{t}\n")).collect()
    }
}

/// Every repository, page after page.
pub async fn list_repositories(c: &Client) -> Result<Repositories, Fail> {
    #[derive(Deserialize)]
    struct Page {
        #[serde(default)]
        repositories: Option<Vec<String>>,
    }
    let what = format!("listing the repositories of {}", c.registry().host);
    let repositories = paged(c, &format!("/v2/_catalog?n={PAGE_SIZE}"), &what, |a| {
        serde_json::from_slice::<Page>(&a.body).map(|p| p.repositories.unwrap_or_default())
    })
    .await?;
    Ok(Repositories { registry: c.registry().host.clone(), repositories })
}

/// Every tag of `repo`, page after page.
pub async fn list_tags(c: &Client, repo: &Name) -> Result<Tags, Fail> {
    #[derive(Deserialize)]
    struct Page {
        #[serde(default)]
        tags: Option<Vec<String>>,
    }
    let what = format!("listing the tags of {}/{repo}", c.registry().host);
    let tags = paged(c, &format!("/v2/{repo}/tags/list?n={PAGE_SIZE}"), &what, |a| {
        serde_json::from_slice::<Page>(&a.body).map(|p| p.tags.unwrap_or_default())
    })
    .await?;
    Ok(Tags { registry: c.registry().host.clone(), repository: repo.to_string(), tags })
}

/// The items of `first` and of every page its `Link: <…>; rel="next"` headers lead to.
async fn paged<T>(
    c: &Client,
    first: &str,
    what: &str,
    items: impl Fn(&Answer) -> Result<Vec<T>, serde_json::Error>,
) -> Result<Vec<T>, Fail> {
    pages(c, first, what, items).await.map_err(|e| match e {
        PageFail::Status(a) => c.failure(what, &a),
        PageFail::Other(f) => f,
    })
}

/// Why [`pages`] stopped.
enum PageFail {
    /// A page was refused with this answer.
    Status(Answer),
    Other(Fail),
}

async fn pages<T>(
    c: &Client,
    first: &str,
    what: &str,
    items: impl Fn(&Answer) -> Result<Vec<T>, serde_json::Error>,
) -> Result<Vec<T>, PageFail> {
    let mut out = Vec::new();
    let mut url = c.url(first);
    let mut seen = HashSet::new();
    loop {
        let a = c.get(&url, Some("application/json"), PAGE_MAX).await.map_err(PageFail::Other)?;
        if !a.status.is_success() {
            return Err(PageFail::Status(a));
        }
        let page = items(&a).map_err(|e| {
            PageFail::Other(Fail::Request(format!("{what}: the answer is not the spec's JSON: {e}")))
        })?;
        out.extend(page);
        seen.insert(url.clone());
        if seen.len() >= MAX_PAGES {
            let e = format!("{what}: more than {MAX_PAGES} pages; stopped");
            return Err(PageFail::Other(Fail::Request(e)));
        }
        match next_link(&a.headers) {
            Some(next) => {
                // Relative to the page that named it (RFC 8288).
                url = url
                    .parse::<http::Uri>()
                    .ok()
                    .and_then(|base| donjon_core::response::resolve_location(&base, &next))
                    .map(|u| u.to_string())
                    .ok_or_else(|| {
                        PageFail::Other(Fail::Request(format!("{what}: a next page I cannot follow: {next}")))
                    })?;
                if seen.contains(&url) {
                    let e = format!("{what}: the registry's next page is one already read ({next})");
                    return Err(PageFail::Other(Fail::Request(e)));
                }
            }
            None => return Ok(out),
        }
    }
}

/// The target of a `Link` header with `rel="next"` (RFC 8288): `</v2/_catalog?last=b&n=2>;
/// rel="next"`.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(http::header::LINK).iter().filter_map(|v| v.to_str().ok()) {
        for link in value.split(',') {
            let link = link.trim();
            let Some(rest) = link.strip_prefix('<') else { continue };
            let Some((target, params)) = rest.split_once('>') else { continue };
            let next = params.split(';').any(|p| {
                let Some((k, v)) = p.split_once('=') else { return false };
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim().trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
            });
            if next {
                return Some(target.to_string());
            }
        }
    }
    None
}

/// A content descriptor.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
}

/// A platform, as an index names it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, rename = "os.version", skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// One manifest an index lists.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Child {
    #[serde(flatten)]
    pub descriptor: Descriptor,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest's config, and what its blob says.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    #[serde(flatten)]
    pub descriptor: Descriptor,
    pub created: Option<String>,
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub variant: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// A manifest whose `subject` is the one inspected.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    #[serde(flatten)]
    pub descriptor: Descriptor,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `inspect`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub registry: String,
    pub repository: String,
    pub reference: String,
    pub kind: &'static str,
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub subject: Option<Descriptor>,
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifests: Option<Vec<Child>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Config>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<Descriptor>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers_size: Option<u64>,
    /// By `artifactType`.
    pub referrers: BTreeMap<String, Vec<Referrer>>,
}

/// A manifest or index, as much of it as `inspect` shows.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Manifest {
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Child>>,
    subject: Option<Descriptor>,
    annotations: BTreeMap<String, String>,
}

/// An image configuration, as much of it as `inspect` shows.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ImageConfig {
    created: Option<String>,
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
    config: Option<RunConfig>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RunConfig {
    #[serde(rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
}

/// The manifest `reference` names in `repo`, its config and its referrers.
pub async fn inspect(c: &Client, repo: &Name, reference: &Reference) -> Result<Inspection, Fail> {
    let host = &c.registry().host;
    let name = match reference {
        Reference::Tag(t) => format!("{host}/{repo}:{t}"),
        Reference::Digest(d) => format!("{host}/{repo}@{d}"),
    };
    let a = c.get(&format!("/v2/{repo}/manifests/{reference}"), Some(ACCEPT_MANIFESTS), PAGE_MAX).await?;
    if !a.status.is_success() {
        return Err(c.failure(&format!("reading the manifest {name}"), &a));
    }
    let digest = manifest_digest(&a, reference).map_err(|e| Fail::Request(format!("{name}: {e}")))?;
    let m: Manifest = serde_json::from_slice(&a.body)
        .map_err(|e| Fail::Request(format!("{name}: the answer is not a manifest: {e}")))?;
    let content_type = a.header("content-type").map(|t| t.split(';').next().unwrap_or(t).trim().to_string());
    let media_type = m.media_type.clone().filter(|t| !t.is_empty()).or(content_type).unwrap_or_default();
    let kind = if m.manifests.is_some() || media_type == OCI_INDEX || media_type == DOCKER_LIST {
        "index"
    } else if m.config.is_some() || media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST {
        "manifest"
    } else {
        "other"
    };
    let mut out = Inspection {
        registry: host.clone(),
        repository: repo.to_string(),
        reference: reference.to_string(),
        kind,
        media_type,
        digest: digest.to_string(),
        size: a.body.len() as u64,
        artifact_type: m.artifact_type.clone(),
        subject: m.subject.clone(),
        annotations: m.annotations.clone(),
        manifests: None,
        config: None,
        layers: None,
        layers_size: None,
        referrers: BTreeMap::new(),
    };
    match kind {
        "index" => out.manifests = Some(m.manifests.unwrap_or_default()),
        "manifest" => {
            let layers = m.layers.unwrap_or_default();
            out.layers_size = Some(layers.iter().map(|l| l.size).sum());
            out.layers = Some(layers);
            if let Some(desc) = m.config {
                out.config = Some(config(c, repo, desc).await);
            }
        }
        _ => {}
    }
    out.referrers = referrers(c, repo, &digest).await;
    Ok(out)
}

/// The manifest's digest: the one asked for (which the body must match), else the
/// registry's `Docker-Content-Digest` when the body matches it, else the body's sha256.
fn manifest_digest(a: &Answer, reference: &Reference) -> Result<Digest, String> {
    if let Reference::Digest(d) = reference {
        let got = Digest::of(d.algorithm(), &a.body);
        if &got != d {
            return Err(format!("the registry sent a manifest whose digest is {got}"));
        }
        return Ok(d.clone());
    }
    let sha256 = Digest::sha256_of(&a.body);
    match a.header("docker-content-digest").map(str::parse::<Digest>) {
        Some(Ok(d)) if Digest::of(d.algorithm(), &a.body) == d => Ok(d),
        Some(Ok(d)) => {
            warn(&format!("the registry says the manifest's digest is {d}, but it is {sha256}"));
            Ok(sha256)
        }
        _ => Ok(sha256),
    }
}

/// The config descriptor, with what its blob says when it is an image configuration (a
/// failure to read it is a warning: the manifest is still shown).
async fn config(c: &Client, repo: &Name, descriptor: Descriptor) -> Config {
    let mut out = Config {
        descriptor,
        created: None,
        os: None,
        architecture: None,
        variant: None,
        labels: BTreeMap::new(),
    };
    if !IMAGE_CONFIGS.contains(&out.descriptor.media_type.as_str()) {
        return out;
    }
    let d = &out.descriptor.digest;
    let a = match c.get(&format!("/v2/{repo}/blobs/{d}"), None, PAGE_MAX).await {
        Ok(a) if a.status.is_success() => a,
        Ok(a) => {
            warn(&format!("cannot read the image configuration {d}: {}", a.error_text()));
            return out;
        }
        Err(Fail::Request(e) | Fail::Usage(e)) => {
            warn(&format!("cannot read the image configuration {d}: {e}"));
            return out;
        }
    };
    if let Ok(want) = d.parse::<Digest>() {
        if Digest::of(want.algorithm(), &a.body) != want {
            warn(&format!("the image configuration does not match its digest {d}"));
        }
    }
    match serde_json::from_slice::<ImageConfig>(&a.body) {
        Ok(ic) => {
            out.created = ic.created;
            out.os = ic.os;
            out.architecture = ic.architecture;
            out.variant = ic.variant;
            out.labels = ic.config.and_then(|c| c.labels).unwrap_or_default();
        }
        Err(e) => warn(&format!("the image configuration {d} is not JSON it reads: {e}")),
    }
    out
}

/// The manifests whose subject is `digest`, by artifact type: the referrers API, or the
/// referrers tag schema (`sha256-<hex>`) when the registry has no such API (404).
async fn referrers(c: &Client, repo: &Name, digest: &Digest) -> BTreeMap<String, Vec<Referrer>> {
    #[derive(Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Entry>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        #[serde(flatten)]
        referrer: Referrer,
        #[serde(default)]
        artifact_type: Option<String>,
    }
    let parse = |a: &Answer| serde_json::from_slice::<Index>(&a.body).map(|i| i.manifests);
    let what = format!("listing the referrers of {digest}");
    let entries = match pages(c, &format!("/v2/{repo}/referrers/{digest}"), &what, parse).await {
        Ok(e) => e,
        // No referrers API: the tag schema's index, if there is one.
        Err(PageFail::Status(a)) if a.status == StatusCode::NOT_FOUND => {
            let tag = format!("{}-{}", digest.algorithm().as_str(), digest.hex());
            match c.get(&format!("/v2/{repo}/manifests/{tag}"), Some(OCI_INDEX), PAGE_MAX).await {
                Ok(a) if a.status.is_success() => parse(&a).unwrap_or_default(),
                Ok(a) if a.status == StatusCode::NOT_FOUND => Vec::new(),
                Ok(a) => {
                    warn(&format!("cannot read the referrers tag {tag}: {}", a.error_text()));
                    Vec::new()
                }
                Err(Fail::Request(e) | Fail::Usage(e)) => {
                    warn(&format!("cannot read the referrers tag {tag}: {e}"));
                    Vec::new()
                }
            }
        }
        Err(PageFail::Status(a)) => {
            warn(&format!("{what}: {}", a.error_text()));
            Vec::new()
        }
        Err(PageFail::Other(Fail::Request(e) | Fail::Usage(e))) => {
            warn(&e);
            Vec::new()
        }
    };
    let mut out: BTreeMap<String, Vec<Referrer>> = BTreeMap::new();
    for e in entries {
        out.entry(e.artifact_type.unwrap_or_default()).or_default().push(e.referrer);
    }
    out
}

impl Print for Inspection {
    fn human(&self) -> String {
        let mut head = Table::new(&[]);
        let name = match self.reference.contains(':') {
            true => format!("{}/{}@{}", self.registry, self.repository, self.reference),
            false => format!("{}/{}:{}", self.registry, self.repository, self.reference),
        };
        head.row(["Name:", &name]);
        head.row(["Kind:", self.kind]);
        head.row(["Media type:", &self.media_type]);
        if let Some(t) = &self.artifact_type {
            head.row(["Artifact type:", t]);
        }
        head.row(["Digest:", &self.digest]);
        head.row(["Size:", &size(self.size)]);
        if let Some(c) = &self.config {
            if let (Some(os), Some(arch)) = (&c.os, &c.architecture) {
                let p = Platform {
                    os: os.clone(),
                    architecture: arch.clone(),
                    variant: c.variant.clone(),
                    os_version: None,
                };
                head.row(["Platform:".to_string(), p.to_string()]);
            }
            if let Some(created) = &c.created {
                head.row(["Created:", created]);
            }
            let d = &c.descriptor;
            head.row(["Config:".to_string(), format!("{} ({}, {})", d.digest, size(d.size), d.media_type)]);
        }
        if let Some(s) = &self.subject {
            head.row(["Subject:".to_string(), format!("{} ({})", s.digest, s.media_type)]);
        }
        let mut out = head.render();
        if let Some(children) = &self.manifests {
            let mut t = Table::new(&["PLATFORM", "DIGEST", "SIZE", "MEDIA TYPE"]).right(2);
            for ch in children {
                let platform = match (&ch.platform, &ch.artifact_type) {
                    (Some(p), _) => p.to_string(),
                    (None, Some(a)) => a.clone(),
                    (None, None) => "-".into(),
                };
                t.row([
                    platform,
                    ch.descriptor.digest.clone(),
                    size(ch.descriptor.size),
                    ch.descriptor.media_type.clone(),
                ]);
            }
            let _ = write!(out, "\nManifests ({}):\n{}", children.len(), t.indent(2).render());
        }
        if let Some(layers) = &self.layers {
            let mut t = Table::new(&["#", "DIGEST", "SIZE", "MEDIA TYPE"]).right(0).right(2);
            for (i, l) in layers.iter().enumerate() {
                t.row([(i + 1).to_string(), l.digest.clone(), size(l.size), l.media_type.clone()]);
            }
            t.row(["".to_string(), "total".to_string(), size(self.layers_size.unwrap_or(0)), String::new()]);
            let _ = write!(out, "\nLayers ({}):\n{}", layers.len(), t.indent(2).render());
        }
        for (title, map) in
            [("Labels", self.config.as_ref().map(|c| &c.labels)), ("Annotations", Some(&self.annotations))]
        {
            if let Some(map) = map.filter(|m| !m.is_empty()) {
                let mut t = Table::new(&[]).indent(2);
                for (k, v) in map {
                    t.row([k.as_str(), v.as_str()]);
                }
                let _ = write!(out, "\n{title}:\n{}", t.render());
            }
        }
        let n: usize = self.referrers.values().map(Vec::len).sum();
        if n == 0 {
            out.push_str("\nReferrers: none\n");
        } else {
            let _ = writeln!(out, "\nReferrers ({n}):");
            for (artifact_type, list) in &self.referrers {
                let title = if artifact_type.is_empty() { "(no artifact type)" } else { artifact_type };
                let _ = writeln!(out, "  {title} ({}):", list.len());
                let mut t = Table::new(&[]).indent(4).right(1);
                for r in list {
                    let created =
                        r.annotations.get("org.opencontainers.image.created").cloned().unwrap_or_default();
                    t.row([r.descriptor.digest.clone(), size(r.descriptor.size), created]);
                }
                out.push_str(&t.render());
            }
        }
        out
    }
}

/// `rm`.
#[derive(Debug, Serialize)]
pub struct Deleted {
    pub registry: String,
    pub repository: String,
    pub reference: String,
    /// `tag` or `manifest`.
    pub deleted: &'static str,
}

impl Print for Deleted {
    fn human(&self) -> String {
        match self.deleted {
            "tag" => format!("Deleted tag {}/{}:{}\n", self.registry, self.repository, self.reference),
            _ => format!(
                "Deleted manifest {}/{}@{} (and every tag on it)\n",
                self.registry, self.repository, self.reference
            ),
        }
    }
}

/// Deletes the tag (`DELETE …/manifests/<tag>`, which the spec makes the tag's deletion) or the
/// manifest (`DELETE …/manifests/<digest>`) `reference` names.
pub async fn remove(c: &Client, repo: &Name, reference: &Reference) -> Result<Deleted, Fail> {
    let host = &c.registry().host;
    let a = c
        .request(
            Method::DELETE,
            &format!("/v2/{repo}/manifests/{reference}"),
            Some(ACCEPT_MANIFESTS),
            PAGE_MAX,
        )
        .await?;
    let (deleted, name) = match reference {
        Reference::Tag(t) => ("tag", format!("{host}/{repo}:{t}")),
        Reference::Digest(d) => ("manifest", format!("{host}/{repo}@{d}")),
    };
    if a.status.is_success() {
        return Ok(Deleted {
            registry: host.clone(),
            repository: repo.to_string(),
            reference: reference.to_string(),
            deleted,
        });
    }
    let unsupported = matches!(a.status, StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED)
        || a.codes().iter().any(|c| c == "UNSUPPORTED");
    if let (Reference::Tag(_), true) = (reference, unsupported) {
        // What to do instead, with the digest when the tag can be read.
        let digest = match c
            .request(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"), Some(ACCEPT_MANIFESTS), 0)
            .await
        {
            Ok(h) if h.status.is_success() => h.header("docker-content-digest").map(str::to_string),
            _ => None,
        };
        let instead = match digest {
            Some(d) => format!("donjon rm {host}/{repo}@{d}"),
            None => format!("donjon rm {host}/{repo}@<digest> (donjon inspect {name} prints it)"),
        };
        return Err(Fail::Request(format!(
            "{host} refused to delete the tag {name}: {}; if it does not delete tags (CNCF Distribution 2 \
             does not), delete the manifest instead, which removes every tag on it: {instead}",
            a.error_text()
        )));
    }
    Err(c.failure(&format!("deleting the {deleted} {name}"), &a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::LINK, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn next_links() {
        assert_eq!(
            next_link(&links(&[r#"</v2/_catalog?last=b&n=2>; rel="next""#])).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            next_link(&links(&[
                r#"<https://h/v2/a/tags/list?last=x>; rel="prev", <https://h/v2/a/tags/list?last=z>;REL=next"#
            ]))
            .as_deref(),
            Some("https://h/v2/a/tags/list?last=z")
        );
        assert_eq!(
            next_link(&links(&[r#"</a>; rel="prev""#, r#"</b>; title="x"; rel="last next""#])).as_deref(),
            Some("/b")
        );
        assert_eq!(next_link(&links(&[r#"</a>; rel="prev""#, "garbage"])), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn human_inspection_of_an_image() {
        let d = |n: char| format!("sha256:{}", n.to_string().repeat(64));
        let i = Inspection {
            registry: "h:5000".into(),
            repository: "team/app".into(),
            reference: "v1".into(),
            kind: "manifest",
            media_type: OCI_MANIFEST.into(),
            digest: d('a'),
            size: 1000,
            artifact_type: None,
            subject: None,
            annotations: [("org.example.k".to_string(), "v".to_string())].into(),
            manifests: None,
            config: Some(Config {
                descriptor: Descriptor { media_type: IMAGE_CONFIGS[0].into(), digest: d('c'), size: 300 },
                created: Some("2024-01-01T00:00:00Z".into()),
                os: Some("linux".into()),
                architecture: Some("arm64".into()),
                variant: Some("v8".into()),
                labels: [("a.long.label".to_string(), "x".to_string()), ("b".to_string(), "y".to_string())]
                    .into(),
            }),
            layers: Some(vec![
                Descriptor {
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                    digest: d('1'),
                    size: 2 << 20,
                },
                Descriptor {
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                    digest: d('2'),
                    size: 512,
                },
            ]),
            layers_size: Some((2 << 20) + 512),
            referrers: [(
                "application/vnd.example.sig".to_string(),
                vec![Referrer {
                    descriptor: Descriptor { media_type: OCI_MANIFEST.into(), digest: d('s'), size: 700 },
                    annotations: BTreeMap::new(),
                }],
            )]
            .into(),
        };
        let text = i.human();
        let want = format!(
            "Name:        h:5000/team/app:v1\n\
             Kind:        manifest\n\
             Media type:  application/vnd.oci.image.manifest.v1+json\n\
             Digest:      {a}\n\
             Size:        1000 B\n\
             Platform:    linux/arm64/v8\n\
             Created:     2024-01-01T00:00:00Z\n\
             Config:      {c} (300 B, application/vnd.oci.image.config.v1+json)\n\
             \n\
             Layers (2):\n\
             \x20 #  DIGEST{pad}     SIZE  MEDIA TYPE\n\
             \x20 1  {l1}  2.0 MiB  application/vnd.oci.image.layer.v1.tar+gzip\n\
             \x20 2  {l2}    512 B  application/vnd.oci.image.layer.v1.tar\n\
             \x20    total{pad5}  2.0 MiB\n\
             \n\
             Labels:\n\
             \x20 a.long.label  x\n\
             \x20 b             y\n\
             \n\
             Annotations:\n\
             \x20 org.example.k  v\n\
             \n\
             Referrers (1):\n\
             \x20 application/vnd.example.sig (1):\n\
             \x20   {s}  700 B\n",
            a = d('a'),
            c = d('c'),
            l1 = d('1'),
            l2 = d('2'),
            s = d('s'),
            pad = " ".repeat(71 - 6),
            pad5 = " ".repeat(71 - 5),
        );
        assert_eq!(text, want, "\n{text}");
        let json: serde_json::Value = serde_json::from_str(&i.print(true).unwrap()).unwrap();
        assert_eq!(json["layersSize"], (2 << 20) + 512);
        assert_eq!(json["config"]["labels"]["b"], "y");
        assert_eq!(json["config"]["digest"], d('c'));
        assert_eq!(json["artifactType"], serde_json::Value::Null);
        assert!(json.get("manifests").is_none());
    }
}
