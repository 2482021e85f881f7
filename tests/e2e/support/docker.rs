//! A private dockerd (its own containerd, data root, exec root and socket) and its CLI.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use super::*;

/// dockerd with `insecure` (a `HOST:PORT`) as an insecure registry; stopped with its
/// containerd.
pub(crate) struct Dockerd {
    daemon: Daemon,
    dir: PathBuf,
    sock: PathBuf,
    ctrd: Option<Containerd>,
}

impl Dockerd {
    pub(crate) fn start(s: &Scratch, insecure: &str) -> Self {
        Self::start_with(s, insecure, &[])
    }

    /// The same, with more dockerd flags (`--registry-mirror URL`).
    pub(crate) fn start_with(s: &Scratch, insecure: &str, extra: &[&str]) -> Self {
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
        c.args(["--storage-driver", "vfs", "--insecure-registry", insecure]);
        c.args(extra);
        c.env("DOCKER_CONFIG", d.join("cli"));
        let mut daemon = Daemon::spawn("dockerd", &mut c, &d.join("dockerd.log"));
        daemon.wait_until("serving", || sock.exists() && probe(docker_on(&d, &sock).arg("version")));
        Self { daemon, dir: d, sock, ctrd: Some(ctrd) }
    }

    /// The docker CLI, on this daemon, with its own credentials file.
    pub(crate) fn docker(&self) -> Command {
        docker_on(&self.dir, &self.sock)
    }

    /// Stops dockerd (by its PID), then its containerd.
    pub(crate) fn stop(mut self) -> ExitStatus {
        let status = self.daemon.stop();
        drop(self.ctrd.take());
        status
    }
}

fn docker_on(dir: &Path, sock: &Path) -> Command {
    let mut c = cmd_path(&docker_cli());
    c.env("DOCKER_CONFIG", dir.join("cli"));
    c.arg("-H").arg(format!("unix://{}", sock.display()));
    c
}
