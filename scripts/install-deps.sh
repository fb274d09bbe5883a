#!/usr/bin/env bash
# Installs ckpt's build and test dependencies from Debian 12 packages. Idempotent: a package that is
# already installed is not fetched again, and apt's index is refreshed only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake ccache pkg-config clang libclang-rt-14-dev
  libtorch-dev
  libboost-filesystem-dev libboost-program-options-dev libboost-test-dev
  libspdlog-dev zlib1g-dev nlohmann-json3-dev libisal-dev
  libgloo-dev strace iproute2
  libcurl4-openssl-dev libssl-dev libpugixml-dev
  python3-torch
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
