//! The store contract as one test suite that every backend runs.
//!
//! A backend's tests call [`store_contract_tests!`](crate::store_contract_tests) with an async
//! expression that yields a fresh, empty store:
//!
//! ```ignore
//! donjon_core::store_contract_tests!(async {
//!     std::sync::Arc::new(donjon_core::memory::MemoryStore::default())
//! });
//! ```

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;

use crate::body::{BoxError, ByteStream};
use crate::digest::{Algorithm, Digest};
use crate::manifest::OCI_MANIFEST;
use crate::name::{Name, Reference};
use crate::store::{bytes_stream, Descriptor, ManifestPut, RangeSpec, Store, StoreError};

/// Expands to one `#[tokio::test]` per contract case, each on a fresh store from `$make`.
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::__contract_cases!(__contract_tests, $make);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ($make:expr; $($case:ident),*) => {
        $(
            #[::tokio::test]
            async fn $case() {
                let store: ::std::sync::Arc<dyn $crate::Store> = $make.await;
                $crate::contract::$case(store).await;
            }
        )*
    };
}

/// The list of cases, handed to `$callback` (a macro of this crate).
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_cases {
    ($callback:ident, $($arg:tt)*) => {
        $crate::$callback!($($arg)*;
            upload_round_trip, chunked_upload_resumes, wrong_offset_is_refused,
            digest_mismatch_stores_nothing, cancel_ends_session, body_error_keeps_prefix,
            links_isolate_repositories, unlink_removes_only_the_link, ranges,
            empty_blob, sha512_commit, same_blob_twice_concurrently, manifests_by_tag_and_digest,
            tag_moves_atomically, tag_delete_keeps_manifest, manifest_delete_removes_tags,
            referrers_index, catalog_pages_in_order, unknown_repository, blob_put_verifies,
            large_blob_in_many_chunks, purge_ends_old_sessions, emptied_repository_lists_no_tags,
            sha512_session, one_manifest_many_tags, secrets_first_writer_wins,
            gc_lists_what_is_stored, quarantine_hides_and_gives_back);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_run_all {
    (; $($case:ident),*) => {
        /// Runs every case in turn, each on a fresh store from `make`: for backends whose test
        /// server is costly to start once per test.
        pub async fn run_all<F, Fut>(make: F)
        where
            F: Fn() -> Fut,
            Fut: std::future::Future<Output = Arc<dyn Store>>,
        {
            $(
                eprintln!("store contract: {}", stringify!($case));
                $case(make().await).await;
            )*
        }
    };
}

crate::__contract_cases!(__contract_run_all,);

fn name(s: &str) -> Name {
    s.parse().expect("test name")
}

async fn push(store: &dyn Store, repo: &Name, data: &[u8]) -> Digest {
    let id = store.upload_create(repo, Algorithm::Sha256).await.expect("create");
    store.upload_write(repo, &id, 0, bytes_stream(Bytes::copy_from_slice(data))).await.expect("write");
    let d = Digest::sha256_of(data);
    store.upload_commit(repo, &id, &d).await.expect("commit");
    d
}

async fn read_all(store: &dyn Store, repo: &Name, d: &Digest, range: RangeSpec) -> Vec<u8> {
    use futures_util::TryStreamExt;
    let r = store.blob_read(repo, d, range).await.expect("read");
    let chunks: Vec<Bytes> = r.body.try_collect().await.expect("stream");
    chunks.concat()
}

fn manifest_bytes(config: &Digest, subject: Option<&Digest>) -> Bytes {
    let subject = subject.map_or(String::new(), |s| {
        format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{s}","size":1}}"#)
    });
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[]{subject}}}"#
    ))
}

async fn put_manifest(store: &dyn Store, repo: &Name, tag: Option<&str>, salt: &[u8]) -> Digest {
    let config = push(store, repo, salt).await;
    let bytes = manifest_bytes(&config, None);
    let digest = Digest::sha256_of(&bytes);
    store
        .manifest_put(
            repo,
            ManifestPut {
                digest: digest.clone(),
                media_type: OCI_MANIFEST.into(),
                bytes,
                tags: tag.map(|t| t.parse().expect("tag")).into_iter().collect(),
                referrer: None,
            },
        )
        .await
        .expect("manifest put");
    digest
}

