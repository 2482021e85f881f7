//! The `donjon` binary as users run it: start-up errors, `--dry-run`, crash and restart on the
//! same data directory, graceful shutdown, TLS with HTTP/2.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use donjon_test_support::server::{client, digest, send};

const BIN: &str = env!("CARGO_BIN_EXE_donjon");

struct Donjon {
    child: Child,
    addr: SocketAddr,
}

impl Donjon {
    fn start(data: &Path) -> Self {
        Self::start_with(data, &[])
    }

    fn start_with(data: &Path, extra: &[&str]) -> Self {
        let addr = donjon_test_support::server::free_addr();
        let child = Command::new(BIN)
            .args(["--bind", &addr.to_string(), "-d"])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let d = Self { child, addr };
        d.wait_ready();
        d
    }

    fn wait_ready(&self) {
        donjon_test_support::server::wait_listening(self.addr);
    }

    fn url(&self, p: &str) -> String {
        format!("http://{}{p}", self.addr)
    }

    fn sigterm(&self) {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "donjon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Donjon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dry_run_prints_settings() {
    let out =
        Command::new(BIN).args(["--dry-run", "--bind", "127.0.0.1:9999", "-d", "/srv/x"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("bind: 127.0.0.1:9999"), "{text}");
    assert!(text.contains("data_dir: /srv/x"), "{text}");
}

#[test]
fn bad_config_fails_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, "auth:\n  htpasswd: {realm: x, path: /x}\n").unwrap();
    let out = Command::new(BIN).arg("--config-file").arg(&cfg).arg("--dry-run").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth"));
}

#[test]
fn port_taken_is_a_clear_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["--bind", &addr.to_string(), "-d"]).arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already in use"), "{err}");
}

#[test]
fn unwritable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let out =
        Command::new(BIN).args(["--bind", "127.0.0.1:0", "-d"]).arg(file.join("data")).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not writable"), "{err}");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// kill -9 in the middle of a PATCH; restart on the same directory; the session resumes from
/// what reached the disk, nothing partial is visible, and everything committed before is there.
#[test]
fn crash_mid_push_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let d = digest(&data);
    let rt = rt();
    let c = client();
    let mut first = Donjon::start(dir.path());
    // something committed before the crash
    let committed = rt.block_on(send(
        &c,
        "POST",
        &first.url(&format!("/v2/crash/blobs/uploads/?digest={}", digest(b"before"))),
        &[],
        Bytes::from_static(b"before"),
    ));
    assert_eq!(committed.status, 201);
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(b"before"), "size": 6}, "layers": []})).unwrap();
    let r = rt.block_on(send(
        &c,
        "PUT",
        &first.url("/v2/crash/manifests/v1"),
        &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
        Bytes::from(manifest.clone()),
    ));
    assert_eq!(r.status, 201);

    let post = rt.block_on(send(&c, "POST", &first.url("/v2/crash/blobs/uploads/"), &[], Bytes::new()));
    let loc = post.header("location").to_string();
    // stream part of the body over a raw socket, then kill the server while it is receiving
    let mut tcp = TcpStream::connect(first.addr).unwrap();
    write!(
        tcp,
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Range: 0-{}\r\nContent-Length: {}\r\n\r\n",
        data.len() - 1,
        data.len()
    )
    .unwrap();
    tcp.write_all(&data[..5 * 1024 * 1024]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(tcp);

    let second = Donjon::start(dir.path());
    let status = rt.block_on(send(&c, "GET", &second.url(&loc), &[], Bytes::new()));
    assert_eq!(status.status, 204, "the session survived the crash");
    let range = status.header("range").to_string();
    let end: usize = range.split('-').nth(1).unwrap().parse().unwrap();
    let have = if end == 0 { 0 } else { end + 1 };
    assert!(have <= 5 * 1024 * 1024, "{range}");
    assert_eq!(
        rt.block_on(send(&c, "GET", &second.url(&format!("/v2/crash/blobs/{d}")), &[], Bytes::new())).status,
        404
    );
    let r = rt.block_on(send(
        &c,
        "PATCH",
        &second.url(&loc),
        &[("content-range", &format!("{have}-{}", data.len() - 1))],
        Bytes::copy_from_slice(&data[have..]),
    ));
    assert_eq!(r.status, 202, "{:?}", r.body);
    let r = rt.block_on(send(&c, "PUT", &second.url(&format!("{loc}?digest={d}")), &[], Bytes::new()));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let got = rt.block_on(send(&c, "GET", &second.url(&format!("/v2/crash/blobs/{d}")), &[], Bytes::new()));
    assert_eq!(got.body.len(), data.len());
    assert!(got.body == data);
    let m = rt.block_on(send(&c, "GET", &second.url("/v2/crash/manifests/v1"), &[], Bytes::new()));
    assert_eq!(m.body, manifest);
}

