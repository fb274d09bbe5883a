"""Loads the sample trainer's exported weights into the same MLP written with torch.nn, and prints
its accuracy on the sample's validation split, so the C++ test can compare it with the C++ log.

Usage: sample_trainer_check_model.py MODEL_FILE DATA_FILE SPLIT_SEED [CHECKPOINT_FILE]

Prints "accuracy <correct>/<total>". With CHECKPOINT_FILE, also loads the checkpoint's optimizer and
scheduler states into torch.optim.Adam and torch.optim.lr_scheduler.StepLR (Python can resume from
a C++ checkpoint) and prints "checkpoint loads into torch.optim.Adam and StepLR".
"""
import gzip
import sys

import torch


def mlp(hidden1, hidden2):
    # Same layers, same order as make_digits_mlp in sample_trainer/digits_module.cpp.
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden1), torch.nn.ReLU(), torch.nn.Dropout(0.1),
        torch.nn.Linear(hidden1, hidden2), torch.nn.ReLU(), torch.nn.Dropout(0.1),
        torch.nn.Linear(hidden2, 10))


def load_digits(path):
    rows = [line.split(",") for line in gzip.open(path, "rt") if line.strip()]
    values = torch.tensor([[int(v) for v in row] for row in rows], dtype=torch.int64)
    return values[:, :64].to(torch.float32) / 16.0, values[:, 64]


def main():
    model_file, data_file, split_seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    state = torch.load(model_file)
    model = mlp(state["0.weight"].shape[0], state["3.weight"].shape[0])
    model.load_state_dict(state, strict=True)  # the keys must match exactly
    model.eval()

    images, labels = load_digits(data_file)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))
    val = order[: len(labels) // 5]
    with torch.no_grad():
        correct = int((model(images[val]).argmax(1) == labels[val]).sum())
    print(f"accuracy {correct}/{len(val)}")

    if len(sys.argv) > 4:
        checkpoint = torch.load(sys.argv[4])
        # PyMarlin's three keys, and ckpt's optional ones, which the trainer fills.
        assert set(checkpoint) == {"module_interface_state", "trainer_state",
                                   "trainer_backend_state", "hyperparameters",
                                   "ckpt_metadata"}, list(checkpoint)
        assert isinstance(checkpoint["hyperparameters"]["trainer.epochs"], int)
        assert set(checkpoint["ckpt_metadata"]["metrics"]) == {"train_loss", "val_loss",
                                                               "val_acc"}
        model.load_state_dict(checkpoint["module_interface_state"], strict=True)
        trainer_state = checkpoint["trainer_state"]
        adam = torch.optim.Adam(model.parameters())
        adam.load_state_dict(trainer_state["optimizers"][0])
        scheduler = torch.optim.lr_scheduler.StepLR(adam, step_size=1)
        scheduler.load_state_dict(trainer_state["schedulers"][0])
        # ckpt writes the keys torch 1.13's StepLR writes. torch 2.x dropped "verbose" and added
        # "_is_initial" (False but inside the constructor, its class default): both load alike.
        ours, python = set(trainer_state["schedulers"][0]), set(scheduler.state_dict())
        assert ours - {"verbose"} <= python and python - ours <= {"_is_initial"}, (ours, python)
        assert scheduler.get_last_lr() == [g["lr"] for g in adam.param_groups], (
            scheduler.get_last_lr(), adam.param_groups)
        torch.set_rng_state(checkpoint["trainer_backend_state"]["rng_state"])
        print("checkpoint loads into torch.optim.Adam and StepLR")


if __name__ == "__main__":
    main()
