//! Garbage collection on the filesystem store (and, in `tests/s3.rs`, on Garage): what goes,
//! what stays, the dry run, the grace period, and a manifest that arrives while blobs are
//! hidden.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use donjon_core::store::{bytes_stream, ManifestPut, RangeSpec, Store, StoreError};
use donjon_core::{Digest, Name, Reference};
use donjon_store::gc::{collect, GcOptions};
use donjon_store::FsStore;
use futures_util::TryStreamExt;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

async fn fs_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).await.unwrap();
    (dir, Arc::new(store))
}

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

async fn blob(store: &dyn Store, repo: &Name, data: &[u8]) -> Digest {
    let d = Digest::sha256_of(data);
    store.blob_put(repo, &d, bytes_stream(Bytes::copy_from_slice(data))).await.unwrap();
    d
}

/// An image: a config and the given layers, pushed as the upload layer does, tagged `tag`.
async fn image(store: &dyn Store, repo: &Name, tag: Option<&str>, config: &str, layers: &[&[u8]]) -> Digest {
    let c = blob(store, repo, config.as_bytes()).await;
    let mut descs = vec![];
    for l in layers {
        let d = blob(store, repo, l).await;
        descs.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{}}}"#,
            l.len()
        ));
    }
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descs.join(",")
    );
    let digest = Digest::sha256_of(m.as_bytes());
    let put = ManifestPut {
        digest: digest.clone(),
        media_type: OCI_MANIFEST.into(),
        bytes: Bytes::from(m),
        tags: tag.map(|t| t.parse().unwrap()).into_iter().collect(),
        referrer: None,
    };
    store.manifest_put(repo, put).await.unwrap();
    digest
}

/// Reads an image back completely: its manifest and every blob it names.
async fn pulls(store: &dyn Store, repo: &Name, reference: &str) -> Result<(), String> {
    let m = store
        .manifest_get(repo, &reference.parse::<Reference>().unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let p = donjon_core::manifest::parse(&m.bytes, Some(&m.media_type)).map_err(|e| e.to_string())?;
    for b in p.blobs {
        let r = store
            .blob_read(repo, &b.digest, RangeSpec::Full)
            .await
            .map_err(|e| format!("{}: {e}", b.digest))?;
        let chunks: Vec<Bytes> = r.body.try_collect().await.map_err(|e| e.to_string())?;
        if Digest::sha256_of(&chunks.concat()) != b.digest {
            return Err(format!("{} reads back wrong", b.digest));
        }
    }
    Ok(())
}

/// A grace of 1.5 s: S3 servers may keep modification times to the second (SeaweedFS does), so
/// an object written 0.9 s ago can look 1.9 s old; the cases wait [`PAST_GRACE`] to be past it.
fn quick(o: GcOptions) -> GcOptions {
    GcOptions { grace: Duration::from_millis(1500), settle: Duration::from_millis(100), ..o }
}

/// Longer than the grace plus a second of rounding.
const PAST_GRACE: Duration = Duration::from_millis(2600);

async fn reclaims_an_untagged_images_unique_layers(store: Arc<dyn Store>) {
    let repo = name("gc/app");
    let a = image(&*store, &repo, Some("a"), "config-a", &[b"shared layer", b"layer only a"]).await;
    let b = image(&*store, &repo, Some("b"), "config-b", &[b"shared layer", b"layer only b"]).await;
    store.tag_delete(&repo, &"b".parse().unwrap()).await.unwrap();
    tokio::time::sleep(PAST_GRACE).await;
    let before = store.blob_list().await.unwrap();

    let dry =
        collect(&*store, &quick(GcOptions { delete_untagged: true, dry_run: true, ..Default::default() }))
            .await
            .unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.manifests, vec![(repo.to_string(), b.clone())]);
    let want: Vec<Digest> = {
        let mut v = vec![b.clone(), Digest::sha256_of(b"config-b"), Digest::sha256_of(b"layer only b")];
        v.sort();
        v
    };
    let got: Vec<Digest> = dry.blobs.iter().map(|(d, _)| d.clone()).collect();
    assert_eq!(got, want, "the untagged image's own blobs, nothing shared");
    assert_eq!(store.blob_list().await.unwrap(), before, "a dry run changes nothing");
    assert!(pulls(&*store, &repo, &b.to_string()).await.is_ok());

    let done =
        collect(&*store, &quick(GcOptions { delete_untagged: true, ..Default::default() })).await.unwrap();
    assert_eq!(done.manifests, dry.manifests, "the dry run said what it then did");
    assert_eq!(done.blobs, dry.blobs);
    assert_eq!(done.bytes_freed, dry.bytes_freed);
    assert_eq!(done.links, dry.links);
    assert!(done.bytes_freed > 0);
    pulls(&*store, &repo, "a").await.unwrap();
    assert!(pulls(&*store, &repo, &a.to_string()).await.is_ok());
    assert!(matches!(
        store.manifest_get(&repo, &Reference::Digest(b.clone())).await,
        Err(StoreError::ManifestUnknown(_))
    ));
    let left: Vec<Digest> = store.blob_list().await.unwrap().into_iter().map(|b| b.digest).collect();
    for d in &want {
        assert!(!left.contains(d), "{d} was freed");
    }
    assert!(store.quarantine_list().await.unwrap().is_empty());
    // a second run finds nothing more
    let again =
        collect(&*store, &quick(GcOptions { delete_untagged: true, ..Default::default() })).await.unwrap();
    assert!(again.blobs.is_empty() && again.manifests.is_empty() && again.links.is_empty(), "{again:?}");
}

