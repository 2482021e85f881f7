//! The OCI distribution API over real TCP, one test per requirement of the spec (and of the
//! conformance suite's reading of it).

use bytes::Bytes;
use donjon_test_support::server::*;

const DUMMY: &str = "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

#[tokio::test]
async fn base_endpoint_answers_with_api_version() {
    let s = TestServer::start().await;
    let r = s.get("/v2/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");
    let r = s.get("/v2").await;
    assert_eq!(r.status, 200);
    let r = s.get("/elsewhere").await;
    assert_eq!(r.status, 404);
    assert_eq!(s.get("/healthz").await.status, 200);
    assert_eq!(s.get("/readiness").await.status, 200);
}

#[tokio::test]
async fn blob_get_head_and_ranges() {
    let s = TestServer::start().await;
    let d = s.push_blob("r/blobs", b"0123456789").await;
    let r = s.get(&format!("/v2/r/blobs/blobs/{d}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"0123456789");
    assert_eq!(r.header("content-length"), "10");
    assert_eq!(r.header("docker-content-digest"), d);
    assert_eq!(r.header("etag"), format!("\"{d}\""));
    assert_eq!(r.header("accept-ranges"), "bytes");
    let h = s.req("HEAD", &format!("/v2/r/blobs/blobs/{d}"), &[], Bytes::new()).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), "10");
    assert_eq!(h.header("docker-content-digest"), d);
    assert!(h.body.is_empty());
    let p = s.req("GET", &format!("/v2/r/blobs/blobs/{d}"), &[("range", "bytes=2-5")], Bytes::new()).await;
    assert_eq!(p.status, 206);
    assert_eq!(&p.body[..], b"2345");
    assert_eq!(p.header("content-range"), "bytes 2-5/10");
    let p = s.req("GET", &format!("/v2/r/blobs/blobs/{d}"), &[("range", "bytes=-3")], Bytes::new()).await;
    assert_eq!((p.status.as_u16(), &p.body[..]), (206, &b"789"[..]));
    let bad = s.req("GET", &format!("/v2/r/blobs/blobs/{d}"), &[("range", "bytes=10-")], Bytes::new()).await;
    assert_eq!(bad.status, 416);
    assert_eq!(bad.header("content-range"), "bytes */10");
    let inm = s
        .req(
            "GET",
            &format!("/v2/r/blobs/blobs/{d}"),
            &[("if-none-match", &format!("\"{d}\""))],
            Bytes::new(),
        )
        .await;
    assert_eq!(inm.status, 304);
    // unknown: 404 BLOB_UNKNOWN with the OCI body, for GET and HEAD
    let r = s.get(&format!("/v2/r/blobs/blobs/{DUMMY}")).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "BLOB_UNKNOWN"));
    let r = s.req("HEAD", &format!("/v2/r/blobs/blobs/{DUMMY}"), &[], Bytes::new()).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn monolithic_upload_in_post_and_in_put() {
    let s = TestServer::start().await;
    let data = b"monolithic";
    let d = digest(data);
    let r = s
        .req(
            "POST",
            &format!("/v2/m/blobs/uploads/?digest={d}"),
            &[("content-type", "application/octet-stream")],
            &data[..],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), format!("/v2/m/blobs/{d}"));
    assert_eq!(r.header("docker-content-digest"), d);
    let post = s.req("POST", "/v2/m/blobs/uploads/", &[], Bytes::new()).await;
    assert_eq!(post.status, 202);
    let loc = post.header("location").to_string();
    assert!(loc.starts_with("/v2/m/blobs/uploads/"), "{loc}");
    assert_eq!(post.header("range"), "0-0");
    assert!(!post.header("docker-upload-uuid").is_empty());
    let put = s
        .req(
            "PUT",
            &format!("{loc}?digest={}", digest(b"other")),
            &[("content-type", "application/octet-stream")],
            &b"other"[..],
        )
        .await;
    assert_eq!(put.status, 201);
    assert_eq!(s.get(&format!("/v2/m/blobs/{}", digest(b"other"))).await.body, &b"other"[..]);
    // a percent-encoded digest parameter, as Go clients send it
    let post = s.req("POST", "/v2/m/blobs/uploads/", &[], Bytes::new()).await;
    let enc = digest(b"enc").replace(':', "%3A");
    let put = s.req("PUT", &format!("{}?digest={enc}", post.header("location")), &[], &b"enc"[..]).await;
    assert_eq!(put.status, 201, "{:?}", put.body);
}

