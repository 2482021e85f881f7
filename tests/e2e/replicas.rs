//! Two donjons on one S3 bucket behind haproxy (round robin): uploads, pushes and pulls that
//! cross replicas.

use std::fs;
use std::process::Command;
use std::time::Instant;

use super::support::*;

/// `addr` of an upload's Location (absolute or not): the path and query.
fn location_path(loc: &str) -> String {
    match loc.strip_prefix("http://").or_else(|| loc.strip_prefix("https://")) {
        Some(rest) => rest[rest.find('/').unwrap_or(rest.len())..].to_string(),
        None => loc.to_string(),
    }
}

fn with_query(path: &str, kv: &str) -> String {
    if path.contains('?') {
        format!("{path}&{kv}")
    } else {
        format!("{path}?{kv}")
    }
}

fn sha256_digest(b: &[u8]) -> String {
    format!("sha256:{}", fixtures::sha256_hex(b))
}

/// A chunked upload through `addr`: POST, one PATCH per chunk (with Content-Range), a GET of
/// the status after some, and a PUT with `last` as its body. Checks every answer; returns the
/// digest and the upload's id (the last segment of its Location path).
fn chunked_upload(
    addr: &str,
    repo: &str,
    chunks: &[&[u8]],
    status_after: &[usize],
    last: &[u8],
) -> (String, String) {
    let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).chain(last.iter().copied()).collect();
    let digest = sha256_digest(&all);
    let r = http_send(addr, "POST", &format!("/v2/{repo}/blobs/uploads/"), &[], Some(b"")).unwrap();
    assert_eq!(r.status, 202, "POST upload: {}", String::from_utf8_lossy(&r.body));
    let mut loc = location_path(r.header("location").expect("Location"));
    let id = loc.split('?').next().unwrap().rsplit('/').next().unwrap().to_string();
    println!("upload {id}: POST -> 202 {loc}");
    let mut offset = 0usize;
    for (i, chunk) in chunks.iter().enumerate() {
        let range = format!("{}-{}", offset, offset + chunk.len() - 1);
        let r = http_send(
            addr,
            "PATCH",
            &loc,
            &[("Content-Type", "application/octet-stream"), ("Content-Range", &range)],
            Some(chunk),
        )
        .unwrap();
        assert_eq!(r.status, 202, "PATCH #{i} {range}: {}", String::from_utf8_lossy(&r.body));
        offset += chunk.len();
        assert_eq!(r.header("range"), Some(format!("0-{}", offset - 1).as_str()), "Range after PATCH #{i}");
        loc = location_path(r.header("location").expect("Location after PATCH"));
        println!("upload {id}: PATCH {range} ({} bytes) -> 202, Range 0-{}", chunk.len(), offset - 1);
        if status_after.contains(&i) {
            let r = http(addr, "GET", &loc, &[]).unwrap();
            assert_eq!(r.status, 204, "GET upload status: {}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.header("range"), Some(format!("0-{}", offset - 1).as_str()), "Range of GET status");
            assert_eq!(r.header("docker-upload-uuid"), Some(id.as_str()), "Docker-Upload-UUID of GET status");
            println!("upload {id}: GET status -> 204, Range 0-{}", offset - 1);
        }
    }
    let put = with_query(&loc, &format!("digest={digest}"));
    let mut headers = vec![("Content-Type", "application/octet-stream")];
    let range;
    if !last.is_empty() {
        range = format!("{}-{}", offset, offset + last.len() - 1);
        headers.push(("Content-Range", &range));
    }
    let r = http_send(addr, "PUT", &put, &headers, Some(last)).unwrap();
    assert_eq!(r.status, 201, "PUT ?digest ({} bytes): {}", last.len(), String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    println!("upload {id}: PUT ({} bytes) -> 201 {digest}, {} bytes in all", last.len(), all.len());
    (digest, id)
}

/// Two donjon binaries on one Garage bucket and prefix behind haproxy (round robin, a new
/// server connection per request): uploads, pushes and pulls through the balancer alternate
/// replicas; a tag moved on one is seen at once on the other.
#[test]
fn replicas_behind_round_robin() {
    require_e2e!();
    let t0 = Instant::now();
    let Some(g) = s3server::S3Server::start("replicas") else {
        println!("skipped: no S3 server (set DONJON_S3=1 to make it a failure)");
        return;
    };
    let s = Scratch::new("replicas");
    let haproxy = tool("haproxy");
    let config = s.join("donjon.yml");
    fs::write(
        &config,
        format!(
            "storage:\n{}  redirect:\n    disable: true\n  delete:\n    enabled: true\n",
            s3_storage_yaml(&g, "/replicas")
        ),
    )
    .unwrap();
    let a = Donjon::start_config(Some(&s.dir("a")), &config, &s.join("a.log"));
    let b = Donjon::start_config(Some(&s.dir("b")), &config, &s.join("b.log"));

    let (fport, sport) = (free_port(), free_port());
    let cfg = s.join("haproxy.cfg");
    fs::write(
        &cfg,
        format!(
            "global\n  maxconn 256\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n  \
             option http-server-close\n  http-reuse never\n\
             frontend registry\n  bind 127.0.0.1:{fport}\n  default_backend donjons\n\
             backend donjons\n  balance roundrobin\n  server a {}\n  server b {}\n\
             frontend stats\n  bind 127.0.0.1:{sport}\n  stats enable\n  stats uri /stats\n",
            a.host(),
            b.host()
        ),
    )
    .unwrap();
    let mut c = Command::new(&haproxy);
    c.arg("-f").arg(&cfg).arg("-db");
    let mut lb_daemon = Daemon::spawn("haproxy", &mut c, &s.join("haproxy.log"));
    let lb = format!("127.0.0.1:{fport}");
    lb_daemon.wait_until("proxying", || http(&lb, "GET", "/v2/", &[]).is_ok_and(|r| r.status == 200));
    let docker = |r: &str| format!("docker://{lb}/{r}");
    println!("== setup (S3 server, two donjons, haproxy) took {:.1?}", t0.elapsed());
    let t1 = Instant::now();

    // ---- a chunked upload through the balancer: tiny and multi-MiB chunks
    let mut rng = fixtures::XorShift(7);
    let mut bytes = |n: usize| {
        let mut v = vec![0u8; n];
        rng.fill(&mut v);
        v
    };
    let (c1, c2, c3, c4, c5, c6, last) =
        (bytes(10), bytes(6 << 20), bytes(3), bytes((7 << 20) + 1), bytes(5), bytes(1), bytes(4));
    let (layer, upload_id) =
        chunked_upload(&lb, "rr/chunked", &[&c1, &c2, &c3, &c4, &c5, &c6], &[0, 2, 4], &last);
    let layer_size = 10 + (6 << 20) + 3 + (7 << 20) + 1 + 5 + 1 + 4;
    // and one PATCHed in small pieces only, finished by an empty PUT
    let (d1, d2, d3) = (bytes(1), bytes(2), bytes(4096));
    let (small, small_id) = chunked_upload(&lb, "rr/chunked", &[&d1, &d2, &d3], &[1], b"");
    for host in [&lb, &a.host(), &b.host()] {
        let r = http(host, "HEAD", &format!("/v2/rr/chunked/blobs/{layer}"), &[]).unwrap();
        assert_eq!(r.status, 200, "HEAD blob on {host}");
        assert_eq!(r.header("content-length"), Some(layer_size.to_string().as_str()), "HEAD blob on {host}");
        let r = http(host, "GET", &format!("/v2/rr/chunked/blobs/{layer}"), &[]).unwrap();
        assert_eq!(r.status, 200, "GET blob on {host}");
        assert_eq!(sha256_digest(&r.body), layer, "GET blob on {host}");
        let r = http(host, "GET", &format!("/v2/rr/chunked/blobs/{small}"), &[]).unwrap();
        assert_eq!((r.status, sha256_digest(&r.body)), (200, small.clone()), "GET small blob on {host}");
    }

    // one upload's state is shared: stepping between the replicas' own ports, a PATCH with a
    // stale Content-Range is refused on the replica that did not take the last chunk, and a
    // cancelled upload is gone on the other
    let (ah, bh) = (a.host(), b.host());
    let r = http_send(&ah, "POST", "/v2/rr/chunked/blobs/uploads/", &[], Some(b"")).unwrap();
    assert_eq!(r.status, 202, "POST on a: {}", String::from_utf8_lossy(&r.body));
    let loc = location_path(r.header("location").unwrap());
    let octet = ("Content-Type", "application/octet-stream");
    let r = http_send(&bh, "PATCH", &loc, &[octet, ("Content-Range", "0-9")], Some(&[1u8; 10])).unwrap();
    assert_eq!((r.status, r.header("range")), (202, Some("0-9")), "PATCH 0-9 on b");
    let loc = location_path(r.header("location").unwrap());
    let r = http_send(&ah, "PATCH", &loc, &[octet, ("Content-Range", "0-9")], Some(&[2u8; 10])).unwrap();
    println!(
        "stale PATCH 0-9 on a -> {} {:?} {}",
        r.status,
        r.header("range"),
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.status, 416, "a PATCH at offset 0 after b took 0-9 must be refused");
    let r = http(&ah, "GET", &loc, &[]).unwrap();
    assert_eq!((r.status, r.header("range")), (204, Some("0-9")), "status on a after the refused PATCH");
    let r = http_send(&ah, "PATCH", &loc, &[octet, ("Content-Range", "10-19")], Some(&[3u8; 10])).unwrap();
    assert_eq!((r.status, r.header("range")), (202, Some("0-19")), "PATCH 10-19 on a");
    let loc = location_path(r.header("location").unwrap());
    let r = http(&bh, "DELETE", &loc, &[]).unwrap();
    assert_eq!(r.status, 204, "cancel on b: {}", String::from_utf8_lossy(&r.body));
    let r = http(&ah, "GET", &loc, &[]).unwrap();
    assert_eq!(
        r.status,
        404,
        "upload cancelled on b, still known to a: {}",
        String::from_utf8_lossy(&r.body)
    );
    let r = http_send(&ah, "PATCH", &loc, &[octet, ("Content-Range", "20-29")], Some(&[4u8; 10])).unwrap();
    assert_eq!(r.status, 404, "PATCH on a after the cancel on b: {}", String::from_utf8_lossy(&r.body));

    // a config (monolithic POST ?digest=) and a manifest PUT by tag, through the balancer
    let cfg_json = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [layer] },
    }))
    .unwrap();
    let cfg_digest = sha256_digest(&cfg_json);
    let r = http_send(
        &lb,
        "POST",
        &format!("/v2/rr/chunked/blobs/uploads/?digest={cfg_digest}"),
        &[("Content-Type", "application/octet-stream")],
        Some(&cfg_json),
    )
    .unwrap();
    assert_eq!(r.status, 201, "monolithic POST: {}", String::from_utf8_lossy(&r.body));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": fixtures::MT_MANIFEST,
        "config": { "mediaType": fixtures::MT_CONFIG, "digest": cfg_digest, "size": cfg_json.len() },
        "layers": [
            { "mediaType": fixtures::MT_LAYER_TAR, "digest": layer, "size": layer_size },
            { "mediaType": fixtures::MT_LAYER_TAR, "digest": small, "size": 4099 },
        ],
    }))
    .unwrap();
    let mdigest = sha256_digest(&manifest);
    let r = http_send(
        &lb,
        "PUT",
        "/v2/rr/chunked/manifests/chunky",
        &[("Content-Type", fixtures::MT_MANIFEST)],
        Some(&manifest),
    )
    .unwrap();
    assert_eq!(r.status, 201, "manifest PUT: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("docker-content-digest"), Some(mdigest.as_str()));
    let accept = [("Accept", fixtures::MT_MANIFEST)];
    for host in [&lb, &lb, &a.host(), &b.host()] {
        let r = http(host, "GET", "/v2/rr/chunked/manifests/chunky", &accept).unwrap();
        assert_eq!(r.status, 200, "GET manifest by tag on {host}");
        assert_eq!(sha256_digest(&r.body), mdigest, "GET manifest by tag on {host}");
    }
    println!("== chunked uploads and manifest took {:.1?}", t1.elapsed());
    let t2 = Instant::now();

    // ---- skopeo push and pull through the balancer
    let (bb_layout, bb) = fixtures::busybox(s.join("in-bb"), "v1").unwrap();
    let (m_layout, m) = fixtures::multi_arch(s.join("in-multi"), "multi").unwrap();
    skopeo_copy(&s, &[], &bb_layout.reference("v1"), &docker("rr/busybox:v1"));
    skopeo_copy(&s, &["--all"], &m_layout.reference("multi"), &docker("rr/multi:1"));
    skopeo_copy(&s, &[], &bb_layout.reference("v1"), &docker("rr/busybox:v2"));
    let out = s.join("out");
    let bb_blobs = [bb.config.digest.as_str(), bb.layers[0].digest.as_str()];
    copy_out_and_check(&s, &[], &docker("rr/busybox:v1"), &out, "bb", &bb.manifest.digest, &bb_blobs);
    copy_out_and_check(
        &s,
        &[],
        &docker(&format!("rr/busybox@{}", bb.manifest.digest)),
        &out,
        "bbdigest",
        &bb.manifest.digest,
        &bb_blobs,
    );
    copy_out_and_check(
        &s,
        &["--all"],
        &docker("rr/multi:1"),
        &out,
        "multi",
        &m.index.digest,
        &[&m.arm64.layers[0].digest, &m.amd64.layers[0].digest],
    );
    // (its layers are uncompressed: skopeo would compress them without --preserve-digests)
    copy_out_and_check(
        &s,
        &["--preserve-digests"],
        &docker("rr/chunked:chunky"),
        &out,
        "chunky",
        &mdigest,
        &[&layer, &small, &cfg_digest],
    );
    assert_eq!(list_tags(&s, &docker("rr/busybox")), ["v1", "v2"]);
    let r = http(&lb, "GET", "/v2/rr/chunked/tags/list", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["tags"], serde_json::json!(["chunky"]));
    assert_catalog_has(&lb, &["rr/busybox", "rr/chunked", "rr/multi"]);
    // two pushes of the same image at once (same blobs uploaded concurrently, through both
    // replicas), then both tags pull
    let (big_layout, big) = fixtures::large(s.join("in-big"), "big", 12 << 20, 103, true).unwrap();
    std::thread::scope(|sc| {
        let pushes: Vec<_> = ["rr/race:1", "rr/race:2", "rr/race2:1"]
            .into_iter()
            .map(|r| {
                let (s, src, dst) = (&s, big_layout.reference("big"), docker(r));
                sc.spawn(move || skopeo_copy_with(s, &[], &src, &dst, LARGE_TIMEOUT))
            })
            .collect();
        for p in pushes {
            p.join().expect("concurrent push");
        }
    });
    let big_blobs = [big.config.digest.as_str(), big.layers[0].digest.as_str()];
    for (r, tag) in [("rr/race:1", "race1"), ("rr/race:2", "race2"), ("rr/race2:1", "race3")] {
        copy_out_and_check(&s, &[], &docker(r), &out, tag, &big.manifest.digest, &big_blobs);
    }
    println!("== skopeo through haproxy took {:.1?}", t2.elapsed());
    let t3 = Instant::now();

    // ---- a tag moved on one replica's own port is seen at once on the other's
    let manifests = [
        (&m.amd64.manifest, fs::read(m_layout.blob_path(&m.amd64.manifest.digest)).unwrap()),
        (&m.arm64.manifest, fs::read(m_layout.blob_path(&m.arm64.manifest.digest)).unwrap()),
        (&m.index, fs::read(m_layout.blob_path(&m.index.digest)).unwrap()),
    ];
    let accept_all =
        [("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")];
    for round in 0..6 {
        let (writer, reader) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (desc, body) = &manifests[round % 3];
        let r = http_send(
            &writer.host(),
            "PUT",
            "/v2/rr/multi/manifests/moving",
            &[("Content-Type", desc.media_type.as_str())],
            Some(body),
        )
        .unwrap();
        assert_eq!(r.status, 201, "PUT moving on {}: {}", writer.host(), String::from_utf8_lossy(&r.body));
        let r = http(&reader.host(), "HEAD", "/v2/rr/multi/manifests/moving", &accept_all).unwrap();
        assert_eq!(
            r.header("docker-content-digest"),
            Some(desc.digest.as_str()),
            "round {round}: tag moved on {} not seen at once on {} (status {})",
            writer.host(),
            reader.host(),
            r.status
        );
        let r = http(&reader.host(), "GET", "/v2/rr/multi/manifests/moving", &accept_all).unwrap();
        assert_eq!(
            (r.status, sha256_digest(&r.body)),
            (200, desc.digest.clone()),
            "round {round}: GET on the other"
        );
        let r = http(&reader.host(), "GET", "/v2/rr/multi/tags/list", &[]).unwrap();
        assert_eq!(r.json()["tags"], serde_json::json!(["1", "moving"]), "round {round}: tags on the other");
    }
    // and a deletion
    let r =
        http(&a.host(), "DELETE", &format!("/v2/rr/busybox/manifests/{}", bb.manifest.digest), &[]).unwrap();
    assert_eq!(r.status, 202, "DELETE on a: {}", String::from_utf8_lossy(&r.body));
    let r = http(&b.host(), "GET", "/v2/rr/busybox/manifests/v1", &accept_all).unwrap();
    assert_eq!(r.status, 404, "deleted on a, still on b: {}", String::from_utf8_lossy(&r.body));
    println!("== tag moves across replicas took {:.1?}", t3.elapsed());

    // ---- haproxy did spread the requests
    let stats = http(&format!("127.0.0.1:{sport}"), "GET", "/stats;csv", &[]).unwrap();
    let csv = String::from_utf8_lossy(&stats.body).into_owned();
    let stot = |server: &str| -> u64 {
        csv.lines()
            .find(|l| l.starts_with(&format!("donjons,{server},")))
            .and_then(|l| l.split(',').nth(7))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no stot for {server} in haproxy stats:\n{csv}"))
    };
    let (sa, sb) = (stot("a"), stot("b"));
    let log_a = fs::read_to_string(s.join("a.log")).unwrap();
    let log_b = fs::read_to_string(s.join("b.log")).unwrap();
    let access = |log: &str| log.lines().filter(|l| l.contains("donjon::access")).count();
    let upload_lines = |log: &str, id: &str, method: &str| {
        log.lines()
            .filter(|l| {
                l.contains("donjon::access") && l.contains(id) && l.contains(&format!("method={method}"))
            })
            .count()
    };
    println!("haproxy sessions: a={sa} b={sb}; access log lines: a={} b={}", access(&log_a), access(&log_b));
    for (id, name) in [(&upload_id, "large"), (&small_id, "small")] {
        println!(
            "upload {name} ({id}): PATCH a={} b={}, GET a={} b={}, PUT a={} b={}",
            upload_lines(&log_a, id, "PATCH"),
            upload_lines(&log_b, id, "PATCH"),
            upload_lines(&log_a, id, "GET"),
            upload_lines(&log_b, id, "GET"),
            upload_lines(&log_a, id, "PUT"),
            upload_lines(&log_b, id, "PUT"),
        );
    }
    assert!(sa >= 10 && sb >= 10, "haproxy did not spread: a={sa} b={sb}");
    assert!(
        upload_lines(&log_a, &upload_id, "PATCH") > 0 && upload_lines(&log_b, &upload_id, "PATCH") > 0,
        "the PATCHes of upload {upload_id} did not reach both replicas"
    );

    drop(lb_daemon);
    a.stop();
    b.stop();
    drop(g);
    println!("== total {:.1?}", t0.elapsed());
}

