//! In-process micro-benchmarks of the hot paths (criterion):
//!
//! ```text
//! cargo bench --bench stack
//! ```
//!
//! route parsing, SHA-256 verification, a manifest GET by tag through the composed stack (memory
//! and filesystem stores), and a 16 MiB blob streamed through the stack from the filesystem.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use donjon::{Body, Registry};
use donjon_core::store::{bytes_stream, ManifestPut};
use donjon_core::{Digest, Digester, Name, Store};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn routes(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    let d = Digest::sha256_of(b"x");
    let blob = format!("/v2/library/busybox/blobs/{d}");
    for (name, path) in [
        ("manifest by tag", "/v2/library/busybox/manifests/latest"),
        ("blob", blob.as_str()),
        ("upload", "/v2/a/b/c/blobs/uploads/6f1c5e1a-56a5-4dbb-9b7b-1b1a5c5f0c2e"),
    ] {
        g.bench_function(name, |b| b.iter(|| donjon_core::route::parse(std::hint::black_box(path))));
    }
    g.finish();
}

fn sha256(c: &mut Criterion) {
    let data = vec![7u8; 1 << 20];
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("1 MiB", |b| {
        b.iter(|| {
            let mut h = Digester::new(donjon_core::Algorithm::Sha256);
            h.update(&data);
            h.finish()
        })
    });
    g.finish();
}

async fn seed(store: &Arc<dyn Store>, blob_size: usize) -> Digest {
    let repo: Name = "bench/app".parse().unwrap();
    let cfg = Digest::sha256_of(b"{}");
    store.blob_put(&repo, &cfg, bytes_stream(Bytes::from_static(b"{}"))).await.unwrap();
    let layer: Bytes = (0..blob_size).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
    let ld = Digest::sha256_of(&layer);
    store.blob_put(&repo, &ld, bytes_stream(layer.clone())).await.unwrap();
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ld}","size":{blob_size}}}]}}"#
    );
    let digest = Digest::sha256_of(m.as_bytes());
    let put = ManifestPut {
        digest,
        media_type: donjon_core::manifest::OCI_MANIFEST.into(),
        bytes: Bytes::from(m),
        tags: vec!["latest".parse().unwrap()],
        referrer: None,
    };
    store.manifest_put(&repo, put).await.unwrap();
    ld
}

fn through_stack(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blob_size = 16 << 20;
    let stores: Vec<(&str, Arc<dyn Store>)> = vec![
        ("memory", Arc::new(donjon_core::memory::MemoryStore::default())),
        ("fs", Arc::new(rt.block_on(donjon::FsStore::open(dir.path())).unwrap())),
    ];
    let mut g = c.benchmark_group("manifest GET by tag");
    let mut layer = None;
    for (name, store) in &stores {
        layer = Some(rt.block_on(seed(store, blob_size)));
        let registry = Registry::builder(store.clone()).build();
        g.bench_with_input(BenchmarkId::from_parameter(name), &registry, |b, r| {
            b.to_async(&rt).iter(|| async {
                let req = http::Request::get("/v2/bench/app/manifests/latest").body(Body::empty()).unwrap();
                let resp = r.clone().oneshot(req).await.unwrap();
                resp.into_body().collect().await.unwrap()
            })
        });
    }
    g.finish();

    let layer = layer.unwrap();
    let registry = Registry::builder(stores[1].1.clone()).build();
    let mut g = c.benchmark_group("blob GET 16 MiB (fs)");
    g.throughput(Throughput::Bytes(blob_size as u64));
    g.sample_size(20);
    g.bench_function("stream", |b| {
        b.to_async(&rt).iter(|| async {
            let req = http::Request::get(format!("/v2/bench/app/blobs/{layer}")).body(Body::empty()).unwrap();
            let mut body = registry.clone().oneshot(req).await.unwrap().into_body();
            let mut n = 0;
            while let Some(f) = body.frame().await {
                n += f.unwrap().into_data().map_or(0, |d| d.len());
            }
            assert_eq!(n, blob_size);
        })
    });
    g.finish();
}

criterion_group!(benches, routes, sha256, through_stack);
criterion_main!(benches);
