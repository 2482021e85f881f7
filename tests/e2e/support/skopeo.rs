//! skopeo: its policy and auth files, copies, raw manifests; layout and file digests.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::*;

pub(crate) fn skopeo_policy(scratch: &Scratch) -> PathBuf {
    let p = scratch.join("policy.json");
    if !p.exists() {
        fs::write(&p, br#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    }
    p
}

/// An empty credentials file in `dir` (podman insists that REGISTRY_AUTH_FILE exists).
pub(crate) fn auth_file(dir: &Path) -> PathBuf {
    let p = dir.join("auth.json");
    if !p.exists() {
        fs::write(&p, br#"{"auths":{}}"#).unwrap();
    }
    p
}

/// `skopeo` with our own signature policy and an empty registries configuration.
pub(crate) fn skopeo(scratch: &Scratch) -> Command {
    let mut c = cmd("skopeo");
    let reg = scratch.join("registries.conf");
    if !reg.exists() {
        fs::write(&reg, "unqualified-search-registries = []\n").unwrap();
    }
    c.env("CONTAINERS_REGISTRIES_CONF", &reg);
    c.env("REGISTRY_AUTH_FILE", auth_file(&scratch.path));
    c.arg("--policy").arg(skopeo_policy(scratch));
    c
}

/// `skopeo copy [extra] SRC DST` with TLS verification off on both sides.
pub(crate) fn skopeo_copy(scratch: &Scratch, extra: &[&str], src: &str, dst: &str) -> String {
    skopeo_copy_with(scratch, extra, src, dst, TIMEOUT)
}

pub(crate) fn skopeo_copy_with(
    scratch: &Scratch,
    extra: &[&str],
    src: &str,
    dst: &str,
    timeout: Duration,
) -> String {
    let mut c = skopeo(scratch);
    c.args(["copy", "--retry-times", "0"]);
    if src.starts_with("docker://") {
        c.arg("--src-tls-verify=false");
    }
    if dst.starts_with("docker://") {
        c.arg("--dest-tls-verify=false");
    }
    c.args(extra).arg(src).arg(dst);
    ok_with(&mut c, timeout)
}

/// `skopeo inspect --raw`: the manifest bytes as served.
pub(crate) fn skopeo_raw(scratch: &Scratch, image: &str) -> Vec<u8> {
    let mut c = skopeo(scratch);
    c.args(["inspect", "--raw", "--retry-times", "0"]);
    if image.starts_with("docker://") {
        c.arg("--tls-verify=false");
    }
    c.arg(image);
    ok(&mut c).into_bytes()
}

/// The digest of the manifest `skopeo inspect --raw` prints.
pub(crate) fn skopeo_raw_digest(scratch: &Scratch, image: &str) -> String {
    format!("sha256:{}", fixtures::sha256_hex(&skopeo_raw(scratch, image)))
}

/// The digest the layout at `dir` names `tag` in its index.json.
pub(crate) fn layout_digest(dir: &Path, tag: &str) -> String {
    let index: Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).expect("index.json")).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}", dir.display()))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The large layer's size in bytes.
pub(crate) fn large_size() -> u64 {
    std::env::var("DONJON_E2E_LARGE_MB").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(64) << 20
}

pub(crate) fn file_sha256(path: &Path) -> String {
    use sha2::{Digest as _, Sha256};
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
