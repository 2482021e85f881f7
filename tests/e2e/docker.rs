//! docker: push, pull and run through donjon.

use super::support::*;

#[test]
fn docker_push_pull_run() {
    require_e2e!();
    let _heavy = heavy_lock();
    let s = Scratch::new("docker");
    let dj = Donjon::start(&s);
    let host = dj.host();
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    skopeo_copy(&s, &[], &layout.reference("v1"), &dj.docker("e2e/busybox:v1"));

    let dockerd = Dockerd::start(&s, &host);
    let docker = || dockerd.docker();
    ok(docker().arg("info"));

    let bb = format!("{host}/e2e/busybox:v1");
    // docker resolves the tag with HEAD and takes the digest from Docker-Content-Digest; with a
    // wrong one it still pulls by tag, only warning that the registry "does not appear to
    // conform to the distribution registry specification": that warning is a failure here.
    let pull = run_with(docker().args(["pull", &bb]), TIMEOUT);
    assert!(pull.success(), "docker pull failed\n{}", pull.describe());
    assert!(pull.stdout.contains(&img.manifest.digest), "docker pull output\n{}", pull.describe());
    let all = format!("{}{}", pull.stdout, pull.stderr);
    assert!(!all.contains("WARNING") && !all.contains("conform"), "docker pull warned\n{}", pull.describe());
    let out = ok(docker().args(["run", "--rm", "--network", "none", &bb]));
    assert_eq!(out.trim(), fixtures::BUSYBOX_GREETING, "docker run output");

    // push under another name (docker converts to its own manifest format), pull it back by digest
    let pushed = format!("{host}/e2e/docker:pushed");
    ok(docker().args(["tag", &bb, &pushed]));
    let push_out = ok(docker().args(["push", &pushed]));
    let digest = push_out
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{push_out}"))
        .to_string();
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("e2e/docker:pushed")), digest);
    ok(docker().args(["rmi", &pushed, &bb]));
    ok(docker().args(["pull", &format!("{host}/e2e/docker@{digest}")]));
    let out = ok(docker().args([
        "run",
        "--rm",
        "--network",
        "none",
        &format!("{host}/e2e/docker@{digest}"),
        "echo pulled by digest",
    ]));
    assert_eq!(out.trim(), "pulled by digest");

    let s1 = dockerd.stop();
    println!("dockerd exited: {s1}");
    dj.stop();
}
