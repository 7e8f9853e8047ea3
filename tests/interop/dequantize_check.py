"""Checks the packed folders llmcompress writes against independent code.

Written from the formats' published descriptions (AutoGPTQ / GPTQModel's GPTQ
layout, compressed-tensors' pack-quantized and sparse bitmask layouts), not
from our TypeScript.
Needs torch, transformers (4.56 or later: `dtype=`), safetensors and numpy.

    deno run -A tests/interop/make_folders.ts /tmp/interop
    python3 tests/interop/dequantize_check.py /tmp/interop \
        --out tests/fixtures/interop/logits.safetensors

For every case NAME in DIR (folders NAME-packed and NAME-dense, ids in
DIR/ids.json) it:

1. reads NAME-packed's safetensors and its config.json's quantization_config;
2. dequantizes every packed linear itself (see `gptq_weight` and
   `pack_quantized_weight` for the layouts);
3. checks that the dequantized weights equal NAME-dense's float32 weights
   exactly (the dense folder holds the same grids, scales rounded to f16);
4. runs transformers' model in float32 (eager attention, TF32 off) on the ids
   twice: with the dequantized weights (saved with the folder's other tensors
   into a temporary folder and read by from_pretrained) and on NAME-dense;
5. writes `ids.NAME` (int32) and `logits.NAME` (float32 [tokens, vocab], from
   the dequantized packed weights) to --out, and prints the relative RMS
   difference between the two runs' logits.

Exit status 1 when a weight differs or the logits differ by more than 1e-4
relative RMS. tests/interop/interop_test.ts compares our runtime's logits of
the same (seeded) folders with the file this writes.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file


def read_folder(folder):
    """All tensors of a folder (model.safetensors or the shards of its index)."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        tensors.update(load_file(os.path.join(folder, name)))
    return tensors


def as_uint32(t):
    """An int32 tensor's bits as a numpy uint32 array."""
    return t.cpu().numpy().astype(np.int32).view(np.uint32)


def unpack_stream(words, bits, count):
    """GPTQ packing: the last axis of `words` (uint32) is a little-endian bit
    stream (bit j of word i is stream bit 32 i + j); value k is stream bits
    [k bits, (k + 1) bits), lowest first. Returns int64 [..., count]."""
    raw = np.ascontiguousarray(words).view(np.uint8)  # little-endian bytes
    stream = np.unpackbits(raw, axis=-1, bitorder="little")
    fields = stream[..., : count * bits].reshape(*words.shape[:-1], count, bits)
    return (fields.astype(np.int64) << np.arange(bits, dtype=np.int64)).sum(-1)


def gptq_weight(parts, bits, version, group_size, k_in, n_out):
    """The float32 weight [N, K] of one GPTQ linear.

    qweight int32 [K b / 32, N]: column n holds W[n, :]'s K codes as one bit
    stream along K (8 codes a word at 4 bits, lowest bits first; at 3 bits 32
    codes fill 3 words and codes 10 and 21 straddle word boundaries). qzeros
    int32 [groups, N b / 32]: row g holds group g's N zero points, packed the
    same way along N; "gptq" (v1) stores zero - 1, "gptq_v2" the zero. scales
    [groups, N]; g_idx [K] the group of each input feature (floor(k / G) when
    absent). W[n, k] = scales[g, n] (q[k, n] - zero[g, n]), g = g_idx[k].
    """
    codes = unpack_stream(as_uint32(parts["qweight"]).T, bits, k_in)  # [N, K]
    zeros = unpack_stream(as_uint32(parts["qzeros"]), bits, n_out)  # [groups, N]
    if version == 1:
        zeros = zeros + 1
    scales = parts["scales"].float().cpu()  # [groups, N]
    if "g_idx" in parts:
        g_idx = parts["g_idx"].long().cpu()
    else:
        g_idx = torch.arange(k_in) // (group_size if group_size > 0 else k_in)
    q = torch.from_numpy(codes)  # [N, K]
    z = torch.from_numpy(zeros)[g_idx].T  # [N, K]
    s = scales[g_idx].T  # [N, K]
    return ((q - z).float() * s).contiguous()


