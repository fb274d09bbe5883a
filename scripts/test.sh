#!/usr/bin/env bash
# Installs the dependencies (Debian 12 packages), builds ckpt and runs the whole test suite.
# Usage: scripts/test.sh            (build directory: $CKPT_BUILD_DIR, default ./build)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${CKPT_BUILD_DIR:-build}

scripts/install-deps.sh
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCKPT_BUILD_TESTS=ON
cmake --build "$build_dir" -j "$(nproc)"
cd "$build_dir"
ctest --output-on-failure -j "$(nproc)" --timeout 1200
