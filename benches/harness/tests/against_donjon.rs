//! Runs `donjon-bench run` against the workspace's `donjon` binary (build it first with
//! `cargo build --bin donjon`; the test is skipped, with a message, when it is missing).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn donjon_binary() -> Option<PathBuf> {
    let target = match option_env!("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    };
    let p = target.join("debug/donjon");
    p.is_file().then_some(p)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn bench(args: &[&str], json: &std::path::Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_donjon-bench"))
        .args(args)
        .arg("--quiet")
        .arg("--json")
        .arg(json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{args:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
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
    let start = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "donjon did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://{addr}");
    let json = data.path().join("out.json");

    let r = bench(
        &["run", "--url", &url, "--workload", "push-mono", "--size", "1MiB", "--count", "3", "--pid", &pid],
        &json,
    );
    assert_eq!(r["total"]["errors"], 0, "{r}");
    assert_eq!(r["total"]["requests"], 3);
    assert_eq!(r["total"]["bytes"], 3 << 20);
    assert!(r["rss"]["peak_kib"].as_u64().unwrap() > 0, "{r}");

    let r = bench(&["run", "--url", &url, "--workload", "manifest-get-tag", "--count", "20"], &json);
    assert_eq!(r["total"]["errors"], 0, "{r}");
    assert_eq!(r["total"]["requests"], 20);
    assert!(r["total"]["ttfb_ms"]["p50"].as_f64().is_some(), "{r}");
}
