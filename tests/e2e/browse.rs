//! The web page at `/ui/` in a real browser: Debian's headless Chromium, driven by
//! playwright-core (`tests/browser/ui.mjs`), against a donjon with htpasswd users and rules,
//! seeded by skopeo with real images: busybox, a multi-arch index, an image with a signature
//! referrer, an image whose annotation holds a `<script>`, and busybox pulled through the cache
//! from Distribution. `.ci/e2e-deps.sh` installs Chromium and the npm package.
//!
//! `DONJON_UI_SCREENSHOTS=docs/screenshots` also writes the screenshots docs/operations.md shows.

use std::fs;
use std::path::Path;

use serde_json::json;

use crate::support::fixtures::{self, MT_MANIFEST};
use crate::support::*;

#[test]
fn the_page_in_a_browser() {
    require_e2e!();
    let s = Scratch::new("browse");
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: cd tests/browser && npm ci (.ci/e2e-deps.sh does it)"
    );

    // The upstream of the pull-through cache, holding busybox.
    let dist = Distribution::start(
        &s,
        "upstream",
        &format!("  filesystem:\n    rootdirectory: {}\n", s.dir("dist").display()),
    );
    let (layout, busybox) = fixtures::busybox(s.join("busybox"), "1.36").unwrap();
    skopeo_copy(&s, &[], &layout.reference("1.36"), &dist.docker("library/busybox:1.36"));

    let htpasswd = s.join("htpasswd");
    ok(cmd("htpasswd").args(["-B", "-b", "-c"]).arg(&htpasswd).args(["alice", "alice-pw"]));
    let config = s.join("config.yml");
    fs::write(
        &config,
        format!(
            "auth:\n  htpasswd: {{realm: donjon-e2e, path: {}}}\n  access:\n\
             \x20   - {{repository: \"**\", who: user:alice, actions: [pull, push, delete]}}\n\
             \x20   - {{repository: \"public/**\", who: anyone, actions: [pull]}}\n\
             \x20   - {{repository: \"f/**\", who: anyone, actions: [pull]}}\n\
             \x20   - {{repository: \"**\", who: authenticated, actions: [pull]}}\n\
             registry_proxies:\n  registries:\n    - host: upstream.example\n      url: http://{}\n",
            htpasswd.display(),
            dist.host()
        ),
    )
    .unwrap();
    let dj = Donjon::start_config(Some(&s.dir("data")), &config, &s.join("donjon.log"));
    let push =
        |from: &str, to: &str| skopeo_copy(&s, &["--dest-creds", "alice:alice-pw"], from, &dj.docker(to));

    push(&layout.reference("1.36"), "public/busybox:1.36");
    push(&layout.reference("1.36"), "team/app:v2");
    let (multi_layout, multi) = fixtures::multi_arch(s.join("multi"), "1.0").unwrap();
    // --all: the index and both images, not only this machine's platform.
    skopeo_copy(
        &s,
        &["--all", "--dest-creds", "alice:alice-pw"],
        &multi_layout.reference("1.0"),
        &dj.docker("public/multi:1.0"),
    );

    // An image whose annotation is markup, and a signature of busybox.
    let mut hostile_layout = fixtures::OciLayout::create(s.join("hostile")).unwrap();
    let img = hostile_layout.busybox_image().unwrap();
    let annotation = "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">";
    let manifest = json!({
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": img.config.to_json(),
        "layers": img.layers.iter().map(|l| l.to_json()).collect::<Vec<_>>(),
        "annotations": {"org.opencontainers.image.description": annotation},
    });
    let m = hostile_layout.json_blob(MT_MANIFEST, &manifest).unwrap();
    hostile_layout.tag(&m, "hostile");
    hostile_layout.save().unwrap();
    push(&hostile_layout.reference("hostile"), "public/hostile:1");
    let (sig_layout, sig) =
        fixtures::artifact(s.join("sig"), "sig", &busybox.manifest, "signed by e2e").unwrap();
    skopeo_copy(
        &s,
        &["--dest-creds", "alice:alice-pw"],
        &sig_layout.reference("sig"),
        &dj.docker(&format!("public/busybox@{}", sig.manifest.digest)),
    );

    // busybox pulled through the cache: now cached content of upstream.example.
    let cached = "f/upstream.example/library/busybox";
    let pulled = skopeo_raw_digest(&s, &dj.docker(&format!("{cached}:1.36")));
    assert_eq!(pulled, busybox.manifest.digest);

    let fixture = json!({
        "user": "alice", "password": "alice-pw",
        "public": {"repo": "public/busybox", "tag": "1.36"},
        "multi": {"repo": "public/multi", "tag": "1.0", "digest": multi.index.digest},
        "hostile": {"repo": "public/hostile", "tag": "1", "annotation": annotation},
        "signed": {"repo": "public/busybox", "digest": busybox.manifest.digest,
                   "artifactType": sig.artifact_type, "referrer": sig.manifest.digest},
        "cached": {"repo": cached, "upstream": "upstream.example"},
        "private": {"repo": "team/app", "tag": "v2"},
    });
    let mut node = cmd("node");
    node.arg(browser_dir.join("ui.mjs"))
        .env("DONJON_URL", format!("http://{}", dj.host()))
        .env("UI_FIXTURE", fixture.to_string())
        .env("CHROMIUM", tool("chromium"));
    if let Ok(dir) = std::env::var("DONJON_UI_SCREENSHOTS") {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        fs::create_dir_all(&dir).unwrap();
        node.env("SCREENSHOTS", dir);
    }
    let out = ok_with(&mut node, std::time::Duration::from_secs(180));
    println!("{out}");
    assert!(out.contains("all browser checks passed"), "{out}");
    drop(dist);
}
