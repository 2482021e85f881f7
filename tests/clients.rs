//! A third-party client (the `oci-client` crate), concurrency, and clients that go away.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use donjon_test_support::server::*;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

fn oci_client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig { protocol: ClientProtocol::Http, ..Default::default() })
}

#[tokio::test]
async fn oci_client_pushes_and_pulls() {
    let s = TestServer::start().await;
    let client = oci_client();
    let reference: Reference = format!("{}/third/party:v1", s.addr).parse().unwrap();
    let layers = vec![
        ImageLayer::oci_v1(Bytes::from(vec![1u8; 300_000]), None),
        ImageLayer::oci_v1(Bytes::from_static(b"small layer"), None),
    ];
    let config = Config::oci_v1(Bytes::from_static(br#"{"architecture":"amd64","os":"linux"}"#), None);
    client.push(&reference, &layers, config, &RegistryAuth::Anonymous, None).await.expect("push");

    let fresh = oci_client();
    let image = fresh
        .pull(&reference, &RegistryAuth::Anonymous, vec![oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE])
        .await
        .expect("pull");
    assert_eq!(image.layers.len(), 2);
    let mut sizes: Vec<usize> = image.layers.iter().map(|l| l.data.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [11, 300_000]);
    assert!(image.layers.iter().any(|l| &l.data[..] == b"small layer"));
    let tags = fresh.list_tags(&reference, &RegistryAuth::Anonymous, None, None).await.expect("tags");
    assert_eq!(tags.tags, vec!["v1".to_string()]);
    // the digest it reports is the one the registry serves
    let (_, digest) = fresh.pull_manifest(&reference, &RegistryAuth::Anonymous).await.expect("manifest");
    assert_eq!(s.get(&format!("/v2/third/party/manifests/{digest}")).await.status, 200);
}

#[tokio::test]
async fn parallel_pushes_of_one_blob_and_one_tag() {
    let s = Arc::new(TestServer::start().await);
    let data = Bytes::from(vec![42u8; 1 << 20]);
    let d = digest(&data);
    let mut tasks = vec![];
    for i in 0..8 {
        let (s, data, d) = (s.clone(), data.clone(), d.clone());
        tasks.push(tokio::spawn(async move {
            // half monolithic, half in two chunks
            if i % 2 == 0 {
                let r = s.req("POST", &format!("/v2/race/blobs/uploads/?digest={d}"), &[], data).await;
                assert_eq!(r.status, 201);
            } else {
                let post = s.req("POST", "/v2/race/blobs/uploads/", &[], Bytes::new()).await;
                let half = data.len() / 2;
                let r = s
                    .req(
                        "PATCH",
                        post.header("location"),
                        &[("content-range", &format!("0-{}", half - 1))],
                        data.slice(..half),
                    )
                    .await;
                assert_eq!(r.status, 202);
                let r = s
                    .req(
                        "PUT",
                        &format!("{}?digest={d}", r.header("location")),
                        &[("content-range", &format!("{half}-{}", data.len() - 1))],
                        data.slice(half..),
                    )
                    .await;
                assert_eq!(r.status, 201, "{:?}", r.body);
            }
            let (md, _) = s.push_image("race", "latest", &format!("{i}")).await;
            md
        }));
    }
    let mut pushed = vec![];
    for t in tasks {
        pushed.push(t.await.unwrap());
    }
    let r = s.get(&format!("/v2/race/blobs/{d}")).await;
    assert_eq!(r.body, data);
    let r = s.get("/v2/race/manifests/latest").await;
    assert_eq!(r.status, 200);
    assert!(
        pushed.contains(&r.header("docker-content-digest").to_string()),
        "the tag names one of the pushes, whole"
    );
    assert_eq!(r.header("docker-content-digest"), digest(&r.body));
}

/// A client that sends half of a PATCH body and hangs up.
#[tokio::test]
async fn disconnect_mid_upload_keeps_the_session_resumable() {
    let s = TestServer::start().await;
    let post = s.req("POST", "/v2/cut/blobs/uploads/", &[], Bytes::new()).await;
    let loc = post.header("location").to_string();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sent = 120_000;
    let addr = s.addr;
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Range: 0-{}\r\nContent-Length: {}\r\n\r\n",
        data.len() - 1,
        data.len()
    );
    let part = data[..sent].to_vec();
    tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.write_all(head.as_bytes()).unwrap();
        tcp.write_all(&part).unwrap();
        tcp.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        tcp.shutdown(std::net::Shutdown::Both).unwrap();
        let mut rest = vec![];
        let _ = tcp.read_to_end(&mut rest);
    })
    .await
    .unwrap();
    // The server notices, keeps what arrived, and nothing is visible.
    let mut got = 0;
    for _ in 0..50 {
        let r = s.get(&loc).await;
        assert_eq!(r.status, 204);
        got = r.header("range").split('-').nth(1).unwrap().parse::<usize>().unwrap() + 1;
        if got == sent {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(got, sent, "the bytes that arrived are kept");
    assert_eq!(s.get(&format!("/v2/cut/blobs/{}", digest(&data))).await.status, 404);
    // resume from where it stopped, and finish
    let r = s
        .req(
            "PATCH",
            &loc,
            &[("content-range", &format!("{sent}-{}", data.len() - 1))],
            Bytes::copy_from_slice(&data[sent..]),
        )
        .await;
    assert_eq!(r.status, 202);
    let r = s.req("PUT", &format!("{loc}?digest={}", digest(&data)), &[], Bytes::new()).await;
    assert_eq!(r.status, 201);
    assert_eq!(s.get(&format!("/v2/cut/blobs/{}", digest(&data))).await.body, data);
}
