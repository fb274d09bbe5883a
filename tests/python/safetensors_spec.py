"""An independent safetensors reader and writer, written from the published format description
(https://github.com/huggingface/safetensors#format) with json, struct and torch.frombuffer only,
to check ckpt's files against the specification rather than against ckpt's own reader.

Usage:
  safetensors_spec.py check FILE REFERENCE_PT
      Reads FILE per the specification, checks its layout (8-byte little-endian header length,
      header padded to 8 bytes, offsets that tile the byte buffer, __metadata__ strings) and
      compares every tensor with torch.equal to REFERENCE_PT (torch.load of a dict of tensors):
      same names, dtypes, shapes, values. Prints "ok <n> tensors" and the metadata as JSON.
  safetensors_spec.py write OUT REFERENCE_PT
      Writes the tensors of REFERENCE_PT to OUT as the reference implementation lays them out
      (sorted by dtype alignment, then name; no __metadata__), for ckpt's loader to read.
"""
import json
import struct
import sys

import torch

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
NAMES = {dtype: name for name, dtype in DTYPES.items()}


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) >= 8, "file shorter than the 8-byte header length"
    (n,) = struct.unpack("<Q", data[:8])
    assert 8 + n <= len(data), f"header length {n} beyond the file ({len(data)} bytes)"
    assert (8 + n) % 8 == 0, f"header not padded to 8 bytes: {n}"
    header_text = data[8:8 + n].decode("utf-8")
    assert header_text.rstrip(" ").endswith("}"), "header padding must be spaces"
    header = json.loads(header_text)
    buffer = data[8 + n:]
    metadata = header.pop("__metadata__", {})
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()), metadata
    tensors = {}
    spans = []
    for name, info in header.items():
        assert set(info) == {"dtype", "shape", "data_offsets"}, (name, info)
        dtype = DTYPES[info["dtype"]]
        shape = info["shape"]
        begin, end = info["data_offsets"]
        numel = 1
        for d in shape:
            numel *= d
        itemsize = torch.empty((), dtype=dtype).element_size()
        assert end - begin == numel * itemsize, (name, begin, end, shape, info["dtype"])
        spans.append((begin, end, name))
        if numel == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            tensors[name] = torch.frombuffer(bytearray(buffer[begin:end]), dtype=dtype).reshape(shape)
    covered = 0
    for begin, end, name in sorted(spans):
        assert begin == covered, f"{name} starts at {begin}, expected {covered}: overlap or hole"
        covered = end
    assert covered == len(buffer), f"tensors cover {covered} of {len(buffer)} bytes"
    return tensors, metadata


def check(path, reference_path):
    tensors, metadata = read(path)
    reference = torch.load(reference_path)
    assert list(tensors) == list(reference), (list(tensors), list(reference))
    for name, expected in reference.items():
        actual = tensors[name]
        assert actual.dtype == expected.dtype, (name, actual.dtype, expected.dtype)
        assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
        assert torch.equal(actual, expected), name
    print(f"ok {len(tensors)} tensors")
    print(json.dumps(metadata, sort_keys=True))


def write(out_path, reference_path):
    reference = torch.load(reference_path)
    order = sorted(reference, key=lambda k: (-reference[k].element_size(), k))
    header, chunks, offset = {}, [], 0
    for name in order:
        t = reference[name].contiguous()
        raw = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(out_path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)
    print(f"wrote {len(order)} tensors")


if __name__ == "__main__":
    {"check": check, "write": write}[sys.argv[1]](sys.argv[2], sys.argv[3])
