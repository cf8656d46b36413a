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
source "$ROOT/tests/gpu/gpu_job.sh"
BUILD=build-gpu

# This tree (tests and bench) and the baseline (bench only), built side by side; the tests.
TARGETS="bench_ring_attention"
[ -n "${TEST_REGEX:-}" ] && TARGETS="$TARGETS ra_gpu_ring_attention_tests ra_gpu_tests ra_fault_probe"
BASE_TARGETS="bench_ring_attention"
source "$ROOT/tests/gpu/ab_builds.sh"

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
python3 bench/results_table.py "$RESULTS" "run=tag" "S=seq_len" "ms fwd+bwd=fwd_bwd_ms:.1f" \
  "TFLOP/s/GPU=tflops_per_gpu:.1f" "peak GiB=peak_gib:.2f"
for f in "$OUT"/kernels_alone_*.md; do [ -f "$f" ] && cat "$f"; done
