#!/bin/sh
# `make image`: build the product image from ./Dockerfile with docker when a Docker daemon
# answers, else podman. With podman, the stand-in base is made first when no python:3.11-slim
# is present (make_standin.sh), and pip inside the build gets the host's CA bundle through
# build-time mounts only (never copied into the image).
set -eu
cd "$(dirname "$0")/.."
ENGINE=${ENGINE:-$(sh container/engine.sh)}
IMAGE=${IMAGE:-localhost/medseg:latest}
if [ ! -f models/manifest.json ]; then
    echo "image: models/manifest.json missing: run 'make export' first" >&2
    exit 1
fi
if [ "$ENGINE" = podman ]; then
    sh container/make_standin.sh
    CA=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
    podman build --pull=never -v "$CA:/run/host-ca.crt:ro" -v "$PWD/container/pip.conf:/etc/pip.conf:ro" \
        -t "$IMAGE" .
else
    docker build -t "$IMAGE" .
fi
echo "image: built $IMAGE with $ENGINE ($($ENGINE image inspect --format '{{.Size}}' "$IMAGE") bytes)"
