//! podman and buildah: build, push, pull and run through donjon.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::support::*;

/// This process's hard limit named `name` in /proc/self/limits ("unlimited" as u64::MAX).
fn hard_limit(name: &str) -> u64 {
    let limits = fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} limit"));
    let hard = line[name.len()..].split_whitespace().nth(1).expect("hard limit");
    hard.parse().unwrap_or(u64::MAX)
}

/// Common flags of podman and buildah: private vfs storage under `dir`.
fn containers_env(c: &mut Command, dir: &Path, registries: &Path) {
    c.env("CONTAINERS_REGISTRIES_CONF", registries);
    c.env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"));
    c.env("CONTAINERS_CONF", dir.join("containers.conf"));
    c.env("REGISTRY_AUTH_FILE", auth_file(dir));
    c.env("TMPDIR", dir.join("tmp"));
    c.arg("--root").arg(dir.join("root"));
    c.arg("--runroot").arg(dir.join("runroot"));
    c.args(["--storage-driver", "vfs"]);
}

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

    let store = s.dir("containers");
    fs::create_dir_all(store.join("tmp")).unwrap();
    fs::write(
        store.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            store.join("root").display(),
            store.join("runroot").display()
        ),
    )
    .unwrap();
    fs::write(
        store.join("containers.conf"),
        format!(
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\ntmp_dir = \"{}\"\n\
             [containers]\nlog_driver = \"k8s-file\"\n",
            store.join("libpod").display()
        ),
    )
    .unwrap();
    let registries = store.join("registries.conf");
    fs::write(
        &registries,
        format!(
            "unqualified-search-registries = []\n\n[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"
        ),
    )
    .unwrap();
    let podman = || {
        let mut c = cmd("podman");
        containers_env(&mut c, &store, &registries);
        c.arg("--tmpdir").arg(store.join("libpod"));
        c.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        c
    };
    let buildah = || {
        let mut c = cmd("buildah");
        containers_env(&mut c, &store, &registries);
        c
    };

    // As root, podman asks the runtime for RLIMIT_NOFILE=1048576 and RLIMIT_NPROC=32768 unless
    // told otherwise; above the hard limits of a process tree without CAP_SYS_RESOURCE (as in
    // this sandbox: 20000 open files), runc fails with "error setting rlimit type 7: operation
    // not permitted". So the limits are given, within our own hard limits.
    let ulimits = [
        "--ulimit".to_string(),
        format!("nofile={0}:{0}", hard_limit("Max open files").min(1024)),
        "--ulimit".to_string(),
        format!("nproc={0}:{0}", hard_limit("Max processes").min(32768)),
    ];

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
