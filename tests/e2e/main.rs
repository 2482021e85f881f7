//! End-to-end tests with real registry clients: skopeo, containerd's `ctr`, podman, buildah and
//! docker, each against its own `donjon` binary on a free 127.0.0.1 port with a temporary data
//! directory.
//!
//! They run only with `DONJON_E2E=1` (otherwise each test prints "skipped: set DONJON_E2E=1" and
//! passes); with it, a missing tool is a failure. Install the tools with `.ci/e2e-deps.sh`
//! (Debian 12, root), then:
//!
//! ```text
//! DONJON_E2E=1 cargo test --test e2e -- --test-threads=2 --nocapture
//! ```
//!
//! The containerd, podman/buildah and docker suites start daemons as root and run containers,
//! each in its own temporary directories (roots, state, sockets); they take a global lock so
//! that at most one of them runs at a time. Every external command has a timeout and is printed
//! before it runs; every daemon is stopped by its PID when its guard is dropped.
//!
//! The migration tests (`migration_*`) hand one storage back and forth between donjon and CNCF
//! Distribution (`docker-registry`); `replicas::replicas_behind_round_robin` runs two donjons on one bucket
//! behind haproxy. The S3 ones need Garage (`.ci/s3-deps.sh` installs it with haproxy,
//! docker-registry and curl); without it they are skipped, unless `DONJON_S3=1`.
//!
//! Knobs: `DONJON_E2E_LARGE_MB` (size of the large layer, default 64),
//! `DONJON_E2E_KEEP=1` (keep the temporary directories, printing where they are).
//!
//! # Layout
//!
//! - `support`: tools and commands, daemons and the `donjon` binary, a raw HTTP client,
//!   skopeo helpers, and `support::fixtures` (deterministic OCI layouts).
//! - One module per client or concern: `skopeo` (with the restart test), `containerd`,
//!   `auth` (every client logging in to an auth-enabled donjon),
//!   `podman` (podman and buildah), `docker`, `migration` (to and from Distribution),
//!   `replicas` (two donjons on one bucket behind haproxy), `container` (donjon's own image,
//!   built with buildah and run with podman), `distribution_chart` (a Distribution chart
//!   user's config.yml: S3, htpasswd and TLS), `browse` (the web page in headless Chromium,
//!   driven by playwright-core from `tests/browser`), `cli` (`donjon ls`, `inspect` and `rm`
//!   against Distribution with htpasswd).

#[macro_use]
mod support;

mod auth;
mod browse;
mod cli;
mod container;
mod containerd;
mod distribution_chart;
mod docker;
mod gc;
mod migration;
mod mirror;
mod podman;
mod redirects;
mod replicas;
mod skopeo;

use std::fs;
use std::path::Path;
use std::process::Command;
use support::*;

use serde_json::Value;

#[test]
fn fixtures_are_deterministic_and_well_formed() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let la = fixtures::OciLayout::create(a.path()).unwrap();
    let lb = fixtures::OciLayout::create(b.path()).unwrap();
    let ia = la.tiny_arm64_image().unwrap();
    let ib = lb.tiny_arm64_image().unwrap();
    assert_eq!(ia.manifest, ib.manifest);
    let ga = la.large_image(100_000, 7, false).unwrap();
    let gb = lb.large_image(100_000, 7, false).unwrap();
    assert_eq!(ga.manifest, gb.manifest);
    // The streamed gzip is the in-memory one, whatever the write sizes.
    let za = la.large_image(200_000, 7, true).unwrap();
    let t = lb.large_image(200_000, 7, false).unwrap();
    let tar = fs::read(lb.blob_path(&t.layers[0].digest)).unwrap();
    assert_eq!(format!("sha256:{}", fixtures::sha256_hex(&fixtures::gzip(&tar))), za.layers[0].digest);
    assert_eq!(za.diff_ids[0], format!("sha256:{}", fixtures::sha256_hex(&tar)));
    // gzip(1) reads it back.
    if let Ok(out) = Command::new("gzip").arg("-dc").arg(la.blob_path(&za.layers[0].digest)).output() {
        assert!(out.status.success());
        assert_eq!(out.stdout, tar);
    }
    // a tar: 512 header + 100_000 data padded to 100_352 + 1024 trailer
    assert_eq!(ga.layers[0].size, 512 + 100_352 + 1024);
    assert_eq!(file_sha256(&la.blob_path(&ga.layers[0].digest)), ga.layers[0].hex());
    let s = la.artifact(&ia.manifest, "x").unwrap();
    let m: Value = serde_json::from_slice(&fs::read(la.blob_path(&s.manifest.digest)).unwrap()).unwrap();
    assert_eq!(m["subject"]["digest"], ia.manifest.digest.as_str());
    assert_eq!(
        m["config"]["digest"],
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    if Path::new(fixtures::HOST_BUSYBOX).exists() {
        let x = la.busybox_image().unwrap();
        let y = lb.busybox_image().unwrap();
        assert_eq!(x.manifest, y.manifest);
        assert_ne!(x.layers[0].digest, x.diff_ids[0], "gzip layer digest vs diff_id");
    }
}
