//! Real clients against an auth-enabled donjon: users written by `htpasswd -B`, alice may do
//! anything, bob may pull, anyone may pull `public/**`. skopeo (`--creds`), containerd's `ctr
//! --user`, `podman login` and `docker login` each log in, push and pull; anonymous pulls work
//! on `public/**` and nowhere else; bob's pushes are refused.

use std::fs;

use super::support::*;

struct Registry {
    dj: Donjon,
}

fn start(s: &Scratch) -> Registry {
    let htpasswd = s.join("htpasswd");
    ok(cmd("htpasswd").args(["-B", "-b", "-c"]).arg(&htpasswd).args(["alice", "alice-pw"]));
    ok(cmd("htpasswd").args(["-B", "-b"]).arg(&htpasswd).args(["bob", "bob-pw"]));
    let config = s.join("config.yml");
    fs::write(
        &config,
        format!(
            "auth:\n  htpasswd: {{realm: donjon-e2e, path: {}}}\n  access:\n\
             \x20   - {{repository: \"**\", who: user:alice, actions: [pull, push, delete]}}\n\
             \x20   - {{repository: \"public/**\", who: anyone, actions: [pull]}}\n\
             \x20   - {{repository: \"**\", who: authenticated, actions: [pull]}}\n",
            htpasswd.display()
        ),
    )
    .unwrap();
    let dj = Donjon::start_config(Some(&s.dir("data")), &config, &s.join("donjon.log"));
    Registry { dj }
}

/// What a refused client printed, lower-cased.
fn refusal(out: &Out) -> String {
    format!("{}{}", out.stdout, out.stderr).to_lowercase()
}

#[test]
fn skopeo_with_credentials() {
    require_e2e!();
    let s = Scratch::new("auth-skopeo");
    let Registry { dj } = start(&s);
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    skopeo_copy(
        &s,
        &["--dest-creds", "alice:alice-pw"],
        &layout.reference("v1"),
        &dj.docker("team/busybox:v1"),
    );
    skopeo_copy(
        &s,
        &["--dest-creds", "alice:alice-pw"],
        &layout.reference("v1"),
        &dj.docker("public/busybox:v1"),
    );

    let inspect = |creds: Option<&str>, image: &str| {
        let mut c = skopeo(&s);
        c.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some(creds) = creds {
            c.args(["--creds", creds]);
        }
        c.arg(dj.docker(image));
        c
    };
    let raw = ok(&mut inspect(Some("bob:bob-pw"), "team/busybox:v1"));
    assert_eq!(format!("sha256:{}", fixtures::sha256_hex(raw.as_bytes())), img.manifest.digest);
    ok(&mut inspect(None, "public/busybox:v1"));
    let out = fails(&mut inspect(None, "team/busybox:v1"));
    assert!(
        refusal(&out).contains("unauthorized") || refusal(&out).contains("authentication required"),
        "{}",
        out.describe()
    );
    let out = fails(&mut inspect(Some("bob:wrong"), "team/busybox:v1"));
    assert!(
        refusal(&out).contains("unauthorized") || refusal(&out).contains("invalid"),
        "{}",
        out.describe()
    );

    let mut c = skopeo(&s);
    c.args(["copy", "--retry-times", "0", "--dest-tls-verify=false", "--dest-creds", "bob:bob-pw"]);
    c.args([&layout.reference("v1"), &dj.docker("team/bobs:v1")]);
    let out = fails(&mut c);
    assert!(refusal(&out).contains("denied"), "bob's push is denied:\n{}", out.describe());
    dj.stop();
}

#[test]
fn containerd_with_credentials() {
    require_e2e!();
    let _heavy = heavy_lock();
    let s = Scratch::new("auth-ctrd");
    let Registry { dj } = start(&s);
    let (layout, _) = fixtures::busybox(s.join("in"), "v1").unwrap();
    skopeo_copy(
        &s,
        &["--dest-creds", "alice:alice-pw"],
        &layout.reference("v1"),
        &dj.docker("team/busybox:v1"),
    );
    skopeo_copy(
        &s,
        &["--dest-creds", "alice:alice-pw"],
        &layout.reference("v1"),
        &dj.docker("public/busybox:v1"),
    );
    let ctrd = Containerd::start(&s.dir("containerd"));
    let host = dj.host();
    let private = format!("{host}/team/busybox:v1");
    let public = format!("{host}/public/busybox:v1");
    let pull = |image: &str, user: Option<&str>| {
        let mut c = ctrd.ctr();
        c.args(["images", "pull", "--plain-http", "--snapshotter", "native"]);
        if let Some(u) = user {
            c.args(["--user", u]);
        }
        c.arg(image);
        c
    };
    ok(&mut pull(&public, None));
    let out = fails(&mut pull(&private, None));
    assert!(
        refusal(&out).contains("insufficient_scope"),
        "an anonymous token does not reach team/**:\n{}",
        out.describe()
    );
    ok(&mut pull(&private, Some("bob:bob-pw")));

    let pushed = format!("{host}/team/ctr:pushed");
    ok(ctrd.ctr().args(["images", "tag", &private, &pushed]));
    let out = fails(ctrd.ctr().args(["images", "push", "--plain-http", "--user", "bob:bob-pw", &pushed]));
    // ctr prints the challenge's error, not the body's DENIED.
    assert!(refusal(&out).contains("insufficient_scope"), "bob's push is refused:\n{}", out.describe());
    ok(ctrd.ctr().args(["images", "push", "--plain-http", "--user", "alice:alice-pw", &pushed]));
    drop(ctrd);
    dj.stop();
}

