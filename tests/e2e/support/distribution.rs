//! CNCF Distribution (Debian's `docker-registry`) as a registry of its own: the other side of
//! the migration tests, and the upstream of the pull-through cache's.

use std::fs;
use std::process::Command;
use std::time::Duration;

use super::*;

/// CNCF Distribution 2.8 (`docker-registry serve CONFIG`) on a free 127.0.0.1 port, stopped by
/// its PID (SIGTERM) when dropped.
pub(crate) struct Distribution {
    pub(crate) daemon: Daemon,
    port: u16,
}

/// A Distribution config.yml: `storage` is the driver section (`filesystem:` or `s3:`, indented
/// by two spaces), with deletes enabled, redirects off, no auth. donjon reads the same file.
pub(crate) fn distribution_config(port: u16, storage: &str) -> String {
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
    pub(crate) fn start(s: &Scratch, name: &str, storage: &str) -> Self {
        Self::start_with(s, name, storage, "")
    }

    /// The same, with `extra` top-level YAML appended (an `auth:` section).
    pub(crate) fn start_with(s: &Scratch, name: &str, storage: &str, extra: &str) -> Self {
        let mut attempt = 1;
        loop {
            let port = free_port();
            let config = s.join(&format!("{name}.yml"));
            fs::write(&config, distribution_config(port, storage) + extra).unwrap();
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
            match daemon.wait_ready("serving /v2/", || {
                http(&addr, "GET", "/v2/", &[]).is_ok_and(|r| r.status == 200 || r.status == 401)
            }) {
                Ok(()) => return Self { daemon, port },
                Err(e) if attempt < 3 && e.contains("address already in use") => {
                    println!("{name} could not bind (attempt {attempt}), trying another port");
                    attempt += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn docker(&self, repo_ref: &str) -> String {
        format!("docker://{}/{repo_ref}", self.host())
    }

    pub(crate) fn stop(mut self) {
        let st = self.daemon.stop();
        println!("{} exited: {st}", self.daemon.name);
    }
}
