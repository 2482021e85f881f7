//! podman and buildah with private storage (vfs, under the scratch directory), their own
//! configuration files, and one insecure registry.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// The OCI runtime podman and buildah use here, pinned rather than left to whichever of crun
/// and runc the machine happens to have first: Debian's podman takes crun when installed alone,
/// and crun refuses a host whose cgroups are in hybrid mode ("cgroups in hybrid mode not
/// supported"), where runc works. `.ci/e2e-deps.sh` installs both, so the pin is what is tested.
pub(crate) const RUNTIME: &str = "runc";

/// The containers tools' configuration and storage for one suite.
pub(crate) struct Containers {
    store: PathBuf,
    registries: PathBuf,
}

impl Containers {
    /// Storage under the scratch directory, with `host` (`HOST:PORT`) as an insecure registry.
    pub(crate) fn new(s: &Scratch, host: &str) -> Self {
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
                "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"{RUNTIME}\"\ntmp_dir = \"{}\"\n\
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
        Self { store, registries }
    }

    /// Replaces `registries.conf` (mirrors, say).
    pub(crate) fn registries_conf(&self, text: &str) {
        fs::write(&self.registries, text).unwrap();
    }

    /// podman on this storage.
    pub(crate) fn podman(&self) -> Command {
        let mut c = cmd("podman");
        containers_env(&mut c, &self.store, &self.registries);
        c.arg("--tmpdir").arg(self.store.join("libpod"));
        c.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", RUNTIME]);
        c
    }

    /// buildah on this storage.
    pub(crate) fn buildah(&self) -> Command {
        let mut c = cmd("buildah");
        containers_env(&mut c, &self.store, &self.registries);
        c
    }

    /// The environment podman and buildah get here, for a script that runs them (with
    /// [`storage_flags`](Self::storage_flags) on its command lines).
    pub(crate) fn env(&self, c: &mut Command) {
        environment(c, &self.store, &self.registries);
    }

    /// The flags of this suite's private storage.
    pub(crate) fn storage_flags(&self) -> Vec<String> {
        storage_flags(&self.store)
    }

    /// As root, podman asks the runtime for RLIMIT_NOFILE=1048576 and RLIMIT_NPROC=32768 unless
    /// told otherwise; above the hard limits of a process tree without CAP_SYS_RESOURCE (as in
    /// this sandbox: 20000 open files), runc fails with "error setting rlimit type 7: operation
    /// not permitted". So the limits are given, within our own hard limits.
    pub(crate) fn ulimits() -> Vec<String> {
        vec![
            "--ulimit".to_string(),
            format!("nofile={0}:{0}", hard_limit("Max open files").min(1024)),
            "--ulimit".to_string(),
            format!("nproc={0}:{0}", hard_limit("Max processes").min(32768)),
        ]
    }
}

/// This process's hard limit named `name` in /proc/self/limits ("unlimited" as u64::MAX).
fn hard_limit(name: &str) -> u64 {
    let limits = fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} limit"));
    let hard = line[name.len()..].split_whitespace().nth(1).expect("hard limit");
    hard.parse().unwrap_or(u64::MAX)
}

/// Common flags of podman and buildah: private vfs storage under `dir`.
fn containers_env(c: &mut Command, dir: &Path, registries: &Path) {
    environment(c, dir, registries);
    c.args(storage_flags(dir));
}

/// The configuration files, credentials and temporary directory podman and buildah get.
fn environment(c: &mut Command, dir: &Path, registries: &Path) {
    c.env("CONTAINERS_REGISTRIES_CONF", registries);
    c.env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"));
    c.env("CONTAINERS_CONF", dir.join("containers.conf"));
    c.env("REGISTRY_AUTH_FILE", auth_file(dir));
    c.env("TMPDIR", dir.join("tmp"));
}

/// The private vfs storage under `dir`, as flags.
fn storage_flags(dir: &Path) -> Vec<String> {
    let (root, run) = (dir.join("root"), dir.join("runroot"));
    vec![
        "--root".into(),
        root.display().to_string(),
        "--runroot".into(),
        run.display().to_string(),
        "--storage-driver".into(),
        "vfs".into(),
    ]
}