/// SIGTERM while a download is in flight: the download completes, then the process exits 0.
#[test]
fn sigterm_drains_transfers_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let data = vec![7u8; 32 * 1024 * 1024];
    let d = digest(&data);
    let rt = rt();
    let c = client();
    let mut server = Donjon::start(dir.path());
    let r = rt.block_on(send(
        &c,
        "POST",
        &server.url(&format!("/v2/drain/blobs/uploads/?digest={d}")),
        &[],
        Bytes::from(data.clone()),
    ));
    assert_eq!(r.status, 201);
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    write!(tcp, "GET /v2/drain/blobs/{d} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = tcp.read(&mut buf).unwrap();
    server.sigterm();
    std::thread::sleep(Duration::from_millis(200));
    // new connections are refused once shutdown began
    assert!(TcpStream::connect(server.addr).is_err());
    loop {
        let n = tcp.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got += n;
        std::thread::sleep(Duration::from_micros(50));
    }
    assert!(got > data.len(), "the whole body (plus headers) arrived: {got}");
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}

#[test]
fn tls_with_http2() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = donjon_test_support::server::self_signed(dir.path(), "localhost", "IP:127.0.0.1");
    let tls = format!("{},{}", cert.display(), key.display());
    let server = Donjon::start_with(&dir.path().join("data"), &["--tls", &tls]);
    let url = format!("https://{}/v2/", server.addr);
    let curl = |version: &str| {
        let out = Command::new("curl")
            .args(["-sS", version, "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--cacert"])
            .arg(&cert)
            .arg(&url)
            .output()
            .expect("curl is needed for this test");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    assert_eq!(curl("--http2"), "2 200");
    assert_eq!(curl("--http1.1"), "1.1 200");
}

#[test]
fn stale_uploads_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        "storage:\n  maintenance:\n    uploadpurging: {enabled: true, age: 1s, interval: 1s}\n",
    )
    .unwrap();
    let server = Donjon::start_with(&dir.path().join("data"), &["--config-file", cfg.to_str().unwrap()]);
    let rt = rt();
    let c = client();
    let post = rt.block_on(send(&c, "POST", &server.url("/v2/purge/blobs/uploads/"), &[], Bytes::new()));
    let loc = post.header("location").to_string();
    assert_eq!(rt.block_on(send(&c, "GET", &server.url(&loc), &[], Bytes::new())).status, 204);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = rt.block_on(send(&c, "GET", &server.url(&loc), &[], Bytes::new()));
        if r.status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the session was not purged");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn distribution_http_headers_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        "version: 0.1\nhttp:\n  addr: :5000\n  headers:\n    X-Content-Type-Options: [nosniff]\n",
    )
    .unwrap();
    let server = Donjon::start_with(&dir.path().join("data"), &["--config-file", cfg.to_str().unwrap()]);
    let r = rt().block_on(send(&client(), "GET", &server.url("/v2/"), &[], Bytes::new()));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-content-type-options"), "nosniff");
}

/// Starts donjon with stderr captured; returns it and the lines it has logged so far, up to and
/// including the start-up line.
fn start_logged(data: &Path, extra: &[&str]) -> (Child, SocketAddr, std::sync::mpsc::Receiver<String>) {
    let addr = donjon_test_support::server::free_addr();
    let mut child = Command::new(BIN)
        .args(["--bind", &addr.to_string(), "-d"])
        .arg(data)
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, addr, rx)
}

