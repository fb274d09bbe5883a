#!/usr/bin/python3
"""The sample trainer's digits MLP in Python, reading and writing the same checkpoints, so a run can
cross between Python and C++ in either direction.

Trains Sequential(Linear(64,128), ReLU, Dropout(0.1), Linear(128,64), ReLU, Dropout(0.1),
Linear(64,10)) with Adam (lr 0.003) and StepLR (halved every 3 epochs, stepped per batch) on
data/digits.csv.gz, with the C++ trainer's validation split and per-epoch shuffling, and after every
epoch saves {save_dir}/{prefix}_{epoch}.pt with torch.save in PyMarlin's layout:

  {"module_interface_state": model.state_dict(),
   "trainer_state": {"last_epoch": int, "optimizers": [adam.state_dict()],
                     "schedulers": [scheduler.state_dict()]},
   "trainer_backend_state": {"global_step_completed": int, "batches_completed": int,
                             "rng_state": torch.get_rng_state(), "shuffle_seed": int}}

which `sample_trainer --chkp.load_dir` resumes; with --load-dir it resumes the newest checkpoint
there, from C++ or Python. Needs the python3 that imports torch (Debian: /usr/bin/python3).

  /usr/bin/python3 tools/python/train_digits.py --epochs 4 --save-dir runs/a
  build/sample_trainer/sample_trainer --trainer.epochs 8 --chkp.load_dir runs/a --chkp.save_dir runs/a
  /usr/bin/python3 tools/python/train_digits.py --epochs 12 --load-dir runs/a --save-dir runs/a

Logs one line per epoch in the C++ trainer's format: epoch=N train_loss=... val_loss=... val_acc=...
"""
import argparse
import gzip
import os
import re
import sys
import tempfile

import torch

MASK = (1 << 64) - 1
SPLIT_SEED = 0          # DigitsModuleOptions::split_seed
LR_STEP_EPOCHS = 3      # DigitsModuleOptions::lr_step_epochs
LR_GAMMA = 0.5          # DigitsModuleOptions::lr_gamma


def mix(seed, epoch):
    """splitmix64's finaliser, as sample_trainer/single_process.cpp derives each epoch's shuffle."""
    z = (seed + 0x9E3779B97F4A7C15 * (epoch + 1)) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def mlp():
    return torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Dropout(0.1),
        torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Dropout(0.1),
        torch.nn.Linear(64, 10))


def load_digits(path):
    rows = [line.split(",") for line in gzip.open(path, "rt") if line.strip()]
    values = torch.tensor([[int(v) for v in row] for row in rows], dtype=torch.int64)
    return values[:, :64].to(torch.float32) / 16.0, values[:, 64]


def newest_checkpoint(directory, prefix):
    """The C++ get_latest_file rule: {prefix}_{N}.pt with the largest N (top level here)."""
    pattern = re.compile(re.escape(prefix) + r"_(\d+)\.pt")
    found = [(int(m.group(1)), name) for name in os.listdir(directory)
             if (m := pattern.fullmatch(name))]
    return os.path.join(directory, max(found)[1]) if found else None


def save_atomically(obj, path):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser.add_argument("--data", default=os.path.join(source, "data", "digits.csv.gz"))
    parser.add_argument("--epochs", type=int, default=10, help="total epochs (a resume continues)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--save-dir", default="checkpoints")
    parser.add_argument("--load-dir", help="resume from the newest {prefix}_{N}.pt here")
    parser.add_argument("--prefix", default="model")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    images, labels = load_digits(args.data)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    val_rows, train_rows = order[: len(labels) // 5], order[len(labels) // 5:]
    steps_per_epoch = (len(train_rows) + args.batch_size - 1) // args.batch_size

    model = mlp()
    adam = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(adam, step_size=LR_STEP_EPOCHS * steps_per_epoch,
                                                gamma=LR_GAMMA)
    last_epoch, global_step, batches, shuffle_seed = -1, 0, 0, args.seed

    if args.load_dir:
        path = newest_checkpoint(args.load_dir, args.prefix)
        if path is None:
            print(f"no checkpoint in {args.load_dir}: starting fresh")
        else:
            checkpoint = torch.load(path)
            model.load_state_dict(checkpoint["module_interface_state"], strict=True)
            trainer_state = checkpoint["trainer_state"]
            adam.load_state_dict(trainer_state["optimizers"][0])
            scheduler.load_state_dict(trainer_state["schedulers"][0])
            backend = checkpoint["trainer_backend_state"]
            torch.set_rng_state(backend["rng_state"])
            last_epoch = trainer_state["last_epoch"]
            global_step = backend["global_step_completed"]
            batches = backend["batches_completed"]
            shuffle_seed = backend["shuffle_seed"]
            print(f"resumed {path}: last_epoch={last_epoch} global_step={global_step} "
                  f"lr={scheduler.get_last_lr()[0]:.6g}")

    os.makedirs(args.save_dir, exist_ok=True)
    loss_fn = torch.nn.functional.cross_entropy
    for epoch in range(last_epoch + 1, args.epochs):
        model.train()
        shuffle = torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(
            mix(shuffle_seed, epoch)))
        loss_sum = 0.0
        for b in range(steps_per_epoch):
            rows = train_rows[shuffle[b * args.batch_size:(b + 1) * args.batch_size]]
            adam.zero_grad()
            loss = loss_fn(model(images[rows]), labels[rows])
            loss.backward()
            adam.step()
            scheduler.step()
            global_step += 1
            batches += 1
            loss_sum += loss.item() * len(rows)
        model.eval()
        with torch.no_grad():
            logits = model(images[val_rows])
            val_loss = loss_fn(logits, labels[val_rows], reduction="sum").item() / len(val_rows)
            correct = int((logits.argmax(1) == labels[val_rows]).sum())
        print(f"epoch={epoch} train_loss={loss_sum / len(train_rows):.6f} val_loss={val_loss:.6f} "
              f"val_acc={correct / len(val_rows):.4f} ({correct}/{len(val_rows)})", flush=True)
        checkpoint = {
            "module_interface_state": dict(model.state_dict()),
            "trainer_state": {"last_epoch": epoch, "optimizers": [adam.state_dict()],
                              "schedulers": [scheduler.state_dict()]},
            "trainer_backend_state": {"global_step_completed": global_step,
                                      "batches_completed": batches,
                                      "rng_state": torch.get_rng_state(),
                                      "shuffle_seed": shuffle_seed},
        }
        path = os.path.join(args.save_dir, f"{args.prefix}_{epoch}.pt")
        save_atomically(checkpoint, path)
        print(f"saved {path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