/// Upload, commit, then read back whole.
pub async fn upload_round_trip(store: Arc<dyn Store>) {
    let repo = name("contract/round-trip");
    let d = push(&*store, &repo, b"hello world").await;
    assert_eq!(store.blob_size(&repo, &d).await.expect("size"), 11);
    assert_eq!(read_all(&*store, &repo, &d, RangeSpec::Full).await, b"hello world");
}

/// Several writes, with a size check between them.
pub async fn chunked_upload_resumes(store: Arc<dyn Store>) {
    let repo = name("contract/chunked");
    let id = store.upload_create(&repo, Algorithm::Sha256).await.expect("create");
    assert_eq!(store.upload_size(&repo, &id).await.expect("size"), 0);
    let n = store.upload_write(&repo, &id, 0, bytes_stream(Bytes::from_static(b"abc"))).await.expect("w1");
    assert_eq!(n, 3);
    assert_eq!(store.upload_size(&repo, &id).await.expect("size"), 3);
    let n = store.upload_write(&repo, &id, 3, bytes_stream(Bytes::from_static(b"def"))).await.expect("w2");
    assert_eq!(n, 6);
    let d = Digest::sha256_of(b"abcdef");
    assert_eq!(store.upload_commit(&repo, &id, &d).await.expect("commit"), 6);
    assert_eq!(read_all(&*store, &repo, &d, RangeSpec::Full).await, b"abcdef");
    assert!(matches!(store.upload_size(&repo, &id).await, Err(StoreError::UploadUnknown)));
}

/// A chunk that does not start at the end is refused, and nothing changes.
pub async fn wrong_offset_is_refused(store: Arc<dyn Store>) {
    let repo = name("contract/offset");
    let id = store.upload_create(&repo, Algorithm::Sha256).await.expect("create");
    store.upload_write(&repo, &id, 0, bytes_stream(Bytes::from_static(b"abc"))).await.expect("w1");
    for off in [0, 2, 4] {
        let r = store.upload_write(&repo, &id, off, bytes_stream(Bytes::from_static(b"x"))).await;
        assert!(matches!(r, Err(StoreError::UploadOffset { size: 3 })), "offset {off}: {r:?}");
    }
    assert_eq!(store.upload_size(&repo, &id).await.expect("size"), 3);
}

/// A wrong digest makes nothing visible.
pub async fn digest_mismatch_stores_nothing(store: Arc<dyn Store>) {
    let repo = name("contract/mismatch");
    let id = store.upload_create(&repo, Algorithm::Sha256).await.expect("create");
    store.upload_write(&repo, &id, 0, bytes_stream(Bytes::from_static(b"abc"))).await.expect("w");
    let claimed = Digest::sha256_of(b"something else");
    let r = store.upload_commit(&repo, &id, &claimed).await;
    assert!(matches!(r, Err(StoreError::DigestMismatch { .. })), "{r:?}");
    assert!(matches!(store.blob_size(&repo, &claimed).await, Err(StoreError::BlobUnknown(_))));
    let real = Digest::sha256_of(b"abc");
    assert!(matches!(store.blob_size(&repo, &real).await, Err(StoreError::BlobUnknown(_))));
    assert!(matches!(store.blob_link(&repo, &real).await, Err(StoreError::BlobUnknown(_))));
}

/// Cancel ends the session.
pub async fn cancel_ends_session(store: Arc<dyn Store>) {
    let repo = name("contract/cancel");
    let id = store.upload_create(&repo, Algorithm::Sha256).await.expect("create");
    store.upload_cancel(&repo, &id).await.expect("cancel");
    assert!(matches!(store.upload_size(&repo, &id).await, Err(StoreError::UploadUnknown)));
    let w = store.upload_write(&repo, &id, 0, bytes_stream(Bytes::from_static(b"x"))).await;
    assert!(matches!(w, Err(StoreError::UploadUnknown)));
    assert!(matches!(store.upload_cancel(&repo, &id).await, Err(StoreError::UploadUnknown)));
    // a session of one repository is unknown in another
    let id = store.upload_create(&repo, Algorithm::Sha256).await.expect("create");
    assert!(matches!(store.upload_size(&name("contract/other"), &id).await, Err(StoreError::UploadUnknown)));
}

