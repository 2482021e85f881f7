//! podman and buildah: build, push, pull and run through donjon.

use std::fs;

use serde_json::Value;

use super::support::*;

#[test]
fn podman_and_buildah() {
    require_e2e!();
    let _heavy = heavy_lock();
    let s = Scratch::new("podman");
    let dj = Donjon::start(&s);
    let host = dj.host();
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    let (mlayout, m) = fixtures::multi_arch(s.join("multi"), "multi").unwrap();
    skopeo_copy(&s, &[], &layout.reference("v1"), &dj.docker("e2e/busybox:v1"));
    skopeo_copy(&s, &["--all"], &mlayout.reference("multi"), &dj.docker("e2e/multi:1"));

    let containers = Containers::new(&s, &host);
    let podman = || containers.podman();
    let buildah = || containers.buildah();
    let ulimits = Containers::ulimits();

    // pull and push
    let bb = format!("{host}/e2e/busybox:v1");
    ok(podman().args(["pull", "--tls-verify=false", &bb]));
    let id = ok(podman().args(["image", "inspect", "--format", "{{.Digest}}", &bb]));
    assert_eq!(id.trim(), img.manifest.digest);
    let pushed = format!("{host}/e2e/podman:pushed");
    ok(podman().args(["tag", &bb, &pushed]));
    ok(podman().args(["push", "--tls-verify=false", &pushed]));
    let raw: Value = serde_json::from_slice(&skopeo_raw(&s, &dj.docker("e2e/podman:pushed"))).unwrap();
    assert_eq!(raw["layers"].as_array().map(Vec::len), Some(1), "{raw}");

    // run the pulled image
    let out = ok(podman().args(["run", "--rm", "--network", "none"]).args(&ulimits).arg(&bb));
    assert_eq!(out.trim(), fixtures::BUSYBOX_GREETING, "podman run output");

    // manifest list: add both platforms, push --all
    ok(podman().args(["manifest", "create", "e2e-list"]));
    ok(podman().args([
        "manifest",
        "add",
        "--all",
        "--tls-verify=false",
        "e2e-list",
        &dj.docker("e2e/multi:1"),
    ]));
    ok(podman().args([
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        "e2e-list",
        &dj.docker("e2e/podman-list:1"),
    ]));
    let raw: Value = serde_json::from_slice(&skopeo_raw(&s, &dj.docker("e2e/podman-list:1"))).unwrap();
    println!("pushed list: {raw}");
    let mut got: Vec<String> = raw["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {raw}"))
        .iter()
        .map(|d| d["platform"]["architecture"].as_str().unwrap_or("").to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["amd64", "arm64"], "{raw}");
    // podman writes its own list, but the images in it are the fixture's, unchanged.
    let mut children: Vec<&str> =
        raw["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap()).collect();
    children.sort();
    let mut want = [m.amd64.manifest.digest.as_str(), m.arm64.manifest.digest.as_str()];
    want.sort();
    assert_eq!(children, want);
    for d in raw["manifests"].as_array().unwrap() {
        let digest = d["digest"].as_str().unwrap();
        let r = dj.get(
            &format!("/v2/e2e/podman-list/manifests/{digest}"),
            &[("Accept", d["mediaType"].as_str().unwrap())],
        );
        assert_eq!(r.status, 200, "child manifest {digest}");
        assert_eq!(format!("sha256:{}", fixtures::sha256_hex(&r.body)), digest);
    }

    // buildah bud FROM the pushed busybox, RUN inside it (chroot isolation), push it back
    let ctx = s.dir("context");
    fs::write(ctx.join("Containerfile"), format!("FROM {pushed}\nRUN echo built by buildah > /built.txt\n"))
        .unwrap();
    let built = format!("{host}/e2e/built:1");
    ok(buildah()
        .args(["bud", "--isolation", "chroot", "--tls-verify=false", "--pull-always"])
        .args(&ulimits)
        .args(["-t", &built])
        .arg(&ctx));
    ok(buildah().args(["push", "--tls-verify=false", &built, &dj.docker("e2e/built:1")]));
    let raw: Value = serde_json::from_slice(&skopeo_raw(&s, &dj.docker("e2e/built:1"))).unwrap();
    assert_eq!(raw["layers"].as_array().map(Vec::len), Some(2), "{raw}");

    // pull it back fresh into podman and run it
    ok(podman().args(["rmi", "-f", &built]));
    ok(podman().args(["pull", "--tls-verify=false", &built]));
    let out = ok(podman()
        .args(["run", "--rm", "--network", "none"])
        .args(&ulimits)
        .args([&built, "cat /built.txt"]));
    assert_eq!(out.trim(), "built by buildah");

    dj.stop();
}
