//! donjon's own container image (deploy/container): built with `buildah bud` from no base
//! image, run with podman as UID 333333 on a read-only root with a volume for `/data`, its
//! health command, an image pushed and pulled through it with skopeo, the donjon image pushed
//! into the running donjon itself, and the "Permission denied" of a volume that user cannot
//! write, reported with the path and the UID.

use std::fs;
use std::time::Duration;

use serde_json::Value;

use super::support::*;

/// The release build inside the image build: minutes on a fresh machine.
const BUILD: Duration = Duration::from_secs(1800);

#[test]
fn the_image_runs_read_only_serves_and_holds_itself() {
    require_e2e!();
    let _heavy = heavy_lock();
    let s = Scratch::new("container");
    let containers = Containers::new(&s, "127.0.0.1");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let archive = s.join("donjon.tar");

    // Built into this suite's private storage, and as an OCI archive.
    let mut build = cmd("bash");
    build.arg(repo.join("deploy/container/build.sh")).current_dir(repo);
    containers.env(&mut build);
    build.env("BUILDAH_ARGS", containers.storage_flags().join(" ")).env("OUT", &archive);
    let said = ok_with(&mut build, BUILD);
    println!("{said}");
    let version = env!("CARGO_PKG_VERSION");
    let image = format!("localhost/donjon:{version}");

    // What the image is: no base layer, the user, the entry point, the health command.
    let inspect = ok(containers.buildah().args(["inspect", "--type", "image", &image]));
    let inspect: Value = serde_json::from_str(&inspect).unwrap();
    let config = &inspect["Docker"]["config"];
    assert_eq!(config["User"], "333333:333333", "{config}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/donjon"]), "{config}");
    assert_eq!(
        config["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/donjon", "healthcheck"]),
        "{config}"
    );
    assert_eq!(
        inspect["Docker"]["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(1),
        "one layer, no base"
    );
    let files = ok(containers.podman().args(["image", "mount", &image]));
    let root = std::path::PathBuf::from(files.trim());
    let mut top: Vec<String> =
        fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    top.sort();
    assert!(
        top.iter()
            .all(|f| ["bin", "data", "donjon", "etc", "lib", "lib64", "tmp", "usr"].contains(&f.as_str())),
        "{top:?}"
    );
    assert!(root.join("etc/ssl/certs/ca-certificates.crt").is_file());
    assert_eq!(fs::read_link(root.join("bin/registry")).unwrap(), std::path::Path::new("/donjon"));
    ok(containers.podman().args(["image", "unmount", &image]));
    let size = ok(containers.podman().args(["image", "inspect", "--format", "{{.Size}}", &image]));
    println!("image size: {} bytes", size.trim());

    // The start-up failure of a volume owned by root (Trow's volumes need UID 333333).
    let owned_by_root = s.dir("root-owned");
    let port = free_port();
    let cfg = s.join("config.yml");
    fs::write(&cfg, format!("bind: 127.0.0.1:{port}\ndata_dir: /data\n")).unwrap();
    let run = |name: &str, volume: &str| {
        let mut c = containers.podman();
        c.args(["run", "-d", "--name", name, "--network", "host", "--read-only"]);
        c.args(Containers::ulimits());
        c.arg("-v").arg(format!("{}:/etc/donjon/config.yml:ro", cfg.display()));
        c.arg("-v").arg(format!("{volume}:/data"));
        c.arg(&image);
        ok(&mut c)
    };
    run("refused", &owned_by_root.display().to_string());
    let code = wait_exit(&containers, "refused");
    assert_ne!(code, 0, "donjon served a volume it cannot write");
    let logs = logs_of(&containers, "refused");
    println!("{logs}");
    assert!(logs.contains("data directory /data is not writable"), "{logs}");
    assert!(logs.contains("runs as uid 333333 gid 333333"), "{logs}");
    assert!(logs.contains("chown -R 333333:333333"), "{logs}");

    // A named volume takes the image's /data, owned by 333333.
    run("donjon", "donjon-data");
    let host = format!("127.0.0.1:{port}");
    let up = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect(&host).is_ok()
    });
    if !up {
        let state = ok(containers.podman().args(["ps", "-a", "--format", "{{.Names}} {{.Status}}"]));
        let logs = logs_of(&containers, "donjon");
        panic!("the container did not listen on {host}: {state}\n{logs}");
    }
    // The image's own health command.
    ok(containers.podman().args(["healthcheck", "run", "donjon"]));
    // Distribution's command line works in it: `/bin/registry serve CONFIG`.
    let dry = ["exec", "donjon", "/bin/registry", "--dry-run", "serve", "/etc/donjon/config.yml"];
    let settings = ok(containers.podman().args(dry));
    assert!(settings.contains("data_dir: /data"), "{settings}");
    let ver = ok(containers.podman().args(["exec", "donjon", "/donjon", "--version"]));
    assert!(ver.starts_with(&format!("donjon {version} (")), "{ver}");

    // Push and pull through it.
    let (layout, img) = fixtures::busybox(s.join("in"), "v1").unwrap();
    let reference = format!("docker://{host}/e2e/busybox:v1");
    skopeo_copy(&s, &[], &layout.reference("v1"), &reference);
    let blobs: Vec<&str> = img.layers.iter().map(|l| l.digest.as_str()).collect();
    copy_out_and_check(&s, &[], &reference, &s.join("out"), "v1", &img.manifest.digest, &blobs);

    // donjon's image into donjon, and back out whole.
    let own = format!("docker://{host}/donjon:{version}");
    skopeo_copy_with(&s, &[], &format!("docker-archive:{}", archive.display()), &own, LARGE_TIMEOUT);
    let pulled = s.join("own");
    skopeo_copy_with(&s, &[], &own, &format!("oci:{}:{version}", pulled.display()), LARGE_TIMEOUT);
    let manifest: Value = serde_json::from_slice(&skopeo_raw(&s, &own)).unwrap();
    // The health command came along (the Docker format has it; a copy into an OCI layout
    // converts the config, so it is read from the registry).
    assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    let cfg_digest = manifest["config"]["digest"].as_str().unwrap();
    let r = http(&host, "GET", &format!("/v2/donjon/blobs/{cfg_digest}"), &[]).unwrap();
    assert_eq!(r.status, 200);
    let pushed_config = r.json();
    assert_eq!(
        pushed_config["config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/donjon", "healthcheck"])
    );
    for layer in manifest["layers"].as_array().unwrap() {
        let hex = layer["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
        assert_eq!(file_sha256(&pulled.join("blobs/sha256").join(hex)), hex);
    }

    // SIGTERM drains and exits 0; the data is in the volume, owned by the image's user.
    ok(containers.podman().args(["stop", "-t", "20", "donjon"]));
    assert_eq!(wait_exit(&containers, "donjon"), 0, "{}", logs_of(&containers, "donjon"));
    let mount =
        ok(containers.podman().args(["volume", "inspect", "--format", "{{.Mountpoint}}", "donjon-data"]));
    let blobs = std::path::Path::new(mount.trim()).join("docker/registry/v2/blobs");
    assert!(blobs.is_dir(), "no blobs under {}", blobs.display());
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(fs::metadata(mount.trim()).unwrap().uid(), 333333);
    let _ = containers.podman().args(["rm", "-f", "donjon", "refused"]).output();
    let _ = containers.podman().args(["volume", "rm", "-f", "donjon-data"]).output();
}

/// What container `name` wrote (podman hands its stderr on as its own).
fn logs_of(containers: &Containers, name: &str) -> String {
    let out = run_with(containers.podman().args(["logs", name]), TIMEOUT);
    assert!(out.success(), "{}", out.describe());
    out.stdout + &out.stderr
}

/// The exit code of container `name`, once it has stopped.
fn wait_exit(containers: &Containers, name: &str) -> i64 {
    for _ in 0..300 {
        let state = ok(containers.podman().args([
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            name,
        ]));
        let mut words = state.split_whitespace();
        if let (Some("exited" | "stopped"), Some(code)) = (words.next(), words.next()) {
            return code.parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("container {name} did not stop");
}
