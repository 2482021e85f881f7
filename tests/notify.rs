//! Event notifications from the binary, as Distribution's listeners take them: a receiver that
//! is down at first and comes up later gets every push and delete, in Distribution's envelope,
//! with the configured headers; ignored actions never come.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use donjon_test_support::server::{client, digest, send};
use serde_json::Value;

/// What the receiver was sent: the envelope's content type and authorization, and its events.
type Got = Arc<Mutex<Vec<(String, String, Value)>>>;

async fn receiver(addr: std::net::SocketAddr, got: Got) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let got = got.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let got = got.clone();
                async move {
                    let h = |n: &str| {
                        req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
                    };
                    let (ct, auth) = (h("content-type"), h("authorization"));
                    let body = http_body_util::BodyExt::collect(req.into_body()).await.unwrap().to_bytes();
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    for e in v["events"].as_array().unwrap() {
                        got.lock().unwrap().push((ct.clone(), auth.clone(), e.clone()));
                    }
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        Bytes::new(),
                    )))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
        });
    }
}

#[test]
fn every_push_and_delete_reaches_a_listener_that_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let listener = donjon_test_support::server::free_addr();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "storage:\n  delete:\n    enabled: true\nnotifications:\n  endpoints:\n    - name: rec\n      url: http://{listener}/events\n      headers: {{Authorization: [Bearer t0k3n]}}\n      timeout: 1s\n      backoff: 100ms\n      ignore: {{actions: [pull]}}\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let (cfg, data) = (cfg.to_str().unwrap(), data.to_str().unwrap());
    let (_donjon, addr) = donjon_test_support::spawn_donjon!(&[
        "--user",
        "alice",
        "--password",
        "alice-pw",
        "--config-file",
        cfg,
        "-d",
        data,
    ]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let c = client();
    let url = |p: &str| format!("http://{addr}{p}");
    // alice, with Basic credentials on every request: the events name her
    const ALICE: (&str, &str) = ("authorization", "Basic YWxpY2U6YWxpY2UtcHc=");
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"a layer of notified bytes";
    let (cd, ld) = (digest(config), digest(layer));
    for (d, b) in [(&cd, &config[..]), (&ld, &layer[..])] {
        let r = rt.block_on(send(
            &c,
            "POST",
            &url(&format!("/v2/team/app/blobs/uploads/?digest={d}")),
            &[ALICE],
            Bytes::copy_from_slice(b),
        ));
        assert_eq!(r.status, 201);
    }
    let m = donjon_test_support::server::image_manifest(&cd, config.len(), &ld, layer.len(), None);
    let md = digest(&m);
    let r = rt.block_on(send(
        &c,
        "PUT",
        &url("/v2/team/app/manifests/v1"),
        &[("content-type", donjon_test_support::server::OCI_MANIFEST), ALICE],
        Bytes::from(m.clone()),
    ));
    assert_eq!(r.status, 201);
    let r = rt.block_on(send(
        &c,
        "GET",
        &url("/v2/team/app/manifests/v1"),
        &[("accept", donjon_test_support::server::OCI_MANIFEST), ALICE],
        Bytes::new(),
    ));
    assert_eq!(r.status, 200);
    let r = rt.block_on(send(
        &c,
        "DELETE",
        &url(&format!("/v2/team/app/manifests/{md}")),
        &[ALICE],
        Bytes::new(),
    ));
    assert_eq!(r.status, 202);

    // the endpoint has found the listener down (a failure is counted) before it comes up
    let failed = || {
        let r = rt.block_on(send(&c, "GET", &url("/metrics"), &[], Bytes::new()));
        String::from_utf8_lossy(&r.body).contains(r#"donjon_notifications_failed_total{endpoint="rec"}"#)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !failed() {
        assert!(Instant::now() < deadline, "the endpoint never tried the listener while it was down");
        std::thread::sleep(Duration::from_millis(50));
    }
    // the listener comes up now; what happened while it was down arrives
    let got: Got = Arc::default();
    rt.spawn(receiver(listener, got.clone()));
    let deadline = Instant::now() + Duration::from_secs(15);
    while got.lock().unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "only {:?} arrived", got.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 4, "{got:#?}");
    for (ct, auth, _) in &got {
        assert_eq!(ct, "application/vnd.docker.distribution.events.v1+json");
        assert_eq!(auth, "Bearer t0k3n");
    }
    let events: Vec<&Value> = got.iter().map(|(_, _, e)| e).collect();
    let blob_pushes: Vec<&&Value> = events
        .iter()
        .filter(|e| e["action"] == "push" && e["target"]["mediaType"] == "application/octet-stream")
        .collect();
    assert_eq!(blob_pushes.len(), 2, "{events:#?}");
    let push = events
        .iter()
        .find(|e| {
            e["action"] == "push" && e["target"]["mediaType"] == donjon_test_support::server::OCI_MANIFEST
        })
        .expect("the manifest push");
    assert_eq!(push["target"]["repository"], "team/app");
    assert_eq!(push["target"]["digest"], md.as_str());
    assert_eq!(push["target"]["tag"], "v1");
    assert_eq!(push["target"]["size"], m.len());
    assert_eq!(push["request"]["method"], "PUT");
    assert_eq!(push["actor"]["name"], "alice", "the authenticated user");
    assert!(push["id"].as_str().is_some_and(|i| !i.is_empty()) && push["timestamp"].as_str().is_some());
    assert!(push["source"]["instanceID"].as_str().is_some_and(|i| !i.is_empty()));
    let delete = events.iter().find(|e| e["action"] == "delete").expect("the delete");
    assert_eq!(delete["target"]["digest"], md.as_str());
    assert!(!events.iter().any(|e| e["action"] == "pull"), "pulls are ignored by this endpoint");
    // what was taken is in the metrics
    let r = rt.block_on(send(&c, "GET", &url("/metrics"), &[], Bytes::new()));
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(text.contains(r#"donjon_notifications_sent_total{endpoint="rec"} 4"#), "{text}");
}

/// An endpoint too far behind loses the oldest events, counted; the newest still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_too_far_behind_loses_the_oldest_counted() {
    use donjon::notify::{EventsLayer, NotificationsConfig, Notifier};
    use tower::ServiceExt;
    let listener = donjon_test_support::server::free_addr();
    let config: NotificationsConfig = serde_yaml::from_str(&format!(
        "endpoints: [{{name: small, url: 'http://{listener}/e', backoff: 50ms}}]"
    ))
    .unwrap();
    let (notifier, senders) = Notifier::with_queue(&config, None, 4);
    for s in senders {
        tokio::spawn(s);
    }
    let registry = donjon::Registry::builder(Arc::new(donjon_core::memory::MemoryStore::default())).build();
    let svc = donjon::middleware::wrap_with(registry, vec![], None, Some(EventsLayer::new(notifier)));
    for i in 0..10u8 {
        let data = vec![i; 10];
        let req = http::Request::post(format!("/v2/small/blobs/uploads/?digest={}", digest(&data)))
            .body(donjon::Body::from(Bytes::from(data)))
            .unwrap();
        assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 201);
    }
    let got: Got = Arc::default();
    tokio::spawn(receiver(listener, got.clone()));
    let dropped = || {
        let text = donjon_core::metrics::metrics().encode();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(r#"donjon_notifications_dropped_total{endpoint="small"} "#)?
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().len() + dropped() < 10 {
        assert!(Instant::now() < deadline, "{} arrived, {} dropped", got.lock().unwrap().len(), dropped());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dropped() >= 5, "the oldest went: {} dropped", dropped());
    let digests: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, e)| e["target"]["digest"].as_str().unwrap().to_string())
        .collect();
    assert!(digests.contains(&digest(&[9u8; 10])), "the newest arrived: {digests:?}");
}
