//! Early answers on pooled connections: after a 416, 400, 404, 405, 413 or 429 sent before the
//! request body was read, the next request on the same connection is answered — over raw HTTP/1.1,
//! through a pooling client (hyper-util's, as Go's net/http pools), and over HTTP/2.

use std::time::Duration;

use bytes::Bytes;
use donjon_test_support::server::*;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::connect::HttpInfo;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn head(method: &str, path: &str, extra: &str, body_len: usize) -> String {
    format!("{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {body_len}\r\n{extra}\r\n")
}

async fn new_session(s: &TestServer) -> String {
    let r = s.req("POST", "/v2/ka/blobs/uploads/", &[], Bytes::new()).await;
    assert_eq!(r.status, 202);
    r.header("location").to_string()
}

/// Sends `head` and a body of `body_len` bytes, the body in 16 KiB writes after a pause (as a
/// client streaming a chunk does), reads the answer, then sends a `GET /v2/` on the same
/// connection and expects it answered.
async fn early_answer_then_reuse(s: &TestServer, head: String, body_len: usize, want: u16) {
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for chunk in vec![b'x'; body_len].chunks(16 * 1024) {
        c.write_all(chunk).await.unwrap();
    }
    let mut buf = vec![];
    let r = read_response(&mut c, &mut buf).await.unwrap();
    assert_eq!(r.status, want, "{head}");
    assert!(!r.closes(), "a small unread body is drained, the connection kept: {head}");
    c.write_all(b"GET /v2/ HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    let next = read_response(&mut c, &mut buf).await.unwrap_or_else(|e| panic!("after {want}: {e}"));
    assert_eq!(next.status, 200);
}

#[tokio::test]
async fn early_answers_keep_the_connection() {
    let s = TestServer::start_with(|b| b.max_manifest_size(1024)).await;
    let n = 200 * 1024;
    // 416: a chunk at the wrong offset.
    let loc = new_session(&s).await;
    let range = format!("content-range: 10-{}\r\n", 10 + n - 1);
    early_answer_then_reuse(&s, head("PATCH", &loc, &range, n), n, 416).await;
    // 400: an invalid digest on the closing PUT, with a last chunk.
    let loc = new_session(&s).await;
    let put = format!("{loc}?digest=sha256:nothex");
    early_answer_then_reuse(&s, head("PUT", &put, "", n), n, 400).await;
    // 404: an unknown session.
    let gone = "/v2/ka/blobs/uploads/00000000-0000-0000-0000-000000000000";
    early_answer_then_reuse(&s, head("PATCH", gone, "", n), n, 404).await;
    // 413: a manifest over the limit.
    let ct = "content-type: application/vnd.oci.image.manifest.v1+json\r\n";
    early_answer_then_reuse(&s, head("PUT", "/v2/ka/manifests/t", ct, n), n, 413).await;
}

#[tokio::test]
async fn an_oversized_manifest_gets_its_413_and_a_clean_close() {
    let s = TestServer::start().await;
    // 5 MiB against the 4 MiB limit, declared: more than is worth draining.
    let n = 5 << 20;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let ct = "content-type: application/vnd.oci.image.manifest.v1+json\r\n";
    c.write_all(head("PUT", "/v2/ka/manifests/big", ct, n).as_bytes()).await.unwrap();
    // The whole body is sent before the answer is read, as a simple client does: the server
    // must keep reading after its answer, or the client's writes fail and the 413 is lost.
    let body = vec![b' '; n];
    tokio::time::timeout(Duration::from_secs(10), c.write_all(&body))
        .await
        .expect("the server stopped reading")
        .expect("sending the rest of the body after the server's answer");
    let mut buf = vec![];
    let r = read_response(&mut c, &mut buf).await.expect("the 413 is readable");
    assert_eq!(r.status, 413);
    assert!(r.closes(), "the unread remainder was too large: the server says it closes");
    let mut rest = vec![];
    let eof = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest)).await;
    assert!(matches!(eof, Ok(Ok(0))), "then a clean close: {eof:?}");
}

#[tokio::test]
async fn an_unsolicited_100_continue_body_closes_with_an_announcement() {
    let s = TestServer::start().await;
    let gone = "/v2/ka/blobs/uploads/00000000-0000-0000-0000-000000000000";
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(head("PATCH", gone, "expect: 100-continue\r\n", 1000).as_bytes()).await.unwrap();
    let mut buf = vec![];
    let r = read_response(&mut c, &mut buf).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.closes(), "the body was never asked for: the connection cannot be reused");
}

type Chunked = StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>;

/// A body that streams `n` chunks of 64 KiB, 5 ms apart: still arriving when the server answers.
fn slow_body(n: usize) -> Chunked {
    use futures_util::StreamExt;
    let s = futures_util::stream::iter(0..n)
        .then(|_| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(Frame::data(Bytes::from(vec![b'x'; 64 * 1024])))
        })
        .boxed();
    StreamBody::new(s)
}

