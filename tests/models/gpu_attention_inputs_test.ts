import assert from "node:assert/strict";
import { testGpu } from "../kernels/_gpu.ts";
import { assertClose } from "../_helpers.ts";
import { prng } from "../../core/prng.ts";
import { type Gpu, GpuBatch, uploadBuffer } from "../../kernels/backend.ts";
import { fakeQuantizeKvCache, type KvCacheQuant } from "../../quantizers/kv_cache_quant.ts";
import {
  encodeAttentionInputs,
  encodeKvQuant,
  uploadAttentionInputs,
} from "../../models/_gpu_attention_inputs.ts";
import { attentionInputs } from "../../models/forward.ts";
import type { LlamaConfig } from "../../models/model.ts";

/** Runs the KV kernel on rows [rows, ld] whose groups of `width` start at off (per per row). */
async function kvOnGpu(
  gpu: Gpu,
  x: Float32Array,
  spec: KvCacheQuant,
  shape: { rows: number; width: number; per: number; ld: number; off: number },
): Promise<Float32Array> {
  const buffer = uploadBuffer(gpu, x, "test:x");
  try {
    const batch = new GpuBatch(gpu);
    const { rows, ...rest } = shape;
    encodeKvQuant(batch, buffer, spec, { groups: rows * shape.per, ...rest });
    const { data } = await batch.submit([{ buffer, offset: 0, size: x.byteLength }]);
    return new Float32Array(data[0]!);
  } finally {
    buffer.destroy();
  }
}

/** The CPU reference on the same layout: the groups gathered, quantized, put back. */
function kvOnCpu(
  x: Float32Array,
  spec: KvCacheQuant,
  shape: { rows: number; width: number; per: number; ld: number; off: number },
): Float32Array {
  const { rows, width, per, ld, off } = shape;
  const groups = new Float32Array(rows * per * width);
  for (let r = 0; r < rows; r++) {
    groups.set(x.subarray(r * ld + off, r * ld + off + per * width), r * per * width);
  }
  const q = fakeQuantizeKvCache(groups, rows * per, spec);
  const out = x.slice();
  for (let r = 0; r < rows; r++) {
    out.set(q.subarray(r * per * width, (r + 1) * per * width), r * ld + off);
  }
  return out;
}

/** Exact agreement (=== : +0 and −0 are equal), naming the first difference. */
function assertSame(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length);
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) {
      assert.fail(`${what}: element ${i} is ${got[i]} on the GPU and ${want[i]} on the CPU`);
    }
  }
}

/** Heavy-tailed values: normal times a random power of two per group and per element. */
function heavy(n: number, group: number, seed: number): Float32Array {
  const rng = prng(seed);
  const x = new Float32Array(n);
  let scale = 1;
  for (let i = 0; i < n; i++) {
    if (i % group === 0) scale = 2 ** (rng.int(40) - 20);
    x[i] = rng.normal() * scale * (rng.int(8) === 0 ? 2 ** rng.int(36) : 1);
  }
  return x;
}

/** The float32 rounding of the exact a·c (a float32 > 0, c float64 > 0), by BigInt. */
function exactProduct32(a: number, c: number): number {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat32(0, a);
  const ab = view.getUint32(0);
  const ma = BigInt((ab & 0x7fffff) | 0x800000), ea = ((ab >>> 23) & 0xff) - 150;
  view.setFloat64(0, c);
  const hi = view.getUint32(0), lo = view.getUint32(4);
  const mc = (BigInt((hi & 0xfffff) | 0x100000) << 32n) | BigInt(lo);
  const ec = ((hi >>> 20) & 0x7ff) - 1075;
  const p = ma * mc;
  const shift = p.toString(2).length - 24;
  let q = p >> BigInt(shift);
  const rem = p - (q << BigInt(shift)), half = 1n << BigInt(shift - 1);
  if (rem > half || (rem === half && (q & 1n) === 1n)) q += 1n;
  return Number(q) * 2 ** (shift + ea + ec);
}

const SPECS: KvCacheQuant[] = [
  { format: "int4", asymmetric: true, clipRatio: 0.95 },
  { format: "int4", asymmetric: true },
  { format: "int8", asymmetric: true, clipRatio: 0.9 },
  { format: "int8", asymmetric: true, clipRatio: 0.95 },
  { format: "int8" },
  { format: "int4" },
  { format: "fp8" },
  { format: "mxfp4" },
  { format: "nvfp4" },
];

Deno.test("the WebGPU KV cache kernel gives fakeQuantizeKvCache's values exactly, in place in q/k/v rows", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const [i, spec] of SPECS.entries()) {
    for (const width of [8, 32, 40]) {
      // rows of 3 query heads, 2 key heads and 2 value heads: the groups start after the queries
      const per = 4, off = 3 * width, ld = 7 * width, rows = 5;
      const x = heavy(rows * ld, width, 31 * i + width);
      x.fill(0, off, off + width); // an all-zero group
      for (let j = 0; j < width; j++) x[ld + off + j] = Math.abs(x[ld + off + j]!); // no negatives
      for (let j = 0; j < width; j++) x[2 * ld + off + j] = -Math.abs(x[2 * ld + off + j]!);
      // ranges whose ends are 2^30, 2^40 and 2^60 apart (the float64 sum rounds the smaller)
      for (const [g, gap] of [[1, 30], [2, 40], [3, 60]] as const) {
        x[3 * ld + off + g * width] = 1.2345 * 2 ** gap;
        x[3 * ld + off + g * width + 1] = -1.0987;
      }
      const shape = { rows, width, per, ld, off };
      const got = await kvOnGpu(gpu, x, spec, shape);
      assertSame(got, kvOnCpu(x, spec, shape), `${JSON.stringify(spec)} width ${width}`);
    }
  }
});

