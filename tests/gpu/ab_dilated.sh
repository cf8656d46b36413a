#!/usr/bin/env bash
# Same-machine A/B of single-GPU dilated attention (issue 3's benchmark rows) between this
# working tree and a baseline commit, on GPU 0. Builds both (ab_builds.sh: BASE_TAR, a `git
# archive` tarball in the repository root, e.g. `git archive -o base.tar main`; delete it after),
# runs TEST_REGEX's GPU tests on this tree's build (none if empty), alternates the two
# bench_dilated_attention builds ROUNDS times over CONFIGS x SEQS x CAUSAL x HEAD_MODES (fwd+bwd;
# comma lists as the bench takes them), then runs this tree's kept_row_write_bench (the
# partition groups' write kernel alone) and/or all_mode_glue_bench (head mode all's merge and
# gradient scatter-adds alone), as HEAD_MODES holds, per config and length; prints the tables
# last. Logs and
# JSON are packed into $OUT/ab_dilated_logs.tar.gz. VARIANTS: this tree's runs per round,
# "tag:VAR=value,VAR=value" each (environment; default "new:"), e.g. an opt-in switch against
# the default without a baseline build. EXTRA_TARGETS: more of this tree's targets to build.
# DENSE_SEQS (e.g. 64K): dense cuDNN SDPA with each config's heads, every round (bench/
# dense_sdpa.py), the reference of issue 3's "60% of dense" target on the same card.
#   BASE_TAR=base.tar TEST_REGEX="gpu_Fused" CONFIGS=longnet-base SEQS=1M CAUSAL=1 \
#     HEAD_MODES=partition ROUNDS=3 bash tests/gpu/ab_dilated.sh
#   VARIANTS="flat: batched:RA_MERGE_KERNEL=batched" HEAD_MODES=all DENSE_SEQS=64K \
#     bash tests/gpu/ab_dilated.sh
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
JOB=ra_ab_dilated JOB_LOGS=ab_dilated_logs.tar.gz
source "$ROOT/tests/gpu/gpu_job.sh"
export CUDA_VISIBLE_DEVICES=0
BUILD=build-gpu
CONFIGS="${CONFIGS:-longnet-base}" SEQS="${SEQS:-1M}" CAUSAL="${CAUSAL:-1}"
HEAD_MODES="${HEAD_MODES:-partition}"

TARGETS="bench_dilated_attention kept_row_write_bench all_mode_glue_bench"
[ -n "${TEST_REGEX:-}" ] && TARGETS="$TARGETS ra_gpu_tests"
TARGETS="$TARGETS ${EXTRA_TARGETS:-}"  # more of this tree to build (e.g. benches to compile-check)
BASE_TARGETS="bench_dilated_attention"
source "$ROOT/tests/gpu/ab_builds.sh"

dilated() {  # dilated <tag> <binary> [VAR=value...]: one pass over the rows, into $RESULTS
  local json="$OUT/$1.$(date +%s%N).jsonl"
  echo "== $1" >> "$OUT/bench.log"
  timeout 300 env "${@:3}" "$2" --configs "$CONFIGS" --seq-lens "$SEQS" --causal "$CAUSAL" \
    --head-modes "$HEAD_MODES" --passes fwdbwd --json "$json" >> "$OUT/bench.log" 2>&1 \
    || echo "bench $1 failed" | tee -a "$OUT/bench.log"
  [ -f "$json" ] && sed "s/^{/{\"tag\": \"$1\", /" "$json" >> "$RESULTS"
}
for (( r = 0; r < ${ROUNDS:-3}; ++r )); do
  [ -n "${BASE_TAR:-}" ] && dilated base "$base_src/build/bench/bench_dilated_attention"
  for variant in ${VARIANTS:-new:}; do
    IFS=: read -r tag settings <<< "$variant"
    dilated "$tag" "$BUILD/bench/bench_dilated_attention" ${settings//,/ }
  done
  if [ -n "${DENSE_SEQS:-}" ]; then
    echo "== dense-sdpa" >> "$OUT/bench.log"
    timeout 300 python3 bench/dense_sdpa.py --configs "$CONFIGS" --seq-lens "$DENSE_SEQS" \
      --causal "$CAUSAL" 2>> "$OUT/bench.log" | sed 's/^{/{"tag": "dense-sdpa", /' \
      | tee -a "$OUT/bench.log" >> "$RESULTS" || echo "dense_sdpa failed" | tee -a "$OUT/bench.log"
  fi
done
elapsed "dilated rows done"
for config in ${CONFIGS//,/ }; do
  for S in ${SEQS//,/ }; do
    for mode in ${HEAD_MODES//,/ }; do
      bench=kept_row_write_bench
      [ "$mode" = all ] && bench=all_mode_glue_bench
      timeout 120 "$BUILD/bench/$bench" --config "$config" --seq-len "$S" \
        > "$OUT/kernels_${mode}_${config}_$S.md" 2>&1 || echo "$bench failed: $config $S"
    done
  done
done

echo "## results ($(head -1 "$OUT/device.txt"), GPU 0)"
python3 bench/results_table.py "$RESULTS" "run=tag" "config=config" "S=S" "causal=causal" \
  "head mode=head_mode" "ms fwd+bwd=ms:.2f" "TFLOP/s=tflops:.1f" "peak GiB=peak_gib:.2f"
for f in "$OUT"/kernels_*.md; do [ -f "$f" ] && cat "$f"; done
