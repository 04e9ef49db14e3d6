#!/usr/bin/env bash
# Builds the Prometheus server that tidecache's monitoring test (tests/tests/prometheus.rs)
# runs against deploy/monitoring/, from its Go module, pinned by the consumer module next to
# this script (go.mod, with its go.sum and a `tool` directive for
# github.com/prometheus/prometheus/cmd/prometheus). Prometheus 3 tags its Go module
# v0.3MM.P for the release v3.MM.P, so v0.316.0 is Prometheus 3.16.0.
#
# The binary goes to a cache directory outside the repository, keyed by version, so a rerun
# costs nothing:
#   ${TIDECACHE_PROMETHEUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidecache/prometheus}/<version>/prometheus
# Progress goes to stderr; the last line on stdout is the binary's path, which is what the
# test reads. The same conventions as ../helm/build.sh: only Go and the module proxy are
# needed, CGO_ENABLED=0 under `nice -n 19` and one package at a time (other builds share the
# machine), a lock for concurrent callers, and a scratch name renamed into place.
#
# Two build tags differ from upstream's release build (.promu.yml):
# - no `builtinassets`: that embeds the web UI, which only npm can build; without it the UI
#   is served from ./web/ui/static under the working directory, absent here, so the UI
#   answers 404 while the HTTP API, the scraper and the rule engine are the same code.
# - `remove_all_sd`: leaves out the cloud and Kubernetes service discoveries (a third of the
#   packages); the test scrapes static targets, and file and HTTP discovery stay in.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf '[prometheus] %s\n' "$*" >&2; }

# Read from go.mod directly: the up-to-date check must not need the network or a populated
# module cache.
version=$(awk '$1 == "github.com/prometheus/prometheus" && $2 ~ /^v/ { print $2; exit }
               $1 == "require" && $2 == "github.com/prometheus/prometheus" { print $3; exit }' "$here/go.mod")
[[ $version =~ ^v0\.([0-9]+)([0-9][0-9])\.([0-9]+)$ ]] ||
  { log "cannot read a v0.3MM.P version of github.com/prometheus/prometheus from $here/go.mod (read '$version')"; exit 1; }
# v0.316.0 -> 3.16.0 (no leading zero on the minor: upstream writes 3.1.0 as v0.301.0).
release="${BASH_REMATCH[1]}.$((10#${BASH_REMATCH[2]})).${BASH_REMATCH[3]}"

cache_root=${TIDECACHE_PROMETHEUS_CACHE:-${XDG_CACHE_HOME:-${HOME:?set HOME, XDG_CACHE_HOME or TIDECACHE_PROMETHEUS_CACHE}/.cache}/tidecache/prometheus}
out="$cache_root/$version"
binary="$out/prometheus"

mkdir -p "$out"
if [[ -x $binary ]]; then
  log "up to date: Prometheus $release ($version)"
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
# One package at a time: slower, but it leaves the other cores to whatever shares the machine.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-p=1"
start=$SECONDS
# Only the binary is worth keeping: Go's build cache for the module lives beside it and is
# removed once it is built.
export GOCACHE="$(cd "$out" && pwd)/.gocache"

# What upstream's .promu.yml sets, so that `prometheus --version` and
# prometheus_build_info report the release. The module carries no git commit; the build date
# is the release's publication time (from the module proxy), the same on every machine.
build_date=$(cd "$here" &&
  go list -m -f '{{if .Time}}{{.Time.UTC.Format "20060102-15:04:05"}}{{end}}' github.com/prometheus/prometheus)
ldflags="-s -w"
ldflags+=" -X github.com/prometheus/common/version.BuildDate=${build_date:-19700101-00:00:00}"
ldflags+=" -X github.com/prometheus/common/version.Version=$release"
ldflags+=" -X github.com/prometheus/common/version.Revision=unknown"
ldflags+=" -X github.com/prometheus/common/version.Branch=$version"
ldflags+=" -X github.com/prometheus/common/version.BuildUser=tidecache"

pkg=github.com/prometheus/prometheus/cmd/prometheus
# Listing the packages fetches the modules they are in, if the module cache lacks them.
log "resolving the packages of $pkg (fetches missing modules from the proxy)"
total=$(cd "$here" && go list -tags remove_all_sd -deps "$pkg" | wc -l)
log "building Prometheus $release ($version) into $out: about $total packages, one at a time"
# `go build -v` names each package as it compiles it: count them into a progress line every
# 50 packages instead of printing a thousand names; anything else (errors) passes through.
if ! (cd "$here" && nice -n 19 go build -v -trimpath -tags remove_all_sd -ldflags "$ldflags" \
  -o "$out/.prometheus.partial" "$pkg") 2>&1 |
  awk -v total="$total" '
    /^[A-Za-z0-9._~\/-]+$/ {
      if (++n % 50 == 0) { printf "[prometheus] compiled %d of about %d packages\n", n, total > "/dev/stderr"; fflush("/dev/stderr") }
      next
    }
    { print > "/dev/stderr"; fflush("/dev/stderr") }'; then
  log "go build failed"
  exit 1
fi
mv -f "$out/.prometheus.partial" "$binary"
rm -rf "$GOCACHE"
log "prometheus: done in $((SECONDS - start))s"
echo "$binary"
