//! The distribution-spec's `main` branch (the v1.2 draft) over real TCP: several tags in one
//! manifest push (end-7b), `digest-algorithm` on upload sessions (end-4c), `Warning` headers,
//! and sparse indexes (Distribution 3's `validation.manifests.indexes`).

use bytes::Bytes;
use donjon_test_support::server::*;
use sha2::Digest as _;

fn sha512(data: &[u8]) -> String {
    let h = sha2::Sha512::digest(data);
    format!("sha512:{}", h.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// An image manifest over a config and a layer pushed into `repo`.
async fn image(s: &TestServer, repo: &str, salt: &str) -> Vec<u8> {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","salt":"{salt}"}}"#);
    let layer = format!("layer-{salt}");
    let cd = s.push_blob(repo, config.as_bytes()).await;
    let ld = s.push_blob(repo, layer.as_bytes()).await;
    image_manifest(&cd, config.len(), &ld, layer.len(), None)
}

#[tokio::test]
async fn one_push_sets_every_tag_parameter() {
    let s = TestServer::start().await;
    let m = image(&s, "multi", "a").await;
    let d = digest(&m);
    let r =
        s.push_manifest("multi", &format!("{d}?tag=1.2.3&tag=1.2&tag=1&tag=latest"), OCI_MANIFEST, &m).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.header("docker-content-digest"), d);
    let tags: Vec<&str> = r.headers.get_all("oci-tag").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(tags, ["1.2.3", "1.2", "1", "latest"], "one OCI-Tag per accepted tag");
    for t in ["1.2.3", "1.2", "1", "latest"] {
        let g = s.get(&format!("/v2/multi/manifests/{t}")).await;
        assert_eq!(g.status, 200, "tag {t}");
        assert_eq!(g.header("docker-content-digest"), d);
        assert_eq!(&g.body[..], &m[..]);
    }
    let list = s.get("/v2/multi/tags/list").await.json();
    assert_eq!(list["tags"], serde_json::json!(["1", "1.2", "1.2.3", "latest"]));
}

#[tokio::test]
async fn one_invalid_tag_refuses_the_whole_push() {
    let s = TestServer::start().await;
    let m = image(&s, "multi", "b").await;
    let d = digest(&m);
    let r = s.push_manifest("multi", &format!("{d}?tag=good&tag=-bad"), OCI_MANIFEST, &m).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "TAG_INVALID");
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("-bad"), "{:?}", r.body);
    assert_eq!(s.get("/v2/multi/manifests/good").await.status, 404, "no tag was set");
    assert_eq!(s.get(&format!("/v2/multi/manifests/{d}")).await.status, 404, "nor the manifest stored");
    // Too many tags: 414, as the spec allows.
    let many: String = (0..101).map(|i| format!("tag=t{i}&")).collect();
    let r = s.push_manifest("multi", &format!("{d}?{many}"), OCI_MANIFEST, &m).await;
    assert_eq!(r.status, 414);
}

#[tokio::test]
async fn a_sha512_manifest_with_tags_resolves_to_its_sha512_digest() {
    let s = TestServer::start().await;
    let m = image(&s, "five12", "c").await;
    let d = sha512(&m);
    let r = s.push_manifest("five12", &format!("{d}?tag=v1&tag=stable"), OCI_MANIFEST, &m).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.header("docker-content-digest"), d);
    assert_eq!(r.header("location"), format!("/v2/five12/manifests/{d}"));
    for t in ["v1", "stable"] {
        for method in ["GET", "HEAD"] {
            let g = s.req(method, &format!("/v2/five12/manifests/{t}"), &[], Bytes::new()).await;
            assert_eq!(g.status, 200, "{method} {t}");
            assert_eq!(g.header("docker-content-digest"), d, "{method} {t}: the digest as pushed");
        }
    }
    assert_eq!(s.get(&format!("/v2/five12/manifests/{d}")).await.status, 200);
}

