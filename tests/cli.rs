//! The client commands of the binary (`donjon ls`, `inspect`, `rm`) against an in-process
//! donjon with htpasswd auth over real TCP: alice may do anything, `private/**` is nobody
//! else's, anyone may pull the rest. Catalog pages hold 2 repositories and one repository has
//! 105 tags, so both listings must follow the `Link` headers. Credentials come from the flags,
//! from a temporary `DOCKER_CONFIG` (Basic `auth`, an `identitytoken`, a credential helper),
//! from podman's `REGISTRY_AUTH_FILE`, or nowhere; every run has its own `HOME`, so that the
//! machine's own logins are never read.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use base64::Engine as _;
use bytes::Bytes;
use donjon_auth::config::{HtpasswdConfig, OneOrMany, RuleConfig};
use donjon_auth::AuthConfig;
use donjon_test_support::server::*;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_donjon");
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const SIG: &str = "application/vnd.example.signature";
const SBOM: &str = "application/vnd.example.sbom";

/// The registry and what was pushed to it.
struct Reg {
    server: TestServer,
    _auth: tempfile::TempDir,
    /// `HOME` of every run, empty.
    home: tempfile::TempDir,
    /// `apps/a:v1`, the referrers' subject.
    image: Pushed,
    /// `multi:v1`.
    index: Pushed,
    amd64: Pushed,
    arm64: Pushed,
    /// The referrers of `image`: two signatures and an SBOM.
    referrers: Vec<Pushed>,
    layers: Vec<usize>,
}

#[derive(Clone, Debug)]
struct Pushed {
    digest: String,
    size: usize,
}

