//! Garbage collection on a live registry: pushes, tag moves and deletes go on over HTTP while
//! collections run in a loop; afterwards every tag pulls completely and the collections freed
//! what the deleted images left. With `DONJON_TEST_STORE=s3`, two replicas share one Garage
//! bucket, requests alternate between them, and the collector runs on a third handle.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use donjon::Store;
use donjon_store::gc::{collect, GcOptions};
use donjon_test_support::server::{image_manifest, TestServer, OCI_MANIFEST};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_beside_pushes_lose_nothing() {
    let store: Arc<Mutex<Option<Arc<dyn Store>>>> = Arc::default();
    let keep = store.clone();
    let s = Arc::new(
        TestServer::start_with(move |b| {
            keep.lock().unwrap().get_or_insert_with(|| b.store().clone());
            b
        })
        .await,
    );
    let store = store.lock().unwrap().clone().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // the collector: short grace (a push here takes milliseconds; S3 may round times to the
    // second) and settle, in a loop
    let gc = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let o = GcOptions {
                grace: Duration::from_millis(1500),
                settle: Duration::from_millis(200),
                delete_untagged: true,
                ..GcOptions::default()
            };
            let (mut runs, mut freed) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = collect(&*store, &o).await.expect("collection");
                runs += 1;
                freed += r.bytes_freed;
            }
            (runs, freed)
        })
    };

    // the pushers: each image has a layer of its own and one shared by all; every tag moves
    // once (its first image becomes untagged garbage) and every third repository is deleted
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut kept: Vec<(String, String, Vec<String>)> = vec![];
    let mut i = 0u32;
    while Instant::now() < deadline {
        let repo = format!("gc/live-{}", i % 6);
        let tag = format!("t{i}");
        let push = |salt: String| {
            let s = s.clone();
            let (repo, tag) = (repo.clone(), tag.clone());
            async move {
                let config = format!(r#"{{"architecture":"amd64","os":"linux","salt":"{salt}"}}"#);
                let cd = s.push_blob(&repo, config.as_bytes()).await;
                let shared = s.push_blob(&repo, b"a layer every image shares").await;
                let own = format!("layer of {salt}");
                let ld = s.push_blob(&repo, own.as_bytes()).await;
                let m = image_manifest(&cd, config.len(), &ld, own.len(), None);
                let _ = shared;
                let r = s.push_manifest(&repo, &tag, OCI_MANIFEST, &m).await;
                assert_eq!(r.status, 201, "push {repo}:{tag}: {}", String::from_utf8_lossy(&r.body));
                (donjon_test_support::server::digest(&m), vec![cd, ld])
            }
        };
        let (first, _) = push(format!("{i}-first")).await;
        let (_second, blobs) = push(format!("{i}-second")).await;
        assert_ne!(first, _second);
        if i % 3 == 2 {
            let r = s.req("DELETE", &format!("/v2/{repo}/manifests/{_second}"), &[], Bytes::new()).await;
            assert_eq!(r.status, 202);
        } else {
            kept.push((repo, tag, blobs));
        }
        i += 1;
    }
    // let the last images age past the grace period, and collect once more
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (runs, freed) = gc.await.unwrap();
    assert!(runs >= 3, "only {runs} collections ran");
    assert!(freed > 0, "nothing was freed by {runs} runs");

    for (repo, tag, blobs) in &kept {
        let r = s
            .req("GET", &format!("/v2/{repo}/manifests/{tag}"), &[("accept", OCI_MANIFEST)], Bytes::new())
            .await;
        assert_eq!(r.status, 200, "{repo}:{tag} lost after {runs} collections");
        for b in blobs {
            let r = s.get(&format!("/v2/{repo}/blobs/{b}")).await;
            assert_eq!(r.status, 200, "{repo}:{tag}'s blob {b} lost after {runs} collections");
            assert_eq!(&donjon_test_support::server::digest(&r.body), b);
        }
    }
    assert!(store.quarantine_list().await.unwrap().is_empty());
}
