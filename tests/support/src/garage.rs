//! A private single-node Garage (an S3-compatible store, crate `garage` v2.5) for the S3 tests.
//!
//! `Garage::start("bucket")` runs `garage server` in a temp dir on free 127.0.0.1 ports, applies a
//! one-node layout, creates an access key and the bucket, and allows the key on it. Dropping the
//! value kills the server (by its PID) and removes the temp dir.
//!
//! The binary is `garage` on PATH, else `~/.cargo/bin/garage` (what `.ci/s3-deps.sh` installs).
//! Without it, `start` prints why and returns `None` so the caller can skip, unless `DONJON_S3=1`,
//! where a missing binary is a failure. Only std, tempfile and donjon-store's `S3Config`: no S3
//! client here (S3 needs SigV4).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use crate::s3server::{random_hex, tail};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The `s3_region` of the generated config: clients must sign for this region.
pub const REGION: &str = "garage";

/// How long the node may take to answer the CLI after `garage server` starts.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one CLI command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a step that waits for the layout to take effect may retry.
const SETUP_RETRY: Duration = Duration::from_secs(20);

pub struct Garage {
    child: Child,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    s3_port: u16,
    access_key: String,
    secret_key: String,
    bucket: String,
    // Last: removed after the server is killed (fields drop after `Drop::drop`, in order).
    dir: tempfile::TempDir,
}

impl Garage {
    /// Starts a single-node Garage on free 127.0.0.1 ports in a temp dir, applies a layout,
    /// creates an access key and a bucket (name given), allows the key on the bucket.
    /// Returns None (after printing why) when the garage binary is missing and env DONJON_S3 is
    /// not "1"; panics when DONJON_S3=1 and garage is missing, or when a present garage fails.
    pub fn start(bucket: &str) -> Option<Garage> {
        let missing = "no garage binary (not on PATH nor at ~/.cargo/bin/garage)";
        crate::s3server::start_server("garage", find_binary(), missing, |bin| Garage::try_start(bin, bucket))
    }

    /// "http://127.0.0.1:PORT", the S3 API (path-style; no root_domain is configured).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The `s3_region` of its config.
    pub fn region(&self) -> &str {
        REGION
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A donjon store configuration for this Garage's bucket, under `root`. Garage has no
    /// conditional writes, so they are off (the conditional path is tested on object_store's
    /// in-memory store).
    pub fn store_config(&self, root: &str) -> donjon_store::S3Config {
        donjon_store::S3Config {
            bucket: self.bucket.clone(),
            region: Some(REGION.into()),
            endpoint: Some(self.endpoint()),
            access_key: Some(self.access_key.clone()),
            secret_key: Some(self.secret_key.clone()),
            root: Some(root.into()),
            path_style: true,
            conditional_writes: Some(false),
            ..Default::default()
        }
    }

    /// Creates another bucket and allows the key on it (read + write + owner).
    pub fn create_bucket(&self, name: &str) {
        self.try_create_bucket(name).unwrap_or_else(|e| panic!("garage: create bucket {name}: {e}"));
    }

    /// Runs `garage -c CONFIG ARGS...` against this node (bounded in time) and returns its stdout;
    /// panics if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        self.run(args).unwrap_or_else(|e| panic!("garage {}: {e}", args.join(" ")))
    }

    /// The server's log file (stdout + stderr), for debugging a failing test.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_start(bin: &Path, bucket: &str) -> Result<Garage, String> {
        let dir = tempfile::Builder::new()
            .prefix("donjon-garage-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let ports = crate::net::free_ports(2)?;
        let (s3_port, rpc_port) = (ports[0], ports[1]);
        let config = dir.path().join("garage.toml");
        let toml = config_toml(dir.path(), s3_port, rpc_port, &random_hex(32)?);
        fs::write(&config, toml).map_err(|e| format!("write {}: {e}", config.display()))?;

        let log = dir.path().join("garage.log");
        let out = fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("{e}"))?;
        let mut cmd = Command::new(bin);
        clean_env(&mut cmd);
        cmd.arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", std::env::var("DONJON_GARAGE_LOG").unwrap_or_else(|_| "garage=info".into()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().map_err(|e| format!("spawn {}: {e}", bin.display()))?;