async fn untagged_manifests_stay_without_the_option_and_referrers_of_kept_ones_stay(store: Arc<dyn Store>) {
    let repo = name("gc/refs");
    let kept = image(&*store, &repo, Some("v1"), "config-kept", &[b"kept layer"]).await;
    let untagged = image(&*store, &repo, None, "config-untagged", &[b"untagged layer"]).await;
    // a signature of the kept image: untagged, but its subject stays
    let sig_config = blob(&*store, &repo, b"sig-config").await;
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x-sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{sig_config}","size":10}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{kept}","size":1}}}}"#
    );
    let sig_digest = Digest::sha256_of(sig.as_bytes());
    store
        .manifest_put(
            &repo,
            ManifestPut {
                digest: sig_digest.clone(),
                media_type: OCI_MANIFEST.into(),
                bytes: Bytes::from(sig),
                tags: vec![],
                referrer: None,
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(PAST_GRACE).await;
    let r = collect(&*store, &quick(GcOptions::default())).await.unwrap();
    assert!(
        r.manifests.is_empty() && r.blobs.is_empty(),
        "without delete_untagged every revision counts: {r:?}"
    );
    let r =
        collect(&*store, &quick(GcOptions { delete_untagged: true, ..Default::default() })).await.unwrap();
    assert_eq!(r.manifests, vec![(repo.to_string(), untagged)]);
    pulls(&*store, &repo, &sig_digest.to_string()).await.expect("the referrer of a kept manifest stays");
    pulls(&*store, &repo, "v1").await.unwrap();
}

async fn grace_keeps_what_was_just_pushed(store: Arc<dyn Store>) {
    let repo = name("gc/fresh");
    image(&*store, &repo, Some("v1"), "config-fresh", &[b"a layer"]).await;
    let orphan = blob(&*store, &repo, b"pushed, manifest still on its way").await;
    let r = collect(&*store, &quick(GcOptions { grace: Duration::from_secs(3600), ..Default::default() }))
        .await
        .unwrap();
    assert!(r.blobs.is_empty() && r.links.is_empty(), "{r:?}");
    store.blob_size(&repo, &orphan).await.expect("kept within the grace period");
    tokio::time::sleep(PAST_GRACE).await;
    let r = collect(&*store, &quick(GcOptions::default())).await.unwrap();
    assert_eq!(r.blobs.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(), vec![orphan.clone()]);
    assert_eq!(r.links, vec![(repo.to_string(), orphan.clone())], "its link goes too");
    assert!(matches!(store.blob_size(&repo, &orphan).await, Err(StoreError::BlobUnknown(_))));
}

async fn a_manifest_that_arrives_while_blobs_are_hidden_keeps_them(store: Arc<dyn Store>) {
    let repo = name("gc/race");
    let old = blob(&*store, &repo, b"an old layer no manifest names").await;
    tokio::time::sleep(PAST_GRACE).await;
    let options = GcOptions {
        grace: Duration::from_millis(500),
        settle: Duration::from_millis(1500),
        ..Default::default()
    };
    let gc = {
        let store = store.clone();
        tokio::spawn(async move { collect(&*store, &options).await })
    };
    // wait until the collector has hidden the old layer
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !store.quarantine_list().await.unwrap().contains(&old) {
        assert!(std::time::Instant::now() < deadline, "the layer was never hidden");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // a push that checked the layer just before it was hidden commits its manifest now
    let c = blob(&*store, &repo, b"config of the late manifest").await;
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":27}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{old}","size":30}}]}}"#
    );
    let digest = Digest::sha256_of(m.as_bytes());
    let put = ManifestPut {
        digest,
        media_type: OCI_MANIFEST.into(),
        bytes: Bytes::from(m),
        tags: vec!["late".parse().unwrap()],
        referrer: None,
    };
    store.manifest_put(&repo, put).await.unwrap();
    let r = gc.await.unwrap().unwrap();
    assert_eq!(r.restored, 1, "{r:?}");
    assert!(r.blobs.is_empty(), "{r:?}");
    pulls(&*store, &repo, "late").await.expect("the late manifest's layer came back, link and all");
}