#[tokio::test]
async fn chunked_upload_with_order_checks_and_status() {
    let s = TestServer::start().await;
    let blob: Vec<u8> = (0..42u8).collect();
    let (c1, c2) = (&blob[..22], &blob[22..]);
    // out of order: the first chunk must start at 0
    let post = s.req("POST", "/v2/c/blobs/uploads/", &[("content-length", "0")], Bytes::new()).await;
    let loc = post.header("location").to_string();
    let r = s
        .req(
            "PATCH",
            &loc,
            &[("content-range", "22-41"), ("content-type", "application/octet-stream")],
            Bytes::copy_from_slice(c2),
        )
        .await;
    assert_eq!(r.status, 416);
    // in order
    let post = s.req("POST", "/v2/c/blobs/uploads/", &[("content-length", "0")], Bytes::new()).await;
    let first = post.header("location").to_string();
    let r = s
        .req(
            "PATCH",
            &first,
            &[("content-range", "0-21"), ("content-type", "application/octet-stream")],
            Bytes::copy_from_slice(c1),
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), "0-21");
    assert!(!r.header("location").is_empty());
    // retrying the same chunk at the original location: 416, the session lives on
    let retry = s.req("PATCH", &first, &[("content-range", "0-21")], Bytes::copy_from_slice(c1)).await;
    assert_eq!(retry.status, 416);
    assert_eq!(retry.header("range"), "0-21");
    let status = s.get(&first).await;
    assert_eq!(status.status, 204);
    assert_eq!(status.header("range"), "0-21");
    let loc = status.header("location").to_string();
    assert!(!loc.is_empty());
    let r = s.req("PATCH", &loc, &[("content-range", "22-41")], Bytes::copy_from_slice(c2)).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), "0-41");
    let put = s
        .req(
            "PUT",
            &format!("{}?digest={}", r.header("location"), digest(&blob)),
            &[("content-length", "0")],
            Bytes::new(),
        )
        .await;
    assert_eq!(put.status, 201);
    assert_eq!(put.header("location"), format!("/v2/c/blobs/{}", digest(&blob)));
    assert_eq!(s.get(&format!("/v2/c/blobs/{}", digest(&blob))).await.body, blob);
    // the session is over
    let r = s.req("PATCH", &loc, &[("content-range", "42-42")], &b"x"[..]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
}

#[tokio::test]
async fn streamed_patch_and_final_chunk_in_put() {
    let s = TestServer::start().await;
    let post = s.req("POST", "/v2/st/blobs/uploads/", &[], Bytes::new()).await;
    let r = s
        .req(
            "PATCH",
            post.header("location"),
            &[("content-type", "application/octet-stream")],
            &b"streamed "[..],
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), "0-8");
    let full = b"streamed and finished";
    let put = s
        .req(
            "PUT",
            &format!("{}?digest={}", r.header("location"), digest(full)),
            &[("content-range", "9-20")],
            &b"and finished"[..],
        )
        .await;
    assert_eq!(put.status, 201, "{:?}", put.body);
    assert_eq!(s.get(&format!("/v2/st/blobs/{}", digest(full))).await.body, &full[..]);
}

