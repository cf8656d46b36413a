#!/usr/bin/env bash
# Fault test driver: runs fault_probe under mpirun and checks that the job ends non-zero within
# deadline + margin (never hangs: a hard `timeout` guards it) and that the output names the
# rank, host, operation and step (stall) or the rank that died (exit).
#   run_fault_test.sh <mpiexec> <ranks> <fault_probe> <stall|exit> <ring|allgather> <deadline>
#                     [cpu|cuda]
set -u
mpiexec=$1 ranks=$2 probe=$3 mode=$4 strategy=$5 deadline=$6 device=${7:-cpu}
margin=30
log=$(mktemp)
start=$(date +%s%N)
timeout --kill-after=5 $((deadline * 30)) \
  "$mpiexec" -n "$ranks" "$probe" "$mode" "$strategy" "$deadline" "$device" >"$log" 2>&1
rc=$?
elapsed=$(( ($(date +%s%N) - start) / 1000000000 ))
cat "$log"
fail() { echo "FAULT TEST FAILED: $*"; rm -f "$log"; exit 1; }
[ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || fail "the job hung (killed by timeout after ${elapsed}s)"
[ "$rc" -ne 0 ] || fail "the job exited 0 although rank $((ranks - 1)) failed"
(( elapsed < deadline + margin )) ||
  fail "the job took ${elapsed}s, more than deadline $deadline s + margin $margin s"
if [ "$mode" = stall ]; then
  grep -q "did not complete within" "$log" || fail "no timeout message"
  grep -Eq "rank [0-9]+ of $ranks on host $(hostname)" "$log" || fail "message lacks rank/host"
  grep -Eq "(send_recv|all_gather|reduce_scatter|all_reduce)" "$log" || fail "message lacks the operation"
  grep -q "(step 1)" "$log" || fail "message lacks the step"
else
  grep -q "exits mid-step" "$log" || fail "the victim did not run"
  grep -Eiq "(did not complete within|exited|non-zero|killed|abort)" "$log" ||
    fail "no message about the dead rank"
fi
echo "fault test passed: rc=$rc after ${elapsed}s"
rm -f "$log"
