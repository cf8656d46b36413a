#!/usr/bin/env bash
# Runs ring_train under mpirun and checks the final eval accuracy lies in [MIN, MAX].
# usage: check_train_accuracy.sh MPIEXEC RING_TRAIN RANKS ATTENTION MIN MAX [ring_train args...]
# The learning test: with attention that reaches across shards the long-range task is learned
# (accuracy well above chance); with shard-local attention it stays near chance.
set -uo pipefail
mpiexec=$1 ring_train=$2 ranks=$3 attention=$4 min=$5 max=$6
shift 6
output=$("$mpiexec" -n "$ranks" "$ring_train" --attention "$attention" "$@" 2>&1)
rc=$?
echo "$output"
if [ $rc -ne 0 ]; then
  echo "FAIL: ring_train exited with status $rc"
  exit 1
fi
accuracy=$(echo "$output" | sed -n 's/^eval: .*accuracy \([0-9.]*\).*/\1/p' | tail -1)
if [ -z "$accuracy" ]; then
  echo "FAIL: no 'eval: ... accuracy' line (pass --eval-batches)"
  exit 1
fi
if awk -v a="$accuracy" -v lo="$min" -v hi="$max" 'BEGIN { exit !(a >= lo && a <= hi) }'; then
  echo "PASS: eval accuracy $accuracy in [$min, $max] (attention=$attention, ranks=$ranks)"
else
  echo "FAIL: eval accuracy $accuracy not in [$min, $max] (attention=$attention, ranks=$ranks)"
  exit 1
fi
