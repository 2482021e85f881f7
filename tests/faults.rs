//! Faults injected into the `donjon` binary: SIGKILL at random points of pushes (blobs
//! monolithic and chunked, manifests), on the filesystem and on S3 (Garage), checked after each
//! restart; and a full disk (a small tmpfs, mounted here when permitted) in the middle of
//! pushes, with recovery once space is freed.
//!
//! After every crash: each blob readable hashes to its digest, each tag resolves to a complete
//! manifest (its blobs readable and whole), each session the client knew is resumable (and
//! completes) or gone. `DONJON_FAULTS_ITERATIONS` sets the number of crashes (default 12 on the
//! filesystem, 5 on S3); the seed is printed, `DONJON_FAULTS_SEED` replays one.

use donjon_test_support::process::Process;
use donjon_test_support::s3server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use donjon_test_support::server::{client, digest, Resp, OCI_MANIFEST};

struct Server {
    process: Process,
    addr: SocketAddr,
}

impl Server {
    fn start(args: &[String]) -> Self {
        let addr = donjon_test_support::server::free_addr();
        let child = Command::new(env!("CARGO_BIN_EXE_donjon"))
            .args(["--bind", &addr.to_string()])
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        donjon_test_support::server::wait_listening(addr);
        Self { process: Process(child), addr }
    }

    fn url(&self, p: &str) -> String {
        if p.starts_with("http") {
            p.to_string()
        } else {
            format!("http://{}{p}", self.addr)
        }
    }

    fn kill(&mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
    }
}

type Client = donjon_test_support::server::HttpClient;

