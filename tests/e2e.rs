//! End-to-end tests with real registry clients: skopeo, containerd's `ctr`, podman, buildah and
//! docker, each against its own `donjon` binary on a free 127.0.0.1 port with a temporary data
//! directory.
//!
//! They run only with `DONJON_E2E=1` (otherwise each test prints "skipped: set DONJON_E2E=1" and
//! passes); with it, a missing tool is a failure. Install the tools with `.ci/e2e-deps.sh`
//! (Debian 12, root), then:
//!
//! ```text
//! DONJON_E2E=1 cargo test --test e2e -- --test-threads=2 --nocapture
//! ```
//!
//! The containerd, podman/buildah and docker suites start daemons as root and run containers,
//! each in its own temporary directories (roots, state, sockets); they take a global lock so
//! that at most one of them runs at a time. Every external command has a timeout and is printed
//! before it runs; every daemon is stopped by its PID when its guard is dropped.
//!
//! The migration tests (`migration_*`) hand one storage back and forth between donjon and CNCF
//! Distribution (`docker-registry`); `replicas_behind_round_robin` runs two donjons on one bucket
//! behind haproxy. The S3 ones need Garage (`.ci/s3-deps.sh` installs it with haproxy,
//! docker-registry and curl); without it they are skipped, unless `DONJON_S3=1`.
//!
//! Knobs: `DONJON_E2E_LARGE_MB` (size of the large layer, default 64),
//! `DONJON_E2E_KEEP=1` (keep the temporary directories, printing where they are).

mod fixtures;
use donjon_test_support::garage;
use donjon_test_support::net::free_port;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The default limit of one external command.
const TIMEOUT: Duration = Duration::from_secs(120);
/// The limit for commands moving the large image.
const LARGE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a daemon may take to come up.
const STARTUP: Duration = Duration::from_secs(60);

/// Serializes the suites that start container daemons (containerd, dockerd, podman).
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy_lock() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn e2e_enabled() -> bool {
    std::env::var("DONJON_E2E").as_deref() == Ok("1")
}

macro_rules! require_e2e {
    () => {
        if !e2e_enabled() {
            println!("skipped: set DONJON_E2E=1");
            return;
        }
    };
}

// =============================================================================================
// tools and commands

/// The extra directories searched for tools (and given to daemons, which look up runc, shims
/// and conmon on PATH): root's sbin directories may be missing from a CI environment's PATH.
const EXTRA_PATH: &[&str] = &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

fn search_path() -> String {
    let mut p = std::env::var("PATH").unwrap_or_default();
    for d in EXTRA_PATH {
        if !p.split(':').any(|x| x == *d) {
            if !p.is_empty() {
                p.push(':');
            }
            p.push_str(d);
        }
    }
    p
}

/// The absolute path of `name`, or a test failure telling how to install it.
fn tool(name: &str) -> PathBuf {
    for dir in search_path().split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("DONJON_E2E=1 but the tool `{name}` is not installed (run .ci/e2e-deps.sh as root)");
}

/// Debian's docker CLI (matching Debian's dockerd) when present, else the first on PATH.
fn docker_cli() -> PathBuf {
    let debian = Path::new("/usr/bin/docker");
    if debian.is_file() {
        debian.to_path_buf()
    } else {
        tool("docker")
    }
}

/// A `Command` for `tool(name)` with the extended PATH.
fn cmd(name: &str) -> Command {
    cmd_path(&tool(name))
}

fn cmd_path(program: &Path) -> Command {
    let mut c = Command::new(program);
    c.env("PATH", search_path());
    c
}

/// The outcome of one external command.
struct Out {
    /// `None` when it was killed at its timeout.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    line: String,
    elapsed: Duration,
}

impl Out {
    fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn describe(&self) -> String {
        let status = match self.status {
            None => "TIMED OUT (killed)".to_string(),
            Some(s) => format!("{s}"),
        };
        format!(
            "command: {}\nstatus: {status} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.line,
            self.elapsed,
            tail(&self.stdout, 6000),
            tail(&self.stderr, 6000)
        )
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

fn command_line(c: &Command) -> String {
    let mut s = String::new();
    for (k, v) in c.get_envs() {
        // PATH is only extended; removed variables are not worth showing.
        if let (Some(v), false) = (v, k == "PATH") {
            let _ = write!(s, "{}={} ", k.to_string_lossy(), shell_quote(v));
        }
    }
    s.push_str(&shell_quote(c.get_program()));
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s
}

fn shell_quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c)) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Sends `signal` (e.g. "TERM") to one process, by PID.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Sends SIGKILL to a process group we created (the command's own group, by its PID).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `c` to completion or `timeout`, printing its command line first and its duration after.
/// A command still running at its timeout is killed (its whole process group).
fn run_with(c: &mut Command, timeout: Duration) -> Out {
    let line = command_line(c);
    println!("$ {line}");
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let start = Instant::now();
    let mut child = c.spawn().unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
    let (tx_out, rx_out) = mpsc::channel();
    let (tx_err, rx_err) = mpsc::channel();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        let _ = tx_out.send(b);
    });
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        let _ = tx_err.send(b);
    });
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for `{line}`: {e}"),
        }
    };
    // A daemonized grandchild may keep the pipes open: don't wait for it forever.
    let grab = |rx: mpsc::Receiver<Vec<u8>>| {
        String::from_utf8_lossy(&rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default()).into_owned()
    };
    let out = Out { status, stdout: grab(rx_out), stderr: grab(rx_err), line, elapsed: start.elapsed() };
    println!(
        "  -> {} in {:.1?}",
        match out.status {
            None => "TIMED OUT".to_string(),
            Some(s) =>
                s.code().map(|c| format!("exit {c}")).unwrap_or_else(|| format!("signal {:?}", s.signal())),
        },
        out.elapsed
    );
    out
}

/// Whether `c` succeeds within 10 s, silently (for readiness polls).
fn probe(c: &mut Command) -> bool {
    let Ok(mut child) = c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn() else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// Runs `c` with the default timeout and requires success; returns its stdout.
fn ok(c: &mut Command) -> String {
    ok_with(c, TIMEOUT)
}

fn ok_with(c: &mut Command, timeout: Duration) -> String {
    let out = run_with(c, timeout);
    if !out.success() {
        panic!("command failed\n{}", out.describe());
    }
    out.stdout
}

/// Runs `c` with the default timeout and requires that it fails (not by timing out).
fn fails(c: &mut Command) -> Out {
    let out = run_with(c, TIMEOUT);
    assert!(out.status.is_some(), "expected a failure, got a timeout\n{}", out.describe());
    assert!(!out.success(), "expected a failure\n{}", out.describe());
    out
}

// =============================================================================================
// temporary directories and daemons

/// A temporary directory, kept with `DONJON_E2E_KEEP=1`.
struct Scratch {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    fn new(label: &str) -> Self {
        // Short paths: unix socket paths must stay under 108 bytes.
        let dir =
            tempfile::Builder::new().prefix(&format!("dj-{label}-")).tempdir_in("/tmp").expect("tempdir");
        let path = dir.path().to_path_buf();
        println!("[{label}] scratch directory {}", path.display());
        Self { dir: Some(dir), path }
    }

    fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    /// `join(p)`, created.
    fn dir(&self, p: &str) -> PathBuf {
        let d = self.path.join(p);
        fs::create_dir_all(&d).expect("mkdir");
        d
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var("DONJON_E2E_KEEP").as_deref() == Ok("1") {
            if let Some(d) = self.dir.take() {
                println!("keeping {}", d.keep().display());
            }
        }
    }
}

/// A background process stopped by its PID (SIGTERM, then SIGKILL after a grace period) when
/// dropped. Its stdout and stderr go to `log`.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
    grace: Duration,
}

impl Daemon {
    fn spawn(name: &str, c: &mut Command, log: &Path) -> Self {
        let line = command_line(c);
        println!("$ {line} &   # log: {}", log.display());
        let f = fs::File::create(log).expect("log file");
        c.stdin(Stdio::null()).stdout(f.try_clone().expect("log file")).stderr(f).process_group(0);
        let child = c.spawn().unwrap_or_else(|e| panic!("cannot start {name} (`{line}`): {e}"));
        println!("  -> {name} pid {}", child.id());
        Self { name: name.to_string(), child, log: log.to_path_buf(), grace: Duration::from_secs(20) }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let s = fs::read_to_string(&self.log).unwrap_or_default();
        tail(&s, 8000).to_string()
    }

    /// SIGTERM by PID; waits up to the grace period, then SIGKILL. Returns the exit status.
    fn stop(&mut self) -> ExitStatus {
        if let Ok(Some(s)) = self.child.try_wait() {
            return s;
        }
        println!("stopping {} (pid {}) with SIGTERM", self.name, self.pid());
        signal(self.pid(), "TERM");
        let deadline = Instant::now() + self.grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return s,
                Ok(None) if Instant::now() >= deadline => {
                    println!(
                        "{} (pid {}) ignored SIGTERM for {:?}: SIGKILL",
                        self.name,
                        self.pid(),
                        self.grace
                    );
                    let _ = self.child.kill();
                    return self.child.wait().expect("wait");
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("waiting for {}: {e}", self.name),
            }
        }
    }

    /// Waits until `ready()` holds, checking the process stays alive.
    fn wait_until(&mut self, what: &str, ready: impl FnMut() -> bool) {
        if let Err(e) = self.wait_ready(what, ready) {
            panic!("{e}");
        }
    }

    /// [`wait_until`](Self::wait_until), returning the failure (with the log) instead.
    fn wait_ready(&mut self, what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited early ({s}); log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                ));
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{} not {what} after {STARTUP:?}; log:\n{}", self.name, self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `donjon` binary serving `data` on 127.0.0.1.
struct Donjon {
    daemon: Daemon,
    port: u16,
    data: PathBuf,
}

impl Donjon {
    fn start(scratch: &Scratch) -> Self {
        Self::start_with(scratch, None)
    }

