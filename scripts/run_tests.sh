#!/usr/bin/env bash
# One command for a fresh Debian 12 machine: install packages, build, run the whole test suite
# (labels unit, mpi, install; gpu tests skip without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure --parallel 2 --timeout 900