/// A manifest pushed again while its bytes and layers are hidden (or left hidden by a run that
/// stopped): the revision keeps its bytes, and what they reference comes back in the rounds
/// of marking that follow.
async fn a_revision_whose_bytes_are_hidden_gets_them_back(store: Arc<dyn Store>) {
    let repo = name("gc/again");
    let m = image(&*store, &repo, Some("v1"), "config-again", &[b"layer pushed again"]).await;
    let layer = Digest::sha256_of(b"layer pushed again");
    tokio::time::sleep(PAST_GRACE).await;
    // as a collection that stopped half-way would leave them
    assert!(store.blob_quarantine(&m).await.unwrap());
    assert!(store.blob_quarantine(&layer).await.unwrap());
    let r = collect(&*store, &quick(GcOptions::default())).await.unwrap();
    // the manifest and its layer, and its config, which the first mark could not see behind
    // the hidden manifest and so hid as well
    assert_eq!(r.restored, 3, "{r:?}");
    assert!(r.blobs.is_empty(), "{r:?}");
    pulls(&*store, &repo, "v1").await.expect("the image is whole again");
    assert!(store.quarantine_list().await.unwrap().is_empty());
}

/// An index pushed by digest (to be tagged in a moment) keeps the children it lists.
async fn a_fresh_untagged_index_keeps_its_children(store: Arc<dyn Store>) {
    let repo = name("gc/index");
    let child = image(&*store, &repo, None, "config-child", &[b"child layer"]).await;
    tokio::time::sleep(PAST_GRACE).await;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{child}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
    );
    let digest = Digest::sha256_of(index.as_bytes());
    let put = ManifestPut {
        digest: digest.clone(),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        bytes: Bytes::from(index),
        tags: vec![],
        referrer: None,
    };
    store.manifest_put(&repo, put).await.unwrap();
    let r =
        collect(&*store, &quick(GcOptions { delete_untagged: true, ..Default::default() })).await.unwrap();
    assert!(r.manifests.is_empty(), "a fresh index is a root: {r:?}");
    pulls(&*store, &repo, &child.to_string()).await.unwrap();
}

macro_rules! on_every_store {
    ($($case:ident),*) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(std::sync::Arc::new(donjon_core::memory::MemoryStore::default())).await;
                }
            )*
        }
        mod filesystem {
            $(
                #[tokio::test]
                async fn $case() {
                    let (_dir, store) = super::fs_store().await;
                    super::$case(store).await;
                }
            )*
        }
    };
}

on_every_store!(
    reclaims_an_untagged_images_unique_layers,
    untagged_manifests_stay_without_the_option_and_referrers_of_kept_ones_stay,
    grace_keeps_what_was_just_pushed,
    a_manifest_that_arrives_while_blobs_are_hidden_keeps_them,
    a_revision_whose_bytes_are_hidden_gets_them_back,
    a_fresh_untagged_index_keeps_its_children
);

/// The same cases on a real S3 server (SeaweedFS, or Garage with `DONJON_S3_SERVER=garage`),
/// each in a bucket root of its own. Skipped when the server is not installed, unless
/// `DONJON_S3=1`.
#[cfg(feature = "s3")]
#[tokio::test]
async fn on_s3() {
    let Some(g) = donjon_test_support::s3server::S3Server::start("collect") else { return };
    let store = |root: &str| {
        let config = donjon_store::S3Config { chunk_size: Some(5 * 1024 * 1024), ..g.store_config(root) };
        async move { Arc::new(donjon_store::S3Store::connect(config).await.unwrap()) as Arc<dyn Store> }
    };
    let unique = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    reclaims_an_untagged_images_unique_layers(store(&format!("gc-a-{unique}")).await).await;
    untagged_manifests_stay_without_the_option_and_referrers_of_kept_ones_stay(
        store(&format!("gc-b-{unique}")).await,
    )
    .await;
    grace_keeps_what_was_just_pushed(store(&format!("gc-c-{unique}")).await).await;
    a_manifest_that_arrives_while_blobs_are_hidden_keeps_them(store(&format!("gc-d-{unique}")).await).await;
    a_revision_whose_bytes_are_hidden_gets_them_back(store(&format!("gc-e-{unique}")).await).await;
    a_fresh_untagged_index_keeps_its_children(store(&format!("gc-f-{unique}")).await).await;
}
