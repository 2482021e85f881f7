//! The object-storage store against a real S3 server (a SeaweedFS cluster, or Garage with
//! `DONJON_S3_SERVER=garage`, started here on 127.0.0.1). Skipped when the server is not
//! installed, unless `DONJON_S3=1`, where its absence fails.
#![cfg(feature = "s3")]

use donjon_test_support::s3server;

use std::sync::Arc;

use bytes::Bytes;
use donjon_core::store::{bytes_stream, RangeSpec, Store};
use donjon_core::{Algorithm, Digest, Name};
use donjon_store::{S3Config, S3Store};
use futures_util::TryStreamExt;

fn config(g: &s3server::S3Server, root: &str) -> S3Config {
    S3Config { chunk_size: Some(5 * 1024 * 1024), ..g.store_config(root) }
}

async fn store(g: &s3server::S3Server, root: String) -> Arc<dyn Store> {
    Arc::new(S3Store::connect(config(g, &root)).await.expect("connect"))
}

fn unique() -> String {
    format!("t{}", uuid_like())
}

fn uuid_like() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    t ^ ((N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u128) << 100)
}

#[tokio::test]
async fn store_contract_on_s3() {
    let Some(g) = s3server::S3Server::start("contract") else { return };
    donjon_core::contract::run_all(|| store(&g, unique())).await;
}

/// An upload started on one replica, continued on another in alternation, finished on a third:
/// no replica holds state of its own.
#[tokio::test]
async fn replicas_share_sessions() {
    let Some(g) = s3server::S3Server::start("replicas") else { return };
    let root = unique();
    let (a, b, c) =
        (store(&g, root.clone()).await, store(&g, root.clone()).await, store(&g, root.clone()).await);
    let repo: Name = "shared/repo".parse().unwrap();
    let data: Vec<u8> = (0..(12 * 1024 * 1024u32)).map(|i| (i % 253) as u8).collect();
    let id = a.upload_create(&repo, Algorithm::Sha256).await.unwrap();
    let mut off = 0usize;
    for (i, n) in [7usize, 3 * 1024 * 1024, 4 * 1024 * 1024, 1, 100_000].iter().cycle().enumerate() {
        if off >= data.len() {
            break;
        }
        let end = (off + n).min(data.len());
        let replica = if i % 2 == 0 { &a } else { &b };
        let size = replica
            .upload_write(&repo, &id, off as u64, bytes_stream(Bytes::copy_from_slice(&data[off..end])))
            .await
            .unwrap();
        assert_eq!(size as usize, end);
        off = end;
    }
    assert_eq!(c.upload_size(&repo, &id).await.unwrap() as usize, data.len());
    let d = Digest::sha256_of(&data);
    c.upload_commit(&repo, &id, &d).await.unwrap();
    let got: Vec<Bytes> =
        a.blob_read(&repo, &d, RangeSpec::Full).await.unwrap().body.try_collect().await.unwrap();
    assert!(got.concat() == data);
    // a tag moved on one replica is seen on the others at once
    let cfg = Digest::sha256_of(b"{}");
    b.blob_put(&repo, &cfg, bytes_stream(Bytes::from_static(b"{}"))).await.unwrap();
    for i in 0..3u8 {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":2}},"layers":[],"annotations":{{"i":"{i}"}}}}"#
        );
        let digest = Digest::sha256_of(m.as_bytes());
        let writer = [&a, &b, &c][i as usize % 3];
        writer
            .manifest_put(
                &repo,
                donjon_core::store::ManifestPut {
                    digest: digest.clone(),
                    media_type: donjon_core::manifest::OCI_MANIFEST.into(),
                    bytes: Bytes::from(m),
                    tags: vec!["latest".parse().unwrap()],
                    referrer: None,
                },
            )
            .await
            .unwrap();
        for r in [&a, &b, &c] {
            assert_eq!(r.manifest_get(&repo, &"latest".parse().unwrap()).await.unwrap().digest, digest);
        }
    }
}

