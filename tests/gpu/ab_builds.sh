# Sourced by the same-machine A/B scripts (ab_dense.sh, ab_dilated.sh) after gpu_job.sh:
# configures and builds this tree's TARGETS into $BUILD and, where BASE_TAR names a `git archive`
# tarball in the repository root (untracked, so it travels with the tree; delete it after), the
# baseline's BASE_TARGETS into $base_src/build beside it, half the cores each; then runs the
# ctest pattern TEST_REGEX on this tree's build (nothing if empty). Exits on a failed build.
source "$ROOT/tests/gpu/configure_gpu_build.sh"
base_src=/tmp/ra_base
base_pid=
if [ -n "${BASE_TAR:-}" ]; then
  rm -rf "$base_src" && mkdir -p "$base_src" && tar -xf "$ROOT/$BASE_TAR" -C "$base_src"
  # No .deps there: the Boost/json unpacked above serve both (no second unpack mid-build).
  logs="$OUT"
  (ROOT="$base_src" BUILD="$base_src/build" OUT="$OUT/base" && mkdir -p "$OUT" &&
   source "$ROOT/tests/gpu/configure_gpu_build.sh" > "$logs/base_configure.log" 2>&1 &&
   cmake --build "$BUILD" -j "$(( $(nproc) / 2 ))" --target $BASE_TARGETS \
     > "$logs/base_build.log" 2>&1) &
  base_pid=$!
fi
cmake --build "$BUILD" -j "$(nproc)" --target $TARGETS > "$OUT/build.log" 2>&1 \
  || { grep -E "error|Error" -A5 "$OUT/build.log" | head -60; exit 1; }
if [ -n "$base_pid" ]; then
  wait "$base_pid" || { echo "baseline build failed"; tail -30 "$OUT"/base_*.log; exit 1; }
fi
elapsed "builds done ($GPUS GPUs)"

if [ -n "${TEST_REGEX:-}" ]; then
  timeout 300 ctest --test-dir "$BUILD" -R "$TEST_REGEX" --output-on-failure --timeout 200 \
    > "$OUT/ctest.log" 2>&1
  grep -E "Failure|Expected|Which is|error:|FAILED" "$OUT/ctest.log" | head -30
  grep -E "tests passed|tests failed|Test +#" "$OUT/ctest.log"
  elapsed "tests done"
fi
