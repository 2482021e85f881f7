//! donjon's client commands (`donjon ls`, `inspect`, `rm`) against CNCF Distribution 2.8 with
//! htpasswd auth (Basic challenges, no referrers API, no tag deletion): images pushed by
//! skopeo (an index of two, a single image under two tags, an artifact whose subject is that
//! image, and the referrers tag schema's index for it, which is what clients push to a
//! registry without the API), then listed, inspected and deleted, with `--user` and with a
//! docker `config.json`, and refused anonymously.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use super::support::*;

/// `donjon ARGS` with its own `HOME` (so that the machine's logins are never read).
fn donjon(s: &Scratch, args: &[&str]) -> Command {
    let mut c = cmd_path(Path::new(env!("CARGO_BIN_EXE_donjon")));
    c.args(args).env("HOME", s.dir("home")).env("XDG_RUNTIME_DIR", s.dir("run"));
    for k in ["DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "DONJON_REGISTRY", "DONJON_CONFIG_FILE"] {
        c.env_remove(k);
    }
    c
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn client_commands_against_distribution() {
    require_e2e!();
    let s = Scratch::new("cli");
    let htpasswd = s.join("htpasswd");
    ok(cmd("htpasswd").args(["-B", "-b", "-c"]).arg(&htpasswd).args(["alice", "alice-pw"]));
    let storage = format!("  filesystem:\n    rootdirectory: {}\n", s.dir("dist").display());
    let auth = format!("auth:\n  htpasswd:\n    realm: e2e\n    path: {}\n", htpasswd.display());
    let dist = Distribution::start_with(&s, "distribution", &storage, &auth);
    let host = dist.host();
    let creds = ["--dest-creds", "alice:alice-pw"];

    let (multi_layout, multi) = fixtures::multi_arch(s.join("multi"), "v1").unwrap();
    skopeo_copy(
        &s,
        &["--all", "--preserve-digests", creds[0], creds[1]],
        &multi_layout.reference("v1"),
        &dist.docker("e2e/multi:v1"),
    );
    let (layout, img) = fixtures::busybox(s.join("app"), "v1").unwrap();
    for tag in ["v1", "old"] {
        skopeo_copy(
            &s,
            &["--preserve-digests", creds[0], creds[1]],
            &layout.reference("v1"),
            &dist.docker(&format!("e2e/app:{tag}")),
        );
    }
    let (art_layout, art) = fixtures::artifact(s.join("art"), "sig", &img.manifest, "e2e").unwrap();
    skopeo_copy(
        &s,
        &["--preserve-digests", creds[0], creds[1]],
        &art_layout.reference("sig"),
        &dist.docker("e2e/app:sig"),
    );
    // The referrers tag schema: an index of the referrers under sha256-<hex of the subject>.
    let fallback = json!({
        "schemaVersion": 2,
        "mediaType": fixtures::MT_INDEX,
        "manifests": [{
            "mediaType": fixtures::MT_MANIFEST, "digest": art.manifest.digest, "size": art.manifest.size,
            "artifactType": art.artifact_type,
        }],
    });
    let basic = format!("Basic {}", base64_encode(b"alice:alice-pw"));
    let r = http_send(
        &host,
        "PUT",
        &format!("/v2/e2e/app/manifests/sha256-{}", img.manifest.hex()),
        &[("Authorization", &basic), ("Content-Type", fixtures::MT_INDEX)],
        Some(&serde_json::to_vec(&fallback).unwrap()),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let mut gone_layout = fixtures::OciLayout::create(s.join("gone")).unwrap();
    let gone = gone_layout.tiny_arm64_image().unwrap();
    gone_layout.tag(&gone.manifest, "v1");
    gone_layout.save().unwrap();
    skopeo_copy(
        &s,
        &["--preserve-digests", creds[0], creds[1]],
        &gone_layout.reference("v1"),
        &dist.docker("e2e/gone:v1"),
    );

    let alice = |args: &[&str]| {
        let mut v = vec![args[0], "--insecure", "-u", "alice", "-p", "alice-pw"];
        v.extend_from_slice(&args[1..]);
        donjon(&s, &v)
    };

    // ls: the catalog, then tags.
    let out = ok(&mut alice(&["ls", &host]));
    assert_eq!(out, "e2e/app\ne2e/gone\ne2e/multi\n");
    let out = json_of(&ok(&mut alice(&["ls", "--json", &format!("{host}/e2e/app")])));
    let mut tags: Vec<String> = serde_json::from_value(out["tags"].clone()).unwrap();
    tags.sort();
    let mut want =
        vec!["old".to_string(), "sig".into(), "v1".into(), format!("sha256-{}", img.manifest.hex())];
    want.sort();
    assert_eq!(tags, want);
    assert_eq!(out["registry"], host.as_str());

    // Anonymously: Distribution's 401, and how to log in.
    let o = fails(&mut donjon(&s, &["ls", "--insecure", &host]));
    assert_eq!(o.status.and_then(|s| s.code()), Some(1), "{}", o.describe());
    assert!(
        o.stderr.contains("HTTP 401 Unauthorized: UNAUTHORIZED")
            && o.stderr.contains("no credentials were sent"),
        "{}",
        o.describe()
    );

    // A docker config.json with alice's auth.
    let docker = s.dir("docker");
    fs::write(
        docker.join("config.json"),
        json!({"auths": {(host.clone()): {"auth": base64_encode(b"alice:alice-pw")}}}).to_string(),
    )
    .unwrap();
    let out =
        ok(donjon(&s, &["ls", "--insecure", &format!("{host}/e2e/multi")]).env("DOCKER_CONFIG", &docker));
    assert_eq!(out, "v1\n");

    // inspect: the index's platforms.
    let j = json_of(&ok(&mut alice(&["inspect", "--json", &format!("{host}/e2e/multi:v1")])));
    assert_eq!((&j["kind"], &j["mediaType"]), (&json!("index"), &json!(fixtures::MT_INDEX)));
    assert_eq!(j["digest"], multi.index.digest.as_str());
    assert_eq!(j["size"], multi.index.size);
    let m = j["manifests"].as_array().unwrap();
    assert_eq!(m[0]["digest"], multi.amd64.manifest.digest.as_str());
    assert_eq!(m[0]["platform"], json!({"os": "linux", "architecture": "amd64"}));
    assert_eq!(m[1]["digest"], multi.arm64.manifest.digest.as_str());
    assert_eq!(m[1]["platform"], json!({"os": "linux", "architecture": "arm64", "variant": "v8"}));
    let text = ok(&mut alice(&["inspect", &format!("{host}/e2e/multi:v1")]));
    println!("{text}");
    assert!(text.contains("linux/arm64/v8") && text.contains(&multi.arm64.manifest.digest), "{text}");

    // inspect: the image, its config and layers, its referrer found by the tag schema.
    let j = json_of(&ok(&mut alice(&["inspect", "--json", &format!("{host}/e2e/app:v1")])));
    assert_eq!((&j["kind"], &j["digest"]), (&json!("manifest"), &json!(img.manifest.digest)));
    assert_eq!(j["config"]["digest"], img.config.digest.as_str());
    assert_eq!(j["config"]["created"], "2024-01-01T00:00:00Z");
    assert_eq!(j["config"]["architecture"], "amd64");
    let sizes: Vec<u64> =
        j["layers"].as_array().unwrap().iter().map(|l| l["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, img.layers.iter().map(|l| l.size).collect::<Vec<_>>());
    assert_eq!(j["layersSize"], img.layers.iter().map(|l| l.size).sum::<u64>());
    assert_eq!(j["referrers"][fixtures::ARTIFACT_TYPE][0]["digest"], art.manifest.digest.as_str(), "{j}");
    let text = ok(&mut alice(&["inspect", &format!("{host}/e2e/app@{}", img.manifest.digest)]));
    println!("{text}");
    assert!(
        text.contains("Layers (1):")
            && text.contains(&format!("Referrers (1):\n  {} (1):", fixtures::ARTIFACT_TYPE)),
        "{text}"
    );
    let j = json_of(&ok(&mut alice(&["inspect", "--json", &format!("{host}/e2e/app:sig")])));
    assert_eq!(j["artifactType"], fixtures::ARTIFACT_TYPE);
    assert_eq!(j["subject"]["digest"], img.manifest.digest.as_str());

    // rm: Distribution 2.8 deletes no tags, and says so; the manifest goes by digest.
    let o = fails(&mut alice(&["rm", &format!("{host}/e2e/app:old")]));
    println!("{}", o.stderr);
    assert_eq!(o.status.and_then(|s| s.code()), Some(1), "{}", o.describe());
    assert!(
        o.stderr.contains(&format!("{host} refused to delete the tag {host}/e2e/app:old")),
        "{}",
        o.describe()
    );
    assert!(
        o.stderr.contains(&format!("donjon rm {host}/e2e/app@{}", img.manifest.digest)),
        "{}",
        o.describe()
    );
    let out = ok(&mut alice(&["rm", &format!("{host}/e2e/gone@{}", gone.manifest.digest)]));
    assert_eq!(
        out,
        format!("Deleted manifest {host}/e2e/gone@{} (and every tag on it)\n", gone.manifest.digest)
    );
    let o = fails(&mut alice(&["inspect", &format!("{host}/e2e/gone:v1")]));
    assert!(o.stderr.contains("HTTP 404 Not Found: MANIFEST_UNKNOWN"), "{}", o.describe());
    dist.stop();
}

/// Standard base64 with padding.
fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}