/// Small PATCHes (as the conformance suite sends) are kept as segment objects, not in memory:
/// a fresh process sees them.
#[tokio::test]
async fn small_chunks_survive_a_restart() {
    let Some(g) = s3server::S3Server::start("small") else { return };
    let root = unique();
    let repo: Name = "small".parse().unwrap();
    let id = {
        let s = store(&g, root.clone()).await;
        let id = s.upload_create(&repo, Algorithm::Sha256).await.unwrap();
        s.upload_write(&repo, &id, 0, bytes_stream(Bytes::from_static(b"abc"))).await.unwrap();
        s.upload_write(&repo, &id, 3, bytes_stream(Bytes::from_static(b"def"))).await.unwrap();
        id
    };
    let s = store(&g, root.clone()).await;
    assert_eq!(s.upload_size(&repo, &id).await.unwrap(), 6);
    s.upload_commit(&repo, &id, &Digest::sha256_of(b"abcdef")).await.unwrap();
    assert_eq!(s.blob_size(&repo, &Digest::sha256_of(b"abcdef")).await.unwrap(), 6);
}

#[tokio::test]
async fn bad_bucket_or_keys_fail_at_connect() {
    let Some(g) = s3server::S3Server::start("connect") else { return };
    let mut c = config(&g, "x");
    c.bucket = "no-such-bucket".into();
    let e = S3Store::connect(c).await.unwrap_err();
    assert!(e.contains("no-such-bucket") && !e.contains('\n'), "{e}");
    let mut c = config(&g, "x");
    c.secret_key = Some("wrong".into());
    assert!(S3Store::connect(c).await.is_err());
    let mut c = config(&g, "x");
    c.endpoint = Some("http://127.0.0.1:1".into());
    let e = S3Store::connect(c).await.unwrap_err();
    assert!(!e.contains('\n'), "{e}");
}

/// With redirects on, a blob GET answers 307 to a presigned URL that S3 serves, ranges included;
/// HEAD still answers from the registry.
#[tokio::test]
async fn blob_get_redirects_to_a_presigned_url() {
    use donjon_core::{Body, RouteLayer};
    use donjon_store::ContentStoreLayer;
    use http_body_util::BodyExt;
    use tower::{ServiceBuilder, ServiceExt};

    let Some(g) = s3server::S3Server::start("redirect") else { return };
    let mut c = config(&g, &unique());
    c.redirect = Some(std::time::Duration::from_secs(600));
    let store: Arc<dyn Store> = Arc::new(S3Store::connect(c).await.unwrap());
    let repo: Name = "redir".parse().unwrap();
    let d = Digest::sha256_of(b"0123456789");
    store.blob_put(&repo, &d, bytes_stream(Bytes::from_static(b"0123456789"))).await.unwrap();
    let svc = ServiceBuilder::new().layer(RouteLayer::new()).layer(ContentStoreLayer::new(store)).service(
        tower::service_fn(|_r: http::Request<Body>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
        }),
    );
    let get = |m: &str, p: String| http::Request::builder().method(m).uri(p).body(Body::empty()).unwrap();
    let r = svc.clone().oneshot(get("GET", format!("/v2/redir/blobs/{d}"))).await.unwrap();
    assert_eq!(r.status(), 307);
    let url = r.headers()["location"].to_str().unwrap().to_string();
    assert!(url.starts_with(&g.endpoint()) && url.contains("X-Amz-Signature"), "{url}");
    assert_eq!(raw_get(&url, None), (200, b"0123456789".to_vec()));
    assert_eq!(raw_get(&url, Some("bytes=2-4")), (206, b"234".to_vec()));
    let h = svc.clone().oneshot(get("HEAD", format!("/v2/redir/blobs/{d}"))).await.unwrap();
    assert_eq!(h.status(), 200);
    assert_eq!(h.headers()["content-length"], "10");
    // a repository that does not link the blob gets no URL
    let r = svc.oneshot(get("GET", format!("/v2/other/blobs/{d}"))).await.unwrap();
    assert_eq!(r.status(), 404);
    let _ = r.into_body().collect().await;
}

/// A minimal HTTP/1.0 GET (the presigned URL is plain http on loopback).
fn raw_get(url: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n{range}\r\n").unwrap();
    let mut buf = vec![];
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, buf[split + 4..].to_vec())
}

