//! The pull-through cache in the composed registry over real TCP, in front of a donjon
//! upstream with token auth (the proxy logs in with Basic credentials and runs the token
//! dance): cold and warm pulls through `f/<host>/…` and `?ns=<host>`, a tag moved upstream,
//! the upstream gone, concurrent misses of one blob sharing one upstream transfer, ranges on
//! an in-flight blob, refusals. Distribution as an upstream is in the e2e suite.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use donjon::proxy::{ProxyCacheLayer, ProxyConfig, RegistryConfig};
use donjon_auth::config::HtpasswdConfig;
use donjon_auth::AuthConfig;
use donjon_test_support::server::*;

/// A donjon upstream with htpasswd + token auth that counts the blobs it sends.
struct Upstream {
    addr: std::net::SocketAddr,
    blob_gets: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    client: HttpClient,
}

const BASIC: &str = "Basic YWxpY2U6YWxpY2UtcHc="; // alice:alice-pw

impl Upstream {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("alice:{}\n", bcrypt::hash("alice-pw", 4).unwrap())).unwrap();
        let auth = AuthConfig {
            htpasswd: Some(HtpasswdConfig { realm: None, path: htpasswd }),
            service: Some("upstream".into()),
            ..Default::default()
        };
        let store: Arc<dyn donjon::Store> =
            Arc::new(donjon::FsStore::open(dir.path().join("data")).await.unwrap());
        let layer = auth.build(&*store, None).await.unwrap().unwrap();
        let registry = donjon::Registry::builder(store).auth(layer).build();
        let blob_gets = Arc::new(AtomicUsize::new(0));
        let counter = blob_gets.clone();
        let svc = tower::service_fn(move |req: http::Request<donjon::server::ServerBody>| {
            // Blob downloads answered: the token dance's 401s are not transfers.
            let blob_get = req.method() == http::Method::GET && req.uri().path().contains("/blobs/sha256:");
            let (mut registry, counter) = (registry.clone(), counter.clone());
            async move {
                let resp = tower::Service::call(&mut registry, req).await;
                if blob_get && resp.as_ref().is_ok_and(|r| r.status() == 200) {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                resp
            }
        });
        let listener = donjon::server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = rx.await;
            };
            let options =
                donjon::server::Options { drain_timeout: Duration::from_millis(100), ..Default::default() };
            donjon::server::serve(listener, None, donjon::middleware::wrap(svc, vec![]), stop, options)
                .await
                .unwrap();
        });
        Self { addr, blob_gets, _dir: dir, stop: Some(tx), task, client: client() }
    }

    async fn req(&self, method: &str, path: &str, ct: Option<&str>, body: impl Into<Bytes>) -> Resp {
        let mut h = vec![("authorization", BASIC)];
        if let Some(ct) = ct {
            h.push(("content-type", ct));
        }
        send(&self.client, method, &format!("http://{}{path}", self.addr), &h, body.into()).await
    }

    async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = digest(data);
        let r = self.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), None, data.to_vec()).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        d
    }

    /// A config and a layer of `layer` bytes, and a manifest under `tag`; the manifest's and
    /// the layer's digests.
    async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (String, String) {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let cd = self.push_blob(repo, config).await;
        let ld = self.push_blob(repo, layer).await;
        let m = image_manifest(&cd, config.len(), &ld, layer.len(), None);
        let r = self.req("PUT", &format!("/v2/{repo}/manifests/{tag}"), Some(OCI_MANIFEST), m.clone()).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        (digest(&m), ld)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
    }
}

/// A donjon whose `upstream.test` is the upstream (with alice's credentials).
async fn proxy_for(up: &Upstream, check_interval: Duration) -> TestServer {
    proxy_with(up, check_interval, None).await
}

/// The proxy's entry for the upstream: `upstream.test`, reached at its address, as alice.
fn upstream_entry(up: &Upstream) -> RegistryConfig {
    RegistryConfig {
        host: "upstream.test".into(),
        url: Some(format!("http://{}", up.addr)),
        username: Some("alice".into()),
        password: Some("alice-pw".into()),
        ..Default::default()
    }
}

