//! An in-process donjon on 127.0.0.1:0 over real TCP ([`TestServer`]), the `donjon` binary
//! started on a free port ([`spawn_donjon!`](crate::spawn_donjon)), raw HTTP/1.1 reads for
//! the connection tests, and a self-signed certificate: the root crate's black-box tests
//! (`use donjon_test_support::server::*`). Behind the `server` feature, which depends on the
//! `donjon` library.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::client::{client, send, try_send, HttpClient, Resp};
pub use crate::net::{free_addr, wait_listening};
pub use crate::oci::{digest, image_manifest, OCI_INDEX, OCI_MANIFEST};
pub use crate::process::Process;
use crate::s3server;
use bytes::Bytes;
use http::Request;

pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    client: HttpClient,
    _s3: Option<s3server::S3Server>,
}

/// Stateless replicas behind a balancer, in process: each request goes to the next replica.
#[derive(Clone)]
struct RoundRobin {
    replicas: Arc<[donjon::Registry]>,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

impl<B> tower::Service<Request<B>> for RoundRobin
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<donjon::BoxError>,
{
    type Response = http::Response<donjon::Body>;
    type Error = std::convert::Infallible;
    type Future = <donjon::Registry as tower::Service<Request<B>>>::Future;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.replicas.len();
        self.replicas[i].clone().call(req)
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|b| b).await
    }

    /// A registry on the filesystem; with `DONJON_TEST_STORE=s3`, two registries (replicas) on
    /// one S3 bucket instead, every request going to the other one than the last. Deletes are on
    /// (the suites delete; the default, off, is tested in `tests/binary.rs`).
    pub async fn start_with(f: impl Fn(donjon::RegistryBuilder) -> donjon::RegistryBuilder) -> Self {
        let options = donjon::server::Options { drain_timeout: Duration::from_secs(5), ..Default::default() };
        Self::start_full(options, f).await
    }

    /// A registry served with these connection options.
    pub async fn start_options(options: donjon::server::Options) -> Self {
        Self::start_full(options, |b| b).await
    }

    pub async fn start_full(
        options: donjon::server::Options,
        f: impl Fn(donjon::RegistryBuilder) -> donjon::RegistryBuilder,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = donjon::server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            let _ = rx.await;
        };
        let mut s3 = None;
        let task = if std::env::var("DONJON_TEST_STORE").as_deref() == Ok("s3") {
            let g = s3server::S3Server::start("replicas")
                .expect("DONJON_TEST_STORE=s3 needs an S3 server (.ci/s3-deps.sh)");
            let mut replicas = vec![];
            for _ in 0..2 {
                let config = g.store_config("replicas");
                let store = donjon_store::S3Store::connect(config).await.unwrap();
                let builder = f(donjon::Registry::builder(Arc::new(store)).delete_enabled(true));
                tokio::spawn(builder.background(None));
                replicas.push(builder.build());
            }
            let svc = RoundRobin { replicas: replicas.into(), next: Arc::default() };
            s3 = Some(g);
            tokio::spawn(async move {
                donjon::server::serve(listener, None, donjon::middleware::wrap(svc, vec![]), stop, options)
                    .await
                    .unwrap();
            })
        } else {
            let store = donjon::FsStore::open(dir.path()).await.unwrap();
            let builder = f(donjon::Registry::builder(Arc::new(store)).delete_enabled(true));
            // The layers' background work (the auth layer's htpasswd reloading), as the binary
            // runs it; upload purging stays off.
            tokio::spawn(builder.background(None));
            let registry = builder.build();
            tokio::spawn(async move {
                donjon::server::serve(
                    listener,
                    None,
                    donjon::middleware::wrap(registry, vec![]),
                    stop,
                    options,
                )
                .await
                .unwrap();
            })
        };
        Self { addr, dir, shutdown: Some(tx), task: Some(task), client: client(), _s3: s3 }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn req(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        send(&self.client, method, &self.url(path), headers, body.into()).await
    }

    /// A request with this `Authorization` header before `headers`.
    pub async fn req_as(
        &self,
        authorization: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let mut h = vec![("authorization", authorization)];
        h.extend_from_slice(headers);
        self.req(method, path, &h, body).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req("GET", path, &[], Bytes::new()).await
    }

    /// Pushes a blob monolithically; returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = digest(data);
        let r = self
            .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], Bytes::copy_from_slice(data))
            .await;
        assert_eq!(r.status, 201, "push blob: {:?}", r.body);
        d
    }

    /// Pushes a manifest; returns its digest.
    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Resp {
        self.req(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            Bytes::copy_from_slice(body),
        )
        .await
    }

    /// Pushes a config and one layer, and an image manifest referencing them under `tag`.
    pub async fn push_image(&self, repo: &str, tag: &str, salt: &str) -> (String, Vec<u8>) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","salt":"{salt}"}}"#);
        let layer = format!("layer-{salt}");
        let cd = self.push_blob(repo, config.as_bytes()).await;
        let ld = self.push_blob(repo, layer.as_bytes()).await;
        let m = image_manifest(&cd, config.len(), &ld, layer.len(), None);
        let r = self.push_manifest(repo, tag, OCI_MANIFEST, &m).await;
        assert_eq!(r.status, 201, "push manifest: {:?}", r.body);
        (digest(&m), m)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A self-signed certificate and key made with openssl in `dir` (`cert.pem`, `key.pem`), for
/// `cn` and the subject alternative names `san` (`IP:127.0.0.1,DNS:x`).
pub fn self_signed(dir: &std::path::Path, cn: &str, san: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", &format!("/CN={cn}")])
        .args(["-addext", &format!("subjectAltName={san}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is needed for this test");
    assert!(ok.success());
    (cert, key)
}

/// One HTTP/1.1 response read off a raw connection.
pub struct RawResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl RawResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads one response (head and `Content-Length` body) from `c`, keeping what follows in `buf`.
pub async fn read_response(c: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<RawResp> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = resp.parse(buf).map_err(std::io::Error::other)? {
            let status = resp.code.unwrap_or(0);
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            let r = RawResp { status, headers };
            let len: usize = r.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while buf.len() < head + len {
                read_more(c, buf).await?;
            }
            buf.drain(..head + len);
            return Ok(r);
        }
        read_more(c, buf).await?;
    }
}

pub async fn read_more(c: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(c, &mut chunk),
    )
    .await
    .map_err(|_| std::io::Error::other("timed out waiting for a response"))??;
    if n == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// The `donjon` binary of the calling test crate ([`spawn_donjon_at`] with its
/// `CARGO_BIN_EXE_donjon`): `spawn_donjon!(&["--config-file", path])`.
#[macro_export]
macro_rules! spawn_donjon {
    ($args:expr) => {
        $crate::server::spawn_donjon_at(env!("CARGO_BIN_EXE_donjon"), $args)
    };
}

/// The binary `bin` on a free 127.0.0.1 address, `--bind ADDR` then `args`, with
/// `RUST_LOG=warn` and stdout dropped; returns once it listens. The guard kills and reaps it,
/// also when the test panics.
pub fn spawn_donjon_at(bin: &str, args: &[&str]) -> (Process, SocketAddr) {
    let addr = free_addr();
    let child = std::process::Command::new(bin)
        .arg("--bind")
        .arg(addr.to_string())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the donjon binary starts");
    let guard = Process(child);
    wait_listening(addr);
    (guard, addr)
}
