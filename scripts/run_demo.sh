#!/usr/bin/env bash
# One command for a fresh Debian 12 machine: install packages, build, and run the main job
# small: two MPI ranks on CPU (or one rank per GPU where GPUs are visible).
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
  "${BUILD_DIR:-build}"/launch/ra_demo --seq-len 4K --segment-lengths 512,1024,2048 \
  --dilation-rates 1,2,4 --causal
