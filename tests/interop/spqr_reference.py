#!/usr/bin/env python3
"""Runs the SpQR reference implementation (github.com/Vahe1994/SpQR) on layers
exported by `examples/aqlm_layers.ts --export DIR`, as the baseline of
`tests/bench/spqr_layers.ts --reference DIR`.

This is our own driver; the reference is not part of this repository. Check it
out anywhere (or copy its spqr_engine.py, quant_groups.py and
weight_permutation.py into one folder) and pass that folder:

    git clone https://github.com/Vahe1994/SpQR /tmp/spqr_ref
    /usr/bin/python3 tests/interop/spqr_reference.py /tmp/spqr_ref DIR [--wbits 3]
        [--groupsize 16] [--qq-bits 3] [--qq-groupsize 16] [--outlier-threshold 0.2]
        [--percdamp 0.01] [--permutation act_order] [--threads 1] [--tag NAME]

For each DIR/<layer>.safetensors (`weight` f32 [rows, cols], `xtx` f64
[cols, cols], the mean of x·xᵀ over the calibration tokens) it wraps the weight
in an nn.Linear, sets SPQRUtil's H to 2·xtx in float32 (the reference
accumulates 2/n·Σx·xᵀ; the factor changes nothing relative) and calls
`SPQRUtil.quantize` as main.py does with --perchannel (asymmetric base grid,
qq_zero_sym off, round_zero unset, blocksize 128). It writes
DIR/<layer>.spqr-<tag>.safetensors: the dequantized weight `weight` (f32) and,
as metadata, the outlier count, the wall time and the options. Errors and bits
per weight are computed on the TypeScript side.

Needs torch (Debian's python3-torch 1.13 works), numpy and tqdm; no GPU.
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from _safetensors_io import read_safetensors, write_safetensors  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("reference", help="folder holding the reference's spqr_engine.py")
    parser.add_argument("dir", help="folder written by examples/aqlm_layers.ts --export")
    parser.add_argument("--wbits", type=int, default=3)
    parser.add_argument("--groupsize", type=int, default=16)
    parser.add_argument("--qq-bits", type=int, default=3, help="qq_scale_bits and qq_zero_bits")
    parser.add_argument("--qq-groupsize", type=int, default=16)
    parser.add_argument("--outlier-threshold", type=float, default=0.2)
    parser.add_argument("--percdamp", type=float, default=0.01)
    parser.add_argument("--permutation", default="act_order")
    parser.add_argument("--simplified", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default=None, help="output suffix; default from the options")
    parser.add_argument("--only", default=None, help="comma-separated layer names")
    opts = parser.parse_args()

    sys.path.insert(0, os.path.abspath(opts.reference))
    from spqr_engine import SPQRUtil  # noqa: E402  (the reference, from the given folder)

    torch.set_num_threads(opts.threads)
    tag = opts.tag or f"w{opts.wbits}g{opts.groupsize}t{opts.outlier_threshold:g}"
    names = sorted(f[: -len(".safetensors")] for f in os.listdir(opts.dir) if f.count(".") == 2 and f.endswith(".safetensors"))
    if opts.only:
        names = [n for n in names if n in opts.only.split(",")]
    for name in names:
        tensors, _ = read_safetensors(os.path.join(opts.dir, name + ".safetensors"))
        weight, xtx = tensors["weight"], tensors["xtx"]
        rows, cols = weight.shape
        layer = torch.nn.Linear(cols, rows, bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(weight))
        util = SPQRUtil(layer)
        util.H = (2 * torch.from_numpy(xtx)).to(torch.float32)
        start = time.perf_counter()
        res = util.quantize(
            bits=opts.wbits,
            blocksize=128,
            percdamp=opts.percdamp,
            groupsize=opts.groupsize,
            outlier_relative_threshold=opts.outlier_threshold,
            permutation_order=opts.permutation,
            simplified_outliers=opts.simplified,
            verbose=False,
            perchannel=True,
            sym=False,
            qq_scale_bits=opts.qq_bits,
            qq_zero_bits=opts.qq_bits,
            qq_groupsize=opts.qq_groupsize,
            qq_zero_sym=False,
            round_zero=None,
        )
        seconds = time.perf_counter() - start
        outliers = int(res.unstructured_outlier_mask.sum().item())
        out = os.path.join(opts.dir, f"{name}.spqr-{tag}.safetensors")
        write_safetensors(
            out,
            {"weight": res.weight.numpy()},
            {
                "outliers": str(outliers),
                "seconds": f"{seconds:.3f}",
                "torch": torch.__version__,
                "options": json.dumps(vars(opts)),
            },
        )
        print(f"{name} {rows}x{cols}: {outliers} outliers ({outliers / (rows * cols):.3%}), {seconds:.1f} s -> {out}")


if __name__ == "__main__":
    main()
