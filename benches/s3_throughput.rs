//! Push and pull of one large blob through donjon on S3, against `object_store` alone on the
//! same S3 server in the same run: the ratio is donjon's overhead.
//!
//! ```text
//! bash .ci/s3-deps.sh                                  # Garage, once
//! DONJON_BENCH_MB=1024 cargo bench --bench s3_throughput
//! ```
//!
//! It starts a single-node Garage on 127.0.0.1 (data under the system temp dir), then runs
//! `rounds` rounds of: object_store multipart put + streamed get, then donjon monolithic push
//! (`POST ?digest=` with a streamed body over HTTP/1.1 on loopback) + streamed pull, in
//! alternation (A B A B …) so that a noisy machine affects both alike.

use donjon_test_support::s3server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};

const CHUNK: usize = 1 << 20;
const PART: usize = 10 << 20;

/// Deterministic, incompressible-looking bytes, made on the fly (nothing held in memory).
fn chunk(i: u64) -> Bytes {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(CHUNK);
    while v.len() < CHUNK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(v)
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let mb: u64 = std::env::var("DONJON_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let rounds: usize = std::env::var("DONJON_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(g) = s3server::S3Server::start("bench") else {
        eprintln!("no Garage: run .ci/s3-deps.sh first");
        std::process::exit(2);
    };
    let size = mb * CHUNK as u64;
    let chunks = mb;
    // Each round pushes other bytes (a blob already stored would only be hashed, not sent).
    // The digest the client announces is computed before anything is timed.
    let digest_of = |round: u64| {
        let mut h = donjon_core::Digester::new(donjon_core::Algorithm::Sha256);
        for i in 0..chunks {
            h.update(&chunk(round * chunks + i));
        }
        h.finish()
    };

    let s3 = AmazonS3Builder::new()
        .with_bucket_name(g.bucket())
        .with_region(g.region())
        .with_endpoint(g.endpoint())
        .with_allow_http(true)
        .with_access_key_id(g.access_key())
        .with_secret_access_key(g.secret_key())
        .build()
        .expect("object_store");

    let config = donjon_store::S3Config { chunk_size: Some(PART), ..g.store_config("donjon-bench") };
    let store = donjon_store::S3Store::connect(config).await.expect("donjon S3 store");
    let registry = donjon::Registry::builder(Arc::new(store)).build();
    let listener = donjon::server::bind("127.0.0.1:0".parse().unwrap()).await.expect("bind");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(donjon::server::serve(
        listener,
        None,
        registry,
        std::future::pending(),
        donjon::server::Options { drain_timeout: Duration::from_secs(1), ..Default::default() },
    ));
    let client: Client<_, BoxBody<Bytes, std::io::Error>> =
        Client::builder(TokioExecutor::new()).build_http();

    println!("blob: {mb} MiB, part size {} MiB, {rounds} round(s), Garage at {}", PART >> 20, g.endpoint());
    let mut rows = vec![];
    for round in 1..=rounds {
        // A: object_store alone, multipart put (its own concurrency) and a streamed get.
        let key = Path::from(format!("bench/object_store/{round}"));
        let t = Instant::now();
        let upload = s3.put_multipart(&key).await.expect("put_multipart");
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
        for i in 0..chunks {
            w.wait_for_capacity(3).await.expect("capacity");
            w.put(chunk(round as u64 * chunks + i));
        }
        w.finish().await.expect("finish");
        let a_push = t.elapsed();
        let t = Instant::now();
        let mut n = 0u64;
        let mut st = s3.get(&key).await.expect("get").into_stream();
        while let Some(c) = st.next().await {
            n += c.expect("read").len() as u64;
        }
        assert_eq!(n, size);
        let a_pull = t.elapsed();

        // B: donjon, a monolithic push over HTTP and a pull.
        let repo = format!("bench/r{round}");
        let base = round as u64 * chunks;
        let digest = digest_of(round as u64);
        let body = futures_util::stream::iter(0..chunks)
            .map(move |i| Ok::<_, std::io::Error>(Frame::data(chunk(base + i))));
        let req = http::Request::post(format!("http://{addr}/v2/{repo}/blobs/uploads/?digest={digest}"))
            .header("content-length", size)
            .body(BodyExt::boxed(StreamBody::new(body)))
            .unwrap();
        let t = Instant::now();
        let resp = client.request(req).await.expect("push");
        assert_eq!(resp.status(), 201, "push failed");
        let b_push = t.elapsed();
        let req = http::Request::get(format!("http://{addr}/v2/{repo}/blobs/{digest}"))
            .body(BodyExt::boxed(http_body_util::Empty::new().map_err(|never| match never {})))
            .unwrap();
        let t = Instant::now();
        let mut body = client.request(req).await.expect("pull").into_body();
        let mut n = 0u64;
        while let Some(f) = body.frame().await {
            if let Ok(d) = f.expect("frame").into_data() {
                n += d.len() as u64;
            }
        }
        assert_eq!(n, size);
        let b_pull = t.elapsed();
        println!(
            "round {round}: push object_store {:.0} MB/s, donjon {:.0} MB/s ({:.0}%) | pull object_store {:.0} MB/s, donjon {:.0} MB/s ({:.0}%)",
            mbps(size, a_push),
            mbps(size, b_push),
            100.0 * a_push.as_secs_f64() / b_push.as_secs_f64(),
            mbps(size, a_pull),
            mbps(size, b_pull),
            100.0 * a_pull.as_secs_f64() / b_pull.as_secs_f64(),
        );
        rows.push((a_push, b_push, a_pull, b_pull));
        // Not timed: free the bucket for the next round.
        let _ = s3.delete(&key).await;
    }
    let sum =
        |f: fn(&(Duration, Duration, Duration, Duration)) -> Duration| rows.iter().map(f).sum::<Duration>();
    let (ap, bp, al, bl) = (sum(|r| r.0), sum(|r| r.1), sum(|r| r.2), sum(|r| r.3));
    println!(
        "overall: push {:.0}% of object_store ({:.0} vs {:.0} MB/s), pull {:.0}% ({:.0} vs {:.0} MB/s); peak RSS of this process (both sides): {:.0} MiB",
        100.0 * ap.as_secs_f64() / bp.as_secs_f64(),
        mbps(size * rounds as u64, bp),
        mbps(size * rounds as u64, ap),
        100.0 * al.as_secs_f64() / bl.as_secs_f64(),
        mbps(size * rounds as u64, bl),
        mbps(size * rounds as u64, al),
        peak_rss_mib()
    );
}
