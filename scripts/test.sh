#!/usr/bin/env bash
# Installs the dependencies (Debian 12 packages, and the torch 2.11.0 wheel from PyPI), builds
# ckpt and runs the whole test suite, so that every suite runs against both LibTorch versions:
#   1. the loader's libFuzzer target for 60 s from a seed corpus of real checkpoints (Debian's
#      LibTorch 1.13.1);
#   2. the suite (ctest) on a build with AddressSanitizer + UndefinedBehaviorSanitizer against
#      Debian's LibTorch 1.13.1, its Python tests under Debian's python3-torch 1.13;
#   3. the suite on a normal build against LibTorch 2.11.0 from the `torch` wheel on PyPI
#      (scripts/torch-wheel.sh), its Python tests under that wheel's torch 2.11.0.
# Usage: scripts/test.sh   (build directories: $CKPT_BUILD_DIR, default ./build: <that>-asan for
#                           step 2, <that>-torch2 for step 3)
#   CKPT_TORCH2=0          step 3 against Debian's 1.13 instead, in <that> (no wheel download)
#   CKPT_SKIP_SANITIZERS=1 / CKPT_SKIP_FUZZ=1   skip step 2 / step 1
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build_dir=${CKPT_BUILD_DIR:-$root/build}
jobs=$(nproc)

scripts/install-deps.sh

run_suite() {  # run_suite BUILD_DIR [cmake args...]
  local dir=$1
  shift
  cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCKPT_BUILD_TESTS=ON "$@"
  cmake --build "$dir" -j "$jobs"
  (cd "$dir" && ctest --output-on-failure -j "$jobs" --timeout 1500)
}

if [ "${CKPT_SKIP_FUZZ:-0}" != 1 ]; then
  echo "== libFuzzer: the loader for ${CKPT_FUZZ_SECONDS:-60} s (ASan + UBSan)"
  scripts/fuzz.sh
fi

if [ "${CKPT_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== test suite under AddressSanitizer + UndefinedBehaviorSanitizer"
  # LibTorch itself is not instrumented and keeps allocations until exit: leak checking is off.
  # The kill test's rounds take seconds each under ASan: 40 of them here, all 110 in step 3.
  # -O1 -g1 (line tables: reports still name file and line) instead of -O2 -g: measured here, a
  # test source compiles in 18.5 s instead of 46 s under the sanitizers, which keeps CI in its time.
  CKPT_KILL_ROUNDS=40 \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite "$build_dir-asan" -DCKPT_SANITIZE=ON "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG"
fi

if [ "${CKPT_TORCH2:-1}" = 1 ]; then
  echo "== test suite against LibTorch 2.x (the torch wheel)"
  mapfile -t wheel < <(scripts/torch-wheel.sh)
  [ ${#wheel[@]} -eq 2 ] || { echo "test.sh: scripts/torch-wheel.sh failed" >&2; exit 1; }
  echo "LibTorch: ${wheel[0]}; Python: ${wheel[1]}"
  run_suite "$build_dir-torch2" "-DCMAKE_PREFIX_PATH=${wheel[0]}" "-DCKPT_PYTHON=${wheel[1]}"
else
  echo "== test suite"
  run_suite "$build_dir"
fi