#[tokio::test]
async fn content_range_must_match_the_body() {
    let s = TestServer::start().await;
    let post = s.req("POST", "/v2/cr/blobs/uploads/", &[], Bytes::new()).await;
    let r = s.req("PATCH", post.header("location"), &[("content-range", "0-9")], &b"abc"[..]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "SIZE_INVALID");
    let r = s.req("PATCH", post.header("location"), &[("content-range", "garbage")], &b"abc"[..]).await;
    assert_eq!(r.status, 416);
    let r = s.get(post.header("location")).await;
    assert_eq!(r.header("range"), "0-0", "nothing was written");
}

#[tokio::test]
async fn digest_mismatch_stores_nothing() {
    let s = TestServer::start().await;
    let post = s.req("POST", "/v2/dm/blobs/uploads/", &[], Bytes::new()).await;
    let loc = post.header("location").to_string();
    let r = s.req("PUT", &format!("{loc}?digest={DUMMY}"), &[], &b"not hello world"[..]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(s.get(&format!("/v2/dm/blobs/{DUMMY}")).await.status, 404);
    assert_eq!(s.get(&format!("/v2/dm/blobs/{}", digest(b"not hello world"))).await.status, 404);
    assert_eq!(s.get(&loc).await.status, 404);
    let r = s.req("POST", &format!("/v2/dm/blobs/uploads/?digest={DUMMY}"), &[], &b"nope"[..]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "DIGEST_INVALID"));
    // PUT without a digest, and with a malformed one
    let post = s.req("POST", "/v2/dm/blobs/uploads/", &[], Bytes::new()).await;
    let r = s.req("PUT", post.header("location"), &[], Bytes::new()).await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    let r = s.req("PUT", &format!("{}?digest=sha256:xyz", post.header("location")), &[], Bytes::new()).await;
    assert_eq!(r.code(), "DIGEST_INVALID");
}

#[tokio::test]
async fn cancel_and_unknown_sessions() {
    let s = TestServer::start().await;
    let post = s.req("POST", "/v2/cx/blobs/uploads/", &[], Bytes::new()).await;
    let loc = post.header("location").to_string();
    assert_eq!(s.req("DELETE", &loc, &[], Bytes::new()).await.status, 204);
    let r = s.get(&loc).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
    let r = s.req("DELETE", &loc, &[], Bytes::new()).await;
    assert_eq!(r.status, 404);
    let r = s.req("PATCH", "/v2/cx/blobs/uploads/00000000-0000-0000-0000-000000000000", &[], &b"x"[..]).await;
    assert_eq!(r.code(), "BLOB_UPLOAD_UNKNOWN");
    // a session belongs to its repository
    let post = s.req("POST", "/v2/cx/blobs/uploads/", &[], Bytes::new()).await;
    let id = post.header("docker-upload-uuid");
    assert_eq!(s.get(&format!("/v2/other/blobs/uploads/{id}")).await.status, 404);
}

