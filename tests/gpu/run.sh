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

source "$ROOT/tests/gpu/configure_gpu_build.sh"
cmake --build "$BUILD" -j "$(nproc)" --target ra_gpu_tests bench_dilated_attention \
  > "$OUT/build.log" 2>&1 || { grep -E "error|Error" -A5 "$OUT/build.log" | head -80; exit 1; }
echo "build done in $(( $(date +%s) - start )) s"

test_status=0
if [[ "${SKIP_TESTS:-0}" != 1 ]]; then
  ctest --test-dir "$BUILD" -L gpu -E "gpu_ring|gpu_fault|gpu_sparse" --output-on-failure -j 3 --timeout 400 \
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
