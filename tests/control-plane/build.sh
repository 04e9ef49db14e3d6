#!/usr/bin/env bash
# Builds the real Kubernetes control plane that tidecache's end-to-end tests run
# against — etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy,
# kubectl and kubelet (the last for tests/tests/real_kubelet.rs) — from their Go modules,
# pinned by the two consumer modules next to this script (kubernetes/go.mod and
# etcd/go.mod, with their go.sum).
#
# The binaries go to a cache directory outside the repository, keyed by version, so a
# rerun costs nothing:
#   ${TIDECACHE_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidecache/control-plane}/<k8s>-<etcd>/
# Progress goes to stderr; the last line on stdout is that directory, which is what the
# Rust harness (tests/src/control_plane) reads.
#
# Needs only Go and the module proxy. Builds with CGO_ENABLED=0 under `nice -n 19`,
# because other builds share this machine.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl kubelet)

log() { printf '[control-plane] %s\n' "$*" >&2; }

# Read from go.mod directly: the up-to-date check must not need the network or a
# populated module cache.
module_version() { # <module dir> <module path>
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/$1/go.mod"
}
k8s_version=$(module_version kubernetes k8s.io/kubernetes)
etcd_version=$(module_version etcd go.etcd.io/etcd/server/v3)
[[ -n $k8s_version && -n $etcd_version ]] || { log "cannot read the versions from the go.mod files"; exit 1; }

cache_root=${TIDECACHE_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-${HOME:?set HOME, XDG_CACHE_HOME or TIDECACHE_CONTROL_PLANE_CACHE}/.cache}/tidecache/control-plane}
out="$cache_root/$k8s_version-$etcd_version"

all_present() {
  local b
  for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || return 1; done
}

mkdir -p "$out"
if all_present; then
  log "up to date: Kubernetes $k8s_version, etcd $etcd_version"
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH: it is needed to build $out"; exit 1; }

# Several test processes may ask for the binaries at once: one builds, the others wait.
exec 9>"$out/.lock"
if command -v flock >/dev/null && ! flock -n 9; then
  log "another process is building; waiting for the lock $out/.lock"
  flock 9
fi
if all_present; then
  log "built by another process meanwhile"
  echo "$out"
  exit 0
fi

export CGO_ENABLED=0
start=$SECONDS
# Go's build cache for these modules grows to about 4 GB; only the binaries are worth
# keeping, so it lives beside them and is removed once they are built.
export GOCACHE="$(cd "$out" && pwd)/.gocache"

# The release's publication time (from the module proxy) is the build date, so that the
# binaries report the same metadata on every machine. The module carries no git commit.
build_date=$(cd "$here/kubernetes" &&
  go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)
[[ -n $build_date ]] || build_date=1970-01-01T00:00:00Z

minor=${k8s_version#v*.}
minor=${minor%%.*}
major=${k8s_version#v}
major=${major%%.*}
version_ldflags=""
# kube-* read k8s.io/component-base/version; kubectl's client side also reads
# k8s.io/client-go/pkg/version. Without these, everything reports v0.0.0-master.
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_ldflags+=" -X $pkg.gitVersion=$k8s_version"
  version_ldflags+=" -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  version_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  version_ldflags+=" -X $pkg.gitCommit=unknown"
done

# Build into a scratch name and rename, so an interrupted build never leaves a
# truncated binary that all_present would accept.
build() { # <name> <module dir> <package> [ldflags]
  local name=$1 dir=$2 pkg=$3 ldflags=${4:-}
  local t0=$SECONDS
  if [[ -x "$out/$name" ]]; then
    log "$name: already built"
    return
  fi
  log "$name: building $pkg (elapsed $((t0 - start))s)"
  (cd "$here/$dir" &&
    nice -n 19 go build -trimpath -ldflags "-s -w $ldflags" -o "$out/.$name.partial" "$pkg")
  mv -f "$out/.$name.partial" "$out/$name"
  log "$name: done in $((SECONDS - t0))s (elapsed $((SECONDS - start))s)"
}

# A binary added to the list after the others were cached (kubelet was) is built alone;
# the ones already there are kept, so say which are missing.
missing=()
for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || missing+=("$b"); done
log "building Kubernetes $k8s_version and etcd $etcd_version into $out (missing: ${missing[*]})"
build etcd etcd go.etcd.io/etcd/server/v3
for b in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl kubelet; do
  build "$b" kubernetes "k8s.io/kubernetes/cmd/$b" "$version_ldflags"
done
rm -rf "$GOCACHE"
log "all binaries built in $((SECONDS - start))s"
echo "$out"