#[tokio::test]
async fn cross_repository_mount() {
    let s = TestServer::start().await;
    let d = s.push_blob("src/repo", b"shared layer").await;
    // not linked in the target yet
    assert_eq!(s.get(&format!("/v2/dst/blobs/{d}")).await.status, 404);
    let r =
        s.req("POST", &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"), &[], Bytes::new()).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), format!("/v2/dst/blobs/{d}"));
    assert_eq!(s.get(&format!("/v2/dst/blobs/{d}")).await.body, &b"shared layer"[..]);
    // percent-encoded `from`
    let r = s
        .req(
            "POST",
            &format!("/v2/dst2/blobs/uploads/?from=src%2Frepo&mount={}", d.replace(':', "%3A")),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 201);
    // without `from`: a plain session, even where the blob exists
    let r = s.req("POST", &format!("/v2/dst/blobs/uploads/?mount={d}"), &[], Bytes::new()).await;
    assert_eq!(r.status, 202);
    assert!(r.header("location").starts_with("/v2/dst/blobs/uploads/"));
    // from a repository that does not link it: a plain session, nothing leaks
    let r =
        s.req("POST", &format!("/v2/thief/blobs/uploads/?mount={d}&from=nothing"), &[], Bytes::new()).await;
    assert_eq!(r.status, 202);
    assert_eq!(s.get(&format!("/v2/thief/blobs/{d}")).await.status, 404);
}

#[tokio::test]
async fn manifests_by_tag_and_digest() {
    let s = TestServer::start().await;
    let (d, m) = s.push_image("app", "v1", "a").await;
    let r = s.get("/v2/app/manifests/v1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, m);
    assert_eq!(r.header("content-type"), OCI_MANIFEST);
    assert_eq!(r.header("docker-content-digest"), d);
    assert_eq!(r.header("content-length"), m.len().to_string());
    let r = s.get(&format!("/v2/app/manifests/{d}")).await;
    assert_eq!(r.body, m);
    let h = s.req("HEAD", "/v2/app/manifests/v1", &[], Bytes::new()).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("docker-content-digest"), d);
    assert_eq!(h.header("content-length"), m.len().to_string());
    // PUT by digest answers Location and Docker-Content-Digest
    let r = s.push_manifest("app", &d, OCI_MANIFEST, &m).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), format!("/v2/app/manifests/{d}"));
    assert_eq!(r.header("docker-content-digest"), d);
    // the invalid reference of the conformance suite is a 404, not a 400
    let r = s.get("/v2/app/manifests/.INVALID_MANIFEST_NAME").await;
    assert_eq!(r.status, 404);
    let r = s.get("/v2/app/manifests/sha256:totallywrong").await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "DIGEST_INVALID"));
    let r = s.get("/v2/app/manifests/nope").await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "MANIFEST_UNKNOWN"));
}

#[tokio::test]
async fn manifest_put_checks() {
    let s = TestServer::start().await;
    let cd = s.push_blob("chk", b"{}").await;
    let missing = digest(b"missing layer");
    let m = image_manifest(&cd, 2, &missing, 13, None);
    let r = s.push_manifest("chk", "t", OCI_MANIFEST, &m).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    assert_eq!(s.get("/v2/chk/manifests/t").await.status, 404, "nothing stored");
    // a blob of another repository does not count
    let other = s.push_blob("elsewhere", b"other layer").await;
    let m = image_manifest(&cd, 2, &other, 11, None);
    assert_eq!(s.push_manifest("chk", "t", OCI_MANIFEST, &m).await.code(), "MANIFEST_BLOB_UNKNOWN");
    let r = s.push_manifest("chk", "t", OCI_MANIFEST, b"blablabla").await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "MANIFEST_INVALID"));
    let r = s.push_manifest("chk", "t", OCI_INDEX, &image_manifest(&cd, 2, &cd, 2, None)).await;
    assert_eq!(r.code(), "MANIFEST_INVALID", "Content-Type and mediaType disagree");
    let ld = s.push_blob("chk", b"layer").await;
    let m = image_manifest(&cd, 2, &ld, 5, None);
    let r = s.push_manifest("chk", DUMMY, OCI_MANIFEST, &m).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "DIGEST_INVALID"));
    let r = s.push_manifest("chk", ".bad", OCI_MANIFEST, &m).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "TAG_INVALID"));
    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = s.push_manifest("chk", "big", OCI_MANIFEST, &huge).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (413, "MANIFEST_INVALID"));
    // no mediaType in the body: the Content-Type decides
    let bare = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":2}},"layers":[]}}"#
    );
    let r = s.push_manifest("chk", "emptylayer", OCI_MANIFEST, bare.as_bytes()).await;
    assert_eq!(r.status, 201);
    assert_eq!(s.get("/v2/chk/manifests/emptylayer").await.header("content-type"), OCI_MANIFEST);
}

#[tokio::test]
async fn manifest_size_limit_is_configurable() {
    let s = TestServer::start_with(|b| b.max_manifest_size(100)).await;
    let cd = s.push_blob("lim", b"{}").await;
    let ld = s.push_blob("lim", b"l").await;
    let m = image_manifest(&cd, 2, &ld, 1, None);
    assert!(m.len() > 100);
    assert_eq!(s.push_manifest("lim", "t", OCI_MANIFEST, &m).await.status, 413);
}

