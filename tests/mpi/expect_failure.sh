#!/usr/bin/env bash
# Runs a command that must fail: passes when it exits non-zero AND its output matches the
# extended regular expression (ctest's PASS_REGULAR_EXPRESSION alone ignores the exit code).
# usage: expect_failure.sh REGEX COMMAND [ARGS...]
set -uo pipefail
regex=$1
shift
output=$("$@" 2>&1)
rc=$?
echo "$output"
if [ $rc -eq 0 ]; then
  echo "FAIL: the command succeeded (expected a non-zero exit)"
  exit 1
fi
if ! echo "$output" | grep -Eq -- "$regex"; then
  echo "FAIL: exit $rc but the output does not match: $regex"
  exit 1
fi
echo "PASS: exit $rc with the expected message"
