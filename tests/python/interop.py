"""Python side of ckpt's interop tests; run with CKPT_PYTHON (Debian's torch 1.13 or the 2.11 wheel).

Each subcommand reads or writes files that the C++ tests (tests/test_interop.cpp) check.
The tiny model and data below are mirrored exactly in the C++ test.
"""
import collections
import json
import math
import pathlib
import sys
import zipfile

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


def describe_loose(value):
    """Like describe, for the objects Python saves: any mapping is a dict, complex values are
    [re, im] pairs and non-finite floats are strings, which JSON has no numbers for."""
    def number(x):
        return x if math.isfinite(x) else repr(x)
    if isinstance(value, torch.Tensor):
        flat = value.detach().flatten()
        if flat.is_complex():
            values = [[number(re), number(im)] for re, im in torch.view_as_real(flat).tolist()]
        elif flat.is_floating_point():
            values = [number(x) for x in flat.double().tolist()]
        else:
            values = flat.tolist()
        return {"tensor": str(value.dtype), "shape": list(value.shape), "values": values}
    if isinstance(value, collections.abc.Mapping):
        return {"dict": [[describe_loose(k), describe_loose(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {type(value).__name__: [describe_loose(v) for v in value]}
    if type(value) is float:
        return {"scalar": number(value), "type": "float"}
    if value is None or type(value) in (bool, int, str):
        return {"scalar": value, "type": type(value).__name__}
    raise SystemExit(f"not plain data: {type(value)!r}")


ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64,
              torch.complex128, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
              torch.bool]


def write_corpus(out):
    """The files a Python 2.x user hands to ckpt: each NAME.pt with NAME.json, the description of
    what was saved; the large one is described by its formula instead. corpus.json holds the torch
    version, the records of one file, and, per optimizer, the weights after two more steps from
    the saved state (what a C++ resume must reach)."""
    out = pathlib.Path(out)

    def save(name, obj, described=True):
        torch.save(obj, out / f"{name}.pt")
        if described:
            (out / f"{name}.json").write_text(json.dumps(describe_loose(obj)))

    after_two_more = {}
    for name in ("sgd", "adam", "adamw", "rmsprop", "adagrad"):
        model = tiny_model()
        optimizer = make_optimizer(name, model.parameters())
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        for _ in range(3):
            tiny_step(model, optimizer)
            scheduler.step()
        save(f"optimizer_{name}", {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "scheduler": scheduler.state_dict(), "step": 3})
        for _ in range(2):
            tiny_step(model, optimizer)
        after_two_more[name] = {k: v.flatten().tolist() for k, v in model.state_dict().items()}

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    lr = torch.optim.lr_scheduler
    schedulers = {
        "step": lr.StepLR(optimizer, step_size=3),
        "multi_step": lr.MultiStepLR(optimizer, milestones=[2, 5], gamma=0.1),
        "cosine": lr.CosineAnnealingLR(optimizer, T_max=10),
        "exponential": lr.ExponentialLR(optimizer, gamma=0.9),
        "plateau": lr.ReduceLROnPlateau(optimizer),
    }
    for _ in range(4):
        optimizer.step()
        for key, scheduler in schedulers.items():
            scheduler.step(1.0) if key == "plateau" else scheduler.step()
    save("schedulers", {key: s.state_dict() for key, s in schedulers.items()})

    module = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Linear(2, 3), torch.nn.LayerNorm(3))
    fill_deterministic(module)
    save("module", module.state_dict())

    dtypes = {}
    for dtype in ALL_DTYPES:
        base = torch.arange(6) - 2
        if dtype.is_complex:
            dtypes[str(dtype)] = base.to(dtype) + 0.5j * base.to(dtype)
        elif dtype == torch.bool:
            dtypes[str(dtype)] = base % 2 == 0
        else:
            dtypes[str(dtype)] = (base if dtype != torch.uint8 else base + 2).to(dtype).reshape(2, 3)
    save("dtypes", dtypes)

    base = torch.arange(24, dtype=torch.float32)
    save("shared", {
        "base": base,
        "slice": base[4:10],                 # a view at an offset into base's storage
        "matrix": base.view(4, 6),
        "transposed": base.view(4, 6).t(),  # non-contiguous strides
        "every_third": base[::3],
        "zero_dim": torch.tensor(2.5),
        "zero_dim_int": torch.tensor(7),
        "empty": torch.zeros(0, 3),
        "nested": {"a": {"b": [base[1:3], {"c": torch.tensor(True)}], "n": 3, "s": "text"},
                   "tuple": (1, 2.5, None)},
    })

    # Large records: torch 2.x pads every record to 64 bytes; an odd-sized one before the big one.
    save("large", {"odd": torch.arange(3, dtype=torch.uint8),
                   "big": torch.arange(4 << 20, dtype=torch.float32) * 0.5}, described=False)

    with zipfile.ZipFile(out / "large.pt") as archive:
        records = [name.split("/", 1)[1] for name in archive.namelist()]
    (out / "corpus.json").write_text(json.dumps(
        {"torch": torch.__version__, "records": records, "after_two_more": after_two_more}))


def compare_device_file(device_file, cpu_file, locations):
    """A save of device tensors against a save of the same values from the CPU: every record holds
    the same bytes, except that data.pkl names each storage's device (one of `locations`) where
    the other says "cpu"; and torch.load with map_location="cpu" reads both to equal values."""
    def tag(text):
        return b"X" + len(text).to_bytes(4, "little") + text  # BINUNICODE

    with zipfile.ZipFile(device_file) as on_device, zipfile.ZipFile(cpu_file) as on_cpu:
        names = [name.split("/", 1)[1] for name in on_device.namelist()]
        assert names == [name.split("/", 1)[1] for name in on_cpu.namelist()], "records differ"
        prefix_device = on_device.namelist()[0].split("/", 1)[0] + "/"
        prefix_cpu = on_cpu.namelist()[0].split("/", 1)[0] + "/"
        for name in names:
            device_bytes = on_device.read(prefix_device + name)
            cpu_bytes = on_cpu.read(prefix_cpu + name)
            if name == "data.pkl":
                tags = sum(device_bytes.count(tag(location.encode())) for location in locations)
                assert tags > 0, f"no storage of {device_file} is tagged {locations}"
                for location in locations:
                    device_bytes = device_bytes.replace(tag(location.encode()), tag(b"cpu"))
            assert device_bytes == cpu_bytes, f"record {name} differs"

    def same(a, b):
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and a.device == b.device and torch.equal(a, b)
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    assert same(torch.load(device_file, map_location="cpu"), torch.load(cpu_file)), "values differ"
    print("same but for the device tags")


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
    elif command == "write_corpus":
        write_corpus(path)
    elif command == "compare_device_file":
        compare_device_file(path, sys.argv[3], sys.argv[4:])
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
