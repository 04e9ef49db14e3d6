#!/usr/bin/env bash
# Builds the container images of this workspace (cache-node, janitor, operator) and,
# with --toolbox, the test-only client image, as OCI image layouts under --out, with
# buildah and without any registry.
#
# Why: the test kubelet (tests/src/kubelet/) runs pods from real images with runc, so the
# end-to-end tests exercise what a cluster would run: an image holding only the binary and
# what it needs, its own /etc/passwd, its configured user, entrypoint and environment. No
# registry can be reached here, so the images are written as OCI layouts on disk
# (`$OUT/<name>/index.json` + blobs, one layout per image name, one index entry per tag)
# and the kubelet unpacks them (tests/src/kubelet/images.rs).
#
# Each of the three images is `FROM scratch` with:
#   /usr/local/bin/<name>                    the binary (the entrypoint)
#   every library `ldd` lists, at its path   including the dynamic loader
#   /etc/passwd, /etc/group                  root (0) and nonroot (65532), as distroless's
#   /etc/ssl/certs/ca-certificates.crt       the host's, when it has one
#   /tmp                                     empty, mode 1777
# and runs as 65532:65532. The toolbox (`tidecache-test/toolbox:latest`, layout
# `$OUT/toolbox`) is a Debian rootfs made by mmdebstrap from the host's apt sources with a
# shell, python3, redis-cli, procps, iproute2 and libcap2-bin, for client pods; its
# tarball is cached in ${XDG_CACHE_HOME:-$HOME/.cache}/tidecache/images/.
#
# Usage: tests/images/build.sh --out DIR [--binaries DIR] [--tag TAG]... [--toolbox]
#   --binaries DIR  directory holding the cache-node, janitor and operator executables;
#                   without it: cargo build --release --locked, and target/release is used
#   --tag TAG       tag to give every image (repeatable); default: the workspace version
#   --toolbox       also build tidecache-test/toolbox:latest
#
# Needs root, buildah and (for --toolbox) mmdebstrap: apt-get install -y buildah mmdebstrap.
# Concurrent callers wait for each other (flock on $OUT/.lock). Every call rebuilds the
# three images (a few seconds); the toolbox layout is rebuilt only when its recipe changes.
# Progress goes to stderr, one line per step.
set -euo pipefail

say() { echo "images: $*" >&2; }
die() { say "error: $*"; exit 1; }
usage() { sed -n 's/^# Usage: //p' "$0" >&2; exit 2; }

out=""
binaries=""
tags=()
toolbox=false
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        --binaries) binaries="${2:?--binaries needs a directory}"; shift 2 ;;
        --tag) tags+=("${2:?--tag needs a tag}"); shift 2 ;;
        --toolbox) toolbox=true; shift ;;
        -h|--help) usage ;;
        *) say "unknown argument: $1"; usage ;;
    esac
done
[[ -n "$out" ]] || usage

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
names=(cache-node janitor operator)

command -v buildah >/dev/null ||
    die "buildah is missing: apt-get install -y buildah mmdebstrap"
if $toolbox; then
    command -v mmdebstrap >/dev/null ||
        die "mmdebstrap is missing: apt-get install -y buildah mmdebstrap"
fi

