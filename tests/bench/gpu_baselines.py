"""PyTorch baselines for tests/bench/gpu.ts, measured on the same GPU in the same call.

Prints one JSON object: X.T @ X GFLOP/s (float32, TF32 off) and device-to-device
copy bandwidth (bytes read + written) for the Hadamard sizes.
"""
import json
import sys

import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = "cuda"


def timed(fn, reps=20, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    times.sort()
    return times[len(times) // 2]


out = {"device": torch.cuda.get_device_name(0)}
tokens, cols = 8192, 4096
x = torch.randn(tokens, cols, device=dev)
t = timed(lambda: x.T @ x)
out["xtx_seconds"] = t
out["xtx_gflops"] = 2 * tokens * cols * cols / t / 1e9
for rows, c in ((4096, 4096), (4096, 11008), (4096, 14336), (4096, 16384)):
    a = torch.randn(rows, c, device=dev)
    b = torch.empty_like(a)
    t = timed(lambda: b.copy_(a), reps=50)
    out[f"copy_{rows}x{c}_gbs"] = 2 * a.numel() * 4 / t / 1e9
json.dump(out, sys.stdout)
print()