fn rule(repository: &str, who: &[&str], actions: &[&str]) -> RuleConfig {
    RuleConfig {
        repository: repository.into(),
        who: OneOrMany::Many(who.iter().map(|w| w.to_string()).collect()),
        actions: actions.iter().map(|a| a.to_string()).collect(),
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", b64(&format!("{user}:{password}")))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl Reg {
    /// The registry with `apps/a` (an image with two layers, labels and annotations, tagged
    /// `v1` and `old`, and three referrers), `apps/b`, `multi` (an index of two images),
    /// `private/secret`, and `zeta` (one image under `tags` tags).
    async fn start(tags: usize) -> Self {
        Self::start_with(tags, |b| b).await
    }

    async fn start_with(tags: usize, f: impl Fn(donjon::RegistryBuilder) -> donjon::RegistryBuilder) -> Self {
        let auth = tempfile::tempdir().unwrap();
        let htpasswd = auth.path().join("htpasswd");
        let line = |u: &str, p: &str| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap());
        std::fs::write(&htpasswd, line("alice", "alice-pw") + &line("bob", "bob-pw")).unwrap();
        let config = AuthConfig {
            htpasswd: Some(HtpasswdConfig { realm: Some("donjon-test".into()), path: htpasswd }),
            service: Some("donjon-test".into()),
            access: vec![
                rule("**", &["user:alice"], &["pull", "push", "delete"]),
                rule("private/**", &["anyone"], &[]),
                rule("**", &["anyone"], &["pull"]),
            ],
            ..Default::default()
        };
        let keys = donjon::core::memory::MemoryStore::default();
        let layer = config.build(&keys, None).await.unwrap().unwrap();
        let server = TestServer::start_with(move |b| f(b.auth(layer.clone()).catalog_max_entries(2))).await;
        let mut reg = Reg {
            server,
            _auth: auth,
            home: tempfile::tempdir().unwrap(),
            image: Pushed { digest: String::new(), size: 0 },
            index: Pushed { digest: String::new(), size: 0 },
            amd64: Pushed { digest: String::new(), size: 0 },
            arm64: Pushed { digest: String::new(), size: 0 },
            referrers: vec![],
            layers: vec![1500, 3000],
        };
        reg.image = reg.push_image("apps/a", &["v1", "old"], "linux", "amd64", None, "a").await;
        reg.push_image("apps/b", &["1.0"], "linux", "amd64", None, "b").await;
        reg.push_image("private/secret", &["v1"], "linux", "amd64", None, "secret").await;
        let names: Vec<String> = (0..tags).map(|i| format!("t{i:03}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        reg.push_image("zeta", &names, "linux", "amd64", None, "zeta").await;
        reg.amd64 = reg.push_image("multi", &[], "linux", "amd64", None, "m-amd64").await;
        reg.arm64 = reg.push_image("multi", &[], "linux", "arm64", Some("v8"), "m-arm64").await;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": reg.amd64.digest, "size": reg.amd64.size,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": reg.arm64.digest, "size": reg.arm64.size,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            ],
            "annotations": {"org.opencontainers.image.created": "2024-02-03T04:05:06Z"},
        });
        reg.index = reg.put_manifest("multi", "v1", OCI_INDEX, &index).await;
        for (t, note) in [(SIG, "one"), (SIG, "two"), (SBOM, "sbom")] {
            let r = reg.push_artifact("apps/a", t, note).await;
            reg.referrers.push(r);
        }
        reg
    }

    fn host(&self) -> String {
        self.server.addr.to_string()
    }

    async fn as_alice(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        self.server.req_as(&basic("alice", "alice-pw"), method, path, headers, body).await
    }

    async fn blob(&self, repo: &str, data: &[u8]) -> Pushed {
        let d = digest(data);
        let r =
            self.as_alice("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], data.to_vec()).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        Pushed { digest: d, size: data.len() }
    }

    async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, m: &Value) -> Pushed {
        let body = serde_json::to_vec(m).unwrap();
        let reference = if reference.is_empty() { digest(&body) } else { reference.to_string() };
        let r = self
            .as_alice(
                "PUT",
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("content-type", media_type)],
                body.clone(),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        Pushed { digest: digest(&body), size: body.len() }
    }

    /// An image (config with `created` and labels, two layers of [`Self::layers`]'s sizes,
    /// an annotation) under each of `tags` (by digest when there are none).
    async fn push_image(
        &self,
        repo: &str,
        tags: &[&str],
        os: &str,
        arch: &str,
        variant: Option<&str>,
        salt: &str,
    ) -> Pushed {
        let mut config = json!({
            "created": "2024-01-02T03:04:05Z",
            "os": os,
            "architecture": arch,
            "config": {"Labels": {"org.opencontainers.image.source": "https://example.com/src", "salt": salt}},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        if let Some(v) = variant {
            config["variant"] = json!(v);
        }
        let config = self.blob(repo, &serde_json::to_vec(&config).unwrap()).await;
        let mut layers = vec![];
        for (i, n) in self.layers.iter().enumerate() {
            let data: Vec<u8> = format!("{salt}-{i}-").bytes().cycle().take(*n).collect();
            layers.push(self.blob(repo, &data).await);
        }
        let m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
            "layers": layers.iter().map(|l| json!({"mediaType": LAYER, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
            "annotations": {"org.example.note": format!("image {salt}")},
        });
        let first = tags.first().copied().unwrap_or("");
        let pushed = self.put_manifest(repo, first, OCI_MANIFEST, &m).await;
        for t in tags.iter().skip(1) {
            self.put_manifest(repo, t, OCI_MANIFEST, &m).await;
        }
        pushed
    }

    /// An artifact of `artifact_type` whose subject is [`Self::image`], by digest.
    async fn push_artifact(&self, repo: &str, artifact_type: &str, note: &str) -> Pushed {
        let empty = self.blob(repo, b"{}").await;
        let blob = self.blob(repo, format!("{{\"note\":\"{note}\"}}").as_bytes()).await;
        let m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.digest, "size": 2},
            "layers": [{"mediaType": "application/json", "digest": blob.digest, "size": blob.size}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": self.image.digest, "size": self.image.size},
            "annotations": {"org.opencontainers.image.created": format!("2024-03-0{}T00:00:00Z", note.len())},
        });
        self.put_manifest(repo, "", OCI_MANIFEST, &m).await
    }

    /// `donjon ARGS` with its own `HOME`, no docker or podman files unless `env` names them.
    async fn run(&self, args: &[&str], env: &[(&str, OsString)]) -> Out {
        run_in(self.home.path(), args, env, None).await
    }
}

