#!/usr/bin/env bash
# Builds the loader's libFuzzer target with clang (ASan + UBSan) and fuzzes it for
# ${CKPT_FUZZ_SECONDS:-60} seconds from a seed corpus of real checkpoints. Exits non-zero on any
# crash; the crashing input is left in $build_dir/crashes/ (make it a regression test).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${CKPT_FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${CKPT_FUZZ_SECONDS:-60}

command -v clang++ > /dev/null || { echo "fuzz.sh: clang++ is required (apt-get install clang)"; exit 1; }
CXX=clang++ cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCKPT_BUILD_FUZZER=ON -DCKPT_BUILD_TESTS=OFF -DCKPT_BUILD_SAMPLE_TRAINER=OFF > /dev/null
cmake --build "$build_dir" -j "$(nproc)" --target ckpt_fuzz_loader ckpt_write_seeds

corpus="$build_dir/corpus"
rm -rf "$corpus" "$build_dir/crashes"
mkdir -p "$corpus" "$build_dir/crashes"
"$build_dir/tests/fuzz/ckpt_write_seeds" "$corpus"
cp "$root"/tests/fuzz/seeds/* "$corpus"/ 2> /dev/null || true
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
"$build_dir/tests/fuzz/ckpt_fuzz_loader" "$corpus" -max_total_time="$seconds" -timeout=10 \
  -rss_limit_mb=2048 -max_len=65536 -artifact_prefix="$build_dir/crashes/" -print_final_stats=1 2>&1 |
  tail -n 25
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ] || [ -n "$(ls -A "$build_dir/crashes")" ]; then
  echo "fuzz.sh: FAILED: crashes in $build_dir/crashes"
  exit 1
fi
echo "fuzz.sh: 0 crashes in ${seconds}s"
