#!/usr/bin/env python3
"""Writes tests/data/safetensors/py_written.safetensors with the reference `safetensors` package.

tests/test_safetensors.cpp checks that kvlab reads exactly these values, so the C++ reader is tested
against files it did not write itself. Re-run only if the test's expectations change too:
    python scripts/make_safetensors_fixture.py   (needs `pip install safetensors numpy`)
"""
import os

import numpy as np
from safetensors import TensorSpec, deserialize, serialize_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "safetensors",
                   "py_written.safetensors")


def spec(dtype, array):
    # The low-level API takes raw little-endian bytes, which lets us write BF16 from uint16 bit
    # patterns (numpy has no bfloat16).
    array = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
    return TensorSpec(dtype=dtype, shape=list(array.shape), data_ptr=array.ctypes.data, data_len=array.nbytes)


def main():
    arrays = {
        "f32": ("float32", np.array([[0.0, 1.0, -2.5], [3.25, 0.125, 1024.0]], dtype=np.float32)),
        "f16": ("float16", np.array([1.0, -0.5, 65504.0, 2.0 ** -10], dtype=np.float16)),
        # bfloat16 bit patterns of 1.0, -2.0, 0.5, 3.0
        "bf16": ("bfloat16", np.array([[0x3F80, 0xC000], [0x3F00, 0x4040]], dtype=np.uint16)),
        "empty": ("float32", np.zeros((0, 3), dtype=np.float32)),
        "scalar": ("float32", np.array(7.0, dtype=np.float32)),
    }
    # `arrays` keeps the buffers alive while serialize_file reads them through raw pointers.
    specs = {name: spec(dtype, a) for name, (dtype, a) in arrays.items()}
    serialize_file(specs, OUT, metadata={"format": "pt", "source": "kvlab fixture"})

    # Sanity check with the reference reader.
    with open(OUT, "rb") as f:
        for name, info in deserialize(f.read()):
            dtype, a = arrays[name]
            assert info["data"] == a.tobytes(), name
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
