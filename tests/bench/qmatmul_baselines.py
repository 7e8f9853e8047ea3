"""PyTorch baselines for tests/bench/qmatmul_gpu.ts, measured on the same GPU in the same call.

Prints one JSON object (last line): device-to-device copy bandwidth (bytes read + written per
second) and, for each N x K and batch M, the f16 matmul time x[M, K] @ W[N, K]^T (cuBLAS,
replayed from a CUDA graph so Python's launch cost is not counted), cycling through enough distinct weight tensors (> 200 MB) that the L2 cache cannot serve them.
Arguments: shapes as NxK and batches as comma lists, e.g. `4096x4096,11008x4096 1,4,16`.
"""
import json
import sys

import torch

dev = "cuda"
shapes = [tuple(int(v) for v in s.split("x")) for s in sys.argv[1].split(",")]
batches = [int(v) for v in sys.argv[2].split(",")]


def per_call(fn, calls, rounds=10):
    """Seconds per call of fn(0..calls-1), replayed from a CUDA graph (no Python launch cost).

    The fastest of `rounds` replays: the GPU machine is shared, and stretches of seconds run
    several times slower (our WebGPU timings take the fastest pass too).
    """
    for i in range(3):
        fn(i)
    torch.cuda.synchronize()
    graph = None
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for i in range(3):
                fn(i)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(calls):
                fn(i)
    except Exception as e:  # fall back to eager launches
        print(f"no CUDA graph: {e}", file=sys.stderr)
        graph = None
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        if graph is not None:
            graph.replay()
        else:
            for i in range(calls):
                fn(i)
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1e3 / calls)
    return min(times)


out = {"device": torch.cuda.get_device_name(0)}
a = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
b = torch.empty_like(a)
t = per_call(lambda i: b.copy_(a), 10)
out["copy_gbs"] = 2 * a.numel() / t / 1e9
del a, b
matmul = {}
for n, k in shapes:
    nbytes = n * k * 2
    copies = max(2, -(-(200 << 20) // nbytes) + 1)
    ws = [torch.randn(n, k, device=dev, dtype=torch.float16) for _ in range(copies)]
    for m in batches:
        x = torch.randn(m, k, device=dev, dtype=torch.float16)
        y = torch.empty(m, n, device=dev, dtype=torch.float16)
        calls = copies * max(1, 40 // copies)
        t = per_call(lambda i: torch.matmul(x, ws[i % copies].t(), out=y), calls)
        matmul[f"{n}x{k}x{m}"] = t
    del ws
out["matmul_f16_seconds"] = matmul
json.dump(out, sys.stdout)
print()