/// A body that fails mid-way keeps what arrived; the upload continues from there.
pub async fn body_error_keeps_prefix(store: Arc<dyn Store>) {
    let repo = name("contract/disconnect");
    let id = store.upload_create(&repo, Algorithm::Sha256).await.expect("create");
    let items: Vec<Result<Bytes, BoxError>> =
        vec![Ok(Bytes::from_static(b"abc")), Err("client went away".into())];
    let broken: ByteStream = Box::pin(stream::iter(items));
    let r = store.upload_write(&repo, &id, 0, broken).await;
    assert!(matches!(r, Err(StoreError::Body(_))), "{r:?}");
    assert_eq!(store.upload_size(&repo, &id).await.expect("size"), 3);
    store.upload_write(&repo, &id, 3, bytes_stream(Bytes::from_static(b"def"))).await.expect("resume");
    let d = Digest::sha256_of(b"abcdef");
    store.upload_commit(&repo, &id, &d).await.expect("commit");
    assert_eq!(read_all(&*store, &repo, &d, RangeSpec::Full).await, b"abcdef");
}

/// A repository reads only the blobs it links.
pub async fn links_isolate_repositories(store: Arc<dyn Store>) {
    let (a, b) = (name("contract/a"), name("contract/b"));
    let d = push(&*store, &a, b"secret layer").await;
    assert!(matches!(store.blob_size(&b, &d).await, Err(StoreError::BlobUnknown(_))));
    assert!(matches!(store.blob_read(&b, &d, RangeSpec::Full).await, Err(StoreError::BlobUnknown(_))));
    store.blob_link(&b, &d).await.expect("mount");
    assert_eq!(store.blob_size(&b, &d).await.expect("size"), 12);
    let missing = Digest::sha256_of(b"never pushed");
    assert!(matches!(store.blob_link(&b, &missing).await, Err(StoreError::BlobUnknown(_))));
}

/// Unlinking hides the blob from that repository only.
pub async fn unlink_removes_only_the_link(store: Arc<dyn Store>) {
    let (a, b) = (name("contract/ua"), name("contract/ub"));
    let d = push(&*store, &a, b"shared").await;
    store.blob_link(&b, &d).await.expect("mount");
    store.blob_unlink(&a, &d).await.expect("unlink");
    assert!(matches!(store.blob_size(&a, &d).await, Err(StoreError::BlobUnknown(_))));
    assert_eq!(store.blob_size(&b, &d).await.expect("still in b"), 6);
    assert!(matches!(store.blob_unlink(&a, &d).await, Err(StoreError::BlobUnknown(_))));
}

/// Range reads.
pub async fn ranges(store: Arc<dyn Store>) {
    let repo = name("contract/ranges");
    let d = push(&*store, &repo, b"0123456789").await;
    let r = |s: &str| RangeSpec::parse(s).expect("range");
    assert_eq!(read_all(&*store, &repo, &d, r("bytes=2-4")).await, b"234");
    assert_eq!(read_all(&*store, &repo, &d, r("bytes=7-")).await, b"789");
    assert_eq!(read_all(&*store, &repo, &d, r("bytes=-2")).await, b"89");
    let read = store.blob_read(&repo, &d, r("bytes=3-100")).await.expect("read");
    assert_eq!((read.size, read.range), (10, 3..10));
    let bad = store.blob_read(&repo, &d, r("bytes=10-")).await;
    assert!(matches!(bad, Err(StoreError::RangeInvalid { size: 10 })), "{bad:?}");
}

/// The empty blob.
pub async fn empty_blob(store: Arc<dyn Store>) {
    let repo = name("contract/empty");
    let d = push(&*store, &repo, b"").await;
    assert_eq!(store.blob_size(&repo, &d).await.expect("size"), 0);
    assert_eq!(read_all(&*store, &repo, &d, RangeSpec::Full).await, b"");
}

/// A sha512 digest verifies too.
pub async fn sha512_commit(store: Arc<dyn Store>) {
    let repo = name("contract/sha512");
    let id = store.upload_create(&repo, Algorithm::Sha256).await.expect("create");
    store.upload_write(&repo, &id, 0, bytes_stream(Bytes::from_static(b"xyz"))).await.expect("w");
    let d = Digest::of(Algorithm::Sha512, b"xyz");
    store.upload_commit(&repo, &id, &d).await.expect("commit");
    assert_eq!(read_all(&*store, &repo, &d, RangeSpec::Full).await, b"xyz");
}

