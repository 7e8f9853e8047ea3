"""Cross-check helper for tests/core/safetensors_test.ts, run with a Python
that has Hugging Face's `safetensors` and `numpy`.

  hf_cross_check.py read PATH          prints the file's tensors (hex bytes) and metadata as JSON
  hf_cross_check.py write PATH SPEC    writes SPEC ([{name, dtype, shape, hex}]) with
                                       metadata {"format": "pt", "origin": "hf"}
"""
import json
import sys

import numpy as np
import safetensors
from safetensors import TensorSpec

mode = sys.argv[1]
if mode == "read":
    data = open(sys.argv[2], "rb").read()
    tensors = [
        {"name": n, "dtype": t["dtype"], "shape": list(t["shape"]), "hex": bytes(t["data"]).hex()}
        for n, t in safetensors.deserialize(data)
    ]
    with safetensors.safe_open(sys.argv[2], framework="numpy") as f:
        metadata = f.metadata()
    print(json.dumps({"tensors": tensors, "metadata": metadata}))
elif mode == "write":
    keep, specs = [], {}
    for t in json.loads(sys.argv[3]):
        buf = np.frombuffer(bytes.fromhex(t["hex"]), dtype=np.uint8).copy()
        keep.append(buf)  # the serializer reads raw pointers: keep the buffers alive
        specs[t["name"]] = TensorSpec(
            dtype=t["dtype"], shape=t["shape"], data_ptr=buf.ctypes.data, data_len=buf.nbytes
        )
    safetensors.serialize_file(specs, sys.argv[2], metadata={"format": "pt", "origin": "hf"})
else:
    sys.exit(f"unknown mode {mode}")