if [[ ${#tags[@]} -eq 0 ]]; then
    # The workspace version: every crate has `version.workspace = true`.
    version="$(awk '
        /^\[/ { section = $0; next }
        section == "[workspace.package]" && $1 == "version" {
            gsub(/"/, "", $3); print $3; exit
        }' "$root/Cargo.toml")"
    [[ -n "$version" ]] || die "no version in [workspace.package] of $root/Cargo.toml"
    tags=("$version")
fi

if [[ -z "$binaries" ]]; then
    say "building ${names[*]} with cargo build --release"
    cargo_args=(build --release --locked --bins)
    for name in "${names[@]}"; do cargo_args+=(-p "$name"); done
    (cd "$root" && cargo "${cargo_args[@]}") >&2
    target="$(cd "$root" && cargo metadata --no-deps --format-version 1 |
        grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)"
    binaries="$target/release"
fi
for name in "${names[@]}"; do
    [[ -x "$binaries/$name" ]] || die "no executable $binaries/$name"
done
binaries="$(cd "$binaries" && pwd)"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
exec 9>"$out/.lock"
flock 9

# Private storage, new for every run: nothing of an interrupted run is left to trip on,
# and nothing but the layouts is kept (vfs holds each image twice).
storage=(--root "$out/.storage" --runroot "$out/.run" --storage-driver vfs)
staging="$(mktemp -d "$out/.staging.XXXXXX")"
cleanup() {
    rm -rf "$staging"
    buildah "${storage[@]}" rm --all >/dev/null 2>&1 || true
    rm -rf "$out/.storage" "$out/.run"
}
trap cleanup EXIT
rm -rf "$out/.storage" "$out/.run"
bah() { buildah "${storage[@]}" "$@"; }

# Commits working container $1 into the layout $out/$2 under each of the remaining
# arguments' tags, then removes the container. The layout is written anew so that it holds
# only these tags and no blobs of earlier builds (committing a tag again would leave the old
# manifest in index.json, untagged, with its blobs). Committing straight to `oci:` keeps the
# layers uncompressed; `buildah push` (1.28) to `oci:` gzips them even with
# --disable-compression. Later tags reuse the blobs (same content, same timestamp 0).
commit_to_layout() {
    local ctr="$1" layout="$2"
    shift 2
    rm -rf "${out:?}/$layout"
    local tag
    for tag in "$@"; do
        bah commit --quiet --format oci --timestamp 0 "$ctr" "oci:$out/$layout:$tag" >/dev/null
    done
    bah rm "$ctr" >/dev/null
}

passwd='root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin'
group='root:x:0:
nonroot:x:65532:'

for name in "${names[@]}"; do
    image="tidecache/$name:${tags[0]}"
    say "building $image (tags: ${tags[*]}) ..."
    rootfs="$staging/$name"
    mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/home" "$staging/empty"
    chmod 1777 "$rootfs/tmp"
    cp "$binaries/$name" "$rootfs/usr/local/bin/$name"
    chmod 0755 "$rootfs/usr/local/bin/$name"
    # The libraries the binary loads, at the paths the loader resolves them to.
    if ldd_out="$(ldd "$binaries/$name" 2>&1)"; then
        if grep -q 'not found' <<<"$ldd_out"; then
            die "$name needs libraries the host lacks: $ldd_out"
        fi
        while read -r lib; do
            mkdir -p "$rootfs$(dirname "$lib")"
            cp -L "$lib" "$rootfs$lib"
        done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out")
    elif ! grep -qE 'not a dynamic executable|statically linked' <<<"$ldd_out"; then
        die "ldd $binaries/$name: $ldd_out"
    fi
    printf '%s\n' "$passwd" >"$rootfs/etc/passwd"
    printf '%s\n' "$group" >"$rootfs/etc/group"
    if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
        mkdir -p "$rootfs/etc/ssl/certs"
        cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
    fi

    ctr="$(bah from --quiet --name "tidecache-build-$name" scratch)"
    bah copy --quiet "$ctr" "$rootfs" / >/dev/null
    # buildah copy makes everything 0:0; the home directory is the user's.
    bah copy --quiet --chown 65532:65532 "$ctr" "$staging/empty" /home/nonroot >/dev/null
    bah config \
        --user 65532:65532 \
        --entrypoint "[\"/usr/local/bin/$name\"]" \
        --cmd '' \
        --workingdir / \
        --env PATH=/usr/local/bin:/usr/bin:/bin \
        --label "org.opencontainers.image.version=${tags[0]}" \
        --label "org.opencontainers.image.title=$name" \
        --label org.opencontainers.image.source=https://github.com/tidecache/tidecache \
        "$ctr"
    commit_to_layout "$ctr" "$name" "${tags[@]}"
    rm -rf "$rootfs"
done

if $toolbox; then
    # shellcheck disable=SC1091
    suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    [[ -n "$suite" ]] || die "no VERSION_CODENAME in /etc/os-release (the toolbox needs a Debian host)"
    packages=python3,redis-tools,procps,iproute2,libcap2-bin
    # The nonroot user the image runs as, as in the other images.
    hooks=(
        --customize-hook='echo "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" >>"$1/etc/passwd"'
        --customize-hook='echo "nonroot:x:65532:" >>"$1/etc/group"'
        --customize-hook='mkdir -p "$1/home/nonroot" && chown 65532:65532 "$1/home/nonroot"'
    )
    # The host's Debian sources (the mirror apt uses here), else mmdebstrap's default.
    sources=()
    for file in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        if [[ -s "$file" ]] && grep -qv '^\s*\(#.*\)\?$' "$file"; then
            sources=("$file")
            break
        fi
    done
    key="$(printf '%s\n' "$suite" "$packages" "${hooks[@]}" | sha256sum | cut -c1-12)"
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/tidecache/images"
    tarball="$cache/toolbox-$key.tar"
    if [[ -f "$tarball" ]]; then
        say "toolbox base from Debian $suite (cached: $tarball)"
    else
        say "toolbox base from Debian $suite (building, this takes about 30 s)"
        mkdir -p "$cache"
        partial="$(mktemp "$cache/.toolbox-$key.XXXXXX.tar")"
        started=$SECONDS
        if ! mmdebstrap --quiet --variant=essential --include="$packages" \
            --skip=output/dev --format=tar "${hooks[@]}" \
            "$suite" "$partial" "${sources[@]}" >&2; then
            rm -f "$partial"
            die "mmdebstrap failed"
        fi
        chmod 0644 "$partial"
        mv "$partial" "$tarball"
        say "toolbox base built in $((SECONDS - started)) s"
    fi
    # The layout is kept while the tarball and this image's configuration are the same.
    config=(
        --user 65532:65532
        --entrypoint ''
        --cmd '["/bin/sh"]'
        --workingdir /
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        --label org.opencontainers.image.title=toolbox
        --label org.opencontainers.image.source=https://github.com/tidecache/tidecache
    )
    stamp="$(printf '%s\n' "$tarball" "${config[@]}" | sha256sum | cut -d' ' -f1)"
    if [[ -f "$out/toolbox/index.json" && "$(cat "$out/.toolbox-stamp" 2>/dev/null)" == "$stamp" ]]; then
        say "tidecache-test/toolbox:latest is up to date"
    else
        say "building tidecache-test/toolbox:latest ..."
        rm -f "$out/.toolbox-stamp"
        ctr="$(bah from --quiet --name tidecache-build-toolbox scratch)"
        bah add --quiet "$ctr" "$tarball" / >/dev/null
        bah config "${config[@]}" "$ctr"
        commit_to_layout "$ctr" toolbox latest
        echo "$stamp" >"$out/.toolbox-stamp"
    fi
fi
say "done: layouts in $out"
