//! A Distribution chart user's setup, switched to donjon unchanged: the `config.yml` the
//! docker-registry Helm chart writes (S3 storage with the keys from a Secret in
//! `REGISTRY_STORAGE_S3_*` variables, `auth.htpasswd` from a Secret made with `htpasswd -nbB`,
//! `http.tls` from a `kubernetes.io/tls` Secret, `REGISTRY_HTTP_SECRET`), on Garage. skopeo
//! logs in with the htpasswd user over verified TLS, pushes and pulls; anonymous pulls are
//! refused; then Distribution itself serves the same file and bucket, and finds the image.

use std::fs;
use std::process::Command;
use std::time::Duration;

use super::support::*;

/// The chart's config.yml (its `configData` with `s3`, `secrets.htpasswd` and `tlsSecretName`
/// set), with the addresses of this machine: loopback instead of `:5000`, Garage for MinIO.
fn chart_config(port: u16, g: &garage::Garage, htpasswd: &std::path::Path, tls: &std::path::Path) -> String {
    format!(
        "version: 0.1
log:
  fields:
    service: registry
storage:
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  s3:
    region: {region}
    regionendpoint: {endpoint}
    bucket: {bucket}
    rootdirectory: /chart
    encrypt: false
    secure: false
    forcepathstyle: true
http:
  addr: 127.0.0.1:{port}
  headers:
    X-Content-Type-Options: [nosniff]
  tls:
    certificate: {tls}/tls.crt
    key: {tls}/tls.key
auth:
  htpasswd:
    realm: Registry Realm
    path: {htpasswd}
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
",
        region = g.region(),
        endpoint = g.endpoint(),
        bucket = g.bucket(),
        tls = tls.display(),
        htpasswd = htpasswd.display(),
    )
}

/// The Secrets' values as the chart hands them to the container: environment variables.
fn chart_env(c: &mut Command, g: &garage::Garage) {
    for (k, _) in std::env::vars() {
        if k.starts_with("REGISTRY_") || k.starts_with("DONJON_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.env("REGISTRY_STORAGE_S3_ACCESSKEY", g.access_key());
    c.env("REGISTRY_STORAGE_S3_SECRETKEY", g.secret_key());
    c.env("REGISTRY_HTTP_SECRET", "a-shared-secret-from-the-chart");
}

#[test]
fn a_distribution_chart_config_with_s3_htpasswd_and_tls() {
    require_e2e!();
    let Some(g) = garage::Garage::start("chart") else {
        println!("skipped: no garage (set DONJON_S3=1 to make it a failure)");
        return;
    };
    let s = Scratch::new("chart");
    // The Secrets, made as the chart's README says.
    let auth = s.dir("auth");
    let line = ok(cmd("htpasswd").args(["-nbB", "alice", "alice-pw"]));
    fs::write(auth.join("htpasswd"), line.trim_end().to_string() + "\n").unwrap();
    let tls = s.dir("tls");
    ok(cmd("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "2", "-subj", "/CN=registry.example", "-addext"])
        .arg("subjectAltName=DNS:registry.example,IP:127.0.0.1")
        .arg("-keyout")
        .arg(tls.join("tls.key"))
        .arg("-out")
        .arg(tls.join("tls.crt")));
    let ca = s.dir("ca");
    fs::copy(tls.join("tls.crt"), ca.join("ca.crt")).unwrap();

    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let config = s.join("config.yml");
    fs::write(&config, chart_config(port, &g, &auth.join("htpasswd"), &tls)).unwrap();
    let ready = |d: &mut Daemon| {
        let probe = || {
            let mut c = cmd("curl");
            c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"]).arg(ca.join("ca.crt"));
            c.arg(format!("https://{host}/v2/"));
            c.output().is_ok_and(|o| o.stdout == b"401")
        };
        d.wait_until("answering /v2/ with 401 over TLS", probe);
    };

    // donjon with nothing but the file and the chart's environment.
    let mut c = Command::new(env!("CARGO_BIN_EXE_donjon"));
    c.arg("--config-file").arg(&config).current_dir(s.dir("cwd"));
    chart_env(&mut c, &g);
    c.env("RUST_LOG", "info").env("NO_COLOR", "1");
    let mut dj = Daemon::spawn("donjon", &mut c, &s.join("donjon.log"));
    ready(&mut dj);

    let tls_flags = |c: &mut Command| {
        c.arg("--cert-dir").arg(&ca);
    };
    let mut login = skopeo(&s);
    login.args(["login", "--username", "alice", "--password", "alice-pw"]);
    tls_flags(&mut login);
    login.arg(&host);
    ok(&mut login);

    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    let image = format!("docker://{host}/team/busybox:v1");
    let mut push = skopeo(&s);
    push.args(["copy", "--retry-times", "0", "--dest-cert-dir"])
        .arg(&ca)
        .arg(layout.reference("v1"))
        .arg(&image);
    ok(&mut push);
    let pull = |name: &str| {
        let out = s.join(name);
        let mut c = skopeo(&s);
        c.args(["copy", "--retry-times", "0", "--src-cert-dir"]).arg(&ca);
        c.arg(&image).arg(format!("oci:{}:v1", out.display()));
        ok(&mut c);
        assert_eq!(layout_digest(&out, "v1"), img.manifest.digest, "pulled through {name}");
        for l in &img.layers {
            assert_eq!(file_sha256(&out.join("blobs/sha256").join(l.hex())), l.hex());
        }
    };
    pull("from-donjon");

    // Anonymous: refused, and asked to log in.
    let mut anon = skopeo(&s);
    anon.args(["inspect", "--raw", "--retry-times", "0", "--no-creds", "--cert-dir"]).arg(&ca).arg(&image);
    let out = fails(&mut anon);
    assert!(
        format!("{}{}", out.stdout, out.stderr).to_lowercase().contains("unauthorized"),
        "{}",
        out.describe()
    );
    // The bytes are in the bucket, nothing under the working directory.
    assert!(!s.join("cwd/data").exists(), "donjon wrote to ./data instead of the bucket");
    let st = dj.stop();
    assert!(st.success(), "donjon exited {st}");

    // Distribution on the same file and bucket serves what donjon stored.
    let mut c = Command::new(tool("docker-registry"));
    c.arg("serve").arg(&config);
    chart_env(&mut c, &g);
    let mut dist = Daemon::spawn("distribution", &mut c, &s.join("distribution.log"));
    dist.grace = Duration::from_secs(15);
    ready(&mut dist);
    pull("from-distribution");
    dist.stop();
}
