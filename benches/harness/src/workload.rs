//! Workloads: their untimed setup, their timed operation, and the concurrent runner.
//!
//! Two workloads measure a pull-through cache (a mirror that fetches from an upstream registry on
//! a miss and serves from its cache afterwards): `pull-cold` and `pull-warm` push to the
//! upstream (`--upstream`) in their setup and pull through the mirror (`--url`), naming the
//! upstream's repositories as the mirror expects them ([`MirrorPath`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::Method;

use crate::client::{self, Fail, Http};
use crate::gen;
use crate::report::{Failure, Report, ReportHead, Rss, Sample};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";
/// The tag the manifest workloads read.
pub const TAG: &str = "bench";
/// Seeds for setup blobs, far from the seeds of timed pushes.
const SETUP_SEED: u64 = 0x5E7_0000_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Monolithic pushes: POST /blobs/uploads/, then one PUT ?digest= with the whole blob.
    PushMono,
    /// Chunked pushes: POST, PATCH chunks with Content-Range, PUT ?digest=.
    PushChunked,
    /// Blob GETs of one blob of --size (pushed first, untimed), streamed and discarded.
    Pull,
    /// Manifest GETs by tag.
    ManifestGetTag,
    /// Manifest GETs by digest.
    ManifestGetDigest,
    /// Manifest HEADs by tag.
    ManifestHead,
    /// GET /v2/<repo>/tags/list.
    TagsList,
    /// GET /v2/_catalog.
    Catalog,
    /// Blob pulls and monolithic pushes of --size, mixed by --pull-ratio.
    Mixed,
    /// Pull-through cache misses: each operation GETs, through the mirror at --url, a blob of
    /// --size that it has never served (setup pushes --count new blobs to --upstream, untimed).
    /// Needs --upstream and --count.
    PullCold,
    /// Pull-through cache hits: GETs, through the mirror at --url, of one blob of --size that
    /// setup pushed to --upstream and pulled once through the mirror (untimed). Needs --upstream.
    PullWarm,
    /// Kubernetes admission reviews: POST /validate-image with an AdmissionReview of a
    /// Deployment of 10 containers (`quay.io/bench/app-<n>:1` and `docker.io/library/bench-<n>`),
    /// answered 200 whatever the policy decides.
    Admission,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::PushMono => "push-mono",
            Workload::PushChunked => "push-chunked",
            Workload::Pull => "pull",
            Workload::ManifestGetTag => "manifest-get-tag",
            Workload::ManifestGetDigest => "manifest-get-digest",
            Workload::ManifestHead => "manifest-head",
            Workload::TagsList => "tags-list",
            Workload::Catalog => "catalog",
            Workload::Mixed => "mixed",
            Workload::PullCold => "pull-cold",
            Workload::PullWarm => "pull-warm",
            Workload::Admission => "admission",
        }
    }

    /// Whether --size matters.
    pub fn sized(self) -> bool {
        matches!(
            self,
            Workload::PushMono
                | Workload::PushChunked
                | Workload::Pull
                | Workload::Mixed
                | Workload::PullCold
                | Workload::PullWarm
        )
    }

    /// Whether the workload measures a pull-through cache (and so needs `--upstream`).
    pub fn through_mirror(self) -> bool {
        matches!(self, Workload::PullCold | Workload::PullWarm)
    }

    fn default_count(self) -> u64 {
        if self.sized() {
            20
        } else {
            2000
        }
    }
}

/// How a mirror names the repositories of its upstream in its own `/v2/` paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MirrorPath {
    /// `/v2/<repo>/...`, as the upstream names it: Distribution's proxy mode, Zot.
    #[default]
    Same,
    /// `/v2/f/<upstream-host[:port]>/<repo>/...`: Trow's form, and donjon's.
    Trow,
    /// `/v2/<repo>/...?ns=<upstream-host[:port]>`: the form containerd uses with a mirror.
    Ns,
}

impl MirrorPath {
    pub fn name(self) -> &'static str {
        match self {
            MirrorPath::Same => "same",
            MirrorPath::Trow => "trow",
            MirrorPath::Ns => "ns",
        }
    }

    /// The mirror's path for blob `digest` of repository `repo` of the upstream `host`
    /// (`host[:port]`, as [`upstream_host`] gives it).
    pub fn blob(self, host: &str, repo: &str, digest: &str) -> String {
        match self {
            MirrorPath::Same => format!("/v2/{repo}/blobs/{digest}"),
            MirrorPath::Trow => format!("/v2/f/{host}/{repo}/blobs/{digest}"),
            MirrorPath::Ns => format!("/v2/{repo}/blobs/{digest}?ns={host}"),
        }
    }
}

