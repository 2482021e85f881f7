//! Self-test of the Garage helper (tests/garage/mod.rs): a real single-node Garage starts, its S3
//! API answers HTTP, the bucket exists with the key allowed on it, and the key can PUT, GET, LIST
//! and DELETE an object (signed by curl's --aws-sigv4). Skips when garage is absent, unless
//! DONJON_S3=1 (then a missing garage fails). Install it with .ci/s3-deps.sh.

use donjon_test_support::garage;

use std::process::Command;

use sha2::{Digest, Sha256};

/// curl, bounded in time; returns (HTTP status, body).
fn curl(g: &garage::Garage, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body");
    let out_file = dir.path().join("out");
    std::fs::write(&body_file, body).unwrap();
    let sha = Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-X", method, "-o"])
        .arg(&out_file)
        .args(["-w", "%{http_code}"])
        .arg("--aws-sigv4")
        .arg(format!("aws:amz:{}:s3", g.region()))
        .arg("--user")
        .arg(format!("{}:{}", g.access_key(), g.secret_key()))
        .arg("-H")
        .arg(format!("x-amz-content-sha256: {sha}"));
    if method == "PUT" {
        cmd.arg("--data-binary").arg(format!("@{}", body_file.display()));
    }
    cmd.arg(format!("{}{}", g.endpoint(), path));
    let out = cmd.output().expect("run curl");
    let code = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| {
        panic!("curl {method} {path}: {}", String::from_utf8_lossy(&out.stderr));
    });
    (code, std::fs::read_to_string(&out_file).unwrap_or_default())
}

#[test]
fn garage_starts_serves_s3_and_stops() {
    let Some(g) = garage::Garage::start("donjon-smoke") else {
        return; // no garage and DONJON_S3 != 1: skipped (start printed why)
    };

    assert!(g.endpoint().starts_with("http://127.0.0.1:"), "{}", g.endpoint());
    assert_eq!(g.region(), "garage");
    assert_eq!(g.bucket(), "donjon-smoke");
    assert!(g.access_key().starts_with("GK"), "{}", g.access_key());
    assert_eq!(g.secret_key().len(), 64);

    // Liveness: any HTTP answer from the S3 endpoint (an anonymous request is refused).
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", &g.endpoint()])
        .output()
        .expect("run curl");
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(code.len() == 3 && code != "000", "no HTTP answer from {}: {code:?}", g.endpoint());
    eprintln!("anonymous GET {} -> {code}", g.endpoint());

    // The bucket exists, and a second one can be made.
    g.create_bucket("donjon-smoke-2");
    let list = g.cli(&["bucket", "list"]);
    assert!(list.contains("donjon-smoke"), "{list}");
    assert!(list.contains("donjon-smoke-2"), "{list}");
    let info = g.cli(&["bucket", "info", "donjon-smoke-2"]);
    assert!(info.contains(g.access_key()), "key not allowed on donjon-smoke-2:\n{info}");

    // The key works: PUT, GET, LIST, DELETE, signed by curl.
    let body = b"hello from donjon's garage smoke test";
    let (code, resp) = curl(&g, "PUT", "/donjon-smoke/dir/blob", body);
    assert_eq!(code, 200, "PUT: {resp}");
    let (code, resp) = curl(&g, "GET", "/donjon-smoke/dir/blob", b"");
    assert_eq!((code, resp.as_bytes()), (200, &body[..]));
    // curl 7.88's --aws-sigv4 signs the query string as written: keep it canonical (sorted keys,
    // percent-encoded values).
    let (code, resp) = curl(&g, "GET", "/donjon-smoke?list-type=2&prefix=dir%2F", b"");
    assert_eq!(code, 200, "LIST: {resp}");
    assert!(resp.contains("<Key>dir/blob</Key>"), "{resp}");
    let (code, resp) = curl(&g, "DELETE", "/donjon-smoke/dir/blob", b"");
    assert_eq!(code, 204, "DELETE: {resp}");
    let (code, _) = curl(&g, "GET", "/donjon-smoke/dir/blob", b"");
    assert_eq!(code, 404);
    let (code, _) = curl(&g, "PUT", "/donjon-smoke-2/x", b"x");
    assert_eq!(code, 200, "PUT into the second bucket");

    // Drop kills the server: its port stops answering.
    let port: u16 = g.endpoint().rsplit(':').next().unwrap().parse().unwrap();
    drop(g);
    assert!(garage::http_status(port).is_err(), "garage still answering on {port} after drop");
}