        let mut garage = Garage {
            child,
            bin: bin.to_path_buf(),
            config,
            log,
            s3_port,
            access_key: String::new(),
            secret_key: String::new(),
            bucket: bucket.to_string(),
            dir,
        };
        // On error `garage` drops here: the server is killed and the temp dir removed.
        garage.setup(bucket).map_err(|e| format!("{e}\n--- garage log ---\n{}", tail(&garage.log(), 40)))?;
        Ok(garage)
    }

    fn setup(&mut self, bucket: &str) -> Result<(), String> {
        // 1. The node answers RPC (the CLI talks to it over RPC with the config's rpc_secret).
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("garage server exited early: {status}"));
            }
            match self.run(&["status"]) {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("not ready after {BOOT_TIMEOUT:?}: {e}"));
                }
                Err(_) => thread::sleep(Duration::from_millis(200)),
            }
        }

        // 2. A one-node layout: `node id -q` prints "<64 hex>@127.0.0.1:PORT".
        let id = self.run(&["node", "id", "-q"])?;
        let node = id.trim().split('@').next().unwrap_or_default().to_string();
        if node.len() != 64 || !node.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("unexpected `garage node id -q` output: {id:?}"));
        }
        self.run(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        self.run(&["layout", "apply", "--version", "1"])?;

        // 3. An access key. `key create` prints a table with "Key ID:" and "Secret key:" rows.
        let name = "donjon-test";
        let out = self.retry(&["key", "create", name])?;
        let (id, secret) = match parse_key(&out) {
            Some(k) => k,
            None => {
                let info = self.run(&["key", "info", "--show-secret", name])?;
                parse_key(&info).ok_or_else(|| format!("no key id/secret in:\n{out}\n{info}"))?
            }
        };
        self.access_key = id;
        self.secret_key = secret;

        // 4. The bucket, with the key allowed on it.
        self.try_create_bucket(bucket)?;

        // 5. The S3 API answers HTTP.
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            match http_status(self.s3_port) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("S3 API on port {} not answering: {e}", self.s3_port));
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn try_create_bucket(&self, name: &str) -> Result<(), String> {
        self.retry(&["bucket", "create", name])?;
        self.retry(&["bucket", "allow", "--read", "--write", "--owner", name, "--key", &self.access_key])?;
        Ok(())
    }

    /// `run`, retried for a while: right after `layout apply` the tables may not accept writes yet.
    fn retry(&self, args: &[&str]) -> Result<String, String> {
        let deadline = Instant::now() + SETUP_RETRY;
        loop {
            match self.run(args) {
                Ok(out) => return Ok(out),
                // Creating what a failed-looking attempt did create: done.
                Err(e) if e.contains("already exists") && args.starts_with(&["bucket", "create"]) => {
                    return Ok(String::new());
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// Runs the CLI, bounded by CLI_TIMEOUT; Ok(stdout) on exit status 0.
    fn run(&self, args: &[&str]) -> Result<String, String> {
        // Unique names: `cli` may be called from several threads at once.
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let out_path = self.dir.path().join(format!("cli-{n}.out"));
        let err_path = self.dir.path().join(format!("cli-{n}.err"));
        let out = fs::File::create(&out_path).map_err(|e| e.to_string())?;
        let err = fs::File::create(&err_path).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.bin);
        clean_env(&mut cmd);
        cmd.arg("-c").arg(&self.config).args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        let mut child = cmd.spawn().map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        let deadline = Instant::now() + CLI_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`garage {}` timed out after {CLI_TIMEOUT:?}", args.join(" ")));
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = fs::read_to_string(&err_path).unwrap_or_default();
        let _ = fs::remove_file(&out_path);
        let _ = fs::remove_file(&err_path);
        if status.success() {
            Ok(stdout)
        } else {
            Err(format!("`garage {}` failed ({status}): {}{}", args.join(" "), stdout.trim(), stderr.trim()))
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        // SIGKILL by PID (std's Child::kill), then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `garage` on PATH, else `~/.cargo/bin/garage`.
fn find_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("garage")).collect::<Vec<_>>())
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/garage"));
    on_path.into_iter().chain(home).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// The environment without GARAGE_* variables (GARAGE_RPC_HOST, GARAGE_RPC_SECRET, ... would
/// override the config).
fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GARAGE_") {
            cmd.env_remove(&k);
        }
    }
}

fn config_toml(dir: &Path, s3_port: u16, rpc_port: u16, rpc_secret: &str) -> String {
    let dir = dir.display();
    format!(
        r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"

replication_factor = 1
consistency_mode = "consistent"

rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{rpc_secret}"

[s3_api]
api_bind_addr = "127.0.0.1:{s3_port}"
s3_region = "{REGION}"
"#
    )
}

/// The key id ("GK" + hex) and secret (64 hex) from `key create` / `key info --show-secret`.
fn parse_key(out: &str) -> Option<(String, String)> {
    let field = |label: &str| {
        out.lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty() && !v.contains(' ') && !v.starts_with('('))
    };
    let id = field("Key ID:")?;
    let secret = field("Secret key:")?;
    (id.starts_with("GK") && secret.len() == 64).then_some((id, secret))
}

/// The status code of a plain `GET /` (any HTTP answer proves the S3 API is listening).
pub fn http_status(port: u16) -> Result<u16, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head);
    line.strip_prefix("HTTP/1.1 ")
        .and_then(|code| code.trim().parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
}