/// The `host[:port]` of a registry URL, the port only when the URL gives one: how Trow's `f/`
/// paths and containerd's `ns=` name an upstream.
pub fn upstream_host(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.trim_end_matches('/').parse().map_err(|e| format!("--upstream {url}: {e}"))?;
    let host = match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => h.to_ascii_lowercase(),
        _ => return Err(format!("--upstream {url}: expected http(s)://HOST[:PORT]")),
    };
    Ok(match uri.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunOpts {
    /// The registry under test (for `pull-cold` and `pull-warm`, the mirror).
    pub url: String,
    /// The registry the mirror fetches from (`pull-cold` and `pull-warm` only).
    pub upstream: Option<String>,
    /// How the mirror names the upstream's repositories.
    pub mirror_path: MirrorPath,
    pub workload: Workload,
    pub concurrency: usize,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub repo: String,
    pub size: u64,
    pub chunk: u64,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Extra CA certificates (PEM) to trust.
    pub ca_cert: Option<PathBuf>,
    pub pid: Option<u32>,
    pub pull_ratio: f64,
    pub seed: u64,
    /// Print progress to stderr.
    pub progress: bool,
    /// Print every request to stderr.
    pub trace: bool,
}

/// What setup leaves for the timed operations.
#[derive(Default)]
struct Prepared {
    /// Blobs to push, cycled through (for pull-cold, the blobs pushed to the upstream):
    /// (seed, digest).
    pool: Vec<(u64, String)>,
    /// The blob to pull.
    blob: Option<String>,
    /// The digest of the manifest tagged `bench`.
    manifest: Option<String>,
    /// Paths on the mirror of the blobs to pull through it, in the order of the operations.
    mirrored: Vec<String>,
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn octets(len: u64) -> Vec<(HeaderName, HeaderValue)> {
    vec![
        (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
        (header::CONTENT_LENGTH, HeaderValue::from(len)),
    ]
}

fn location(d: &client::Done, what: &str) -> Result<String, Fail> {
    d.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string).ok_or_else(|| {
        Fail::other(format!("no Location on {what}"), format!("{what}: {} without Location", d.status))
    })
}

fn with_query(url: &str, q: &str) -> String {
    format!("{url}{}{q}", if url.contains('?') { '&' } else { '?' })
}

/// A monolithic push of generated blob `seed`, as every registry takes it: `POST` opens a
/// session, one `PUT ?digest=` carries the whole blob (Distribution 2.8 has no single-`POST`
/// upload: it answers `POST ?digest=` with a session and ignores the body).
async fn push_mono(http: &Http, repo: &str, seed: u64, size: u64, digest: &str) -> Result<Sample, Fail> {
    let start = Instant::now();
    let url = http.resolve(&format!("/v2/{repo}/blobs/uploads/"));
    let d = http.call(Method::POST, &url, &octets(0), client::empty(), 0).await?;
    let loc = location(&d, "POST /blobs/uploads/")?;
    let put = http.resolve(&with_query(&loc, &format!("digest={digest}")));
    let d = http.call(Method::PUT, &put, &octets(size), client::generated(seed, 0, size), 0).await?;
    if d.status != http::StatusCode::CREATED {
        return Err(Fail::other(
            format!("PUT ?digest= answered {} instead of 201", d.status.as_u16()),
            format!("PUT /v2/{repo}/blobs/uploads/<id>?digest=: {} (push not completed)", d.status),
        ));
    }
    Ok(Sample { kind: "push", latency: start.elapsed(), ttfb: None, bytes: size })
}

/// A chunked push of generated blob `seed`: POST, PATCH per chunk, PUT.
async fn push_chunked(
    http: &Http,
    repo: &str,
    seed: u64,
    size: u64,
    chunk: u64,
    digest: &str,
) -> Result<Sample, Fail> {
    let start = Instant::now();
    let url = http.resolve(&format!("/v2/{repo}/blobs/uploads/"));
    let d = http.call(Method::POST, &url, &octets(0), client::empty(), 0).await?;
    let mut loc = location(&d, "POST /blobs/uploads/")?;
    let mut pos = 0;
    while pos < size {
        let end = (pos + chunk).min(size);
        let mut h = octets(end - pos);
        h.push((header::CONTENT_RANGE, hv(&format!("{pos}-{}", end - 1))));
        let d =
            http.call(Method::PATCH, &http.resolve(&loc), &h, client::generated(seed, pos, end), 0).await?;
        loc = location(&d, "PATCH /blobs/uploads/<id>")?;
        pos = end;
    }
    let put = with_query(&http.resolve(&loc), &format!("digest={digest}"));
    let d = http.call(Method::PUT, &put, &octets(0), client::empty(), 0).await?;
    if d.status != http::StatusCode::CREATED {
        return Err(Fail::other(
            format!("PUT ?digest= answered {} instead of 201", d.status.as_u16()),
            format!("PUT /v2/{repo}/blobs/uploads/<id>?digest=: {} (chunked push not completed)", d.status),
        ));
    }
    Ok(Sample { kind: "push", latency: start.elapsed(), ttfb: None, bytes: size })
}

/// A GET (or HEAD), body streamed and discarded.
async fn get(
    http: &Http,
    kind: &'static str,
    method: Method,
    path: &str,
    accept: Option<&str>,
) -> Result<Sample, Fail> {
    let headers: Vec<_> = accept.map(|a| (header::ACCEPT, hv(a))).into_iter().collect();
    let start = Instant::now();
    let d = http.call(method.clone(), &http.resolve(path), &headers, client::empty(), 0).await?;
    let ttfb = (method == Method::GET).then_some(d.ttfb);
    Ok(Sample { kind, latency: start.elapsed(), ttfb, bytes: d.bytes })
}

/// The AdmissionReview of a Deployment with ten containers, as the API server sends it.
pub fn admission_review(i: u64) -> String {
    let containers: Vec<String> = (0..10)
        .map(|n| {
            let image = if n % 2 == 0 { format!("quay.io/bench/app-{n}:1") } else { format!("bench-{n}") };
            format!(
                r#"{{"name":"c{n}","image":"{image}","ports":[{{"containerPort":8080}}],"resources":{{}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"bench-{i}","kind":{{"group":"apps","version":"v1","kind":"Deployment"}},"resource":{{"group":"apps","version":"v1","resource":"deployments"}},"requestKind":{{"group":"apps","version":"v1","kind":"Deployment"}},"requestResource":{{"group":"apps","version":"v1","resource":"deployments"}},"name":"bench","namespace":"default","operation":"CREATE","userInfo":{{"username":"admin","groups":["system:authenticated"]}},"object":{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"bench","namespace":"default","labels":{{"app":"bench"}}}},"spec":{{"replicas":3,"selector":{{"matchLabels":{{"app":"bench"}}}},"template":{{"metadata":{{"labels":{{"app":"bench"}}}},"spec":{{"containers":[{}]}}}}}}}},"oldObject":null,"options":{{"apiVersion":"meta.k8s.io/v1","kind":"CreateOptions"}},"dryRun":false}}}}"#,
        containers.join(",")
    )
}

/// One `POST /validate-image`; anything but 200 fails.
async fn admission(http: &Http, i: u64) -> Result<Sample, Fail> {
    let body = admission_review(i);
    let headers = vec![
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64)),
    ];
    let start = Instant::now();
    let d =
        http.call(Method::POST, &http.resolve("/validate-image"), &headers, client::full(body), 0).await?;
    if d.status != http::StatusCode::OK {
        return Err(Fail::other(
            format!("POST /validate-image answered {}", d.status.as_u16()),
            format!("POST /validate-image: {} (is image validation configured?)", d.status),
        ));
    }
    Ok(Sample { kind: "admission", latency: start.elapsed(), ttfb: None, bytes: d.bytes })
}

/// Pushes a small image (config + layer + manifest tagged `bench`); returns the manifest digest.
async fn push_image(http: &Http, repo: &str) -> Result<String, Fail> {
    let layer_size = 4096;
    let layer_seed = SETUP_SEED + 1;
    let layer = gen::digest(layer_seed, layer_size);
    push_mono(http, repo, layer_seed, layer_size, &layer).await?;
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer}"]}},"config":{{}}}}"#
    );
    let config_digest = gen::sha256_of(config.as_bytes());
    let url = http.resolve(&format!("/v2/{repo}/blobs/uploads/"));
    let d = http.call(Method::POST, &url, &octets(0), client::empty(), 0).await?;
    let put =
        http.resolve(&with_query(&location(&d, "POST /blobs/uploads/")?, &format!("digest={config_digest}")));
    let d =
        http.call(Method::PUT, &put, &octets(config.len() as u64), client::full(config.clone()), 0).await?;
    if d.status != http::StatusCode::CREATED {
        return Err(Fail::other("config push", format!("PUT config: {}", d.status)));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": layer_size}],
        "annotations": {"org.opencontainers.image.description": "donjon-bench fixture"},
    });
    let body = serde_json::to_vec(&manifest).map_err(|e| Fail::other("json", e.to_string()))?;
    let digest = gen::sha256_of(&body);
    let h = vec![
        (header::CONTENT_TYPE, HeaderValue::from_static(OCI_MANIFEST)),
        (header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64)),
    ];
    let url = http.resolve(&format!("/v2/{repo}/manifests/{TAG}"));
    let d = http.call(Method::PUT, &url, &h, client::full(body), 0).await?;
    if let Some(got) = d.headers.get("docker-content-digest").and_then(|v| v.to_str().ok()) {
        if got != digest {
            eprintln!("warning: the registry says the manifest is {got}, but its bytes hash to {digest}");
        }
    }
    Ok(digest)
}