async fn proxy_with(up: &Upstream, check_interval: Duration, default: Option<&str>) -> TestServer {
    let config = ProxyConfig {
        default: default.map(str::to_string),
        registries: vec![upstream_entry(up)],
        check_interval: Some(check_interval),
        read_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    serve_proxy(config).await
}

/// [`serve_proxy`], and the store it caches into.
async fn serve_proxy_store(config: ProxyConfig) -> (TestServer, Arc<dyn donjon::Store>) {
    let store: Arc<std::sync::Mutex<Option<Arc<dyn donjon::Store>>>> = Arc::default();
    let keep = store.clone();
    let spool = Arc::new(tempfile::tempdir().unwrap());
    let s = TestServer::start_with(move |b| {
        keep.lock().unwrap().get_or_insert_with(|| b.store().clone());
        let layer = ProxyCacheLayer::new(b.store().clone(), &config, spool.path()).unwrap();
        b.proxy(layer).local_names(["proxy.test"])
    })
    .await;
    let store = store.lock().unwrap().clone().unwrap();
    (s, store)
}

/// A donjon with the pull-through cache of `config` (its spool in a directory of its own),
/// whose own name is `proxy.test`.
async fn serve_proxy(config: ProxyConfig) -> TestServer {
    let spool = Arc::new(tempfile::tempdir().unwrap());
    TestServer::start_with(move |b| {
        let layer = ProxyCacheLayer::new(b.store().clone(), &config, spool.path()).unwrap();
        b.proxy(layer).local_names(["proxy.test"])
    })
    .await
}

fn layer_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn cold_and_warm_pulls_through_every_form_then_without_the_upstream() {
    let up = Upstream::start().await;
    let layer = layer_bytes(300_000);
    let (m, ld) = up.push_image("team/app", "v1", &layer).await;
    let proxy = proxy_for(&up, Duration::from_secs(3600)).await;

    let r = proxy.get("/v2/f/upstream.test/team/app/manifests/v1").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("docker-content-digest"), m);
    let r = proxy.get(&format!("/v2/f/upstream.test/team/app/blobs/{ld}")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(&r.body[..], &layer[..], "the cold pull streams the upstream's bytes");
    assert_eq!(r.header("docker-content-digest"), ld);
    // containerd's mirror form: the same cached repository.
    let r = proxy.get("/v2/team/app/manifests/v1?ns=upstream.test").await;
    assert_eq!((r.status.as_u16(), r.header("docker-content-digest")), (200, m.as_str()));
    let r = proxy.get(&format!("/v2/team/app/blobs/{ld}?ns=upstream.test")).await;
    assert_eq!(&r.body[..], &layer[..]);
    // This registry's own name in ns: local content (none here).
    let r = proxy.get("/v2/team/app/manifests/v1?ns=proxy.test").await;
    assert_eq!(r.status, 404);
    // What is cached is listed.
    let r = proxy.get("/v2/f/upstream.test/team/app/tags/list").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["v1"]));
    assert!(proxy.get("/v2/_catalog").await.json()["repositories"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("f/upstream.test/team/app")));

    // The upstream goes away: the cached image is still served, by tag and by digest.
    up.stop().await;
    let r = proxy.get("/v2/f/upstream.test/team/app/manifests/v1").await;
    assert_eq!((r.status.as_u16(), r.header("docker-content-digest")), (200, m.as_str()));
    let r = proxy.get(&format!("/v2/f/upstream.test/team/app/blobs/{ld}")).await;
    assert_eq!(&r.body[..], &layer[..], "the blob was committed to the store");
    let r = proxy.get("/v2/f/upstream.test/team/other/manifests/v1").await;
    assert_eq!(r.status, 502, "nothing cached and no upstream: {:?}", r.body);
    assert_eq!(r.code(), "UNAVAILABLE");
}

