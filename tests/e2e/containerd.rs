//! containerd's `ctr` pulling from and pushing to donjon.

use std::process::Stdio;

use super::support::*;

#[test]
fn containerd_ctr() {
    require_e2e!();
    let _heavy = heavy_lock();
    let s = Scratch::new("ctrd");
    let dj = Donjon::start(&s);
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    let (mlayout, m) = fixtures::multi_arch(s.join("multi"), "multi").unwrap();
    skopeo_copy(&s, &[], &layout.reference("v1"), &dj.docker("e2e/busybox:v1"));
    skopeo_copy(&s, &["--all"], &mlayout.reference("multi"), &dj.docker("e2e/multi:1"));
    let ctrd = Containerd::start(&s.dir("containerd"));
    let host = dj.host();

    // pull (unpacks into the native snapshotter, checking the diff_ids)
    let bb = format!("{host}/e2e/busybox:v1");
    ok(ctrd.ctr().args(["images", "pull", "--plain-http", "--snapshotter", "native", &bb]));
    let ls = ok(ctrd.ctr().args(["images", "ls"]));
    assert!(ls.contains(&bb) && ls.contains(&img.manifest.digest), "images ls:\n{ls}");
    let check = ok(ctrd.ctr().args(["images", "check"]));
    assert!(check.contains(&bb) && check.contains("complete"), "images check:\n{check}");

    // content fetch: the manifest as served, by tag, and a blob by digest in the content store
    let fetched = ok(ctrd.ctr().args(["content", "fetch", "--plain-http", &format!("{host}/e2e/multi:1")]));
    println!("{fetched}");
    let got = ok(ctrd.ctr().args(["content", "get", &m.index.digest]));
    assert_eq!(format!("sha256:{}", fixtures::sha256_hex(got.as_bytes())), m.index.digest);

    // --all-platforms: both images' content
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
    for d in [&m.arm64.manifest.digest, &m.arm64.layers[0].digest, &m.amd64.layers[0].digest] {
        ok(ctrd.ctr().args(["content", "get", d]).stdout(Stdio::null()));
    }

    // push: to another repository, then read back with skopeo
    let pushed = format!("{host}/e2e/pushed:ctr");
    ok(ctrd.ctr().args(["images", "tag", &bb, &pushed]));
    ok(ctrd.ctr().args(["images", "push", "--plain-http", &pushed]));
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/pushed:ctr")), img.manifest.digest);
    let mpushed = format!("{host}/e2e/pushed:multi");
    ok(ctrd.ctr().args(["images", "tag", &multi, &mpushed]));
    ok(ctrd.ctr().args(["images", "push", "--plain-http", &mpushed]));
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/pushed:multi")), m.index.digest);

    // run the pulled image: default Entrypoint + Cmd, then an explicit command
    let out = ok(ctrd.ctr().args(["run", "--rm", "--snapshotter", "native", &bb, "e2e-run-1"]));
    assert_eq!(out.trim(), fixtures::BUSYBOX_GREETING, "ctr run output");
    let out = ok(ctrd.ctr().args([
        "run",
        "--rm",
        "--snapshotter",
        "native",
        &bb,
        "e2e-run-2",
        "/bin/sh",
        "-c",
        "echo ran as $(id -u) on $(uname -m)",
    ]));
    assert_eq!(out.trim(), "ran as 0 on x86_64");

    drop(ctrd);
    dj.stop();
}