/// The seed of the `pull-warm` blob, far from the other setup seeds.
const WARM_SEED: u64 = SETUP_SEED + (1 << 39);

/// How long `pull-warm`'s setup waits for the mirror to serve its blob from its cache.
const SETTLE: Duration = Duration::from_secs(10);

/// A client for `--upstream` (with the credentials and CA certificates given for `--url`), and
/// the upstream's `host[:port]`.
fn upstream_client(o: &RunOpts) -> Result<(Http, String), String> {
    let url = o.upstream.as_deref().ok_or_else(|| missing_upstream(o.workload))?;
    let host = upstream_host(url)?;
    let mut http = Http::new(url, o.user.as_deref(), o.password.as_deref(), 1, o.ca_cert.as_deref())?;
    http.trace = o.trace;
    Ok((http, host))
}

/// The digests of generated blobs `seeds` of `size`, computed off the runtime's threads.
async fn digests_of(seeds: Vec<u64>, size: u64) -> Result<Vec<String>, String> {
    tokio::task::spawn_blocking(move || gen::digests(&seeds, size))
        .await
        .map_err(|e| format!("setup failed: {e}"))
}

/// `pull-cold`'s setup: `--count` new blobs (seeds from `--seed` on) pushed to the upstream, one
/// after another; the mirror has never served them, whatever it served before, as long as runs
/// do not share seeds (the seed comes from the clock, and `compare` and `scale` move it on by
/// `--count` per run).
async fn setup_cold(o: &RunOpts, p: &mut Prepared) -> Result<(), String> {
    let (upstream, host) = upstream_client(o)?;
    let seeds: Vec<u64> = (0..o.count.unwrap_or(0)).map(|i| o.seed.wrapping_add(i)).collect();
    let digests = digests_of(seeds.clone(), o.size).await?;
    for (seed, digest) in seeds.iter().zip(&digests) {
        push_mono(&upstream, &o.repo, *seed, o.size, digest)
            .await
            .map_err(|e| format!("setup failed: pushing to the upstream: {e}"))?;
    }
    p.mirrored = digests.iter().map(|d| o.mirror_path.blob(&host, &o.repo, d)).collect();
    p.pool = seeds.into_iter().zip(digests).collect();
    Ok(())
}

