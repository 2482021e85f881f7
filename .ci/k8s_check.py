#!/usr/bin/env python3
"""Checks a rendered donjon overlay beyond its schema: what the issue asks of the Deployment
(UID/GID/fsGroup 333333, read-only root, no capabilities, probes on /readiness and /healthz,
resource requests), what each overlay promises (S3: two replicas and no claim; htpasswd and
TLS: their Secrets mounted, HTTPS probes; mirror: the NodePort and the hosts.toml DaemonSet),
and that donjon itself takes the configuration the pod would get: the ConfigMap's config.yml
and the container's environment, with the Secrets' files stood in for, through
`donjon --dry-run`.

    k8s_check.py OVERLAY RENDERED.yaml [DONJON_BINARY]
    k8s_check.py --images-of KUSTOMIZATION.yaml NAME RENDERED.yaml [DONJON_BINARY]

With --images-of (a user's own kustomization over an overlay, deploy/kubernetes/examples/),
every container image of the rendered output must be one that the kustomization's `images:`
entries set (newName with newTag or digest), and nothing may still name `localhost/`: the
overlay's own image is one no node can pull.
"""

import os
import subprocess
import sys
import tempfile

import yaml

# alice:alice-pw, bcrypt (htpasswd -nbB alice alice-pw)
HTPASSWD = "alice:$2y$05$dzDbhzud9picsHJevaclFeKpH/KDKoApg2jg7J.X4AyaTBbZVuecO\n"


def fail(msg):
    print(f"k8s_check: {OVERLAY}: {msg}", file=sys.stderr)
    sys.exit(1)


def need(cond, msg):
    if not cond:
        fail(msg)


