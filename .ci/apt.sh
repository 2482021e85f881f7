# Sourced by the .ci/*-deps.sh scripts. `apt_install TAG PKG...` installs the Debian packages
# among PKG that are not installed yet, quietly (the apt log is printed only on failure), with
# `apt-get update` only when something is missing and no recommends. Returns 0 when it installed
# something and 1 when nothing was missing; exits on an apt failure. As root, or via sudo.

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

apt_install() {
  local tag="$1" p log
  shift
  local missing=()
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  [ "${#missing[@]}" -gt 0 ] || return 1
  echo "$tag: installing ${missing[*]}"
  log="$(mktemp)"
  if ! { DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "$tag: apt-get failed" >&2
    exit 1
  fi
  rm -f "$log"
}