/// One run of the binary.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{self:?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    fn failed(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "{self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
        self
    }
}

async fn run_in(home: &Path, args: &[&str], env: &[(&str, OsString)], stdin: Option<&str>) -> Out {
    let mut c = tokio::process::Command::new(BIN);
    c.args(args).env("HOME", home).env("XDG_RUNTIME_DIR", home.join("run"));
    for k in ["DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "DONJON_REGISTRY", "DONJON_CONFIG_FILE", "RUST_LOG"] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() });
    c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        tokio::io::AsyncWriteExt::write_all(&mut pipe, text.as_bytes()).await.unwrap();
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command ends")
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `args` with alice's `--user` and `--password` after the command.
fn alice<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![args[0], "-u", "alice", "-p", "alice-pw"];
    v.extend_from_slice(&args[1..]);
    v
}

/// A `DOCKER_CONFIG` directory holding `config`.
fn docker_config(dir: &Path, config: &Value) -> (&'static str, OsString) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    ("DOCKER_CONFIG", dir.as_os_str().to_owned())
}

#[tokio::test]
async fn ls_pages_through_the_catalog_and_the_tags() {
    let reg = Reg::start(105).await;
    let host = reg.host();
    // The listings need more than one page each.
    let r = reg.as_alice("GET", "/v2/_catalog", &[], Bytes::new()).await;
    assert!(r.header("link").contains("rel=\"next\""), "{:?}", r.headers);
    let all = ["apps/a", "apps/b", "multi", "private/secret", "zeta"];

    let out = reg.run(&alice(&["ls", "--insecure", &host]), &[]).await.ok();
    assert_eq!(out.stdout, all.map(|r| format!("{r}\n")).concat());
    // Nothing on stderr but docker's advice about a password given on the command line.
    assert_eq!(
        out.stderr,
        "donjon: warning: --password on the command line can be read by other users of this machine: use --password-stdin\n",
        "{out:?}"
    );
    let out = reg.run(&alice(&["ls", "--json", &format!("http://{host}")]), &[]).await.ok();
    assert_eq!(out.json(), json!({"registry": host, "repositories": all}));

    // Anonymously: what anyone may pull, private/ hidden.
    let out = reg.run(&["ls", "--insecure", "--json", &host], &[]).await.ok();
    assert_eq!(out.json()["repositories"], json!(["apps/a", "apps/b", "multi", "zeta"]));

    let out = reg.run(&["ls", "--insecure", &format!("{host}/zeta")], &[]).await.ok();
    let tags: Vec<String> = (0..105).map(|i| format!("t{i:03}")).collect();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), tags);
    let out = reg.run(&["ls", "--insecure", "--json", &format!("{host}/apps/a/")], &[]).await.ok();
    assert_eq!(out.json(), json!({"registry": host, "repository": "apps/a", "tags": ["old", "v1"]}));
    // A reader that went away (`| head`) is no panic.
    let line = format!("set -o pipefail; {BIN} ls --insecure {host}/zeta | true");
    let out = tokio::process::Command::new("bash")
        .args(["-c", &line])
        .env("HOME", reg.home.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    // DONJON_REGISTRY stands for a missing argument.
    let out =
        reg.run(&["ls", "--insecure"], &[("DONJON_REGISTRY", format!("{host}/apps/b").into())]).await.ok();
    assert_eq!(out.stdout, "1.0\n");
}