/// A session started for sha512 (`digest-algorithm`) hashes as its chunks arrive, across
/// requests; a sha256 commit of it still verifies (by hashing again).
pub async fn sha512_session(store: Arc<dyn Store>) {
    let repo = name("contract/sha512-session");
    for (commit_with, data) in [(Algorithm::Sha512, &b"abcdef"[..]), (Algorithm::Sha256, b"ghijkl")] {
        let id = store.upload_create(&repo, Algorithm::Sha512).await.expect("create");
        let first = Bytes::copy_from_slice(&data[..3]);
        store.upload_write(&repo, &id, 0, bytes_stream(first)).await.expect("w1");
        let rest = Bytes::copy_from_slice(&data[3..]);
        store.upload_write(&repo, &id, 3, bytes_stream(rest)).await.expect("w2");
        let d = Digest::of(commit_with, data);
        assert_eq!(store.upload_commit(&repo, &id, &d).await.expect("commit"), 6);
        assert_eq!(read_all(&*store, &repo, &d, RangeSpec::Full).await, data);
    }
    let id = store.upload_create(&repo, Algorithm::Sha512).await.expect("create");
    store.upload_write(&repo, &id, 0, bytes_stream(Bytes::from_static(b"xyz"))).await.expect("w");
    let wrong = Digest::of(Algorithm::Sha512, b"xyZ");
    let r = store.upload_commit(&repo, &id, &wrong).await;
    assert!(matches!(r, Err(StoreError::DigestMismatch { .. })), "{r:?}");
    assert!(matches!(store.blob_size(&repo, &wrong).await, Err(StoreError::BlobUnknown(_))));
}

/// One manifest push sets several tags (`?tag=`), sha512 digests included.
pub async fn one_manifest_many_tags(store: Arc<dyn Store>) {
    let repo = name("contract/many-tags");
    let bytes = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#);
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        let digest = Digest::of(algorithm, &bytes);
        let tags = ["1.2.3", "1.2", "1", algorithm.as_str()];
        let put = ManifestPut {
            digest: digest.clone(),
            media_type: OCI_MANIFEST.into(),
            bytes: bytes.clone(),
            tags: tags.iter().map(|t| t.parse().expect("tag")).collect(),
            referrer: None,
        };
        store.manifest_put(&repo, put).await.expect("put");
        for t in tags {
            let m = store.manifest_get(&repo, &Reference::Tag(t.parse().expect("tag"))).await.expect("get");
            assert_eq!(m.digest, digest, "tag {t}");
            assert_eq!(m.bytes, bytes);
        }
        assert!(store.manifest_exists(&repo, &digest).await.expect("exists"));
    }
    let listed = store.tags(&repo).await.expect("tags");
    assert_eq!(listed, ["1", "1.2", "1.2.3", "sha256", "sha512"]);
}

/// Two clients pushing the same blob at once both succeed, and the blob is whole.
pub async fn same_blob_twice_concurrently(store: Arc<dyn Store>) {
    let repo = name("contract/race");
    let data = Bytes::from(vec![7u8; 256 * 1024]);
    let mut tasks = vec![];
    for _ in 0..4 {
        let (store, repo, data) = (store.clone(), repo.clone(), data.clone());
        tasks.push(async move {
            let id = store.upload_create(&repo, Algorithm::Sha256).await.expect("create");
            store.upload_write(&repo, &id, 0, bytes_stream(data.clone())).await.expect("w");
            store.upload_commit(&repo, &id, &Digest::sha256_of(&data)).await.expect("commit")
        });
    }
    for n in futures_util::future::join_all(tasks).await {
        assert_eq!(n, data.len() as u64);
    }
    let d = Digest::sha256_of(&data);
    assert_eq!(read_all(&*store, &repo, &d, RangeSpec::Full).await, data);
}

/// Manifests read back by tag and by digest, with their media type.
pub async fn manifests_by_tag_and_digest(store: Arc<dyn Store>) {
    let repo = name("contract/manifests");
    let d = put_manifest(&*store, &repo, Some("v1"), b"{}").await;
    let by_tag =
        store.manifest_get(&repo, &Reference::Tag("v1".parse().expect("tag"))).await.expect("by tag");
    let by_digest = store.manifest_get(&repo, &Reference::Digest(d.clone())).await.expect("by digest");
    assert_eq!(by_tag.digest, d);
    assert_eq!(by_tag.bytes, by_digest.bytes);
    assert_eq!(by_tag.media_type, OCI_MANIFEST);
    assert!(store.manifest_exists(&repo, &d).await.expect("exists"));
    assert!(!store.manifest_exists(&name("contract/elsewhere"), &d).await.expect("exists"));
    let missing = store.manifest_get(&repo, &Reference::Tag("nope".parse().expect("tag"))).await;
    assert!(matches!(missing, Err(StoreError::ManifestUnknown(_))));
    assert_eq!(store.tags(&repo).await.expect("tags"), vec!["v1".to_string()]);
}

