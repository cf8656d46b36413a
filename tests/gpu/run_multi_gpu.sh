#!/usr/bin/env bash
# On a multi-GPU machine (one MPI rank per GPU): builds the multi-GPU targets, runs the
# multi-rank GPU tests (ring/allgather equality over NCCL, fault tests, sparse kernels), the
# sequence-parallel benchmarks (dense causal ring vs PyTorch context_parallel, dilated configs
# with weak scaling and the local-copy overlap check) and a ring_train run, then prints a table.
# Optional stages: "sparse" (block-sparse kernels vs cuDNN and FlexAttention on one GPU; each
# kernel variant of SPARSE_VARIANTS, see the stage) and
# "profile" (one Kineto-traced step of ring_train, the dense ring, context_parallel and the
# 1-GPU dilated path, summarised by bench/summarize_trace.py). BENCH_SET=dense limits the
# bench stage to the dense causal ring vs context_parallel (and its local-copy and profile),
# BENCH_SET=wide to the wide dilated config at 128K (ring, local copy, profile),
# BENCH_SET=spanning to longnet-1m at 1M (segments spanning the shards) against one GPU; a
# space-separated list runs several sets (BENCH_SET="dense spanning").
#   STAGES="tests bench train sparse profile" bash tests/gpu/run_multi_gpu.sh
# Stage "shapes": cuDNN's backward per block shape of the dense zigzag step on GPU 0
# (bench/cudnn_block_shapes.py). SWEEP_PROFILE=1 traces one step per SWEEP_ENV setting.
# Stage "dilated": single-GPU dilated attention rows (DILATED_RUNS, see the stage). Stage
# "layernorm": the LayerNorm kernels against ATen (bench/layer_norm_bench.cpp).
# TEST_REGEX narrows the tests stage (a ctest -R pattern). CLOCKS=1 logs clocks and power
# during the bench stages (clocks.csv). Stage "sweep": the dense ring at 128K
# under each NCCL setting in SWEEP_ENV.
# Logs and JSON are written to a work folder and packed at exit
# into $OUT/logs.tar.gz (default OUT /tmp/ra_gpu_multi): one file, since the GPU machine's
# tool brings back only a few files from $OUT.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
JOB=ra_gpu_multi JOB_LOGS=logs.tar.gz
source "$ROOT/tests/gpu/gpu_job.sh"
BUILD="${BUILD_DIR:-build-gpu}"
STAGES="${STAGES:-tests bench train}"

source "$ROOT/tests/gpu/configure_gpu_build.sh"
targets="ra_gpu_ring_attention_tests ra_fault_probe ra_gpu_sparse_tests ra_gpu_sparse_ring_tests
  bench_ring_attention sparse_attention_bench bench_dilated_attention layer_norm_bench ra_gpu_tests"
[ -f "$ROOT/launch/ring_train.cpp" ] && targets="$targets ring_train"
cmake --build "$BUILD" -j "$(nproc)" --target $targets > "$OUT/build.log" 2>&1 \
  || { grep -E "error|Error" -A5 "$OUT/build.log" | head -80; exit 1; }
elapsed "build done ($GPUS GPUs)"

if [[ " $STAGES " == *" tests "* ]]; then
  timeout 300 ctest --test-dir "$BUILD" -R "${TEST_REGEX:-gpu_Fused|gpu_ring|gpu_fault|gpu_sparse|gpu_GpuRotary|gpu_GpuLayerNorm}" --output-on-failure \
    --timeout 200 > "$OUT/ctest.log" 2>&1
  grep -E "Failure|Expected|Which is|error:|FAILED|rank [0-9]+\]" "$OUT/ctest.log" | head -40
  grep -E "tests passed|tests failed|Test +#" "$OUT/ctest.log"
  elapsed "tests done"
fi

