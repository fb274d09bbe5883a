#!/bin/bash
# Measures how much this disk's write speed varies, without ckpt: eight 1 GiB writes of the same
# random bytes with dd + fsync, into a new file each time ("new", removed after each write, outside
# the timing) or over the same file in place ("overwrite"). Explains the save A/A rows of
# ckpt_bench: on a thin-provisioned virtual disk mounted with `discard`, new allocations vary
# several-fold from write to write while in-place overwrites do not.
# Usage: bench/disk-noise.sh DIR   (needs 1 GiB free in /dev/shm and in DIR)
set -euo pipefail
dir=${1:?usage: bench/disk-noise.sh DIR}
src=/dev/shm/ckpt-disk-noise.$$
target="$dir/ckpt-disk-noise.$$"
trap 'rm -f "$src" "$target"' EXIT
head -c 1G /dev/urandom >"$src"
for mode in new overwrite; do
  line="$mode:"
  for _ in 1 2 3 4 5 6 7 8; do
    sync
    sleep 0.3
    flags=fsync
    [ "$mode" = overwrite ] && flags=fsync,notrunc
    start=$(date +%s.%N)
    dd if="$src" of="$target" bs=4M conv=$flags status=none
    end=$(date +%s.%N)
    line+=" $(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')s"
    if [ "$mode" = new ]; then rm -f "$target"; sync; fi
  done
  echo "$line"
done
