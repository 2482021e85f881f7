//! A private containerd (root, state, sockets and config in temporary directories) and its
//! `ctr`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// A private containerd: root, state, sockets and config under `dir`.
pub(crate) struct Containerd {
    /// Stopped (SIGTERM by PID) when dropped.
    pub(crate) _daemon: Daemon,
    pub(crate) sock: PathBuf,
}

impl Containerd {
    pub(crate) fn start(dir: &Path) -> Self {
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
    pub(crate) fn ctr(&self) -> Command {
        let mut c = cmd("ctr");
        c.arg("-a").arg(&self.sock).args(["-n", "e2e"]);
        c
    }
}
