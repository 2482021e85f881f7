//! donjon as the pull-through mirror of `docker.io`, in front of CNCF Distribution with
//! htpasswd auth standing in for Docker Hub (the `docker.io` entry's `url` points at it):
//! containerd pulls with a `hosts.toml` mirror (`?ns=docker.io`), podman through a
//! `registries.conf` mirror, docker with `--registry-mirror` (both without `ns`, so the default
//! upstream answers). The image crosses from Distribution once; later pulls come from the
//! cache, and so does a pull after Distribution is stopped. containerd's `_default` hosts.toml
//! sends a registry without a directory of its own (Distribution by its address) through
//! donjon as well. The clients' files are `deploy/mirror/`'s, with this test's address.

use std::fs;

use super::support::*;

/// A file of `deploy/mirror/`, with donjon at `host` (plain HTTP) instead of the example name.
fn deploy_file(path: &str, host: &str) -> String {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/mirror").join(path);
    let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.replace("https://donjon.example.com:8000", &format!("http://{host}"))
        .replace("location = \"donjon.example.com:8000\"", &format!("location = \"{host}\"\ninsecure = true"))
}

/// The blobs Distribution sent with a 200, from its access log.
fn blob_downloads(log: &std::path::Path, repo: &str) -> usize {
    let text = fs::read_to_string(log).unwrap_or_default();
    let needle = format!("\"GET /v2/{repo}/blobs/sha256:");
    text.lines().filter(|l| l.contains(&needle) && l.contains("\" 200 ")).count()
}

#[test]
fn mirror_for_containerd_podman_and_docker() {
    require_e2e!();
    let _heavy = heavy_lock();
    let s = Scratch::new("mirror");
    let htpasswd = s.join("htpasswd");
    ok(cmd("htpasswd").args(["-B", "-b", "-c"]).arg(&htpasswd).args(["hub", "hub-pw"]));
    let storage = format!("  filesystem:\n    rootdirectory: {}\n", s.dir("dist").display());
    let auth = format!("auth:\n  htpasswd:\n    realm: upstream\n    path: {}\n", htpasswd.display());
    let dist = Distribution::start_with(&s, "distribution", &storage, &auth);
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    skopeo_copy(
        &s,
        &["--dest-creds", "hub:hub-pw"],
        &layout.reference("v1"),
        &dist.docker("library/busybox:v1"),
    );
    let blobs = 1 + img.layers.len();
    let log = dist.daemon.log.clone();
    assert_eq!(blob_downloads(&log, "library/busybox"), 0);

    let config = s.join("donjon.yml");
    fs::write(
        &config,
        format!(
            "registry_proxies:\n  registries:\n    - host: docker.io\n      url: http://{0}\n      username: hub\n      password: hub-pw\n    - host: \"{0}\"\n      insecure: true\n      username: hub\n      password: hub-pw\n  default: docker.io\n",
            dist.host()
        ),
    )
    .unwrap();
    let dj = Donjon::start_config(Some(&s.dir("data")), &config, &s.join("donjon.log"));
    let host = dj.host();

    // containerd: a hosts.toml mirror for docker.io (it adds ?ns=docker.io).
    let hosts = s.dir("certs.d");
    for dir in ["docker.io", "_default"] {
        fs::create_dir_all(hosts.join(dir)).unwrap();
        fs::write(
            hosts.join(dir).join("hosts.toml"),
            deploy_file(&format!("containerd/{dir}/hosts.toml"), &host),
        )
        .unwrap();
    }
    let ctrd = Containerd::start(&s.dir("containerd"));
    let image = "docker.io/library/busybox:v1";
    ok(ctrd.ctr().args(["images", "pull", "--hosts-dir"]).arg(&hosts).args([
        "--snapshotter",
        "native",
        image,
    ]));
    let ls = ok(ctrd.ctr().args(["images", "ls"]));
    assert!(ls.contains(image) && ls.contains(&img.manifest.digest), "images ls:\n{ls}");
    assert_eq!(blob_downloads(&log, "library/busybox"), blobs, "each blob crossed once");
    // _default: Distribution by its own address, through donjon (?ns=127.0.0.1:PORT).
    let direct = format!("{}/library/busybox:v1", dist.host());
    ok(ctrd.ctr().args(["images", "pull", "--hosts-dir"]).arg(&hosts).args([
        "--snapshotter",
        "native",
        &direct,
    ]));
    let (status, _) = tags_raw(&host, &format!("f/{}/library/busybox", dist.host().replace(':', "__")));
    assert_eq!(status, 200, "pulled through donjon, cached under the address's name");
    // containerd had the layers already: only the manifest crossed.
    assert_eq!(blob_downloads(&log, "library/busybox"), blobs);
    drop(ctrd);
    let (status, tags) = tags_raw(&host, "f/docker.io/library/busybox");
    assert_eq!((status, tags), (200, vec!["v1".to_string()]), "cached under the pull-through name");

    // podman: a registries.conf mirror (no ns: the default upstream).
    let containers = Containers::new(&s, &host);
    containers.registries_conf(&deploy_file("registries.conf", &host));
    ok(containers.podman().args(["pull", image]));
    let id = ok(containers.podman().args(["image", "inspect", "--format", "{{.Digest}}", image]));
    assert_eq!(id.trim(), img.manifest.digest);

    // docker: --registry-mirror.
    let daemon: serde_json::Value = serde_json::from_str(&deploy_file("daemon.json", &host)).unwrap();
    let mirror = daemon["registry-mirrors"][0].as_str().unwrap().to_string();
    assert_eq!(mirror, format!("http://{host}"));
    let dockerd = Dockerd::start_with(&s, &host, &["--registry-mirror", &mirror]);
    ok(dockerd.docker().args(["pull", "busybox:v1"]));
    let id =
        ok(dockerd.docker().args(["image", "inspect", "--format", "{{index .RepoDigests 0}}", "busybox:v1"]));
    assert!(id.trim().ends_with(&img.manifest.digest), "{id}");
    dockerd.stop();
    assert_eq!(blob_downloads(&log, "library/busybox"), blobs, "podman and docker pulled from the cache");

    // Distribution stops: the cached image is still served.
    dist.stop();
    let out = skopeo_raw_digest(&s, &dj.docker("f/docker.io/library/busybox:v1"));
    assert_eq!(out, img.manifest.digest);
}
