#!/usr/bin/env bash
# Installs the built ckpt into a temporary prefix, builds tests/consumer against it with
# find_package(ckpt), and runs it. Usage: run.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build_dir=$1
source_dir=$2
work=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-consumer-XXXXXX")
trap 'rm -rf "$work"' EXIT

cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
test -f "$work/prefix/include/ckpt/default_checkpointer.h"
launcher=()
if command -v ccache > /dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
# The prefixes the build found its dependencies in (e.g. a LibTorch wheel), after the install's.
build_prefixes=$(sed -n 's/^CMAKE_PREFIX_PATH:[A-Z]*=//p' "$build_dir/CMakeCache.txt")
cmake -S "$source_dir/tests/consumer" -B "$work/build" \
  -DCMAKE_PREFIX_PATH="$work/prefix${build_prefixes:+;$build_prefixes}" \
  -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" > "$work/configure.log"
cmake --build "$work/build" -j 2 > "$work/build.log" || { cat "$work/build.log"; exit 1; }
"$work/build/consumer" "$work/checkpoints"
test -f "$work/checkpoints/model_0.pt"
echo "consumer: built against $work/prefix with find_package(ckpt)"