Deno.test("the WebGPU KV cache kernel rounds ties to even and c·lo through float64 as the CPU does", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const shape = { rows: 1, width: 8, per: 1, ld: 8, off: 0 };
  // [0, 15] on asymmetric int4: s = 1, z = 0, and the halves tie (2.5 → 2, 7.5 → 8, 0.5 → 0)
  const ties = new Float32Array([0, 15, 2.5, 7.5, 0.5, 13.5, 1.5, 4.5]);
  const spec = { format: "int4", asymmetric: true } as const;
  const want = fakeQuantizeKvCache(ties, 1, spec);
  assert.deepEqual([...want], [0, 15, 2, 8, 0, 14, 2, 4]);
  assertSame(await kvOnGpu(gpu, ties, spec, shape), want, "ties");
  // A clipping ratio whose product with the group's largest value rounds, in float64, onto a
  // float32 midpoint: the CPU's fl32(fl64(a·c)) is not the float32 rounding of the exact a·c.
  let found: { a: number; c: number } | null = null;
  for (let k = 1; k < 4096 && found === null; k++) {
    const a = Math.fround(1 + k * 2 ** -23);
    for (let j = 1; j < 64 && found === null; j++) {
      const c = (1 - (2 * j + 1) * 2 ** -25) / a; // a·c about a float32 midpoint below 1
      if (c <= 1 && Math.fround(a * c) !== exactProduct32(a, c)) found = { a, c };
    }
  }
  assert(found !== null, "no double-rounding case found");
  const x = new Float32Array([found.a, 0.25, 0.5, 0.125, 0.75, 0.3, 0.6, 0.9]);
  const clipped = { format: "int4", asymmetric: true, clipRatio: found.c } as const;
  assertSame(
    await kvOnGpu(gpu, x, clipped, shape),
    fakeQuantizeKvCache(x, 1, clipped),
    "double rounding",
  );
});

Deno.test("the WebGPU query/key rotation and KV cache quantization give attentionInputs' values", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const config: LlamaConfig = {
    dim: 32,
    hiddenDim: 48,
    nLayers: 1,
    nHeads: 4,
    nKvHeads: 2,
    vocabSize: 40,
    seqLen: 16,
    ropeTheta: 10000,
    normEps: 1e-5,
    sharedClassifier: false,
  };
  const hd = 8, qDim = 32, kvDim = 16, ld = qDim + 2 * kvDim, T = 3;
  const rng = prng(5);
  const x = Float32Array.from({ length: T * ld }, () => rng.normal());
  const q = new Float32Array(T * qDim), k = new Float32Array(T * kvDim);
  const v = new Float32Array(T * kvDim);
  for (let t = 0; t < T; t++) {
    q.set(x.subarray(t * ld, t * ld + qDim), t * qDim);
    k.set(x.subarray(t * ld + qDim, t * ld + qDim + kvDim), t * kvDim);
    v.set(x.subarray(t * ld + qDim + kvDim, (t + 1) * ld), t * kvDim);
  }
  for (
    const layer of [
      { qkHadamard: { n: hd, seed: 3 } },
      { kvQuant: { format: "int8", asymmetric: true, clipRatio: 0.95 } as const },
      { qkHadamard: { n: hd, seed: 3 }, kvQuant: { format: "int8" } as const },
    ]
  ) {
    const want = attentionInputs(config, layer, q, k, v, T);
    const [plan] = uploadAttentionInputs(gpu, [layer], "test");
    const buffer = uploadBuffer(gpu, x, "test:qkv");
    const batch = new GpuBatch(gpu);
    encodeAttentionInputs(batch, config, buffer, plan!, T);
    const { data } = await batch.submit([{ buffer, offset: 0, size: x.byteLength }]);
    buffer.destroy();
    plan!.rotation?.destroy();
    const got = new Float32Array(data[0]!);
    for (let t = 0; t < T; t++) {
      const what = JSON.stringify(layer);
      const row = (o: number, n: number) => got.subarray(t * ld + o, t * ld + o + n);
      const opts = { atol: 1e-6, rtol: 1e-5, message: what };
      assertClose(row(0, qDim), want.q.subarray(t * qDim, (t + 1) * qDim), opts);
      assertClose(row(qDim, kvDim), want.k.subarray(t * kvDim, (t + 1) * kvDim), opts);
      assertClose(row(qDim + kvDim, kvDim), want.v.subarray(t * kvDim, (t + 1) * kvDim), opts);
    }
  }
});
