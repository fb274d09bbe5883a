#!/usr/bin/env bash
# Installs, from Debian 12 packages, what the local S3 test fixture (scripts/s3-server.sh) and the
# S3 cross-checks (scripts/s3-smoke.sh, later the S3 test suites) need: a throwaway single-node Ceph
# (ceph-mon, ceph-osd, radosgw, the ceph/radosgw-admin/monmaptool CLIs from ceph-common, uuidgen)
# and two independent S3 clients (python3-boto3 for /usr/bin/python3, and awscli).
#
# usage: scripts/install-s3-deps.sh        (as root, or with sudo available)
#
# Idempotent, like scripts/install-deps.sh: a package already installed is not fetched again, and
# apt's index is refreshed only when something is missing. Recommends are not installed (they would
# pull in ceph-mgr, ceph-mds and more, which the fixture does not use). Installing starts no service.
# Not yet called by scripts/install-deps.sh, scripts/test.sh or .ci/run (groundwork for issue 14).
set -euo pipefail

packages=(
  ceph-mon ceph-osd radosgw ceph-common uuid-runtime
  curl iproute2 procps
  python3-boto3 awscli
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-s3-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "install-s3-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
