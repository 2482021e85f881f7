//! The pull-through cache against hostile upstreams: small servers in the test that redirect
//! to other services (another configured upstream, another port of the same host, loops),
//! send their token realm elsewhere, answer error pages as manifests, stream blobs without end
//! or past the ceiling, or never answer. Each case checks what the client got, what reached
//! the other service, and that nothing was cached.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use donjon::proxy::{ProxyCacheLayer, ProxyConfig, RegistryConfig};
use donjon::Body;
use donjon_test_support::server::*;
use http::{Request, Response, StatusCode};

/// What a hostile server saw: each request's path and query, and its `Authorization`.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, Option<String>)>>>);

impl Seen {
    fn paths(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|(p, _)| p.clone()).collect()
    }
    fn authorizations(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().filter_map(|(_, a)| a.clone()).collect()
    }
}

/// A server on 127.0.0.1 that answers every request with `answer`, recording it.
struct Hostile {
    addr: SocketAddr,
    seen: Seen,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Hostile {
    async fn start(
        answer: impl Fn(&Request<donjon::server::ServerBody>) -> Response<Body> + Send + Sync + 'static,
    ) -> Self {
        let seen = Seen::default();
        let (log, answer) = (seen.clone(), Arc::new(answer));
        let svc = tower::service_fn(move |req: Request<donjon::server::ServerBody>| {
            let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
            let path = req.uri().path_and_query().map_or_else(String::new, |p| p.to_string());
            log.0.lock().unwrap().push((path, auth));
            let resp = answer(&req);
            async move { Ok::<_, std::convert::Infallible>(resp) }
        });
        let listener = donjon::server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.await;
            };
            let options =
                donjon::server::Options { drain_timeout: Duration::from_millis(100), ..Default::default() };
            let _ =
                donjon::server::serve(listener, None, donjon::middleware::wrap(svc, vec![]), stop, options)
                    .await;
        });
        Self { addr, seen, _stop: tx }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn redirect(to: String) -> Response<Body> {
    Response::builder()
        .status(StatusCode::TEMPORARY_REDIRECT)
        .header("location", to)
        .body(Body::empty())
        .unwrap()
}

/// A valid image manifest, as an internal registry would serve it.
fn a_manifest() -> (String, Vec<u8>) {
    let m = image_manifest(&digest(b"{}"), 2, &digest(b"layer"), 5, None);
    (digest(&m), m)
}

fn manifest_response(m: &[u8]) -> Response<Body> {
    Response::builder()
        .header("content-type", OCI_MANIFEST)
        .header("docker-content-digest", digest(m))
        .body(Body::from(m.to_vec()))
        .unwrap()
}

fn entry(host: &str, at: &Hostile) -> RegistryConfig {
    RegistryConfig {
        host: host.into(),
        url: Some(at.url()),
        username: Some("proxy-user".into()),
        password: Some("proxy-secret".into()),
        ..Default::default()
    }
}

async fn proxy(config: ProxyConfig) -> (TestServer, Arc<tempfile::TempDir>) {
    let spool = Arc::new(tempfile::tempdir().unwrap());
    let dir = spool.clone();
    let s = TestServer::start_with(move |b| {
        let layer = ProxyCacheLayer::new(b.store().clone(), &config, dir.path()).unwrap();
        b.proxy(layer)
    })
    .await;
    (s, spool)
}

fn config(registries: Vec<RegistryConfig>) -> ProxyConfig {
    ProxyConfig {
        registries,
        read_timeout: Some(Duration::from_secs(2)),
        upstream_timeout: Some(Duration::from_secs(4)),
        ..Default::default()
    }
}

fn code(r: &Resp) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["errors"][0]["code"].as_str().unwrap_or_default().to_string()
}

async fn assert_nothing_cached(s: &TestServer, repo: &str) {
    // The catalog lists what the store holds (a tag list would ask the upstream).
    let r = s.get("/v2/_catalog").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let repos = r.json()["repositories"].clone();
    assert!(
        !repos.as_array().unwrap().contains(&serde_json::json!(repo)),
        "nothing may be cached under {repo}: {repos}"
    );
}

