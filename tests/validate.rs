//! The admission webhooks, black-box: `AdmissionReview` documents shaped as the API server
//! sends them (the Kubernetes "Dynamic Admission Control" page: `uid`, `kind`, `resource`,
//! `requestKind`, `name`, `namespace`, `operation`, `userInfo`, `object`, `oldObject`,
//! `options`, `dryRun`), posted over real TCP to the composed registry; the binary over HTTPS
//! (as the API server calls webhooks) with curl; `donjon check-image`.

use std::process::Command;

use base64::Engine;
use bytes::Bytes;
use donjon_test_support::server::TestServer;
use serde_json::{json, Value};

const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

/// An `AdmissionReview` request as the API server sends it for `object`.
fn review(operation: &str, object: Value) -> Value {
    let kind = object["kind"].as_str().unwrap_or("").to_string();
    let api_version = object["apiVersion"].as_str().unwrap_or("v1").to_string();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let resource = format!("{}s", kind.to_ascii_lowercase());
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    let options_kind = if operation == "UPDATE" { "UpdateOptions" } else { "CreateOptions" };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": gvk, "resource": gvr,
            "requestKind": gvk, "requestResource": gvr,
            "name": object["metadata"]["name"],
            "namespace": "my-namespace",
            "operation": operation,
            "userInfo": {"username": "admin", "uid": "014fbff9a07c", "groups": ["system:authenticated", "my-admin-group"]},
            "object": if operation == "DELETE" { Value::Null } else { object.clone() },
            "oldObject": if operation == "CREATE" { Value::Null } else { object },
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind},
            "dryRun": false
        }
    })
}

fn containers(images: &[(&str, &str)]) -> Value {
    Value::Array(
        images
            .iter()
            .map(|(n, i)| json!({"name": n, "image": i, "ports": [{"containerPort": 80}]}))
            .collect(),
    )
}

fn pod_spec(images: &[(&str, &str)]) -> Value {
    json!({"containers": containers(images), "restartPolicy": "Always"})
}

fn template(images: &[(&str, &str)]) -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": pod_spec(images)})
}

fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "my-namespace", "labels": {"app": "web"}})
}

fn deployment(images: &[(&str, &str)]) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"),
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template(images)}})
}

/// Every kind whose images are checked, each with `images` in its pod spec.
fn every_kind(images: &[(&str, &str)]) -> Vec<Value> {
    let t = template(images);
    vec![
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("p"), "spec": pod_spec(images)}),
        json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": meta("pt"), "template": t}),
        deployment(images),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("s"),
               "spec": {"serviceName": "s", "selector": {"matchLabels": {"app": "web"}}, "template": t}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("d"),
               "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": t}}),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta("r"),
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": t}}),
        json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": meta("rc"),
               "spec": {"replicas": 1, "selector": {"app": "web"}, "template": t}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("j"),
               "spec": {"backoffLimit": 2, "template": t}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("c"),
               "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": t}}}}),
    ]
}

const POLICY: &str = r#"
default: Deny
allow: [registry.example/, quay.io/, docker.io/library/]
deny: [docker.io/library/nginx]
check_local: true
mutate:
  hosts: [docker.io, quay.io]
  ignore: [docker.io/library/busybox]
"#;

async fn serve(policy: &str) -> TestServer {
    let config: donjon::ValidationConfig = serde_yaml::from_str(policy).unwrap();
    TestServer::start_with(move |b| {
        let layer = config.build(&["registry.example".into()], &[], None, Some(b.store().clone())).unwrap();
        b.validation(layer)
    })
    .await
}

async fn ask(s: &TestServer, path: &str, review: &Value) -> Value {
    let r = s
        .req("POST", path, &[("content-type", "application/json")], serde_json::to_vec(review).unwrap())
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), "application/json");
    serde_json::from_slice(&r.body).unwrap()
}