    /// On a free port (retried should another process take the port between our probe and
    /// donjon's bind), with data in `scratch/data`; TLS with `tls = Some((cert, key))`.
    fn start_with(scratch: &Scratch, tls: Option<(&Path, &Path)>) -> Self {
        let data = scratch.dir("data");
        let log = scratch.join("donjon.log");
        let mut attempt = 1;
        loop {
            match Self::try_start(&data, free_port(), &log, tls) {
                Ok(d) => return d,
                Err(e) if attempt < 3 && e.contains("in use") => {
                    println!("donjon could not bind (attempt {attempt}), trying another port");
                    attempt += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// On `port` (plain HTTP), e.g. to restart on the same data directory and port.
    fn start_on(data: &Path, port: u16, log: &Path) -> Self {
        Self::try_start(data, port, log, None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start(data: &Path, port: u16, log: &Path, tls: Option<(&Path, &Path)>) -> Result<Self, String> {
        Self::try_start_full(Some(data), port, log, tls, None)
    }

    /// With `--config-file config` (e.g. a Distribution config.yml: `http.addr` is overridden by
    /// `--bind`), on a free port (retried like [`start_with`](Self::start_with)). Without
    /// `data`, no `-d`: the data directory comes from the file (`storage.filesystem`).
    fn start_config(data: Option<&Path>, config: &Path, log: &Path) -> Self {
        let mut attempt = 1;
        loop {
            match Self::try_start_full(data, free_port(), log, None, Some(config)) {
                Ok(d) => return d,
                Err(e) if attempt < 3 && e.contains("in use") => {
                    println!("donjon could not bind (attempt {attempt}), trying another port");
                    attempt += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn try_start_full(
        data: Option<&Path>,
        port: u16,
        log: &Path,
        tls: Option<(&Path, &Path)>,
        config: Option<&Path>,
    ) -> Result<Self, String> {
        let mut c = Command::new(env!("CARGO_BIN_EXE_donjon"));
        c.arg("--bind").arg(format!("127.0.0.1:{port}"));
        if let Some(data) = data {
            c.arg("-d").arg(data);
        }
        if let Some(config) = config {
            c.arg("--config-file").arg(config);
        }
        if let Some((cert, key)) = tls {
            c.arg("--tls").arg(format!("{},{}", cert.display(), key.display()));
        }
        // Configuration from the environment would change what is tested.
        for (k, _) in std::env::vars() {
            if k.starts_with("REGISTRY_") || k.starts_with("DONJON_") || k == "RUST_LOG" {
                c.env_remove(k);
            }
        }
        c.env("RUST_LOG", "info").env("NO_COLOR", "1");
        let mut daemon = Daemon::spawn("donjon", &mut c, log);
        daemon.grace = Duration::from_secs(15);
        let addr = format!("127.0.0.1:{port}");
        if tls.is_some() {
            // The raw client speaks no TLS: the listener accepting connections is enough.
            daemon.wait_ready("listening", || TcpStream::connect(&addr).is_ok())?;
        } else {
            daemon.wait_ready("healthy", || {
                http(&addr, "GET", "/healthz", &[]).is_ok_and(|r| r.status == 200)
            })?;
        }
        Ok(Self { daemon, port, data: data.map(Path::to_path_buf).unwrap_or_default() })
    }

    /// `127.0.0.1:PORT`
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `docker://127.0.0.1:PORT/<repo_ref>`
    fn docker(&self, repo_ref: &str) -> String {
        format!("docker://{}/{repo_ref}", self.host())
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http(&self.host(), "GET", path, headers).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Stops gracefully (SIGTERM) and requires a clean exit.
    fn stop(mut self) -> PathBuf {
        let s = self.daemon.stop();
        assert!(s.success(), "donjon did not exit cleanly on SIGTERM: {s}; log:\n{}", self.daemon.log_tail());
        self.data.clone()
    }
}

// =============================================================================================
// raw HTTP/1.1

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One request over a fresh connection (`Connection: close`); understands Content-Length,
/// chunked and read-to-close bodies.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<HttpResponse> {
    http_send(addr, method, path, headers, None)
}

/// [`http`] with a request body (sent with its `Content-Length`) when `body` is given.
fn http_send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: donjon-e2e\r\n"
    );
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    if let Some(b) = body {
        let _ = write!(req, "Content-Length: {}\r\n", b.len());
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    if let Some(b) = body {
        s.write_all(b)?;
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 =
        status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let body = if method == "HEAD" {
        Vec::new()
    } else if chunked {
        let mut body = Vec::new();
        let mut r = rest;
        loop {
            let eol = r.windows(2).position(|w| w == b"\r\n").ok_or_else(|| bad("bad chunk"))?;
            let size_str = String::from_utf8_lossy(&r[..eol]);
            let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            r = &r[eol + 2..];
            if size == 0 {
                break;
            }
            if r.len() < size + 2 {
                return Err(bad("short chunk"));
            }
            body.extend_from_slice(&r[..size]);
            r = &r[size + 2..];
        }
        body
    } else if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
    {
        let len: usize = len;
        if rest.len() < len {
            return Err(bad("short body"));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse { status, headers, body })
}

// =============================================================================================
// skopeo helpers

fn skopeo_policy(scratch: &Scratch) -> PathBuf {
    let p = scratch.join("policy.json");
    if !p.exists() {
        fs::write(&p, br#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    }
    p
}

/// An empty credentials file in `dir` (podman insists that REGISTRY_AUTH_FILE exists).
fn auth_file(dir: &Path) -> PathBuf {
    let p = dir.join("auth.json");
    if !p.exists() {
        fs::write(&p, br#"{"auths":{}}"#).unwrap();
    }
    p
}

/// `skopeo` with our own signature policy and an empty registries configuration.
fn skopeo(scratch: &Scratch) -> Command {
    let mut c = cmd("skopeo");
    let reg = scratch.join("registries.conf");
    if !reg.exists() {
        fs::write(&reg, "unqualified-search-registries = []\n").unwrap();
    }
    c.env("CONTAINERS_REGISTRIES_CONF", &reg);
    c.env("REGISTRY_AUTH_FILE", auth_file(&scratch.path));
    c.arg("--policy").arg(skopeo_policy(scratch));
    c
}

/// `skopeo copy [extra] SRC DST` with TLS verification off on both sides.
fn skopeo_copy(scratch: &Scratch, extra: &[&str], src: &str, dst: &str) -> String {
    skopeo_copy_with(scratch, extra, src, dst, TIMEOUT)
}

fn skopeo_copy_with(scratch: &Scratch, extra: &[&str], src: &str, dst: &str, timeout: Duration) -> String {
    let mut c = skopeo(scratch);
    c.args(["copy", "--retry-times", "0"]);
    if src.starts_with("docker://") {
        c.arg("--src-tls-verify=false");
    }
    if dst.starts_with("docker://") {
        c.arg("--dest-tls-verify=false");
    }
    c.args(extra).arg(src).arg(dst);
    ok_with(&mut c, timeout)
}

/// `skopeo inspect --raw`: the manifest bytes as served.
fn skopeo_raw(scratch: &Scratch, image: &str) -> Vec<u8> {
    let mut c = skopeo(scratch);
    c.args(["inspect", "--raw", "--retry-times", "0"]);
    if image.starts_with("docker://") {
        c.arg("--tls-verify=false");
    }
    c.arg(image);
    ok(&mut c).into_bytes()
}

/// The digest of the manifest `skopeo inspect --raw` prints.
fn skopeo_raw_digest(scratch: &Scratch, image: &str) -> String {
    format!("sha256:{}", fixtures::sha256_hex(&skopeo_raw(scratch, image)))
}

/// The digest the layout at `dir` names `tag` in its index.json.
fn layout_digest(dir: &Path, tag: &str) -> String {
    let index: Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).expect("index.json")).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}", dir.display()))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The large layer's size in bytes.
fn large_size() -> u64 {
    std::env::var("DONJON_E2E_LARGE_MB").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(64) << 20
}

fn file_sha256(path: &Path) -> String {
    use sha2::{Digest as _, Sha256};
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

// =============================================================================================
// fixtures sanity (always runs: pure Rust)

#[test]
fn fixtures_are_deterministic_and_well_formed() {
    assert_eq!(fixtures::crc32(b"123456789"), 0xCBF4_3926);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let la = fixtures::OciLayout::create(a.path()).unwrap();
    let lb = fixtures::OciLayout::create(b.path()).unwrap();
    let ia = la.tiny_arm64_image().unwrap();
    let ib = lb.tiny_arm64_image().unwrap();
    assert_eq!(ia.manifest, ib.manifest);
    let ga = la.large_image(100_000, 7, false).unwrap();
    let gb = lb.large_image(100_000, 7, false).unwrap();
    assert_eq!(ga.manifest, gb.manifest);
    // The streamed gzip is the in-memory one, whatever the write sizes.
    let za = la.large_image(200_000, 7, true).unwrap();
    let t = lb.large_image(200_000, 7, false).unwrap();
    let tar = fs::read(lb.blob_path(&t.layers[0].digest)).unwrap();
    assert_eq!(format!("sha256:{}", fixtures::sha256_hex(&fixtures::gzip_stored(&tar))), za.layers[0].digest);
    assert_eq!(za.diff_ids[0], format!("sha256:{}", fixtures::sha256_hex(&tar)));
    // gzip(1) reads it back.
    if let Ok(out) = Command::new("gzip").arg("-dc").arg(la.blob_path(&za.layers[0].digest)).output() {
        assert!(out.status.success());
        assert_eq!(out.stdout, tar);
    }
    // a tar: 512 header + 100_000 data padded to 100_352 + 1024 trailer
    assert_eq!(ga.layers[0].size, 512 + 100_352 + 1024);
    assert_eq!(file_sha256(&la.blob_path(&ga.layers[0].digest)), ga.layers[0].hex());
    let s = la.artifact(&ia.manifest, "x").unwrap();
    let m: Value = serde_json::from_slice(&fs::read(la.blob_path(&s.manifest.digest)).unwrap()).unwrap();
    assert_eq!(m["subject"]["digest"], ia.manifest.digest.as_str());
    assert_eq!(
        m["config"]["digest"],
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    if Path::new(fixtures::HOST_BUSYBOX).exists() {
        let x = la.busybox_image().unwrap();
        let y = lb.busybox_image().unwrap();
        assert_eq!(x.manifest, y.manifest);
        assert_ne!(x.layers[0].digest, x.diff_ids[0], "gzip layer digest vs diff_id");
    }
}

// =============================================================================================
// skopeo

/// Copy in and out, inspect --raw, list-tags, pull by digest, delete.
#[test]
fn skopeo_single_image_roundtrip() {
    require_e2e!();
    let s = Scratch::new("skopeo1");
    let dj = Donjon::start(&s);
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();

    skopeo_copy(&s, &[], &layout.reference("v1"), &dj.docker("e2e/busybox:v1"));
    skopeo_copy(&s, &[], &layout.reference("v1"), &dj.docker("e2e/busybox:v2"));
    // The manifest is stored and served byte for byte: same digest.
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/busybox:v1")), img.manifest.digest);
    let by_digest = dj.docker(&format!("e2e/busybox@{}", img.manifest.digest));
    assert_eq!(skopeo_raw_digest(&s, &by_digest), img.manifest.digest);

    // What the clients rely on, checked directly too: HEAD and GET of the manifest by tag give
    // its digest (containerd and docker take the digest of a tag from Docker-Content-Digest),
    // media type and length.
    let accept =
        [("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")];
    for method in ["HEAD", "GET"] {
        let r = http(&dj.host(), method, "/v2/e2e/busybox/manifests/v1", &accept).unwrap();
        assert_eq!(r.status, 200, "{method} manifest");
        assert_eq!(
            r.header("docker-content-digest"),
            Some(img.manifest.digest.as_str()),
            "{method} manifest"
        );
        assert_eq!(r.header("content-type"), Some(fixtures::MT_MANIFEST), "{method} manifest");
        assert_eq!(
            r.header("content-length"),
            Some(img.manifest.size.to_string().as_str()),
            "{method} manifest"
        );
        if method == "GET" {
            assert_eq!(format!("sha256:{}", fixtures::sha256_hex(&r.body)), img.manifest.digest);
        }
    }

    // `skopeo inspect` (not raw) reads the config too.
    let mut c = skopeo(&s);
    c.args(["inspect", "--tls-verify=false", &dj.docker("e2e/busybox:v1")]);
    let inspect: Value = serde_json::from_str(&ok(&mut c)).unwrap();
    assert_eq!(inspect["Digest"], img.manifest.digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Layers"][0], img.layers[0].digest.as_str());

    let mut c = skopeo(&s);
    c.args(["list-tags", "--tls-verify=false", &dj.docker("e2e/busybox")]);
    let tags: Value = serde_json::from_str(&ok(&mut c)).unwrap();
    let mut tags: Vec<String> =
        tags["Tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    tags.sort();
    assert_eq!(tags, ["v1", "v2"]);

    // Out again, by tag and by digest: identical manifest and layer.
    skopeo_copy(&s, &[], &dj.docker("e2e/busybox:v1"), &format!("oci:{}:out", s.join("out").display()));
    assert_eq!(layout_digest(&s.join("out"), "out"), img.manifest.digest);
    let out_layer = s.join("out/blobs/sha256").join(img.layers[0].hex());
    assert_eq!(file_sha256(&out_layer), img.layers[0].hex());
    skopeo_copy(&s, &[], &by_digest, &format!("oci:{}:bydigest", s.join("out").display()));
    assert_eq!(layout_digest(&s.join("out"), "bydigest"), img.manifest.digest);

    // A docker-archive, as `docker load` takes it, converts the image: still readable.
    skopeo_copy(
        &s,
        &[],
        &dj.docker("e2e/busybox:v1"),
        &format!("docker-archive:{}", s.join("bb.tar").display()),
    );

    let cat = dj.get("/v2/_catalog", &[]);
    assert_eq!(cat.status, 200);
    assert!(cat.json()["repositories"].as_array().unwrap().iter().any(|r| r == "e2e/busybox"), "catalog");

    // Delete by digest (skopeo resolves the tag to the digest and deletes the manifest).
    let mut c = skopeo(&s);
    c.args(["delete", "--tls-verify=false", &dj.docker("e2e/busybox:v1")]);
    ok(&mut c);
    for gone in [dj.docker("e2e/busybox:v1"), by_digest.clone()] {
        let mut c = skopeo(&s);
        c.args(["inspect", "--raw", "--retry-times", "0", "--tls-verify=false", &gone]);
        let out = fails(&mut c);
        assert!(out.stderr.contains("manifest unknown"), "expected MANIFEST_UNKNOWN\n{}", out.describe());
    }
    let r = dj.get(&format!("/v2/e2e/busybox/manifests/{}", img.manifest.digest), &[]);
    assert_eq!(r.status, 404, "manifest after delete: {}", String::from_utf8_lossy(&r.body));
    dj.stop();
}

/// `copy --all` of an image index keeps the index digest; one platform can be picked.
#[test]
fn skopeo_multi_arch_all() {
    require_e2e!();
    let s = Scratch::new("skopeo-multi");
    let dj = Donjon::start(&s);
    let (layout, m) = fixtures::multi_arch(s.join("in"), "multi").unwrap();

    skopeo_copy(&s, &["--all"], &layout.reference("multi"), &dj.docker("e2e/multi:1"));
    let raw = skopeo_raw(&s, &dj.docker("e2e/multi:1"));
    assert_eq!(format!("sha256:{}", fixtures::sha256_hex(&raw)), m.index.digest, "index digest preserved");
    let index: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(index["mediaType"], fixtures::MT_INDEX);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    for img in [&m.amd64, &m.arm64] {
        let r = dj.docker(&format!("e2e/multi@{}", img.manifest.digest));
        assert_eq!(skopeo_raw_digest(&s, &r), img.manifest.digest);
    }

    // Without --all, skopeo picks one platform from the index.
    let mut c = skopeo(&s);
    c.args(["--override-arch", "arm64", "--override-os", "linux"]);
    c.args(["copy", "--src-tls-verify=false", &dj.docker("e2e/multi:1")]);
    c.arg(format!("oci:{}:arm", s.join("arm").display()));
    ok(&mut c);
    assert_eq!(layout_digest(&s.join("arm"), "arm"), m.arm64.manifest.digest);

    // Out with --all: the same index, both images.
    skopeo_copy(&s, &["--all"], &dj.docker("e2e/multi:1"), &format!("oci:{}:all", s.join("out").display()));
    assert_eq!(layout_digest(&s.join("out"), "all"), m.index.digest);
    for img in [&m.amd64, &m.arm64] {
        for l in &img.layers {
            assert_eq!(file_sha256(&s.join("out/blobs/sha256").join(l.hex())), l.hex());
        }
    }
    dj.stop();
}

/// `--preserve-digests` registry to registry (cross-repository), and between two registries.
#[test]
fn skopeo_preserve_digests() {
    require_e2e!();
    let s = Scratch::new("skopeo-pd");
    let dj = Donjon::start(&s);
    let s2 = Scratch::new("skopeo-pd2");
    let dj2 = Donjon::start(&s2);
    let (layout, m) = fixtures::multi_arch(s.join("in"), "multi").unwrap();

    skopeo_copy(&s, &["--all", "--preserve-digests"], &layout.reference("multi"), &dj.docker("src/multi:1"));
    // Same registry, another repository: the blobs can be mounted.
    skopeo_copy(&s, &["--all", "--preserve-digests"], &dj.docker("src/multi:1"), &dj.docker("dst/multi:1"));
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("dst/multi:1")), m.index.digest);
    // Another registry.
    skopeo_copy(
        &s,
        &["--all", "--preserve-digests"],
        &dj.docker("src/multi:1"),
        &dj2.docker("other/multi:1"),
    );
    assert_eq!(skopeo_raw_digest(&s, &dj2.docker("other/multi:1")), m.index.digest);
    // Single image with --preserve-digests.
    let single = dj.docker(&format!("src/multi@{}", m.amd64.manifest.digest));
    skopeo_copy(&s, &["--preserve-digests"], &single, &dj2.docker("other/amd64:1"));
    assert_eq!(skopeo_raw_digest(&s, &dj2.docker("other/amd64:1")), m.amd64.manifest.digest);
    let r = dj2.get(&format!("/v2/other/amd64/blobs/{}", m.amd64.layers[0].digest), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(format!("sha256:{}", fixtures::sha256_hex(&r.body)), m.amd64.layers[0].digest);
    assert_eq!(r.header("docker-content-digest"), Some(m.amd64.layers[0].digest.as_str()));
    dj2.stop();
    dj.stop();
}

/// An artifact whose subject is the busybox manifest shows in the referrers API.
#[test]
fn skopeo_artifact_referrers() {
    require_e2e!();
    let s = Scratch::new("skopeo-ref");
    let dj = Donjon::start(&s);
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    skopeo_copy(&s, &[], &layout.reference("v1"), &dj.docker("e2e/signed:v1"));

    let (alayout, art) = fixtures::artifact(s.join("art"), "sig", &img.manifest, "first").unwrap();
    skopeo_copy(&s, &["--preserve-digests"], &alayout.reference("sig"), &dj.docker("e2e/signed:sig"));
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/signed:sig")), art.manifest.digest);

    let path = format!("/v2/e2e/signed/referrers/{}", img.manifest.digest);
    let r = dj.get(&path, &[]);
    println!("GET {path} -> {} {}", r.status, String::from_utf8_lossy(&r.body));
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap_or("").starts_with(fixtures::MT_INDEX), "content-type");
    let index = r.json();
    let refs = index["manifests"].as_array().expect("manifests");
    assert_eq!(refs.len(), 1, "{index}");
    assert_eq!(refs[0]["digest"], art.manifest.digest.as_str());
    assert_eq!(refs[0]["size"], art.manifest.size);
    assert_eq!(refs[0]["mediaType"], fixtures::MT_MANIFEST);
    assert_eq!(refs[0]["artifactType"], fixtures::ARTIFACT_TYPE);
    assert_eq!(refs[0]["annotations"]["org.example.note"], "first");

    let r = dj.get(&format!("{path}?artifactType=application/vnd.example.other"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["manifests"].as_array().map(Vec::len), Some(0), "filtered referrers");

    // The artifact copied back out is byte-identical.
    skopeo_copy(&s, &[], &dj.docker("e2e/signed:sig"), &format!("oci:{}:sig", s.join("out").display()));
    assert_eq!(layout_digest(&s.join("out"), "sig"), art.manifest.digest);
    dj.stop();
}

/// A large layer in and out (streamed upload through skopeo, streamed download), as gzip (kept
/// byte for byte) and uncompressed (which skopeo compresses on the fly while pushing, so the
/// registry must digest a stream of unknown length).
#[test]
fn skopeo_large_layer() {
    require_e2e!();
    let s = Scratch::new("skopeo-large");
    let dj = Donjon::start(&s);
    let size = large_size();
    let t = Instant::now();
    let mut layout = fixtures::OciLayout::create(s.join("in")).unwrap();
    let img = layout.large_image(size, 42, true).unwrap();
    layout.tag(&img.manifest, "gz");
    let raw_img = layout.large_image(size, 43, false).unwrap();
    layout.tag(&raw_img.manifest, "tar");
    layout.save().unwrap();
    println!("wrote two {size}-byte layers in {:.1?}", t.elapsed());

    skopeo_copy_with(&s, &[], &layout.reference("gz"), &dj.docker("e2e/large:gz"), LARGE_TIMEOUT);
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/large:gz")), img.manifest.digest);
    let r = http(&dj.host(), "HEAD", &format!("/v2/e2e/large/blobs/{}", img.layers[0].digest), &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(img.layers[0].size.to_string().as_str()));
    assert_eq!(r.header("docker-content-digest"), Some(img.layers[0].digest.as_str()));
    let out = s.join("out");
    skopeo_copy_with(
        &s,
        &[],
        &dj.docker("e2e/large:gz"),
        &format!("oci:{}:gz", out.display()),
        LARGE_TIMEOUT,
    );
    assert_eq!(layout_digest(&out, "gz"), img.manifest.digest);
    assert_eq!(file_sha256(&out.join("blobs/sha256").join(img.layers[0].hex())), img.layers[0].hex());

    let digestfile = s.join("tar.digest");
    let df = format!("--digestfile={}", digestfile.display());
    skopeo_copy_with(&s, &[&df], &layout.reference("tar"), &dj.docker("e2e/large:tar"), LARGE_TIMEOUT);
    let pushed = fs::read_to_string(&digestfile).unwrap().trim().to_string();
    assert_ne!(pushed, raw_img.manifest.digest, "skopeo was expected to compress the layer");
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/large:tar")), pushed);
    skopeo_copy_with(
        &s,
        &[],
        &dj.docker("e2e/large:tar"),
        &format!("oci:{}:tar", out.display()),
        LARGE_TIMEOUT,
    );
    assert_eq!(layout_digest(&out, "tar"), pushed);
    let m: Value =
        serde_json::from_slice(&fs::read(out.join("blobs/sha256").join(&pushed[7..])).unwrap()).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(format!("sha256:{}", file_sha256(&out.join("blobs/sha256").join(&layer[7..]))), layer);
    assert_eq!(m["layers"][0]["mediaType"], fixtures::MT_LAYER_GZIP);
    dj.stop();
}

/// Over TLS (`--tls CERT,KEY`): skopeo verifies the certificate when given its CA, and refuses
/// the connection without it.
#[test]
fn skopeo_tls() {
    require_e2e!();
    let s = Scratch::new("skopeo-tls");
    let certs = s.dir("certs");
    let (cert, key) = (certs.join("cert.pem"), certs.join("key.pem"));
    ok(cmd("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args(["-subj", "/CN=donjon-e2e", "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    // c/image takes every *.crt of a --cert-dir as a CA.
    let ca_dir = s.dir("ca");
    fs::copy(&cert, ca_dir.join("ca.crt")).unwrap();
    let dj = Donjon::start_with(&s, Some((&cert, &key)));
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();

    let mut c = skopeo(&s);
    c.args(["copy", "--retry-times", "0", "--dest-tls-verify=true", "--dest-cert-dir"]).arg(&ca_dir);
    c.arg(layout.reference("v1")).arg(dj.docker("e2e/tls:v1"));
    ok(&mut c);
    let mut c = skopeo(&s);
    c.args(["inspect", "--raw", "--retry-times", "0", "--tls-verify=true", "--cert-dir"]).arg(&ca_dir);
    c.arg(dj.docker("e2e/tls:v1"));
    assert_eq!(format!("sha256:{}", fixtures::sha256_hex(ok(&mut c).as_bytes())), img.manifest.digest);

    // Without the CA the certificate is unknown: TLS is really in use.
    let mut c = skopeo(&s);
    c.args(["inspect", "--raw", "--retry-times", "0", "--tls-verify=true", &dj.docker("e2e/tls:v1")]);
    let out = fails(&mut c);
    assert!(out.stderr.contains("certificate"), "expected a certificate error\n{}", out.describe());
    // And plain HTTP is not served on the TLS port.
    let r = http(&dj.host(), "GET", "/v2/", &[]);
    assert!(r.map_or(true, |r| r.status != 200), "plain HTTP answered on the TLS port");
    dj.stop();
}

// =============================================================================================
// restart

/// Content pushed before a graceful stop is served after a restart on the same data directory.
#[test]
fn restart_keeps_content() {
    require_e2e!();
    let s = Scratch::new("restart");
    let dj = Donjon::start(&s);
    let port = dj.port;
    let (layout, m) = fixtures::multi_arch(s.join("in"), "multi").unwrap();
    skopeo_copy(&s, &["--all"], &layout.reference("multi"), &dj.docker("e2e/keep:1"));
    let before = skopeo_raw_digest(&s, &dj.docker("e2e/keep:1"));
    assert_eq!(before, m.index.digest);
    let data = dj.stop();

    let dj = Donjon::start_on(&data, port, &s.join("donjon2.log"));
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/keep:1")), before);
    let mut c = skopeo(&s);
    c.args(["list-tags", "--tls-verify=false", &dj.docker("e2e/keep")]);
    let tags: Value = serde_json::from_str(&ok(&mut c)).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["1"]));
    skopeo_copy(&s, &["--all"], &dj.docker("e2e/keep:1"), &format!("oci:{}:after", s.join("out").display()));
    assert_eq!(layout_digest(&s.join("out"), "after"), m.index.digest);
    // And it still takes pushes.
    skopeo_copy(&s, &["--all"], &dj.docker("e2e/keep:1"), &dj.docker("e2e/keep:2"));
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/keep:2")), m.index.digest);
    dj.stop();
}

// =============================================================================================
// containerd

/// A private containerd: root, state, sockets and config under `dir`.
struct Containerd {
    /// Stopped (SIGTERM by PID) when dropped.
    _daemon: Daemon,
    sock: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Self {
        let root = dir.join("root");
        let state = dir.join("state");
        let sock = dir.join("c.sock");
        let config = dir.join("config.toml");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&state).unwrap();
        let toml = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = root.display(),
            state = state.display(),
            sock = sock.display(),
            opt = dir.join("opt").display(),
        );
        fs::write(&config, toml).unwrap();
        let mut c = cmd("containerd");
        c.arg("--config").arg(&config).args(["--log-level", "info"]);
        let mut daemon = Daemon::spawn("containerd", &mut c, &dir.join("containerd.log"));
        let ctr = tool("ctr");
        let sock2 = sock.clone();
        daemon.wait_until("serving", || {
            sock2.exists()
                && probe(Command::new(&ctr).arg("-a").arg(&sock2).args([
                    "--connect-timeout",
                    "5s",
                    "version",
                ]))
        });
        Self { _daemon: daemon, sock }
    }

    /// `ctr -a SOCK -n e2e`
    fn ctr(&self) -> Command {
        let mut c = cmd("ctr");
        c.arg("-a").arg(&self.sock).args(["-n", "e2e"]);
        c
    }
}

#[test]
fn containerd_ctr() {
    require_e2e!();
    let _heavy = heavy_lock();
    let s = Scratch::new("ctrd");
    let dj = Donjon::start(&s);
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    let (mlayout, m) = fixtures::multi_arch(s.join("multi"), "multi").unwrap();
    skopeo_copy(&s, &[], &layout.reference("v1"), &dj.docker("e2e/busybox:v1"));
    skopeo_copy(&s, &["--all"], &mlayout.reference("multi"), &dj.docker("e2e/multi:1"));
    let ctrd = Containerd::start(&s.dir("containerd"));
    let host = dj.host();

    // pull (unpacks into the native snapshotter, checking the diff_ids)
    let bb = format!("{host}/e2e/busybox:v1");
    ok(ctrd.ctr().args(["images", "pull", "--plain-http", "--snapshotter", "native", &bb]));
    let ls = ok(ctrd.ctr().args(["images", "ls"]));
    assert!(ls.contains(&bb) && ls.contains(&img.manifest.digest), "images ls:\n{ls}");
    let check = ok(ctrd.ctr().args(["images", "check"]));
    assert!(check.contains(&bb) && check.contains("complete"), "images check:\n{check}");

    // content fetch: the manifest as served, by tag, and a blob by digest in the content store
    let fetched = ok(ctrd.ctr().args(["content", "fetch", "--plain-http", &format!("{host}/e2e/multi:1")]));
    println!("{fetched}");
    let got = ok(ctrd.ctr().args(["content", "get", &m.index.digest]));
    assert_eq!(format!("sha256:{}", fixtures::sha256_hex(got.as_bytes())), m.index.digest);

    // --all-platforms: both images' content
    let multi = format!("{host}/e2e/multi:1");
    ok(ctrd.ctr().args([
        "images",
        "pull",
        "--plain-http",
        "--all-platforms",
        "--snapshotter",
        "native",
        &multi,
    ]));
    for d in [&m.arm64.manifest.digest, &m.arm64.layers[0].digest, &m.amd64.layers[0].digest] {
        ok(ctrd.ctr().args(["content", "get", d]).stdout(Stdio::null()));
    }

    // push: to another repository, then read back with skopeo
    let pushed = format!("{host}/e2e/pushed:ctr");
    ok(ctrd.ctr().args(["images", "tag", &bb, &pushed]));
    ok(ctrd.ctr().args(["images", "push", "--plain-http", &pushed]));
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/pushed:ctr")), img.manifest.digest);
    let mpushed = format!("{host}/e2e/pushed:multi");
    ok(ctrd.ctr().args(["images", "tag", &multi, &mpushed]));
    ok(ctrd.ctr().args(["images", "push", "--plain-http", &mpushed]));
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/pushed:multi")), m.index.digest);

    // run the pulled image: default Entrypoint + Cmd, then an explicit command
    let out = ok(ctrd.ctr().args(["run", "--rm", "--snapshotter", "native", &bb, "e2e-run-1"]));
    assert_eq!(out.trim(), fixtures::BUSYBOX_GREETING, "ctr run output");
    let out = ok(ctrd.ctr().args([
        "run",
        "--rm",
        "--snapshotter",
        "native",
        &bb,
        "e2e-run-2",
        "/bin/sh",
        "-c",
        "echo ran as $(id -u) on $(uname -m)",
    ]));
    assert_eq!(out.trim(), "ran as 0 on x86_64");

    drop(ctrd);
    dj.stop();
}

// =============================================================================================
// podman and buildah

/// This process's hard limit named `name` in /proc/self/limits ("unlimited" as u64::MAX).
fn hard_limit(name: &str) -> u64 {
    let limits = fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} limit"));
    let hard = line[name.len()..].split_whitespace().nth(1).expect("hard limit");
    hard.parse().unwrap_or(u64::MAX)
}

/// Common flags of podman and buildah: private vfs storage under `dir`.
fn containers_env(c: &mut Command, dir: &Path, registries: &Path) {
    c.env("CONTAINERS_REGISTRIES_CONF", registries);
    c.env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"));
    c.env("CONTAINERS_CONF", dir.join("containers.conf"));
    c.env("REGISTRY_AUTH_FILE", auth_file(dir));
    c.env("TMPDIR", dir.join("tmp"));
    c.arg("--root").arg(dir.join("root"));
    c.arg("--runroot").arg(dir.join("runroot"));
    c.args(["--storage-driver", "vfs"]);
}

#[test]
fn podman_and_buildah() {
    require_e2e!();
    let _heavy = heavy_lock();
    let s = Scratch::new("podman");
    let dj = Donjon::start(&s);
    let host = dj.host();
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    let (mlayout, m) = fixtures::multi_arch(s.join("multi"), "multi").unwrap();
    skopeo_copy(&s, &[], &layout.reference("v1"), &dj.docker("e2e/busybox:v1"));
    skopeo_copy(&s, &["--all"], &mlayout.reference("multi"), &dj.docker("e2e/multi:1"));

    let store = s.dir("containers");
    fs::create_dir_all(store.join("tmp")).unwrap();
    fs::write(
        store.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            store.join("root").display(),
            store.join("runroot").display()
        ),
    )
    .unwrap();
    fs::write(
        store.join("containers.conf"),
        format!(
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\ntmp_dir = \"{}\"\n\
             [containers]\nlog_driver = \"k8s-file\"\n",
            store.join("libpod").display()
        ),
    )
    .unwrap();
    let registries = store.join("registries.conf");
    fs::write(
        &registries,
        format!(
            "unqualified-search-registries = []\n\n[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"
        ),
    )
    .unwrap();
    let podman = || {
        let mut c = cmd("podman");
        containers_env(&mut c, &store, &registries);
        c.arg("--tmpdir").arg(store.join("libpod"));
        c.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        c
    };
    let buildah = || {
        let mut c = cmd("buildah");
        containers_env(&mut c, &store, &registries);
        c
    };

    // As root, podman asks the runtime for RLIMIT_NOFILE=1048576 and RLIMIT_NPROC=32768 unless
    // told otherwise; above the hard limits of a process tree without CAP_SYS_RESOURCE (as in
    // this sandbox: 20000 open files), runc fails with "error setting rlimit type 7: operation
    // not permitted". So the limits are given, within our own hard limits.
    let ulimits = [
        "--ulimit".to_string(),
        format!("nofile={0}:{0}", hard_limit("Max open files").min(1024)),
        "--ulimit".to_string(),
        format!("nproc={0}:{0}", hard_limit("Max processes").min(32768)),
    ];

    // pull and push
    let bb = format!("{host}/e2e/busybox:v1");
    ok(podman().args(["pull", "--tls-verify=false", &bb]));
    let id = ok(podman().args(["image", "inspect", "--format", "{{.Digest}}", &bb]));
    assert_eq!(id.trim(), img.manifest.digest);
    let pushed = format!("{host}/e2e/podman:pushed");
    ok(podman().args(["tag", &bb, &pushed]));
    ok(podman().args(["push", "--tls-verify=false", &pushed]));
    let raw: Value = serde_json::from_slice(&skopeo_raw(&s, &dj.docker("e2e/podman:pushed"))).unwrap();
    assert_eq!(raw["layers"].as_array().map(Vec::len), Some(1), "{raw}");

    // run the pulled image
    let out = ok(podman().args(["run", "--rm", "--network", "none"]).args(&ulimits).arg(&bb));
    assert_eq!(out.trim(), fixtures::BUSYBOX_GREETING, "podman run output");

    // manifest list: add both platforms, push --all
    ok(podman().args(["manifest", "create", "e2e-list"]));
    ok(podman().args([
        "manifest",
        "add",
        "--all",
        "--tls-verify=false",
        "e2e-list",
        &dj.docker("e2e/multi:1"),
    ]));
    ok(podman().args([
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        "e2e-list",
        &dj.docker("e2e/podman-list:1"),
    ]));
    let raw: Value = serde_json::from_slice(&skopeo_raw(&s, &dj.docker("e2e/podman-list:1"))).unwrap();
    println!("pushed list: {raw}");
    let mut got: Vec<String> = raw["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {raw}"))
        .iter()
        .map(|d| d["platform"]["architecture"].as_str().unwrap_or("").to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["amd64", "arm64"], "{raw}");
    // podman writes its own list, but the images in it are the fixture's, unchanged.
    let mut children: Vec<&str> =
        raw["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap()).collect();
    children.sort();
    let mut want = [m.amd64.manifest.digest.as_str(), m.arm64.manifest.digest.as_str()];
    want.sort();
    assert_eq!(children, want);
    for d in raw["manifests"].as_array().unwrap() {
        let digest = d["digest"].as_str().unwrap();
        let r = dj.get(
            &format!("/v2/e2e/podman-list/manifests/{digest}"),
            &[("Accept", d["mediaType"].as_str().unwrap())],
        );
        assert_eq!(r.status, 200, "child manifest {digest}");
        assert_eq!(format!("sha256:{}", fixtures::sha256_hex(&r.body)), digest);
    }

    // buildah bud FROM the pushed busybox, RUN inside it (chroot isolation), push it back
    let ctx = s.dir("context");
    fs::write(ctx.join("Containerfile"), format!("FROM {pushed}\nRUN echo built by buildah > /built.txt\n"))
        .unwrap();
    let built = format!("{host}/e2e/built:1");
    ok(buildah()
        .args(["bud", "--isolation", "chroot", "--tls-verify=false", "--pull-always"])
        .args(&ulimits)
        .args(["-t", &built])
        .arg(&ctx));
    ok(buildah().args(["push", "--tls-verify=false", &built, &dj.docker("e2e/built:1")]));
    let raw: Value = serde_json::from_slice(&skopeo_raw(&s, &dj.docker("e2e/built:1"))).unwrap();
    assert_eq!(raw["layers"].as_array().map(Vec::len), Some(2), "{raw}");

    // pull it back fresh into podman and run it
    ok(podman().args(["rmi", "-f", &built]));
    ok(podman().args(["pull", "--tls-verify=false", &built]));
    let out = ok(podman()
        .args(["run", "--rm", "--network", "none"])
        .args(&ulimits)
        .args([&built, "cat /built.txt"]));
    assert_eq!(out.trim(), "built by buildah");

    dj.stop();
}

// =============================================================================================
// docker

#[test]
fn docker_push_pull_run() {
    require_e2e!();
    let _heavy = heavy_lock();
    let s = Scratch::new("docker");
    let dj = Donjon::start(&s);
    let host = dj.host();
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    skopeo_copy(&s, &[], &layout.reference("v1"), &dj.docker("e2e/busybox:v1"));

    let ctrd = Containerd::start(&s.dir("containerd"));
    let d = s.dir("dockerd");
    let sock = d.join("docker.sock");
    fs::write(d.join("daemon.json"), "{}").unwrap();
    let mut c = cmd("dockerd");
    c.arg("--config-file").arg(d.join("daemon.json"));
    c.arg("--data-root").arg(d.join("data"));
    c.arg("--exec-root").arg(d.join("exec"));
    c.arg("--pidfile").arg(d.join("docker.pid"));
    c.arg("-H").arg(format!("unix://{}", sock.display()));
    c.arg("--containerd").arg(&ctrd.sock);
    c.args([
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
        "--userland-proxy=false",
    ]);
    c.args(["--storage-driver", "vfs", "--insecure-registry", &host]);
    c.env("DOCKER_CONFIG", d.join("cli"));
    let mut dockerd = Daemon::spawn("dockerd", &mut c, &d.join("dockerd.log"));
    let docker = || {
        let mut c = cmd_path(&docker_cli());
        c.env("DOCKER_CONFIG", d.join("cli"));
        c.arg("-H").arg(format!("unix://{}", sock.display()));
        c
    };
    dockerd.wait_until("serving", || sock.exists() && probe(docker().arg("version")));
    ok(docker().arg("info"));

    let bb = format!("{host}/e2e/busybox:v1");
    // docker resolves the tag with HEAD and takes the digest from Docker-Content-Digest; with a
    // wrong one it still pulls by tag, only warning that the registry "does not appear to
    // conform to the distribution registry specification": that warning is a failure here.
    let pull = run_with(docker().args(["pull", &bb]), TIMEOUT);
    assert!(pull.success(), "docker pull failed\n{}", pull.describe());
    assert!(pull.stdout.contains(&img.manifest.digest), "docker pull output\n{}", pull.describe());
    let all = format!("{}{}", pull.stdout, pull.stderr);
    assert!(!all.contains("WARNING") && !all.contains("conform"), "docker pull warned\n{}", pull.describe());
    let out = ok(docker().args(["run", "--rm", "--network", "none", &bb]));
    assert_eq!(out.trim(), fixtures::BUSYBOX_GREETING, "docker run output");

    // push under another name (docker converts to its own manifest format), pull it back by digest
    let pushed = format!("{host}/e2e/docker:pushed");
    ok(docker().args(["tag", &bb, &pushed]));
    let push_out = ok(docker().args(["push", &pushed]));
    let digest = push_out
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{push_out}"))
        .to_string();
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/docker:pushed")), digest);
    ok(docker().args(["rmi", &pushed, &bb]));
    ok(docker().args(["pull", &format!("{host}/e2e/docker@{digest}")]));
    let out = ok(docker().args([
        "run",
        "--rm",
        "--network",
        "none",
        &format!("{host}/e2e/docker@{digest}"),
        "echo pulled by digest",
    ]));
    assert_eq!(out.trim(), "pulled by digest");

    let s1 = dockerd.stop();
    println!("dockerd exited: {s1}");
    drop(ctrd);
    dj.stop();
}

// =============================================================================================
// migration to and from CNCF Distribution; replicas on one S3 bucket

/// CNCF Distribution 2.8 (`docker-registry serve CONFIG`) on a free 127.0.0.1 port, stopped by
/// its PID (SIGTERM) when dropped.
struct Distribution {
    daemon: Daemon,
    port: u16,
}

/// A Distribution config.yml: `storage` is the driver section (`filesystem:` or `s3:`, indented
/// by two spaces), with deletes enabled, redirects off, no auth. donjon reads the same file.
fn distribution_config(port: u16, storage: &str) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n\
         storage:\n{storage}\
         \x20 delete:\n    enabled: true\n\
         \x20 redirect:\n    disable: true\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  draintimeout: 5s\n"
    )
}

impl Distribution {
    /// Writes `NAME.yml` in the scratch directory (see [`distribution_config`]) and serves it.
    fn start(s: &Scratch, name: &str, storage: &str) -> Self {
        let mut attempt = 1;
        loop {
            let port = free_port();
            let config = s.join(&format!("{name}.yml"));
            fs::write(&config, distribution_config(port, storage)).unwrap();
            let mut c = Command::new(tool("docker-registry"));
            c.arg("serve").arg(&config);
            // REGISTRY_* would override the file; its S3 driver refuses to start with
            // AWS_CA_BUNDLE set, and other AWS_* could change its credentials.
            for (k, _) in std::env::vars() {
                if k.starts_with("REGISTRY_") || k.starts_with("AWS_") {
                    c.env_remove(k);
                }
            }
            let mut daemon = Daemon::spawn(name, &mut c, &s.join(&format!("{name}.log")));
            daemon.grace = Duration::from_secs(15);
            let addr = format!("127.0.0.1:{port}");
            match daemon
                .wait_ready("serving /v2/", || http(&addr, "GET", "/v2/", &[]).is_ok_and(|r| r.status == 200))
            {
                Ok(()) => return Self { daemon, port },
                Err(e) if attempt < 3 && e.contains("address already in use") => {
                    println!("{name} could not bind (attempt {attempt}), trying another port");
                    attempt += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn docker(&self, repo_ref: &str) -> String {
        format!("docker://{}/{repo_ref}", self.host())
    }

    fn stop(mut self) {
        let st = self.daemon.stop();
        println!("{} exited: {st}", self.daemon.name);
    }
}

/// `skopeo list-tags`, sorted.
fn list_tags(s: &Scratch, repo: &str) -> Vec<String> {
    let mut c = skopeo(s);
    c.args(["list-tags", "--retry-times", "0", "--tls-verify=false", repo]);
    let v: Value = serde_json::from_str(&ok(&mut c)).unwrap();
    let mut tags: Vec<String> =
        v["Tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    tags.sort();
    tags
}

/// GET /v2/_catalog, the repositories in it.
fn catalog(host: &str) -> Vec<String> {
    let r = http(host, "GET", "/v2/_catalog?n=1000", &[]).unwrap_or_else(|e| panic!("catalog: {e}"));
    assert_eq!(r.status, 200, "GET /v2/_catalog: {}", String::from_utf8_lossy(&r.body));
    r.json()["repositories"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// GET /v2/REPO/tags/list: the status and the tags (`null` as none), sorted.
fn tags_raw(host: &str, repo: &str) -> (u16, Vec<String>) {
    let r = http(host, "GET", &format!("/v2/{repo}/tags/list"), &[]).unwrap_or_else(|e| panic!("tags: {e}"));
    println!("GET {host}/v2/{repo}/tags/list -> {} {}", r.status, String::from_utf8_lossy(&r.body));
    let mut tags: Vec<String> = if r.status == 200 {
        r.json()["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    } else {
        vec![]
    };
    tags.sort();
    (r.status, tags)
}

fn assert_catalog_has(host: &str, repos: &[&str]) {
    let cat = catalog(host);
    println!("catalog of {host}: {cat:?}");
    for r in repos {
        assert!(cat.iter().any(|c| c == r), "{r} missing from the catalog of {host}: {cat:?}");
    }
}

/// `skopeo copy [extra] SRC oci:DIR:TAG`, then: index.json names `want`, and each of `blobs`
/// is in the layout with its digest.
fn copy_out_and_check(
    s: &Scratch,
    extra: &[&str],
    src: &str,
    dir: &Path,
    tag: &str,
    want: &str,
    blobs: &[&str],
) {
    skopeo_copy(s, extra, src, &format!("oci:{}:{tag}", dir.display()));
    assert_eq!(layout_digest(dir, tag), want, "copied out {src}");
    for d in blobs {
        let hex = d.strip_prefix("sha256:").unwrap();
        assert_eq!(file_sha256(&dir.join("blobs/sha256").join(hex)), hex, "blob {d} of {src}");
    }
}

fn as_str(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Where a registry's storage can be looked at directly: a directory, or a bucket and prefix
/// (listed and read with `curl --aws-sigv4`, which signs S3 requests).
enum Backing {
    Dir(PathBuf),
    S3 { endpoint: String, bucket: String, access_key: String, secret_key: String, prefix: String },
}

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl Backing {
    fn s3(g: &garage::Garage, prefix: &str) -> Self {
        Backing::S3 {
            endpoint: g.endpoint(),
            bucket: g.bucket().to_string(),
            access_key: g.access_key().to_string(),
            secret_key: g.secret_key().to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    /// A signed GET of `path_query` (`/BUCKET/KEY` or `/BUCKET?...`, already percent-encoded):
    /// None on a 404. Quiet: the command line holds the secret key.
    fn s3_get(&self, path_query: &str) -> Option<Vec<u8>> {
        let Backing::S3 { endpoint, access_key, secret_key, .. } = self else { unreachable!() };
        let out = Command::new(tool("curl"))
            .args(["-sS", "--max-time", "60", "-w", "\n%{http_code}", "--aws-sigv4", "aws:amz:garage:s3"])
            .arg("--user")
            .arg(format!("{access_key}:{secret_key}"))
            .args(["-H", &format!("x-amz-content-sha256: {EMPTY_SHA256}")])
            .arg(format!("{endpoint}{path_query}"))
            .stdin(Stdio::null())
            .output()
            .expect("curl");
        assert!(out.status.success(), "curl {path_query}: {}", String::from_utf8_lossy(&out.stderr));
        let mut body = out.stdout;
        let nl = body.iter().rposition(|&b| b == b'\n').expect("status line");
        let code = String::from_utf8_lossy(&body[nl + 1..]).trim().to_string();
        body.truncate(nl);
        match code.as_str() {
            "200" => Some(body),
            "404" => None,
            _ => panic!("S3 GET {path_query}: HTTP {code}: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// Every key in the bucket starting with `prefix` (ListObjectsV2, all pages).
    fn s3_keys(&self, prefix: &str) -> Vec<String> {
        let Backing::S3 { bucket, .. } = self else { unreachable!() };
        let enc = |v: &str| -> String {
            v.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        };
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = format!("/{bucket}?list-type=2");
            if let Some(t) = &token {
                q.push_str(&format!("&continuation-token={}", enc(t)));
            }
            if !prefix.is_empty() {
                q.push_str(&format!("&prefix={}", enc(prefix)));
            }
            let xml = String::from_utf8(self.s3_get(&q).expect("bucket")).unwrap();
            keys.extend(xml_values(&xml, "Key"));
            token = xml_values(&xml, "NextContinuationToken").into_iter().next();
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        keys
    }

    /// The keys of the multipart uploads in progress in the bucket.
    fn s3_multipart_uploads(&self) -> Vec<String> {
        let Backing::S3 { bucket, .. } = self else { unreachable!() };
        let xml = String::from_utf8(self.s3_get(&format!("/{bucket}?uploads=")).expect("bucket")).unwrap();
        xml_values(&xml, "Key")
    }

    /// Every file (object) of the storage, relative to its root (directory or prefix), sorted.
    fn list(&self) -> Vec<String> {
        match self {
            Backing::Dir(root) => {
                fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
                    let Ok(rd) = fs::read_dir(dir) else { return };
                    for e in rd.flatten() {
                        let p = e.path();
                        if p.is_dir() {
                            walk(base, &p, out);
                        } else {
                            out.push(p.strip_prefix(base).unwrap().display().to_string());
                        }
                    }
                }
                let mut out = Vec::new();
                walk(root, root, &mut out);
                out.sort();
                out
            }
            Backing::S3 { prefix, .. } => {
                let p = format!("{prefix}/");
                self.s3_keys(&p).into_iter().map(|k| k[p.len()..].to_string()).collect()
            }
        }
    }

    /// The bytes of `rel` (relative to the root), None when absent.
    fn read(&self, rel: &str) -> Option<Vec<u8>> {
        match self {
            Backing::Dir(root) => fs::read(root.join(rel)).ok(),
            Backing::S3 { bucket, prefix, .. } => self.s3_get(&format!("/{bucket}/{prefix}/{rel}")),
        }
    }
}

/// The text of every `<tag>...</tag>` in `xml` (entities `&amp;` etc. decoded).
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let j = after.find(&close).expect("closing tag");
        out.push(
            after[..j]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[j + close.len()..];
    }
    out
}

/// The files Distribution reads for `repo:tag` -> `manifest` with `blobs` (config and layers),
/// in its layout: the problems found (empty when all is there).
fn distribution_layout_problems(
    st: &Backing,
    repo: &str,
    tag: &str,
    manifest: &str,
    blobs: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap().to_string();
    let mut check_link = |rel: String, want: &str| {
        let rel = format!("docker/registry/v2/{rel}");
        match st.read(&rel) {
            // Distribution parses the link's bytes as they are: no newline allowed.
            Some(b) if b == want.as_bytes() => {}
            Some(b) => problems.push(format!(
                "{rel}: contains {:?}, Distribution wants exactly {want:?}",
                String::from_utf8_lossy(&b)
            )),
            None => problems.push(format!("{rel}: missing")),
        }
    };
    let repo_dir = format!("repositories/{repo}");
    check_link(format!("{repo_dir}/_manifests/revisions/sha256/{}/link", hex(manifest)), manifest);
    check_link(format!("{repo_dir}/_manifests/tags/{tag}/current/link"), manifest);
    check_link(format!("{repo_dir}/_manifests/tags/{tag}/index/sha256/{}/link", hex(manifest)), manifest);
    for b in blobs {
        check_link(format!("{repo_dir}/_layers/sha256/{}/link", hex(b)), b);
    }
    for d in std::iter::once(&manifest).chain(blobs) {
        let h = hex(d);
        let rel = format!("docker/registry/v2/blobs/sha256/{}/{h}/data", &h[..2]);
        match st.read(&rel) {
            Some(b) if fixtures::sha256_hex(&b) == h => {}
            Some(_) => problems.push(format!("{rel}: content does not hash to {d}")),
            None => problems.push(format!("{rel}: missing")),
        }
    }
    problems
}

/// Pushes to Distribution, serves the same storage with donjon (reads, then writes), then serves
/// it with Distribution again and reads what donjon wrote. `storage` is the `storage:` driver
/// section both get; `st` is that storage seen directly (for the layout checks); `donjon_data`
/// is donjon's `-d` (None: from the config file).
fn migration_both_ways(s: &Scratch, storage: &str, st: &Backing, donjon_data: Option<&Path>) {
    let t0 = Instant::now();
    let (bb_layout, bb) = fixtures::busybox(s.join("in-bb"), "v1").unwrap();
    let (m_layout, m) = fixtures::multi_arch(s.join("in-multi"), "multi").unwrap();
    // gzip layers (skopeo pushes them as they are), above the S3 chunk size (5 MiB) too.
    let (la_layout, la) = fixtures::large(s.join("in-la"), "a", 6 << 20, 101, true).unwrap();
    let (lb_layout, lb) = fixtures::large(s.join("in-lb"), "b", 12 << 20, 102, true).unwrap();
    let blobs = |img: &fixtures::Image| -> Vec<String> {
        std::iter::once(img.config.digest.clone())
            .chain(img.layers.iter().map(|l| l.digest.clone()))
            .collect()
    };
    let bb_blobs = blobs(&bb);
    let la_blobs = blobs(&la);
    let lb_blobs = blobs(&lb);

    // ---- 1. Distribution writes
    let dist = Distribution::start(s, "dist1", storage);
    skopeo_copy(s, &[], &bb_layout.reference("v1"), &dist.docker("mig/busybox:v1"));
    skopeo_copy(s, &["--all"], &m_layout.reference("multi"), &dist.docker("mig/multi:1"));
    skopeo_copy(s, &[], &bb_layout.reference("v1"), &dist.docker("mig/moving:t"));
    skopeo_copy(s, &[], &bb_layout.reference("v1"), &dist.docker("mig/todelete:x"));
    skopeo_copy(s, &[], &la_layout.reference("a"), &dist.docker("mig/large:a"));
    assert_eq!(skopeo_raw_digest(s, &dist.docker("mig/busybox:v1")), bb.manifest.digest);
    // What Distribution itself answers for the tags of a repository whose only manifest it
    // deleted (on S3, without directories, the repository is gone: 404 NAME_UNKNOWN).
    skopeo_copy(s, &[], &bb_layout.reference("v1"), &dist.docker("mig/distdel:x"));
    let mut c = skopeo(s);
    c.args(["delete", "--retry-times", "0", "--tls-verify=false", &dist.docker("mig/distdel:x")]);
    ok(&mut c);
    let emptied = tags_raw(&dist.host(), "mig/distdel");
    dist.stop();
    let before = st.list();
    println!(
        "Distribution wrote {} files; under _uploads: {:?}",
        before.len(),
        before.iter().filter(|f| f.contains("/_uploads/")).collect::<Vec<_>>()
    );
    let t1 = Instant::now();
    println!("== phase 1 (Distribution pushes) took {:.1?}", t1 - t0);

    // ---- 2. donjon reads what Distribution wrote, then writes
    let config = s.join("dist1.yml");
    let dj = Donjon::start_config(donjon_data, &config, &s.join("donjon.log"));
    for (r, want) in [
        ("mig/busybox:v1".to_string(), &bb.manifest.digest),
        (format!("mig/busybox@{}", bb.manifest.digest), &bb.manifest.digest),
        ("mig/multi:1".to_string(), &m.index.digest),
        (format!("mig/multi@{}", m.index.digest), &m.index.digest),
        (format!("mig/multi@{}", m.arm64.manifest.digest), &m.arm64.manifest.digest),
        (format!("mig/multi@{}", m.amd64.manifest.digest), &m.amd64.manifest.digest),
        ("mig/large:a".to_string(), &la.manifest.digest),
        ("mig/moving:t".to_string(), &bb.manifest.digest),
        ("mig/todelete:x".to_string(), &bb.manifest.digest),
    ] {
        assert_eq!(&skopeo_raw_digest(s, &dj.docker(&r)), want, "donjon serving {r} written by Distribution");
    }
    let out = s.join("out-dj");
    copy_out_and_check(
        s,
        &[],
        &dj.docker("mig/busybox:v1"),
        &out,
        "bytag",
        &bb.manifest.digest,
        &as_str(&bb_blobs),
    );
    copy_out_and_check(
        s,
        &[],
        &dj.docker(&format!("mig/busybox@{}", bb.manifest.digest)),
        &out,
        "bydigest",
        &bb.manifest.digest,
        &as_str(&bb_blobs),
    );
    copy_out_and_check(
        s,
        &["--all"],
        &dj.docker("mig/multi:1"),
        &out,
        "multi",
        &m.index.digest,
        &[&m.arm64.layers[0].digest, &m.amd64.layers[0].digest],
    );
    copy_out_and_check(
        s,
        &[],
        &dj.docker("mig/large:a"),
        &out,
        "large",
        &la.manifest.digest,
        &as_str(&la_blobs),
    );
    assert_eq!(list_tags(s, &dj.docker("mig/busybox")), ["v1"]);
    assert_eq!(list_tags(s, &dj.docker("mig/multi")), ["1"]);
    assert_catalog_has(&dj.host(), &["mig/busybox", "mig/multi", "mig/moving", "mig/todelete", "mig/large"]);
    let r = http(&dj.host(), "HEAD", &format!("/v2/mig/large/blobs/{}", la.layers[0].digest), &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(la.layers[0].size.to_string().as_str()));

    // writes: new blobs (12 MiB layer), a new tag in an old repository, a cross-repository mount
    // of blobs Distribution wrote, an index, a moved tag, a deleted manifest
    skopeo_copy(s, &[], &lb_layout.reference("b"), &dj.docker("mig/new:b"));
    skopeo_copy(s, &[], &bb_layout.reference("v1"), &dj.docker("mig/busybox:v2"));
    skopeo_copy(s, &[], &dj.docker("mig/busybox:v1"), &dj.docker("mig/mounted:1"));
    skopeo_copy(s, &["--all"], &m_layout.reference("multi"), &dj.docker("mig/multi2:1"));
    skopeo_copy(
        s,
        &[],
        &dj.docker(&format!("mig/multi@{}", m.arm64.manifest.digest)),
        &dj.docker("mig/moving:t"),
    );
    let mut c = skopeo(s);
    c.args(["delete", "--retry-times", "0", "--tls-verify=false", &dj.docker("mig/todelete:x")]);
    ok(&mut c);
    assert_eq!(skopeo_raw_digest(s, &dj.docker("mig/new:b")), lb.manifest.digest);
    assert_eq!(skopeo_raw_digest(s, &dj.docker("mig/moving:t")), m.arm64.manifest.digest);
    assert_eq!(list_tags(s, &dj.docker("mig/busybox")), ["v1", "v2"]);
    // The tags of a repository emptied by a delete: donjon answers 200 with no tags on every
    // storage (what the conformance suite requires); Distribution answers 404 on S3, where a
    // bucket keeps no empty folders.
    println!("Distribution's tags list of an emptied repository: {emptied:?}");
    assert_eq!(tags_raw(&dj.host(), "mig/distdel"), (200, vec![]), "emptied by Distribution, seen by donjon");
    assert_eq!(tags_raw(&dj.host(), "mig/todelete"), (200, vec![]), "emptied by donjon, seen by donjon");
    dj.stop();
    let t2 = Instant::now();
    println!("== phase 2 (donjon reads and writes) took {:.1?}", t2 - t1);

    {
        let after = st.list();
        let added: Vec<&String> = after.iter().filter(|f| before.binary_search(f).is_err()).collect();
        let removed: Vec<&String> = before.iter().filter(|f| after.binary_search(f).is_err()).collect();
        println!("files donjon added ({}):", added.len());
        for f in &added {
            println!("  + {f}");
        }
        println!("files donjon removed ({}):", removed.len());
        for f in &removed {
            println!("  - {f}");
        }
        let mut problems = Vec::new();
        for (repo, tag, manifest, blobs) in [
            ("mig/new", "b", &lb.manifest.digest, as_str(&lb_blobs)),
            ("mig/busybox", "v2", &bb.manifest.digest, as_str(&bb_blobs)),
            ("mig/mounted", "1", &bb.manifest.digest, as_str(&bb_blobs)),
            ("mig/moving", "t", &m.arm64.manifest.digest, vec![]),
            ("mig/multi2", "1", &m.index.digest, vec![]),
        ] {
            problems.extend(distribution_layout_problems(st, repo, tag, manifest, &blobs));
        }
        // Distribution's own kinds of files only, all under docker/registry/v2.
        let known = |f: &str| {
            let Some(f) = f.strip_prefix("docker/registry/v2/") else { return false };
            (f.starts_with("blobs/sha256/") && f.ends_with("/data"))
                || (f.starts_with("repositories/")
                    && f.ends_with("/link")
                    && (f.contains("/_layers/sha256/") || f.contains("/_manifests/")))
        };
        for f in added.iter().filter(|f| !known(f)) {
            problems.push(format!("{f}: not a kind of file Distribution writes (left by donjon)"));
        }
        if let Backing::S3 { prefix, .. } = st {
            let outside: Vec<String> =
                st.s3_keys("").into_iter().filter(|k| !k.starts_with(&format!("{prefix}/"))).collect();
            if !outside.is_empty() {
                problems.push(format!("keys outside the prefix {prefix}/: {outside:?}"));
            }
            let pending = st.s3_multipart_uploads();
            if !pending.is_empty() {
                problems.push(format!("multipart uploads left in progress: {pending:?}"));
            }
        }
        assert!(
            problems.is_empty(),
            "donjon's files differ from Distribution's layout:\n{}",
            problems.join("\n")
        );
    }

    // ---- 3. Distribution's garbage collector marks from what donjon wrote: it must keep every
    // blob still referenced (it deletes blobs no manifest revision of any repository names).
    let t3 = Instant::now();
    let mut c = Command::new(tool("docker-registry"));
    c.arg("garbage-collect").arg(&config);
    for (k, _) in std::env::vars() {
        if k.starts_with("REGISTRY_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    let gc = run_with(&mut c, TIMEOUT);
    assert!(gc.success(), "garbage-collect failed\n{}", gc.describe());
    let summary: Vec<&str> = gc
        .stdout
        .lines()
        .chain(gc.stderr.lines())
        .filter(|l| l.contains("eligible") || l.contains("Deleting"))
        .collect();
    println!("garbage-collect: {summary:#?}");
    // Every blob is referenced: busybox, arm64 and the two large images (3 each), the index.
    let all = format!("{}{}", gc.stdout, gc.stderr);
    assert!(
        all.contains("13 blobs marked, 0 blobs and 0 manifests eligible for deletion"),
        "Distribution's garbage collector did not find every blob referenced\n{}",
        gc.describe()
    );
    println!("== garbage-collect took {:.1?}", t3.elapsed());

    // ---- 4. Distribution reads what donjon wrote
    let dist = Distribution::start(s, "dist2", storage);
    for (r, want) in [
        ("mig/new:b".to_string(), &lb.manifest.digest),
        (format!("mig/new@{}", lb.manifest.digest), &lb.manifest.digest),
        ("mig/busybox:v2".to_string(), &bb.manifest.digest),
        ("mig/mounted:1".to_string(), &bb.manifest.digest),
        ("mig/multi2:1".to_string(), &m.index.digest),
        (format!("mig/multi2@{}", m.arm64.manifest.digest), &m.arm64.manifest.digest),
        ("mig/moving:t".to_string(), &m.arm64.manifest.digest),
        // and the old content
        ("mig/busybox:v1".to_string(), &bb.manifest.digest),
        ("mig/multi:1".to_string(), &m.index.digest),
        ("mig/large:a".to_string(), &la.manifest.digest),
    ] {
        assert_eq!(&skopeo_raw_digest(s, &dist.docker(&r)), want, "Distribution serving {r} (after donjon)");
    }
    let out = s.join("out-dist");
    copy_out_and_check(
        s,
        &[],
        &dist.docker("mig/new:b"),
        &out,
        "new",
        &lb.manifest.digest,
        &as_str(&lb_blobs),
    );
    copy_out_and_check(
        s,
        &[],
        &dist.docker(&format!("mig/new@{}", lb.manifest.digest)),
        &out,
        "newbydigest",
        &lb.manifest.digest,
        &as_str(&lb_blobs),
    );
    copy_out_and_check(
        s,
        &[],
        &dist.docker("mig/busybox:v2"),
        &out,
        "v2",
        &bb.manifest.digest,
        &as_str(&bb_blobs),
    );
    copy_out_and_check(
        s,
        &[],
        &dist.docker("mig/mounted:1"),
        &out,
        "mounted",
        &bb.manifest.digest,
        &as_str(&bb_blobs),
    );
    copy_out_and_check(
        s,
        &["--all"],
        &dist.docker("mig/multi2:1"),
        &out,
        "multi2",
        &m.index.digest,
        &[&m.arm64.layers[0].digest, &m.amd64.layers[0].digest],
    );
    copy_out_and_check(
        s,
        &[],
        &dist.docker("mig/moving:t"),
        &out,
        "moving",
        &m.arm64.manifest.digest,
        &[&m.arm64.layers[0].digest],
    );
    copy_out_and_check(
        s,
        &[],
        &dist.docker("mig/busybox:v1"),
        &out,
        "v1",
        &bb.manifest.digest,
        &as_str(&bb_blobs),
    );
    copy_out_and_check(s, &["--all"], &dist.docker("mig/multi:1"), &out, "multi", &m.index.digest, &[]);
    copy_out_and_check(
        s,
        &[],
        &dist.docker("mig/large:a"),
        &out,
        "large",
        &la.manifest.digest,
        &as_str(&la_blobs),
    );
    // The manifest donjon deleted is gone for Distribution too.
    for gone in [dist.docker("mig/todelete:x"), dist.docker(&format!("mig/todelete@{}", bb.manifest.digest))]
    {
        let mut c = skopeo(s);
        c.args(["inspect", "--raw", "--retry-times", "0", "--tls-verify=false", &gone]);
        let out = fails(&mut c);
        assert!(
            out.stderr.contains("manifest unknown"),
            "expected MANIFEST_UNKNOWN for {gone}\n{}",
            out.describe()
        );
    }
    let r = http(&dist.host(), "HEAD", &format!("/v2/mig/new/blobs/{}", lb.layers[0].digest), &[]).unwrap();
    assert_eq!(r.status, 200, "HEAD of the layer donjon wrote, on Distribution");
    assert_eq!(r.header("content-length"), Some(lb.layers[0].size.to_string().as_str()));
    assert_eq!(list_tags(s, &dist.docker("mig/busybox")), ["v1", "v2"]);
    assert_eq!(list_tags(s, &dist.docker("mig/moving")), ["t"]);
    assert_eq!(tags_raw(&dist.host(), "mig/todelete"), emptied, "emptied by donjon, seen by Distribution");
    assert_catalog_has(
        &dist.host(),
        &["mig/busybox", "mig/multi", "mig/large", "mig/new", "mig/mounted", "mig/multi2"],
    );
    dist.stop();
    println!(
        "== phase 4 (Distribution reads donjon's writes) took {:.1?}; total {:.1?}",
        t2.elapsed(),
        t0.elapsed()
    );
}

/// Distribution (filesystem driver) -> donjon -> Distribution, on one directory.
#[test]
fn migration_filesystem_both_ways() {
    require_e2e!();
    let s = Scratch::new("mig-fs");
    let root = s.dir("registry");
    let storage = format!("  filesystem:\n    rootdirectory: {}\n", root.display());
    migration_both_ways(&s, &storage, &Backing::Dir(root.clone()), None);
}

/// The `storage:` section for the S3 driver on `g`'s bucket under `prefix`, read by both
/// Distribution and donjon.
fn s3_storage_yaml(g: &garage::Garage, prefix: &str) -> String {
    format!(
        "  s3:\n    bucket: {}\n    region: {}\n    regionendpoint: {}\n    \
         accesskey: {}\n    secretkey: {}\n    rootdirectory: {prefix}\n    \
         forcepathstyle: true\n    secure: false\n    v4auth: true\n    chunksize: 5242880\n",
        g.bucket(),
        g.region(),
        g.endpoint(),
        g.access_key(),
        g.secret_key(),
    )
}

/// Distribution (S3 driver) -> donjon -> Distribution, on one Garage bucket and prefix.
#[test]
fn migration_s3_both_ways() {
    require_e2e!();
    let Some(g) = garage::Garage::start("migration") else {
        println!("skipped: no garage (set DONJON_S3=1 to make it a failure)");
        return;
    };
    let s = Scratch::new("mig-s3");
    let storage = s3_storage_yaml(&g, "/mig-prefix");
    let data = s.dir("donjon-data");
    migration_both_ways(&s, &storage, &Backing::s3(&g, "/mig-prefix"), Some(&data));
    drop(g);
}

/// `addr` of an upload's Location (absolute or not): the path and query.
fn location_path(loc: &str) -> String {
    match loc.strip_prefix("http://").or_else(|| loc.strip_prefix("https://")) {
        Some(rest) => rest[rest.find('/').unwrap_or(rest.len())..].to_string(),
        None => loc.to_string(),
    }
}

fn with_query(path: &str, kv: &str) -> String {
    if path.contains('?') {
        format!("{path}&{kv}")
    } else {
        format!("{path}?{kv}")
    }
}

fn sha256_digest(b: &[u8]) -> String {
    format!("sha256:{}", fixtures::sha256_hex(b))
}

/// A chunked upload through `addr`: POST, one PATCH per chunk (with Content-Range), a GET of
/// the status after some, and a PUT with `last` as its body. Checks every answer; returns the
/// digest and the upload's id (the last segment of its Location path).
fn chunked_upload(
    addr: &str,
    repo: &str,
    chunks: &[&[u8]],
    status_after: &[usize],
    last: &[u8],
) -> (String, String) {
    let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).chain(last.iter().copied()).collect();
    let digest = sha256_digest(&all);
    let r = http_send(addr, "POST", &format!("/v2/{repo}/blobs/uploads/"), &[], Some(b"")).unwrap();
    assert_eq!(r.status, 202, "POST upload: {}", String::from_utf8_lossy(&r.body));
    let mut loc = location_path(r.header("location").expect("Location"));
    let id = loc.split('?').next().unwrap().rsplit('/').next().unwrap().to_string();
    println!("upload {id}: POST -> 202 {loc}");
    let mut offset = 0usize;
    for (i, chunk) in chunks.iter().enumerate() {
        let range = format!("{}-{}", offset, offset + chunk.len() - 1);
        let r = http_send(
            addr,
            "PATCH",
            &loc,
            &[("Content-Type", "application/octet-stream"), ("Content-Range", &range)],
            Some(chunk),
        )
        .unwrap();
        assert_eq!(r.status, 202, "PATCH #{i} {range}: {}", String::from_utf8_lossy(&r.body));
        offset += chunk.len();
        assert_eq!(r.header("range"), Some(format!("0-{}", offset - 1).as_str()), "Range after PATCH #{i}");
        loc = location_path(r.header("location").expect("Location after PATCH"));
        println!("upload {id}: PATCH {range} ({} bytes) -> 202, Range 0-{}", chunk.len(), offset - 1);
        if status_after.contains(&i) {
            let r = http(addr, "GET", &loc, &[]).unwrap();
            assert_eq!(r.status, 204, "GET upload status: {}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.header("range"), Some(format!("0-{}", offset - 1).as_str()), "Range of GET status");
            assert_eq!(r.header("docker-upload-uuid"), Some(id.as_str()), "Docker-Upload-UUID of GET status");
            println!("upload {id}: GET status -> 204, Range 0-{}", offset - 1);
        }
    }
    let put = with_query(&loc, &format!("digest={digest}"));
    let mut headers = vec![("Content-Type", "application/octet-stream")];
    let range;
    if !last.is_empty() {
        range = format!("{}-{}", offset, offset + last.len() - 1);
        headers.push(("Content-Range", &range));
    }
    let r = http_send(addr, "PUT", &put, &headers, Some(last)).unwrap();
    assert_eq!(r.status, 201, "PUT ?digest ({} bytes): {}", last.len(), String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    println!("upload {id}: PUT ({} bytes) -> 201 {digest}, {} bytes in all", last.len(), all.len());
    (digest, id)
}

/// Two donjon binaries on one Garage bucket and prefix behind haproxy (round robin, a new
/// server connection per request): uploads, pushes and pulls through the balancer alternate
/// replicas; a tag moved on one is seen at once on the other.
#[test]
fn replicas_behind_round_robin() {
    require_e2e!();
    let t0 = Instant::now();
    let Some(g) = garage::Garage::start("replicas") else {
        println!("skipped: no garage (set DONJON_S3=1 to make it a failure)");
        return;
    };
    let s = Scratch::new("replicas");
    let haproxy = tool("haproxy");
    let config = s.join("donjon.yml");
    fs::write(
        &config,
        format!(
            "storage:\n{}  redirect:\n    disable: true\n  delete:\n    enabled: true\n",
            s3_storage_yaml(&g, "/replicas")
        ),
    )
    .unwrap();
    let a = Donjon::start_config(Some(&s.dir("a")), &config, &s.join("a.log"));
    let b = Donjon::start_config(Some(&s.dir("b")), &config, &s.join("b.log"));

    let (fport, sport) = (free_port(), free_port());
    let cfg = s.join("haproxy.cfg");
    fs::write(
        &cfg,
        format!(
            "global\n  maxconn 256\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n  \
             option http-server-close\n  http-reuse never\n\
             frontend registry\n  bind 127.0.0.1:{fport}\n  default_backend donjons\n\
             backend donjons\n  balance roundrobin\n  server a {}\n  server b {}\n\
             frontend stats\n  bind 127.0.0.1:{sport}\n  stats enable\n  stats uri /stats\n",
            a.host(),
            b.host()
        ),
    )
    .unwrap();
    let mut c = Command::new(&haproxy);
    c.arg("-f").arg(&cfg).arg("-db");
    let mut lb_daemon = Daemon::spawn("haproxy", &mut c, &s.join("haproxy.log"));
    let lb = format!("127.0.0.1:{fport}");
    lb_daemon.wait_until("proxying", || http(&lb, "GET", "/v2/", &[]).is_ok_and(|r| r.status == 200));
    let docker = |r: &str| format!("docker://{lb}/{r}");
    println!("== setup (garage, two donjons, haproxy) took {:.1?}", t0.elapsed());
    let t1 = Instant::now();

    // ---- a chunked upload through the balancer: tiny and multi-MiB chunks
    let mut rng = fixtures::XorShift(7);
    let mut bytes = |n: usize| {
        let mut v = vec![0u8; n];
        rng.fill(&mut v);
        v
    };
    let (c1, c2, c3, c4, c5, c6, last) =
        (bytes(10), bytes(6 << 20), bytes(3), bytes((7 << 20) + 1), bytes(5), bytes(1), bytes(4));
    let (layer, upload_id) =
        chunked_upload(&lb, "rr/chunked", &[&c1, &c2, &c3, &c4, &c5, &c6], &[0, 2, 4], &last);
    let layer_size = 10 + (6 << 20) + 3 + (7 << 20) + 1 + 5 + 1 + 4;
    // and one PATCHed in small pieces only, finished by an empty PUT
    let (d1, d2, d3) = (bytes(1), bytes(2), bytes(4096));
    let (small, small_id) = chunked_upload(&lb, "rr/chunked", &[&d1, &d2, &d3], &[1], b"");
    for host in [&lb, &a.host(), &b.host()] {
        let r = http(host, "HEAD", &format!("/v2/rr/chunked/blobs/{layer}"), &[]).unwrap();
        assert_eq!(r.status, 200, "HEAD blob on {host}");
        assert_eq!(r.header("content-length"), Some(layer_size.to_string().as_str()), "HEAD blob on {host}");
        let r = http(host, "GET", &format!("/v2/rr/chunked/blobs/{layer}"), &[]).unwrap();
        assert_eq!(r.status, 200, "GET blob on {host}");
        assert_eq!(sha256_digest(&r.body), layer, "GET blob on {host}");
        let r = http(host, "GET", &format!("/v2/rr/chunked/blobs/{small}"), &[]).unwrap();
        assert_eq!((r.status, sha256_digest(&r.body)), (200, small.clone()), "GET small blob on {host}");
    }

    // one upload's state is shared: stepping between the replicas' own ports, a PATCH with a
    // stale Content-Range is refused on the replica that did not take the last chunk, and a
    // cancelled upload is gone on the other
    let (ah, bh) = (a.host(), b.host());
    let r = http_send(&ah, "POST", "/v2/rr/chunked/blobs/uploads/", &[], Some(b"")).unwrap();
    assert_eq!(r.status, 202, "POST on a: {}", String::from_utf8_lossy(&r.body));
    let loc = location_path(r.header("location").unwrap());
    let octet = ("Content-Type", "application/octet-stream");
    let r = http_send(&bh, "PATCH", &loc, &[octet, ("Content-Range", "0-9")], Some(&[1u8; 10])).unwrap();
    assert_eq!((r.status, r.header("range")), (202, Some("0-9")), "PATCH 0-9 on b");
    let loc = location_path(r.header("location").unwrap());
    let r = http_send(&ah, "PATCH", &loc, &[octet, ("Content-Range", "0-9")], Some(&[2u8; 10])).unwrap();
    println!(
        "stale PATCH 0-9 on a -> {} {:?} {}",
        r.status,
        r.header("range"),
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.status, 416, "a PATCH at offset 0 after b took 0-9 must be refused");
    let r = http(&ah, "GET", &loc, &[]).unwrap();
    assert_eq!((r.status, r.header("range")), (204, Some("0-9")), "status on a after the refused PATCH");
    let r = http_send(&ah, "PATCH", &loc, &[octet, ("Content-Range", "10-19")], Some(&[3u8; 10])).unwrap();
    assert_eq!((r.status, r.header("range")), (202, Some("0-19")), "PATCH 10-19 on a");
    let loc = location_path(r.header("location").unwrap());
    let r = http(&bh, "DELETE", &loc, &[]).unwrap();
    assert_eq!(r.status, 204, "cancel on b: {}", String::from_utf8_lossy(&r.body));
    let r = http(&ah, "GET", &loc, &[]).unwrap();
    assert_eq!(
        r.status,
        404,
        "upload cancelled on b, still known to a: {}",
        String::from_utf8_lossy(&r.body)
    );
    let r = http_send(&ah, "PATCH", &loc, &[octet, ("Content-Range", "20-29")], Some(&[4u8; 10])).unwrap();
    assert_eq!(r.status, 404, "PATCH on a after the cancel on b: {}", String::from_utf8_lossy(&r.body));

    // a config (monolithic POST ?digest=) and a manifest PUT by tag, through the balancer
    let cfg_json = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [layer] },
    }))
    .unwrap();
    let cfg_digest = sha256_digest(&cfg_json);
    let r = http_send(
        &lb,
        "POST",
        &format!("/v2/rr/chunked/blobs/uploads/?digest={cfg_digest}"),
        &[("Content-Type", "application/octet-stream")],
        Some(&cfg_json),
    )
    .unwrap();
    assert_eq!(r.status, 201, "monolithic POST: {}", String::from_utf8_lossy(&r.body));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": fixtures::MT_MANIFEST,
        "config": { "mediaType": fixtures::MT_CONFIG, "digest": cfg_digest, "size": cfg_json.len() },
        "layers": [
            { "mediaType": fixtures::MT_LAYER_TAR, "digest": layer, "size": layer_size },
            { "mediaType": fixtures::MT_LAYER_TAR, "digest": small, "size": 4099 },
        ],
    }))
    .unwrap();
    let mdigest = sha256_digest(&manifest);
    let r = http_send(
        &lb,
        "PUT",
        "/v2/rr/chunked/manifests/chunky",
        &[("Content-Type", fixtures::MT_MANIFEST)],
        Some(&manifest),
    )
    .unwrap();
    assert_eq!(r.status, 201, "manifest PUT: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("docker-content-digest"), Some(mdigest.as_str()));
    let accept = [("Accept", fixtures::MT_MANIFEST)];
    for host in [&lb, &lb, &a.host(), &b.host()] {
        let r = http(host, "GET", "/v2/rr/chunked/manifests/chunky", &accept).unwrap();
        assert_eq!(r.status, 200, "GET manifest by tag on {host}");
        assert_eq!(sha256_digest(&r.body), mdigest, "GET manifest by tag on {host}");
    }
    println!("== chunked uploads and manifest took {:.1?}", t1.elapsed());
    let t2 = Instant::now();

    // ---- skopeo push and pull through the balancer
    let (bb_layout, bb) = fixtures::busybox(s.join("in-bb"), "v1").unwrap();
    let (m_layout, m) = fixtures::multi_arch(s.join("in-multi"), "multi").unwrap();
    skopeo_copy(&s, &[], &bb_layout.reference("v1"), &docker("rr/busybox:v1"));
    skopeo_copy(&s, &["--all"], &m_layout.reference("multi"), &docker("rr/multi:1"));
    skopeo_copy(&s, &[], &bb_layout.reference("v1"), &docker("rr/busybox:v2"));
    let out = s.join("out");
    let bb_blobs = [bb.config.digest.as_str(), bb.layers[0].digest.as_str()];
    copy_out_and_check(&s, &[], &docker("rr/busybox:v1"), &out, "bb", &bb.manifest.digest, &bb_blobs);
    copy_out_and_check(
        &s,
        &[],
        &docker(&format!("rr/busybox@{}", bb.manifest.digest)),
        &out,
        "bbdigest",
        &bb.manifest.digest,
        &bb_blobs,
    );
    copy_out_and_check(
        &s,
        &["--all"],
        &docker("rr/multi:1"),
        &out,
        "multi",
        &m.index.digest,
        &[&m.arm64.layers[0].digest, &m.amd64.layers[0].digest],
    );
    // (its layers are uncompressed: skopeo would compress them without --preserve-digests)
    copy_out_and_check(
        &s,
        &["--preserve-digests"],
        &docker("rr/chunked:chunky"),
        &out,
        "chunky",
        &mdigest,
        &[&layer, &small, &cfg_digest],
    );
    assert_eq!(list_tags(&s, &docker("rr/busybox")), ["v1", "v2"]);
    let r = http(&lb, "GET", "/v2/rr/chunked/tags/list", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["tags"], serde_json::json!(["chunky"]));
    assert_catalog_has(&lb, &["rr/busybox", "rr/chunked", "rr/multi"]);
    // two pushes of the same image at once (same blobs uploaded concurrently, through both
    // replicas), then both tags pull
    let (big_layout, big) = fixtures::large(s.join("in-big"), "big", 12 << 20, 103, true).unwrap();
    std::thread::scope(|sc| {
        let pushes: Vec<_> = ["rr/race:1", "rr/race:2", "rr/race2:1"]
            .into_iter()
            .map(|r| {
                let (s, src, dst) = (&s, big_layout.reference("big"), docker(r));
                sc.spawn(move || skopeo_copy_with(s, &[], &src, &dst, LARGE_TIMEOUT))
            })
            .collect();
        for p in pushes {
            p.join().expect("concurrent push");
        }
    });
    let big_blobs = [big.config.digest.as_str(), big.layers[0].digest.as_str()];
    for (r, tag) in [("rr/race:1", "race1"), ("rr/race:2", "race2"), ("rr/race2:1", "race3")] {
        copy_out_and_check(&s, &[], &docker(r), &out, tag, &big.manifest.digest, &big_blobs);
    }
    println!("== skopeo through haproxy took {:.1?}", t2.elapsed());
    let t3 = Instant::now();

    // ---- a tag moved on one replica's own port is seen at once on the other's
    let manifests = [
        (&m.amd64.manifest, fs::read(m_layout.blob_path(&m.amd64.manifest.digest)).unwrap()),
        (&m.arm64.manifest, fs::read(m_layout.blob_path(&m.arm64.manifest.digest)).unwrap()),
        (&m.index, fs::read(m_layout.blob_path(&m.index.digest)).unwrap()),
    ];
    let accept_all =
        [("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")];
    for round in 0..6 {
        let (writer, reader) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (desc, body) = &manifests[round % 3];
        let r = http_send(
            &writer.host(),
            "PUT",
            "/v2/rr/multi/manifests/moving",
            &[("Content-Type", desc.media_type.as_str())],
            Some(body),
        )
        .unwrap();
        assert_eq!(r.status, 201, "PUT moving on {}: {}", writer.host(), String::from_utf8_lossy(&r.body));
        let r = http(&reader.host(), "HEAD", "/v2/rr/multi/manifests/moving", &accept_all).unwrap();
        assert_eq!(
            r.header("docker-content-digest"),
            Some(desc.digest.as_str()),
            "round {round}: tag moved on {} not seen at once on {} (status {})",
            writer.host(),
            reader.host(),
            r.status
        );
        let r = http(&reader.host(), "GET", "/v2/rr/multi/manifests/moving", &accept_all).unwrap();
        assert_eq!(
            (r.status, sha256_digest(&r.body)),
            (200, desc.digest.clone()),
            "round {round}: GET on the other"
        );
        let r = http(&reader.host(), "GET", "/v2/rr/multi/tags/list", &[]).unwrap();
        assert_eq!(r.json()["tags"], serde_json::json!(["1", "moving"]), "round {round}: tags on the other");
    }
    // and a deletion
    let r =
        http(&a.host(), "DELETE", &format!("/v2/rr/busybox/manifests/{}", bb.manifest.digest), &[]).unwrap();
    assert_eq!(r.status, 202, "DELETE on a: {}", String::from_utf8_lossy(&r.body));
    let r = http(&b.host(), "GET", "/v2/rr/busybox/manifests/v1", &accept_all).unwrap();
    assert_eq!(r.status, 404, "deleted on a, still on b: {}", String::from_utf8_lossy(&r.body));
    println!("== tag moves across replicas took {:.1?}", t3.elapsed());

    // ---- haproxy did spread the requests
    let stats = http(&format!("127.0.0.1:{sport}"), "GET", "/stats;csv", &[]).unwrap();
    let csv = String::from_utf8_lossy(&stats.body).into_owned();
    let stot = |server: &str| -> u64 {
        csv.lines()
            .find(|l| l.starts_with(&format!("donjons,{server},")))
            .and_then(|l| l.split(',').nth(7))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no stot for {server} in haproxy stats:\n{csv}"))
    };
    let (sa, sb) = (stot("a"), stot("b"));
    let log_a = fs::read_to_string(s.join("a.log")).unwrap();
    let log_b = fs::read_to_string(s.join("b.log")).unwrap();
    let access = |log: &str| log.lines().filter(|l| l.contains("donjon::access")).count();
    let upload_lines = |log: &str, id: &str, method: &str| {
        log.lines()
            .filter(|l| {
                l.contains("donjon::access") && l.contains(id) && l.contains(&format!("method={method}"))
            })
            .count()
    };
    println!("haproxy sessions: a={sa} b={sb}; access log lines: a={} b={}", access(&log_a), access(&log_b));
    for (id, name) in [(&upload_id, "large"), (&small_id, "small")] {
        println!(
            "upload {name} ({id}): PATCH a={} b={}, GET a={} b={}, PUT a={} b={}",
            upload_lines(&log_a, id, "PATCH"),
            upload_lines(&log_b, id, "PATCH"),
            upload_lines(&log_a, id, "GET"),
            upload_lines(&log_b, id, "GET"),
            upload_lines(&log_a, id, "PUT"),
            upload_lines(&log_b, id, "PUT"),
        );
    }
    assert!(sa >= 10 && sb >= 10, "haproxy did not spread: a={sa} b={sb}");
    assert!(
        upload_lines(&log_a, &upload_id, "PATCH") > 0 && upload_lines(&log_b, &upload_id, "PATCH") > 0,
        "the PATCHes of upload {upload_id} did not reach both replicas"
    );

    drop(lb_daemon);
    a.stop();
    b.stop();
    drop(g);
    println!("== total {:.1?}", t0.elapsed());
}
