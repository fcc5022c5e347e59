#!/bin/sh
# Print the container engine: docker when its daemon answers, else podman (daemonless).
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
elif command -v podman >/dev/null 2>&1; then
    echo podman
else
    echo "no container engine: install podman (apt-get install podman buildah runc uidmap)" >&2
    exit 1
fi
