#!/bin/sh
# What the device tool sends for a distillation on a lent GPU: at most 64 MiB of working tree
# (tracked files, untracked ones git does not ignore, and the paths a call names in `carry`).
# The tracked tree is ~82 MB, 77 of them weights/ and checkpoints/, which the GPU run never
# reads; the kit (build/gpu_kit, `make gpu-kit`) is up to 56 MiB. So, around the device calls:
#   sh train/distill/travel.sh slim      # weights/ and checkpoints/ out of the index, ignored
#   ... device run, carry ["build/gpu_kit"] ...
#   sh train/distill/travel.sh restore   # both back in the index, as committed
# `status` says what would travel now. Nothing on disk is touched: only the index and
# .git/info/exclude. Never commit between slim and restore (it would delete both folders).
set -eu
cd "$(git rev-parse --show-toplevel)"
exclude="$(git rev-parse --git-path info/exclude)"
case "${1:-}" in
slim)
    mkdir -p "$(dirname "$exclude")"
    git rm -r -q --cached weights checkpoints
    printf '/weights/\n/checkpoints/\n' >>"$exclude"
    ;;
restore)
    git reset -q -- weights checkpoints
    [ -f "$exclude" ] && sed -i '\#^/weights/$#d; \#^/checkpoints/$#d' "$exclude"
    ;;
status) ;;
*)
    echo "usage: sh train/distill/travel.sh slim|restore|status" >&2
    exit 2
    ;;
esac
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
kit=$(du -sb build/gpu_kit 2>/dev/null | cut -f1 || echo 0)
echo "travel: tracked ${tracked} bytes + kit ${kit:-0} bytes (limit $((64 * 1048576)))"