def unpack_words(words, bits, count):
    """compressed-tensors packing (pack_to_int32): floor(32 / b) values a word
    along the last axis, value j of a word at bits [j b, (j + 1) b), values
    stored as signed + 2^(b - 1). Returns the signed values, int64 [..., count]."""
    per = 32 // bits
    shifts = (np.arange(per, dtype=np.uint32) * bits).astype(np.uint32)
    fields = (words[..., None] >> shifts) & np.uint32((1 << bits) - 1)
    fields = fields.reshape(*words.shape[:-1], words.shape[-1] * per)[..., :count]
    return fields.astype(np.int64) - (1 << (bits - 1))


def pack_quantized_weight(parts, bits, symmetric, k_in, n_out):
    """The float32 weight [N, K] of one pack-quantized linear.

    weight_packed int32 [N, K / p] (p = floor(32 / b)) packs each row along K;
    weight_scale [N, groups]; weight_zero_point int32 [N / p, groups] packs
    each group's zero points along N (asymmetric only; symmetric: 0);
    weight_g_idx [K] (act-order), else group floor(k / (K / groups)).
    W[n, k] = (q[n, k] - zp[n, g]) scale[n, g].
    """
    shape = parts.get("weight_shape")
    if shape is not None and [int(x) for x in shape.tolist()] != [n_out, k_in]:
        raise ValueError(f"weight_shape {shape.tolist()} is not [{n_out}, {k_in}]")
    q = torch.from_numpy(unpack_words(as_uint32(parts["weight_packed"]), bits, k_in))
    scale = parts["weight_scale"].float().cpu()  # [N, groups]
    groups = scale.shape[1]
    if symmetric:
        zp = torch.zeros(n_out, groups, dtype=torch.int64)
    else:
        zp = torch.from_numpy(unpack_words(as_uint32(parts["weight_zero_point"]).T, bits, n_out)).T
    if "weight_g_idx" in parts and int(parts["weight_g_idx"].min()) >= 0:
        g_idx = parts["weight_g_idx"].long().cpu()
    else:
        g_idx = torch.arange(k_in) // (k_in // groups)
    return ((q - zp[:, g_idx]).float() * scale[:, g_idx]).contiguous()


def sparse_weight(parts, k_in, n_out):
    """The float32 weight [N, K] of one sparse-bitmask / sparse-24-bitmask linear.

    bitmask uint8 [N, K / 8]: numpy packbits of the stored positions with
    bitorder "little" (bit j of byte b is column 8 b + j); compressed: the
    stored values in row-major order (1-D, or [N, K / 2] for 2:4); every other
    weight is 0. row_offsets (sparse-bitmask) is where each row starts.
    """
    mask = np.unpackbits(parts["bitmask"].cpu().numpy().view(np.uint8), axis=-1, count=k_in,
                         bitorder="little").astype(bool)
    out = torch.zeros(n_out, k_in, dtype=torch.float32)
    out[torch.from_numpy(mask)] = parts["compressed"].float().cpu().flatten()
    if "row_offsets" in parts:
        starts = np.concatenate([[0], np.cumsum(mask.sum(-1))[:-1]])
        if not np.array_equal(starts, parts["row_offsets"].cpu().numpy()):
            raise ValueError("row_offsets do not count the bitmask's bits")
    return out


def module_args(qc, module):
    """(kind, arguments) of a module under a quantization_config."""
    if qc["quant_method"] == "gptq":
        version = 1 if qc.get("checkpoint_format", qc.get("format", "gptq")) == "gptq" else 2
        return "gptq", (qc["bits"], version, qc["group_size"])
    if qc["quant_method"] != "compressed-tensors":
        raise ValueError(f"unsupported quantization_config {qc}")
    for group in (qc.get("config_groups") or {}).values():
        if "Linear" in group["targets"] or module in group["targets"]:
            w = group["weights"]
            return "pack-quantized", (w["num_bits"], w["symmetric"])
    sparsity = qc.get("sparsity_config") or {}
    if sparsity.get("format") in ("sparse-bitmask", "sparse-24-bitmask") and (
            "Linear" in sparsity["targets"] or module in sparsity["targets"]):
        return "sparse", ()
    raise ValueError(f"no config group or sparsity_config targets {module}")


