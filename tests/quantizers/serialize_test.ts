import assert from "node:assert/strict";
import { compressedFromTensors, compressedToTensors } from "../../quantizers/serialize.ts";
import { aqlm, type AqlmWeight, dequantizeAqlm } from "../../quantizers/aqlm.ts";
import type { QuantizedWeight } from "../../quantizers/quantized_weight.ts";
import { parseSafetensors, serializeSafetensors } from "../../core/safetensors.ts";
import { hessian } from "../../hessian/hessian.ts";
import { prng, randn } from "../../core/prng.ts";
import { tensor } from "../../core/tensor.ts";

function uniformLayer(seed: number, bits: number): QuantizedWeight {
  const g = prng(seed);
  const rows = 6, cols = 20, groupSize = 8, groups = 3;
  return {
    kind: "uniform",
    shape: [rows, cols],
    bits,
    groupSize,
    symmetric: false,
    codes: (bits <= 8 ? new Uint8Array(rows * cols) : new Uint16Array(rows * cols)).map(() =>
      g.int(2 ** bits)
    ),
    scales: new Float32Array(rows * groups).map(() => g.uniform()),
    zeros: new Float32Array(rows * groups).map(() => g.int(2 ** bits)),
    gIdx: new Int32Array(cols).map((_, c) => Math.floor(c / groupSize)),
    perm: new Int32Array(cols).map((_, c) => cols - 1 - c),
    stats: { seconds: 0 },
  };
}

Deno.test("compressedToTensors() and compressedFromTensors() round-trip uniform and AQLM layers through safetensors bytes", async () => {
  const g = prng(2);
  const w = tensor("f64", [8, 32], randn(256, g));
  const h = hessian(tensor("f64", [64, 32], randn(64 * 32, g)));
  const q3: AqlmWeight = await aqlm(w, h, {
    codebooks: 2,
    codebookBits: 5,
    groupSize: 8,
    iterations: 1,
  });
  const layers = new Map<string, QuantizedWeight | AqlmWeight>([
    ["blocks.0.wq", uniformLayer(1, 3)],
    ["blocks.0.wk", uniformLayer(2, 16)],
    ["blocks.0.w1", q3],
  ]);
  const { tensors, metadata } = compressedToTensors(layers);
  const parsed = parseSafetensors(serializeSafetensors(tensors, metadata));
  const back = compressedFromTensors(parsed.tensors, parsed.metadata);
  assert.deepEqual([...back.keys()], [...layers.keys()]);
  for (const [name, q] of layers) {
    const r = back.get(name)!;
    assert.equal(r.kind, q.kind);
    if (q.kind === "uniform" && r.kind === "uniform") {
      assert.deepEqual(Array.from(r.codes), Array.from(q.codes), name);
      assert.deepEqual(r.scales, q.scales);
      assert.deepEqual(r.zeros, q.zeros);
      assert.deepEqual(r.gIdx, q.gIdx);
      assert.deepEqual(r.perm, q.perm);
      assert.equal(r.bits, q.bits);
    }
    if (q.kind === "aqlm" && r.kind === "aqlm") {
      assert.deepEqual(dequantizeAqlm(r), dequantizeAqlm(q));
      assert.deepEqual(r.objective, q.objective);
    }
  }
});

Deno.test("compressedFromTensors() names what is missing", () => {
  const { tensors, metadata } = compressedToTensors({ a: uniformLayer(3, 4) });
  tensors.delete("a.zeros");
  assert.throws(() => compressedFromTensors(tensors, metadata), /Missing tensor a\.zeros/);
  assert.throws(() => compressedFromTensors(tensors, {}), /Missing metadata key/);
});