#[tokio::test]
async fn inspect_an_index_and_an_image_with_its_referrers() {
    let reg = Reg::start(1).await;
    let host = reg.host();
    let (a, m) = (&reg.amd64, &reg.arm64);

    let out = reg.run(&["inspect", "--insecure", "--json", &format!("{host}/multi:v1")], &[]).await.ok();
    let j = out.json();
    assert_eq!(j["kind"], "index");
    assert_eq!(j["mediaType"], OCI_INDEX);
    assert_eq!(j["digest"], reg.index.digest);
    assert_eq!(j["size"], reg.index.size);
    assert_eq!(j["reference"], "v1");
    assert_eq!(j["annotations"], json!({"org.opencontainers.image.created": "2024-02-03T04:05:06Z"}));
    assert_eq!(
        j["manifests"],
        json!([
            {"mediaType": OCI_MANIFEST, "digest": a.digest, "size": a.size, "platform": {"os": "linux", "architecture": "amd64"}, "annotations": {}},
            {"mediaType": OCI_MANIFEST, "digest": m.digest, "size": m.size, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}, "annotations": {}},
        ])
    );
    assert_eq!(j["referrers"], json!({}));
    assert!(j.get("layers").is_none() && j.get("config").is_none(), "{j}");

    let out = reg.run(&["inspect", "--insecure", &format!("{host}/multi:v1")], &[]).await.ok();
    let want_rows = format!(
        "  PLATFORM        DIGEST{pad}   SIZE  MEDIA TYPE\n\
         \x20 linux/amd64     {a}  {asz:>5}  {OCI_MANIFEST}\n\
         \x20 linux/arm64/v8  {m}  {msz:>5}  {OCI_MANIFEST}\n",
        pad = " ".repeat(71 - 6),
        a = a.digest,
        m = m.digest,
        asz = format!("{} B", a.size),
        msz = format!("{} B", m.size),
    );
    assert!(out.stdout.contains(&want_rows), "{}\nwanted:\n{want_rows}", out.stdout);
    assert!(
        out.stdout.starts_with(&format!("Name:        {host}/multi:v1\nKind:        index\n")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&format!("Digest:      {}\n", reg.index.digest)), "{}", out.stdout);
    assert!(out.stdout.ends_with("Referrers: none\n"), "{}", out.stdout);

    // The image, by digest, with its referrers grouped by artifact type.
    let image = format!("{host}/apps/a@{}", reg.image.digest);
    let out = reg.run(&["inspect", "--insecure", "--json", &image], &[]).await.ok();
    let j = out.json();
    assert_eq!(j["kind"], "manifest");
    assert_eq!((&j["digest"], &j["size"]), (&json!(reg.image.digest), &json!(reg.image.size)));
    assert_eq!(
        j["layers"].as_array().unwrap().iter().map(|l| l["size"].as_u64().unwrap()).collect::<Vec<_>>(),
        [1500, 3000]
    );
    assert_eq!(j["layersSize"], 4500);
    assert_eq!(j["config"]["mediaType"], OCI_CONFIG);
    assert_eq!(j["config"]["created"], "2024-01-02T03:04:05Z");
    assert_eq!((&j["config"]["os"], &j["config"]["architecture"]), (&json!("linux"), &json!("amd64")));
    assert_eq!(
        j["config"]["labels"],
        json!({"org.opencontainers.image.source": "https://example.com/src", "salt": "a"})
    );
    assert_eq!(j["annotations"], json!({"org.example.note": "image a"}));
    assert_eq!((&j["artifactType"], &j["subject"]), (&Value::Null, &Value::Null));
    let referrers: BTreeMap<String, Vec<String>> =
        serde_json::from_value::<BTreeMap<String, Vec<Value>>>(j["referrers"].clone())
            .unwrap()
            .into_iter()
            .map(|(t, list)| (t, list.iter().map(|r| r["digest"].as_str().unwrap().to_string()).collect()))
            .collect();
    let mut sigs = vec![reg.referrers[0].digest.clone(), reg.referrers[1].digest.clone()];
    sigs.sort();
    let mut got_sigs = referrers[SIG].clone();
    got_sigs.sort();
    assert_eq!(got_sigs, sigs);
    assert_eq!(referrers[SBOM], [reg.referrers[2].digest.clone()]);
    assert_eq!(referrers.len(), 2);

    let out = reg.run(&["inspect", "--insecure", &format!("{host}/apps/a:v1")], &[]).await.ok();
    let text = &out.stdout;
    for line in [
        format!("Name:        {host}/apps/a:v1\n"),
        "Kind:        manifest\n".to_string(),
        "Platform:    linux/amd64\n".to_string(),
        "Created:     2024-01-02T03:04:05Z\n".to_string(),
        "Layers (2):\n".to_string(),
        format!("  #  DIGEST{}     SIZE  MEDIA TYPE\n", " ".repeat(71 - 6)),
        format!("  2  {}  2.9 KiB  {LAYER}\n", digest_of_layer(&reg, 1)),
        format!("     total{}  4.4 KiB\n", " ".repeat(71 - 5)),
        "Labels:\n  org.opencontainers.image.source  https://example.com/src\n  salt                             a\n".to_string(),
        "Annotations:\n  org.example.note  image a\n".to_string(),
        format!("Referrers (3):\n  {SBOM} (1):\n    {}", reg.referrers[2].digest),
        format!("  {SIG} (2):\n"),
    ] {
        assert!(text.contains(&line), "{line:?} missing from\n{text}");
    }

    // An artifact names its type and subject.
    let out = reg
        .run(&["inspect", "--insecure", "--json", &format!("{host}/apps/a@{}", reg.referrers[2].digest)], &[])
        .await
        .ok();
    let j = out.json();
    assert_eq!(j["artifactType"], SBOM);
    assert_eq!(
        j["subject"],
        json!({"mediaType": OCI_MANIFEST, "digest": reg.image.digest, "size": reg.image.size})
    );
    assert_eq!(j["config"]["created"], Value::Null, "an empty config is not read as an image's");
}

