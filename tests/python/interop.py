"""Python side of ckpt's interop tests; run with Debian's python3-torch.

Each subcommand reads or writes files that the C++ tests (tests/test_interop.cpp) check.
The tiny model and data below are mirrored exactly in the C++ test.
"""
import collections
import json
import sys

import torch


def fill_deterministic(module):
    """Parameter i gets arange(numel) * 0.25 + i, so C++ can compute every expected value."""
    with torch.no_grad():
        for i, p in enumerate(module.parameters()):
            p.copy_(torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape) * 0.25 + i)


def tiny_model():
    model = torch.nn.Linear(3, 2)
    fill_deterministic(model)
    return model


def tiny_step(model, optimizer):
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 10
    optimizer.zero_grad()
    loss = (model(x) ** 2).sum()
    loss.backward()
    optimizer.step()


def make_optimizer(name, params):
    return {
        "sgd": lambda: torch.optim.SGD(params, lr=0.01, momentum=0.9),
        "adam": lambda: torch.optim.Adam(params, lr=0.01),
        "adamw": lambda: torch.optim.AdamW(params, lr=0.01, amsgrad=True),
        "rmsprop": lambda: torch.optim.RMSprop(params, lr=0.01, momentum=0.5, centered=True),
        "adagrad": lambda: torch.optim.Adagrad(params, lr=0.1),
    }[name]()


def describe(value, where="root"):
    """A JSON-able description; fails on anything that is not plain data or a tensor."""
    if isinstance(value, torch.Tensor):
        return {"tensor": str(value.dtype), "shape": list(value.shape),
                "values": value.flatten().tolist() if value.dtype != torch.bfloat16
                else value.float().flatten().tolist()}
    if type(value) is dict:
        return {"dict": [[describe(k, where), describe(v, f"{where}.{k}")] for k, v in value.items()]}
    if type(value) is list:
        return {"list": [describe(v, f"{where}.{i}") for i, v in enumerate(value)]}
    if type(value) is tuple:
        return {"tuple": [describe(v, f"{where}.{i}") for i, v in enumerate(value)]}
    if value is None or type(value) in (bool, int, float, str):
        return {"scalar": value, "type": type(value).__name__}
    raise SystemExit(f"{where}: not plain data: {type(value)!r}")


def main():
    command, path = sys.argv[1], sys.argv[2]
    if command == "describe":
        # torch.load must return plain dicts, lists, ints, floats, strings and tensors.
        print(json.dumps(describe(torch.load(path))))
    elif command == "write_state_dict":
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2),
                                    torch.nn.BatchNorm1d(2))
        fill_deterministic(model)
        state = model.state_dict()
        assert isinstance(state, collections.OrderedDict) and hasattr(state, "_metadata")
        torch.save(state, path)
    elif command == "write_legacy":
        # PyTorch's pre-1.6 format, which ckpt refuses by name.
        torch.save({"w": torch.arange(4.0)}, path, _use_new_zipfile_serialization=False)
    elif command == "write_dtypes":
        torch.save({"c64": torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64),
                    "c128": torch.tensor([5j], dtype=torch.complex128),
                    "f16": torch.zeros(3, dtype=torch.float16)}, path)
    elif command == "write_pymarlin":
        # A PyMarlin checkpoint: module state, trainer state with an Adam and a StepLR state dict.
        model = tiny_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        for _ in range(3):
            tiny_step(model, optimizer)
        scheduler.step()
        torch.save({
            "module_interface_state": model.state_dict(),
            "trainer_state": {"last_epoch": 2, "optimizers": [optimizer.state_dict()],
                              "schedulers": [scheduler.state_dict()]},
            "trainer_backend_state": {"global_step_completed": 3, "batches_completed": 3},
        }, path)
        # Where two more steps take the weights, for the C++ side to compare against.
        for _ in range(2):
            tiny_step(model, optimizer)
        print(json.dumps({k: v.flatten().tolist() for k, v in model.state_dict().items()}))
    elif command == "continue_optimizer":
        # sys.argv[3] names the optimizer; the file holds {"model": ..., "optimizer": ...} from C++.
        saved = torch.load(path)
        model = torch.nn.Linear(3, 2)
        model.load_state_dict(saved["model"])
        optimizer = make_optimizer(sys.argv[3], model.parameters())
        optimizer.load_state_dict(saved["optimizer"])
        for _ in range(2):
            tiny_step(model, optimizer)
        print(json.dumps({k: v.flatten().tolist() for k, v in model.state_dict().items()}))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