#[tokio::test]
async fn a_moved_tag_is_seen_and_stale_copies_serve_when_upstream_fails() {
    let up = Upstream::start().await;
    let (m1, _) = up.push_image("team/app", "v1", b"first layer").await;
    let proxy = proxy_for(&up, Duration::ZERO).await;
    let r = proxy.get("/v2/f/upstream.test/team/app/manifests/v1").await;
    assert_eq!(r.header("docker-content-digest"), m1);
    let (m2, _) = up.push_image("team/app", "v1", b"second layer").await;
    assert_ne!(m1, m2);
    let r = proxy.get("/v2/f/upstream.test/team/app/manifests/v1").await;
    assert_eq!(r.header("docker-content-digest"), m2, "checked on every pull (interval 0)");
    // A tag upstream does not have: its 404 passes through.
    let r = proxy.get("/v2/f/upstream.test/team/app/manifests/nope").await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "MANIFEST_UNKNOWN"));
    up.stop().await;
    let r = proxy.get("/v2/f/upstream.test/team/app/manifests/v1").await;
    assert_eq!((r.status.as_u16(), r.header("docker-content-digest")), (200, m2.as_str()), "stale-if-error");
}

#[tokio::test]
async fn concurrent_misses_share_one_upstream_transfer() {
    let up = Upstream::start().await;
    let layer = layer_bytes(8 << 20);
    let (_, ld) = up.push_image("team/big", "v1", &layer).await;
    let proxy = Arc::new(proxy_for(&up, Duration::from_secs(3600)).await);
    let before = up.blob_gets.load(Ordering::SeqCst);
    let mut tasks = vec![];
    for i in 0..20 {
        let (proxy, ld) = (proxy.clone(), ld.clone());
        // Half through the other addressing form: the same cached repository.
        let path = if i % 2 == 0 {
            format!("/v2/f/upstream.test/team/big/blobs/{ld}")
        } else {
            format!("/v2/team/big/blobs/{ld}?ns=upstream.test")
        };
        tasks.push(tokio::spawn(async move { proxy.get(&path).await }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body[..] == layer[..], "every reader gets every byte");
    }
    assert_eq!(up.blob_gets.load(Ordering::SeqCst) - before, 1, "one upstream blob GET for 20 misses");
    // A range of the cached blob, and nothing more asked upstream.
    let r = proxy
        .req(
            "GET",
            &format!("/v2/f/upstream.test/team/big/blobs/{ld}"),
            &[("range", "bytes=10-19")],
            Bytes::new(),
        )
        .await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (206, &layer[10..20]));
    assert_eq!(up.blob_gets.load(Ordering::SeqCst) - before, 1);
}

#[tokio::test]
async fn writes_and_private_upstreams_are_refused() {
    let up = Upstream::start().await;
    let proxy = proxy_for(&up, Duration::ZERO).await;
    let r = proxy
        .req(
            "PUT",
            "/v2/f/upstream.test/team/app/manifests/v1",
            &[("content-type", OCI_MANIFEST)],
            Bytes::from_static(b"{}"),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (405, "UNSUPPORTED"));
    let r = proxy.req("POST", "/v2/f/upstream.test/team/app/blobs/uploads/", &[], Bytes::new()).await;
    assert_eq!(r.status, 405);
    let r = proxy.req("DELETE", "/v2/f/upstream.test/team/app/manifests/v1", &[], Bytes::new()).await;
    assert_eq!(r.status, 405);
    // A client may not point the proxy at loopback or private addresses it was not given.
    let r = proxy.get("/v2/f/127.0.0.1/x/manifests/v1").await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (403, "DENIED"), "{:?}", r.body);
    let r = proxy.get("/v2/x/manifests/v1?ns=169.254.169.254").await;
    assert_eq!(r.status, 403);
    let r = proxy.get("/v2/f/localhost/x/manifests/v1").await;
    assert_eq!(r.status, 403, "a name resolving to loopback: {:?}", r.body);
    up.stop().await;
}

