#!/usr/bin/env bash
# Builds examples/ against the installed ckpt, as a user's project is built (find_package(ckpt)
# from an install prefix), and runs each example.
# usage: run_examples.sh BUILD_DIR SOURCE_DIR        install, build, run the local examples
#        run_examples.sh BUILD_DIR SOURCE_DIR s3     run the S3 example (built by the first form)
#                                                    against the gateway in $CKPT_S3_FIXTURE
set -euo pipefail
build_dir=$1
source_dir=$2
mode=${3:-local}
prefix=$build_dir/examples-install
examples=$build_dir/examples-build
work=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-examples-XXXXXX")
trap 'rm -rf "$work"' EXIT

run() {  # run NAME ARGS...: in a directory of its own; its output shown on failure
  local name=$1
  shift
  mkdir -p "$work/$name"
  if ! (cd "$work/$name" && "$examples/$name" "$@") > "$work/$name.log" 2>&1; then
    echo "run_examples: $name $* failed:" >&2
    cat "$work/$name.log" >&2
    exit 1
  fi
  tail -n 1 "$work/$name.log"
}

if [ "$mode" = s3 ]; then
  [ -n "${CKPT_S3_FIXTURE:-}" ] && [ -f "$CKPT_S3_FIXTURE/env" ] \
    || { echo "run_examples: no S3 fixture (CKPT_S3_FIXTURE/env)" >&2; exit 1; }
  [ -x "$examples/s3" ] || { echo "run_examples: $examples/s3 is not built (ctest examples)" >&2; exit 1; }
  # shellcheck disable=SC1091
  . "$CKPT_S3_FIXTURE/env"
  run s3 "s3://$CKPT_S3_BUCKET/examples-$$-$RANDOM"
  exit 0
fi

rm -rf "$prefix"
cmake --install "$build_dir" --prefix "$prefix" > "$work/install.log"
test -f "$prefix/include/ckpt/default_checkpointer.h"
launcher=()
if command -v ccache > /dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
# The prefixes the build found its dependencies in (e.g. a LibTorch wheel), after the install's.
build_prefixes=$(sed -n 's/^CMAKE_PREFIX_PATH:[A-Z]*=//p' "$build_dir/CMakeCache.txt")
cmake -S "$source_dir/examples" -B "$examples" \
  -DCMAKE_PREFIX_PATH="$prefix${build_prefixes:+;$build_prefixes}" \
  -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" > "$work/configure.log" \
  || { cat "$work/configure.log"; exit 1; }
cmake --build "$examples" -j "$(nproc)" > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
run training_loop run
run fabric_style run
run weights_only_read run
run custom_checkpointer run
run program_options
run program_options --chkp.period 4   # the command line over the file and the preset
echo "run_examples: built against $prefix with find_package(ckpt) and ran every local example"