/// A request that may fail (the server is being killed), bounded in time.
async fn try_send(
    c: &Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Resp, String> {
    tokio::time::timeout(
        Duration::from_secs(20),
        donjon_test_support::server::try_send(c, method, url, headers, body),
    )
    .await
    .map_err(|_| "timed out".to_string())?
}

/// What the client tried, to check after the crash.
#[derive(Default)]
struct Tried {
    blobs: Vec<(String, Vec<u8>)>,
    sessions: Vec<(String, Vec<u8>)>,
    committed: Vec<(String, usize)>,
    tags: usize,
}

fn random_data(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    let n = rng.usize(1..max);
    let mut v = vec![0u8; n];
    rng.fill(&mut v);
    v
}

/// Pushes until a request fails: monolithic blobs, chunked sessions, manifests by tag.
async fn push_until_killed(s: &str, c: &Client, rng: &mut fastrand::Rng, tried: &mut Tried) {
    let repo = "faults/repo";
    loop {
        match rng.u8(0..4) {
            0 => {
                let data = random_data(rng, 1 << 20);
                let d = digest(&data);
                tried.blobs.push((d.clone(), data.clone()));
                let url = format!("{s}/v2/{repo}/blobs/uploads/?digest={d}");
                match try_send(c, "POST", &url, &[], Bytes::from(data.clone())).await {
                    Ok(r) if r.status == 201 => tried.committed.push((d, data.len())),
                    _ => return,
                }
            }
            1 => {
                let data = random_data(rng, 2 << 20);
                let d = digest(&data);
                tried.blobs.push((d.clone(), data.clone()));
                let Ok(r) =
                    try_send(c, "POST", &format!("{s}/v2/{repo}/blobs/uploads/"), &[], Bytes::new()).await
                else {
                    return;
                };
                let path = r.header("location").to_string();
                tried.sessions.push((path.clone(), data.clone()));
                let loc = format!("{s}{path}");
                for (i, chunk) in data.chunks(256 * 1024).enumerate() {
                    let start = i * 256 * 1024;
                    let range = format!("{start}-{}", start + chunk.len() - 1);
                    let r = try_send(
                        c,
                        "PATCH",
                        &loc,
                        &[("content-range", &range)],
                        Bytes::copy_from_slice(chunk),
                    )
                    .await;
                    if !matches!(r, Ok(ref r) if r.status == 202) {
                        return;
                    }
                }
                match try_send(c, "PUT", &format!("{loc}?digest={d}"), &[], Bytes::new()).await {
                    Ok(r) if r.status == 201 => tried.committed.push((d, data.len())),
                    _ => return,
                }
            }
            _ if tried.committed.len() >= 2 => {
                let i = rng.usize(0..tried.committed.len());
                let j = rng.usize(0..tried.committed.len());
                let (cfg, layer) = (&tried.committed[i], &tried.committed[j]);
                let m = donjon_test_support::server::image_manifest(&cfg.0, cfg.1, &layer.0, layer.1, None);
                tried.tags += 1;
                let url = format!("{s}/v2/{repo}/manifests/t{}", tried.tags);
                let ct = [("content-type", OCI_MANIFEST)];
                if !matches!(try_send(c, "PUT", &url, &ct, Bytes::from(m)).await, Ok(r) if r.status == 201) {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// The checks after a restart; panics with what is wrong.
async fn check_after_restart(s: &str, c: &Client, tried: &Tried) {
    let repo = "faults/repo";
    let get = |url: String| async move {
        try_send(c, "GET", &url, &[], Bytes::new()).await.expect("the restarted server answers")
    };
    for (d, data) in &tried.blobs {
        let r = get(format!("{s}/v2/{repo}/blobs/{d}")).await;
        match r.status.as_u16() {
            200 => assert!(r.body == data[..] && digest(&r.body) == *d, "blob {d} is torn"),
            404 => {}
            other => panic!("blob {d}: {other}"),
        }
    }
    let tags = get(format!("{s}/v2/{repo}/tags/list")).await;
    if tags.status == 200 {
        let list: serde_json::Value = serde_json::from_slice(&tags.body).unwrap();
        for t in list["tags"].as_array().into_iter().flatten() {
            let t = t.as_str().unwrap();
            let m = get(format!("{s}/v2/{repo}/manifests/{t}")).await;
            assert_eq!(m.status, 200, "tag {t} lists but does not resolve");
            assert_eq!(m.header("docker-content-digest"), digest(&m.body), "tag {t}: torn manifest");
            let v: serde_json::Value = serde_json::from_slice(&m.body).expect("a whole manifest");
            for desc in std::iter::once(&v["config"]).chain(v["layers"].as_array().into_iter().flatten()) {
                let d = desc["digest"].as_str().unwrap();
                let b = get(format!("{s}/v2/{repo}/blobs/{d}")).await;
                assert_eq!(b.status, 200, "tag {t} references {d}, which is gone");
                assert_eq!(digest(&b.body), d, "tag {t}: blob {d} is torn");
            }
        }
    }
    for (path, data) in &tried.sessions {
        let loc = &format!("{s}{path}");
        let r = get(loc.clone()).await;
        match r.status.as_u16() {
            404 => {}
            204 => {
                // Resumable: finish it from where it says it is.
                let end: usize = r.header("range").split('-').nth(1).unwrap().parse().unwrap();
                let have = if end == 0 { 0 } else { end + 1 };
                assert!(have <= data.len(), "the session holds more than was sent");
                let d = digest(data);
                if have < data.len() {
                    let range = format!("{have}-{}", data.len() - 1);
                    let r = try_send(
                        c,
                        "PATCH",
                        loc,
                        &[("content-range", &range)],
                        Bytes::copy_from_slice(&data[have..]),
                    )
                    .await
                    .unwrap();
                    assert_eq!(r.status, 202, "resuming {loc} at {have}: {:?}", r.body);
                }
                let r = try_send(c, "PUT", &format!("{loc}?digest={d}"), &[], Bytes::new()).await.unwrap();
                assert_eq!(r.status, 201, "completing {loc}: {:?}", String::from_utf8_lossy(&r.body));
                let b = get(format!("{s}/v2/{repo}/blobs/{d}")).await;
                assert!(b.body == data[..], "the resumed blob is whole");
            }
            other => panic!("session {loc}: {other}"),
        }
    }
}

fn iterations(default: usize) -> usize {
    std::env::var("DONJON_FAULTS_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn kill_loop(args: Vec<String>, n: usize) {
    let seed = std::env::var("DONJON_FAULTS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("faults: seed {seed} (DONJON_FAULTS_SEED={seed} replays it), {n} crashes");
    let mut rng = fastrand::Rng::with_seed(seed);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let c: Client = client();
    let (mut committed, mut tags) = (vec![], 0);
    for i in 0..n {
        let mut server = Server::start(&args);
        let s = format!("http://{}", server.addr);
        // Blobs committed in earlier rounds stay: manifests may reference them.
        let mut tried = Tried { committed: std::mem::take(&mut committed), tags, ..Tried::default() };
        let delay = Duration::from_millis(rng.u64(30..600));
        let pid = server.process.id();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        });
        let mut prng = fastrand::Rng::with_seed(rng.u64(..));
        rt.block_on(async {
            let push = push_until_killed(&s, &c, &mut prng, &mut tried);
            let _ = tokio::time::timeout(Duration::from_secs(30), push).await;
        });
        killer.join().unwrap();
        server.kill();
        let restarted = Server::start(&args);
        let s = format!("http://{}", restarted.addr);
        eprintln!(
            "faults: crash {i} after {delay:?}: {} blobs tried, {} committed in all, {} sessions, {} tags in all",
            tried.blobs.len(),
            tried.committed.len(),
            tried.sessions.len(),
            tried.tags
        );
        rt.block_on(check_after_restart(&s, &c, &tried));
        committed = tried.committed;
        tags = tried.tags;
    }
}

#[test]
fn sigkill_mid_push_on_the_filesystem_leaves_old_or_new_state() {
    let dir = tempfile::tempdir().unwrap();
    let args = vec!["-d".to_string(), dir.path().join("data").display().to_string()];
    kill_loop(args, iterations(12));
}

/// A configuration file in `dir` for `g`'s bucket under `root` (redirects off: the test client
/// reads blobs from donjon), with `extra` lines of `storage.s3`.
fn s3_config(g: &s3server::S3Server, dir: &Path, root: &str, extra: &str) -> PathBuf {
    let cfg = dir.join("config.yml");
    let yaml = format!(
        "storage:\n  s3:\n    bucket: {}\n    region: {}\n    regionendpoint: {}\n    accesskey: {}\n    secretkey: {}\n    rootdirectory: {root}\n    forcepathstyle: true\n{extra}  redirect:\n    disable: true\n",
        g.bucket(),
        g.region(),
        g.endpoint(),
        g.access_key(),
        g.secret_key()
    );
    std::fs::write(&cfg, yaml).unwrap();
    cfg
}

#[test]
fn sigkill_mid_push_on_s3_leaves_old_or_new_state() {
    let Some(g) = s3server::S3Server::start("faults") else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = s3_config(&g, dir.path(), "/faults", "    conditionalwrites: false\n");
    kill_loop(vec!["--config-file".into(), cfg.display().to_string()], iterations(5));
}

/// The S3 gateway killed under a running donjon: reads and pushes answer 503 `UNAVAILABLE`
/// within seconds, saying the storage cannot be reached; an upload session started before is
/// resumed once the gateway is back, and the same process (no restart) serves everything again.
#[test]
fn the_s3_gateway_down_is_a_503_and_donjon_recovers_without_a_restart() {
    let Some(mut g) = s3server::S3Server::start("gateway") else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = s3_config(&g, dir.path(), "/gateway", "");
    let name = g.name();
    let s3server::S3Server::SeaweedFs(cluster) = &mut g else {
        eprintln!("skipped: needs SeaweedFS (its gateway is a process of its own), not {name}");
        return;
    };
    let server = Server::start(&["--config-file".into(), cfg.display().to_string()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = client();
    rt.block_on(async {
        let send =
            |method: &'static str, path: String, headers: Vec<(&'static str, String)>, body: Vec<u8>| {
                let (c, url) = (c.clone(), server.url(&path));
                async move {
                    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    try_send(&c, method, &url, &h, Bytes::from(body)).await.unwrap()
                }
            };
        let a = b"pushed before the gateway died".to_vec();
        let r =
            send("POST", format!("/v2/gw/app/blobs/uploads/?digest={}", digest(&a)), vec![], a.clone()).await;
        assert_eq!(r.status, 201);
        let r = send("POST", "/v2/gw/app/blobs/uploads/".into(), vec![], vec![]).await;
        assert_eq!(r.status, 202);
        let session = r.header("location").to_string();
        let (first, second) = (vec![1u8; 1000], vec![2u8; 500]);
        let r = send("PATCH", session.clone(), vec![("content-range", "0-999".into())], first.clone()).await;
        assert_eq!(r.status, 202);
        let session = r.header("location").to_string();

        cluster.kill_gateway();
        for (method, path, body) in [
            ("GET", format!("/v2/gw/app/blobs/{}", digest(&a)), vec![]),
            ("POST", format!("/v2/gw/app/blobs/uploads/?digest={}", digest(b"new")), b"new".to_vec()),
        ] {
            let started = std::time::Instant::now();
            let r = send(method, path.clone(), vec![], body).await;
            assert_eq!(
                (r.status.as_u16(), r.code()),
                (503, "UNAVAILABLE".into()),
                "{method} {path}: {:?}",
                r.body
            );
            let message = r.json()["errors"][0]["message"].as_str().unwrap_or_default().to_string();
            assert!(message.contains("cannot reach its storage"), "{message}");
            assert!(!r.header("retry-after").is_empty(), "a Retry-After");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "answered in {:?}",
                started.elapsed()
            );
        }
        let r = send("GET", "/healthz".into(), vec![], vec![]).await;
        println!("/healthz with the gateway down: {}", r.status);

        cluster.start_gateway();
        let r = send("GET", format!("/v2/gw/app/blobs/{}", digest(&a)), vec![], vec![]).await;
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &a[..]), "served again, without a restart");
        let r = send("PATCH", session, vec![("content-range", "1000-1499".into())], second.clone()).await;
        assert_eq!(r.status, 202, "the session resumes: {:?}", r.body);
        let whole: Vec<u8> = first.iter().chain(&second).copied().collect();
        let put = format!(
            "{}{}digest={}",
            r.header("location"),
            if r.header("location").contains('?') { "&" } else { "?" },
            digest(&whole)
        );
        let r = send("PUT", put, vec![], vec![]).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let r = send("GET", format!("/v2/gw/app/blobs/{}", digest(&whole)), vec![], vec![]).await;
        assert_eq!(digest(&r.body), digest(&whole));
    });
    drop(server);
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the filesystem at `dir` with a file, leaving about `leave` bytes free.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 256 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave)).unwrap();
    path
}

fn sessions_on_disk(data: &Path, repo: &str) -> usize {
    std::fs::read_dir(data.join(format!("docker/registry/v2/repositories/{repo}/_uploads")))
        .map_or(0, |d| d.count())
}

#[test]
fn a_full_disk_is_a_clear_error_that_loses_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(_tmpfs) = Tmpfs::mount(&mnt, "24m") else {
        assert!(
            std::env::var("DONJON_FAULTS").as_deref() != Ok("1"),
            "DONJON_FAULTS=1 but tmpfs cannot be mounted"
        );
        eprintln!("skipping: cannot mount a tmpfs here (needs root); DONJON_FAULTS=1 makes this a failure");
        return;
    };
    let data = mnt.join("data");
    let server = Server::start(&["-d".into(), data.display().to_string()]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let c: Client = client();
    let s = |p: &str| server.url(p);
    rt.block_on(async {
        let a: Vec<u8> = (0..2 << 20).map(|i: u32| (i % 249) as u8).collect();
        let da = digest(&a);
        let r = try_send(
            &c,
            "POST",
            &s(&format!("/v2/full/blobs/uploads/?digest={da}")),
            &[],
            Bytes::from(a.clone()),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 201);
        let filler = fill(&mnt, 1 << 20);

        // A monolithic push larger than what is left: a clear error, nothing visible, no session.
        let b: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 241) as u8).collect();
        let db = digest(&b);
        let r = try_send(
            &c,
            "POST",
            &s(&format!("/v2/full/blobs/uploads/?digest={db}")),
            &[],
            Bytes::from(b.clone()),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 507, "{}", String::from_utf8_lossy(&r.body));
        assert!(String::from_utf8_lossy(&r.body).contains("full"), "the error says why");
        assert_eq!(
            try_send(&c, "GET", &s(&format!("/v2/full/blobs/{db}")), &[], Bytes::new()).await.unwrap().status,
            404
        );
        assert_eq!(sessions_on_disk(&data, "full"), 0, "no session is left behind");

        // A chunked push: the chunk that does not fit fails; the session keeps what arrived.
        let r = try_send(&c, "POST", &s("/v2/full/blobs/uploads/"), &[], Bytes::new()).await.unwrap();
        assert_eq!(r.status, 202);
        let loc = r.header("location");
        let range = format!("0-{}", b.len() - 1);
        let r = try_send(&c, "PATCH", &s(&loc), &[("content-range", &range)], Bytes::from(b.clone()))
            .await
            .unwrap();
        assert_eq!(r.status, 507);

        // The disk entirely full: starting a session fails, and leaves no folder behind.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&filler)
            .map(|f| {
                use std::io::Write;
                let mut f = f;
                while f.write_all(&[0u8; 4096]).is_ok() {}
            })
            .unwrap();
        let before = sessions_on_disk(&data, "full");
        let r = try_send(&c, "POST", &s("/v2/full/blobs/uploads/"), &[], Bytes::new()).await.unwrap();
        assert!(r.status.is_server_error(), "{}", r.status);
        assert_eq!(sessions_on_disk(&data, "full"), before, "the failed start left a session folder");

        // Space comes back: the session resumes from what it holds, and new pushes work.
        std::fs::remove_file(&filler).unwrap();
        let st = try_send(&c, "GET", &s(&loc), &[], Bytes::new()).await.unwrap();
        assert_eq!(st.status, 204, "the session survived the full disk");
        let end: usize = st.header("range").split('-').nth(1).unwrap().parse().unwrap();
        let have = if end == 0 { 0 } else { end + 1 };
        let range = format!("{have}-{}", b.len() - 1);
        let r =
            try_send(&c, "PATCH", &s(&loc), &[("content-range", &range)], Bytes::copy_from_slice(&b[have..]))
                .await
                .unwrap();
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        let r = try_send(&c, "PUT", &s(&format!("{loc}?digest={db}")), &[], Bytes::new()).await.unwrap();
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        for (d, bytes) in [(&da, &a), (&db, &b)] {
            let g = try_send(&c, "GET", &s(&format!("/v2/full/blobs/{d}")), &[], Bytes::new()).await.unwrap();
            assert!(g.status == 200 && g.body == bytes[..], "{d} is whole");
        }
    });
    drop(server);
}
