//! The auth layer in the composed registry over real TCP: the Docker token flow (anonymous,
//! Basic, the OAuth2 form with refresh tokens), Basic credentials on registry requests, the
//! access rules, and every refusal's status, error body and challenge. A third-party client
//! (`oci-client`) runs the anonymous and the Basic token flows, against donjon's own token
//! endpoint and against a registry that trusts another server's tokens (`auth.token`).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use donjon_auth::config::{HtpasswdConfig, OneOrMany, RuleConfig};
use donjon_auth::AuthConfig;
use donjon_test_support::server::*;

struct Setup {
    server: TestServer,
    _dir: tempfile::TempDir,
    htpasswd: std::path::PathBuf,
    /// Where the auth layer keeps its signing key.
    keys: donjon::core::memory::MemoryStore,
}

fn rule(repository: &str, who: &[&str], actions: &[&str]) -> RuleConfig {
    RuleConfig {
        repository: repository.into(),
        who: OneOrMany::Many(who.iter().map(|w| w.to_string()).collect()),
        actions: actions.iter().map(|a| a.to_string()).collect(),
    }
}

/// alice may do anything; anyone may pull `public/**`; nobody else sees `hidden/**`; other
/// users (bob) may pull the rest. The first matching rule wins, so alice's comes first.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let line = |u: &str, p: &str| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap());
    std::fs::write(&htpasswd, line("alice", "alice-pw") + &line("bob", "bob-pw")).unwrap();
    let config = AuthConfig {
        htpasswd: Some(HtpasswdConfig { realm: Some("donjon-test".into()), path: htpasswd.clone() }),
        service: Some("donjon-test".into()),
        access: vec![
            rule("**", &["user:alice"], &["pull", "push", "delete"]),
            rule("public/**", &["anyone"], &["pull"]),
            rule("hidden/**", &["anyone"], &[]),
            rule("**", &["authenticated"], &["pull"]),
        ],
        ..Default::default()
    };
    let keys = donjon::core::memory::MemoryStore::default();
    let layer = config.build(&keys, None).await.unwrap().unwrap();
    let server = TestServer::start_with(move |b| b.auth(layer.clone())).await;
    Setup { server, _dir: dir, htpasswd, keys }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

impl Setup {
    async fn token(&self, auth: Option<(&str, &str)>, scopes: &[&str]) -> Resp {
        let q: String = scopes.iter().map(|s| format!("&scope={s}")).collect();
        let path = format!("/v2/token?service=donjon-test{q}");
        match auth {
            Some((u, p)) => {
                self.server.req("GET", &path, &[("authorization", &basic(u, p))], Bytes::new()).await
            }
            None => self.server.get(&path).await,
        }
    }

    async fn bearer(&self, auth: Option<(&str, &str)>, scopes: &[&str]) -> String {
        let r = self.token(auth, scopes).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        format!("Bearer {}", r.json()["token"].as_str().unwrap())
    }

    async fn with(&self, method: &str, path: &str, auth: &str, body: impl Into<Bytes>) -> Resp {
        self.server.req(method, path, &[("authorization", auth)], body).await
    }
}

/// A blob and an image manifest under `tag`, pushed with `auth`.
async fn push_image(s: &Setup, auth: &str, repo: &str, tag: &str) -> Resp {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = format!("layer of {repo}").into_bytes();
    for blob in [&config[..], &layer[..]] {
        let r = s
            .with("POST", &format!("/v2/{repo}/blobs/uploads/?digest={}", digest(blob)), auth, blob.to_vec())
            .await;
        if r.status != 201 {
            return r;
        }
    }
    let m = image_manifest(&digest(config), config.len(), &digest(&layer), layer.len(), None);
    s.server
        .req(
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("authorization", auth), ("content-type", OCI_MANIFEST)],
            m,
        )
        .await
}

