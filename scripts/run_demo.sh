#!/usr/bin/env bash
# One command for a fresh Debian 12 machine: install packages, build, and run the main job
# small: ring_train with two MPI ranks on CPU (or one rank per GPU where GPUs are visible),
# a 1K-token sequence split across the ranks, 2 layers, a few steps, a checkpoint and a
# metrics file under build/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
ranks=2
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  ranks=$(nvidia-smi -L | wc -l)
fi
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mpirun --allow-run-as-root --oversubscribe -n "$ranks" \
  -x NCCL_NVLS_ENABLE -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS \
  "${BUILD_DIR:-build}"/launch/ring_train --seq-len 1K --batch-size 2 --layers 2 \
  --embed-dim 64 --heads 4 --segment-lengths 128,256,512 --dilation-rates 1,2,4 --causal \
  --steps 5 --lr 1e-3 --data synthetic:kv --threads 1 --eval-batches 2 \
  --save-dir "${BUILD_DIR:-build}"/demo/checkpoints --metrics-file "${BUILD_DIR:-build}"/demo/metrics.jsonl
