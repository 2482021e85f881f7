//! The S3 server a test runs on: a SeaweedFS cluster by default ([`crate::seaweedfs`]), or a
//! single-node Garage ([`crate::garage`]) with `DONJON_S3_SERVER=garage`.
//!
//! Both are real servers on free loopback ports, killed by their PIDs when the value drops.
//! `start` returns `None` (after printing why) when the server's binary is missing, unless
//! `DONJON_S3=1`, where that is a failure.

use crate::garage::Garage;
use crate::seaweedfs::SeaweedFs;

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