# BENCH_SET: "all" or a space-separated list of the sets below (dense, wide, spanning).
in_bench_set() { [[ " ${BENCH_SET:-all} " == *" all "* || " ${BENCH_SET:-all} " == *" $1 "* ]]; }
bench() {  # bench <ranks> <args...>
  local n=$1; shift
  echo "[$(date +%T.%3N)] bench -n $n $*" >> "$OUT/bench.log"  # lines up with clocks.csv
  timeout 120 "${MPIRUN[@]}" -n "$n" "$BUILD/bench/bench_ring_attention" --json "$RESULTS" "$@" \
    >> "$OUT/bench.log" 2>&1 || echo "bench failed: -n $n $*" | tee -a "$OUT/bench.log"
}
# CLOCKS=1: sample every GPU's SM/memory clock, power, temperature and clock-limit reasons every
# 100 ms through the bench stages (read-only; into clocks.csv), to tell a power or clock limit
# from a slower kernel when times drift within a step.
if [[ " $STAGES " == *" bench "* && -n "${CLOCKS:-}" ]]; then
  nvidia-smi --query-gpu=timestamp,index,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active \
    --format=csv -lms 100 > "$OUT/clocks.csv" 2>&1 &
  clocks_pid=$!
fi
if [[ " $STAGES " == *" bench "* ]] && in_bench_set dense; then
  # Dense causal ring (zigzag) side by side with PyTorch's context_parallel, same S and GPUs;
  # each strategy of DENSE_STRATEGIES (default: ring and allgather).
  for S in 128K 512K; do
    for strategy in ${DENSE_STRATEGIES:-ring allgather}; do
      bench "$GPUS" --config dense-causal --seq-len $S --zigzag --strategy $strategy
    done
    timeout 150 torchrun --nproc-per-node "$GPUS" bench/context_parallel_baseline.py \
      --seq-len $(( ${S%K} * 1024 )) --heads 16 --head-dim 128 --backend cudnn \
      --json "/tmp/cp_$S.json" >> "$OUT/bench.log" 2>&1 || echo "context_parallel failed at $S" | tee -a "$OUT/bench.log"
    [ -f "/tmp/cp_$S.json" ] && python3 -c "import json,sys; [print(json.dumps(r)) for r in json.load(open('/tmp/cp_$S.json'))]" >> "$RESULTS"
  done
  # Exposed communication: the same runs with every transfer replaced by a local copy; and one
  # traced step of each (context_parallel's too), each attention kernel call listed.
  calls="sdpa|fmha|flash"
  for strategy in ${DENSE_STRATEGIES:-ring allgather}; do
    bench "$GPUS" --config dense-causal --seq-len 128K --zigzag --strategy $strategy --local-copy
    bench "$GPUS" --config dense-causal --seq-len 128K --zigzag --strategy $strategy \
      --profile /tmp/${strategy}_128K.json \
      && python3 bench/summarize_trace.py /tmp/${strategy}_128K.json --top 14 --calls "$calls" \
        >> "$OUT/profile.log" 2>&1
  done
  timeout 150 torchrun --nproc-per-node "$GPUS" bench/context_parallel_baseline.py \
    --seq-len 131072 --heads 16 --head-dim 128 --backend cudnn --profile /tmp/cp.json \
    >> "$OUT/bench.log" 2>&1 \
    && python3 bench/summarize_trace.py /tmp/cp.131072.json --top 14 --calls "$calls" \
      >> "$OUT/profile.log" 2>&1
fi
if [[ " $STAGES " == *" bench "* ]] && in_bench_set wide; then
  # A dilated config whose longest segment (64K) spans 2 ranks: exposed communication.
  bench "$GPUS" --config wide --seq-len 128K
  bench "$GPUS" --config wide --seq-len 128K --local-copy
  bench "$GPUS" --config wide --seq-len 128K --profile /tmp/wide_128K.json \
    && python3 bench/summarize_trace.py /tmp/wide_128K.json --top 12 --by-op --gaps 12 \
      >> "$OUT/profile.log" 2>&1
fi
if [[ " $STAGES " == *" bench "* ]] && in_bench_set spanning; then
  # Segments that span the shards (longnet-1m: w up to 1M) against one GPU at the same S
  # (strong scaling), causal and not, and the exposed communication (local copy).
  for causal in "" --causal; do
    bench "$GPUS" --config longnet-1m --seq-len 1M $causal
    bench 1 --config longnet-1m --seq-len 1M $causal
  done
  bench "$GPUS" --config longnet-1m --seq-len 1M --local-copy
  bench "$GPUS" --config longnet-1m --seq-len 1M --causal --unbalanced  # plain layout
  for causal in "" --causal; do  # the other strategy
    bench "$GPUS" --config longnet-1m --seq-len 1M $causal --strategy allgather
  done
  # Dense causal in the natural layout: balanced (mirror layout inside the ring), not, zigzag.
  for layout in "" --unbalanced --zigzag; do
    bench "$GPUS" --config dense-causal --seq-len 128K $layout
  done