/// Moving a tag replaces it whole; racing moves leave one of the values.
pub async fn tag_moves_atomically(store: Arc<dyn Store>) {
    let repo = name("contract/tagmove");
    let d1 = put_manifest(&*store, &repo, Some("latest"), b"1").await;
    let d2 = put_manifest(&*store, &repo, Some("latest"), b"2").await;
    let got = store.manifest_get(&repo, &Reference::Tag("latest".parse().expect("tag"))).await.expect("get");
    assert_eq!(got.digest, d2);
    let mut tasks = vec![];
    for i in 0..8u8 {
        let store = store.clone();
        let repo = repo.clone();
        tasks.push(async move { put_manifest(&*store, &repo, Some("race"), &[b'a' + i]).await });
    }
    let pushed = futures_util::future::join_all(tasks).await;
    let got = store.manifest_get(&repo, &Reference::Tag("race".parse().expect("tag"))).await.expect("get");
    assert!(pushed.contains(&got.digest));
    assert!(store.manifest_exists(&repo, &d1).await.expect("old revision kept"));
}

/// Deleting a tag leaves the manifest reachable by digest.
pub async fn tag_delete_keeps_manifest(store: Arc<dyn Store>) {
    let repo = name("contract/tagdel");
    let d = put_manifest(&*store, &repo, Some("a"), b"x").await;
    store
        .manifest_put(
            &repo,
            ManifestPut {
                digest: d.clone(),
                media_type: OCI_MANIFEST.into(),
                bytes: store.manifest_get(&repo, &Reference::Digest(d.clone())).await.expect("get").bytes,
                tags: vec!["b".parse().expect("tag")],
                referrer: None,
            },
        )
        .await
        .expect("second tag");
    store.tag_delete(&repo, &"a".parse().expect("tag")).await.expect("delete");
    assert_eq!(store.tags(&repo).await.expect("tags"), vec!["b".to_string()]);
    assert!(store.manifest_get(&repo, &Reference::Digest(d)).await.is_ok());
    let again = store.tag_delete(&repo, &"a".parse().expect("tag")).await;
    assert!(matches!(again, Err(StoreError::ManifestUnknown(_))));
}

/// Deleting a manifest removes the tags that pointed at it.
pub async fn manifest_delete_removes_tags(store: Arc<dyn Store>) {
    let repo = name("contract/mdel");
    let d = put_manifest(&*store, &repo, Some("gone"), b"y").await;
    let keep = put_manifest(&*store, &repo, Some("kept"), b"z").await;
    store.manifest_delete(&repo, &d).await.expect("delete");
    assert!(matches!(
        store.manifest_get(&repo, &Reference::Digest(d.clone())).await,
        Err(StoreError::ManifestUnknown(_))
    ));
    assert!(matches!(
        store.manifest_get(&repo, &Reference::Tag("gone".parse().expect("tag"))).await,
        Err(StoreError::ManifestUnknown(_))
    ));
    assert_eq!(store.tags(&repo).await.expect("tags"), vec!["kept".to_string()]);
    assert!(store.manifest_exists(&repo, &keep).await.expect("exists"));
    assert!(matches!(store.manifest_delete(&repo, &d).await, Err(StoreError::ManifestUnknown(_))));
}

/// Manifests with a subject are listed as its referrers until deleted.
pub async fn referrers_index(store: Arc<dyn Store>) {
    let repo = name("contract/referrers");
    let subject = put_manifest(&*store, &repo, Some("img"), b"s").await;
    let config = push(&*store, &repo, b"{}").await;
    let bytes = manifest_bytes(&config, Some(&subject));
    let digest = Digest::sha256_of(&bytes);
    let desc = Descriptor {
        media_type: OCI_MANIFEST.into(),
        digest: digest.clone(),
        size: bytes.len() as u64,
        artifact_type: Some("application/x-sig".into()),
        annotations: None,
    };
    assert!(store.referrers(&repo, &subject).await.expect("none yet").is_empty());
    store
        .manifest_put(
            &repo,
            ManifestPut {
                digest: digest.clone(),
                media_type: OCI_MANIFEST.into(),
                bytes,
                tags: vec![],
                referrer: Some((subject.clone(), desc.clone())),
            },
        )
        .await
        .expect("put");
    assert_eq!(store.referrers(&repo, &subject).await.expect("list"), vec![desc]);
    assert!(store.referrers(&name("contract/other"), &subject).await.expect("other repo").is_empty());
    store.manifest_delete(&repo, &digest).await.expect("delete");
    assert!(store.referrers(&repo, &subject).await.expect("after delete").is_empty());
}

