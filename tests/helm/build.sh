#!/usr/bin/env bash
# Builds the Helm CLI that tidecache's chart tests (tests/tests/helm.rs) run, from its Go
# module, pinned by the consumer module next to this script (go.mod, with its go.sum and a
# `tool` directive for helm.sh/helm/v4/cmd/helm).
#
# The binary goes to a cache directory outside the repository, keyed by version, so a rerun
# costs nothing:
#   ${TIDECACHE_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidecache/helm}/<version>/helm
# Progress goes to stderr; the last line on stdout is the binary's path, which is what the
# tests read. The same conventions as ../control-plane/build.sh: only Go and the module proxy
# are needed, CGO_ENABLED=0 under `nice -n 19` (other builds share the machine), a lock for
# concurrent callers, and a scratch name renamed into place.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf '[helm] %s\n' "$*" >&2; }

# Read from go.mod directly: the up-to-date check must not need the network or a populated
# module cache.
version=$(awk '$1 == "helm.sh/helm/v4" && $2 ~ /^v/ { print $2; exit }
               $1 == "require" && $2 == "helm.sh/helm/v4" { print $3; exit }' "$here/go.mod")
[[ -n $version ]] || { log "cannot read the helm.sh/helm/v4 version from $here/go.mod"; exit 1; }

cache_root=${TIDECACHE_HELM_CACHE:-${XDG_CACHE_HOME:-${HOME:?set HOME, XDG_CACHE_HOME or TIDECACHE_HELM_CACHE}/.cache}/tidecache/helm}
out="$cache_root/$version"
binary="$out/helm"

mkdir -p "$out"
if [[ -x $binary ]]; then
  log "up to date: Helm $version"
  echo "$binary"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH: it is needed to build $binary"; exit 1; }

# Several test processes may ask for the binary at once: one builds, the others wait.
exec 9>"$out/.lock"
if command -v flock >/dev/null && ! flock -n 9; then
  log "another process is building; waiting for the lock $out/.lock"
  flock 9
fi
if [[ -x $binary ]]; then
  log "built by another process meanwhile"
  echo "$binary"
  exit 0
fi

export CGO_ENABLED=0
start=$SECONDS
# Only the binary is worth keeping: Go's build cache for the module lives beside it and is
# removed once it is built.
export GOCACHE="$(cd "$out" && pwd)/.gocache"

# What upstream's Makefile sets, so that `helm version` reports the release (otherwise only
# "v4.3"). The module carries no git commit.
ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$version"
ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"

log "building Helm $version into $out"
(cd "$here" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$out/.helm.partial" helm.sh/helm/v4/cmd/helm)
mv -f "$out/.helm.partial" "$binary"
rm -rf "$GOCACHE"
log "helm: done in $((SECONDS - start))s"
echo "$binary"