fn lines_until(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let mut lines = vec![];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            let done = l.contains(needle);
            lines.push(l);
            if done {
                return lines;
            }
        }
    }
    panic!("no log line with {needle:?}: {lines:?}");
}

#[test]
fn logs_to_a_pipe_have_no_colour_and_name_what_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, addr, rx) = start_logged(&data, &[]);
    let lines = lines_until(&rx, "serving");
    let _ = rt().block_on(send(&client(), "GET", &format!("http://{addr}/v2/"), &[], Bytes::new()));
    let access = lines_until(&rx, "/v2/");
    let _ = child.kill();
    let _ = child.wait();
    for l in lines.iter().chain(&access) {
        assert!(!l.contains('\x1b'), "an escape code in a log line written to a pipe: {l:?}");
    }
    let start = lines.last().unwrap();
    assert!(
        start.contains(&data.display().to_string()),
        "the start-up line names the data directory: {start}"
    );
}

#[test]
fn distribution_log_formatter_json_writes_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, "version: 0.1\nlog:\n  level: info\n  formatter: json\n").unwrap();
    let (mut child, addr, rx) =
        start_logged(&dir.path().join("data"), &["--config-file", cfg.to_str().unwrap()]);
    let mut lines = lines_until(&rx, "serving");
    let _ = rt().block_on(send(&client(), "GET", &format!("http://{addr}/v2/"), &[], Bytes::new()));
    lines.extend(lines_until(&rx, "/v2/"));
    let _ = child.kill();
    let _ = child.wait();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
    let access: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(access["path"], "/v2/", "the access line's fields are JSON fields: {access}");
}

#[test]
fn a_disabled_access_log_writes_no_request_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, "log:\n  accesslog:\n    disabled: true\n").unwrap();
    let (mut child, addr, rx) =
        start_logged(&dir.path().join("data"), &["--config-file", cfg.to_str().unwrap()]);
    lines_until(&rx, "serving");
    let r = rt().block_on(send(&client(), "GET", &format!("http://{addr}/v2/"), &[], Bytes::new()));
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().all(|l| !l.contains("/v2/")), "{rest:?}");
}

/// Trow's `--user`/`--password` (from a file) and Distribution's `auth.htpasswd` together: both
/// users log in, the signing key is made in the data directory, and `--dry-run` never prints
/// a password.
#[test]
fn auth_from_flags_and_from_an_htpasswd_file() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("carol:{}\n", bcrypt::hash("carol-pw", 4).unwrap())).unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, "flag-pw\n").unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, format!("auth:\n  htpasswd: {{realm: test, path: {}}}\n", htpasswd.display()))
        .unwrap();
    let password = format!("file://{}", pw.display());
    let flags = ["--config-file", cfg.to_str().unwrap(), "--user", "trow", "--password", &password];

    let out = Command::new(BIN).args(flags).arg("--dry-run").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("htpasswd") && !text.contains("flag-pw") && !text.contains("file://"), "{text}");

    let data = dir.path().join("data");
    let d = Donjon::start_with(&data, &flags);
    let rt = rt();
    rt.block_on(async {
        let c = client();
        let anon = send(&c, "GET", &d.url("/v2/"), &[], Bytes::new()).await;
        assert_eq!(anon.status, 401);
        assert!(
            anon.header("www-authenticate").starts_with("Bearer realm="),
            "{}",
            anon.header("www-authenticate")
        );
        for (user, pass) in [("trow", "flag-pw"), ("carol", "carol-pw")] {
            let basic = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            );
            let r = send(&c, "GET", &d.url("/v2/"), &[("authorization", &basic)], Bytes::new()).await;
            assert_eq!(r.status, 200, "{user}");
        }
    });
    use std::os::unix::fs::PermissionsExt as _;
    let key = data.join("auth/token-signing-key.pem");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
}