async fn pooled_client_reuses_its_connection(http2: bool) {
    let s = TestServer::start().await;
    let client: Client<_, Chunked> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1).http2_only(http2).build_http();
    let send = |method: &str, path: String, body: Chunked| {
        let req = Request::builder().method(method).uri(s.url(&path)).body(body).unwrap();
        let client = client.clone();
        async move {
            let r = client.request(req).await.expect("answered");
            let local = r.extensions().get::<HttpInfo>().map(|i| i.local_addr());
            let status = r.status();
            let _ = r.into_body().collect().await;
            (status, local)
        }
    };
    let (status, first) = send("POST", "/v2/ka/blobs/uploads/".into(), slow_body(0)).await;
    assert_eq!(status, 202);
    let loc = s.req("POST", "/v2/ka/blobs/uploads/", &[], Bytes::new()).await.header("location").to_string();
    // A PATCH at the wrong offset: 416 while its three chunks are still on their way.
    let req = Request::builder()
        .method("PATCH")
        .uri(s.url(&loc))
        .header("content-range", format!("7-{}", 7 + 3 * 64 * 1024 - 1))
        .header("content-length", 3 * 64 * 1024)
        .body(slow_body(3))
        .unwrap();
    let r = client.request(req).await.expect("the 416 is answered");
    assert_eq!(r.status(), 416);
    assert_eq!(r.extensions().get::<HttpInfo>().map(|i| i.local_addr()), first, "one connection");
    let _ = r.into_body().collect().await;
    // Go does not retry a POST on a dead pooled connection: this one must be answered.
    let (status, again) = send("POST", "/v2/ka/blobs/uploads/".into(), slow_body(0)).await;
    assert_eq!(status, 202);
    assert_eq!(again, first, "the next request went over the same connection");
}

#[tokio::test]
async fn a_pooling_http1_client_is_answered_after_an_early_416() {
    pooled_client_reuses_its_connection(false).await;
}

#[tokio::test]
async fn a_pooling_http2_client_is_answered_after_an_early_416() {
    pooled_client_reuses_its_connection(true).await;
}

/// The web page's early answers (a login form over its limit, a method it does not take, a
/// form from another site) leave the connection usable too.
#[tokio::test]
async fn the_web_pages_early_answers_keep_the_connection() {
    let s =
        TestServer::start_with(|b| b.browse(donjon::BrowseLayer::new().token_endpoint("/v2/token"))).await;
    let n = 200 * 1024;
    let form = "content-type: application/x-www-form-urlencoded\r\n";
    early_answer_then_reuse(&s, head("POST", "/ui/login", form, n), n, 413).await;
    early_answer_then_reuse(&s, head("PUT", "/ui/", "", n), n, 405).await;
    let elsewhere = "origin: https://evil.example\r\n";
    early_answer_then_reuse(&s, head("POST", "/ui/logout", elsewhere, n), n, 403).await;
}

/// Sends `head` and its body, reads the answer (`want`), then `GET /v2/` on the same
/// connection, which must be answered (`next`).
async fn answered_then_reused(
    addr: std::net::SocketAddr,
    head: String,
    body_len: usize,
    want: u16,
    next: u16,
) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&vec![b'x'; body_len]).await.unwrap();
    let mut buf = vec![];
    let r = read_response(&mut c, &mut buf).await.unwrap();
    assert_eq!(r.status, want, "{head}");
    assert!(!r.closes(), "the connection is kept: {head}");
    c.write_all(b"GET /v2/ HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    let r = read_response(&mut c, &mut buf).await.unwrap_or_else(|e| panic!("after {want}: {e}"));
    assert_eq!(r.status, next);
}

#[tokio::test]
async fn refused_deletes_limited_logins_and_query_credentials_keep_the_connection() {
    use base64::Engine as _;
    // A refused delete (deletes off), with a body the client sent anyway.
    let s = TestServer::start_with(|b| b.delete_enabled(false)).await;
    let d = s.push_blob("ka", b"kept").await;
    answered_then_reused(s.addr, head("DELETE", &format!("/v2/ka/blobs/{d}"), "", 1024), 1024, 405, 200)
        .await;

    // A limited login (429) on an upload with its body, and credentials in the token query (400).
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("alice:{}\n", bcrypt::hash("alice-pw", 4).unwrap())).unwrap();
    let config = donjon_auth::AuthConfig {
        htpasswd: Some(donjon_auth::config::HtpasswdConfig { realm: None, path: htpasswd }),
        ..Default::default()
    };
    let keys = donjon::core::memory::MemoryStore::default();
    let layer = config.build(&keys, None).await.unwrap().unwrap();
    let s = TestServer::start_with(move |b| b.auth(layer.clone())).await;
    let basic =
        |p: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("alice:{p}")));
    for i in 0..10 {
        let r = s.req("GET", "/v2/", &[("authorization", &basic(&format!("g{i}")))], Bytes::new()).await;
        assert_eq!(r.status, 401);
    }
    let n = 200 * 1024;
    let auth = format!("authorization: {}\r\n", basic("g10"));
    answered_then_reused(s.addr, head("POST", "/v2/ka/blobs/uploads/", &auth, n), n, 429, 401).await;
    let q = "/v2/token?username=alice&password=alice-pw";
    answered_then_reused(s.addr, head("GET", q, "", 0), 0, 400, 401).await;
}