/// The digest of the `i`th layer [`Reg::push_image`] wrote for `apps/a`.
fn digest_of_layer(reg: &Reg, i: usize) -> String {
    let data: Vec<u8> = format!("a-{i}-").bytes().cycle().take(reg.layers[i]).collect();
    digest(&data)
}

#[tokio::test]
async fn rm_deletes_tags_and_manifests_for_those_allowed() {
    let reg = Reg::start(1).await;
    let host = reg.host();
    // Anonymously, and as bob: refused, with why.
    let out = reg.run(&["rm", "--insecure", &format!("{host}/apps/a:old")], &[]).await.failed(1);
    assert!(out.stderr.contains("deleting the tag") && out.stderr.contains("HTTP 401"), "{out:?}");
    assert!(out.stderr.contains("no credentials were sent"), "{out:?}");
    let out = reg
        .run(&["rm", "--insecure", "-u", "bob", "-p", "bob-pw", &format!("{host}/apps/a:old")], &[])
        .await
        .failed(1);
    assert!(
        out.stderr.contains("DENIED") && out.stderr.contains("as user bob (credentials from --user)"),
        "{out:?}"
    );

    // The tag goes; the manifest stays under v1.
    let out = reg.run(&alice(&["rm", "--insecure", &format!("{host}/apps/a:old")]), &[]).await.ok();
    assert_eq!(out.stdout, format!("Deleted tag {host}/apps/a:old\n"));
    let out = reg.run(&["ls", "--insecure", &format!("{host}/apps/a")], &[]).await.ok();
    assert_eq!(out.stdout, "v1\n");
    // The manifest goes, with its tag.
    let target = format!("{host}/apps/b@{}", digest_of_manifest(&reg, "apps/b", "1.0").await);
    let out = reg.run(&alice(&["rm", "--insecure", "--json", &target]), &[]).await.ok();
    let j = out.json();
    assert_eq!(j["deleted"], "manifest");
    assert_eq!((&j["registry"], &j["repository"]), (&json!(host), &json!("apps/b")));
    let r = reg.as_alice("GET", "/v2/apps/b/manifests/1.0", &[], Bytes::new()).await;
    assert_eq!(r.status, 404);
    // Again: the registry's error, exit status 1.
    let out = reg.run(&alice(&["rm", "--insecure", &target]), &[]).await.failed(1);
    assert!(out.stderr.contains("HTTP 404 Not Found: MANIFEST_UNKNOWN"), "{out:?}");
}