fi
if [[ " $STAGES " == *" bench "* && "${BENCH_SET:-all}" == all ]]; then
  # Dilated configs: P GPUs at S against one GPU at S/P (weak scaling).
  for cfg in longnet-base wide; do
    bench "$GPUS" --config $cfg --seq-len 1M
    bench 1 --config $cfg --seq-len $(( 1024 / GPUS ))K
    bench "$GPUS" --config $cfg --seq-len 4M
    bench 1 --config $cfg --seq-len $(( 4096 / GPUS ))K
  done
  elapsed "bench done"
fi

if [[ " $STAGES " == *" sweep "* ]]; then
  # The dense causal ring at 128K under each NCCL setting of SWEEP_ENV (space-separated
  # VAR=value items), e.g. SWEEP_ENV="NCCL_MAX_CTAS=2 NCCL_MAX_CTAS=4 NCCL_MAX_CTAS=8";
  # SWEEP_ARGS: more bench_ring_attention flags (e.g. "--strategy allgather").
  for assignment in ${SWEEP_ENV:-NCCL_MAX_CTAS=2 NCCL_MAX_CTAS=4 NCCL_MAX_CTAS=8}; do
    echo "== $assignment" >> "$OUT/bench.log"
    timeout 120 "${MPIRUN[@]}" -x "$assignment" -n "$GPUS" "$BUILD/bench/bench_ring_attention" \
      --json "$RESULTS" --config dense-causal --seq-len 128K --zigzag ${SWEEP_ARGS:-} \
      >> "$OUT/bench.log" 2>&1 \
      || echo "bench failed under $assignment" | tee -a "$OUT/bench.log"
    tail -1 "$RESULTS" | sed "s/^/$assignment: /"
  done
  # SWEEP_PROFILE=1: one traced step under each distinct setting, every attention call listed.
  if [ -n "${SWEEP_PROFILE:-}" ]; then
    for assignment in $(printf '%s\n' ${SWEEP_ENV:-} | awk '!seen[$0]++'); do
      trace="/tmp/sweep_${assignment//[^A-Za-z0-9]/_}.json"
      echo "== $assignment" >> "$OUT/profile.log"
      timeout 120 "${MPIRUN[@]}" -x "$assignment" -n "$GPUS" "$BUILD/bench/bench_ring_attention" \
        --config dense-causal --seq-len 128K --zigzag ${SWEEP_ARGS:-} --profile "$trace" \
        >> "$OUT/bench.log" 2>&1 \
        && python3 bench/summarize_trace.py "$trace" --top 14 --calls "sdpa|fmha|flash" \
          >> "$OUT/profile.log" 2>&1
    done
  fi
  elapsed "sweep done"
fi

if [[ " $STAGES " == *" shapes "* ]]; then
  # cuDNN's backward per block shape of the dense causal zigzag step, alone and interleaved.
  python3 bench/cudnn_block_shapes.py > "$OUT/shapes.log" 2>&1 || echo "shapes failed"
  cat "$OUT/shapes.log"
  elapsed "shapes done"
fi

