#!/usr/bin/env bash
# The device checks on a machine with an NVIDIA GPU and a CUDA LibTorch (the `torch` wheel of its
# python3), in under 10 minutes. That machine has no network: ckpt's other dependencies travel in
# with the working tree as Debian 12 packages (18 MB of .deb files; unpacked, 223 MB, over what
# travels), unpacked there into .gpu-deps/root, not into /.
#
#   scripts/gpu-check.sh prepare   here, with network: downloads them into .gpu-deps/debs (ignored
#                                  by git; carry .gpu-deps to the GPU machine)
#   scripts/gpu-check.sh run       there: configures and builds against python3's torch and the
#                                  local CUDA toolkit, then runs
#                                    1. the test-device suites (devices, trainer_on_device), as CI;
#                                    2. the sample trainer on cuda: 2 epochs, resumed to 3, against
#                                       3 straight (exact resume on the GPU: `ckpt diff` of the final
#                                       weights must find them equal), and a CPU checkpoint resumed
#                                       on cuda;
#                                    3. a ~250 MB model (hidden 4600) on cuda, 3 epochs each with
#                                       sync, async and async+stage_in_background saves: the time
#                                       training was blocked in checkpointing, from the trainer's
#                                       summary, and the staging copies' throughput from ckpt's log.
# Without a GPU, `run` stops after step 1 and says so (what this machine can check of it).
# CKPT_GPU_BUILD_DIR (default ./build-gpu) picks the build directory; figures go to stdout and,
# where $OUT is set, to $OUT/gpu-check.log.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deps=$root/.gpu-deps
build=${CKPT_GPU_BUILD_DIR:-$root/build-gpu}

# Build dependencies and what they link at run time (the GPU machine's image has none of them).
packages=(
  libboost-program-options-dev libboost-program-options1.74-dev libboost-program-options1.74.0
  libboost-test-dev libboost-test1.74-dev libboost-test1.74.0 libboost1.74-dev
  libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 zlib1g-dev nlohmann-json3-dev libisal-dev libisal2
  libgloo-dev libgloo0 libcurl4-openssl-dev libcurl4 libssl-dev libpugixml-dev libpugixml1v5
  libnghttp2-14 librtmp1 libssh2-1 libpsl5 libbrotli1 libldap-2.5-0 libsasl2-2 libzstd1
)

prepare() {
  mkdir -p "$deps/debs"
  grep -qx '/.gpu-deps/' .git/info/exclude 2>/dev/null || echo '/.gpu-deps/' >> .git/info/exclude
  (cd "$deps/debs" && apt-get download "${packages[@]}")
  du -sh "$deps/debs"
}

unpack() {  # the .deb files into .gpu-deps/root, with dpkg-deb or, without it, Python
  [ -d "$deps/root/usr" ] && return 0
  mkdir -p "$deps/root"
  local deb
  for deb in "$deps"/debs/*.deb; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$deb" "$deps/root"
    else
      python3 - "$deb" "$deps/root" <<'PY'
import io, lzma, sys, tarfile
data = open(sys.argv[1], "rb").read()
at = 8  # an ar archive: "!<arch>\n", then 60-byte headers
while at < len(data):
    name, size = data[at:at + 16].decode().strip(), int(data[at + 48:at + 58])
    body = data[at + 60:at + 60 + size]
    if name.startswith("data.tar"):
        mode = "r:xz" if name.endswith(".xz") else "r:*"
        tarfile.open(fileobj=io.BytesIO(body), mode=mode).extractall(sys.argv[2])
    at += 60 + size + (size % 2)
PY
    fi
  done
}

log() { echo "$@"; if [ -n "${OUT:-}" ]; then echo "$@" >> "$OUT/gpu-check.log"; fi; }

run() {
  ls "$deps"/debs/*.deb >/dev/null 2>&1 ||
    { echo "gpu-check: run 'scripts/gpu-check.sh prepare' first (with network)" >&2; exit 1; }
  unpack
  local torch_root python
  python=$(command -v python3)
  torch_root=$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
  log "torch $("$python" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())')"
  local sysroot=$deps/root/usr
  export LD_LIBRARY_PATH=$sysroot/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCKPT_BUILD_TESTS=ON \
    "-DCMAKE_PREFIX_PATH=$torch_root;$sysroot" "-DCMAKE_INCLUDE_PATH=$sysroot/include" \
    "-DCMAKE_LIBRARY_PATH=$sysroot/lib/x86_64-linux-gnu" "-DCKPT_PYTHON=$python" >/dev/null
  cmake --build "$build" -j "$(nproc)" --target ckpt_tests sample_trainer ckpt

  log "== 1. the test-device suites"
  "$build/tests/ckpt_tests" --run_test=devices,trainer_on_device --report_level=short

  if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    log "gpu-check: no CUDA device here: steps 2 and 3 need one (built and step 1 passed)"
    return 0
  fi
  local work trainer=$build/sample_trainer/sample_trainer tool=$build/tools/ckpt
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  train() {  # train DIR EPOCHS DEVICE [flags...]
    local dir=$1 epochs=$2 device=$3
    shift 3
    "$trainer" --trainer.epochs "$epochs" --trainer.device "$device" --chkp.save_dir "$dir" \
      --chkp.load_dir "$dir" "$@"
  }
  log "== 2. exact resume on cuda"
  train "$work/straight" 3 cuda >/dev/null
  train "$work/split" 2 cuda >/dev/null
  train "$work/split" 3 cuda >/dev/null
  "$tool" diff "$work/straight/model_model_2.pt" "$work/split/model_model_2.pt" | tee -a "$work/diff"
  train "$work/from_cpu" 2 cpu >/dev/null
  train "$work/from_cpu" 3 cuda >/dev/null
  log "resumed on cuda: $(ls "$work/split") ; CPU checkpoint resumed on cuda: ok"

  log "== 3. a ~250 MB model on cuda: time blocked in checkpointing"
  local mode
  for mode in sync async background; do
    local flags=(--model.hidden1 4600 --model.hidden2 4600 --trainer.batch_size 256
                 --chkp.log_level debug)
    [ "$mode" = async ] && flags+=(--chkp.async true)
    [ "$mode" = background ] && flags+=(--chkp.async true --chkp.stage_in_background true)
    train "$work/$mode" 3 cuda "${flags[@]}" > "$work/$mode.log" 2>&1
    log "$mode: $(grep -iE 'blocked|checkpointing' "$work/$mode.log" | tail -1)"
    grep -E 'copied checkpoint .* for a background save' "$work/$mode.log" | tail -2 |
      while read -r line; do log "  $line"; done
  done
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: scripts/gpu-check.sh prepare|run" >&2; exit 2 ;;
esac