#[tokio::test]
async fn indexes_and_docker_manifest_lists() {
    let s = TestServer::start().await;
    let (d1, m1) = s.push_image("multi", "amd64", "1").await;
    let (d2, m2) = s.push_image("multi", "arm64", "2").await;
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d1, "size": m1.len(), "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": d2, "size": m2.len(), "platform": {"architecture": "arm64", "os": "linux"}},
        ]
    });
    let body = serde_json::to_vec(&index).unwrap();
    let r = s.push_manifest("multi", "latest", OCI_INDEX, &body).await;
    assert_eq!(r.status, 201);
    let r = s.get("/v2/multi/manifests/latest").await;
    assert_eq!(r.header("content-type"), OCI_INDEX);
    assert_eq!(r.body, body);
    // a child that is not in the repository
    let mut bad = index.clone();
    bad["manifests"][0]["digest"] = serde_json::json!(DUMMY);
    let r = s.push_manifest("multi", "bad", OCI_INDEX, &serde_json::to_vec(&bad).unwrap()).await;
    assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");
    // Docker schema 2
    let docker = "application/vnd.docker.distribution.manifest.v2+json";
    let cd = s.push_blob("multi", b"{\"os\":\"linux\"}").await;
    let dm = serde_json::json!({"schemaVersion": 2, "mediaType": docker,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd, "size": 14},
        "layers": []});
    let r = s.push_manifest("multi", "docker", docker, &serde_json::to_vec(&dm).unwrap()).await;
    assert_eq!(r.status, 201);
    assert_eq!(s.get("/v2/multi/manifests/docker").await.header("content-type"), docker);
    let list = "application/vnd.docker.distribution.manifest.list.v2+json";
    let dl = serde_json::json!({"schemaVersion": 2, "mediaType": list,
        "manifests": [{"mediaType": docker, "digest": r.header("docker-content-digest"), "size": 1, "platform": {"architecture": "amd64", "os": "linux"}}]});
    let r = s.push_manifest("multi", "dockerlist", list, &serde_json::to_vec(&dl).unwrap()).await;
    assert_eq!(r.status, 201);
    assert_eq!(s.get("/v2/multi/manifests/dockerlist").await.header("content-type"), list);
}

