//! Blob reads redirected to the bucket (`storage.redirect`, on by default on S3 as in
//! Distribution): a blob `GET` answers 307 to a presigned URL of its object, and skopeo,
//! containerd, podman and docker follow it (without the registry's credentials) and verify every
//! digest. HEAD and manifests are answered by donjon; a Range goes to the bucket and is honoured
//! there; `storage.redirect.expiry` sets the URL's lifetime.

use std::fs;

use super::support::*;

/// The host (`host:port`) and the path with its query of an absolute `http://` URL.
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("not a plain-HTTP URL: {url}"));
    let at = rest.find('/').unwrap_or(rest.len());
    (rest[..at].to_string(), rest[at..].to_string())
}

#[test]
fn clients_follow_redirects_to_the_bucket() {
    require_e2e!();
    let _heavy = heavy_lock();
    let Some(g) = s3server::S3Server::start("redirects") else {
        println!("skipped: no S3 server (set DONJON_S3=1 to make it a failure)");
        return;
    };
    let s = Scratch::new("redirects");
    let config = s.join("donjon.yml");
    fs::write(
        &config,
        format!("storage:\n{}  redirect:\n    expiry: 10m\n", s3_storage_yaml(&g, "/redirects")),
    )
    .unwrap();
    let dj = Donjon::start_config(Some(&s.dir("data")), &config, &s.join("donjon.log"));
    let host = dj.host();
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    let (mlayout, m) = fixtures::multi_arch(s.join("multi"), "multi").unwrap();
    skopeo_copy(&s, &[], &layout.reference("v1"), &dj.docker("e2e/busybox:v1"));
    skopeo_copy(&s, &["--all"], &mlayout.reference("multi"), &dj.docker("e2e/multi:1"));

    // The registry's answers: a redirect for a blob GET, itself for HEAD and manifests.
    let layer = &img.layers[0];
    let blob = format!("/v2/e2e/busybox/blobs/{}", layer.digest);
    let r = http(&host, "GET", &blob, &[]).unwrap();
    assert_eq!(r.status, 307, "a blob GET is redirected");
    let location = r.header("location").expect("Location").to_string();
    assert!(
        location.contains("X-Amz-Expires=600"),
        "storage.redirect.expiry (10m) is the URL's lifetime: {location}"
    );
    assert!(!location.contains(&host), "the redirect leaves the registry: {location}");
    let r = http(&host, "HEAD", &blob, &[]).unwrap();
    assert_eq!((r.status, r.header("content-length")), (200, Some(layer.size.to_string().as_str())));
    let r =
        http(&host, "GET", "/v2/e2e/busybox/manifests/v1", &[("accept", &img.manifest.media_type)]).unwrap();
    assert_eq!(r.status, 200, "manifests are never redirected");
    // The bucket serves the URL as it is, whole and by Range, with no credentials.
    let (bucket, path) = split_url(&location);
    let whole = http(&bucket, "GET", &path, &[]).unwrap();
    assert_eq!(whole.status, 200, "{}", String::from_utf8_lossy(&whole.body));
    assert_eq!(format!("sha256:{}", fixtures::sha256_hex(&whole.body)), layer.digest);
    let part = http(&bucket, "GET", &path, &[("range", "bytes=10-19")]).unwrap();
    assert_eq!(part.status, 206);
    assert_eq!(&part.body[..], &whole.body[10..20], "a Range is the bucket's to honour");

    // skopeo: every blob digest-checked into a layout.
    let blobs: Vec<String> = std::iter::once(img.config.digest.clone())
        .chain(img.layers.iter().map(|l| l.digest.clone()))
        .collect();
    copy_out_and_check(
        &s,
        &[],
        &dj.docker("e2e/busybox:v1"),
        &s.join("out"),
        "bb",
        &img.manifest.digest,
        &as_str(&blobs),
    );

    // containerd: both platforms of the index, unpacked (diff_ids checked).
    let ctrd = Containerd::start(&s.dir("containerd"));
    let multi = format!("{host}/e2e/multi:1");
    ok(ctrd.ctr().args([
        "images",
        "pull",
        "--plain-http",
        "--all-platforms",
        "--snapshotter",
        "native",
        &multi,
    ]));
    for d in [&m.arm64.layers[0].digest, &m.amd64.layers[0].digest] {
        ok(ctrd.ctr().args(["content", "get", d]).stdout(std::process::Stdio::null()));
    }
    drop(ctrd);

    // podman, then docker: pull and run.
    let bb = format!("{host}/e2e/busybox:v1");
    let containers = Containers::new(&s, &host);
    ok(containers.podman().args(["pull", "--tls-verify=false", &bb]));
    let id = ok(containers.podman().args(["image", "inspect", "--format", "{{.Digest}}", &bb]));
    assert_eq!(id.trim(), img.manifest.digest);
    let out = ok(containers
        .podman()
        .args(["run", "--rm", "--network", "none"])
        .args(Containers::ulimits())
        .arg(&bb));
    assert_eq!(out.trim(), fixtures::BUSYBOX_GREETING);
    drop(containers);
    let dockerd = Dockerd::start(&s, &host);
    let pull = ok(dockerd.docker().args(["pull", &bb]));
    assert!(pull.contains(&img.manifest.digest), "{pull}");
    let out = ok(dockerd.docker().args(["run", "--rm", "--network", "none", &bb]));
    assert_eq!(out.trim(), fixtures::BUSYBOX_GREETING);
    dockerd.stop();

    // Each client's blob GETs were answered with a redirect, none streamed by donjon.
    let log = fs::read_to_string(s.join("donjon.log")).unwrap_or_default();
    let blob_gets = |status: &str| {
        log.lines()
            .filter(|l| l.contains("method=GET") && l.contains("/blobs/sha256:") && l.contains(status))
            .count()
    };
    let (redirected, streamed) = (blob_gets("status=307"), blob_gets("status=200"));
    println!("blob GETs: {redirected} redirected, {streamed} streamed");
    assert!(redirected >= 5, "skopeo, containerd, podman and docker pulled through redirects: {redirected}");
    assert_eq!(streamed, 0, "no blob went through donjon");
    dj.stop();
}
