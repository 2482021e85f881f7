//! Push and pull through the axum example: the registry mounted next to an app's own routes.

#[path = "../examples/axum_mount.rs"]
#[allow(dead_code)]
mod example;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

async fn call(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    method: &str,
    url: String,
    ct: Option<&str>,
    body: Vec<u8>,
) -> (u16, http::HeaderMap, Bytes) {
    let mut b = http::Request::builder().method(method).uri(url);
    if let Some(ct) = ct {
        b = b.header("content-type", ct);
    }
    let r = client.request(b.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
    let (p, body) = r.into_parts();
    (p.status.as_u16(), p.headers, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn push_and_pull_through_axum() {
    let dir = tempfile::tempdir().unwrap();
    let store = donjon::FsStore::open(dir.path()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = example::app(Arc::new(store), None);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let c = Client::builder(TokioExecutor::new()).build_http();
    let base = format!("http://{addr}");

    let (st, _, body) = call(&c, "GET", format!("{base}/hello"), None, vec![]).await;
    assert_eq!((st, &body[..]), (200, &b"hello from the app"[..]));
    let (st, h, _) = call(&c, "GET", format!("{base}/v2/"), None, vec![]).await;
    assert_eq!(st, 200);
    assert_eq!(h["docker-distribution-api-version"], "registry/2.0");

    let layer = b"layer through axum".to_vec();
    let ld = donjon_core::Digest::sha256_of(&layer).to_string();
    let config = b"{}".to_vec();
    let cd = donjon_core::Digest::sha256_of(&config).to_string();
    for (d, data) in [(&ld, layer.clone()), (&cd, config)] {
        let (st, h, _) = call(&c, "POST", format!("{base}/v2/app/img/blobs/uploads/"), None, vec![]).await;
        assert_eq!(st, 202);
        let loc = h["location"].to_str().unwrap().to_string();
        let (st, _, _) = call(&c, "PUT", format!("{base}{loc}?digest={d}"), None, data).await;
        assert_eq!(st, 201);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}]
    }))
    .unwrap();
    let (st, _, _) = call(
        &c,
        "PUT",
        format!("{base}/v2/app/img/manifests/v1"),
        Some("application/vnd.oci.image.manifest.v1+json"),
        manifest.clone(),
    )
    .await;
    assert_eq!(st, 201);
    let (st, _, body) = call(&c, "GET", format!("{base}/v2/app/img/manifests/v1"), None, vec![]).await;
    assert_eq!((st, body.to_vec()), (200, manifest));
    let (st, _, body) = call(&c, "GET", format!("{base}/v2/app/img/blobs/{ld}"), None, vec![]).await;
    assert_eq!((st, body.to_vec()), (200, layer));
    // the app's unknown paths are still the app's
    let (st, _, _) = call(&c, "GET", format!("{base}/nope"), None, vec![]).await;
    assert_eq!(st, 404);
    server.abort();
}

#[tokio::test]
async fn the_apps_routes_stay_public_while_the_registry_needs_credentials() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn donjon::Store> = Arc::new(donjon::FsStore::open(dir.path()).await.unwrap());
    let auth = example::one_user(&*store, "admin", "secret").await.unwrap();
    assert!(dir.path().join("auth/token-signing-key.pem").exists(), "the key is kept in the data directory");
    let app = example::app(store, Some(auth)).layer(axum::middleware::from_fn(example::client_conn));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await
    });
    let c = Client::builder(TokioExecutor::new()).build_http();
    let base = format!("http://{addr}");
    let (st, _, _) = call(&c, "GET", format!("{base}/hello"), None, vec![]).await;
    assert_eq!(st, 200, "the app's route needs nothing");
    let (st, h, _) = call(&c, "GET", format!("{base}/v2/"), None, vec![]).await;
    assert_eq!(st, 401);
    assert!(h["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with(&format!(r#"Bearer realm="http://{addr}/v2/token""#)));
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("admin:secret"));
    let get = |url: String, auth: String| {
        let c = c.clone();
        async move {
            let req =
                http::Request::get(url).header("authorization", auth).body(Full::new(Bytes::new())).unwrap();
            let r = c.request(req).await.unwrap();
            let (p, body) = r.into_parts();
            (p.status.as_u16(), body.collect().await.unwrap().to_bytes())
        }
    };
    assert_eq!(get(format!("{base}/v2/"), basic.clone()).await.0, 200);
    let (st, body) = get(format!("{base}/v2/token?scope=repository:app/img:pull,push"), basic).await;
    assert_eq!(st, 200);
    let token: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    assert_eq!(
        get(format!("{base}/v2/app/img/tags/list"), bearer).await.0,
        404,
        "authorized: the repository is just empty"
    );
    server.abort();
}