/// Two replicas with auth and no `signing_key`, started at the same moment on one bucket: the
/// token signing key they make is kept in the bucket, so what one issues the other accepts.
#[test]
fn replicas_share_the_token_signing_key_through_the_bucket() {
    require_e2e!();
    let Some(g) = s3server::S3Server::start("replicas-auth") else {
        println!("skipped: no S3 server (set DONJON_S3=1 to make it a failure)");
        return;
    };
    let s = Scratch::new("replicas-auth");
    let htpasswd = s.join("htpasswd");
    ok(cmd("htpasswd").args(["-B", "-b", "-c"]).arg(&htpasswd).args(["alice", "alice-pw"]));
    let config = s.join("donjon.yml");
    let yaml = format!(
        "storage:\n{}auth:\n  htpasswd: {{realm: r, path: {}}}\n  service: shared\n",
        s3_storage_yaml(&g, "/replicas-auth"),
        htpasswd.display()
    );
    fs::write(&config, yaml).unwrap();
    let (a, b) = std::thread::scope(|t| {
        let a = t.spawn(|| Donjon::start_config(Some(&s.dir("a")), &config, &s.join("a.log")));
        let b = t.spawn(|| Donjon::start_config(Some(&s.dir("b")), &config, &s.join("b.log")));
        (a.join().unwrap(), b.join().unwrap())
    });
    let basic = "Basic YWxpY2U6YWxpY2UtcHc="; // alice:alice-pw
    for (issuer, checker) in [(&a, &b), (&b, &a)] {
        let path = "/v2/token?service=shared&scope=repository:team/app:pull";
        let r = http(&issuer.host(), "GET", path, &[("authorization", basic)]).unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        let bearer = format!("Bearer {}", r.json()["token"].as_str().unwrap());
        let r =
            http(&checker.host(), "GET", "/v2/team/app/tags/list", &[("authorization", &bearer)]).unwrap();
        assert_eq!(r.status, 404, "the other replica accepts the token (and finds no repository)");
        assert!(!s.dir("a").join("auth").exists(), "the key is in the bucket, not the data dir");
    }
}