fn message(answer: &Value) -> &str {
    answer["response"]["status"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_deployment_with_a_denied_image_is_refused_naming_it() {
    let s = serve(POLICY).await;
    let both = review("CREATE", deployment(&[("app", "quay.io/org/app:1"), ("proxy", "nginx:1.25")]));
    let a = ask(&s, "/validate-image", &both).await;
    assert_eq!(a["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(a["kind"], "AdmissionReview");
    assert_eq!(a["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(a["response"]["allowed"], false);
    assert_eq!(a["response"]["status"]["code"], 403);
    let m = message(&a);
    assert!(m.contains("container \"proxy\"") && m.contains("docker.io/library/nginx:1.25"), "{m}");
    assert!(!m.contains("quay.io"), "only the refused image is named: {m}");
    let one = review("CREATE", deployment(&[("app", "quay.io/org/app:1")]));
    let a = ask(&s, "/validate-image", &one).await;
    assert_eq!(a["response"]["allowed"], true, "{a}");
    assert!(a["response"].get("status").is_none());
}

#[tokio::test]
async fn every_kind_and_every_container_list_is_checked() {
    let s = serve(POLICY).await;
    for object in every_kind(&[("ok", "quay.io/a"), ("bad", "ghcr.io/evil/miner")]) {
        let kind = object["kind"].as_str().unwrap().to_string();
        let a = ask(&s, "/validate-image", &review("CREATE", object.clone())).await;
        assert_eq!(a["response"]["allowed"], false, "{kind}: {a}");
        assert!(message(&a).contains("ghcr.io/evil/miner:latest is neither explicitly allowed nor denied (using default behaviour: Deny)"), "{kind}: {}", message(&a));
        let a = ask(&s, "/validate-image", &review("UPDATE", object)).await;
        assert_eq!(a["response"]["allowed"], false, "{kind} UPDATE");
    }
    for object in every_kind(&[("ok", "quay.io/a")]) {
        let kind = object["kind"].as_str().unwrap().to_string();
        let a = ask(&s, "/validate-image", &review("CREATE", object)).await;
        assert_eq!(a["response"]["allowed"], true, "{kind}: {a}");
    }
    // init and ephemeral containers (kubectl debug adds the latter to a running pod)
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("p"), "spec": pod_spec(&[("ok", "quay.io/a")])});
    pod["spec"]["initContainers"] = containers(&[("init", "docker.io/library/nginx")]);
    pod["spec"]["ephemeralContainers"] =
        json!([{"name": "debugger", "image": "ghcr.io/x/debug", "targetContainerName": "ok"}]);
    let a = ask(&s, "/validate-image", &review("UPDATE", pod)).await;
    let m = message(&a);
    assert!(m.starts_with("2 images refused"), "{m}");
    assert!(m.contains("\"init\"") && m.contains("\"debugger\""), "every refused image is reported: {m}");
}

#[tokio::test]
async fn deletes_and_objects_without_images_are_allowed() {
    let s = serve(POLICY).await;
    let a = ask(&s, "/validate-image", &review("DELETE", deployment(&[("bad", "ghcr.io/x")]))).await;
    assert_eq!(a["response"]["allowed"], true);
    let empty = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("e"), "spec": {"replicas": 0}});
    let a = ask(&s, "/validate-image", &review("CREATE", empty)).await;
    assert_eq!(a["response"]["allowed"], true);
}

#[tokio::test]
async fn bad_input_gets_an_answer_and_never_an_allow() {
    let s = serve(POLICY).await;
    // not a review at all: 400 naming the problem (the API server then applies failurePolicy)
    for (body, want) in [
        (b"{not json".to_vec(), "not an AdmissionReview"),
        (
            br#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{"uid":"u"}}"#
                .to_vec(),
            "admissionReviewVersions",
        ),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), "no request"),
    ] {
        let r = s.req("POST", "/validate-image", &[], body).await;
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains(want), "{}", String::from_utf8_lossy(&r.body));
    }
    // an unknown kind, a malformed spec, an image that does not parse: refused with a reason
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("c"), "data": {}});
    let a = ask(&s, "/validate-image", &review("CREATE", cm)).await;
    assert_eq!(a["response"]["allowed"], false);
    assert_eq!(a["response"]["status"]["code"], 400);
    assert!(message(&a).contains("ConfigMap"), "{}", message(&a));
    let mut bad = deployment(&[]);
    bad["spec"]["template"]["spec"]["containers"] = json!("nginx");
    let a = ask(&s, "/validate-image", &review("CREATE", bad)).await;
    assert_eq!(a["response"]["allowed"], false);
    let a = ask(&s, "/validate-image", &review("CREATE", deployment(&[("x", "Not A Ref")]))).await;
    assert_eq!(a["response"]["allowed"], false);
    assert!(message(&a).contains("invalid image reference \"Not A Ref\""), "{}", message(&a));
    // other methods
    let r = s.req("GET", "/validate-image", &[], Bytes::new()).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "POST");
}

