#!/usr/bin/env bash
# Installs LibTorch 2.x as users get it from PyPI: the pinned `torch` wheel (a CUDA build, whose
# LibTorch and CMake config live inside it) for a pip Python, plus what the tests run under that
# Python (boto3 for the S3 cross-checks, numpy, which torch warns without). pip keeps downloaded
# wheels in its cache (~/.cache/pip), so a second run downloads nothing; an installed wheel of the
# pinned version is not touched.
#
# Prints two lines for the caller: the CMake prefix of the wheel's LibTorch (the torch package's
# root), then the Python.
#   read -r prefix python < <(scripts/torch-wheel.sh | tr '\n' ' ')
#   cmake -S . -B build-torch2 -DCMAKE_PREFIX_PATH="$prefix" -DCKPT_PYTHON="$python"
#
# CKPT_WHEEL_PYTHON picks the interpreter (default: the first python3 on PATH that is not
# Debian's /usr/bin/python3, whose python3-torch 1.13 is the other version the tests use);
# CKPT_TORCH_VERSION the version (default 2.11.0, the one on the GPU machine).
set -euo pipefail
version=${CKPT_TORCH_VERSION:-2.11.0}

python=${CKPT_WHEEL_PYTHON:-}
if [ -z "$python" ]; then
  while IFS= read -r candidate; do
    if [ "$(readlink -f "$candidate")" != "$(readlink -f /usr/bin/python3)" ]; then
      python=$candidate
      break
    fi
  done < <(type -ap python3)
fi
if [ -z "$python" ] || ! "$python" -m pip --version >/dev/null 2>&1; then
  echo "torch-wheel: no python3 with pip other than Debian's /usr/bin/python3 on PATH" \
       "(set CKPT_WHEEL_PYTHON to one)" >&2
  exit 1
fi
python=$("$python" -c 'import sys; print(sys.executable)')

installed() {
  "$python" - "$version" <<'EOF' 2>/dev/null
import sys, torch, boto3, numpy
sys.exit(0 if torch.__version__.split("+")[0] == sys.argv[1] else 1)
EOF
}
if ! installed; then
  echo "torch-wheel: installing torch==$version, boto3 and numpy for $python" >&2
  "$python" -m pip install --quiet --disable-pip-version-check "torch==$version" boto3 numpy >&2
  installed || { echo "torch-wheel: torch $version did not install for $python" >&2; exit 1; }
fi
# The wheel's root, not torch.utils.cmake_prefix_path (its share/cmake): TorchConfig.cmake finds
# libtorch under CMAKE_PREFIX_PATH before the system paths, where Debian's 1.13 may also be.
"$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))'
echo "$python"