def find(kind, name=None):
    return [d for d in DOCS if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def containers(doc):
    """The containers of a workload or pod, init and ephemeral ones included."""
    spec = doc.get("spec", {})
    spec = spec.get("jobTemplate", {}).get("spec", spec)
    pod = spec.get("template", {}).get("spec", spec)
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(key) or []


def check_images(kustomization):
    """What a user's `images:` override promises: every image is one it sets."""
    with open(kustomization) as f:
        k = yaml.safe_load(f)
    wanted = set()
    for e in k.get("images") or []:
        name = e.get("newName", e["name"])
        if "digest" in e:
            wanted.add(f"{name}@{e['digest']}")
        elif "newTag" in e:
            wanted.add(f"{name}:{e['newTag']}")
        else:
            wanted.add(name)
    need(wanted, f"{kustomization} overrides no image")
    seen = [(d["kind"], d["metadata"]["name"], c["name"], c["image"])
            for d in DOCS for c in containers(d)]
    need(seen, "no containers rendered")
    for kind, name, cname, image in seen:
        need(image in wanted, f"{kind} {name}, container {cname}: image {image}, not one of "
             f"{sorted(wanted)} that {kustomization} sets")
    with open(RENDERED) as f:
        need("localhost/" not in f.read(), "the output still names a localhost/ image")
    print(f"k8s_check: {OVERLAY}: every image is the override: "
          f"{', '.join(sorted({s[3] for s in seen}))}")


def main():
    global OVERLAY, DOCS, RENDERED
    args = sys.argv[1:]
    images_of = None
    if args[:1] == ["--images-of"]:
        images_of, args = args[1], args[2:]
    OVERLAY, rendered = args[0], args[1]
    RENDERED = rendered
    binary = args[2] if len(args) > 2 else None
    with open(rendered) as f:
        DOCS = [d for d in yaml.safe_load_all(f) if d]
    if images_of:
        check_images(images_of)

    deps = find("Deployment", "donjon")
    need(len(deps) == 1, "no Deployment donjon")
    dep = deps[0]
    pod = dep["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    for k in ("runAsUser", "runAsGroup", "fsGroup"):
        need(psc.get(k) == 333333, f"pod securityContext.{k} is {psc.get(k)!r}, not 333333")
    need(psc.get("runAsNonRoot") is True, "runAsNonRoot is not set")
    (c,) = [c for c in pod["containers"] if c["name"] == "donjon"]
    sc = c.get("securityContext", {})
    need(sc.get("readOnlyRootFilesystem") is True, "the root filesystem is writable")
    need(sc.get("allowPrivilegeEscalation") is False, "privilege escalation is allowed")
    need(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities are not all dropped")
    need(c["readinessProbe"]["httpGet"]["path"] == "/readiness", "readiness probe path")
    need(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe path")
    need(c.get("resources", {}).get("requests"), "no resource requests")
    env = {e["name"]: e for e in c.get("env", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    for name in mounts:
        need(name in volumes, f"volume {name} is mounted but not defined")
    secrets = sorted({v["secret"]["secretName"] for v in volumes.values() if "secret" in v}
                     | {e["valueFrom"]["secretKeyRef"]["name"] for e in env.values()
                        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]})

    claims = find("PersistentVolumeClaim")
    scheme = c["readinessProbe"]["httpGet"].get("scheme", "HTTP")
    tls = "REGISTRY_HTTP_TLS_CERTIFICATE" in env
    need((scheme == "HTTPS") == tls, f"probes on {scheme} with TLS {'on' if tls else 'off'}")
    s3 = "REGISTRY_STORAGE_S3_BUCKET" in env
    if s3:
        need(dep["spec"]["replicas"] >= 2, "S3 but fewer than two replicas")
        need(not claims, "S3 but a PersistentVolumeClaim")
        need("emptyDir" in volumes["data"], "S3 but /data is not scratch space")
        for k in ("REGISTRY_STORAGE_S3_ACCESSKEY", "REGISTRY_STORAGE_S3_SECRETKEY"):
            need("secretKeyRef" in env[k].get("valueFrom", {}), f"{k} is not from a Secret")
    else:
        need(dep["spec"]["replicas"] == 1, "several replicas on one volume")
        need(dep["spec"]["strategy"]["type"] == "Recreate", "a rolling update on one volume")
        need(len(claims) == 1 and volumes["data"]["persistentVolumeClaim"]["claimName"]
             == claims[0]["metadata"]["name"], "/data is not the claim")
    if OVERLAY in ("mirror",):
        svc = find("Service", "donjon-mirror")
        need(svc and svc[0]["spec"].get("clusterIP"), "no fixed cluster IP for the nodes' containerd")
        need(svc[0]["spec"].get("type", "ClusterIP") == "ClusterIP", "the mirror is published on the nodes")
        ds = find("DaemonSet", "donjon-containerd-hosts")
        need(ds, "no DaemonSet writing hosts.toml")
        tomls = [cm for cm in find("ConfigMap") if "docker.io.toml" in cm.get("data", {})]
        need(tomls, "no hosts.toml ConfigMap")
        at = f"http://{svc[0]['spec']['clusterIP']}:{svc[0]['spec']['ports'][0]['port']}"
        for name, text in tomls[0]["data"].items():
            need(f'[host."{at}"]' in text, f"{name} does not name the mirror's Service ({at})")
        size = claims[0]["spec"]["resources"]["requests"]["storage"]
        need(size.endswith("Gi") and int(size[:-2]) >= 50, f"a {size} claim for the cache")
    if OVERLAY == "ingress":
        (ing,) = find("Ingress")
        ann = ing["metadata"].get("annotations", {})
        need(ann.get("nginx.ingress.kubernetes.io/proxy-body-size") == "0", "body size limited")

    # The configuration as the pod gets it.
    cm_name = volumes["config"]["configMap"]["name"]
    cms = find("ConfigMap", cm_name)
    need(cms, f"ConfigMap {cm_name} (the config volume) is not rendered")
    config = cms[0]["data"]["config.yml"]
    print(f"k8s_check: {OVERLAY}: the Deployment holds; needs Secrets: {', '.join(secrets) or 'none'}")
    if not binary:
        return
    with tempfile.TemporaryDirectory() as root:
        def local(path):
            for name, mp in mounts.items():
                if path == mp or path.startswith(mp.rstrip("/") + "/"):
                    return root + path
            return path

        # The Secrets' files, at their mount paths under root.
        for name, mp in mounts.items():
            v = volumes[name]
            os.makedirs(root + mp, exist_ok=True)
            if "secret" in v and v["secret"]["secretName"].endswith("htpasswd"):
                with open(f"{root}{mp}/htpasswd", "w") as f:
                    f.write(HTPASSWD)
            if "secret" in v and "tls" in v["secret"]["secretName"]:
                subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                                "/CN=donjon", "-keyout", f"{root}{mp}/tls.key", "-out",
                                f"{root}{mp}/tls.crt"], check=True, capture_output=True)
        # The ConfigMap's files where the pod mounts them (data_dir moved under root too).
        cfg = yaml.safe_load(config) or {}
        for k in ("data_dir",):
            if k in cfg:
                cfg[k] = local(cfg[k])
        config_dir = root + mounts["config"]
        os.makedirs(config_dir, exist_ok=True)
        with open(os.path.join(config_dir, "config.yml"), "w") as f:
            yaml.safe_dump(cfg, f)
        run_env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("REGISTRY_", "DONJON_", "AWS_"))}
        for k, e in env.items():
            if "value" in e:
                run_env[k] = local(e["value"]) if e["value"].startswith("/") else e["value"]
            else:
                run_env[k] = f"from-secret-{k.lower()}"
        need("DONJON_CONFIG_FILE" in run_env, "the pod names no configuration file")
        out = subprocess.run([binary, "--dry-run"], env=run_env, capture_output=True, text=True)
        need(out.returncode == 0, f"donjon refuses the pod's configuration:\n{out.stderr}")
        need(" WARN " not in out.stderr, f"donjon warns about the pod's configuration:\n{out.stderr}")
        settings = yaml.safe_load(out.stdout)
        need(settings["bind"] == "0.0.0.0:8000", f"binds {settings['bind']}")
        need(settings["tls"] is not None if tls else settings["tls"] is None, "TLS setting")
        backend = settings["storage"].get("s3")
        need(bool(backend) == s3, f"storage backend: {settings['storage']}")
        if "REGISTRY_AUTH_HTPASSWD_PATH" in env:
            need(settings["auth"].get("htpasswd"), f"no htpasswd in {settings['auth']}")
        if OVERLAY == "mirror":
            need(settings["proxy"].get("registries"), f"no registry_proxies: {settings['proxy']}")
        if OVERLAY == "webhooks":
            need(settings.get("validation"), "no image policy")
        print(f"k8s_check: {OVERLAY}: donjon --dry-run takes the pod's configuration")


if __name__ == "__main__":
    main()