#[tokio::test]
async fn digest_algorithm_sha512_sessions_monolithic_chunked_and_streamed() {
    let s = TestServer::start().await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let d = sha512(&data);
    // Chunked: two PATCHes with Content-Range, then PUT.
    let r = s.req("POST", "/v2/alg/blobs/uploads/?digest-algorithm=sha512", &[], Bytes::new()).await;
    assert_eq!(r.status, 202);
    let loc = r.header("location").to_string();
    let half = data.len() / 2;
    let range = format!("0-{}", half - 1);
    let r = s.req("PATCH", &loc, &[("content-range", &range)], Bytes::copy_from_slice(&data[..half])).await;
    assert_eq!(r.status, 202);
    let range = format!("{half}-{}", data.len() - 1);
    let r = s.req("PATCH", &loc, &[("content-range", &range)], Bytes::copy_from_slice(&data[half..])).await;
    assert_eq!(r.status, 202);
    let r = s.req("PUT", &format!("{loc}?digest={d}"), &[], Bytes::new()).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.header("docker-content-digest"), d);
    let g = s.get(&format!("/v2/alg/blobs/{d}")).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.header("docker-content-digest"), d);
    assert_eq!(&g.body[..], &data[..]);
    // Streamed: one PATCH without Content-Range, then PUT with the last bytes.
    let data2 = [&data[..], b"tail"].concat();
    let d2 = sha512(&data2);
    let r = s.req("POST", "/v2/alg/blobs/uploads/?digest-algorithm=sha512", &[], Bytes::new()).await;
    let loc = r.header("location").to_string();
    let r = s.req("PATCH", &loc, &[], Bytes::copy_from_slice(&data)).await;
    assert_eq!(r.status, 202);
    let r = s.req("PUT", &format!("{loc}?digest={d2}"), &[], Bytes::from_static(b"tail")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(&s.get(&format!("/v2/alg/blobs/{d2}")).await.body[..], &data2[..]);
    // Monolithic: POST ?digest-algorithm=sha512&digest=sha512:…
    let d3 = sha512(b"mono");
    let r = s
        .req(
            "POST",
            &format!("/v2/alg/blobs/uploads/?digest-algorithm=sha512&digest={d3}"),
            &[],
            &b"mono"[..],
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(&s.get(&format!("/v2/alg/blobs/{d3}")).await.body[..], b"mono");
    // A wrong sha512 stores nothing.
    let r = s.req("POST", "/v2/alg/blobs/uploads/?digest-algorithm=sha512", &[], Bytes::new()).await;
    let loc = r.header("location").to_string();
    let wrong = sha512(b"other");
    let r = s.req("PUT", &format!("{loc}?digest={wrong}"), &[], Bytes::from_static(b"this")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "DIGEST_INVALID");
    assert_eq!(s.get(&format!("/v2/alg/blobs/{wrong}")).await.status, 404);
}

#[tokio::test]
async fn unknown_digest_algorithms_are_refused() {
    let s = TestServer::start().await;
    for q in ["digest-algorithm=md5", "digest-algorithm=", "digest-algorithm=SHA256"] {
        let r = s.req("POST", &format!("/v2/alg/blobs/uploads/?{q}"), &[], Bytes::new()).await;
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.code(), "DIGEST_INVALID", "{q}");
        assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("sha512"), "names what works");
    }
    // An algorithm that contradicts the digest given with it.
    let d = digest(b"x");
    let r = s
        .req("POST", &format!("/v2/alg/blobs/uploads/?digest-algorithm=sha512&digest={d}"), &[], &b"x"[..])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(s.get(&format!("/v2/alg/blobs/{d}")).await.status, 404);
}

