//! Temporary directories and daemons, each stopped by its PID when its guard is dropped; the
//! `donjon` binary under test.

use std::fs;
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A temporary directory, kept with `DONJON_E2E_KEEP=1`.
pub(crate) struct Scratch {
    pub(crate) dir: Option<tempfile::TempDir>,
    pub(crate) path: PathBuf,
}

impl Scratch {
    pub(crate) fn new(label: &str) -> Self {
        // Short paths: unix socket paths must stay under 108 bytes.
        let dir =
            tempfile::Builder::new().prefix(&format!("dj-{label}-")).tempdir_in("/tmp").expect("tempdir");
        let path = dir.path().to_path_buf();
        println!("[{label}] scratch directory {}", path.display());
        Self { dir: Some(dir), path }
    }

    pub(crate) fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    /// `join(p)`, created.
    pub(crate) fn dir(&self, p: &str) -> PathBuf {
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
pub(crate) struct Daemon {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
    pub(crate) grace: Duration,
}

impl Daemon {
    pub(crate) fn spawn(name: &str, c: &mut Command, log: &Path) -> Self {
        let line = command_line(c);
        println!("$ {line} &   # log: {}", log.display());
        let f = fs::File::create(log).expect("log file");
        c.stdin(Stdio::null()).stdout(f.try_clone().expect("log file")).stderr(f).process_group(0);
        let child = c.spawn().unwrap_or_else(|e| panic!("cannot start {name} (`{line}`): {e}"));
        println!("  -> {name} pid {}", child.id());
        Self { name: name.to_string(), child, log: log.to_path_buf(), grace: Duration::from_secs(20) }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log_tail(&self) -> String {
        let s = fs::read_to_string(&self.log).unwrap_or_default();
        tail(&s, 8000).to_string()
    }

    /// SIGTERM by PID; waits up to the grace period, then SIGKILL. Returns the exit status.
    pub(crate) fn stop(&mut self) -> ExitStatus {
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
    pub(crate) fn wait_until(&mut self, what: &str, ready: impl FnMut() -> bool) {
        if let Err(e) = self.wait_ready(what, ready) {
            panic!("{e}");
        }
    }

    /// [`wait_until`](Self::wait_until), returning the failure (with the log) instead.
    pub(crate) fn wait_ready(&mut self, what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
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
pub(crate) struct Donjon {
    pub(crate) daemon: Daemon,
    pub(crate) port: u16,
    pub(crate) data: PathBuf,
}

impl Donjon {
    pub(crate) fn start(scratch: &Scratch) -> Self {
        Self::start_with(scratch, None)
    }

    /// On a free port (retried should another process take the port between our probe and
    /// donjon's bind), with data in `scratch/data`; TLS with `tls = Some((cert, key))`.
    pub(crate) fn start_with(scratch: &Scratch, tls: Option<(&Path, &Path)>) -> Self {
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
    pub(crate) fn start_on(data: &Path, port: u16, log: &Path) -> Self {
        Self::try_start(data, port, log, None).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn try_start(
        data: &Path,
        port: u16,
        log: &Path,
        tls: Option<(&Path, &Path)>,
    ) -> Result<Self, String> {
        Self::try_start_full(Some(data), port, log, tls, None)
    }

    /// With `--config-file config` (e.g. a Distribution config.yml: `http.addr` is overridden by
    /// `--bind`), on a free port (retried like [`start_with`](Self::start_with)). Without
    /// `data`, no `-d`: the data directory comes from the file (`storage.filesystem`).
    pub(crate) fn start_config(data: Option<&Path>, config: &Path, log: &Path) -> Self {
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

    pub(crate) fn try_start_full(
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
        // The suites delete (skopeo delete, donjon rm, garbage collection); deletes are off by
        // default, as in Distribution (tests/binary.rs checks that).
        c.env("REGISTRY_STORAGE_DELETE_ENABLED", "true");
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
    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `docker://127.0.0.1:PORT/<repo_ref>`
    pub(crate) fn docker(&self, repo_ref: &str) -> String {
        format!("docker://{}/{repo_ref}", self.host())
    }

    pub(crate) fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http(&self.host(), "GET", path, headers).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Stops gracefully (SIGTERM) and requires a clean exit.
    pub(crate) fn stop(mut self) -> PathBuf {
        let s = self.daemon.stop();
        assert!(s.success(), "donjon did not exit cleanly on SIGTERM: {s}; log:\n{}", self.daemon.log_tail());
        self.data.clone()
    }
}
