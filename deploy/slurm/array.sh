#!/bin/bash
# A cohort as a SLURM job array: the product image (apptainer, else podman) per array task, each
# task one shard: array task K of --array=0-(N-1) segments shard K of N. Rerunning the array
# (or some of its tasks) skips finished cases.
#   apptainer build medseg.sif docker-daemon://localhost/medseg:latest   # once, from `make image`
#   sbatch deploy/slurm/array.sh /path/to/inputs /path/to/outputs
#   sbatch --array=3 --export=ALL,MEDSEG_SHARDS=8 deploy/slurm/array.sh IN OUT   # rerun shard 3 of 8
# Exit codes per task: 0 shard done, 1 some case failed, 2 unusable setup (see sacct).
#SBATCH --job-name=medseg-cohort
#SBATCH --array=0-7
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=04:00:00
#SBATCH --output=medseg-%A_%a.log
set -euo pipefail

INPUTS=$(realpath "${1:?usage: sbatch array.sh INPUTS OUTPUTS}")
OUTPUTS=$(realpath "${2:?usage: sbatch array.sh INPUTS OUTPUTS}")
IMAGE=${MEDSEG_IMAGE:-medseg.sif}
# Array ids are the shard indices (0..N-1). A rerun of some tasks (--array=3,5) has another
# SLURM_ARRAY_TASK_COUNT: set MEDSEG_SHARDS=N then (sbatch --export=ALL,MEDSEG_SHARDS=8 ...).
SHARDS=${MEDSEG_SHARDS:-${SLURM_ARRAY_TASK_COUNT:?not inside a SLURM array}}
INDEX=${SLURM_ARRAY_TASK_ID:?not inside a SLURM array}
mkdir -p "$OUTPUTS"
APP=(python3 -m app -i /workspace/inputs -o /workspace/outputs --skip-done
     --num-shards "$SHARDS" --shard-index "$INDEX")

if command -v apptainer >/dev/null; then
    exec apptainer exec --containall --pwd /workspace \
        --bind "$INPUTS:/workspace/inputs:ro" --bind "$OUTPUTS:/workspace/outputs" \
        "$IMAGE" "${APP[@]}"
fi
exec podman run --rm --network none -m 8g \
    -v "$INPUTS:/workspace/inputs:ro" -v "$OUTPUTS:/workspace/outputs" \
    localhost/medseg:latest "${APP[@]}"