#[tokio::test]
async fn anonymous_requests_are_challenged_with_the_scope_they_need() {
    let s = setup().await;
    let r = s.server.get("/v2/").await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (401, "UNAUTHORIZED"));
    let realm = format!("http://{}/v2/token", s.server.addr);
    assert_eq!(r.header("www-authenticate"), format!(r#"Bearer realm="{realm}",service="donjon-test""#));
    let r = s.server.get("/v2/team/app/manifests/latest").await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate").ends_with(r#"scope="repository:team/app:pull""#),
        "{}",
        r.header("www-authenticate")
    );
    let r = s
        .server
        .req("POST", "/v2/team/app/blobs/uploads/?mount=sha256:aa&from=other/repo", &[], Bytes::new())
        .await;
    assert!(
        r.header("www-authenticate")
            .ends_with(r#"scope="repository:team/app:pull,push repository:other/repo:pull""#),
        "a mount names the repository it mounts from: {}",
        r.header("www-authenticate")
    );
    // the same refusal whether the repository exists or not
    let a = s.bearer(Some(("alice", "alice-pw")), &["repository:hidden/x:push"]).await;
    assert_eq!(push_image(&s, &a, "hidden/x", "1").await.status, 201);
    let exists = s.server.get("/v2/hidden/x/manifests/1").await;
    let absent = s.server.get("/v2/hidden/nothing/manifests/1").await;
    assert_eq!((exists.status, exists.code()), (absent.status, absent.code()));
    // paths outside the registry are not the auth layer's
    assert_eq!(s.server.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn the_basic_token_flow_pushes_and_pulls() {
    let s = setup().await;
    let r = s.token(Some(("alice", "alice-pw")), &["repository:team/app:pull,push"]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), "no-store");
    let j = r.json();
    assert_eq!(j["token"], j["access_token"]);
    assert_eq!(j["expires_in"], 300);
    assert!(j["issued_at"].as_str().unwrap().ends_with('Z'));
    let auth = format!("Bearer {}", j["token"].as_str().unwrap());
    assert_eq!(push_image(&s, &auth, "team/app", "v1").await.status, 201);
    assert_eq!(s.with("GET", "/v2/team/app/manifests/v1", &auth, Bytes::new()).await.status, 200);
    assert_eq!(s.with("GET", "/v2/", &auth, Bytes::new()).await.status, 200);
    // a token for team/app does nothing on team/other
    let r = s.with("GET", "/v2/team/other/manifests/v1", &auth, Bytes::new()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (401, "UNAUTHORIZED"));
    assert!(r.header("www-authenticate").contains(r#"error="insufficient_scope""#));
    // bob gets pull only, whatever he asks for
    let r = s.token(Some(("bob", "bob-pw")), &["repository:team/app:pull,push,delete"]).await;
    let access = &r.json()["access"];
    assert!(access.is_null(), "the response does not echo the claims");
    let bob = format!("Bearer {}", r.json()["token"].as_str().unwrap());
    assert_eq!(s.with("GET", "/v2/team/app/manifests/v1", &bob, Bytes::new()).await.status, 200);
    let r = push_image(&s, &bob, "team/app", "v2").await;
    assert_eq!(r.status, 401, "a push with a pull-only token asks for a better token");
    assert_eq!(r.code(), "DENIED", "which bob's rules will never give him");
    assert!(r.header("www-authenticate").contains(r#"error="insufficient_scope""#));
    // a wrong password at the token endpoint: 401 with a Basic challenge
    let r = s.token(Some(("alice", "nope")), &["repository:team/app:pull"]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (401, "UNAUTHORIZED"));
    assert_eq!(r.header("www-authenticate"), r#"Basic realm="donjon-test""#);
    // tampered or foreign tokens are refused as invalid
    let tampered = format!("{}x", auth);
    let r = s.with("GET", "/v2/team/app/manifests/v1", &tampered, Bytes::new()).await;
    assert!(r.header("www-authenticate").contains(r#"error="invalid_token""#));
}

#[tokio::test]
async fn basic_credentials_on_registry_requests() {
    let s = setup().await;
    // what `docker login` checks
    assert_eq!(s.with("GET", "/v2/", &basic("alice", "alice-pw"), Bytes::new()).await.status, 200);
    let r = s.with("GET", "/v2/", &basic("alice", "wrong"), Bytes::new()).await;
    assert_eq!(r.status, 401);
    assert_eq!(push_image(&s, &basic("alice", "alice-pw"), "team/basic", "1").await.status, 201);
    // bob is logged in, but may not push: DENIED, not a challenge
    let r = push_image(&s, &basic("bob", "bob-pw"), "team/basic", "2").await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (403, "DENIED"));
    let r = s.with("DELETE", "/v2/team/basic/manifests/1", &basic("bob", "bob-pw"), Bytes::new()).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        s.with("GET", "/v2/team/basic/manifests/1", &basic("bob", "bob-pw"), Bytes::new()).await.status,
        200
    );
    // a malformed Authorization is a challenge
    assert_eq!(s.with("GET", "/v2/", "Basic !!!", Bytes::new()).await.status, 401);
}

#[tokio::test]
async fn anonymous_pull_where_the_rules_allow_it_and_nowhere_else() {
    let s = setup().await;
    let alice = s.bearer(Some(("alice", "alice-pw")), &["repository:public/busybox:push,pull"]).await;
    assert_eq!(push_image(&s, &alice, "public/busybox", "1").await.status, 201);
    // an anonymous token: pull granted on public/**, push never
    let r = s.token(None, &["repository:public/busybox:pull,push", "repository:team/app:pull"]).await;
    assert_eq!(r.status, 200);
    assert!(r.json().get("refresh_token").is_none(), "anonymous callers get no refresh token");
    let anon = format!("Bearer {}", r.json()["token"].as_str().unwrap());
    assert_eq!(s.with("GET", "/v2/public/busybox/manifests/1", &anon, Bytes::new()).await.status, 200);
    assert_eq!(s.with("GET", "/v2/team/app/tags/list", &anon, Bytes::new()).await.status, 401);
    assert_eq!(push_image(&s, &anon, "public/busybox", "2").await.status, 401);
    // and without any token, straight away
    assert_eq!(s.server.get("/v2/public/busybox/manifests/1").await.status, 200);
}

#[tokio::test]
async fn the_catalog_lists_what_the_caller_may_pull() {
    let s = setup().await;
    let alice = basic("alice", "alice-pw");
    for repo in ["public/a", "team/b", "hidden/c"] {
        assert_eq!(push_image(&s, &alice, repo, "1").await.status, 201);
    }
    let list = |r: Resp| -> Vec<String> {
        r.json()["repositories"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    };
    assert_eq!(
        list(s.with("GET", "/v2/_catalog", &alice, Bytes::new()).await),
        ["hidden/c", "public/a", "team/b"]
    );
    assert_eq!(
        list(s.with("GET", "/v2/_catalog", &basic("bob", "bob-pw"), Bytes::new()).await),
        ["public/a", "team/b"]
    );
    assert_eq!(list(s.server.get("/v2/_catalog").await), ["public/a"]);
    let bob = s.bearer(Some(("bob", "bob-pw")), &["registry:catalog:*"]).await;
    assert_eq!(list(s.with("GET", "/v2/_catalog", &bob, Bytes::new()).await), ["public/a", "team/b"]);
}

#[tokio::test]
async fn a_mount_from_a_repository_the_caller_may_not_pull_is_a_plain_upload() {
    let s = setup().await;
    let alice = basic("alice", "alice-pw");
    assert_eq!(push_image(&s, &alice, "hidden/src", "1").await.status, 201);
    let layer = digest(b"layer of hidden/src");
    // A token for bob/dst that does not grant pull on hidden/src.
    let t = s.bearer(Some(("alice", "alice-pw")), &["repository:bob/dst:pull,push"]).await;
    let r = s
        .with("POST", &format!("/v2/bob/dst/blobs/uploads/?mount={layer}&from=hidden/src"), &t, Bytes::new())
        .await;
    assert_eq!(r.status, 202, "no pull on `from` in the token: a session, not a mount");
    let t = s
        .bearer(Some(("alice", "alice-pw")), &["repository:bob/dst:pull,push", "repository:hidden/src:pull"])
        .await;
    let r = s
        .with("POST", &format!("/v2/bob/dst/blobs/uploads/?mount={layer}&from=hidden/src"), &t, Bytes::new())
        .await;
    assert_eq!(r.status, 201, "with it, the mount is made");
}

async fn form(s: &Setup, body: &str) -> Resp {
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    s.server.req("POST", "/v2/token", &headers, body.to_string()).await
}

#[tokio::test]
async fn the_oauth2_form_and_refresh_tokens() {
    let s = setup().await;
    let r = form(&s, "grant_type=password&username=alice&password=alice-pw&service=donjon-test&client_id=test&access_type=offline&scope=repository%3Ateam%2Fapp%3Apull+repository%3Ateam%2Fapp%3Apush").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    let t = format!("Bearer {}", r.json()["access_token"].as_str().unwrap());
    assert_eq!(
        push_image(&s, &t, "team/app", "1").await.status,
        201,
        "space-separated scopes are all granted"
    );
    let r = form(&s, &format!("grant_type=refresh_token&refresh_token={refresh}&service=donjon-test&scope=repository%3Ateam%2Fapp%3Apull")).await;
    assert_eq!(r.status, 200);
    let t = format!("Bearer {}", r.json()["access_token"].as_str().unwrap());
    assert_eq!(s.with("GET", "/v2/team/app/manifests/1", &t, Bytes::new()).await.status, 200);
    // a refresh token is not an access token
    let r = s.with("GET", "/v2/team/app/manifests/1", &format!("Bearer {refresh}"), Bytes::new()).await;
    assert_eq!(r.status, 401);
    assert_eq!(form(&s, "grant_type=password&username=alice&password=bad").await.status, 401);
    let online = form(&s, "grant_type=password&username=alice&password=alice-pw").await;
    assert!(online.json().get("refresh_token").is_none(), "no refresh token unless offline access is asked");
    assert_eq!(form(&s, "grant_type=client_credentials").await.status, 400);
    // a changed password ends the refresh tokens of the old one
    std::fs::write(&s.htpasswd, format!("alice:{}\n", bcrypt::hash("new-pw", 4).unwrap())).unwrap();
    let mut refused = false;
    for _ in 0..100 {
        let r = form(&s, &format!("grant_type=refresh_token&refresh_token={refresh}")).await;
        if r.status == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the htpasswd file is read again and the old refresh token refused");
}

#[tokio::test]
async fn repeated_failed_logins_are_slowed_down() {
    let s = setup().await;
    for _ in 0..10 {
        assert_eq!(s.with("GET", "/v2/", &basic("alice", "guess"), Bytes::new()).await.status, 401);
    }
    let r = s.with("GET", "/v2/", &basic("alice", "guess"), Bytes::new()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (429, "TOOMANYREQUESTS"));
    assert!(r.header("retry-after").parse::<u64>().unwrap() >= 1);
    let r = s.token(Some(("alice", "alice-pw")), &[]).await;
    assert_eq!(r.status, 429, "the token endpoint counts the same failures");
}

#[tokio::test]
async fn a_challenges_realm_is_never_the_hosts_header_alone() {
    // Without names: the address the client connected to, whatever Host says.
    let s = setup().await;
    let r = s.server.req("GET", "/v2/", &[("host", "attacker.example")], Bytes::new()).await;
    let want = format!(r#"Bearer realm="http://{}/v2/token""#, s.server.addr);
    assert!(r.header("www-authenticate").starts_with(&want), "{}", r.header("www-authenticate"));
    // With names: the one Host names, else the first.
    let config = AuthConfig {
        htpasswd: Some(HtpasswdConfig { realm: None, path: s.htpasswd.clone() }),
        ..Default::default()
    };
    let layer = config
        .build(&s.keys, None)
        .await
        .unwrap()
        .unwrap()
        .hosts(["https://reg.example/", "reg.internal:5000"]);
    let named = TestServer::start_with(move |b| b.auth(layer.clone())).await;
    for (host, realm) in [
        ("REG.internal:5000", "http://reg.internal:5000/v2/token"),
        ("reg.example", "http://reg.example/v2/token"),
        ("reg.example:8000", "http://reg.example:8000/v2/token"),
        ("attacker.example", "http://reg.example/v2/token"),
        ("attacker.example:80@reg.example", "http://reg.example/v2/token"),
    ] {
        let r = named.req("GET", "/v2/", &[("host", host)], Bytes::new()).await;
        let got = r.header("www-authenticate").to_string();
        assert!(got.starts_with(&format!(r#"Bearer realm="{realm}""#)), "Host {host}: {got}");
    }
}

#[tokio::test]
async fn another_users_good_login_resets_no_guesses() {
    let s = setup().await;
    let mut checked = 0;
    for _ in 0..6 {
        for _ in 0..9 {
            let r = s.with("GET", "/v2/", &basic("bob", "guess"), Bytes::new()).await;
            if r.status == 401 {
                checked += 1;
            } else {
                assert_eq!(r.status, 429);
            }
        }
        // a good login of another account between the rounds
        let _ = s.with("GET", "/v2/", &basic("alice", "alice-pw"), Bytes::new()).await;
    }
    assert_eq!(checked, 10, "bob's password was tried {checked} times");
}

#[tokio::test]
async fn parallel_guesses_are_limited_exactly() {
    let s = Arc::new(setup().await);
    let tries = (0..100).map(|i| {
        let s = s.clone();
        tokio::spawn(async move {
            let path = if i % 2 == 0 { "/v2/" } else { "/v2/token?service=donjon-test" };
            s.with("GET", path, &basic("alice", &format!("guess {i}")), Bytes::new()).await.status.as_u16()
        })
    });
    let statuses: Vec<u16> =
        futures_util::future::join_all(tries).await.into_iter().map(|r| r.unwrap()).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(checked, 10, "at most the limit are checked: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 90, "{statuses:?}");
}

#[tokio::test]
async fn the_same_login_many_times_at_once_is_one_attempt() {
    // Twenty pulls starting together with one pull secret: none is limited.
    let s = Arc::new(setup().await);
    let pulls = (0..20).map(|_| {
        let s = s.clone();
        tokio::spawn(async move {
            s.token(Some(("bob", "bob-pw")), &["repository:team/app:pull"]).await.status.as_u16()
        })
    });
    let statuses: Vec<u16> =
        futures_util::future::join_all(pulls).await.into_iter().map(|r| r.unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

#[tokio::test]
async fn credentials_in_the_token_query_are_refused() {
    let s = setup().await;
    for q in ["username=alice&password=alice-pw", "grant_type=refresh_token&refresh_token=x"] {
        let r = s.server.get(&format!("/v2/token?service=donjon-test&{q}")).await;
        assert_eq!(r.status, 400, "{q}: {:?}", r.body);
        assert!(String::from_utf8_lossy(&r.body).contains("query string"), "{:?}", r.body);
    }
    // the same credentials as Basic, or in a POST form, work
    assert_eq!(s.token(Some(("alice", "alice-pw")), &[]).await.status, 200);
    assert_eq!(form(&s, "grant_type=password&username=alice&password=alice-pw").await.status, 200);
}

#[tokio::test]
async fn oci_client_runs_the_anonymous_and_the_basic_token_flows() {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use oci_client::secrets::RegistryAuth;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = setup().await;
    let client =
        || oci_client::Client::new(ClientConfig { protocol: ClientProtocol::Http, ..Default::default() });
    let alice = RegistryAuth::Basic("alice".into(), "alice-pw".into());
    let reference: oci_client::Reference = format!("{}/public/third:v1", s.server.addr).parse().unwrap();
    let layers = vec![ImageLayer::oci_v1(Bytes::from_static(b"a layer"), None)];
    let config = Config::oci_v1(Bytes::from_static(br#"{"architecture":"amd64","os":"linux"}"#), None);
    client().push(&reference, &layers, config.clone(), &alice, None).await.expect("push as alice");
    let image = client()
        .pull(&reference, &RegistryAuth::Anonymous, vec![oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE])
        .await
        .expect("anonymous pull of a public repository");
    assert_eq!(&image.layers[0].data[..], b"a layer");
    let private: oci_client::Reference = format!("{}/team/third:v1", s.server.addr).parse().unwrap();
    client().push(&private, &layers, config.clone(), &alice, None).await.expect("push as alice");
    let anon = client()
        .pull(&private, &RegistryAuth::Anonymous, vec![oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE])
        .await;
    assert!(anon.is_err(), "no anonymous pull outside public/**");
    let bob = RegistryAuth::Basic("bob".into(), "bob-pw".into());
    let pulled = client().pull(&private, &bob, vec![oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE]).await;
    assert!(pulled.is_ok(), "bob may pull");
    let pushed = client().push(&private, &layers, config, &bob, None).await;
    assert!(pushed.is_err(), "bob may not push");
}

#[tokio::test]
async fn scope_tricks_get_nothing() {
    let s = setup().await;
    let alice = basic("alice", "alice-pw");
    assert_eq!(push_image(&s, &alice, "hidden/x", "1").await.status, 201);
    // Names that are not names, or that climb out of public/**, are granted nothing.
    for scope in [
        "repository:public/../hidden/x:pull",
        "repository:public/%2e%2e/hidden/x:pull",
        "repository:PUBLIC/x:pull",
        "repository:hidden/x:pull",
        "repository:public/*:pull",
        "registry:catalog:*",
    ] {
        let r = s.token(Some(("bob", "bob-pw")), &[scope]).await;
        let t = format!("Bearer {}", r.json()["token"].as_str().unwrap());
        let got = s.with("GET", "/v2/hidden/x/manifests/1", &t, Bytes::new()).await;
        assert_eq!(got.status, 401, "{scope}");
    }
    // Escapes in the path are refused before any rule is read.
    let r = s.with("GET", "/v2/public%2F..%2Fhidden/x/manifests/1", &alice, Bytes::new()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "NAME_INVALID"));
    // A token's claims cannot be widened by the request: ?ns= and the like change nothing here.
    let t = s.bearer(Some(("bob", "bob-pw")), &["repository:public/x:pull"]).await;
    let r = s.with("GET", "/v2/hidden/x/manifests/1?ns=public", &t, Bytes::new()).await;
    assert_eq!(r.status, 401);
}

/// A refusal sent before the body was read keeps the HTTP/1.1 connection, as any early answer
/// does: the next request on it is answered (Go clients pool connections).
#[tokio::test]
async fn a_refused_push_keeps_the_connection() {
    use tokio::io::AsyncWriteExt;
    let s = setup().await;
    let mut c = tokio::net::TcpStream::connect(s.server.addr).await.unwrap();
    let n = 200 * 1024;
    let d = digest(&vec![b'x'; n]);
    let head = format!(
        "POST /v2/team/x/blobs/uploads/?digest={d} HTTP/1.1\r\nhost: test\r\ncontent-length: {n}\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&vec![b'x'; n]).await.unwrap();
    let mut buf = vec![];
    let r = read_response(&mut c, &mut buf).await.unwrap();
    assert_eq!(r.status, 401);
    assert!(!r.closes());
    let again =
        format!("GET /v2/ HTTP/1.1\r\nhost: test\r\nauthorization: {}\r\n\r\n", basic("alice", "alice-pw"));
    c.write_all(again.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut c, &mut buf).await.unwrap().status, 200);
}

/// A registry behind another token server (`auth.token`): here a second donjon, whose key the
/// first trusts through a JWK Set. Clients are sent to that server's realm, and what its
/// tokens grant is all a caller gets.
#[tokio::test]
async fn tokens_of_another_token_server() {
    use donjon_auth::config::TokenConfig;
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use oci_client::secrets::RegistryAuth;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let issuer = setup().await;
    let key = donjon_auth::token::SigningKey::shared(&issuer.keys).await.unwrap();
    let jwks = issuer._dir.path().join("issuer.jwks");
    std::fs::write(&jwks, key.jwks().to_string()).unwrap();
    let realm = format!("http://{}/v2/token", issuer.server.addr);
    let config = AuthConfig {
        token: Some(TokenConfig {
            realm: realm.clone(),
            service: "donjon-test".into(),
            issuer: "donjon".into(),
            jwks: Some(jwks),
            ..Default::default()
        }),
        ..Default::default()
    };
    let layer = config.build(&donjon::core::memory::MemoryStore::default(), None).await.unwrap().unwrap();
    let registry = TestServer::start_with(move |b| b.auth(layer.clone())).await;

    let r = registry.get("/v2/team/app/manifests/v1").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        format!(r#"Bearer realm="{realm}",service="donjon-test",scope="repository:team/app:pull""#)
    );
    let r = registry.get("/v2/token?service=donjon-test").await;
    assert_eq!(r.status, 404, "the token endpoint is the other server's");
    let r =
        registry.req("GET", "/v2/", &[("authorization", &basic("alice", "alice-pw"))], Bytes::new()).await;
    assert_eq!(r.status, 401, "Basic credentials go to the token server, not here");
    assert!(r.header("www-authenticate").starts_with("Bearer "));

    // A real client follows the challenge to the other server and back.
    let client =
        || oci_client::Client::new(ClientConfig { protocol: ClientProtocol::Http, ..Default::default() });
    let alice = RegistryAuth::Basic("alice".into(), "alice-pw".into());
    let reference: oci_client::Reference = format!("{}/team/ext:v1", registry.addr).parse().unwrap();
    let layers = vec![ImageLayer::oci_v1(Bytes::from_static(b"external"), None)];
    let config = Config::oci_v1(Bytes::from_static(br#"{"architecture":"amd64","os":"linux"}"#), None);
    client().push(&reference, &layers, config.clone(), &alice, None).await.expect("alice pushes");
    let bob = RegistryAuth::Basic("bob".into(), "bob-pw".into());
    let image = client().pull(&reference, &bob, vec![oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE]).await;
    assert_eq!(&image.expect("bob pulls").layers[0].data[..], b"external");
    assert!(client().push(&reference, &layers, config, &bob, None).await.is_err(), "bob may not push");

    // A token for one repository is nothing on another; the catalog lists everything to a
    // token that grants it.
    let t = issuer.bearer(Some(("bob", "bob-pw")), &["repository:team/ext:pull"]).await;
    let r = registry.req("GET", "/v2/team/ext/manifests/v1", &[("authorization", &t)], Bytes::new()).await;
    assert_eq!(r.status, 200);
    let r = registry.req("GET", "/v2/team/other/manifests/v1", &[("authorization", &t)], Bytes::new()).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").contains(r#"error="insufficient_scope""#));
    let t = issuer.bearer(Some(("alice", "alice-pw")), &["registry:catalog:*"]).await;
    let r = registry.req("GET", "/v2/_catalog", &[("authorization", &t)], Bytes::new()).await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["team/ext"]));
}