/// An upstream that sends half of a blob and dies: the client's body ends with an error, not
/// short and complete-looking, and nothing is cached.
#[tokio::test]
async fn an_upstream_dying_mid_blob_caches_nothing() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let blob = layer_bytes(1 << 20);
    let d = digest(&blob);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let half = blob[..blob.len() / 2].to_vec();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = listener.accept().await else { return };
            let half = half.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = c.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/octet-stream\r\n\r\n",
                    1 << 20
                );
                let _ = c.write_all(head.as_bytes()).await;
                let _ = c.write_all(&half).await;
                // and the connection drops
            });
        }
    });
    let config = ProxyConfig {
        registries: vec![RegistryConfig {
            host: "dying.test".into(),
            url: Some(format!("http://{addr}")),
            ..Default::default()
        }],
        read_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let proxy = serve_proxy(config).await;
    let url = proxy.url(&format!("/v2/f/dying.test/x/blobs/{d}"));
    let out = try_send(&client(), "GET", &url, &[], Bytes::new()).await;
    assert!(out.is_err(), "the body ends with an error: {:?}", out.map(|r| r.body.len()));
    server.abort();
    // Nothing was cached: with the upstream gone, the blob is unknown.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = proxy.get(&format!("/v2/f/dying.test/x/blobs/{d}")).await;
    assert_ne!(r.status, 200);
}

/// docker's `--registry-mirror` sends plain names: what is not here comes from the default
/// upstream and is cached under its pull-through name; what was pushed here stays local.
#[tokio::test]
async fn a_default_upstream_serves_what_is_not_here() {
    let up = Upstream::start().await;
    let layer = layer_bytes(4096);
    let (m, ld) = up.push_image("library/app", "v1", &layer).await;
    let proxy = proxy_with(&up, Duration::ZERO, Some("upstream.test")).await;
    let r = proxy.get("/v2/library/app/manifests/v1").await;
    assert_eq!((r.status.as_u16(), r.header("docker-content-digest")), (200, m.as_str()), "{:?}", r.body);
    let r = proxy.get(&format!("/v2/library/app/blobs/{ld}")).await;
    assert_eq!(&r.body[..], &layer[..]);
    let catalog = proxy.get("/v2/_catalog").await.json();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["f/upstream.test/library/app"]),
        "cached under the pull-through name"
    );
    let (local, _) = proxy.push_image("library/app", "mine", "local").await;
    let r = proxy.get("/v2/library/app/manifests/mine").await;
    assert_eq!(r.header("docker-content-digest"), local, "pushed content is served from here");
    let r = proxy.get("/v2/library/app/manifests/nope").await;
    assert_eq!(r.status, 404, "neither here nor upstream");
    up.stop().await;
}

/// A tag list of a mirrored repository is the upstream's, as Distribution's proxy answers it,
/// paged as the client asks; without the upstream, what is cached; a repository pushed here
/// lists its own tags.
#[tokio::test]
async fn tag_lists_come_from_the_upstream() {
    let up = Upstream::start().await;
    let layer = layer_bytes(2048);
    for tag in ["v1", "v2", "v3"] {
        up.push_image("library/app", tag, &layer).await;
    }
    let proxy = proxy_with(&up, Duration::ZERO, Some("upstream.test")).await;
    // Nothing pulled yet: docker's plain name (the default upstream) and the pull-through name.
    for path in ["/v2/library/app/tags/list", "/v2/f/upstream.test/library/app/tags/list"] {
        let r = proxy.get(path).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        assert_eq!(r.json()["tags"], serde_json::json!(["v1", "v2", "v3"]), "{path}");
    }
    let r = proxy.get("/v2/library/app/tags/list").await;
    assert_eq!(r.json()["name"], "library/app", "listed under the name the client asked for");
    let r = proxy.get("/v2/library/app/tags/list?n=1&last=v1").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["v2"]));
    assert_eq!(r.header("link"), r#"</v2/library/app/tags/list?n=1&last=v2>; rel="next""#);
    let r = proxy.get("/v2/library/app/tags/list?n=x").await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "PAGINATION_NUMBER_INVALID".into()));
    let r = proxy.get("/v2/library/nothing/tags/list").await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "NAME_UNKNOWN".into()), "{:?}", r.body);
    // One tag pulled, then the upstream gone: the cached tag is listed.
    assert_eq!(proxy.get("/v2/library/app/manifests/v2").await.status, 200);
    up.stop().await;
    let r = proxy.get("/v2/library/app/tags/list").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["v2"]), "{:?}", r.body);
    // A repository pushed here answers from here.
    proxy.push_image("mine/app", "local", "x").await;
    let r = proxy.get("/v2/mine/app/tags/list").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["local"]));
}