#[tokio::test]
async fn redirects_to_other_services_are_not_followed() {
    let (_, secret) = a_manifest();
    let internal = Hostile::start(move |_| manifest_response(&secret)).await;
    let other_port = Hostile::start(|_| manifest_response(&a_manifest().1)).await;
    let (int_url, other_url) = (internal.url(), other_port.url());
    // `evil.test` redirects manifests to the internal upstream and blobs to another port
    // of the same host; `loop` forever to itself.
    let evil = Hostile::start(move |req| {
        let p = req.uri().path();
        if p.contains("/manifests/") {
            redirect(format!("{int_url}/v2/secret/manifests/1"))
        } else if p.contains("/blobs/") {
            redirect(format!("{other_url}{p}"))
        } else if p.contains("/loop") {
            redirect(p.to_string())
        } else {
            Response::new(Body::from("{}"))
        }
    })
    .await;
    let (s, _spool) = proxy(config(vec![entry("evil.test", &evil), entry("internal.test", &internal)])).await;

    for path in ["/v2/f/evil.test/app/manifests/1", &format!("/v2/f/evil.test/app/blobs/{}", digest(b"x"))] {
        let r = s.get(path).await;
        assert_eq!(r.status, 403, "{path}: {:?}", r.body);
        assert_eq!(code(&r), "DENIED", "{path}");
        let msg = String::from_utf8_lossy(&r.body);
        assert!(msg.contains("127.0.0.1:"), "the message names the refused host and port: {msg}");
        assert!(msg.contains("the upstream sent this request to"), "{msg}");
    }
    assert!(
        internal.seen.paths().is_empty(),
        "the internal upstream was reached: {:?}",
        internal.seen.paths()
    );
    assert!(other_port.seen.paths().is_empty(), "another port was reached: {:?}", other_port.seen.paths());
    assert_nothing_cached(&s, "f/evil.test/app").await;
    // The internal upstream itself is still served, by its own entry.
    assert_eq!(s.get("/v2/f/internal.test/x/manifests/1").await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_redirect_on_the_same_origin_is_followed_and_a_loop_ends() {
    let (d, m) = a_manifest();
    let up = Hostile::start(move |req| match req.uri().path() {
        p if p.starts_with("/v2/app/manifests/") => redirect("/elsewhere".into()),
        "/elsewhere" => manifest_response(&m),
        p => redirect(p.to_string()),
    })
    .await;
    let (s, _spool) = proxy(config(vec![entry("up.test", &up)])).await;
    let r = s.get("/v2/f/up.test/app/manifests/1").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(digest(&r.body), d);
    let r = s.get("/v2/f/up.test/looping/manifests/1").await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    assert!(String::from_utf8_lossy(&r.body).contains("too many redirects"), "{:?}", r.body);
    // The credentials went with the first request only, never after a redirect.
    let seen = up.seen.0.lock().unwrap().clone();
    assert!(seen.iter().any(|(p, _)| p == "/elsewhere"));
    assert!(seen.iter().filter(|(p, _)| p == "/elsewhere").all(|(_, a)| a.is_none()), "{seen:?}");
    s.stop().await;
}

/// An upstream whose token realm is `realm` (a full URL) and that wants the token it hands out.
async fn token_upstream(realm: String, m: Vec<u8>) -> Hostile {
    Hostile::start(move |req| {
        if req.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer good") {
            return manifest_response(&m);
        }
        Response::builder()
            .status(401)
            .header("www-authenticate", format!("Bearer realm=\"{realm}\",service=\"up\""))
            .body(Body::empty())
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn credentials_reach_only_the_realms_they_are_for() {
    let realm = Hostile::start(|_| Response::new(Body::from(r#"{"token":"good","expires_in":300}"#))).await;
    let (_, m) = a_manifest();

    // A realm on another port of the upstream's host, not configured: never asked (it is
    // not public), and never given the credentials.
    let up = token_upstream(format!("{}/token", realm.url()), m.clone()).await;
    let (s, _spool) = proxy(config(vec![entry("up.test", &up)])).await;
    let r = s.get("/v2/f/up.test/app/manifests/1").await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(realm.seen.paths().is_empty(), "the realm was reached: {:?}", realm.seen.paths());
    s.stop().await;

    // Configured for the entry: asked, with the credentials, and the pull works.
    let mut e = entry("up.test", &up);
    e.realms = vec![realm.url()];
    let (s, _spool) = proxy(config(vec![e])).await;
    let r = s.get("/v2/f/up.test/app/manifests/1").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let basic = format!("Basic {}", base64_of("proxy-user:proxy-secret"));
    assert_eq!(realm.seen.authorizations(), vec![basic]);
    s.stop().await;
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn only_manifests_are_cached_as_manifests() {
    let up = Hostile::start(|req| {
        let body =
            if req.uri().path().ends_with("/json") { r#"{"hello":"world"}"# } else { "<html>login</html>" };
        let ct = if req.uri().path().ends_with("/json") { "application/json" } else { "text/html" };
        Response::builder().header("content-type", ct).body(Body::from(body)).unwrap()
    })
    .await;
    let (s, _spool) = proxy(config(vec![entry("up.test", &up)])).await;
    for tag in ["page", "json"] {
        let r = s.get(&format!("/v2/f/up.test/app/manifests/{tag}")).await;
        assert_eq!(r.status, 502, "{tag}: {:?}", r.body);
        assert_eq!(code(&r), "MANIFEST_INVALID", "{tag}");
    }
    assert_nothing_cached(&s, "f/up.test/app").await;
    s.stop().await;
}

/// A blob body of `chunks` pieces of 64 KiB (`None`: without end), counting what it sent.
fn blob_stream(chunks: Option<usize>, sent: Arc<std::sync::atomic::AtomicUsize>) -> Body {
    let piece = Bytes::from(vec![7u8; 64 * 1024]);
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let (piece, sent) = (piece.clone(), sent.clone());
        async move {
            if chunks.is_some_and(|n| i >= n) {
                return None;
            }
            sent.fetch_add(piece.len(), std::sync::atomic::Ordering::SeqCst);
            Some((Ok::<_, donjon::BoxError>(piece), i + 1))
        }
    });
    Body::from_stream(Box::pin(stream))
}

#[tokio::test]
async fn blobs_past_the_ceiling_are_refused_or_cut_off() {
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let up = Hostile::start(move |req| {
        if req.uri().path().contains("announced") {
            // says 10 MiB up front
            let body = blob_stream(Some(160), Arc::default());
            Response::builder().header("content-length", 10 << 20).body(body).unwrap()
        } else {
            Response::new(blob_stream(None, counter.clone()))
        }
    })
    .await;
    let mut c = config(vec![entry("up.test", &up)]);
    c.max_blob_size = Some(bytesize::ByteSize::mib(1));
    let (s, spool) = proxy(c).await;

    let r = s.get(&format!("/v2/f/up.test/announced/blobs/{}", digest(b"a"))).await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    assert_eq!(code(&r), "SIZE_INVALID");
    assert!(String::from_utf8_lossy(&r.body).contains("max_blob_size"), "names the key: {:?}", r.body);

    // Without end: the client's body breaks off near the ceiling, the upstream is dropped.
    let got = try_send(
        &client(),
        "GET",
        &s.url(&format!("/v2/f/up.test/endless/blobs/{}", digest(b"b"))),
        &[],
        Bytes::new(),
    )
    .await;
    assert!(got.is_err() || got.as_ref().is_ok_and(|r| r.status != 200), "an endless blob was served whole");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = std::fs::read_dir(spool.path().join("proxy-spool")).map(|d| d.count()).unwrap_or(0);
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} spool file(s) left behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = sent.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(after < 64 << 20, "the upstream kept sending: {after} bytes");
    assert!(after - before <= 4 << 20, "the transfer goes on after the cut: {before} then {after}");
    s.stop().await;
}

#[tokio::test]
async fn a_silent_upstream_costs_the_client_the_upstream_timeout_then_a_502() {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut conns = vec![];
        silent.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok((c, _)) = silent.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let e = RegistryConfig {
        host: "silent.test".into(),
        url: Some(format!("http://{addr}")),
        ..Default::default()
    };
    let mut c = config(vec![e]);
    c.read_timeout = Some(Duration::from_secs(1));
    c.upstream_timeout = Some(Duration::from_secs(2));
    let (s, _spool) = proxy(c).await;
    for path in [
        "/v2/f/silent.test/app/manifests/1".to_string(),
        format!("/v2/f/silent.test/app/blobs/{}", digest(b"c")),
    ] {
        let t = Instant::now();
        let r = s.get(&path).await;
        assert_eq!(r.status, 502, "{path}: {:?}", r.body);
        assert_eq!(code(&r), "UNAVAILABLE", "{path}");
        // 2 s configured; generous for a loaded machine, far under 3 tries of the read timeout
        assert!(t.elapsed() < Duration::from_secs(8), "{path}: the client waited {:?}", t.elapsed());
    }
    s.stop().await;
    drop(held);
}

#[tokio::test]
async fn a_private_upstream_without_an_entry_is_refused_saying_how_to_allow_it() {
    let (s, _spool) = proxy(config(vec![])).await;
    let r = s.get("/v2/f/127.0.0.1__5000/app/manifests/1").await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let msg = String::from_utf8_lossy(&r.body);
    assert!(
        msg.contains(r#"host: \"127.0.0.1:5000\""#),
        "the host as the user writes it, and the fix: {msg}"
    );
    assert!(!msg.contains("__"), "no internal spelling: {msg}");
    s.stop().await;
}
