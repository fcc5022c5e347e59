#!/bin/sh
# Build a local stand-in for python:3.11-slim when the engine has no such image (no registry
# here). Steps: debootstrap Debian trixie (minbase) -> import as localhost/debian-trixie-minbase
# -> fetch Debian's python3.11 source package (from SRC_SUITE, default bookworm: trixie itself
# ships 3.13 and no python3.11 source) -> build container/standin/Dockerfile ->
# tag docker.io/library/python:3.11-slim. Needs root, debootstrap and network to Debian.
set -eu
ENGINE=${ENGINE:-$(sh "$(dirname "$0")/engine.sh")}
IMAGE=docker.io/library/python:3.11-slim
if $ENGINE image exists "$IMAGE" 2>/dev/null || $ENGINE image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "stand-in: $IMAGE present, nothing to do"
    exit 0
fi
WORK=${WORK:-/var/tmp/medseg-standin}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SRC_SUITE=${SRC_SUITE:-bookworm}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
mkdir -p "$WORK"
if ! $ENGINE image inspect localhost/debian-trixie-minbase:latest >/dev/null 2>&1; then
    echo "stand-in: debootstrap trixie minbase into $WORK/rootfs"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase trixie "$WORK/rootfs" "$MIRROR"
    # As Debian's docker images: no downloaded .debs, package lists, docs, man pages or locales.
    rm -rf "$WORK/rootfs"/var/cache/apt/archives/*.deb "$WORK/rootfs"/var/lib/apt/lists/* \
        "$WORK/rootfs"/usr/share/doc/* "$WORK/rootfs"/usr/share/man/* "$WORK/rootfs"/usr/share/locale/*
    tar -C "$WORK/rootfs" -c . | $ENGINE import - localhost/debian-trixie-minbase:latest
fi
echo "stand-in: fetching Debian's python3.11 source package ($SRC_SUITE)"
CTX="$WORK/ctx"
rm -rf "$CTX" && mkdir -p "$CTX"
SRC_LIST=/etc/apt/sources.list.d/medseg-standin-src.list
echo "deb-src [signed-by=$KEYRING] $MIRROR $SRC_SUITE main" > "$SRC_LIST"
trap 'rm -f "$SRC_LIST"; apt-get update -qq >/dev/null 2>&1 || true' EXIT
apt-get update -qq
(cd "$CTX" && apt-get source --download-only python3.11)
cp "$(dirname "$0")/standin/Dockerfile" "$CTX/Dockerfile"
echo "stand-in: building CPython 3.11 (several minutes)"
$ENGINE build -t "$IMAGE" "$CTX"
echo "stand-in: tagged $IMAGE"