if [[ " $STAGES " == *" train "* && -x "$BUILD/launch/ring_train" ]]; then
  # LongNet-base (12 layers, 768 dim, 12 heads) on all GPUs. TRAIN_RUNS: "S:steps[:extra flags
  # joined by ,]" items; a step is profiled with --profile-step (summarised into profile.log).
  # Segments 2048..32768 with rates 1..12 unless an item sets --segment-lengths (then it also
  # sets --dilation-rates, joined by + instead of , e.g. --segment-lengths,2048+8192). An optional
  # fourth field sets environment variables of every rank, joined by + (e.g. RA_SPARSE_FORWARD=mma).
  train() {  # train <S> <steps> <tag> <env assignments joined by +> [extra flags...]
    local S=$1 steps=$2 tag=$3 env_items=$4; shift 4
    local env_flags=()
    for assignment in ${env_items//+/ }; do env_flags+=(-x "$assignment"); done
    local defaults=(--checkpointing on)  # unless the item sets it
    [[ " $* " == *" --checkpointing "* ]] && defaults=()
    [[ " $* " == *" --segment-lengths "* ]] \
      || defaults+=(--segment-lengths 2048,4096,8192,16384,32768 --dilation-rates 1,2,4,6,12)
    timeout 300 "${MPIRUN[@]}" "${env_flags[@]}" -n "$GPUS" "$BUILD/launch/ring_train" --seq-len "$S" \
      --layers 12 --embed-dim 768 --heads 12 --ffn-dim 3072 --attention ring --steps "$steps" \
      --log-every 1 --causal "${defaults[@]}" --data synthetic:kv "$@" > "/tmp/train_$tag.log" 2>&1 \
      || echo "ring_train $S $* exit $?" | tee -a "$OUT/train.log"
    { echo "== $S $* ${env_items}"; grep -E "^step|checkpoint memory|error|Error|out of memory" "/tmp/train_$tag.log"; } \
      | tee -a "$OUT/train.log" | tail -3
    elapsed "train $S $* done"
  }
  for item in ${TRAIN_RUNS:-1M:4:--profile-step,4 4M:3 8M:3:--offload-checkpoints,on}; do
    IFS=: read -r S steps extra env_items <<< "$item"
    tag="${S}_$(echo "$extra$env_items" | tr -c 'a-zA-Z0-9' _)"
    flags=${extra//,/ }
    # shellcheck disable=SC2086
    train "$S" "$steps" "$tag" "$env_items" ${flags//+/,} --profile-file "/tmp/trace_$tag.json"
    if [ -f "/tmp/trace_$tag.json" ]; then
      python3 bench/summarize_trace.py "/tmp/trace_$tag.json" --by-op --gaps 15 --top 20 \
        >> "$OUT/profile.log" 2>&1
      # KEEP_TRACES=1: the trace itself too, for a closer look at home (a few MB each).
      [ -n "${KEEP_TRACES:-}" ] && gzip -c "/tmp/trace_$tag.json" > "$OUT/trace_$tag.json.gz"
    fi
  done
  elapsed "train done"
fi

if [[ " $STAGES " == *" layernorm "* ]]; then
  # The LayerNorm kernels' forms against the ATen ops at the training step's shapes, one GPU,
  # once per item of LAYERNORM_ENV (environment assignments joined by +; "-" for none).
  for env_items in ${LAYERNORM_ENV:--}; do
    [ "$env_items" == - ] && env_items=""
    echo "== layer_norm_bench ${env_items}" | tee -a "$OUT/layernorm.log"
    env ${env_items//+/ } timeout 120 "$BUILD/bench/layer_norm_bench" --rows 256K \
      --features 768,3072 2>&1 | tee -a "$OUT/layernorm.log"
  done
fi

if [[ " $STAGES " == *" sparse "* ]]; then
  # Block-sparse kernels vs dense cuDNN and FlexAttention (compiled), same masks, one GPU.
  # SPARSE_VARIANTS: "label:forward:backward" items, each run with RA_SPARSE_FORWARD /
  # RA_SPARSE_BACKWARD set to those values (empty = the default kernels).
  for S in ${SPARSE_SEQ_LENS:-64K 256K}; do
    for variant in ${SPARSE_VARIANTS:-default::}; do
      IFS=: read -r label fwd_kernel bwd_kernel <<< "$variant"
      echo "== $S $label (RA_SPARSE_FORWARD=$fwd_kernel RA_SPARSE_BACKWARD=$bwd_kernel)" \
        | tee -a "$OUT/sparse.log"
      RA_SPARSE_FORWARD=$fwd_kernel RA_SPARSE_BACKWARD=$bwd_kernel timeout 240 \
        "$BUILD/bench/sparse_attention_bench" --seq-len $S --json "$OUT/sparse_${S}_$label.json" \
        2>&1 | tee -a "$OUT/sparse.log" | tail -4
    done
    timeout 300 python3 bench/sparse_flex_bench.py --seq-len $S --json "/tmp/flex_$S.json" 2>&1 \
      | grep -v Warning | tee -a "$OUT/sparse.log" | tail -4
  done
  elapsed "sparse bench done"
fi

if [[ " $STAGES " == *" dilated "* ]]; then
  # Single-GPU dilated attention rows (issue 3): each DILATED_RUNS item is one
  # bench_dilated_attention command line with its flags joined by commas, optionally followed by
  # ":" and environment assignments joined by +; with --profile PREFIX the traces are summarised
  # into profile.log.
  for item in ${DILATED_RUNS:---configs,longnet-base,--seq-lens,1M,--head-modes,partition,--passes,fwdbwd}; do
    IFS=: read -r flags env_items <<< "$item"
    args=(${flags//,/ })
    echo "== bench_dilated_attention ${args[*]} ${env_items}" | tee -a "$OUT/dilated.log"
    env ${env_items//+/ } timeout 200 "$BUILD/bench/bench_dilated_attention" \
      --json "$OUT/dilated.jsonl" "${args[@]}" \
      2>&1 | tee -a "$OUT/dilated.log" | grep '^{' | sed 's/,"backend.*/}/'
  done
  for trace in /tmp/dilated_profile*.json; do
    [ -f "$trace" ] && python3 bench/summarize_trace.py "$trace" --top 15 --by-op --gaps 10 \
      >> "$OUT/profile.log" 2>&1
  done
  elapsed "dilated done"
fi

if [[ " $STAGES " == *" profile "* ]]; then
  # One traced step of each hot path, summarised (traces stay in /tmp: they are large).
  summarize() {
    python3 bench/summarize_trace.py "$1" --top 12 --by-op >> "$OUT/profile.log" 2>&1
    gzip -c "$1" > "$OUT/$(basename "$1").gz"
  }
  # PROFILE_SET=ring: only the dense ring (NCCL and local copy) and context_parallel at 128K.
  all=$([[ "${PROFILE_SET:-all}" == all ]] && echo 1)
  [ -n "$all" ] && timeout 200 "${MPIRUN[@]}" -n "$GPUS" "$BUILD/launch/ring_train" --seq-len 1M \
    --layers 12 --embed-dim 768 --heads 12 --ffn-dim 3072 --attention ring --steps 3 \
    --segment-lengths 2048,4096,8192,16384,32768 --dilation-rates 1,2,4,6,12 --causal \
    --checkpointing on --data synthetic:kv --profile-step 3 --profile-file /tmp/train_1M.json \
    >> "$OUT/train.log" 2>&1 && summarize /tmp/train_1M.json
  bench "$GPUS" --config dense-causal --seq-len 128K --zigzag --profile /tmp/ring_128K.json \
    && summarize /tmp/ring_128K.json
  bench "$GPUS" --config dense-causal --seq-len 128K --zigzag --local-copy \
    --profile /tmp/ring_local_128K.json && summarize /tmp/ring_local_128K.json
  timeout 150 torchrun --nproc-per-node "$GPUS" bench/context_parallel_baseline.py \
    --seq-len 131072 --heads 16 --head-dim 128 --backend cudnn --profile /tmp/cp.json \
    >> "$OUT/bench.log" 2>&1 && summarize /tmp/cp.131072.json
  [ -n "$all" ] && timeout 120 "$BUILD/bench/bench_dilated_attention" --configs longnet-base \
    --seq-lens 1M --causal 1 --head-modes all --passes fwdbwd --profile /tmp/dilated \
    >> "$OUT/bench.log" 2>&1 && summarize /tmp/dilated.longnet-base.1M.causal.all.fwdbwd.json
  grep -E "^trace|busy|^  [a-z]" "$OUT/profile.log" | head -80
  elapsed "profile done"
fi

[ -n "${clocks_pid:-}" ] && kill "$clocks_pid" 2>/dev/null
echo "## results ($(head -1 "$OUT/device.txt"))"
python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if not rows:
    print("(no benchmark rows: the bench stage did not run; training steps are above and in "
          "train.log)")
    sys.exit(0)
print("| impl | config | GPUs | S | ms fwd+bwd | TFLOP/s/GPU | tokens/s | peak GiB |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['impl']} | {r.get('config', 'dense-causal')} | {r['gpus']} | {r['seq_len']} | "
          f"{r['fwd_bwd_ms']:.1f} | {r['tflops_per_gpu']:.1f} | {r['tokens_per_s']:.3g} | "
          f"{r['peak_gib']:.1f} |")
PY
