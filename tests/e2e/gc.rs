//! Garbage collection on a live registry, judged by CNCF Distribution's own collector: after
//! `donjon garbage-collect`, `registry garbage-collect --dry-run` on the same directory finds
//! nothing more to delete, and every image that stays pulls completely with skopeo.

use std::process::Command;
use std::time::Duration;

use super::support::*;

/// `donjon garbage-collect CONFIG --delete-untagged --grace 0s --settle 1s`: its stdout and
/// stderr.
fn donjon_gc(config: &std::path::Path, extra: &[&str]) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_donjon"));
    c.arg("garbage-collect")
        .arg(config)
        .args(["--delete-untagged", "--grace", "0s", "--settle", "1s"])
        .args(extra);
    let out = run_with(&mut c, Duration::from_secs(120));
    assert!(out.success(), "garbage-collect failed\n{}", out.describe());
    format!("{}{}", out.stdout, out.stderr)
}

#[test]
fn online_gc_leaves_nothing_for_distributions_collector() {
    require_e2e!();
    let s = Scratch::new("gc");
    let root = s.dir("registry");
    let storage = format!("  filesystem:\n    rootdirectory: {}\n", root.display());
    let config = s.join("gc.yml");
    std::fs::write(&config, distribution_config(free_port(), &storage)).unwrap();
    let dj = Donjon::start_config(None, &config, &s.join("donjon.log"));

    let (bb_layout, bb) = fixtures::busybox(s.join("in-bb"), "v1").unwrap();
    let (m_layout, m) = fixtures::multi_arch(s.join("in-multi"), "multi").unwrap();
    let (la_layout, la) = fixtures::large(s.join("in-la"), "a", 3 << 20, 201, true).unwrap();
    let (lb_layout, _lb) = fixtures::large(s.join("in-lb"), "b", 3 << 20, 202, true).unwrap();
    skopeo_copy(&s, &[], &bb_layout.reference("v1"), &dj.docker("gc/keep:v1"));
    skopeo_copy(&s, &["--all"], &m_layout.reference("multi"), &dj.docker("gc/multi:1"));
    // a tag moved to another image: the first one is untagged garbage
    skopeo_copy(&s, &[], &la_layout.reference("a"), &dj.docker("gc/moved:t"));
    skopeo_copy(&s, &[], &bb_layout.reference("v1"), &dj.docker("gc/moved:t"));
    // a deleted image
    skopeo_copy(&s, &[], &lb_layout.reference("b"), &dj.docker("gc/deleted:x"));
    let mut c = skopeo(&s);
    c.args(["delete", "--retry-times", "0", "--tls-verify=false", &dj.docker("gc/deleted:x")]);
    ok(&mut c);
    let catalog = http(&dj.host(), "GET", "/v2/_catalog", &[]).unwrap().json();
    assert!(
        !catalog["repositories"].as_array().unwrap().contains(&serde_json::json!("gc/deleted")),
        "a repository with no manifest left is not listed: {catalog}"
    );

    // With the default grace (1h), everything is too young to go: the report says so, and how
    // to collect it now.
    let mut c = Command::new(env!("CARGO_BIN_EXE_donjon"));
    c.args(["garbage-collect", "--dry-run", "--delete-untagged"]).arg(&config);
    let held = ok(&mut c);
    assert!(held.contains("would free 0 blob(s)"), "{held}");
    assert!(held.contains("the 1h grace period holds back"), "{held}");
    assert!(held.contains("run with --grace 0s"), "{held}");

    // the dry run says what the run then does
    let dry = donjon_gc(&config, &["--dry-run"]);
    let run = donjon_gc(&config, &[]);
    let items = |out: &str, word: &str| -> Vec<String> {
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.split_once(&format!(" {word}: ")).map(|(kind, rest)| format!("{kind} {rest}")))
            .collect();
        v.sort();
        v
    };
    let (would, did) = (items(&dry, "eligible for deletion"), items(&run, "deleted"));
    assert!(!would.is_empty(), "{dry}");
    assert_eq!(would, did, "dry run:\n{dry}\nrun:\n{run}");
    for l in &la.layers {
        assert!(
            did.iter().any(|i| i.contains(&l.digest)),
            "the untagged image's layer {} went:\n{run}",
            l.digest
        );
    }
    assert!(run.contains("garbage collection freed"), "{run}");
    assert!(
        run.contains("collecting garbage (grace 0s, settle 1s)"),
        "durations as people write them: {run}"
    );
    assert!(
        run.contains("waiting 1s (settle) for manifest pushes under way"),
        "it says what it waits for: {run}"
    );

    // Distribution's own collector, on the same directory, finds nothing more
    let mut c = Command::new(tool("docker-registry"));
    // Without --delete-untagged: Distribution 2.8's own --delete-untagged counts the children of
    // an index as untagged and would delete them (seen here: both children of gc/multi:1),
    // which breaks the multi-arch image; donjon keeps what an index lists.
    c.args(["garbage-collect", "--dry-run"]).arg(&config);
    for (k, _) in std::env::vars() {
        if k.starts_with("REGISTRY_") {
            c.env_remove(k);
        }
    }
    let out = run_with(&mut c, Duration::from_secs(120));
    assert!(out.success(), "{}", out.describe());
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("0 blobs and 0 manifests eligible for deletion"),
        "Distribution's collector would still delete something:\n{text}"
    );

    // what stays pulls completely, the registry never stopped
    let out = s.join("out");
    let blobs = |img: &fixtures::Image| -> Vec<String> {
        std::iter::once(img.config.digest.clone())
            .chain(img.layers.iter().map(|l| l.digest.clone()))
            .collect()
    };
    let bb_blobs = blobs(&bb);
    copy_out_and_check(
        &s,
        &[],
        &dj.docker("gc/keep:v1"),
        &out,
        "keep",
        &bb.manifest.digest,
        &as_str(&bb_blobs),
    );
    copy_out_and_check(
        &s,
        &[],
        &dj.docker("gc/moved:t"),
        &out,
        "moved",
        &bb.manifest.digest,
        &as_str(&bb_blobs),
    );
    copy_out_and_check(
        &s,
        &["--all"],
        &dj.docker("gc/multi:1"),
        &out,
        "multi",
        &m.index.digest,
        &[&m.arm64.layers[0].digest, &m.amd64.layers[0].digest],
    );
    dj.stop();
}