#[tokio::test]
async fn referrers_and_subject() {
    let s = TestServer::start().await;
    let (subject, sm) = s.push_image("ref", "img", "s").await;
    let empty = s.push_blob("ref", b"{}").await;
    let sig = s.push_blob("ref", b"signature").await;
    let artifact = |kind: &str, note: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": sig, "size": 9}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": sm.len()},
            "annotations": {"note": note},
        }))
        .unwrap()
    };
    let a = artifact("application/vnd.example.sig", "one");
    let b = artifact("application/vnd.example.sbom", "two");
    for m in [&a, &b] {
        let r = s.push_manifest("ref", &digest(m), OCI_MANIFEST, m).await;
        assert_eq!(r.status, 201);
        assert_eq!(r.header("oci-subject"), subject);
    }
    let r = s.get(&format!("/v2/ref/referrers/{subject}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), OCI_INDEX);
    let v = r.json();
    assert_eq!(v["mediaType"], OCI_INDEX);
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for d in list {
        assert_eq!(d["mediaType"], OCI_MANIFEST);
        assert_eq!(d["annotations"].as_object().unwrap().len(), 1);
        assert!(d["artifactType"].as_str().unwrap().starts_with("application/vnd.example."));
    }
    let r = s.get(&format!("/v2/ref/referrers/{subject}?artifactType=application%2Fvnd.example.sig")).await;
    assert_eq!(r.header("oci-filters-applied"), "artifactType");
    let list = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], digest(&a));
    assert_eq!(list[0]["size"], a.len());
    // unknown subject: an empty index, 200
    let r = s.get(&format!("/v2/ref/referrers/{DUMMY}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 0);
    // a dangling subject is accepted and indexed
    let c = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": DUMMY, "size": 1}}))
    .unwrap();
    let r = s.push_manifest("ref", &digest(&c), OCI_MANIFEST, &c).await;
    assert_eq!((r.status.as_u16(), r.header("oci-subject")), (201, DUMMY));
    assert_eq!(
        s.get(&format!("/v2/ref/referrers/{DUMMY}")).await.json()["manifests"].as_array().unwrap().len(),
        1
    );
    // deleting a referrer removes it from the index
    assert_eq!(
        s.req("DELETE", &format!("/v2/ref/manifests/{}", digest(&a)), &[], Bytes::new()).await.status,
        202
    );
    assert_eq!(
        s.get(&format!("/v2/ref/referrers/{subject}")).await.json()["manifests"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn tag_list_paginates() {
    let s = TestServer::start().await;
    let (d, m) = s.push_image("tags", "b", "x").await;
    for t in ["a", "C", "c", "d"] {
        assert_eq!(s.push_manifest("tags", t, OCI_MANIFEST, &m).await.status, 201);
    }
    let r = s.get("/v2/tags/tags/list").await;
    assert_eq!(r.json(), serde_json::json!({"name": "tags", "tags": ["C", "a", "b", "c", "d"]}));
    let r = s.get("/v2/tags/tags/list?n=2").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["C", "a"]));
    assert_eq!(r.header("link"), "</v2/tags/tags/list?n=2&last=a>; rel=\"next\"");
    let r = s.get("/v2/tags/tags/list?n=2&last=a").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["b", "c"]));
    let r = s.get("/v2/tags/tags/list?n=2&last=c").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["d"]));
    assert_eq!(r.header("link"), "");
    let r = s.get("/v2/tags/tags/list?n=0").await;
    assert_eq!((r.status.as_u16(), r.json()["tags"].clone()), (200, serde_json::json!([])));
    assert_eq!(s.get("/v2/tags/tags/list?n=x").await.status, 400);
    let r = s.get("/v2/nothing/tags/list").await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "NAME_UNKNOWN"));
    // once every tag is gone, the list is empty, not unknown
    assert_eq!(s.req("DELETE", &format!("/v2/tags/manifests/{d}"), &[], Bytes::new()).await.status, 202);
    let r = s.get("/v2/tags/tags/list").await;
    assert_eq!((r.status.as_u16(), r.json()["tags"].clone()), (200, serde_json::json!([])));
}

#[tokio::test]
async fn catalog_paginates() {
    let s = TestServer::start().await;
    for r in ["b", "a/x", "a", "c"] {
        s.push_image(r, "t", r).await;
    }
    assert_eq!(
        s.get("/v2/_catalog").await.json(),
        serde_json::json!({"repositories": ["a", "a/x", "b", "c"]})
    );
    let r = s.get("/v2/_catalog?n=2").await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["a", "a/x"]));
    assert_eq!(r.header("link"), "</v2/_catalog?n=2&last=a%2Fx>; rel=\"next\"");
    let r = s.get("/v2/_catalog?n=2&last=a%2Fx").await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["b", "c"]));
    assert_eq!(r.header("link"), "");
}