#[tokio::test]
async fn an_oversized_review_gets_413_and_the_connection_stays_usable() {
    use tokio::io::AsyncWriteExt;
    let config: donjon::ValidationConfig = serde_yaml::from_str(POLICY).unwrap();
    let s = TestServer::start_with(move |b| {
        b.validation(config.build(&["registry.example".into()], &[], None, None).unwrap().max_body(4096))
    })
    .await;
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let big = vec![b' '; 64 * 1024];
    let head = format!("POST /validate-image HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n", big.len());
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&big).await.unwrap();
    let mut buf = vec![];
    let r = donjon_test_support::server::read_response(&mut c, &mut buf).await.unwrap();
    assert_eq!(r.status, 413);
    // the same connection answers the next review (Go's client reuses it)
    let body = serde_json::to_vec(&review("CREATE", deployment(&[("a", "quay.io/a")]))).unwrap();
    let head = format!("POST /validate-image HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n", body.len());
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&body).await.unwrap();
    let r = donjon_test_support::server::read_response(&mut c, &mut buf).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn local_images_must_be_here() {
    let s = serve(POLICY).await;
    s.push_image("team/app", "1", "x").await;
    let a =
        ask(&s, "/validate-image", &review("CREATE", deployment(&[("a", "registry.example/team/app:1")])))
            .await;
    assert_eq!(a["response"]["allowed"], true, "{a}");
    let a =
        ask(&s, "/validate-image", &review("CREATE", deployment(&[("a", "registry.example/team/app:2")])))
            .await;
    assert_eq!(a["response"]["allowed"], false);
    assert!(
        message(&a)
            .contains("Local image registry.example/team/app:2 disallowed as not contained in this registry"),
        "{}",
        message(&a)
    );
    // a cached copy is fetched on pull, so it need not be here, but its upstream must be allowed
    let a =
        ask(&s, "/validate-image", &review("CREATE", deployment(&[("a", "registry.example/f/quay.io/x:1")])))
            .await;
    assert_eq!(a["response"]["allowed"], true, "{a}");
    let a = ask(
        &s,
        "/validate-image",
        &review("CREATE", deployment(&[("a", "registry.example/f/docker.io/library/nginx:1")])),
    )
    .await;
    assert_eq!(a["response"]["allowed"], false);
    assert!(message(&a).contains("cached copy of docker.io/library/nginx:1"), "{}", message(&a));
}

#[tokio::test]
async fn the_mutating_webhook_patches_cleanly_and_once() {
    let s = serve(POLICY).await;
    let images = [
        ("a", "nginx:1.25".to_string()),
        ("b", format!("quay.io/org/app@{D}")),
        ("c", "busybox:1.36".into()),
        ("d", "registry.example/team/app:1".into()),
        ("e", "ghcr.io/x/y:2".into()),
    ];
    let imgs: Vec<(&str, &str)> = images.iter().map(|(n, i)| (*n, i.as_str())).collect();
    let mut object = deployment(&imgs);
    object["spec"]["template"]["spec"]["initContainers"] = containers(&[("init", "docker.io/bitnami/git")]);
    let a = ask(&s, "/mutate-image", &review("CREATE", object.clone())).await;
    assert_eq!(a["response"]["allowed"], true);
    assert_eq!(a["response"]["patchType"], "JSONPatch");
    let raw =
        base64::engine::general_purpose::STANDARD.decode(a["response"]["patch"].as_str().unwrap()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&raw).unwrap();
    json_patch::patch(&mut object, &patch).expect("the patch applies");
    let spec = &object["spec"]["template"]["spec"];
    let got: Vec<&str> =
        spec["containers"].as_array().unwrap().iter().map(|c| c["image"].as_str().unwrap()).collect();
    assert_eq!(
        got,
        [
            "registry.example/f/docker.io/library/nginx:1.25",
            &format!("registry.example/f/quay.io/org/app@{D}"),
            "busybox:1.36",
            "registry.example/team/app:1",
            "ghcr.io/x/y:2",
        ]
    );
    assert_eq!(spec["initContainers"][0]["image"], "registry.example/f/docker.io/bitnami/git:latest");
    // a second pass adds nothing
    let a = ask(&s, "/mutate-image", &review("CREATE", object)).await;
    assert_eq!(a["response"]["allowed"], true);
    assert!(a["response"].get("patch").is_none(), "{a}");
}

