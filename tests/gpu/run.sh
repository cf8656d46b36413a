#!/usr/bin/env bash
# On a GPU machine with the PyTorch CUDA wheel: configure with PyTorch's CMake files, build the
# GPU tests and the benchmark, run `ctest -L gpu`, then bench/run_bench.py, printing its table
# last. Boost.Program_options (and nlohmann-json) come as Debian .debs in .deps/ (see
# DESIGN.md), unpacked into a prefix under /tmp. Logs and JSON go to $OUT (default /tmp/ra_gpu).
#   BENCH_ARGS="--seq-lens 1M --causal 0 --passes fwdbwd" bash tests/gpu/run.sh
# Set SKIP_TESTS=1 or SKIP_BENCH=1 to run only one half.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/ra_gpu}"
BUILD="${BUILD_DIR:-build-gpu}"
mkdir -p "$OUT"
start=$(date +%s)

prefix=/tmp/ra_deps
mkdir -p "$prefix"
for deb in .deps/boost/*.deb .deps/json/*.deb; do dpkg -x "$deb" "$prefix"; done
torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
nccl_root="$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null || true)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
  "cudnn", torch.backends.cudnn.version())' | tee -a "$OUT/device.txt"

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr" -DBoost_USE_STATIC_LIBS=ON \
  -DRA_CUDA_ARCHITECTURES=90 ${nccl_root:+-DNCCL_ROOT="$nccl_root"} > "$OUT/configure.log" 2>&1 \
  || { tail -40 "$OUT/configure.log"; exit 1; }
grep "ringattn:" "$OUT/configure.log"
cmake --build "$BUILD" -j "$(nproc)" --target ra_gpu_tests bench_dilated_attention \
  > "$OUT/build.log" 2>&1 || { grep -E "error|Error" -A5 "$OUT/build.log" | head -80; exit 1; }
echo "build done in $(( $(date +%s) - start )) s"

test_status=0
if [[ "${SKIP_TESTS:-0}" != 1 ]]; then
  ctest --test-dir "$BUILD" -L gpu --output-on-failure -j 3 --timeout 400 \
    > "$OUT/ctest.log" 2>&1 || test_status=$?
  # Failures in full, then the summary.
  grep -E "Failure|Expected|Which is|error|FAILED|rel|trace" "$OUT/ctest.log" | head -60 || true
  grep -E "tests passed|tests failed|Test +#" "$OUT/ctest.log" || true
  "$BUILD/tests/gpu/ra_gpu_tests" --gtest_list_tests | grep -c "^  " | sed 's/^/gtest cases: /'
  echo "tests done at $(( $(date +%s) - start )) s (ctest exit $test_status)"
fi

if [[ "${SKIP_BENCH:-0}" != 1 ]]; then
  # shellcheck disable=SC2086
  python3 bench/run_bench.py --bench-bin "$BUILD/bench/bench_dilated_attention" \
    --out "$OUT/bench.json" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1 || echo "bench exit $?"
  grep -v "^{" "$OUT/bench.log" | grep -v "^|" || true
  echo "all done in $(( $(date +%s) - start )) s"
  sed -n '/^## /,$p' "$OUT/bench.log"
fi
exit "$test_status"