#[tokio::test]
async fn a_schema1_manifest_is_refused_by_name_with_a_warning() {
    let s = TestServer::start().await;
    let m =
        br#"{"schemaVersion":1,"name":"old","tag":"v1","architecture":"amd64","fsLayers":[],"history":[]}"#;
    for ct in [
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/json",
    ] {
        let r = s.push_manifest("old", "v1", ct, m).await;
        assert_eq!(r.status, 400, "{ct}");
        assert_eq!(r.code(), "MANIFEST_INVALID");
        let msg = r.json()["errors"][0]["message"].as_str().unwrap().to_string();
        assert!(
            msg.contains("application/vnd.docker.distribution.manifest.v1"),
            "names the media type: {msg}"
        );
        let w = r.header("warning");
        assert!(w.starts_with("299 - \"") && w.ends_with('"') && w.contains("schema 1"), "{w}");
    }
}

#[tokio::test]
async fn a_session_start_names_the_backends_minimum_chunk() {
    let s = TestServer::start().await;
    let r = s.req("POST", "/v2/chunks/blobs/uploads/", &[], Bytes::new()).await;
    assert_eq!(r.status, 202);
    if std::env::var("DONJON_TEST_STORE").as_deref() == Ok("s3") {
        assert_eq!(r.header("oci-chunk-min-length"), "5242880", "S3's smallest multipart part");
    } else {
        assert!(r.headers.get("oci-chunk-min-length").is_none(), "the filesystem takes any chunk");
    }
}

fn index_of(children: &[(&[u8], &str)]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = children
        .iter()
        .map(|(m, platform)| {
            let mut parts = platform.split('/');
            let (os, arch) = (parts.next().unwrap(), parts.next().unwrap());
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest(m), "size": m.len(),
                "platform": {"os": os, "architecture": arch}})
        })
        .collect();
    serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
    )
    .unwrap()
}

