//! skopeo against donjon: round trips, multi-arch, preserved digests, referrers, a large
//! layer, TLS; and content kept across a restart.

use std::fs;
use std::time::Instant;

use serde_json::Value;

use super::support::*;

/// Copy in and out, inspect --raw, list-tags, pull by digest, delete.
#[test]
fn skopeo_single_image_roundtrip() {
    require_e2e!();
    let s = Scratch::new("skopeo1");
    let dj = Donjon::start(&s);
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();

    skopeo_copy(&s, &[], &layout.reference("v1"), &dj.docker("e2e/busybox:v1"));
    skopeo_copy(&s, &[], &layout.reference("v1"), &dj.docker("e2e/busybox:v2"));
    // The manifest is stored and served byte for byte: same digest.
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/busybox:v1")), img.manifest.digest);
    let by_digest = dj.docker(&format!("e2e/busybox@{}", img.manifest.digest));
    assert_eq!(skopeo_raw_digest(&s, &by_digest), img.manifest.digest);

    // What the clients rely on, checked directly too: HEAD and GET of the manifest by tag give
    // its digest (containerd and docker take the digest of a tag from Docker-Content-Digest),
    // media type and length.
    let accept =
        [("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")];
    for method in ["HEAD", "GET"] {
        let r = http(&dj.host(), method, "/v2/e2e/busybox/manifests/v1", &accept).unwrap();
        assert_eq!(r.status, 200, "{method} manifest");
        assert_eq!(
            r.header("docker-content-digest"),
            Some(img.manifest.digest.as_str()),
            "{method} manifest"
        );
        assert_eq!(r.header("content-type"), Some(fixtures::MT_MANIFEST), "{method} manifest");
        assert_eq!(
            r.header("content-length"),
            Some(img.manifest.size.to_string().as_str()),
            "{method} manifest"
        );
        if method == "GET" {
            assert_eq!(format!("sha256:{}", fixtures::sha256_hex(&r.body)), img.manifest.digest);
        }
    }

    // `skopeo inspect` (not raw) reads the config too.
    let mut c = skopeo(&s);
    c.args(["inspect", "--tls-verify=false", &dj.docker("e2e/busybox:v1")]);
    let inspect: Value = serde_json::from_str(&ok(&mut c)).unwrap();
    assert_eq!(inspect["Digest"], img.manifest.digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Layers"][0], img.layers[0].digest.as_str());

    let mut c = skopeo(&s);
    c.args(["list-tags", "--tls-verify=false", &dj.docker("e2e/busybox")]);
    let tags: Value = serde_json::from_str(&ok(&mut c)).unwrap();
    let mut tags: Vec<String> =
        tags["Tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    tags.sort();
    assert_eq!(tags, ["v1", "v2"]);

    // Out again, by tag and by digest: identical manifest and layer.
    skopeo_copy(&s, &[], &dj.docker("e2e/busybox:v1"), &format!("oci:{}:out", s.join("out").display()));
    assert_eq!(layout_digest(&s.join("out"), "out"), img.manifest.digest);
    let out_layer = s.join("out/blobs/sha256").join(img.layers[0].hex());
    assert_eq!(file_sha256(&out_layer), img.layers[0].hex());
    skopeo_copy(&s, &[], &by_digest, &format!("oci:{}:bydigest", s.join("out").display()));
    assert_eq!(layout_digest(&s.join("out"), "bydigest"), img.manifest.digest);

    // A docker-archive, as `docker load` takes it, converts the image: still readable.
    skopeo_copy(
        &s,
        &[],
        &dj.docker("e2e/busybox:v1"),
        &format!("docker-archive:{}", s.join("bb.tar").display()),
    );

    let cat = dj.get("/v2/_catalog", &[]);
    assert_eq!(cat.status, 200);
    assert!(cat.json()["repositories"].as_array().unwrap().iter().any(|r| r == "e2e/busybox"), "catalog");

    // Delete by digest (skopeo resolves the tag to the digest and deletes the manifest).
    let mut c = skopeo(&s);
    c.args(["delete", "--tls-verify=false", &dj.docker("e2e/busybox:v1")]);
    ok(&mut c);
    for gone in [dj.docker("e2e/busybox:v1"), by_digest.clone()] {
        let mut c = skopeo(&s);
        c.args(["inspect", "--raw", "--retry-times", "0", "--tls-verify=false", &gone]);
        let out = fails(&mut c);
        assert!(out.stderr.contains("manifest unknown"), "expected MANIFEST_UNKNOWN\n{}", out.describe());
    }
    let r = dj.get(&format!("/v2/e2e/busybox/manifests/{}", img.manifest.digest), &[]);
    assert_eq!(r.status, 404, "manifest after delete: {}", String::from_utf8_lossy(&r.body));
    dj.stop();
}

/// `copy --all` of an image index keeps the index digest; one platform can be picked.
#[test]
fn skopeo_multi_arch_all() {
    require_e2e!();
    let s = Scratch::new("skopeo-multi");
    let dj = Donjon::start(&s);
    let (layout, m) = fixtures::multi_arch(s.join("in"), "multi").unwrap();

    skopeo_copy(&s, &["--all"], &layout.reference("multi"), &dj.docker("e2e/multi:1"));
    let raw = skopeo_raw(&s, &dj.docker("e2e/multi:1"));
    assert_eq!(format!("sha256:{}", fixtures::sha256_hex(&raw)), m.index.digest, "index digest preserved");
    let index: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(index["mediaType"], fixtures::MT_INDEX);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    for img in [&m.amd64, &m.arm64] {
        let r = dj.docker(&format!("e2e/multi@{}", img.manifest.digest));
        assert_eq!(skopeo_raw_digest(&s, &r), img.manifest.digest);
    }

    // Without --all, skopeo picks one platform from the index.
    let mut c = skopeo(&s);
    c.args(["--override-arch", "arm64", "--override-os", "linux"]);
    c.args(["copy", "--src-tls-verify=false", &dj.docker("e2e/multi:1")]);
    c.arg(format!("oci:{}:arm", s.join("arm").display()));
    ok(&mut c);
    assert_eq!(layout_digest(&s.join("arm"), "arm"), m.arm64.manifest.digest);

    // Out with --all: the same index, both images.
    skopeo_copy(&s, &["--all"], &dj.docker("e2e/multi:1"), &format!("oci:{}:all", s.join("out").display()));
    assert_eq!(layout_digest(&s.join("out"), "all"), m.index.digest);
    for img in [&m.amd64, &m.arm64] {
        for l in &img.layers {
            assert_eq!(file_sha256(&s.join("out/blobs/sha256").join(l.hex())), l.hex());
        }
    }
    dj.stop();
}

/// `--preserve-digests` registry to registry (cross-repository), and between two registries.
#[test]
fn skopeo_preserve_digests() {
    require_e2e!();
    let s = Scratch::new("skopeo-pd");
    let dj = Donjon::start(&s);
    let s2 = Scratch::new("skopeo-pd2");
    let dj2 = Donjon::start(&s2);
    let (layout, m) = fixtures::multi_arch(s.join("in"), "multi").unwrap();

    skopeo_copy(&s, &["--all", "--preserve-digests"], &layout.reference("multi"), &dj.docker("src/multi:1"));
    // Same registry, another repository: the blobs can be mounted.
    skopeo_copy(&s, &["--all", "--preserve-digests"], &dj.docker("src/multi:1"), &dj.docker("dst/multi:1"));
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("dst/multi:1")), m.index.digest);
    // Another registry.
    skopeo_copy(
        &s,
        &["--all", "--preserve-digests"],
        &dj.docker("src/multi:1"),
        &dj2.docker("other/multi:1"),
    );
    assert_eq!(skopeo_raw_digest(&s, &dj2.docker("other/multi:1")), m.index.digest);
    // Single image with --preserve-digests.
    let single = dj.docker(&format!("src/multi@{}", m.amd64.manifest.digest));
    skopeo_copy(&s, &["--preserve-digests"], &single, &dj2.docker("other/amd64:1"));
    assert_eq!(skopeo_raw_digest(&s, &dj2.docker("other/amd64:1")), m.amd64.manifest.digest);
    let r = dj2.get(&format!("/v2/other/amd64/blobs/{}", m.amd64.layers[0].digest), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(format!("sha256:{}", fixtures::sha256_hex(&r.body)), m.amd64.layers[0].digest);
    assert_eq!(r.header("docker-content-digest"), Some(m.amd64.layers[0].digest.as_str()));
    dj2.stop();
    dj.stop();
}

/// An artifact whose subject is the busybox manifest shows in the referrers API.
#[test]
fn skopeo_artifact_referrers() {
    require_e2e!();
    let s = Scratch::new("skopeo-ref");
    let dj = Donjon::start(&s);
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    skopeo_copy(&s, &[], &layout.reference("v1"), &dj.docker("e2e/signed:v1"));

    let (alayout, art) = fixtures::artifact(s.join("art"), "sig", &img.manifest, "first").unwrap();
    skopeo_copy(&s, &["--preserve-digests"], &alayout.reference("sig"), &dj.docker("e2e/signed:sig"));
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/signed:sig")), art.manifest.digest);

    let path = format!("/v2/e2e/signed/referrers/{}", img.manifest.digest);
    let r = dj.get(&path, &[]);
    println!("GET {path} -> {} {}", r.status, String::from_utf8_lossy(&r.body));
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap_or("").starts_with(fixtures::MT_INDEX), "content-type");
    let index = r.json();
    let refs = index["manifests"].as_array().expect("manifests");
    assert_eq!(refs.len(), 1, "{index}");
    assert_eq!(refs[0]["digest"], art.manifest.digest.as_str());
    assert_eq!(refs[0]["size"], art.manifest.size);
    assert_eq!(refs[0]["mediaType"], fixtures::MT_MANIFEST);
    assert_eq!(refs[0]["artifactType"], fixtures::ARTIFACT_TYPE);
    assert_eq!(refs[0]["annotations"]["org.example.note"], "first");

    let r = dj.get(&format!("{path}?artifactType=application/vnd.example.other"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["manifests"].as_array().map(Vec::len), Some(0), "filtered referrers");

    // The artifact copied back out is byte-identical.
    skopeo_copy(&s, &[], &dj.docker("e2e/signed:sig"), &format!("oci:{}:sig", s.join("out").display()));
    assert_eq!(layout_digest(&s.join("out"), "sig"), art.manifest.digest);
    dj.stop();
}

/// A large layer in and out (streamed upload through skopeo, streamed download), as gzip (kept
/// byte for byte) and uncompressed (which skopeo compresses on the fly while pushing, so the
/// registry must digest a stream of unknown length).
#[test]
fn skopeo_large_layer() {
    require_e2e!();
    let s = Scratch::new("skopeo-large");
    let dj = Donjon::start(&s);
    let size = large_size();
    let t = Instant::now();
    let mut layout = fixtures::OciLayout::create(s.join("in")).unwrap();
    let img = layout.large_image(size, 42, true).unwrap();
    layout.tag(&img.manifest, "gz");
    let raw_img = layout.large_image(size, 43, false).unwrap();
    layout.tag(&raw_img.manifest, "tar");
    layout.save().unwrap();
    println!("wrote two {size}-byte layers in {:.1?}", t.elapsed());

    skopeo_copy_with(&s, &[], &layout.reference("gz"), &dj.docker("e2e/large:gz"), LARGE_TIMEOUT);
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/large:gz")), img.manifest.digest);
    let r = http(&dj.host(), "HEAD", &format!("/v2/e2e/large/blobs/{}", img.layers[0].digest), &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(img.layers[0].size.to_string().as_str()));
    assert_eq!(r.header("docker-content-digest"), Some(img.layers[0].digest.as_str()));
    let out = s.join("out");
    skopeo_copy_with(
        &s,
        &[],
        &dj.docker("e2e/large:gz"),
        &format!("oci:{}:gz", out.display()),
        LARGE_TIMEOUT,
    );
    assert_eq!(layout_digest(&out, "gz"), img.manifest.digest);
    assert_eq!(file_sha256(&out.join("blobs/sha256").join(img.layers[0].hex())), img.layers[0].hex());

    let digestfile = s.join("tar.digest");
    let df = format!("--digestfile={}", digestfile.display());
    skopeo_copy_with(&s, &[&df], &layout.reference("tar"), &dj.docker("e2e/large:tar"), LARGE_TIMEOUT);
    let pushed = fs::read_to_string(&digestfile).unwrap().trim().to_string();
    assert_ne!(pushed, raw_img.manifest.digest, "skopeo was expected to compress the layer");
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/large:tar")), pushed);
    skopeo_copy_with(
        &s,
        &[],
        &dj.docker("e2e/large:tar"),
        &format!("oci:{}:tar", out.display()),
        LARGE_TIMEOUT,
    );
    assert_eq!(layout_digest(&out, "tar"), pushed);
    let m: Value =
        serde_json::from_slice(&fs::read(out.join("blobs/sha256").join(&pushed[7..])).unwrap()).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(format!("sha256:{}", file_sha256(&out.join("blobs/sha256").join(&layer[7..]))), layer);
    assert_eq!(m["layers"][0]["mediaType"], fixtures::MT_LAYER_GZIP);
    dj.stop();
}

/// Over TLS (`--tls CERT,KEY`): skopeo verifies the certificate when given its CA, and refuses
/// the connection without it.
#[test]
fn skopeo_tls() {
    require_e2e!();
    let s = Scratch::new("skopeo-tls");
    let certs = s.dir("certs");
    let (cert, key) = (certs.join("cert.pem"), certs.join("key.pem"));
    ok(cmd("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args(["-subj", "/CN=donjon-e2e", "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    // c/image takes every *.crt of a --cert-dir as a CA.
    let ca_dir = s.dir("ca");
    fs::copy(&cert, ca_dir.join("ca.crt")).unwrap();
    let dj = Donjon::start_with(&s, Some((&cert, &key)));
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();

    let mut c = skopeo(&s);
    c.args(["copy", "--retry-times", "0", "--dest-tls-verify=true", "--dest-cert-dir"]).arg(&ca_dir);
    c.arg(layout.reference("v1")).arg(dj.docker("e2e/tls:v1"));
    ok(&mut c);
    let mut c = skopeo(&s);
    c.args(["inspect", "--raw", "--retry-times", "0", "--tls-verify=true", "--cert-dir"]).arg(&ca_dir);
    c.arg(dj.docker("e2e/tls:v1"));
    assert_eq!(format!("sha256:{}", fixtures::sha256_hex(ok(&mut c).as_bytes())), img.manifest.digest);

    // Without the CA the certificate is unknown: TLS is really in use.
    let mut c = skopeo(&s);
    c.args(["inspect", "--raw", "--retry-times", "0", "--tls-verify=true", &dj.docker("e2e/tls:v1")]);
    let out = fails(&mut c);
    assert!(out.stderr.contains("certificate"), "expected a certificate error\n{}", out.describe());
    // And plain HTTP is not served on the TLS port.
    let r = http(&dj.host(), "GET", "/v2/", &[]);
    assert!(r.map_or(true, |r| r.status != 200), "plain HTTP answered on the TLS port");
    dj.stop();
}

/// Content pushed before a graceful stop is served after a restart on the same data directory.
#[test]
fn restart_keeps_content() {
    require_e2e!();
    let s = Scratch::new("restart");
    let dj = Donjon::start(&s);
    let port = dj.port;
    let (layout, m) = fixtures::multi_arch(s.join("in"), "multi").unwrap();
    skopeo_copy(&s, &["--all"], &layout.reference("multi"), &dj.docker("e2e/keep:1"));
    let before = skopeo_raw_digest(&s, &dj.docker("e2e/keep:1"));
    assert_eq!(before, m.index.digest);
    let data = dj.stop();

    let dj = Donjon::start_on(&data, port, &s.join("donjon2.log"));
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/keep:1")), before);
    let mut c = skopeo(&s);
    c.args(["list-tags", "--tls-verify=false", &dj.docker("e2e/keep")]);
    let tags: Value = serde_json::from_str(&ok(&mut c)).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["1"]));
    skopeo_copy(&s, &["--all"], &dj.docker("e2e/keep:1"), &format!("oci:{}:after", s.join("out").display()));
    assert_eq!(layout_digest(&s.join("out"), "after"), m.index.digest);
    // And it still takes pushes.
    skopeo_copy(&s, &["--all"], &dj.docker("e2e/keep:1"), &dj.docker("e2e/keep:2"));
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/keep:2")), m.index.digest);
    dj.stop();
}
