#!/bin/sh
# Make a container engine ready on a Debian machine: docker when its daemon answers; otherwise
# podman (+ runc), installed with apt when missing (root), with the containers.conf this kind of
# machine needs (it forbids raising the default ulimits, and crun refuses its hybrid cgroups).
# Exit 0 when an engine is ready, non-zero (with the reason) otherwise.
set -eu
HERE=$(dirname "$0")
if [ "$(sh "$HERE/engine.sh" 2>/dev/null)" = docker ]; then
    echo "engine: docker ready"
    exit 0
fi
if ! command -v podman >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "engine: no docker or podman, and podman cannot be installed (needs root and apt-get)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq podman buildah runc uidmap debootstrap >/dev/null
fi
CONF=/etc/containers/containers.conf
if [ ! -s "$CONF" ] && [ "$(id -u)" = 0 ]; then
    mkdir -p /etc/containers
    cat > "$CONF" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
CONF
fi
podman run --rm --help >/dev/null
echo "engine: podman $(podman --version | awk '{print $3}') ready"