#[tokio::test]
async fn without_a_mutator_mutate_image_is_not_served_and_other_paths_pass() {
    let s = serve("{default: Allow}").await;
    let r = s.req("POST", "/mutate-image", &[], Bytes::from_static(b"{}")).await;
    assert_eq!(r.status, 404);
    assert_eq!(s.get("/v2/").await.status, 200);
}

/// The binary, as a cluster runs it: TLS, the policy from its configuration file, and the
/// API server's way of calling (HTTPS, HTTP/2, a CA it was given).
#[test]
fn the_binary_serves_the_webhooks_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = donjon_test_support::server::self_signed(
        dir.path(),
        "donjon.donjon.svc",
        "DNS:donjon.donjon.svc,IP:127.0.0.1",
    );
    let config = dir.path().join("config.yml");
    std::fs::write(&config, format!("image_validation:{}", POLICY.replace('\n', "\n  "))).unwrap();
    let tls = format!("{},{}", cert.display(), key.display());
    let data = dir.path().join("data");
    let (config, data) = (config.to_str().unwrap(), data.to_str().unwrap());
    let (_donjon, addr) = donjon_test_support::spawn_donjon!(&[
        "-n",
        "registry.example",
        "--config-file",
        config,
        "--tls",
        &tls,
        "-d",
        data
    ]);
    let body = dir.path().join("review.json");
    let post = |object: Value, path: &str| {
        std::fs::write(&body, serde_json::to_vec(&review("CREATE", object)).unwrap()).unwrap();
        let out = Command::new("curl")
            .args(["-sS", "--http2", "--cacert"])
            .arg(&cert)
            .args(["-H", "content-type: application/json", "--data-binary"])
            .arg(format!("@{}", body.display()))
            .arg(format!("https://{addr}{path}"))
            .output()
            .expect("curl is needed for this test");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let a = post(deployment(&[("app", "quay.io/org/app:1"), ("proxy", "nginx:1.25")]), "/validate-image");
    assert_eq!(a["response"]["allowed"], false);
    assert!(message(&a).contains("docker.io/library/nginx:1.25"), "{a}");
    let a = post(deployment(&[("app", "quay.io/org/app:1")]), "/validate-image");
    assert_eq!(a["response"]["allowed"], true);
    let a = post(deployment(&[("app", "quay.io/org/app:1")]), "/mutate-image");
    assert_eq!(a["response"]["patchType"], "JSONPatch", "{a}");
}

#[test]
fn check_image_prints_each_decision_and_fails_on_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "default: Deny\nallow: [quay.io/]\ndeny: [quay.io/bad/]\n").unwrap();
    let run = |images: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_donjon"))
            .arg("check-image")
            .args(images)
            .arg("--image-validation-config-file")
            .arg(&policy)
            .output()
            .unwrap()
    };
    let out = run(&["quay.io/good/app:1"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "allowed  quay.io/good/app:1  quay.io/good/app:1 is allowed by `quay.io/` (allow list)\n"
    );
    let out = run(&["quay.io/good/app:1", "quay.io/bad/x", "nginx"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].starts_with("refused  quay.io/bad/x  ") && lines[1].contains("deny list"), "{text}");
    assert!(
        lines[2].contains("neither explicitly allowed nor denied (using default behaviour: Deny)"),
        "{text}"
    );
    // no policy: a clear error, status 2
    let out = Command::new(env!("CARGO_BIN_EXE_donjon")).args(["check-image", "nginx"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no image policy configured"));
}