fn in_memory(conditional: bool) -> Arc<dyn Store> {
    let backend = Arc::new(object_store::memory::InMemory::new());
    Arc::new(S3Store::with_backend(backend, "donjon", 5 * 1024 * 1024, conditional))
}

/// The object-store logic with conditional writes on: `object_store`'s in-memory backend has
/// them (Garage does not), so this is where the conditional path runs.
#[tokio::test]
async fn store_contract_with_conditional_writes() {
    donjon_core::contract::run_all(|| async { in_memory(true) }).await;
}

/// Two requests racing on one session: with conditional writes the second to save loses (416
/// with the winner's size), and the winner's bytes are what the session holds, whole.
#[tokio::test]
async fn racing_writes_on_one_session() {
    let store = in_memory(true);
    let repo: Name = "race".parse().unwrap();
    let id = store.upload_create(&repo, Algorithm::Sha256).await.unwrap();
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let slow: donjon_core::store::ByteStream = Box::pin(futures_util::stream::once(async move {
        let _ = wait.await;
        Ok::<_, donjon_core::BoxError>(Bytes::from_static(b"loser"))
    }));
    let a = {
        let (store, repo, id) = (store.clone(), repo.clone(), id.clone());
        tokio::spawn(async move { store.upload_write(&repo, &id, 0, slow).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    store.upload_write(&repo, &id, 0, bytes_stream(Bytes::from_static(b"winner!"))).await.unwrap();
    go.send(()).unwrap();
    let lost = a.await.unwrap();
    assert!(matches!(lost, Err(donjon_core::StoreError::UploadOffset { size: 7 })), "{lost:?}");
    assert_eq!(store.upload_size(&repo, &id).await.unwrap(), 7);
    let d = Digest::sha256_of(b"winner!");
    store.upload_commit(&repo, &id, &d).await.unwrap();
    let got: Vec<Bytes> =
        store.blob_read(&repo, &d, RangeSpec::Full).await.unwrap().body.try_collect().await.unwrap();
    assert_eq!(got.concat(), b"winner!");
}

/// An object store whose writes land late, as on a loaded machine or a slow link: the replica
/// behind it offers its secret after the other replica has already decided.
#[derive(Debug)]
struct SlowPuts(Arc<object_store::memory::InMemory>, std::time::Duration);

impl std::fmt::Display for SlowPuts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlowPuts({})", self.0)
    }
}

mod slow_puts {
    use super::SlowPuts;
    use async_trait::async_trait;
    use futures_util::stream::BoxStream;
    use object_store::multipart::{MultipartStore, PartId};
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta,
        ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
    };

    #[async_trait]
    impl ObjectStore for SlowPuts {
        async fn put_opts(&self, p: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
            tokio::time::sleep(self.1).await;
            self.0.put_opts(p, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            p: &Path,
            opts: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.0.put_multipart_opts(p, opts).await
        }
        async fn get_opts(&self, p: &Path, options: GetOptions) -> Result<GetResult> {
            self.0.get_opts(p, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            self.0.delete_stream(locations)
        }
        fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.0.list(prefix)
        }
        async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    #[async_trait]
    impl MultipartStore for SlowPuts {
        async fn create_multipart(&self, p: &Path) -> Result<MultipartId> {
            self.0.create_multipart(p).await
        }
        async fn put_part(&self, p: &Path, id: &MultipartId, i: usize, data: PutPayload) -> Result<PartId> {
            self.0.put_part(p, id, i, data).await
        }
        async fn complete_multipart(
            &self,
            p: &Path,
            id: &MultipartId,
            parts: Vec<PartId>,
        ) -> Result<PutResult> {
            self.0.complete_multipart(p, id, parts).await
        }
        async fn abort_multipart(&self, p: &Path, id: &MultipartId) -> Result<()> {
            self.0.abort_multipart(p, id).await
        }
    }
}

/// Two replicas make the signing key at once on a backend without `If-None-Match`, and one
/// of them writes a second and a half late (CI once saw a write that slow): both, and every
/// replica after them, keep the same key — the first offered.
#[tokio::test]
async fn a_late_replica_keeps_the_first_secret() {
    let mem = Arc::new(object_store::memory::InMemory::new());
    let replica = |ms| {
        let backend = Arc::new(SlowPuts(mem.clone(), std::time::Duration::from_millis(ms)));
        S3Store::with_backend(backend, "donjon", 5 * 1024 * 1024, false)
    };
    // Both look before either writes; one write lands after the other replica's pause.
    let (fast, slow) = (replica(100), replica(1500));
    let (a, b) = tokio::join!(
        fast.secret("auth/key.pem", Bytes::from_static(b"fast")),
        slow.secret("auth/key.pem", Bytes::from_static(b"slow")),
    );
    let (a, b) = (a.expect("fast replica"), b.expect("slow replica"));
    assert_eq!(&a[..], b"fast", "the first offer wins");
    assert_eq!(a, b, "both replicas keep one key");
    let later = S3Store::with_backend(mem, "donjon", 5 * 1024 * 1024, false);
    let c = later.secret("auth/key.pem", Bytes::from_static(b"later")).await.expect("later replica");
    assert_eq!(c, a, "a replica started later reads the same key");
}

/// On the SeaweedFS cluster (replication 001 over three volume servers): pushes run while a
/// volume server is SIGKILLed. Each push ends either committed, with every byte readable and
/// hashing to its digest, or with an error and nothing visible; what was pushed before the
/// kill stays readable from its replica; and pushes after it succeed on the servers left.
#[tokio::test]
async fn a_volume_server_killed_mid_push_loses_nothing() {
    let Some(mut g) = s3server::S3Server::start("volume-kill") else { return };
    let store = store(&g, unique()).await;
    let name = g.name();
    let s3server::S3Server::SeaweedFs(cluster) = &mut g else {
        eprintln!("skipped: needs SeaweedFS (a cluster), not {name}");
        return;
    };
    let repo: Name = "faults/volume".parse().unwrap();
    let blob = |i: usize| -> Vec<u8> { (0..(2 << 20)).map(|j: usize| ((i * 7 + j) % 251) as u8).collect() };
    let push = |i: usize| {
        let store = store.clone();
        let repo = repo.clone();
        async move {
            let data = blob(i);
            let d = Digest::sha256_of(&data);
            (i, d.clone(), store.blob_put(&repo, &d, bytes_stream(Bytes::from(data))).await)
        }
    };
    let before: Vec<_> = futures_util::future::join_all((0..4).map(push)).await;
    assert!(before.iter().all(|(_, _, r)| r.is_ok()), "pushes before the kill: {before:?}");
    let during = tokio::spawn({
        let pushes: Vec<_> = (4..16).map(push).collect();
        async move { futures_util::future::join_all(pushes).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    cluster.kill_volume(1);
    let during = during.await.unwrap();
    let after: Vec<_> = futures_util::future::join_all((16..20).map(push)).await;
    let failed_after = after.iter().filter(|(_, _, r)| r.is_err()).count();
    for (i, d, r) in before.iter().chain(&during).chain(&after) {
        match r {
            Ok(_) => {
                let read = store
                    .blob_read(&repo, d, RangeSpec::Full)
                    .await
                    .unwrap_or_else(|e| panic!("blob {i}: {e}"));
                let parts: Vec<Bytes> =
                    read.body.try_collect().await.unwrap_or_else(|e| panic!("blob {i}: {e}"));
                let bytes = parts.concat();
                assert_eq!(Digest::sha256_of(&bytes), *d, "blob {i} reads back whole");
            }
            Err(_) => assert!(store.blob_size(&repo, d).await.is_err(), "blob {i} failed yet is visible"),
        }
    }
    let ok = during.iter().filter(|(_, _, r)| r.is_ok()).count();
    println!(
        "during the kill: {ok} of {} pushes committed; after it: {failed_after} of 4 failed",
        during.len()
    );
    assert_eq!(failed_after, 0, "pushes after the kill fail: {after:?}\n{}", cluster.log());
}

/// A gateway in front of the S3 server that answers every `CopyObject` as S3 answers one of an
/// object over 5 GiB, and passes the rest through untouched (its `Host` too, so signatures
/// hold). Returns its endpoint and a count of the `UploadPartCopy` requests it passed.
async fn refusing_copy_object(upstream: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::sync::atomic::Ordering;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let parts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = parts.clone();
    let client = Client::builder(TokioExecutor::new()).build_http::<hyper::body::Incoming>();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (client, upstream, counted) = (client.clone(), upstream.clone(), counted.clone());
            let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                let (client, upstream, counted) = (client.clone(), upstream.clone(), counted.clone());
                async move {
                    let copy = req.headers().contains_key("x-amz-copy-source");
                    let part = req.uri().query().is_some_and(|q| q.contains("partNumber="));
                    if copy && !part {
                        let body = "<Error><Code>InvalidRequest</Code><Message>The specified copy source is larger than the maximum allowable size for a copy source: 5368709120</Message></Error>";
                        let resp = http::Response::builder()
                            .status(400)
                            .body(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed())
                            .unwrap();
                        return Ok::<
                            http::Response<http_body_util::combinators::BoxBody<Bytes, hyper::Error>>,
                            hyper_util::client::legacy::Error,
                        >(resp);
                    }
                    if copy {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    let pq = req.uri().path_and_query().map_or("/".to_string(), |p| p.to_string());
                    *req.uri_mut() = format!("{upstream}{pq}").parse().unwrap();
                    let resp = client.request(req).await?;
                    Ok(resp.map(|b: hyper::body::Incoming| b.boxed()))
                }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc));
        }
    });
    (endpoint, parts)
}

/// Past the copy threshold, an upload's commit and garbage collection's quarantine and restore
/// copy by parts (`UploadPartCopy`), so a blob one `CopyObject` cannot move (over 5 GiB on
/// S3; here, a gateway that refuses them all) is committed, quarantined and restored.
#[tokio::test]
async fn large_copies_go_by_parts() {
    let Some(g) = s3server::S3Server::start("partcopy") else { return };
    let (endpoint, parts) = refusing_copy_object(g.endpoint()).await;
    let copy = donjon_store::CopyLimits { threshold: 6 << 20, chunk: 5 << 20, concurrency: 2 };
    let cfg = S3Config { endpoint: Some(endpoint), copy, ..config(&g, &unique()) };
    let store: Arc<dyn Store> = Arc::new(S3Store::connect(cfg).await.expect("connect"));
    let repo: Name = "big/copy".parse().unwrap();
    let data: Vec<u8> = (0..(12 * 1024 * 1024 + 3u32)).map(|i| (i % 251) as u8).collect();
    let id = store.upload_create(&repo, Algorithm::Sha256).await.unwrap();
    let half = data.len() / 2;
    store.upload_write(&repo, &id, 0, bytes_stream(Bytes::copy_from_slice(&data[..half]))).await.unwrap();
    store
        .upload_write(&repo, &id, half as u64, bytes_stream(Bytes::copy_from_slice(&data[half..])))
        .await
        .unwrap();
    let d = Digest::sha256_of(&data);
    assert_eq!(store.upload_commit(&repo, &id, &d).await.expect("commit by parts") as usize, data.len());
    assert_eq!(parts.load(std::sync::atomic::Ordering::SeqCst), 3, "12 MiB in parts of 5 MiB");
    let read = |store: Arc<dyn Store>| {
        let (repo, d) = (repo.clone(), d.clone());
        async move {
            let got: Vec<Bytes> =
                store.blob_read(&repo, &d, RangeSpec::Full).await.unwrap().body.try_collect().await.unwrap();
            got.concat()
        }
    };
    assert!(read(store.clone()).await == data);
    assert!(store.blob_quarantine(&d).await.expect("quarantine by parts"));
    assert!(store.blob_size(&repo, &d).await.is_err(), "a quarantined blob is not served");
    store.blob_release(&d, true).await.expect("restore by parts");
    assert!(read(store.clone()).await == data);
    assert_eq!(parts.load(std::sync::atomic::Ordering::SeqCst), 9);
}