#[test]
fn podman_login_push_pull() {
    require_e2e!();
    let _heavy = heavy_lock();
    let s = Scratch::new("auth-podman");
    let Registry { dj } = start(&s);
    let host = dj.host();
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    skopeo_copy(
        &s,
        &["--dest-creds", "alice:alice-pw"],
        &layout.reference("v1"),
        &dj.docker("public/busybox:v1"),
    );
    let containers = Containers::new(&s, &host);
    let podman = || containers.podman();

    // anonymous pull of a public repository
    let public = format!("{host}/public/busybox:v1");
    ok(podman().args(["pull", "--tls-verify=false", &public]));
    let digest = ok(podman().args(["image", "inspect", "--format", "{{.Digest}}", &public]));
    assert_eq!(digest.trim(), img.manifest.digest);

    let out = fails(podman().args(["login", "--tls-verify=false", "-u", "alice", "-p", "wrong", &host]));
    assert!(
        refusal(&out).contains("unauthorized") || refusal(&out).contains("invalid"),
        "{}",
        out.describe()
    );
    let out = ok(podman().args(["login", "--tls-verify=false", "-u", "alice", "-p", "alice-pw", &host]));
    assert!(out.contains("Login Succeeded"), "{out}");
    let pushed = format!("{host}/team/podman:pushed");
    ok(podman().args(["tag", &public, &pushed]));
    ok(podman().args(["push", "--tls-verify=false", &pushed]));
    ok(podman().args(["logout", &host]));

    ok(podman().args(["rmi", "-f", &pushed]));
    let out = fails(podman().args(["pull", "--tls-verify=false", &pushed]));
    assert!(
        refusal(&out).contains("unauthorized") || refusal(&out).contains("authentication required"),
        "{}",
        out.describe()
    );
    ok(podman().args(["login", "--tls-verify=false", "-u", "bob", "-p", "bob-pw", &host]));
    ok(podman().args(["pull", "--tls-verify=false", &pushed]));
    let other = format!("{host}/team/podman:bob");
    ok(podman().args(["tag", &pushed, &other]));
    let out = fails(podman().args(["push", "--tls-verify=false", &other]));
    assert!(refusal(&out).contains("denied"), "bob's push is denied:\n{}", out.describe());
    dj.stop();
}

#[test]
fn docker_login_push_pull() {
    require_e2e!();
    let _heavy = heavy_lock();
    let s = Scratch::new("auth-docker");
    let Registry { dj } = start(&s);
    let host = dj.host();
    let (layout, _) = fixtures::busybox(s.join("in"), "v1").unwrap();
    skopeo_copy(
        &s,
        &["--dest-creds", "alice:alice-pw"],
        &layout.reference("v1"),
        &dj.docker("public/busybox:v1"),
    );
    let dockerd = Dockerd::start(&s, &host);
    let docker = || dockerd.docker();

    let public = format!("{host}/public/busybox:v1");
    ok(docker().args(["pull", &public]));
    let out = fails(docker().args(["login", "-u", "alice", "-p", "wrong", &host]));
    assert!(
        refusal(&out).contains("unauthorized") || refusal(&out).contains("invalid"),
        "{}",
        out.describe()
    );
    let out = ok(docker().args(["login", "-u", "alice", "-p", "alice-pw", &host]));
    assert!(out.contains("Login Succeeded"), "{out}");
    let pushed = format!("{host}/team/docker:pushed");
    ok(docker().args(["tag", &public, &pushed]));
    ok(docker().args(["push", &pushed]));
    ok(docker().args(["logout", &host]));
    ok(docker().args(["rmi", &pushed]));
    let out = fails(docker().args(["pull", &pushed]));
    assert!(refusal(&out).contains("unauthorized") || refusal(&out).contains("denied"), "{}", out.describe());

    ok(docker().args(["login", "-u", "bob", "-p", "bob-pw", &host]));
    ok(docker().args(["pull", &pushed]));
    let other = format!("{host}/team/docker:bob");
    ok(docker().args(["tag", &pushed, &other]));
    let out = fails(docker().args(["push", &other]));
    assert!(refusal(&out).contains("denied"), "bob's push is denied:\n{}", out.describe());
    let st = dockerd.stop();
    println!("dockerd exited: {st}");
    dj.stop();
}