/// Distribution's `storage.maintenance.readonly`: pushes and deletes are refused with a message
/// saying why, pulls work; SIGHUP re-reads the file and turns it off (and on) without a restart.
#[test]
fn read_only_mode_turns_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    let write = |on: bool| {
        std::fs::write(&cfg, format!("storage:\n  maintenance:\n    readonly: {{enabled: {on}}}\n")).unwrap()
    };
    write(false);
    let server = Donjon::start_with(&dir.path().join("data"), &["--config-file", cfg.to_str().unwrap()]);
    let rt = rt();
    let c = client();
    let push = |path: &str, body: &'static [u8]| {
        rt.block_on(send(&c, "POST", &server.url(path), &[], Bytes::from_static(body)))
    };
    let d = digest(b"before");
    assert_eq!(push(&format!("/v2/ro/blobs/uploads/?digest={d}"), b"before").status, 201);
    let hup = |server: &Donjon| {
        let ok = Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    };
    let wait_for = |want: u16| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = push("/v2/ro/blobs/uploads/", b"");
            if r.status == want {
                return r;
            }
            assert!(Instant::now() < deadline, "still {} after SIGHUP", r.status);
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    write(true);
    hup(&server);
    let r = wait_for(405);
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert!(body.contains("UNSUPPORTED") && body.contains("read-only"), "{body}");
    let del = rt.block_on(send(&c, "DELETE", &server.url(&format!("/v2/ro/blobs/{d}")), &[], Bytes::new()));
    assert_eq!(del.status, 405);
    let get = rt.block_on(send(&c, "GET", &server.url(&format!("/v2/ro/blobs/{d}")), &[], Bytes::new()));
    assert_eq!(get.status, 200, "pulls work");
    assert_eq!(&get.body[..], b"before");
    // a configuration that no longer parses changes nothing
    std::fs::write(&cfg, "storage: [").unwrap();
    hup(&server);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(push("/v2/ro/blobs/uploads/", b"").status, 405);
    write(false);
    hup(&server);
    wait_for(202);
}

/// `storage.maintenance.gc` on a schedule: a deleted image's blobs go while the registry
/// serves, and what stays still pulls.
#[test]
fn garbage_collection_runs_on_a_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        "storage:\n  maintenance:\n    gc: {enabled: true, interval: 1s, grace: 1s, settle: 100ms, delete_untagged: true}\n",
    )
    .unwrap();
    let server = Donjon::start_with(&dir.path().join("data"), &["--config-file", cfg.to_str().unwrap()]);
    let rt = rt();
    let c = client();
    let push = |path: String, body: Vec<u8>, ct: &str| {
        rt.block_on(send(
            &c,
            if path.contains("manifests") { "PUT" } else { "POST" },
            &server.url(&path),
            &[("content-type", ct)],
            Bytes::from(body),
        ))
    };
    let image = |repo: &str, tag: &str, salt: &str| {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","salt":"{salt}"}}"#);
        let layer = format!("layer of {salt}");
        let (cd, ld) = (digest(config.as_bytes()), digest(layer.as_bytes()));
        assert_eq!(
            push(
                format!("/v2/{repo}/blobs/uploads/?digest={cd}"),
                config.clone().into_bytes(),
                "application/octet-stream"
            )
            .status,
            201
        );
        assert_eq!(
            push(
                format!("/v2/{repo}/blobs/uploads/?digest={ld}"),
                layer.clone().into_bytes(),
                "application/octet-stream"
            )
            .status,
            201
        );
        let m = donjon_test_support::server::image_manifest(&cd, config.len(), &ld, layer.len(), None);
        assert_eq!(
            push(format!("/v2/{repo}/manifests/{tag}"), m, donjon_test_support::server::OCI_MANIFEST).status,
            201
        );
        ld
    };
    let kept = image("sched/app", "v1", "kept");
    let gone = image("sched/app", "v2", "gone");
    // moving v2 leaves its first image untagged
    image("sched/app", "v2", "newer");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = rt.block_on(send(
            &c,
            "GET",
            &server.url(&format!("/v2/sched/app/blobs/{gone}")),
            &[],
            Bytes::new(),
        ));
        if r.status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the untagged image's layer was never collected");
        std::thread::sleep(Duration::from_millis(200));
    }
    let r =
        rt.block_on(send(&c, "GET", &server.url(&format!("/v2/sched/app/blobs/{kept}")), &[], Bytes::new()));
    assert_eq!(r.status, 200);
}

