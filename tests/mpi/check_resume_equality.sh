#!/usr/bin/env bash
# ring_train end to end: a run interrupted after K steps (--stop-after K) and resumed with
# --resume auto logs exactly the losses and grad norms of an uninterrupted run.
# usage: check_resume_equality.sh MPIEXEC RING_TRAIN RANKS CONFIG WORK_DIR [EXTRA FLAGS...]
set -uo pipefail
mpiexec=$1 ring_train=$2 ranks=$3 config=$4 work=$5
shift 5
extra=("$@")
rm -rf "$work" && mkdir -p "$work"
run() { "$mpiexec" -n "$ranks" "$ring_train" --config "$config" --steps 6 --save-every 2 \
          ${extra[@]+"${extra[@]}"} "$@" \
          > "$work/log.txt" 2>&1 || { cat "$work/log.txt"; echo "FAIL: ring_train failed"; exit 1; }; }
run --save-dir "$work/full" --metrics-file "$work/full.jsonl"
run --save-dir "$work/split" --metrics-file "$work/split.jsonl" --stop-after 3
grep -q "stopping after step 3" "$work/log.txt" || { echo "FAIL: --stop-after 3 did not stop"; exit 1; }
run --save-dir "$work/split" --metrics-file "$work/split.jsonl" --resume auto
grep -q "resumed: continuing at step 4" "$work/log.txt" || {
  cat "$work/log.txt"; echo "FAIL: did not resume at step 4 (newest complete: step 3)"; exit 1; }
fields() { grep '"event":"step"' "$1" | grep -o '"grad_norm":[^,]*\|"loss":[^,]*\|"step":[0-9]*'; }
if ! diff <(fields "$work/full.jsonl") <(fields "$work/split.jsonl"); then
  echo "FAIL: resumed losses differ from the uninterrupted run"; exit 1
fi
[ "$(grep -c '"event":"step"' "$work/split.jsonl")" -eq 6 ] || { echo "FAIL: expected 6 step lines"; exit 1; }
echo "PASS: steps 1-6 identical (loss, grad norm) with an interruption after step 3"