/// The catalog pages in lexical order.
pub async fn catalog_pages_in_order(store: Arc<dyn Store>) {
    for r in ["cat/b", "cat/a", "cat-x", "cat/a/sub", "cat/c"] {
        put_manifest(&*store, &name(r), Some("t"), r.as_bytes()).await;
    }
    let all = store.catalog(None, 100).await.expect("catalog");
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    assert_eq!(all, ["cat-x", "cat/a", "cat/a/sub", "cat/b", "cat/c"]);
    assert_eq!(store.catalog(None, 2).await.expect("page"), ["cat-x", "cat/a"]);
    assert_eq!(store.catalog(Some("cat/a"), 2).await.expect("page"), ["cat/a/sub", "cat/b"]);
    assert!(store.catalog(Some("cat/c"), 2).await.expect("end").is_empty());
}

/// An unknown repository.
pub async fn unknown_repository(store: Arc<dyn Store>) {
    let repo = name("contract/never");
    assert!(matches!(store.tags(&repo).await, Err(StoreError::NameUnknown(_))));
    assert!(store.referrers(&repo, &Digest::sha256_of(b"x")).await.expect("empty").is_empty());
    assert!(matches!(
        store.manifest_get(&repo, &Reference::Tag("latest".parse().expect("tag"))).await,
        Err(StoreError::ManifestUnknown(_))
    ));
}

/// A monolithic put verifies its bytes before anything is visible.
pub async fn blob_put_verifies(store: Arc<dyn Store>) {
    let repo = name("contract/put");
    let d = Digest::sha256_of(b"whole");
    assert_eq!(store.blob_put(&repo, &d, bytes_stream(Bytes::from_static(b"whole"))).await.expect("put"), 5);
    assert_eq!(read_all(&*store, &repo, &d, RangeSpec::Full).await, b"whole");
    let lie = Digest::sha256_of(b"claimed");
    let r = store.blob_put(&repo, &lie, bytes_stream(Bytes::from_static(b"other"))).await;
    assert!(matches!(r, Err(StoreError::DigestMismatch { .. })), "{r:?}");
    assert!(matches!(store.blob_size(&repo, &lie).await, Err(StoreError::BlobUnknown(_))));
    // pushing a blob that exists elsewhere still needs its bytes: a wrong body links nothing
    let other = name("contract/put-other");
    let r = store.blob_put(&other, &d, bytes_stream(Bytes::from_static(b"not whole"))).await;
    assert!(matches!(r, Err(StoreError::DigestMismatch { .. })), "{r:?}");
    assert!(matches!(store.blob_size(&other, &d).await, Err(StoreError::BlobUnknown(_))));
    assert_eq!(store.blob_put(&other, &d, bytes_stream(Bytes::from_static(b"whole"))).await.expect("put"), 5);
    assert_eq!(store.blob_size(&other, &d).await.expect("linked"), 5);
}

