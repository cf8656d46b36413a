#!/usr/bin/env bash
# Same-machine A/B of the dense causal sequence-parallel step (issue 4's benchmark) between this
# working tree and a baseline commit, with PyTorch's context_parallel beside them, one rank per
# GPU. Builds both trees in parallel (the baseline from BASE_TAR, a `git archive` tarball in the
# repository root, e.g. `git archive -o base.tar HEAD`; untracked, so it travels with the tree),
# runs TEST_REGEX's GPU tests on this tree's build first (none if empty), then alternates the two
# bench_ring_attention builds ROUNDS times per sequence length of SEQS (default "128K 512K"; set
# but empty: the tests only) and runs context_parallel once per length; prints one table last.
# Logs and JSON are packed into $OUT/ab_logs.tar.gz.
#   BASE_TAR=base.tar TEST_REGEX="gpu_ring_attention_np[24]" SEQS="128K 512K" ROUNDS="3 1" \
#     STRATEGY=allgather bash tests/gpu/ab_dense.sh
# VARIANTS: this tree's runs per round, "tag:strategy[:bench flag]" each (default
# "new:$STRATEGY"), e.g. "ag:allgather ring:ring ag-none:allgather:--no-transfers"; the baseline
# runs STRATEGY. KERNELS_ALONE=1: then bench/cudnn_call_merge.py on GPU 0 at each S (one rank's
# cuDNN calls alone, the step's floor on this card).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
JOB=ra_ab JOB_LOGS=ab_logs.tar.gz
source "$ROOT/tests/gpu/multi_gpu_job.sh"
BUILD=build-gpu

# This tree (tests and bench) and the baseline (bench only), configured and built side by side.
source "$ROOT/tests/gpu/configure_gpu_build.sh"
base_src=/tmp/ra_base
if [ -n "${BASE_TAR:-}" ]; then
  rm -rf "$base_src" && mkdir -p "$base_src" && tar -xf "$ROOT/$BASE_TAR" -C "$base_src"
  # No .deps there: the Boost/json unpacked above serve both (no second unpack mid-build).
  (ROOT="$base_src" BUILD="$base_src/build" OUT="$OUT/base" && mkdir -p "$OUT" &&
   source "$ROOT/tests/gpu/configure_gpu_build.sh" > "$OUT/base_configure.log" 2>&1 &&
   cmake --build "$BUILD" -j "$(( $(nproc) / 2 ))" --target bench_ring_attention \
     > "$OUT/base_build.log" 2>&1) &
  base_pid=$!
fi
targets="bench_ring_attention"
[ -n "${TEST_REGEX:-}" ] && targets="$targets ra_gpu_ring_attention_tests ra_gpu_tests ra_fault_probe"
cmake --build "$BUILD" -j "$(nproc)" --target $targets > "$OUT/build.log" 2>&1 \
  || { grep -E "error|Error" -A5 "$OUT/build.log" | head -60; exit 1; }
if [ -n "${base_pid:-}" ]; then
  wait "$base_pid" || { echo "baseline build failed"; tail -30 "$OUT/base_build.log"; exit 1; }
fi
elapsed "builds done ($GPUS GPUs)"

if [ -n "${TEST_REGEX:-}" ]; then
  timeout 300 ctest --test-dir "$BUILD" -R "$TEST_REGEX" --output-on-failure --timeout 200 \
    > "$OUT/ctest.log" 2>&1
  grep -E "Failure|Expected|Which is|error:|FAILED" "$OUT/ctest.log" | head -30
  grep -E "tests passed|tests failed|Test +#" "$OUT/ctest.log"
  elapsed "tests done"
fi

bench() {  # bench <tag> <binary> <S> <strategy> [bench flags...]
  echo "== $1 $3" >> "$OUT/bench.log"
  timeout 150 "${MPIRUN[@]}" -n "$GPUS" "$2" --json "$OUT/$1.jsonl" --config dense-causal \
    --seq-len "$3" --zigzag --strategy "$4" "${@:5}" >> "$OUT/bench.log" 2>&1 \
    || echo "bench $1 $3 failed" | tee -a "$OUT/bench.log"
  [ -f "$OUT/$1.jsonl" ] && tail -1 "$OUT/$1.jsonl" | sed "s/^{/{\"tag\": \"$1\", /" >> "$RESULTS"
}
read -r -a rounds <<< "${ROUNDS:-3 1}"
i=0
for S in ${SEQS-128K 512K}; do
  for (( r = 0; r < ${rounds[$i]:-1}; ++r )); do
    [ -n "${BASE_TAR:-}" ] &&
      bench base "$base_src/build/bench/bench_ring_attention" "$S" "${STRATEGY:-allgather}"
    for variant in ${VARIANTS:-new:${STRATEGY:-allgather}}; do
      IFS=: read -r tag strategy flag <<< "$variant"
      bench "$tag" "$BUILD/bench/bench_ring_attention" "$S" "$strategy" $flag
    done
  done
  i=$((i + 1))
  timeout 180 torchrun --nproc-per-node "$GPUS" bench/context_parallel_baseline.py \
    --seq-len $(( ${S%K} * 1024 )) --heads 16 --head-dim 128 --backend cudnn \
    --json "/tmp/cp_$S.json" >> "$OUT/bench.log" 2>&1 || echo "context_parallel failed at $S"
  [ -f "/tmp/cp_$S.json" ] && python3 -c "import json; [print(json.dumps(dict(r, tag='context_parallel'))) for r in json.load(open('/tmp/cp_$S.json'))]" >> "$RESULTS"
  if [ "${KERNELS_ALONE:-0}" = 1 ]; then
    CUDA_VISIBLE_DEVICES=0 timeout 200 python3 bench/cudnn_call_merge.py \
      --chunk $(( ${S%K} * 1024 / (2 * GPUS) )) --ranks "$GPUS" --reps 3 \
      > "$OUT/kernels_alone_$S.md" 2>&1 || echo "cudnn_call_merge failed at $S"
  fi
  elapsed "S=$S done"
done

echo "## results ($(head -1 "$OUT/device.txt"), $GPUS GPUs, strategy ${STRATEGY:-allgather})"
python3 - "$RESULTS" <<'PY'
import json, sys
print("| run | S | ms fwd+bwd | TFLOP/s/GPU | peak GiB |")
print("|---|---|---|---|---|")
for line in open(sys.argv[1]):
    if line.strip():
        r = json.loads(line)
        print(f"| {r['tag']} | {r['seq_len']} | {r['fwd_bwd_ms']:.1f} | "
              f"{r['tflops_per_gpu']:.1f} | {r['peak_gib']:.2f} |")
PY
for f in "$OUT"/kernels_alone_*.md; do [ -f "$f" ] && cat "$f"; done
