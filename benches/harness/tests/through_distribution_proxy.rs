//! Runs `donjon-bench run --workload pull-cold` and `pull-warm` through a pull-through cache:
//! two CNCF Distribution registries (Debian's `docker-registry`), an upstream and a mirror in
//! proxy mode (`proxy: {remoteurl: ...}`), on free 127.0.0.1 ports.
//!
//! Only with `DONJON_E2E=1` (then a missing `docker-registry` is a failure); otherwise the test
//! returns at once, with a note.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bench, free_port, wait_listening, Server};

fn docker_registry() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("docker-registry"))
        .find(|p| p.is_file())
        .expect("DONJON_E2E=1 but no docker-registry: apt-get install docker-registry")
}

/// Starts `docker-registry serve` on `port` with its storage in `dir/<name>`, as a mirror of
/// `remote` when given; waits until it listens.
fn registry(bin: &Path, dir: &Path, name: &str, port: u16, remote: Option<&str>) -> Server {
    let root = dir.join(name);
    let proxy = remote.map_or(String::new(), |r| format!("proxy: {{remoteurl: {r}}}\n"));
    let config = format!(
        "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\n\
         http: {{addr: 127.0.0.1:{port}}}\n{proxy}",
        root.display()
    );
    let config_path = dir.join(format!("{name}.yml"));
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    // As benches/vs-distribution.sh does: an AWS_CA_BUNDLE in the environment makes it fail.
    let child = Command::new(bin)
        .arg("serve")
        .arg(&config_path)
        .env_remove("AWS_CA_BUNDLE")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let server = Server(child);
    wait_listening(&format!("127.0.0.1:{port}"), || {
        std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
    });
    server
}

/// The blobs in a Distribution storage directory.
fn blobs(root: &Path) -> usize {
    let dir = root.join("docker/registry/v2/blobs/sha256");
    let Ok(prefixes) = std::fs::read_dir(dir) else { return 0 };
    prefixes
        .flatten()
        .filter_map(|p| std::fs::read_dir(p.path()).ok())
        .flat_map(|blobs| blobs.flatten())
        .filter(|b| b.path().join("data").is_file())
        .count()
}

/// Waits up to 20 s for `root` to hold at least `n` blobs (Distribution's proxy fills its cache
/// in the background, after it has answered); the count it reached.
fn wait_for_blobs(root: &Path, n: usize) -> usize {
    let start = Instant::now();
    while blobs(root) < n && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    blobs(root)
}

#[test]
fn pull_cold_and_warm_through_distribution_proxy() {
    if std::env::var("DONJON_E2E").as_deref() != Ok("1") {
        eprintln!("SKIPPED: set DONJON_E2E=1 to run pull-cold and pull-warm against docker-registry");
        return;
    }
    let bin = docker_registry();
    let dir = tempfile::tempdir().unwrap();
    let (up_port, mirror_port) = (free_port(), free_port());
    let upstream_url = format!("http://127.0.0.1:{up_port}");
    let _upstream = registry(&bin, dir.path(), "upstream", up_port, None);
    let _mirror = registry(&bin, dir.path(), "mirror", mirror_port, Some(&upstream_url));
    let mirror_url = format!("http://127.0.0.1:{mirror_port}");
    let mirror_root = dir.path().join("mirror");
    let common = ["run", "--url", &mirror_url, "--upstream", &upstream_url, "--size", "1MiB", "--count", "4"];

    let r = bench(&[&common[..], &["--workload", "pull-cold"]].concat());
    assert_eq!(r["workload"], "pull-cold", "{r}");
    assert_eq!(r["total"]["kind"], "pull-cold", "{r}");
    assert_eq!(r["total"]["requests"], 4, "{r}");
    assert_eq!(r["total"]["errors"], 0, "{r}");
    assert_eq!(r["total"]["bytes"], 4 << 20, "{r}");
    assert_eq!(r["distinct_blobs"], 4, "{r}");
    assert_eq!(r["upstream"], upstream_url.as_str(), "{r}");
    assert!(blobs(&dir.path().join("upstream")) >= 4);
    // The cold pulls went through the mirror into its cache.
    let cached = wait_for_blobs(&mirror_root, 4);
    assert!(cached >= 4, "the mirror's storage holds {cached} blobs after 4 cold pulls");

    let r = bench(&[&common[..], &["--workload", "pull-warm"]].concat());
    assert_eq!(r["total"]["kind"], "pull-warm", "{r}");
    assert_eq!(r["total"]["requests"], 4, "{r}");
    assert_eq!(r["total"]["errors"], 0, "{r}");
    assert_eq!(r["total"]["bytes"], 4 << 20, "{r}");
    let cached = wait_for_blobs(&mirror_root, 5);
    assert!(cached >= 5, "the mirror's storage holds {cached} blobs after pull-warm");
}
