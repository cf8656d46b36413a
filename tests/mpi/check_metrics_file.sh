#!/usr/bin/env bash
# Runs ring_train from a --config file (flags override it) with a metrics file, and checks
# that the file has one JSON line per logged step with every documented field.
# usage: check_metrics_file.sh MPIEXEC RING_TRAIN RANKS CONFIG WORK_DIR
set -uo pipefail
mpiexec=$1 ring_train=$2 ranks=$3 config=$4 work=$5
rm -rf "$work" && mkdir -p "$work"
metrics="$work/metrics.jsonl"
"$mpiexec" -n "$ranks" "$ring_train" --config "$config" --steps 3 --metrics-file "$metrics" \
  --eval-batches 1 || { echo "FAIL: ring_train exited with $?"; exit 1; }
steps=$(grep -c '"event":"step"' "$metrics")
[ "$steps" -eq 3 ] || { echo "FAIL: $steps step lines in $metrics, expected 3 (--steps 3 overrides 100)"; exit 1; }
for field in step loss grad_norm lr step_ms tokens_per_s tokens_per_s_per_gpu tflops_per_gpu \
             mfu peak_memory_gib accuracy; do
  n=$(grep '"event":"step"' "$metrics" | grep -c "\"$field\":")
  [ "$n" -eq 3 ] || { echo "FAIL: field $field missing from step lines"; cat "$metrics"; exit 1; }
done
grep -q '"event":"eval"' "$metrics" || { echo "FAIL: no eval line"; exit 1; }
echo "PASS: $metrics has 3 step lines with every field and an eval line"