#[tokio::test]
async fn complete_indexes_are_the_default() {
    let s = TestServer::start().await;
    let amd = image(&s, "sparse", "amd").await;
    let idx = index_of(&[(&amd, "linux/amd64")]);
    let r = s.push_manifest("sparse", "v1", OCI_INDEX, &idx).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn a_sparse_index_is_served_and_its_children_arrive_later() {
    let s = TestServer::start_with(|b| b.index_children(donjon::IndexChildren::None)).await;
    let amd = image(&s, "sparse", "amd").await;
    let arm = image(&s, "sparse", "arm").await;
    let idx = index_of(&[(&amd, "linux/amd64"), (&arm, "linux/arm64")]);
    let r = s.push_manifest("sparse", "v1", OCI_INDEX, &idx).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let g = s.get("/v2/sparse/manifests/v1").await;
    assert_eq!(g.status, 200);
    assert_eq!(&g.body[..], &idx[..]);
    let child = s.get(&format!("/v2/sparse/manifests/{}", digest(&amd))).await;
    assert_eq!(child.status, 404, "an absent child answers 404");
    assert_eq!(child.code(), "MANIFEST_UNKNOWN");
    // The child arrives; the index is unchanged.
    assert_eq!(s.push_manifest("sparse", &digest(&amd), OCI_MANIFEST, &amd).await.status, 201);
    assert_eq!(s.get(&format!("/v2/sparse/manifests/{}", digest(&amd))).await.status, 200);
    assert_eq!(s.get(&format!("/v2/sparse/manifests/{}", digest(&arm))).await.status, 404);
    // A referrer of the sparse index, then its deletion.
    let cfg = s.push_blob("sparse", b"{}").await;
    let sig = image_manifest(&cfg, 2, &cfg, 2, Some((&digest(&idx), idx.len())));
    let r = s.push_manifest("sparse", &digest(&sig), OCI_MANIFEST, &sig).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let refs = s.get(&format!("/v2/sparse/referrers/{}", digest(&idx))).await.json();
    assert_eq!(refs["manifests"][0]["digest"], digest(&sig));
    let r = s.req("DELETE", &format!("/v2/sparse/manifests/{}", digest(&idx)), &[], Bytes::new()).await;
    assert_eq!(r.status, 202);
    assert_eq!(s.get("/v2/sparse/manifests/v1").await.status, 404);
    let r = s.req("DELETE", &format!("/v2/sparse/manifests/{}", digest(&arm)), &[], Bytes::new()).await;
    assert_eq!(r.status, 404, "the never-pushed child is not there to delete");
    assert_eq!(s.get(&format!("/v2/sparse/manifests/{}", digest(&amd))).await.status, 200);
}

/// The spec's sparse data set: an image manifest naming a layer that was never pushed. Refused
/// with `MANIFEST_BLOB_UNKNOWN`, as Distribution 3 refuses it, even with index children not
/// required (`validation: {disabled: true}`); served like any other with
/// `accept_missing_blobs`, its absent layer a 404.
#[tokio::test]
async fn an_image_with_a_layer_never_pushed_needs_accept_missing_blobs() {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let absent = digest(b"a layer pulled from elsewhere");
    let strict = TestServer::start_with(|b| b.index_children(donjon::IndexChildren::None)).await;
    let cd = strict.push_blob("sparse", config).await;
    let m = image_manifest(&cd, config.len(), &absent, 29, None);
    let r = strict.push_manifest("sparse", &digest(&m), OCI_MANIFEST, &m).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "MANIFEST_BLOB_UNKNOWN".into()));
    assert_eq!(r.json()["errors"][0]["detail"]["digest"], absent);

    let s = TestServer::start_with(|b| b.accept_missing_blobs(true)).await;
    let cd = s.push_blob("sparse", config).await;
    assert_eq!(cd, digest(config));
    let r = s.push_manifest("sparse", &digest(&m), OCI_MANIFEST, &m).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(!r.header("location").is_empty(), "a Location, which the suite follows");
    let r = s.push_manifest("sparse", "sparse-image", OCI_MANIFEST, &m).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let tags = s.get("/v2/sparse/tags/list").await.json();
    assert_eq!(tags["tags"], serde_json::json!(["sparse-image"]));
    for reference in ["sparse-image".to_string(), digest(&m)] {
        let g = s.get(&format!("/v2/sparse/manifests/{reference}")).await;
        assert_eq!(g.status, 200, "{reference}");
        assert_eq!(&g.body[..], &m[..]);
        assert_eq!(g.header("content-type"), OCI_MANIFEST);
        let h = s.req("HEAD", &format!("/v2/sparse/manifests/{reference}"), &[], Bytes::new()).await;
        assert_eq!(h.status, 200, "HEAD {reference}");
    }
    let b = s.get(&format!("/v2/sparse/blobs/{absent}")).await;
    assert_eq!((b.status.as_u16(), b.code()), (404, "BLOB_UNKNOWN".into()));
    // A blob that is there must still be the size its descriptor claims.
    let wrong = image_manifest(&cd, config.len() + 1, &absent, 29, None);
    let r = s.push_manifest("sparse", "wrong", OCI_MANIFEST, &wrong).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "MANIFEST_INVALID".into()), "{:?}", r.body);
}

#[tokio::test]
async fn a_platform_list_requires_only_those_children() {
    let want = vec!["linux/amd64".parse().unwrap()];
    let s = TestServer::start_with(move |b| b.index_children(donjon::IndexChildren::Platforms(want.clone())))
        .await;
    let amd = image(&s, "plat", "amd").await;
    let arm = image(&s, "plat", "arm").await;
    let idx = index_of(&[(&amd, "linux/amd64"), (&arm, "linux/arm64")]);
    let r = s.push_manifest("plat", "v1", OCI_INDEX, &idx).await;
    assert_eq!(r.status, 400, "linux/amd64 is required and absent");
    assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(r.json()["errors"][0]["detail"]["digest"], digest(&amd));
    assert_eq!(s.push_manifest("plat", &digest(&amd), OCI_MANIFEST, &amd).await.status, 201);
    let r = s.push_manifest("plat", "v1", OCI_INDEX, &idx).await;
    assert_eq!(r.status, 201, "linux/arm64 may be absent: {:?}", r.body);
}
