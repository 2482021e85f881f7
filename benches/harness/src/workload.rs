//! Workloads: their untimed setup, their timed operation, and the concurrent runner.

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
        }
    }

    /// Whether --size matters.
    pub fn sized(self) -> bool {
        matches!(self, Workload::PushMono | Workload::PushChunked | Workload::Pull | Workload::Mixed)
    }

    fn default_count(self) -> u64 {
        if self.sized() {
            20
        } else {
            2000
        }
    }
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunOpts {
    pub url: String,
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
    /// Blobs to push, cycled through: (seed, digest).
    pool: Vec<(u64, String)>,
    /// The blob to pull.
    blob: Option<String>,
    /// The digest of the manifest tagged `bench`.
    manifest: Option<String>,
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
            let size = o.size;
            let s2 = seeds.clone();
            let digests = tokio::task::spawn_blocking(move || gen::digests(&s2, size))
                .await
                .map_err(|e| format!("setup failed: {e}"))?;
            p.pool = seeds.into_iter().zip(digests).collect();
        }
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

/// Runs one workload: setup, then the timed operations on `concurrency` workers.
pub async fn run(o: &RunOpts) -> Result<Report, String> {
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

    fn opts() -> RunOpts {
        RunOpts {
            url: "http://127.0.0.1:1".into(),
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
