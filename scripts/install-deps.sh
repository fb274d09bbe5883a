#!/usr/bin/env bash
# Installs ckpt's build and test dependencies from Debian 12 packages. Idempotent: a package that is
# already installed is not fetched again, and apt's index is refreshed only when something is missing.
# Installing starts no service.
set -euo pipefail

# Build and test: compilers, LibTorch, Boost, spdlog, ..., libcurl + OpenSSL + pugixml (the S3
# client), and Python's torch for the interop tests.
packages=(
  build-essential cmake ccache pkg-config clang libclang-rt-14-dev
  libtorch-dev
  libboost-filesystem-dev libboost-program-options-dev libboost-test-dev
  libspdlog-dev zlib1g-dev nlohmann-json3-dev libisal-dev
  libgloo-dev strace iproute2
  libcurl4-openssl-dev libssl-dev libpugixml-dev
  python3-torch
)
# The S3 tests: a throwaway single-node Ceph (scripts/s3-server.sh: ceph-mon, ceph-osd, radosgw,
# the ceph/radosgw-admin/monmaptool CLIs, uuidgen, openssl for the HTTPS gateway's throwaway CA)
# and two independent S3 clients (boto3 for /usr/bin/python3, the AWS CLI). Without recommends:
# they would pull in ceph-mgr, ceph-mds and more, which the fixture does not use.
s3_packages=(
  ceph-mon ceph-osd radosgw ceph-common uuid-runtime
  curl procps openssl
  python3-boto3 awscli
)

missing() {  # the packages among "$@" that are not installed
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
mapfile -t missing_main < <(missing "${packages[@]}")
mapfile -t missing_s3 < <(missing "${s3_packages[@]}")

if [ ${#missing_main[@]} -eq 0 ] && [ ${#missing_s3[@]} -eq 0 ]; then
  echo "install-deps: all $(( ${#packages[@]} + ${#s3_packages[@]} )) packages already installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
if [ ${#missing_main[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing_main[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing_main[@]}"
fi
if [ ${#missing_s3[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing_s3[*]} (S3 test fixture and clients)"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing_s3[@]}"
fi
