//! The S3 server a test runs on: a SeaweedFS cluster by default ([`crate::seaweedfs`]), or a
//! single-node Garage ([`crate::garage`]) with `DONJON_S3_SERVER=garage`.
//!
//! Both are real servers on free loopback ports, killed by their PIDs when the value drops.
//! `start` returns `None` (after printing why) when the server's binary is missing, unless
//! `DONJON_S3=1`, where that is a failure.

use std::path::{Path, PathBuf};

use crate::garage::Garage;
use crate::seaweedfs::SeaweedFs;

/// Attempts at starting a server (a free port can be taken between probing and binding).
const START_ATTEMPTS: usize = 3;

/// Starts a server of `what` with `bin` (`None`: not installed, where `missing` says how to
/// install it): `None` when it is missing and `DONJON_S3` is not "1" (printing why); a panic
/// when it is missing and `DONJON_S3=1`, or when every attempt fails.
pub(crate) fn start_server<T>(
    what: &str,
    bin: Option<PathBuf>,
    missing: &str,
    try_start: impl Fn(&Path) -> Result<T, String>,
) -> Option<T> {
    let required = std::env::var("DONJON_S3").map(|v| v == "1").unwrap_or(false);
    let Some(bin) = bin else {
        if required {
            panic!("DONJON_S3=1 but {missing}: run .ci/s3-deps.sh");
        }
        eprintln!("skipping: {missing}; run .ci/s3-deps.sh, and set DONJON_S3=1 to make this a failure");
        return None;
    };
    let mut errors = Vec::new();
    for attempt in 1..=START_ATTEMPTS {
        match try_start(&bin) {
            Ok(server) => return Some(server),
            Err(e) => {
                eprintln!("{what}: start attempt {attempt}/{START_ATTEMPTS} failed: {e}");
                errors.push(e);
            }
        }
    }
    panic!("{what} ({}) did not start:\n{}", bin.display(), errors.join("\n---\n"));
}

/// `bytes` random bytes from /dev/urandom, as hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The last `lines` lines of `s`.
pub(crate) fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub enum S3Server {
    SeaweedFs(SeaweedFs),
    Garage(Garage),
}

impl S3Server {
    /// Starts the server `DONJON_S3_SERVER` names (`seaweedfs`, the default, or `garage`) with
    /// `bucket` created.
    pub fn start(bucket: &str) -> Option<S3Server> {
        match std::env::var("DONJON_S3_SERVER").as_deref() {
            Ok("garage") => Garage::start(bucket).map(S3Server::Garage),
            Ok("seaweedfs") | Ok("") | Err(_) => SeaweedFs::start(bucket).map(S3Server::SeaweedFs),
            Ok(other) => panic!("DONJON_S3_SERVER={other}: expected `seaweedfs` or `garage`"),
        }
    }

    /// "seaweedfs" or "garage", for messages.
    pub fn name(&self) -> &'static str {
        match self {
            S3Server::SeaweedFs(_) => "seaweedfs",
            S3Server::Garage(_) => "garage",
        }
    }

    /// "http://127.0.0.1:PORT", the S3 API (path-style).
    pub fn endpoint(&self) -> String {
        match self {
            S3Server::SeaweedFs(s) => s.endpoint(),
            S3Server::Garage(g) => g.endpoint(),
        }
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        match self {
            S3Server::SeaweedFs(s) => s.region(),
            S3Server::Garage(g) => g.region(),
        }
    }

    pub fn access_key(&self) -> &str {
        match self {
            S3Server::SeaweedFs(s) => s.access_key(),
            S3Server::Garage(g) => g.access_key(),
        }
    }

    pub fn secret_key(&self) -> &str {
        match self {
            S3Server::SeaweedFs(s) => s.secret_key(),
            S3Server::Garage(g) => g.secret_key(),
        }
    }

    pub fn bucket(&self) -> &str {
        match self {
            S3Server::SeaweedFs(s) => s.bucket(),
            S3Server::Garage(g) => g.bucket(),
        }
    }

    /// A donjon store configuration for the bucket, under `root` (conditional writes where the
    /// server has them: on for SeaweedFS, off for Garage).
    pub fn store_config(&self, root: &str) -> donjon_store::S3Config {
        match self {
            S3Server::SeaweedFs(s) => s.store_config(root),
            S3Server::Garage(g) => g.store_config(root),
        }
    }

    /// Creates another bucket the test's key may use.
    pub fn create_bucket(&self, name: &str) {
        match self {
            S3Server::SeaweedFs(s) => s.create_bucket(name),
            S3Server::Garage(g) => g.create_bucket(name),
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        match self {
            S3Server::SeaweedFs(s) => s.log(),
            S3Server::Garage(g) => g.log(),
        }
    }
}