async fn digest_of_manifest(reg: &Reg, repo: &str, tag: &str) -> String {
    let r = reg
        .as_alice("GET", &format!("/v2/{repo}/manifests/{tag}"), &[("accept", OCI_MANIFEST)], Bytes::new())
        .await;
    assert_eq!(r.status, 200);
    digest(&r.body)
}

#[tokio::test]
async fn a_registry_that_does_not_delete_says_so() {
    let reg = Reg::start_with(1, |b| b.delete_enabled(false)).await;
    let host = reg.host();
    let out = reg.run(&alice(&["rm", "--insecure", &format!("{host}/apps/a:v1")]), &[]).await.failed(1);
    assert!(out.stderr.contains(&format!("{host} refused to delete the tag {host}/apps/a:v1")), "{out:?}");
    assert!(out.stderr.contains("UNSUPPORTED"), "{out:?}");
    assert!(out.stderr.contains(&format!("donjon rm {host}/apps/a@{}", reg.image.digest)), "{out:?}");
}

#[tokio::test]
async fn private_repositories_are_refused_anonymously_with_a_clear_message() {
    let reg = Reg::start(1).await;
    let host = reg.host();
    for args in
        [vec!["ls", "--insecure", "private/secret"], vec!["inspect", "--insecure", "private/secret:v1"]]
    {
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let last = args.pop().unwrap();
        args.push(format!("{host}/{last}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = reg.run(&args, &[]).await.failed(1);
        assert!(out.stderr.contains("HTTP 401 Unauthorized"), "{out:?}");
        assert!(out.stderr.contains("no credentials were sent: give --user"), "{out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "one line: {out:?}");
        let out = reg.run(&alice(&args), &[]).await.ok();
        assert!(out.stdout.contains("v1"), "{out:?}");
    }
    // A wrong password is the token endpoint's refusal.
    let out = reg.run(&["ls", "--insecure", "-u", "alice", "-p", "nope", &host], &[]).await.failed(1);
    assert!(
        out.stderr.contains(&format!("the token endpoint http://{host}/v2/token refused user alice")),
        "{out:?}"
    );
}

#[tokio::test]
async fn credentials_from_docker_and_podman_files_and_helpers() {
    let reg = Reg::start(1).await;
    let host = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let ls = ["ls", "--insecure", "--json", &host];
    let sees_private =
        |out: &Out| out.json()["repositories"].as_array().unwrap().iter().any(|r| r == "private/secret");

    // auths.<host>.auth, in $DOCKER_CONFIG/config.json and in ~/.docker/config.json.
    let env = docker_config(
        &dir.path().join("d1"),
        &json!({"auths": {(host.clone()): {"auth": b64("alice:alice-pw")}}}),
    );
    assert!(sees_private(&reg.run(&ls, &[env]).await.ok()));
    let home = tempfile::tempdir().unwrap();
    docker_config(
        &home.path().join(".docker"),
        &json!({"auths": {(format!("http://{host}")): {"auth": b64("alice:alice-pw")}}}),
    );
    assert!(sees_private(&run_in(home.path(), &ls, &[], None).await.ok()));
    // Flags win over the file.
    let out =
        run_in(home.path(), &["ls", "--insecure", "-u", "bob", "-p", "bob-pw", "--json", &host], &[], None)
            .await
            .ok();
    assert!(!sees_private(&out));

    // An identity token (docker login against an OAuth2 token server): the refresh-token grant.
    let form = "grant_type=password&username=alice&password=alice-pw&service=donjon-test&client_id=test&access_type=offline";
    let r = reg
        .server
        .req("POST", "/v2/token", &[("content-type", "application/x-www-form-urlencoded")], form)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    let env = docker_config(
        &dir.path().join("d2"),
        &json!({"auths": {(host.clone()): {"auth": b64("alice:"), "identitytoken": refresh}}}),
    );
    assert!(sees_private(&reg.run(&ls, &[env]).await.ok()));

    // podman's REGISTRY_AUTH_FILE, read when docker's file has nothing for the registry.
    let env =
        docker_config(&dir.path().join("d3"), &json!({"auths": {"elsewhere.example": {"auth": b64("x:y")}}}));
    let auth_file = dir.path().join("auth.json");
    std::fs::write(
        &auth_file,
        json!({"auths": {(format!("{host}/private")): {"auth": b64("alice:alice-pw")}}}).to_string(),
    )
    .unwrap();
    let podman = ("REGISTRY_AUTH_FILE", auth_file.as_os_str().to_owned());
    let out = reg
        .run(&["ls", "--insecure", &format!("{host}/private/secret")], &[env.clone(), podman.clone()])
        .await
        .ok();
    assert_eq!(out.stdout, "v1\n", "a namespaced podman key");
    let out = reg.run(&ls, &[env, podman]).await.ok();
    assert!(!sees_private(&out), "the namespace's credentials are not the registry's");

    // A credential helper (docker-credential-<name> get, the server on stdin).
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = |name: &str, body: &str| {
        let p = bin.join(format!("docker-credential-{name}"));
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        let mut perms = std::fs::metadata(&p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&p, perms).unwrap();
    };
    script(
        "fake",
        &format!(
            r#"[ "$1" = get ] || exit 3
read server
[ "$server" = "{host}" ] || {{ echo "credentials not found in native keychain"; exit 1; }}
echo '{{"ServerURL":"{host}","Username":"alice","Secret":"alice-pw"}}'"#
        ),
    );
    script("broken", "echo 'the keychain is locked' >&2; exit 2");
    let path: OsString = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()).into();
    let env = docker_config(&dir.path().join("d4"), &json!({"credHelpers": {(host.clone()): "fake"}}));
    let out = reg.run(&ls, &[env, ("PATH", path.clone())]).await.ok();
    assert!(sees_private(&out), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    // A helper that fails is named in a warning; the command goes on anonymously.
    let env = docker_config(&dir.path().join("d5"), &json!({"credsStore": "broken"}));
    let out = reg.run(&ls, &[env, ("PATH", path.clone())]).await.ok();
    assert!(!sees_private(&out));
    assert!(
        out.stderr.contains("donjon: warning: the credentials for")
            && out.stderr.contains("docker-credential-broken (credsStore in")
            && out.stderr.contains("the keychain is locked"),
        "{out:?}"
    );
    let env = docker_config(&dir.path().join("d6"), &json!({"credsStore": "absent"}));
    let out = reg.run(&ls, &[env, ("PATH", path)]).await.ok();
    assert!(out.stderr.contains("cannot run docker-credential-absent"), "{out:?}");
}

#[tokio::test]
async fn password_stdin() {
    let reg = Reg::start(1).await;
    let host = reg.host();
    let args = ["ls", "--insecure", "-u", "alice", "--password-stdin", &format!("{host}/private/secret")];
    let out = run_in(reg.home.path(), &args, &[], Some("alice-pw\n")).await.ok();
    assert_eq!(out.stdout, "v1\n");
}

#[tokio::test]
async fn usage_errors_and_unreachable_registries() {
    let home = tempfile::tempdir().unwrap();
    let usage = |args: &'static [&'static str], says: &'static str| {
        let home = home.path().to_path_buf();
        async move {
            let out = run_in(&home, args, &[], None).await.failed(2);
            assert!(out.stderr.contains(says), "{args:?}: {out:?}");
        }
    };
    usage(&["rm", "h:1/a"], "name the tag (REGISTRY/REPO:TAG) or the manifest").await;
    usage(&["rm", "h:1"], "name a repository").await;
    usage(&["inspect", "h:1"], "name a repository").await;
    usage(&["ls", "h:1/a:v1"], "ls takes REGISTRY or REGISTRY/REPO").await;
    usage(&["ls", "h:1/A"], "invalid repository name").await;
    usage(&["ls", "ftp://h"], "only http:// and https://").await;
    usage(&["ls", "-u", "alice", "h:1"], "--user needs --password").await;
    usage(&["ls", "-p", "x", "h:1"], "need --user").await;
    usage(&["ls"], "REGISTRY").await;
    usage(&["ls", "--ca-file", "/nonexistent", "h:1"], "--ca-file").await;

    // Nothing listening: exit status 1. A broken registry configuration does not matter.
    let addr = free_addr();
    let bad = home.path().join("bad.yml");
    std::fs::write(&bad, "storage: [not, a, map]\n").unwrap();
    let out = run_in(
        home.path(),
        &["ls", "--insecure", &addr.to_string()],
        &[("DONJON_CONFIG_FILE", bad.into())],
        None,
    )
    .await
    .failed(1);
    assert!(out.stderr.starts_with(&format!("donjon: GET http://{addr}/v2/_catalog?n=100: ")), "{out:?}");
}

#[tokio::test]
async fn https_with_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "donjon-test", "IP:127.0.0.1");
    let tls = format!("{},{}", cert.display(), key.display());
    let data = dir.path().join("data");
    let (_donjon, addr) = donjon_test_support::spawn_donjon!(&["-d", data.to_str().unwrap(), "--tls", &tls]);
    let host = addr.to_string();
    let out = run_in(dir.path(), &["ls", "--ca-file", cert.to_str().unwrap(), "--json", &host], &[], None)
        .await
        .ok();
    assert_eq!(out.json(), json!({"registry": host, "repositories": []}));
    let out = run_in(dir.path(), &["ls", &host], &[], None).await.failed(1);
    assert!(out.stderr.contains("give its certificate with --ca-file"), "{out:?}");
    let out = run_in(dir.path(), &["ls", "--insecure", &host], &[], None).await.failed(1);
    assert!(out.stderr.starts_with("donjon: "), "{out:?}");

    // A registry over TLS whose challenge names a plain-HTTP token endpoint: the password is
    // not sent there.
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("alice:{}\n", bcrypt::hash("alice-pw", 4).unwrap())).unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!("auth:\n  htpasswd: {{path: {}}}\n  realm: http://{host}/v2/token\n", htpasswd.display()),
    )
    .unwrap();
    let data2 = dir.path().join("data2");
    let (_plain_realm, addr2) = donjon_test_support::spawn_donjon!(&[
        "-d",
        data2.to_str().unwrap(),
        "--tls",
        &tls,
        "--config-file",
        config.to_str().unwrap(),
    ]);
    let login = ["ls", "--ca-file", cert.to_str().unwrap(), "-u", "alice", "--password-stdin"];
    let target = addr2.to_string();
    let args: Vec<&str> = login.iter().copied().chain([target.as_str()]).collect();
    let out = run_in(dir.path(), &args, &[], Some("alice-pw\n")).await.failed(1);
    assert!(out.stderr.contains("over plain HTTP: refused"), "{out:?}");
}

/// `--help` lists the commands.
#[tokio::test]
async fn help_names_the_client_commands() {
    let home = tempfile::tempdir().unwrap();
    let out = run_in(home.path(), &["--help"], &[], None).await.ok();
    for c in ["ls ", "inspect ", "rm "] {
        assert!(out.stdout.contains(c), "{out:?}");
    }
    let out = run_in(home.path(), &["ls", "--help"], &[], None).await.ok();
    for flag in ["--user", "--password", "--password-stdin", "--insecure", "--ca-file", "--json"] {
        assert!(out.stdout.contains(flag), "{flag}: {out:?}");
    }
}
