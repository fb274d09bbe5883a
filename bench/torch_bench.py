"""Python rows of ckpt_bench: torch.save + fsync and torch.load of the benchmark's checkpoint.

Run by ckpt_bench, one child process per mode, so its peak memory is measured on its own:

    torch_bench.py save SOURCE.pt OUT.pt REPS     # torch.load(SOURCE) untimed, then REPS x save+fsync
    torch_bench.py load FILE.pt REPS [cold [LEAD_INS]]
        # REPS x torch.load (cold: FILE evicted from the cache first, after LEAD_INS untimed
        # loads of it, each evicted first too: ckpt_bench's --cold-lead-ins)

Prints one line `RESULT <mode> <seconds> ...` with one time per repetition.
"""
import os
import sys
import time

import torch


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def save(source, out, reps):
    state = torch.load(source)
    times = []
    for i in range(reps):
        if os.path.exists(out):
            os.remove(out)  # every row writes a new file, none replaces one
        os.sync()  # as ckpt_bench's settle(): the disk finishes the last write first
        time.sleep(0.3)
        start = time.perf_counter()
        # What PyMarlin's DefaultCheckpointer does, plus the fsync that makes it durable.
        with open(out, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        times.append(time.perf_counter() - start)
        if i < reps - 1:
            os.remove(out)  # as ckpt_bench: the next save starts with the page cache as this found it
    print("RESULT py_save " + " ".join(f"{t:.6f}" for t in times))


def load(path, reps, cold, lead_ins):
    for _ in range(lead_ins):
        evict(path)
        torch.load(path)  # untimed; dropped at once
    times = []
    for _ in range(reps):
        if cold:
            evict(path)
        start = time.perf_counter()
        state = torch.load(path)
        times.append(time.perf_counter() - start)
        del state
    print("RESULT py_load " + " ".join(f"{t:.6f}" for t in times))


def main():
    mode = sys.argv[1]
    if mode == "save":
        save(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "load":
        cold = len(sys.argv) > 4 and sys.argv[4] == "cold"
        lead_ins = int(sys.argv[5]) if cold and len(sys.argv) > 5 else 0
        load(sys.argv[2], int(sys.argv[3]), cold, lead_ins)
    else:
        sys.exit(f"torch_bench.py: unknown mode {mode!r}")


if __name__ == "__main__":
    main()