/// A blob of several MiB written in uneven chunks, some tiny, across several writes: the
/// backends that cut uploads into parts (object storage) must put them back in order.
pub async fn large_blob_in_many_chunks(store: Arc<dyn Store>) {
    let repo = name("contract/large");
    let data: Vec<u8> =
        (0..(13 * 1024 * 1024 + 17) as u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let id = store.upload_create(&repo, Algorithm::Sha256).await.expect("create");
    let mut offset = 0usize;
    let sizes = [3usize, 100, 6 * 1024 * 1024, 1, 5 * 1024 * 1024 + 7, 4096];
    for (i, &n) in sizes.iter().cycle().enumerate() {
        if offset >= data.len() {
            break;
        }
        let end = (offset + n).min(data.len());
        // split each write into a few stream items, as a network body arrives
        let part = Bytes::copy_from_slice(&data[offset..end]);
        let mid = part.len() / 2;
        let items: Vec<Result<Bytes, BoxError>> = vec![Ok(part.slice(..mid)), Ok(part.slice(mid..))];
        let w = store.upload_write(&repo, &id, offset as u64, Box::pin(stream::iter(items))).await;
        assert_eq!(w.expect("write") as usize, end, "write {i}");
        offset = end;
    }
    let d = Digest::sha256_of(&data);
    assert_eq!(store.upload_commit(&repo, &id, &d).await.expect("commit") as usize, data.len());
    assert!(read_all(&*store, &repo, &d, RangeSpec::Full).await == data);
    let tail = read_all(&*store, &repo, &d, RangeSpec::parse("bytes=-10").expect("range")).await;
    assert_eq!(tail, &data[data.len() - 10..]);
    let big = Digest::sha256_of(&data[..11 * 1024 * 1024]);
    let n =
        store.blob_put(&repo, &big, bytes_stream(Bytes::copy_from_slice(&data[..11 * 1024 * 1024]))).await;
    assert_eq!(n.expect("monolithic large") as usize, 11 * 1024 * 1024);
}

/// Upload purging ends the sessions started before the cutoff, and only those.
pub async fn purge_ends_old_sessions(store: Arc<dyn Store>) {
    use std::time::{Duration, SystemTime};
    let repo = name("contract/purge");
    let old = store.upload_create(&repo, Algorithm::Sha256).await.expect("create");
    store.upload_write(&repo, &old, 0, bytes_stream(Bytes::from_static(b"stale"))).await.expect("w");
    let later = SystemTime::now() + Duration::from_secs(3600);
    let n = store.purge_uploads(later, true).await.expect("dry run");
    assert!(n >= 1, "dry run counts {n}");
    assert_eq!(store.upload_size(&repo, &old).await.expect("dry run keeps it"), 5);
    let earlier = SystemTime::now() - Duration::from_secs(3600);
    store.purge_uploads(earlier, false).await.expect("purge none");
    assert_eq!(store.upload_size(&repo, &old).await.expect("young session kept"), 5);
    assert!(store.purge_uploads(later, false).await.expect("purge") >= 1);
    assert!(matches!(store.upload_size(&repo, &old).await, Err(StoreError::UploadUnknown)));
    // committed blobs are not touched
    let d = push(&*store, &repo, b"kept").await;
    store.purge_uploads(later, false).await.expect("purge");
    assert_eq!(store.blob_size(&repo, &d).await.expect("blob kept"), 4);
}

/// A repository whose every tag and manifest was deleted, but that still links blobs, lists no
/// tags rather than being unknown (the conformance suite's content-management flow), and is no
/// longer in the catalog: at once, on every backend (a bucket that lists emptied folders for a
/// while included).
pub async fn emptied_repository_lists_no_tags(store: Arc<dyn Store>) {
    let repo = name("contract/emptied");
    let kept = name("contract/kept");
    put_manifest(&*store, &kept, Some("t"), b"k").await;
    let d = put_manifest(&*store, &repo, Some("only"), b"e").await;
    let untagged = put_manifest(&*store, &repo, None, b"u").await;
    assert_eq!(store.catalog(None, 100).await.expect("catalog"), ["contract/emptied", "contract/kept"]);
    store.tag_delete(&repo, &"only".parse().expect("tag")).await.expect("tag delete");
    store.manifest_delete(&repo, &d).await.expect("manifest delete");
    assert_eq!(store.tags(&repo).await.expect("still known"), Vec::<String>::new());
    assert_eq!(
        store.catalog(None, 100).await.expect("catalog"),
        ["contract/emptied", "contract/kept"],
        "an untagged manifest is still a manifest"
    );
    store.manifest_delete(&repo, &untagged).await.expect("manifest delete");
    assert_eq!(store.catalog(None, 100).await.expect("catalog"), ["contract/kept"]);
    let folders = store.repository_folders(None, 100).await.expect("folders");
    assert!(folders.contains(&"contract/emptied".to_string()), "its links are still to collect: {folders:?}");
    assert_eq!(store.catalog(Some("contract/a"), 1).await.expect("page"), ["contract/kept"]);
    // Pushed again, it is back.
    put_manifest(&*store, &repo, Some("again"), b"a").await;
    assert_eq!(store.catalog(None, 100).await.expect("catalog"), ["contract/emptied", "contract/kept"]);
}

/// A secret is made once: later and concurrent callers get the first writer's bytes, and it
/// is no content (the catalog stays empty). Names outside the registry's own are refused.
pub async fn secrets_first_writer_wins(store: Arc<dyn Store>) {
    let first = store.secret("auth/key.pem", Bytes::from_static(b"first")).await.expect("made");
    assert_eq!(&first[..], b"first");
    let again = store.secret("auth/key.pem", Bytes::from_static(b"second")).await.expect("read");
    assert_eq!(&again[..], b"first", "the first writer wins");
    let racers = (0..4u8).map(|i| {
        let store = store.clone();
        async move { store.secret("auth/raced", Bytes::from(vec![i; 64])).await.expect("raced") }
    });
    let got = futures_util::future::join_all(racers).await;
    assert!(got.windows(2).all(|w| w[0] == w[1]), "every racer sees the same bytes");
    for bad in ["../escape", "/abs", "a//b", "docker/registry/v2/x", "a/./b", ""] {
        assert!(store.secret(bad, Bytes::new()).await.is_err(), "{bad:?}");
    }
    assert!(store.catalog(None, 100).await.expect("catalog").is_empty());
}

/// What garbage collection reads: every blob with its size and a recent time, a
/// repository's revisions and links; an unknown repository is `NameUnknown`.
pub async fn gc_lists_what_is_stored(store: Arc<dyn Store>) {
    let repo = name("contract/gc-list");
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    let layer = push(&*store, &repo, b"gc layer").await;
    let m = put_manifest(&*store, &repo, Some("t"), b"gc config").await;
    let blobs = store.blob_list().await.expect("blob list");
    let got = |d: &Digest| blobs.iter().find(|b| &b.digest == d).cloned();
    let l = got(&layer).expect("the layer is listed");
    assert_eq!(l.size, 8);
    assert!(l.modified > before, "{:?}", l.modified);
    assert!(got(&m).is_some(), "manifests are blobs too");
    let revisions = store.revision_list(&repo).await.expect("revisions");
    assert_eq!(revisions.iter().map(|r| r.digest.clone()).collect::<Vec<_>>(), vec![m.clone()]);
    assert!(revisions[0].modified > before);
    let layers = store.layer_list(&repo).await.expect("layers");
    assert!(layers.iter().any(|l| l.digest == layer), "{layers:?}");
    let unknown = name("contract/gc-nothing-here");
    assert!(matches!(store.revision_list(&unknown).await, Err(StoreError::NameUnknown(_))));
    assert!(matches!(store.layer_list(&unknown).await, Err(StoreError::NameUnknown(_))));
}

/// A blob in quarantine is gone for every reader, upload and mount, and listed apart; it comes
/// back on `restore` (a new copy written meanwhile stays), or is deleted for good.
pub async fn quarantine_hides_and_gives_back(store: Arc<dyn Store>) {
    let repo = name("contract/gc-q");
    let other = name("contract/gc-q-other");
    let d = push(&*store, &repo, b"held").await;
    assert!(store.blob_quarantine(&d).await.expect("quarantine"));
    assert!(matches!(store.blob_size(&repo, &d).await, Err(StoreError::BlobUnknown(_))));
    assert!(matches!(store.blob_link(&other, &d).await, Err(StoreError::BlobUnknown(_))));
    assert!(!store.blob_list().await.expect("list").iter().any(|b| b.digest == d));
    assert_eq!(store.quarantine_list().await.expect("quarantine list"), vec![d.clone()]);
    assert!(!store.blob_quarantine(&d).await.expect("twice"), "nothing left to move");
    store.blob_release(&d, true).await.expect("restore");
    assert_eq!(read_all(&*store, &repo, &d, RangeSpec::Full).await, b"held");
    assert!(store.quarantine_list().await.expect("list").is_empty());
    // deleted for good
    assert!(store.blob_quarantine(&d).await.expect("quarantine"));
    store.blob_release(&d, false).await.expect("delete");
    assert!(matches!(store.blob_size(&repo, &d).await, Err(StoreError::BlobUnknown(_))));
    assert!(store.quarantine_list().await.expect("list").is_empty());
    store.blob_release(&d, true).await.expect("nothing held is no error");
    // pushed again while held: the new copy stays
    let d = push(&*store, &repo, b"again").await;
    assert!(store.blob_quarantine(&d).await.expect("quarantine"));
    assert_eq!(push(&*store, &repo, b"again").await, d);
    store.blob_release(&d, false).await.expect("release");
    assert_eq!(read_all(&*store, &repo, &d, RangeSpec::Full).await, b"again");
    let absent = Digest::sha256_of(b"never stored");
    assert!(!store.blob_quarantine(&absent).await.expect("absent"));
}
