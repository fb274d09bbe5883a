#!/usr/bin/env bash
# Installs the dependencies (Debian 12 packages), builds ckpt and runs the main job: the sample
# trainer on the digits data, checkpointing every epoch into ./checkpoints.
# Usage: scripts/demo.sh [sample_trainer flags...]   (build directory: $CKPT_BUILD_DIR, default ./build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${CKPT_BUILD_DIR:-$root/build}

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build_dir" -j "$(nproc)" --target sample_trainer
"$build_dir/sample_trainer/sample_trainer" "$@"