/// An upstream named by `host:port`, as Trow's paths and containerd's `ns` name one: the
/// cached name spells the port's `:` as `__`.
#[tokio::test]
async fn an_upstream_named_with_its_port() {
    let up = Upstream::start().await;
    let (m, _) = up.push_image("team/app", "v1", b"ported").await;
    let host = up.addr.to_string();
    let config = ProxyConfig {
        registries: vec![RegistryConfig {
            host: host.clone(),
            insecure: true,
            username: Some("alice".into()),
            password: Some("alice-pw".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let proxy = serve_proxy(config).await;
    let r = proxy.get(&format!("/v2/f/{host}/team/app/manifests/v1")).await;
    assert_eq!((r.status.as_u16(), r.header("docker-content-digest")), (200, m.as_str()), "{:?}", r.body);
    let r = proxy.get(&format!("/v2/team/app/manifests/v1?ns={host}")).await;
    assert_eq!(r.header("docker-content-digest"), m);
    let cached = format!("f/{}/team/app", host.replace(':', "__"));
    assert!(proxy.get("/v2/_catalog").await.json()["repositories"]
        .as_array()
        .unwrap()
        .contains(&cached.into()));
    up.stop().await;
}

/// An upstream that sends a blob slowly, in pieces. A client that stops reading does not hold
/// up the fill or a reader beside it, a range of the blob is answered while it is still
/// arriving, and the stalled client gets every byte when it reads again.
#[tokio::test]
async fn a_stalled_reader_holds_up_no_one_and_ranges_work_in_flight() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let blob: Arc<Vec<u8>> = Arc::new(layer_bytes(32 << 20));
    let d = digest(&blob);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = blob.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = listener.accept().await else { return };
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = c.read(&mut buf).await;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", sent.len());
                let _ = c.write_all(head.as_bytes()).await;
                for piece in sent.chunks(512 * 1024) {
                    if c.write_all(piece).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
    });
    let config = ProxyConfig {
        registries: vec![RegistryConfig {
            host: "slow.test".into(),
            url: Some(format!("http://{addr}")),
            ..Default::default()
        }],
        ..Default::default()
    };
    let proxy = serve_proxy(config).await;
    let path = format!("/v2/f/slow.test/x/blobs/{d}");
    // The stalled client: asks, reads the head and the first bytes, then stops reading.
    let mut stalled = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stalled.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = vec![0u8; 64 * 1024];
    let n = stalled.read(&mut got).await.unwrap();
    assert!(String::from_utf8_lossy(&got[..n]).starts_with("HTTP/1.1 200"));
    got.truncate(n);
    // A range while the blob arrives, then a whole reader beside the stalled one.
    let r = proxy.req("GET", &path, &[("range", "bytes=1000-1999")], Bytes::new()).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (206, &blob[1000..2000]));
    let r = proxy.get(&path).await;
    assert!(r.status == 200 && r.body[..] == blob[..], "the other reader finished while one stalls");
    // The stalled client reads again and gets all of it.
    let body_at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut buf = vec![0u8; 1 << 20];
    while got.len() < body_at + blob.len() {
        let n = tokio::time::timeout(Duration::from_secs(30), stalled.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the connection ended early");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got[body_at..] == blob[..], "every byte, in order");
    server.abort();
}

fn evicting(up: &Upstream, max_size: Option<u64>, max_age: Option<Duration>) -> ProxyConfig {
    ProxyConfig {
        registries: vec![upstream_entry(up)],
        check_interval: Some(Duration::from_secs(3600)),
        max_size: max_size.map(bytesize::ByteSize::b),
        max_age,
        eviction_interval: Some(Duration::from_millis(300)),
        ..Default::default()
    }
}

/// Pulls an image through the proxy: its manifest by tag, then its layer.
async fn pull(proxy: &TestServer, repo: &str, tag: &str, layer: &str) {
    let r = proxy.get(&format!("/v2/f/upstream.test/{repo}/manifests/{tag}")).await;
    assert_eq!(r.status, 200, "{repo}:{tag}: {:?}", r.body);
    let r = proxy.get(&format!("/v2/f/upstream.test/{repo}/blobs/{layer}")).await;
    assert_eq!(r.status, 200, "{repo}:{tag} layer: {:?}", r.body);
}

async fn wait_until_gone(store: &dyn donjon::Store, repo: &str, manifest: &str) {
    let name: donjon::core::Name = repo.parse().unwrap();
    let d: donjon::core::Digest = manifest.parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.manifest_exists(&name, &d).await.unwrap() {
        assert!(std::time::Instant::now() < deadline, "{repo}@{manifest} was never evicted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Past `max_size`, the least recently pulled cached image goes, and the bytes only it needed
/// are freed; a layer that pushed content (or another cached image) needs stays; an evicted
/// image is fetched again on its next pull.
#[tokio::test]
async fn eviction_keeps_the_cache_under_its_size_and_pushed_content_whole() {
    let up = Upstream::start().await;
    let (la, lb, lc) = (layer_bytes(200_000), layer_bytes(200_001), layer_bytes(200_002));
    let (_ma, da) = up.push_image("team/a", "v1", &la).await;
    let (mb, db) = up.push_image("team/b", "v1", &lb).await;
    let (_mc, dc) = up.push_image("team/c", "v1", &lc).await;
    let (proxy, store) = serve_proxy_store(evicting(&up, Some(300_000), None)).await;
    // pushed content here shares a's layer
    let config = br#"{"architecture":"arm64","os":"linux"}"#;
    let cd = proxy.push_blob("local/app", config).await;
    assert_eq!(proxy.push_blob("local/app", &la).await, da);
    let m = image_manifest(&cd, config.len(), &da, la.len(), None);
    assert_eq!(proxy.push_manifest("local/app", "v1", OCI_MANIFEST, &m).await.status, 201);

    pull(&proxy, "team/a", "v1", &da).await;
    pull(&proxy, "team/b", "v1", &db).await;
    pull(&proxy, "team/c", "v1", &dc).await;
    // a is pulled again: b is now the least recently pulled
    pull(&proxy, "team/a", "v1", &da).await;
    wait_until_gone(&*store, "f/upstream.test/team/b", &mb).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let blobs: Vec<String> =
            store.blob_list().await.unwrap().into_iter().map(|b| b.digest.to_string()).collect();
        if !blobs.contains(&db) {
            assert!(blobs.contains(&da), "a layer pushed content needs is never evicted");
            assert!(blobs.contains(&dc), "c stays: the cache fits without evicting it");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "b's layer was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = proxy.get("/v2/local/app/manifests/v1").await;
    assert_eq!(r.status, 200);
    assert_eq!(proxy.get(&format!("/v2/local/app/blobs/{da}")).await.status, 200);
    for (repo, layer) in [("team/a", &da), ("team/c", &dc)] {
        let d: donjon::core::Digest = layer.parse().unwrap();
        let name: donjon::core::Name = format!("f/upstream.test/{repo}").parse().unwrap();
        assert!(store.blob_size(&name, &d).await.is_ok(), "{repo} is still cached whole");
    }
    // the evicted image comes back from the upstream on its next pull
    let before = up.blob_gets.load(Ordering::SeqCst);
    pull(&proxy, "team/b", "v1", &db).await;
    assert_eq!(up.blob_gets.load(Ordering::SeqCst), before + 1);
    up.stop().await;
}

/// With `max_age`, what was not pulled for that long goes, whatever the size.
#[tokio::test]
async fn eviction_by_age() {
    let up = Upstream::start().await;
    let layer = layer_bytes(50_000);
    let (m, d) = up.push_image("team/old", "v1", &layer).await;
    let (proxy, store) = serve_proxy_store(evicting(&up, None, Some(Duration::from_secs(1)))).await;
    pull(&proxy, "team/old", "v1", &d).await;
    let name: donjon::core::Name = "f/upstream.test/team/old".parse().unwrap();
    let digest: donjon::core::Digest = m.parse().unwrap();
    assert!(store.manifest_exists(&name, &digest).await.unwrap());
    wait_until_gone(&*store, "f/upstream.test/team/old", &m).await;
    up.stop().await;
}

/// Stateless replicas on one bucket, each with a spool of its own, behind a balancer: 20
/// concurrent cold pulls of one blob split across them fetch it at most once per replica, and
/// once committed it is served by both from the bucket, with nothing more asked upstream.
/// Needs an S3 server (`DONJON_S3=1`, as CI's object-storage phase runs it).
#[tokio::test]
async fn replicas_on_one_bucket_share_the_cache() {
    let Some(g) = donjon_test_support::s3server::S3Server::start("proxy-replicas") else {
        eprintln!("skipped: no S3 server (DONJON_S3=1 makes it a failure)");
        return;
    };
    let up = Upstream::start().await;
    let layer = layer_bytes(6 << 20);
    let (_, ld) = up.push_image("team/shared", "v1", &layer).await;
    let config = ProxyConfig {
        registries: vec![upstream_entry(&up)],
        check_interval: Some(Duration::from_secs(3600)),
        read_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let root = format!("/proxy-replicas-{}", std::process::id());
    let mut replicas = vec![];
    let mut spools = vec![];
    for _ in 0..2 {
        let store: Arc<dyn donjon::Store> =
            Arc::new(donjon_store::S3Store::connect(g.store_config(&root)).await.unwrap());
        let spool = tempfile::tempdir().unwrap();
        let proxy = ProxyCacheLayer::new(store.clone(), &config, spool.path()).unwrap();
        let registry = donjon::Registry::builder(store).proxy(proxy).build();
        let listener = donjon::server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let options =
            donjon::server::Options { drain_timeout: Duration::from_millis(100), ..Default::default() };
        tokio::spawn(donjon::server::serve(
            listener,
            None,
            donjon::middleware::wrap(registry, vec![]),
            std::future::pending::<()>(),
            options,
        ));
        replicas.push(addr);
        spools.push(spool);
    }
    let c = client();
    let before = up.blob_gets.load(Ordering::SeqCst);
    let mut tasks = vec![];
    for i in 0..20 {
        let (c, url) =
            (c.clone(), format!("http://{}/v2/f/upstream.test/team/shared/blobs/{ld}", replicas[i % 2]));
        tasks.push(tokio::spawn(async move { send(&c, "GET", &url, &[], Bytes::new()).await }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert!(r.body[..] == layer[..], "every reader gets every byte");
    }
    let fetched = up.blob_gets.load(Ordering::SeqCst) - before;
    println!("20 cold pulls over 2 replicas: {fetched} upstream fetch(es)");
    assert!((1..=2).contains(&fetched), "at most one upstream fetch per replica: {fetched}");
    // Committed: both replicas serve it from the bucket (streamed here: the test store has
    // no redirect), and nothing more is asked upstream.
    for addr in &replicas {
        let r = send(
            &c,
            "GET",
            &format!("http://{addr}/v2/f/upstream.test/team/shared/blobs/{ld}"),
            &[],
            Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(r.body[..] == layer[..]);
    }
    assert_eq!(up.blob_gets.load(Ordering::SeqCst) - before, fetched, "served from the bucket");
}
