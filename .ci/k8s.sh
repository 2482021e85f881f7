#!/usr/bin/env bash
# Renders every kustomization under deploy/ with `kubectl kustomize` and validates the result
# against the Kubernetes schemas (`kubernetes-validate --strict`, from PyPI, installed when
# missing). Kinds outside Kubernetes (cert-manager's) have no schema there and are warned of.
# Components (deploy/kubernetes/components) render as parts of the overlays that use them.
# Each overlay under deploy/kubernetes/overlays is then checked by .ci/k8s_check.py: what the
# Deployment must hold, and that donjon (target/debug/donjon, when built) takes the pod's
# configuration with `--dry-run`. A user's own kustomization over an overlay
# (deploy/kubernetes/examples) gets the same checks, and must leave no image but the ones its
# `images:` override sets (docs/deploy.md, "The image your nodes pull").
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v kubectl >/dev/null; then
  echo "k8s: kubectl is missing (apt-get install kubernetes-client, or the kubectl binary)" >&2
  exit 1
fi
if ! command -v kubernetes-validate >/dev/null; then
  echo "k8s: installing kubernetes-validate"
  python3 -m pip install --quiet kubernetes-validate
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
found=0
for k in $(find deploy -name kustomization.yaml | sort); do
  dir="$(dirname "$k")"
  if grep -q '^kind: Component' "$k"; then continue; fi
  name="$(echo "$dir" | tr / _)"
  kubectl kustomize "$dir" > "$out/$name.yaml"
  kubernetes-validate --strict --quiet "$out/$name.yaml"
  echo "k8s: $dir renders and validates"
  case "$dir" in
    deploy/kubernetes/overlays/*)
      bin=target/debug/donjon; [ -x "$bin" ] || bin=""
      python3 .ci/k8s_check.py "$(basename "$dir")" "$out/$name.yaml" $bin ;;
    deploy/kubernetes/examples/*)
      bin=target/debug/donjon; [ -x "$bin" ] || bin=""
      python3 .ci/k8s_check.py --images-of "$k" "$(basename "$dir")" "$out/$name.yaml" $bin ;;
  esac
  found=$((found + 1))
done
[ "$found" -gt 0 ] || { echo "k8s: no kustomization under deploy/" >&2; exit 1; }