/// `pull-warm`'s setup: one blob pushed to the upstream and pulled through the mirror until the
/// mirror has it in its cache ([`warm_up`]).
async fn setup_warm(mirror: &Http, o: &RunOpts, p: &mut Prepared) -> Result<(), String> {
    let (upstream, host) = upstream_client(o)?;
    let seed = WARM_SEED + o.size;
    let digest = digests_of(vec![seed], o.size).await?.pop().unwrap_or_default();
    push_mono(&upstream, &o.repo, seed, o.size, &digest)
        .await
        .map_err(|e| format!("setup failed: pushing to the upstream: {e}"))?;
    let path = o.mirror_path.blob(&host, &o.repo, &digest);
    warm_up(mirror, &path, o.size)
        .await
        .map_err(|e| format!("setup failed: pulling through the mirror: {e}"))?;
    p.mirrored = vec![path];
    Ok(())
}

/// Pulls a blob through the mirror once (the miss that fills its cache), then waits until the
/// mirror serves it from its cache.
///
/// CNCF Distribution 2.8's proxy answers a miss by streaming from the upstream while a
/// goroutine fetches the blob a second time into its storage; until that copy is committed,
/// every request for the blob is streamed from the upstream again. A blob served from storage
/// honours `Range: bytes=0-0` (`206`), a stream from the upstream does not (`200`), so the
/// setup asks for one byte until it gets `206`. A mirror that never answers `206` is given
/// [`SETTLE`], then taken as warm, with a warning.
async fn warm_up(mirror: &Http, path: &str, size: u64) -> Result<(), Fail> {
    let first = get(mirror, "pull-warm", Method::GET, path, None).await?;
    if first.bytes != size {
        return Err(Fail::other(
            "short blob",
            format!("GET {path}: {} bytes instead of {size}", first.bytes),
        ));
    }
    if size == 0 {
        return Ok(());
    }
    let range = [(header::RANGE, HeaderValue::from_static("bytes=0-0"))];
    let start = Instant::now();
    loop {
        let d = mirror.call(Method::GET, &mirror.resolve(path), &range, client::empty(), 0).await?;
        if d.status == http::StatusCode::PARTIAL_CONTENT {
            return Ok(());
        }
        if start.elapsed() >= SETTLE {
            eprintln!(
                "warning: the mirror never answered a range request for {path} with 206 in {}s: \
                 taken as cached, but it may still be filling its cache",
                SETTLE.as_secs()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many distinct blobs a push workload cycles through.
fn pool_size(o: &RunOpts) -> u64 {
    const MAX_HASHED: u64 = 16 << 30;
    let want = match o.count {
        Some(c) => c,
        None => (o.concurrency as u64 * 4).max(16),
    };
    want.min((MAX_HASHED / o.size.max(1)).max(1)).max(1)
}

async fn setup(http: &Http, o: &RunOpts) -> Result<Prepared, String> {
    let mut p = Prepared::default();
    let fail = |e: Fail| format!("setup failed: {e}");
    match o.workload {
        Workload::PushMono | Workload::PushChunked => {
            let n = pool_size(o);
            let seeds: Vec<u64> = (0..n).map(|i| o.seed.wrapping_add(i)).collect();
            let digests = digests_of(seeds.clone(), o.size).await?;
            p.pool = seeds.into_iter().zip(digests).collect();
        }
        Workload::PullCold => setup_cold(o, &mut p).await?,
        Workload::PullWarm => setup_warm(http, o, &mut p).await?,
        Workload::Pull | Workload::Mixed => {
            let seed = SETUP_SEED + 2 + o.size;
            let size = o.size;
            let digest = tokio::task::spawn_blocking(move || gen::digest(seed, size))
                .await
                .map_err(|e| format!("setup failed: {e}"))?;
            push_mono(http, &o.repo, seed, o.size, &digest).await.map_err(fail)?;
            p.blob = Some(digest);
        }
        Workload::ManifestGetTag
        | Workload::ManifestGetDigest
        | Workload::ManifestHead
        | Workload::TagsList
        | Workload::Catalog => {
            p.manifest = Some(push_image(http, &o.repo).await.map_err(fail)?);
        }
        Workload::Admission => {}
    }
    Ok(p)
}

/// Operation `i` of the run.
async fn op(http: &Http, o: &RunOpts, p: &Prepared, i: u64) -> (&'static str, Result<Sample, Fail>) {
    let repo = &o.repo;
    match o.workload {
        Workload::PushMono => {
            let (seed, d) = &p.pool[(i % p.pool.len() as u64) as usize];
            ("push", push_mono(http, repo, *seed, o.size, d).await)
        }
        Workload::PushChunked => {
            let (seed, d) = &p.pool[(i % p.pool.len() as u64) as usize];
            ("push", push_chunked(http, repo, *seed, o.size, o.chunk, d).await)
        }
        Workload::Pull => {
            let path = format!("/v2/{repo}/blobs/{}", p.blob.as_deref().unwrap_or_default());
            ("pull", get(http, "pull", Method::GET, &path, None).await)
        }
        Workload::ManifestGetTag => {
            let path = format!("/v2/{repo}/manifests/{TAG}");
            (
                "manifest-get-tag",
                get(http, "manifest-get-tag", Method::GET, &path, Some(ACCEPT_MANIFESTS)).await,
            )
        }
        Workload::ManifestGetDigest => {
            let path = format!("/v2/{repo}/manifests/{}", p.manifest.as_deref().unwrap_or_default());
            let k = "manifest-get-digest";
            (k, get(http, k, Method::GET, &path, Some(ACCEPT_MANIFESTS)).await)
        }
        Workload::ManifestHead => {
            let path = format!("/v2/{repo}/manifests/{TAG}");
            ("manifest-head", get(http, "manifest-head", Method::HEAD, &path, Some(ACCEPT_MANIFESTS)).await)
        }
        Workload::TagsList => {
            ("tags-list", get(http, "tags-list", Method::GET, &format!("/v2/{repo}/tags/list"), None).await)
        }
        Workload::Catalog => ("catalog", get(http, "catalog", Method::GET, "/v2/_catalog", None).await),
        Workload::Admission => ("admission", admission(http, i).await),
        Workload::PullCold | Workload::PullWarm => {
            let kind = o.workload.name();
            match p.mirrored.get((i % p.mirrored.len().max(1) as u64) as usize) {
                Some(path) => (kind, get(http, kind, Method::GET, path, None).await),
                None => (kind, Err(Fail::other("internal", "no blob to pull"))),
            }
        }
        Workload::Mixed => {
            if gen::unit_float(o.seed, i) < o.pull_ratio {
                let path = format!("/v2/{repo}/blobs/{}", p.blob.as_deref().unwrap_or_default());
                ("pull", get(http, "pull", Method::GET, &path, None).await)
            } else {
                // A new blob each time; its digest is computed before the timed request.
                let seed = o.seed.wrapping_add(1 << 40).wrapping_add(i);
                let size = o.size;
                let d = match tokio::task::spawn_blocking(move || gen::digest(seed, size)).await {
                    Ok(d) => d,
                    Err(e) => return ("push", Err(Fail::other("internal", e.to_string()))),
                };
                ("push", push_mono(http, repo, seed, size, &d).await)
            }
        }
    }
}

/// Samples `VmRSS` of `pid` every 100 ms until `stop` is set.
fn spawn_rss(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Rss> {
    tokio::spawn(async move {
        let path = format!("/proc/{pid}/status");
        let stat = format!("/proc/{pid}/stat");
        let ticks = || std::fs::read_to_string(&stat).ok().and_then(|s| crate::util::parse_cpu_ticks(&s));
        let cpu_start = ticks();
        let mut r = Rss {
            pid,
            samples: 0,
            start_kib: None,
            peak_kib: None,
            end_kib: None,
            vanished: false,
            cpu_ms: None,
        };
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let last = stop.load(Ordering::Relaxed);
            match tokio::fs::read_to_string(&path).await.ok().and_then(|s| crate::util::parse_vmrss_kib(&s)) {
                Some(kib) => {
                    r.samples += 1;
                    r.start_kib.get_or_insert(kib);
                    r.peak_kib = Some(r.peak_kib.unwrap_or(0).max(kib));
                    r.end_kib = Some(kib);
                }
                None => r.vanished = true,
            }
            if last {
                // /proc counts in USER_HZ, which is 100 on Linux whatever the kernel's HZ.
                r.cpu_ms = cpu_start.zip(ticks()).map(|(a, b)| b.saturating_sub(a) * 10);
                return r;
            }
        }
    })
}

/// The error for a mirror workload without `--upstream`.
fn missing_upstream(w: Workload) -> String {
    format!(
        "--workload {} needs --upstream URL: the registry that the mirror at --url fetches from \
         (setup pushes its blobs there)",
        w.name()
    )
}

/// Refuses options that do not make sense together, before anything is sent.
fn check(o: &RunOpts) -> Result<(), String> {
    if o.workload.through_mirror() && o.upstream.is_none() {
        return Err(missing_upstream(o.workload));
    }
    if !o.workload.through_mirror() && o.upstream.is_some() {
        return Err(format!(
            "--upstream is for --workload pull-cold and pull-warm only, not {}",
            o.workload.name()
        ));
    }
    if o.workload == Workload::PullCold {
        if o.duration.is_some() {
            return Err("--workload pull-cold takes --count, not --duration: each operation pulls \
                        a blob the mirror has never served, pushed to the upstream before the \
                        timed run"
                .into());
        }
        if o.count.is_none() {
            return Err("--workload pull-cold needs --count N: the blobs it pulls, all new to the \
                        mirror, are pushed to the upstream before the timed run"
                .into());
        }
    }
    if let Some(url) = &o.upstream {
        upstream_host(url)?;
    }
    if o.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if o.workload == Workload::PushChunked && o.chunk == 0 {
        return Err("--chunk must be at least 1 byte".into());
    }
    if !(0.0..=1.0).contains(&o.pull_ratio) {
        return Err("--pull-ratio must be between 0 and 1".into());
    }
    if let Some(pid) = o.pid {
        if !std::path::Path::new(&format!("/proc/{pid}/status")).exists() {
            return Err(format!("--pid {pid}: no such process"));
        }
    }
    Ok(())
}

/// Runs one workload: setup, then the timed operations on `concurrency` workers.
pub async fn run(o: &RunOpts) -> Result<Report, String> {
    check(o)?;
    let mut http =
        Http::new(&o.url, o.user.as_deref(), o.password.as_deref(), o.concurrency, o.ca_cert.as_deref())?;
    http.trace = o.trace;
    let http = Arc::new(http);
    let setup_start = Instant::now();
    let prepared = Arc::new(setup(&http, o).await?);
    let setup_time = setup_start.elapsed();
    let count = match (o.count, o.duration) {
        (None, None) => Some(o.workload.default_count()),
        (c, _) => c,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let rss = o.pid.map(|pid| spawn_rss(pid, stop.clone()));
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = o.duration.map(|d| start + d);
    let progress = o.progress.then(|| {
        let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let (d, f) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
                eprintln!("  [{:>5.1}s] {d} done, {f} failed", start.elapsed().as_secs_f64());
            }
        })
    });

    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..o.concurrency {
        let (http, p, o, next, done, failed, failures) = (
            http.clone(),
            prepared.clone(),
            o.clone(),
            next.clone(),
            done.clone(),
            failed.clone(),
            failures.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if count.is_some_and(|c| i >= c) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                match op(&http, &o, &p, i).await {
                    (_, Ok(s)) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        samples.push(s);
                    }
                    (kind, Err(f)) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let f = Failure { kind, key: f.key, detail: f.detail, at: start.elapsed() };
                        failures.lock().unwrap_or_else(|e| e.into_inner()).push(f);
                    }
                }
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for w in workers {
        match w.await {
            Ok(s) => samples.extend(s),
            Err(e) => return Err(format!("a worker failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        p.abort();
    }
    let rss = match rss {
        Some(h) => h.await.ok(),
        None => None,
    };
    let failures = std::mem::take(&mut *failures.lock().unwrap_or_else(|e| e.into_inner()));
    let head = ReportHead {
        workload: o.workload.name().to_string(),
        url: o.url.clone(),
        upstream: o.upstream.clone(),
        mirror_path: o.workload.through_mirror().then(|| o.mirror_path.name().to_string()),
        repo: o.repo.clone(),
        concurrency: o.concurrency,
        size: o.workload.sized().then_some(o.size),
        chunk: (o.workload == Workload::PushChunked).then_some(o.chunk),
        seed: o.seed,
        distinct_blobs: (!prepared.pool.is_empty()).then_some(prepared.pool.len() as u64),
    };
    Ok(Report::build(head, &samples, &failures, elapsed, setup_time, rss))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admission_review_is_a_deployment_of_ten_containers() {
        let v: serde_json::Value = serde_json::from_str(&admission_review(7)).unwrap();
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["request"]["uid"], "bench-7");
        let c = v["request"]["object"]["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(c.len(), 10);
        assert_eq!(c[1]["image"], "bench-1");
    }

    fn opts() -> RunOpts {
        RunOpts {
            url: "http://127.0.0.1:1".into(),
            upstream: None,
            mirror_path: MirrorPath::Same,
            workload: Workload::PushMono,
            concurrency: 4,
            count: None,
            duration: Some(Duration::from_secs(1)),
            repo: "r".into(),
            size: 1 << 20,
            chunk: 10 << 20,
            user: None,
            password: None,
            ca_cert: None,
            pid: None,
            pull_ratio: 0.9,
            seed: 1,
            progress: false,
            trace: false,
        }
    }

    #[test]
    fn pool_sizes() {
        let mut o = opts();
        assert_eq!(pool_size(&o), 16);
        o.count = Some(3);
        assert_eq!(pool_size(&o), 3);
        o.size = 1 << 30;
        o.count = Some(100);
        assert_eq!(pool_size(&o), 16);
    }

    #[test]
    fn queries() {
        assert_eq!(with_query("http://h/u/1", "digest=d"), "http://h/u/1?digest=d");
        assert_eq!(with_query("http://h/u/1?_state=x", "digest=d"), "http://h/u/1?_state=x&digest=d");
    }

    #[test]
    fn mirror_paths() {
        let d = "sha256:abcd";
        let (host, repo) = ("127.0.0.1:5000", "library/nested/name");
        assert_eq!(MirrorPath::Same.blob(host, repo, d), "/v2/library/nested/name/blobs/sha256:abcd");
        assert_eq!(
            MirrorPath::Trow.blob(host, repo, d),
            "/v2/f/127.0.0.1:5000/library/nested/name/blobs/sha256:abcd"
        );
        assert_eq!(
            MirrorPath::Ns.blob(host, repo, d),
            "/v2/library/nested/name/blobs/sha256:abcd?ns=127.0.0.1:5000"
        );
        assert_eq!(MirrorPath::Trow.blob("ghcr.io", "a", d), "/v2/f/ghcr.io/a/blobs/sha256:abcd");
        assert_eq!(MirrorPath::Ns.blob("ghcr.io", "a", d), "/v2/a/blobs/sha256:abcd?ns=ghcr.io");
        // The repository of a mirror path is the one the token flow asks a scope for.
        let scope = |p: &str| donjon_core::challenge::scope_for(&Method::GET, p.split('?').next().unwrap());
        assert_eq!(
            scope(&MirrorPath::Trow.blob(host, repo, d)),
            "repository:f/127.0.0.1:5000/library/nested/name:pull"
        );
        assert_eq!(scope(&MirrorPath::Ns.blob(host, repo, d)), "repository:library/nested/name:pull");
    }

    #[test]
    fn upstream_hosts() {
        assert_eq!(upstream_host("http://127.0.0.1:5000").unwrap(), "127.0.0.1:5000");
        assert_eq!(upstream_host("http://127.0.0.1:5000/").unwrap(), "127.0.0.1:5000");
        assert_eq!(upstream_host("https://Registry.Example.com").unwrap(), "registry.example.com");
        assert_eq!(upstream_host("https://ghcr.io:443/").unwrap(), "ghcr.io:443");
        assert_eq!(upstream_host("http://[::1]:5000").unwrap(), "[::1]:5000");
        assert!(upstream_host("127.0.0.1:5000").is_err());
        assert!(upstream_host("ftp://h").is_err());
    }

    fn mirrored(w: Workload) -> RunOpts {
        RunOpts {
            workload: w,
            upstream: Some("http://127.0.0.1:2".into()),
            count: Some(4),
            duration: None,
            ..opts()
        }
    }

    #[tokio::test]
    async fn mirror_options_are_checked() {
        for w in [Workload::PullCold, Workload::PullWarm] {
            assert!(check(&mirrored(w)).is_ok());
            let e = run(&RunOpts { upstream: None, ..mirrored(w) }).await.unwrap_err();
            assert!(e.contains(&format!("--workload {} needs --upstream URL", w.name())), "{e}");
            let e = check(&RunOpts { upstream: Some("127.0.0.1:5000".into()), ..mirrored(w) });
            assert!(e.unwrap_err().contains("expected http(s)://HOST[:PORT]"));
        }
        // pull-warm runs for a duration as well as a count; pull-cold only for a count.
        let warm =
            RunOpts { count: None, duration: Some(Duration::from_secs(1)), ..mirrored(Workload::PullWarm) };
        assert!(check(&warm).is_ok());
        let cold = RunOpts { workload: Workload::PullCold, ..warm };
        let e = run(&cold).await.unwrap_err();
        assert!(e.starts_with("--workload pull-cold takes --count, not --duration"), "{e}");
        let e = check(&RunOpts { duration: None, ..cold }).unwrap_err();
        assert!(e.starts_with("--workload pull-cold needs --count N"), "{e}");
        // --upstream means nothing to the other workloads.
        let e = check(&RunOpts { workload: Workload::Pull, ..mirrored(Workload::PullWarm) }).unwrap_err();
        assert_eq!(e, "--upstream is for --workload pull-cold and pull-warm only, not pull");
    }

    type Handler = Arc<dyn Fn(&http::Request<hyper::body::Incoming>) -> http::Response<String> + Send + Sync>;

    /// Serves `handler` on 127.0.0.1 until the test ends; its base URL.
    async fn serve(handler: Handler) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (parts, body) = handler(&req).into_parts();
                        async move {
                            // Read the request body, so that the connection can serve the next.
                            let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                            let body = http_body_util::Full::new(bytes::Bytes::from(body));
                            Ok::<_, std::convert::Infallible>(http::Response::from_parts(parts, body))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        url
    }

    /// A fake upstream that takes monolithic pushes (recording the digests), and a fake mirror
    /// that serves any blob (recording the path and query it is asked, and answering ranges).
    async fn upstream_and_mirror() -> (String, String, Arc<Mutex<Vec<String>>>, Arc<Mutex<Vec<String>>>) {
        let pushed = Arc::new(Mutex::new(Vec::new()));
        let seen = pushed.clone();
        let upstream = serve(Arc::new(move |req| {
            let r = http::Response::builder();
            let r = match (req.method().clone(), req.uri().query()) {
                (Method::POST, _) => r.status(202).header("location", "/v2/upload/1?_state=x"),
                (Method::PUT, Some(q)) => {
                    seen.lock().unwrap().push(q.trim_start_matches("_state=x&digest=").to_string());
                    r.status(201)
                }
                _ => r.status(400),
            };
            r.body(String::new()).unwrap()
        }))
        .await;
        let pulled = Arc::new(Mutex::new(Vec::new()));
        let seen = pulled.clone();
        let mirror = serve(Arc::new(move |req| {
            seen.lock().unwrap().push(req.uri().to_string());
            match req.headers().get(header::RANGE) {
                Some(_) => http::Response::builder().status(206).body("x".to_string()).unwrap(),
                None => http::Response::new("y".repeat(1000)),
            }
        }))
        .await;
        (upstream, mirror, pushed, pulled)
    }

    #[tokio::test]
    async fn cold_pulls_go_through_the_mirror_for_blobs_pushed_to_the_upstream() {
        let (upstream, mirror, pushed, pulled) = upstream_and_mirror().await;
        let host = upstream_host(&upstream).unwrap();
        let o = RunOpts {
            url: mirror,
            upstream: Some(upstream),
            mirror_path: MirrorPath::Trow,
            workload: Workload::PullCold,
            repo: "a/b".into(),
            size: 1000,
            count: Some(5),
            duration: None,
            concurrency: 2,
            ..opts()
        };
        let r = run(&o).await.unwrap();
        assert_eq!((r.total.kind.as_str(), r.total.requests, r.total.errors), ("pull-cold", 5, 0), "{r:?}");
        assert_eq!(r.total.bytes, 5000);
        assert_eq!(r.head.distinct_blobs, Some(5));
        assert_eq!(r.head.upstream, o.upstream);
        assert_eq!(r.head.mirror_path.as_deref(), Some("trow"));
        assert_eq!(r.throughput().1, "MB/s");
        // Five new blobs pushed, each pulled once through the mirror, under Trow's path.
        let mut want: Vec<String> =
            (0..5).map(|i| format!("/v2/f/{host}/a/b/blobs/{}", gen::digest(o.seed + i, 1000))).collect();
        let mut got = pulled.lock().unwrap().clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        let mut pushed = pushed.lock().unwrap().clone();
        pushed.sort();
        assert_eq!(
            pushed,
            want.iter().map(|p| p.rsplit('/').next().unwrap().to_string()).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn warm_pulls_repeat_one_blob_pulled_once_in_setup() {
        let (upstream, mirror, pushed, pulled) = upstream_and_mirror().await;
        let host = upstream_host(&upstream).unwrap();
        let o = RunOpts {
            url: mirror,
            upstream: Some(upstream),
            mirror_path: MirrorPath::Ns,
            workload: Workload::PullWarm,
            repo: "a/b".into(),
            size: 1000,
            count: Some(3),
            duration: None,
            ..opts()
        };
        let r = run(&o).await.unwrap();
        assert_eq!((r.total.kind.as_str(), r.total.requests, r.total.errors), ("pull-warm", 3, 0), "{r:?}");
        assert_eq!(r.total.bytes, 3000);
        let digest = gen::digest(WARM_SEED + 1000, 1000);
        assert_eq!(*pushed.lock().unwrap(), std::slice::from_ref(&digest));
        // The setup's pull and range probe, then the three timed pulls.
        let path = format!("/v2/a/b/blobs/{digest}?ns={host}");
        assert_eq!(*pulled.lock().unwrap(), vec![path; 5]);
    }

    #[tokio::test]
    async fn connection_errors_are_counted_not_fatal() {
        // Nothing listens on port 1: setup of a GET workload fails cleanly...
        let mut o = opts();
        o.workload = Workload::Catalog;
        let e = run(&o).await.unwrap_err();
        assert!(e.contains("setup failed"), "{e}");
        // ...and a push workload (whose setup is local) counts every failed operation.
        let mut o = opts();
        o.size = 1000;
        o.count = Some(5);
        o.duration = None;
        let r = run(&o).await.unwrap();
        assert_eq!(r.total.requests, 5);
        assert_eq!(r.total.errors, 5);
        assert!(r.errors.keys().all(|k| k.starts_with("connect error")), "{:?}", r.errors);
    }
}
