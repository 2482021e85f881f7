//! Migration to and from CNCF Distribution on one storage (a directory or an S3 bucket).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::support::*;

/// Where a registry's storage can be looked at directly: a directory, or a bucket and prefix
/// (listed and read with `curl --aws-sigv4`, which signs S3 requests).
enum Backing {
    Dir(PathBuf),
    S3 {
        endpoint: String,
        region: String,
        bucket: String,
        access_key: String,
        secret_key: String,
        prefix: String,
    },
}

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl Backing {
    fn s3(g: &s3server::S3Server, prefix: &str) -> Self {
        Backing::S3 {
            endpoint: g.endpoint(),
            region: g.region().to_string(),
            bucket: g.bucket().to_string(),
            access_key: g.access_key().to_string(),
            secret_key: g.secret_key().to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    /// curl signing its request for the bucket (quiet: the command line holds the secret key).
    fn curl(&self) -> Command {
        let Backing::S3 { access_key, secret_key, region, .. } = self else { unreachable!() };
        let mut c = Command::new(tool("curl"));
        c.args(["-sS", "--aws-sigv4", &format!("aws:amz:{region}:s3"), "--user"])
            .arg(format!("{access_key}:{secret_key}"));
        c
    }

    /// A signed GET of `path_query` (`/BUCKET/KEY` or `/BUCKET?...`, already percent-encoded):
    /// None on a 404. Quiet: the command line holds the secret key.
    fn s3_get(&self, path_query: &str) -> Option<Vec<u8>> {
        let Backing::S3 { endpoint, .. } = self else { unreachable!() };
        let out = self
            .curl()
            .args(["--max-time", "60", "-w", "\n%{http_code}"])
            .args(["-H", &format!("x-amz-content-sha256: {EMPTY_SHA256}")])
            .arg(format!("{endpoint}{path_query}"))
            .stdin(Stdio::null())
            .output()
            .expect("curl");
        assert!(out.status.success(), "curl {path_query}: {}", String::from_utf8_lossy(&out.stderr));
        let mut body = out.stdout;
        let nl = body.iter().rposition(|&b| b == b'\n').expect("status line");
        let code = String::from_utf8_lossy(&body[nl + 1..]).trim().to_string();
        body.truncate(nl);
        match code.as_str() {
            "200" => Some(body),
            "404" => None,
            _ => panic!("S3 GET {path_query}: HTTP {code}: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// Every key in the bucket starting with `prefix` (ListObjectsV2, all pages).
    fn s3_keys(&self, prefix: &str) -> Vec<String> {
        let Backing::S3 { bucket, .. } = self else { unreachable!() };
        let enc = |v: &str| -> String {
            v.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        };
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = format!("/{bucket}?list-type=2");
            if let Some(t) = &token {
                q.push_str(&format!("&continuation-token={}", enc(t)));
            }
            if !prefix.is_empty() {
                q.push_str(&format!("&prefix={}", enc(prefix)));
            }
            let xml = String::from_utf8(self.s3_get(&q).expect("bucket")).unwrap();
            keys.extend(xml_values(&xml, "Key"));
            token = xml_values(&xml, "NextContinuationToken").into_iter().next();
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        keys
    }

    /// A signed PUT of `bytes` as `rel` under the prefix, as `aws s3 cp` or `rclone` would.
    fn s3_put(&self, rel: &str, bytes: &[u8]) {
        let Backing::S3 { endpoint, bucket, prefix, .. } = self else { unreachable!() };
        let mut child = self
            .curl()
            .args(["--max-time", "120", "-o", "/dev/null", "-w", "%{http_code}", "-T", "-"])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .arg(format!("{endpoint}/{bucket}/{prefix}/{rel}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl");
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "S3 PUT {rel}");
    }

    /// The keys of the multipart uploads in progress in the bucket.
    fn s3_multipart_uploads(&self) -> Vec<String> {
        let Backing::S3 { bucket, .. } = self else { unreachable!() };
        let xml = String::from_utf8(self.s3_get(&format!("/{bucket}?uploads=")).expect("bucket")).unwrap();
        xml_values(&xml, "Key")
    }

    /// Every file (object) of the storage, relative to its root (directory or prefix), sorted.
    fn list(&self) -> Vec<String> {
        match self {
            Backing::Dir(root) => {
                fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
                    let Ok(rd) = fs::read_dir(dir) else { return };
                    for e in rd.flatten() {
                        let p = e.path();
                        if p.is_dir() {
                            walk(base, &p, out);
                        } else {
                            out.push(p.strip_prefix(base).unwrap().display().to_string());
                        }
                    }
                }
                let mut out = Vec::new();
                walk(root, root, &mut out);
                out.sort();
                out
            }
            Backing::S3 { prefix, .. } => {
                let p = format!("{prefix}/");
                self.s3_keys(&p).into_iter().map(|k| k[p.len()..].to_string()).collect()
            }
        }
    }

    /// The bytes of `rel` (relative to the root), None when absent.
    fn read(&self, rel: &str) -> Option<Vec<u8>> {
        match self {
            Backing::Dir(root) => fs::read(root.join(rel)).ok(),
            Backing::S3 { bucket, prefix, .. } => self.s3_get(&format!("/{bucket}/{prefix}/{rel}")),
        }
    }
}

/// The text of every `<tag>...</tag>` in `xml` (entities `&amp;` etc. decoded).
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let j = after.find(&close).expect("closing tag");
        out.push(
            after[..j]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[j + close.len()..];
    }
    out
}

/// The files Distribution reads for `repo:tag` -> `manifest` with `blobs` (config and layers),
/// in its layout: the problems found (empty when all is there).
fn distribution_layout_problems(
    st: &Backing,
    repo: &str,
    tag: &str,
    manifest: &str,
    blobs: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap().to_string();
    let mut check_link = |rel: String, want: &str| {
        let rel = format!("docker/registry/v2/{rel}");
        match st.read(&rel) {
            // Distribution parses the link's bytes as they are: no newline allowed.
            Some(b) if b == want.as_bytes() => {}
            Some(b) => problems.push(format!(
                "{rel}: contains {:?}, Distribution wants exactly {want:?}",
                String::from_utf8_lossy(&b)
            )),
            None => problems.push(format!("{rel}: missing")),
        }
    };
    let repo_dir = format!("repositories/{repo}");
    check_link(format!("{repo_dir}/_manifests/revisions/sha256/{}/link", hex(manifest)), manifest);
    check_link(format!("{repo_dir}/_manifests/tags/{tag}/current/link"), manifest);
    check_link(format!("{repo_dir}/_manifests/tags/{tag}/index/sha256/{}/link", hex(manifest)), manifest);
    for b in blobs {
        check_link(format!("{repo_dir}/_layers/sha256/{}/link", hex(b)), b);
    }
    for d in std::iter::once(&manifest).chain(blobs) {
        let h = hex(d);
        let rel = format!("docker/registry/v2/blobs/sha256/{}/{h}/data", &h[..2]);
        match st.read(&rel) {
            Some(b) if fixtures::sha256_hex(&b) == h => {}
            Some(_) => problems.push(format!("{rel}: content does not hash to {d}")),
            None => problems.push(format!("{rel}: missing")),
        }
    }
    problems
}

/// Pushes to Distribution, serves the same storage with donjon (reads, then writes), then serves
/// it with Distribution again and reads what donjon wrote. `storage` is the `storage:` driver
/// section both get; `st` is that storage seen directly (for the layout checks); `donjon_data`
/// is donjon's `-d` (None: from the config file).
fn migration_both_ways(s: &Scratch, storage: &str, st: &Backing, donjon_data: Option<&Path>) {
    let t0 = Instant::now();
    let (bb_layout, bb) = fixtures::busybox(s.join("in-bb"), "v1").unwrap();
    let (m_layout, m) = fixtures::multi_arch(s.join("in-multi"), "multi").unwrap();
    // gzip layers (skopeo pushes them as they are), above the S3 chunk size (5 MiB) too.
    let (la_layout, la) = fixtures::large(s.join("in-la"), "a", 6 << 20, 101, true).unwrap();
    let (lb_layout, lb) = fixtures::large(s.join("in-lb"), "b", 12 << 20, 102, true).unwrap();
    let blobs = |img: &fixtures::Image| -> Vec<String> {
        std::iter::once(img.config.digest.clone())
            .chain(img.layers.iter().map(|l| l.digest.clone()))
            .collect()
    };
    let bb_blobs = blobs(&bb);
    let la_blobs = blobs(&la);
    let lb_blobs = blobs(&lb);

    // ---- 1. Distribution writes
    let dist = Distribution::start(s, "dist1", storage);
    skopeo_copy(s, &[], &bb_layout.reference("v1"), &dist.docker("mig/busybox:v1"));
    skopeo_copy(s, &["--all"], &m_layout.reference("multi"), &dist.docker("mig/multi:1"));
    skopeo_copy(s, &[], &bb_layout.reference("v1"), &dist.docker("mig/moving:t"));
    skopeo_copy(s, &[], &bb_layout.reference("v1"), &dist.docker("mig/todelete:x"));
    skopeo_copy(s, &[], &la_layout.reference("a"), &dist.docker("mig/large:a"));
    assert_eq!(skopeo_raw_digest(s, &dist.docker("mig/busybox:v1")), bb.manifest.digest);
    // What Distribution itself answers for the tags of a repository whose only manifest it
    // deleted (on S3, without directories, the repository is gone: 404 NAME_UNKNOWN).
    skopeo_copy(s, &[], &bb_layout.reference("v1"), &dist.docker("mig/distdel:x"));
    let mut c = skopeo(s);
    c.args(["delete", "--retry-times", "0", "--tls-verify=false", &dist.docker("mig/distdel:x")]);
    ok(&mut c);
    let emptied = tags_raw(&dist.host(), "mig/distdel");
    dist.stop();
    let before = st.list();
    println!(
        "Distribution wrote {} files; under _uploads: {:?}",
        before.len(),
        before.iter().filter(|f| f.contains("/_uploads/")).collect::<Vec<_>>()
    );
    let t1 = Instant::now();
    println!("== phase 1 (Distribution pushes) took {:.1?}", t1 - t0);

    // ---- 2. donjon reads what Distribution wrote, then writes
    let config = s.join("dist1.yml");
    let dj = Donjon::start_config(donjon_data, &config, &s.join("donjon.log"));
    for (r, want) in [
        ("mig/busybox:v1".to_string(), &bb.manifest.digest),
        (format!("mig/busybox@{}", bb.manifest.digest), &bb.manifest.digest),
        ("mig/multi:1".to_string(), &m.index.digest),
        (format!("mig/multi@{}", m.index.digest), &m.index.digest),
        (format!("mig/multi@{}", m.arm64.manifest.digest), &m.arm64.manifest.digest),
        (format!("mig/multi@{}", m.amd64.manifest.digest), &m.amd64.manifest.digest),
        ("mig/large:a".to_string(), &la.manifest.digest),
        ("mig/moving:t".to_string(), &bb.manifest.digest),
        ("mig/todelete:x".to_string(), &bb.manifest.digest),
    ] {
        assert_eq!(&skopeo_raw_digest(s, &dj.docker(&r)), want, "donjon serving {r} written by Distribution");
    }
    let out = s.join("out-dj");
    copy_out_and_check(
        s,
        &[],
        &dj.docker("mig/busybox:v1"),
        &out,
        "bytag",
        &bb.manifest.digest,
        &as_str(&bb_blobs),
    );
    copy_out_and_check(
        s,
        &[],
        &dj.docker(&format!("mig/busybox@{}", bb.manifest.digest)),
        &out,
        "bydigest",
        &bb.manifest.digest,
        &as_str(&bb_blobs),
    );
    copy_out_and_check(
        s,
        &["--all"],
        &dj.docker("mig/multi:1"),
        &out,
        "multi",
        &m.index.digest,
        &[&m.arm64.layers[0].digest, &m.amd64.layers[0].digest],
    );
    copy_out_and_check(
        s,
        &[],
        &dj.docker("mig/large:a"),
        &out,
        "large",
        &la.manifest.digest,
        &as_str(&la_blobs),
    );
    assert_eq!(list_tags(s, &dj.docker("mig/busybox")), ["v1"]);
    assert_eq!(list_tags(s, &dj.docker("mig/multi")), ["1"]);
    assert_catalog_has(&dj.host(), &["mig/busybox", "mig/multi", "mig/moving", "mig/todelete", "mig/large"]);
    let r = http(&dj.host(), "HEAD", &format!("/v2/mig/large/blobs/{}", la.layers[0].digest), &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(la.layers[0].size.to_string().as_str()));

    // writes: new blobs (12 MiB layer), a new tag in an old repository, a cross-repository mount
    // of blobs Distribution wrote, an index, a moved tag, a deleted manifest
    skopeo_copy(s, &[], &lb_layout.reference("b"), &dj.docker("mig/new:b"));
    skopeo_copy(s, &[], &bb_layout.reference("v1"), &dj.docker("mig/busybox:v2"));
    skopeo_copy(s, &[], &dj.docker("mig/busybox:v1"), &dj.docker("mig/mounted:1"));
    skopeo_copy(s, &["--all"], &m_layout.reference("multi"), &dj.docker("mig/multi2:1"));
    skopeo_copy(
        s,
        &[],
        &dj.docker(&format!("mig/multi@{}", m.arm64.manifest.digest)),
        &dj.docker("mig/moving:t"),
    );
    let mut c = skopeo(s);
    c.args(["delete", "--retry-times", "0", "--tls-verify=false", &dj.docker("mig/todelete:x")]);
    ok(&mut c);
    assert_eq!(skopeo_raw_digest(s, &dj.docker("mig/new:b")), lb.manifest.digest);
    assert_eq!(skopeo_raw_digest(s, &dj.docker("mig/moving:t")), m.arm64.manifest.digest);
    assert_eq!(list_tags(s, &dj.docker("mig/busybox")), ["v1", "v2"]);
    // The tags of a repository emptied by a delete: donjon answers 200 with no tags on every
    // storage (what the conformance suite requires); Distribution answers 404 on S3, where a
    // bucket keeps no empty folders.
    println!("Distribution's tags list of an emptied repository: {emptied:?}");
    assert_eq!(tags_raw(&dj.host(), "mig/distdel"), (200, vec![]), "emptied by Distribution, seen by donjon");
    assert_eq!(tags_raw(&dj.host(), "mig/todelete"), (200, vec![]), "emptied by donjon, seen by donjon");
    dj.stop();
    let t2 = Instant::now();
    println!("== phase 2 (donjon reads and writes) took {:.1?}", t2 - t1);

    {
        let after = st.list();
        let added: Vec<&String> = after.iter().filter(|f| before.binary_search(f).is_err()).collect();
        let removed: Vec<&String> = before.iter().filter(|f| after.binary_search(f).is_err()).collect();
        println!("files donjon added ({}):", added.len());
        for f in &added {
            println!("  + {f}");
        }
        println!("files donjon removed ({}):", removed.len());
        for f in &removed {
            println!("  - {f}");
        }
        let mut problems = Vec::new();
        for (repo, tag, manifest, blobs) in [
            ("mig/new", "b", &lb.manifest.digest, as_str(&lb_blobs)),
            ("mig/busybox", "v2", &bb.manifest.digest, as_str(&bb_blobs)),
            ("mig/mounted", "1", &bb.manifest.digest, as_str(&bb_blobs)),
            ("mig/moving", "t", &m.arm64.manifest.digest, vec![]),
            ("mig/multi2", "1", &m.index.digest, vec![]),
        ] {
            problems.extend(distribution_layout_problems(st, repo, tag, manifest, &blobs));
        }
        // Distribution's own kinds of files only, all under docker/registry/v2.
        let known = |f: &str| {
            let Some(f) = f.strip_prefix("docker/registry/v2/") else { return false };
            (f.starts_with("blobs/sha256/") && f.ends_with("/data"))
                || (f.starts_with("repositories/")
                    && f.ends_with("/link")
                    && (f.contains("/_layers/sha256/") || f.contains("/_manifests/")))
        };
        for f in added.iter().filter(|f| !known(f)) {
            problems.push(format!("{f}: not a kind of file Distribution writes (left by donjon)"));
        }
        if let Backing::S3 { prefix, .. } = st {
            let outside: Vec<String> =
                st.s3_keys("").into_iter().filter(|k| !k.starts_with(&format!("{prefix}/"))).collect();
            if !outside.is_empty() {
                problems.push(format!("keys outside the prefix {prefix}/: {outside:?}"));
            }
            let pending = st.s3_multipart_uploads();
            if !pending.is_empty() {
                problems.push(format!("multipart uploads left in progress: {pending:?}"));
            }
        }
        assert!(
            problems.is_empty(),
            "donjon's files differ from Distribution's layout:\n{}",
            problems.join("\n")
        );
    }

    // ---- 3. Distribution's garbage collector marks from what donjon wrote: it must keep every
    // blob still referenced (it deletes blobs no manifest revision of any repository names).
    let t3 = Instant::now();
    let mut c = Command::new(tool("docker-registry"));
    c.arg("garbage-collect").arg(&config);
    for (k, _) in std::env::vars() {
        if k.starts_with("REGISTRY_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    let gc = run_with(&mut c, TIMEOUT);
    assert!(gc.success(), "garbage-collect failed\n{}", gc.describe());
    let summary: Vec<&str> = gc
        .stdout
        .lines()
        .chain(gc.stderr.lines())
        .filter(|l| l.contains("eligible") || l.contains("Deleting"))
        .collect();
    println!("garbage-collect: {summary:#?}");
    // Every blob is referenced: busybox, arm64 and the two large images (3 each), the index.
    let all = format!("{}{}", gc.stdout, gc.stderr);
    assert!(
        all.contains("13 blobs marked, 0 blobs and 0 manifests eligible for deletion"),
        "Distribution's garbage collector did not find every blob referenced\n{}",
        gc.describe()
    );
    println!("== garbage-collect took {:.1?}", t3.elapsed());

    // ---- 4. Distribution reads what donjon wrote
    let dist = Distribution::start(s, "dist2", storage);
    for (r, want) in [
        ("mig/new:b".to_string(), &lb.manifest.digest),
        (format!("mig/new@{}", lb.manifest.digest), &lb.manifest.digest),
        ("mig/busybox:v2".to_string(), &bb.manifest.digest),
        ("mig/mounted:1".to_string(), &bb.manifest.digest),
        ("mig/multi2:1".to_string(), &m.index.digest),
        (format!("mig/multi2@{}", m.arm64.manifest.digest), &m.arm64.manifest.digest),
        ("mig/moving:t".to_string(), &m.arm64.manifest.digest),
        // and the old content
        ("mig/busybox:v1".to_string(), &bb.manifest.digest),
        ("mig/multi:1".to_string(), &m.index.digest),
        ("mig/large:a".to_string(), &la.manifest.digest),
    ] {
        assert_eq!(&skopeo_raw_digest(s, &dist.docker(&r)), want, "Distribution serving {r} (after donjon)");
    }
    let out = s.join("out-dist");
    copy_out_and_check(
        s,
        &[],
        &dist.docker("mig/new:b"),
        &out,
        "new",
        &lb.manifest.digest,
        &as_str(&lb_blobs),
    );
    copy_out_and_check(
        s,
        &[],
        &dist.docker(&format!("mig/new@{}", lb.manifest.digest)),
        &out,
        "newbydigest",
        &lb.manifest.digest,
        &as_str(&lb_blobs),
    );
    copy_out_and_check(
        s,
        &[],
        &dist.docker("mig/busybox:v2"),
        &out,
        "v2",
        &bb.manifest.digest,
        &as_str(&bb_blobs),
    );
    copy_out_and_check(
        s,
        &[],
        &dist.docker("mig/mounted:1"),
        &out,
        "mounted",
        &bb.manifest.digest,
        &as_str(&bb_blobs),
    );
    copy_out_and_check(
        s,
        &["--all"],
        &dist.docker("mig/multi2:1"),
        &out,
        "multi2",
        &m.index.digest,
        &[&m.arm64.layers[0].digest, &m.amd64.layers[0].digest],
    );
    copy_out_and_check(
        s,
        &[],
        &dist.docker("mig/moving:t"),
        &out,
        "moving",
        &m.arm64.manifest.digest,
        &[&m.arm64.layers[0].digest],
    );
    copy_out_and_check(
        s,
        &[],
        &dist.docker("mig/busybox:v1"),
        &out,
        "v1",
        &bb.manifest.digest,
        &as_str(&bb_blobs),
    );
    copy_out_and_check(s, &["--all"], &dist.docker("mig/multi:1"), &out, "multi", &m.index.digest, &[]);
    copy_out_and_check(
        s,
        &[],
        &dist.docker("mig/large:a"),
        &out,
        "large",
        &la.manifest.digest,
        &as_str(&la_blobs),
    );
    // The manifest donjon deleted is gone for Distribution too.
    for gone in [dist.docker("mig/todelete:x"), dist.docker(&format!("mig/todelete@{}", bb.manifest.digest))]
    {
        let mut c = skopeo(s);
        c.args(["inspect", "--raw", "--retry-times", "0", "--tls-verify=false", &gone]);
        let out = fails(&mut c);
        assert!(
            out.stderr.contains("manifest unknown"),
            "expected MANIFEST_UNKNOWN for {gone}\n{}",
            out.describe()
        );
    }
    let r = http(&dist.host(), "HEAD", &format!("/v2/mig/new/blobs/{}", lb.layers[0].digest), &[]).unwrap();
    assert_eq!(r.status, 200, "HEAD of the layer donjon wrote, on Distribution");
    assert_eq!(r.header("content-length"), Some(lb.layers[0].size.to_string().as_str()));
    assert_eq!(list_tags(s, &dist.docker("mig/busybox")), ["v1", "v2"]);
    assert_eq!(list_tags(s, &dist.docker("mig/moving")), ["t"]);
    assert_eq!(tags_raw(&dist.host(), "mig/todelete"), emptied, "emptied by donjon, seen by Distribution");
    assert_catalog_has(
        &dist.host(),
        &["mig/busybox", "mig/multi", "mig/large", "mig/new", "mig/mounted", "mig/multi2"],
    );
    dist.stop();
    println!(
        "== phase 4 (Distribution reads donjon's writes) took {:.1?}; total {:.1?}",
        t2.elapsed(),
        t0.elapsed()
    );
}

/// Distribution (filesystem driver) -> donjon -> Distribution, on one directory.
#[test]
fn migration_filesystem_both_ways() {
    require_e2e!();
    let s = Scratch::new("mig-fs");
    let root = s.dir("registry");
    let storage = format!("  filesystem:\n    rootdirectory: {}\n", root.display());
    migration_both_ways(&s, &storage, &Backing::Dir(root.clone()), None);
}

/// Distribution (S3 driver) -> donjon -> Distribution, on one Garage bucket and prefix.
#[test]
fn migration_s3_both_ways() {
    require_e2e!();
    let Some(g) = s3server::S3Server::start("migration") else {
        println!("skipped: no S3 server (set DONJON_S3=1 to make it a failure)");
        return;
    };
    let s = Scratch::new("mig-s3");
    let storage = s3_storage_yaml(&g, "/mig-prefix");
    let data = s.dir("donjon-data");
    migration_both_ways(&s, &storage, &Backing::s3(&g, "/mig-prefix"), Some(&data));
    drop(g);
}

/// OpenShift's move of a registry's storage between a volume and a bucket: the files copied
/// as they are, each to the key of its path (what `aws s3 sync DIR s3://BUCKET/PREFIX` or
/// `rclone copy` does), and back. donjon serves what was copied on the other side, and what it
/// stored there comes back too.
#[test]
fn moved_between_a_volume_and_a_bucket() {
    require_e2e!();
    let Some(g) = s3server::S3Server::start("move") else {
        println!("skipped: no S3 server (set DONJON_S3=1 to make it a failure)");
        return;
    };
    let s = Scratch::new("move");
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    let (mlayout, m) = fixtures::multi_arch(s.join("multi"), "multi").unwrap();
    let volume = Backing::Dir(s.dir("volume"));
    let Backing::Dir(volume_dir) = &volume else { unreachable!() };

    let dj = Donjon::start_on(volume_dir, free_port(), &s.join("fs.log"));
    skopeo_copy(&s, &[], &layout.reference("v1"), &dj.docker("team/busybox:v1"));
    skopeo_copy(&s, &["--all"], &mlayout.reference("multi"), &dj.docker("team/multi:1"));
    dj.stop();

    // Volume → bucket.
    let bucket = Backing::s3(&g, "/moved");
    let files = volume.list();
    assert!(files.iter().any(|f| f.starts_with("docker/registry/v2/blobs/")), "{files:?}");
    for f in &files {
        bucket.s3_put(f, &volume.read(f).unwrap());
    }
    let config = s.join("s3.yml");
    fs::write(&config, format!("storage:\n{}", s3_storage_yaml(&g, "/moved"))).unwrap();
    let dj = Donjon::start_config(Some(&s.dir("s3-data")), &config, &s.join("s3.log"));
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("team/busybox:v1")), img.manifest.digest);
    let blobs: Vec<&str> = img.layers.iter().map(|l| l.digest.as_str()).collect();
    copy_out_and_check(
        &s,
        &[],
        &dj.docker("team/busybox:v1"),
        &s.join("out1"),
        "v1",
        &img.manifest.digest,
        &blobs,
    );
    copy_out_and_check(
        &s,
        &["--all"],
        &dj.docker("team/multi:1"),
        &s.join("out2"),
        "1",
        &m.index.digest,
        &[],
    );
    // Pushed while on the bucket: an image with a layer of its own, which the S3 store writes.
    let (big_layout, big) = fixtures::large(s.join("big"), "v1", 300_000, 11, true).unwrap();
    skopeo_copy(&s, &[], &big_layout.reference("v1"), &dj.docker("team/after-move:v1"));
    dj.stop();

    // Bucket → a new volume.
    let back = s.dir("volume-again");
    for key in bucket.list() {
        let path = back.join(&key);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bucket.read(&key).unwrap()).unwrap();
    }
    let dj = Donjon::start_on(&back, free_port(), &s.join("back.log"));
    assert_eq!(skopeo_raw_digest(&s, &dj.docker("team/busybox:v1")), img.manifest.digest);
    let big_blobs: Vec<&str> = big.layers.iter().map(|l| l.digest.as_str()).collect();
    copy_out_and_check(
        &s,
        &[],
        &dj.docker("team/after-move:v1"),
        &s.join("out4"),
        "v1",
        &big.manifest.digest,
        &big_blobs,
    );
    copy_out_and_check(
        &s,
        &["--all"],
        &dj.docker("team/multi:1"),
        &s.join("out3"),
        "1",
        &m.index.digest,
        &[],
    );
    assert_catalog_has(&dj.host(), &["team/after-move", "team/busybox", "team/multi"]);
    dj.stop();
    drop(g);
}