/// `/metrics` on the main listener: requests by route kind, method and status, bytes, store
/// operations by backend; with Distribution's `http.debug.addr`, on that listener only.
#[test]
fn metrics_are_scraped_from_the_main_listener_or_the_debug_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = Donjon::start(&dir.path().join("data"));
    let rt = rt();
    let c = client();
    let d = digest(b"measured");
    let push = rt.block_on(send(
        &c,
        "POST",
        &server.url(&format!("/v2/m/blobs/uploads/?digest={d}")),
        &[],
        Bytes::from_static(b"measured"),
    ));
    assert_eq!(push.status, 201);
    assert_eq!(
        rt.block_on(send(&c, "GET", &server.url(&format!("/v2/m/blobs/{d}")), &[], Bytes::new())).status,
        200
    );
    assert_eq!(
        rt.block_on(send(&c, "GET", &server.url("/v2/m/manifests/nope"), &[], Bytes::new())).status,
        404
    );
    let m = rt.block_on(send(&c, "GET", &server.url("/metrics"), &[], Bytes::new()));
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type").starts_with("application/openmetrics-text"),
        "{}",
        m.header("content-type")
    );
    let text = String::from_utf8_lossy(&m.body).to_string();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
    };
    assert_eq!(value(r#"donjon_http_requests_total{route="upload",method="POST",status="201"}"#), 1.0);
    assert_eq!(value(r#"donjon_http_requests_total{route="blob",method="GET",status="200"}"#), 1.0);
    assert_eq!(value(r#"donjon_http_requests_total{route="manifest",method="GET",status="404"}"#), 1.0);
    assert_eq!(value(r#"donjon_http_response_bytes_total{route="blob",method="GET"}"#), 8.0);
    assert_eq!(value(r#"donjon_http_request_bytes_total{route="upload",method="POST"}"#), 8.0);
    assert!(
        value(r#"donjon_store_operation_duration_seconds_count{backend="filesystem",op="blob_read"}"#) >= 1.0
    );
    assert!(text.contains("donjon_upload_requests_in_flight 0"), "{text}");
    assert!(!text.contains("repository"), "no label names a repository");
    drop(server);

    // http.debug.addr: there, and not on the main listener
    let debug = donjon_test_support::server::free_addr();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!("http:\n  debug:\n    addr: {debug}\n    prometheus: {{enabled: true, path: /prom}}\n"),
    )
    .unwrap();
    let server = Donjon::start_with(&dir.path().join("data2"), &["--config-file", cfg.to_str().unwrap()]);
    donjon_test_support::server::wait_listening(debug);
    assert_eq!(rt.block_on(send(&c, "GET", &server.url("/metrics"), &[], Bytes::new())).status, 404);
    assert_eq!(rt.block_on(send(&c, "GET", &server.url("/prom"), &[], Bytes::new())).status, 404);
    let m = rt.block_on(send(&c, "GET", &format!("http://{debug}/prom"), &[], Bytes::new()));
    assert_eq!(m.status, 200);
    assert!(String::from_utf8_lossy(&m.body).contains("# TYPE donjon_http_requests counter"));
}

/// `--version` names the version and the commit the binary was built from.
#[test]
fn version_names_the_commit() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let want = format!("donjon {} (", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&want), "{text}");
    let commit = text.trim_end().trim_end_matches(')').rsplit('(').next().unwrap().to_string();
    let head = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output();
    match env!("DONJON_COMMIT_SOURCE") {
        // Built in this checkout: its commit.
        "git" => assert_eq!(commit, String::from_utf8_lossy(&head.unwrap().stdout).trim(), "{text}"),
        "env" => assert_eq!(commit, env!("DONJON_COMMIT"), "{text}"),
        _ => assert_eq!(commit, "unknown", "{text}"),
    }
}

/// `donjon healthcheck` reads the server's own configuration: 0 while it serves (plain HTTP,
/// and TLS with the configured certificate), 1 naming the address when nothing answers or the
/// certificate is another one.
#[test]
fn healthcheck_asks_the_configured_address() {
    let dir = tempfile::tempdir().unwrap();
    let check = |args: &[&str]| {
        let out = Command::new(BIN).args(args).args(["healthcheck", "--timeout", "5s"]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let server = Donjon::start(&dir.path().join("plain"));
    let bind = server.addr.to_string();
    assert_eq!(check(&["--bind", &bind]).0, Some(0));
    // All interfaces: asked on loopback.
    let any = format!("0.0.0.0:{}", server.addr.port());
    assert_eq!(check(&["--bind", &any]).0, Some(0));
    drop(server);
    let (code, err) = check(&["--bind", &bind]);
    assert_eq!(code, Some(1));
    assert!(err.contains(&bind), "{err}");

    let (cert, key) =
        donjon_test_support::server::self_signed(dir.path(), "registry.example", "DNS:registry.example");
    let tls = format!("{},{}", cert.display(), key.display());
    let server = Donjon::start_with(&dir.path().join("tls"), &["--tls", &tls]);
    let bind = server.addr.to_string();
    // The certificate names neither 127.0.0.1 nor localhost: trusted because it is the one.
    assert_eq!(check(&["--bind", &bind, "--tls", &tls]), (Some(0), String::new()));
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (cert2, key2) =
        donjon_test_support::server::self_signed(&other, "registry.example", "DNS:registry.example");
    let (code, err) = check(&["--bind", &bind, "--tls", &format!("{},{}", cert2.display(), key2.display())]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not the configured one"), "{err}");
}

/// A data directory the user cannot write (Trow's volume owned by root, run as 333333): the
/// start stops with the path, the uid it runs as, the owner, and the fix. Needs root (to
/// switch user with `setpriv`); skipped otherwise.
#[test]
fn a_data_dir_owned_by_another_user_names_both_and_the_fix() {
    if !rustix::process::geteuid().is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and setpriv (util-linux)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // The tempdir itself is 0700: open it so that the other user reaches `data`.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=333333", "--regid=333333", "--clear-groups", BIN, "--bind", "127.0.0.1:0", "-d"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("data directory {} is not writable", data.display())), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains("runs as uid 333333 gid 333333"), "{err}");
    assert!(err.contains(&format!("{} is owned by uid 0 gid 0 with mode 755", data.display())), "{err}");
    assert!(err.contains("chown -R 333333:333333"), "{err}");
}

/// With no configuration, deletes are refused (Distribution's default): 405 `UNSUPPORTED`,
/// naming the key that allows them; `REGISTRY_STORAGE_DELETE_ENABLED=true` allows them.
#[tokio::test]
async fn deletes_are_off_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let c = donjon_test_support::server::client();
    let blob = b"a blob to delete";
    let d = donjon_test_support::server::digest(blob);
    let off = Donjon::start(&dir.path().join("off"));
    let r = donjon_test_support::server::send(
        &c,
        "POST",
        &off.url(&format!("/v2/a/blobs/uploads/?digest={d}")),
        &[],
        blob.to_vec().into(),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = donjon_test_support::server::send(
        &c,
        "DELETE",
        &off.url(&format!("/v2/a/blobs/{d}")),
        &[],
        Default::default(),
    )
    .await;
    assert_eq!(r.status, 405, "{:?}", r.body);
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("UNSUPPORTED") && body.contains("storage.delete.enabled"), "{body}");
    drop(off);

    let addr = donjon_test_support::server::free_addr();
    let mut child = Command::new(BIN)
        .args(["--bind", &addr.to_string(), "-d"])
        .arg(dir.path().join("on"))
        .env("REGISTRY_STORAGE_DELETE_ENABLED", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    donjon_test_support::server::wait_listening(addr);
    let url = |p: &str| format!("http://{addr}{p}");
    let r = donjon_test_support::server::send(
        &c,
        "POST",
        &url(&format!("/v2/a/blobs/uploads/?digest={d}")),
        &[],
        blob.to_vec().into(),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = donjon_test_support::server::send(
        &c,
        "DELETE",
        &url(&format!("/v2/a/blobs/{d}")),
        &[],
        Default::default(),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.status, 202, "{:?}", r.body);
}
