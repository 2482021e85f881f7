//! Runs `donjon-bench run` against the workspace's `donjon` binary (build it first with
//! `cargo build --bin donjon`; the test is skipped, with a message, when it is missing).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{bench, free_port, wait_listening, Server};

fn donjon_binary() -> Option<PathBuf> {
    let target = match option_env!("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    };
    let p = target.join("debug/donjon");
    p.is_file().then_some(p)
}

#[test]
fn push_and_manifest_reads_against_donjon() {
    let Some(bin) = donjon_binary() else {
        eprintln!("SKIPPED: no target/debug/donjon; run `cargo build --bin donjon` first");
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(bin)
        .args(["--bind", &addr, "-d"])
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let _server = Server(child);
    wait_listening(&addr, || "donjon did not start".into());
    let url = format!("http://{addr}");

    let r = bench(&[
        "run",
        "--url",
        &url,
        "--workload",
        "push-mono",
        "--size",
        "1MiB",
        "--count",
        "3",
        "--pid",
        &pid,
    ]);
    assert_eq!(r["total"]["errors"], 0, "{r}");
    assert_eq!(r["total"]["requests"], 3);
    assert_eq!(r["total"]["bytes"], 3 << 20);
    assert!(r["rss"]["peak_kib"].as_u64().unwrap() > 0, "{r}");

    let r = bench(&["run", "--url", &url, "--workload", "manifest-get-tag", "--count", "20"]);
    assert_eq!(r["total"]["errors"], 0, "{r}");
    assert_eq!(r["total"]["requests"], 20);
    assert!(r["total"]["ttfb_ms"]["p50"].as_f64().is_some(), "{r}");
}