#[tokio::test]
async fn deletes() {
    let s = TestServer::start().await;
    let (d, m) = s.push_image("del", "keep", "k").await;
    assert_eq!(s.push_manifest("del", "drop", OCI_MANIFEST, &m).await.status, 201);
    // a tag: only the tag goes
    assert_eq!(s.req("DELETE", "/v2/del/manifests/drop", &[], Bytes::new()).await.status, 202);
    assert_eq!(s.get("/v2/del/manifests/drop").await.status, 404);
    assert_eq!(s.get("/v2/del/manifests/keep").await.status, 200);
    assert_eq!(s.get(&format!("/v2/del/manifests/{d}")).await.status, 200);
    // the manifest: its tags go too
    assert_eq!(s.req("DELETE", &format!("/v2/del/manifests/{d}"), &[], Bytes::new()).await.status, 202);
    assert_eq!(s.get(&format!("/v2/del/manifests/{d}")).await.status, 404);
    assert_eq!(s.get("/v2/del/manifests/keep").await.status, 404);
    assert_eq!(s.req("DELETE", &format!("/v2/del/manifests/{d}"), &[], Bytes::new()).await.status, 404);
    // blobs stay until deleted themselves
    let config: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let cd = config["config"]["digest"].as_str().unwrap();
    assert_eq!(s.get(&format!("/v2/del/blobs/{cd}")).await.status, 200);
    assert_eq!(s.req("DELETE", &format!("/v2/del/blobs/{cd}"), &[], Bytes::new()).await.status, 202);
    assert_eq!(s.get(&format!("/v2/del/blobs/{cd}")).await.status, 404);
    let r = s.req("DELETE", &format!("/v2/del/blobs/{cd}"), &[], Bytes::new()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "BLOB_UNKNOWN"));
}

#[tokio::test]
async fn deletes_can_be_disabled() {
    let s = TestServer::start_with(|b| b.delete_enabled(false)).await;
    let (d, _) = s.push_image("nodel", "t", "n").await;
    let r = s.req("DELETE", &format!("/v2/nodel/manifests/{d}"), &[], Bytes::new()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (405, "UNSUPPORTED"));
    assert_eq!(s.get("/v2/nodel/manifests/t").await.status, 200);
}

#[tokio::test]
async fn methods_a_route_does_not_take() {
    let s = TestServer::start().await;
    let d = s.push_blob("meth", b"x").await;
    for (m, p) in [
        ("PUT", format!("/v2/meth/blobs/{d}")),
        ("POST", "/v2/meth/tags/list".into()),
        ("PATCH", "/v2/".into()),
        ("DELETE", "/v2/_catalog".into()),
    ] {
        let r = s.req(m, &p, &[], Bytes::new()).await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (405, "UNSUPPORTED"), "{m} {p}");
    }
}

#[tokio::test]
async fn hostile_paths_are_refused_and_touch_nothing() {
    let s = TestServer::start().await;
    s.push_image("victim", "t", "v").await;
    let cases = [
        ("/v2/../../etc/passwd/tags/list", "NAME_INVALID"),
        ("/v2/a/%2e%2e/%2e%2e/tags/list", "NAME_INVALID"),
        ("/v2/a%2f..%2fvictim/tags/list", "NAME_INVALID"),
        ("/v2/Victim/tags/list", "NAME_INVALID"),
        ("/v2/victim/manifests/..%2f..%2fx", "NAME_INVALID"),
        ("/v2/victim/blobs/sha256:..", "DIGEST_INVALID"),
        ("/v2/victim/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", "DIGEST_INVALID"),
        ("/v2/victim/blobs/sha256:ABCDEF", "DIGEST_INVALID"),
        ("/v2/victim/blobs/uploads/..", "BLOB_UPLOAD_UNKNOWN"),
    ];
    for (p, code) in cases {
        for m in ["GET", "PUT", "DELETE", "PATCH"] {
            let r = s.req(m, p, &[], &b"{}"[..]).await;
            assert!(r.status.is_client_error(), "{m} {p}: {}", r.status);
            assert_eq!(r.code(), code, "{m} {p}");
        }
    }
    let long = format!("/v2/{}/tags/list", "a".repeat(256));
    assert_eq!(s.get(&long).await.code(), "NAME_INVALID");
    assert_eq!(s.get("/v2/victim/manifests/t").await.status, 200);
    // nothing outside the data directory was created
    let escaped = s.dir.path().parent().unwrap().join("etc");
    assert!(!escaped.exists() || escaped.is_dir());
}
