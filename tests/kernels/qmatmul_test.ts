import assert from "node:assert/strict";
import {
  encodeQmatmul,
  qmatmul,
  qmatmulDenseReference,
  qmatmulReference,
  qmatmulWgsl,
  uploadPackedWeight,
} from "../../kernels/qmatmul_kernel.ts";
import { GpuBatch, storageBuffer, uploadBuffer } from "../../kernels/backend.ts";
import { packWeights } from "../../quantizers/pack.ts";
import type { Tensor } from "../../core/tensor.ts";
import { type Layout, randomQuantized } from "../quantizers/_random_quantized.ts";
import { randomX, relError, testGpu } from "./_gpu.ts";

const LAYOUTS: [number, number, Layout, boolean][] = [
  // cols, groupSize, layout, symmetric
  [256, 32, "regular", false],
  [200, 64, "actOrder", false], // shorter last group
  [96, -1, "regular", true],
  [150, 32, "irregular", false],
];

Deno.test("the CPU reference on the packed layout equals the dense-dequantize reference", () => {
  let seed = 1;
  for (const bits of [2, 3, 4, 8]) {
    for (const [cols, groupSize, layout, symmetric] of LAYOUTS) {
      const q = randomQuantized(37, cols, bits, groupSize, seed++, layout, symmetric);
      const x = randomX(3, cols, seed++, "f32");
      const err = relError(
        qmatmulReference(x, packWeights(q, { scaleType: "f32" })).data,
        qmatmulDenseReference(x, q).data,
      );
      assert(err < 1e-6, `${bits} bits, ${layout}, group ${groupSize}: relative error ${err}`);
    }
  }
});

Deno.test("qmatmul kernel matches its CPU reference for every width, group layout, scale and activation type", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  let seed = 100, i = 0;
  for (const bits of [2, 3, 4, 8]) {
    for (const [cols, groupSize, layout, symmetric] of LAYOUTS) {
      // Batch 1 (GEMV), a small batch, and a batch split into two tiles, in turn.
      const m = [1, 3, 20][i % 3]!;
      const scaleType = i % 2 === 0 ? "f16" : "f32";
      const dtype = Math.floor(i / 2) % 2 === 0 ? "f32" : "f16";
      i++;
      const q = randomQuantized(45, cols, bits, groupSize, seed++, layout, symmetric);
      const p = packWeights(q, { scaleType });
      const x = randomX(m, cols, seed++, dtype);
      const y = await qmatmul(x, p, { backend: "webgpu" });
      assert.deepEqual(y.shape, [m, 45]);
      const err = relError(y.data, qmatmulReference(x, p).data);
      assert(
        err < 1e-5,
        `${bits} bits, ${layout}, group ${groupSize}, ${scaleType} scales, M = ${m}, x ${dtype}: relative error ${err}`,
      );
    }
  }
});

Deno.test("every qmatmul kernel variant (teams, row tiles, unrolling, batch tiles) gives the same product", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const q = randomQuantized(70, 320, 4, 64, 7);
  const p = packWeights(q);
  const w = uploadPackedWeight(gpu, p);
  const m = 5;
  const x = randomX(m, 320, 8, "f32");
  const expected = qmatmulReference(x, p).data;
  const variants = [
    { warps: 1, rowTiles: 1, unroll: 1, batch: 5 },
    { warps: 4, rowTiles: 2, unroll: 2, batch: 2 },
    { warps: 2, rowTiles: 4, unroll: 1, batch: 3 },
    { warps: 32, rowTiles: 1, unroll: 4, batch: 1 },
  ];
  for (const variant of variants) {
    const y = await qmatmul(x, w, { backend: "webgpu", variant });
    const err = relError(y.data, expected);
    assert(err < 1e-5, `${JSON.stringify(variant)}: relative error ${err}`);
  }
});

Deno.test("qmatmul on the CPU backend is the reference, and accepts a vector x", async () => {
  const q = randomQuantized(9, 64, 3, 32, 11);
  const p = packWeights(q);
  const x = randomX(1, 64, 12, "f32");
  const y = await qmatmul({ ...x, shape: [64] } as Tensor<"f32">, p, { backend: "cpu" });
  assert.deepEqual(y.shape, [1, 9]);
  assert.deepEqual(Array.from(y.data), Array.from(qmatmulReference(x, p).data));
});

Deno.test("qmatmul rejects bad shapes, options and variants", async () => {
  const p = packWeights(randomQuantized(9, 64, 4, 32, 13, "actOrder"));
  await assert.rejects(() => qmatmul(randomX(2, 63, 1, "f32"), p, { backend: "cpu" }), RangeError);
  await assert.rejects(
    // @ts-expect-error: a bad backend
    () => qmatmul(randomX(2, 64, 1, "f32"), p, { backend: "cuda" }),
    RangeError,
  );
  await assert.rejects(
    () => qmatmul({ dtype: "f64", shape: [1, 64], data: new Float64Array(64) } as never, p),
    TypeError,
  );
  const spec = {
    bits: 4,
    scaleType: "f16",
    zeros: true,
    rowTiles: 1,
    warps: 8,
    batch: 1,
    unroll: 1,
  } as const;
  assert.throws(() => qmatmulWgsl({ ...spec, bits: 5 }), RangeError);
  assert.throws(() => qmatmulWgsl({ ...spec, batch: 17 }), RangeError);
  assert.throws(() => qmatmulWgsl({ ...spec, unroll: 3 }), RangeError);
  const gpu = await testGpu();
  if (!gpu) return;
  // A column map needs a scratch buffer for the gathered x.
  const w = uploadPackedWeight(gpu, p);
  const batch = new GpuBatch(gpu);
  const x = uploadBuffer(gpu, new Float32Array(64));
  const y = storageBuffer(gpu, 36);
  assert.throws(() => encodeQmatmul(batch, w, { x, input: "f32", m: 1, y }), RangeError);
  await batch.submit();
  for (const b of [x, y, w.words, w.scales, w.zeros!, w.colIdx!]) b.destroy();
});
