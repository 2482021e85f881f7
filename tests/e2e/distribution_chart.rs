//! A Distribution chart user's setup, switched to donjon unchanged: the docker-registry Helm
//! chart's `config.yml` and the environment its Deployment sets (S3 in `REGISTRY_STORAGE_S3_*`
//! with the keys from a Secret, `REGISTRY_AUTH=htpasswd` with a file made by `htpasswd -nbB`,
//! TLS files from a `kubernetes.io/tls` Secret, `REGISTRY_HTTP_SECRET`), and its command,
//! `registry serve CONFIG`, on Garage. The chart's probe (`GET /`) answers; skopeo logs in with
//! the htpasswd user over verified TLS, pushes and pulls; anonymous pulls are refused; then
//! Distribution itself serves the same file, environment and bucket, and finds the image.

use std::fs;
use std::process::Command;
use std::time::Duration;

use super::support::*;

/// The chart's config.yml (its ConfigMap, from `configData`): what is not in it comes from the
/// environment. With loopback instead of `:5000`.
fn chart_config(port: u16) -> String {
    format!(
        "version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:{port}
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"
    )
}

/// The chart's environment (its `envs` helper) with `storage: s3`, `secrets.htpasswd` and
/// `tlsSecretName` set: the Secrets' keys, the S3 settings, `REGISTRY_AUTH=htpasswd` beside its
/// keys, the TLS files where the chart mounts them (here under `tls`), Garage for MinIO.
fn chart_env(c: &mut Command, g: &s3server::S3Server, htpasswd: &std::path::Path, tls: &std::path::Path) {
    for (k, _) in std::env::vars() {
        if k.starts_with("REGISTRY_") || k.starts_with("DONJON_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.env("REGISTRY_HTTP_SECRET", "a-shared-secret-from-the-chart");
    c.env("REGISTRY_AUTH", "htpasswd");
    c.env("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm");
    c.env("REGISTRY_AUTH_HTPASSWD_PATH", htpasswd);
    c.env("REGISTRY_HTTP_TLS_CERTIFICATE", tls.join("tls.crt"));
    c.env("REGISTRY_HTTP_TLS_KEY", tls.join("tls.key"));
    c.env("REGISTRY_STORAGE_S3_ACCESSKEY", g.access_key());
    c.env("REGISTRY_STORAGE_S3_SECRETKEY", g.secret_key());
    c.env("REGISTRY_STORAGE_S3_REGION", g.region());
    c.env("REGISTRY_STORAGE_S3_REGIONENDPOINT", g.endpoint());
    c.env("REGISTRY_STORAGE_S3_BUCKET", g.bucket());
    c.env("REGISTRY_STORAGE_S3_ROOTDIRECTORY", "/chart");
    c.env("REGISTRY_STORAGE_S3_ENCRYPT", "false");
    c.env("REGISTRY_STORAGE_S3_SECURE", "false");
    c.env("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true");
    c.env("REGISTRY_STORAGE_DELETE_ENABLED", "true");
}

#[test]
fn a_distribution_chart_config_with_s3_htpasswd_and_tls() {
    require_e2e!();
    let Some(g) = s3server::S3Server::start("chart") else {
        println!("skipped: no S3 server (set DONJON_S3=1 to make it a failure)");
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
    fs::write(&config, chart_config(port)).unwrap();
    let ready = |d: &mut Daemon| {
        let probe = || {
            let mut c = cmd("curl");
            c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"]).arg(ca.join("ca.crt"));
            c.arg(format!("https://{host}/v2/"));
            c.output().is_ok_and(|o| o.stdout == b"401")
        };
        d.wait_until("answering /v2/ with 401 over TLS", probe);
        // The chart's liveness and readiness probes: `GET /`.
        let mut c = cmd("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"]).arg(ca.join("ca.crt"));
        let code = ok(c.arg(format!("https://{host}/")));
        assert_eq!(code, "200", "{}: the chart's probe of /", d.name);
    };

    // donjon as the chart starts the registry (`registry serve CONFIG`), with its environment.
    let mut c = Command::new(env!("CARGO_BIN_EXE_donjon"));
    c.arg("serve").arg(&config).current_dir(s.dir("cwd"));
    chart_env(&mut c, &g, &auth.join("htpasswd"), &tls);
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
    chart_env(&mut c, &g, &auth.join("htpasswd"), &tls);
    let mut dist = Daemon::spawn("distribution", &mut c, &s.join("distribution.log"));
    dist.grace = Duration::from_secs(15);
    ready(&mut dist);
    pull("from-distribution");
    dist.stop();
}