def dequantized_state(folder):
    """The folder's tensors with every packed linear replaced by its float32 `.weight`."""
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    qc = config.pop("quantization_config")
    tensors = read_folder(folder)
    suffixes = {"gptq": ("qweight", "qzeros", "scales", "g_idx"),
                "pack-quantized": ("weight_packed", "weight_scale", "weight_zero_point",
                                   "weight_shape", "weight_g_idx"),
                "sparse": ("bitmask", "compressed", "row_offsets", "shape")}
    markers = {"qweight": "gptq", "weight_packed": "pack-quantized", "bitmask": "sparse"}
    modules = [(name.rsplit(".", 1)[0], markers[name.rsplit(".", 1)[1]])
               for name in tensors if name.rsplit(".", 1)[1] in markers]
    out = dict(tensors)
    for module, kind in modules:
        parts = {s: out.pop(f"{module}.{s}") for s in suffixes[kind] if f"{module}.{s}" in out}
        got, args = module_args(qc, module)
        if got != kind:
            raise ValueError(f"{module} holds {kind} tensors, the config says {got}")
        if kind == "gptq":
            bits, version, group_size = args
            n_out = parts["scales"].shape[1]
            k_in = parts["g_idx"].shape[0] if "g_idx" in parts else parts["qweight"].shape[0] * 32 // bits
            out[f"{module}.weight"] = gptq_weight(parts, bits, version, group_size, k_in, n_out)
        elif kind == "pack-quantized":
            bits, symmetric = args
            n_out, k_in = (int(x) for x in parts["weight_shape"].tolist())
            out[f"{module}.weight"] = pack_quantized_weight(parts, bits, symmetric, k_in, n_out)
        else:
            n_out, k_in = (int(x) for x in parts["shape"].flatten().tolist())
            out[f"{module}.weight"] = sparse_weight(parts, k_in, n_out)
    return config, out, len(modules)


def run(folder, ids, device):
    """transformers' float32 logits [tokens, vocab] of a folder."""
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager").to(device).eval()
    with torch.no_grad():
        return model(torch.tensor([ids], device=device)).logits[0].float().cpu()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", help="the folder make_folders.ts wrote")
    parser.add_argument("--out", help="logits file (default DIR/interop_logits.safetensors)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with open(os.path.join(args.dir, "ids.json")) as f:
        ids = json.load(f)
    names = sorted(e[: -len("-packed")] for e in os.listdir(args.dir) if e.endswith("-packed"))
    results, ok = {}, True
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {args.device}")
    for name in names:
        packed, dense = (os.path.join(args.dir, f"{name}-{s}") for s in ("packed", "dense"))
        config, state, count = dequantized_state(packed)
        dense_state = read_folder(dense)
        mismatched = [k for k, v in state.items()
                      if k.endswith(".weight") and not torch.equal(v.float(), dense_state[k].float())]
        tmp = tempfile.mkdtemp(prefix="interop-")
        try:
            with open(os.path.join(tmp, "config.json"), "w") as f:
                json.dump(config, f)
            save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(tmp, "model.safetensors"),
                      metadata={"format": "pt"})
            a = run(tmp, ids, args.device)
        finally:
            shutil.rmtree(tmp)
        b = run(dense, ids, args.device)
        rel = float((a - b).norm() / b.norm())
        good = not mismatched and rel <= 1e-4
        ok = ok and good
        print(f"{name}: {count} packed linears, {len(mismatched)} weights differ from the dense folder's"
              f"{' (' + ', '.join(mismatched[:3]) + ')' if mismatched else ''}; "
              f"logits relative RMS {rel:.3e} {'ok' if good else 'FAILED'}")
        results[f"ids.{name}"] = torch.tensor(ids, dtype=torch.int32)
        results[f"logits.{name}"] = a.contiguous()
    out = args.out or os.path.join(args.dir, "interop_logits.safetensors")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file(results, out, metadata={"transformers": transformers.__version__, "torch": torch.__version__,
                                      "device": args.device})
    print(f"wrote {out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
