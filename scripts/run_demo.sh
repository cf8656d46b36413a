#!/usr/bin/env bash
# One command for a fresh machine: build, then run the main job small: ring_train on the
# long-range synthetic task under mpirun. CPU (Debian 12): installs packages, two ranks. GPU
# machine with the PyTorch CUDA wheel: builds against it, one rank per visible GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
gpus=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 &&
   python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  gpus=$(nvidia-smi -L | wc -l)
fi
if [ "$gpus" -gt 0 ]; then
  ROOT=$PWD BUILD=${BUILD_DIR:-build-gpu} OUT=${BUILD_DIR:-build-gpu}/logs
  mkdir -p "$OUT"
  source tests/gpu/configure_gpu_build.sh
  cmake --build "$BUILD" --parallel "$(nproc)" --target ring_train
  ranks=$gpus device=cuda seq_len=256K layers=4 embed=256
else
  scripts/install_deps.sh
  scripts/build.sh
  BUILD=${BUILD_DIR:-build} ranks=2 device=cpu seq_len=1K layers=2 embed=64
fi
mpirun --allow-run-as-root --oversubscribe -n "$ranks" \
  -x NCCL_NVLS_ENABLE -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS \
  "$BUILD"/launch/ring_train --device "$device" --seq-len "$seq_len" --batch-size 2 \
  --layers "$layers" --embed-dim "$embed" --heads 4 --segment-lengths 128,256,512 \
  --dilation-rates 1,2,4 --causal --attention ring --steps 5 --lr 1e-3 --data synthetic:kv \
  --threads 1 --eval-batches 2 --save-dir "$BUILD"/demo/checkpoints \
  --metrics-file "$BUILD"/demo/metrics.jsonl
