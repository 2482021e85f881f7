//! The object-storage store against a real S3 server (Garage, started here on 127.0.0.1).
//! Skipped when Garage is not installed, unless `DONJON_S3=1`, where its absence fails.
#![cfg(feature = "s3")]

mod garage;

use std::sync::Arc;

use bytes::Bytes;
use donjon_core::store::{bytes_stream, RangeSpec, Store};
use donjon_core::{Digest, Name};
use donjon_store::{S3Config, S3Store};
use futures_util::TryStreamExt;

fn config(g: &garage::Garage, root: &str) -> S3Config {
    S3Config {
        bucket: g.bucket().into(),
        region: Some(g.region().into()),
        endpoint: Some(g.endpoint()),
        access_key: Some(g.access_key().into()),
        secret_key: Some(g.secret_key().into()),
        root: Some(root.into()),
        path_style: true,
        // Garage has no conditional writes: the path without them is the one tested here
        // (the conditional one is the memory store's).
        conditional_writes: Some(false),
        chunk_size: Some(5 * 1024 * 1024),
        ..S3Config::default()
    }
}

async fn store(g: &garage::Garage, root: String) -> Arc<dyn Store> {
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
async fn store_contract_on_garage() {
    let Some(g) = garage::Garage::start("contract") else { return };
    donjon_core::contract::run_all(|| store(&g, unique())).await;
}

/// An upload started on one replica, continued on another in alternation, finished on a third:
/// no replica holds state of its own.
#[tokio::test]
async fn replicas_share_sessions() {
    let Some(g) = garage::Garage::start("replicas") else { return };
    let root = unique();
    let (a, b, c) =
        (store(&g, root.clone()).await, store(&g, root.clone()).await, store(&g, root.clone()).await);
    let repo: Name = "shared/repo".parse().unwrap();
    let data: Vec<u8> = (0..(12 * 1024 * 1024u32)).map(|i| (i % 253) as u8).collect();
    let id = a.upload_create(&repo).await.unwrap();
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
                    tag: Some("latest".parse().unwrap()),
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
    let Some(g) = garage::Garage::start("small") else { return };
    let root = unique();
    let repo: Name = "small".parse().unwrap();
    let id = {
        let s = store(&g, root.clone()).await;
        let id = s.upload_create(&repo).await.unwrap();
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
    let Some(g) = garage::Garage::start("connect") else { return };
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
