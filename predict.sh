#!/bin/sh
# Challenge entry point (runs under sh/dash): segment every case in /workspace/inputs into
# /workspace/outputs. Quiet except for errors and a one-line summary; the exit code is non-zero
# when a case failed. SEG_INPUT / SEG_OUTPUT override the folders (tests, local runs). No results
# log: the challenge's outputs folder holds the segmentations only.
set -eu
cd "$(dirname "$0")"
exec python3 -m app -q --results none -i "${SEG_INPUT:-/workspace/inputs}" -o "${SEG_OUTPUT:-/workspace/outputs}"
