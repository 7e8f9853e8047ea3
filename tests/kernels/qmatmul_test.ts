import assert from "node:assert/strict";
import {
  destroyPackedWeight,
  encodeQmatmul,
  qmatmul,
  qmatmulProductSpec,
  uploadPackedWeight,
} from "../../kernels/qmatmul_kernel.ts";
import {
  qmatmulDeviceLimits,
  qmatmulExactZeros,
  qmatmulResolvedSpec,
  qmatmulSpec,
  qmatmulSweptFewRowSpec,
} from "../../kernels/qmatmul_default_spec.ts";
import { qmatmulDenseReference, qmatmulReference } from "../../kernels/qmatmul_reference.ts";
import { qmatmulWgsl, qmatmulWorkgroupBytes } from "../../kernels/qmatmul_wgsl.ts";
import { checkQmatmulSpec } from "../../kernels/qmatmul_spec.ts";
import { GpuBatch, storageBuffer, uploadBuffer } from "../../kernels/backend.ts";
import { packWeights } from "../../quantizers/pack.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
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

/**
 * The product tests' cases: every width × layout of {@linkcode LAYOUTS}, 45
 * rows, the batch sizes in turn, f16/f32 scales alternating and f32/f16
 * activations alternating in pairs; the weight and x from consecutive seeds.
 */
function* productCases(widths: readonly number[], batches: readonly number[], seed: number) {
  let index = 0;
  for (const bits of widths) {
    for (const [cols, groupSize, layout, symmetric] of LAYOUTS) {
      const m = batches[index % batches.length]!;
      const scaleType = index % 2 === 0 ? "f16" : "f32";
      const dtype = Math.floor(index / 2) % 2 === 0 ? "f32" : "f16";
      const q = randomQuantized(45, cols, bits, groupSize, seed++, layout, symmetric);
      const x = randomX(m, cols, seed++, dtype);
      yield { index, bits, cols, groupSize, layout, m, scaleType, dtype, q, x } as const;
      index++;
    }
  }
}

Deno.test("the CPU reference on the packed layout equals the dense-dequantize reference", () => {
  let seed = 1;
  for (const bits of [2, 3, 4, 8]) {
    for (const [cols, groupSize, layout, symmetric] of LAYOUTS) {
      const q = randomQuantized(37, cols, bits, groupSize, seed++, layout, symmetric);
      const x = randomX(3, cols, seed++, "f32");
      const err = relError(
        qmatmulReference(x, packWeights(q, { scaleType: "f32" })).data,
        qmatmulDenseReference(x, dequantize(q)).data,
      );
      assert(err < 1e-6, `${bits} bits, ${layout}, group ${groupSize}: relative error ${err}`);
    }
  }
});

Deno.test("qmatmul kernel matches its CPU reference for every width, group layout, scale and activation type", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  // Batch 1 (GEMV), a small batch, and a batch split into two tiles, in turn.
  for (const c of productCases([2, 3, 4, 8], [1, 3, 20], 100)) {
    const { bits, layout, groupSize, m, scaleType, dtype, x } = c;
    const p = packWeights(c.q, { scaleType });
    const y = await qmatmul(x, p, { backend: "webgpu" });
    assert.deepEqual(y.shape, [m, 45]);
    const err = relError(y.data, qmatmulReference(x, p).data);
    assert(
      err < 1e-5,
      `${bits} bits, ${layout}, group ${groupSize}, ${scaleType} scales, M = ${m}, x ${dtype}: relative error ${err}`,
    );
  }
});

Deno.test("every qmatmul kernel variant (teams, sub-teams, row tiles, steps, prefetch, staged x, dequantization, reduction, batch tiles) gives the same product", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const variants = [
    { warps: 1, rowTiles: 1, unroll: 1, batch: 5, prefetch: false, sharedX: false, reduce: "tree" },
    { warps: 4, rowTiles: 2, unroll: 2, batch: 2, prefetch: true, sharedX: true, reduce: "flat" },
    { warps: 2, rowTiles: 4, unroll: 1, batch: 3, prefetch: true, sharedX: false, reduce: "tree" },
    { warps: 32, rowTiles: 1, unroll: 4, batch: 1, prefetch: false, sharedX: true, reduce: "flat" },
    { warps: 8, rowTiles: 1, unroll: 4, batch: 4, prefetch: true, sharedX: false, reduce: "flat" },
    { warps: 4, rowTiles: 1, unroll: 2, batch: 1, prefetch: true, sharedX: true, split: 2 },
    {
      warps: 2,
      rowTiles: 1,
      unroll: 1,
      batch: 3,
      prefetch: true,
      sharedX: true,
      batchedStage: true,
    },
    {
      warps: 8,
      rowTiles: 1,
      unroll: 1,
      batch: 1,
      prefetch: false,
      sharedX: true,
      batchedStage: true,
    },
    { warps: 2, rowTiles: 2, unroll: 1, batch: 2, prefetch: false, sharedX: false, split: 4 },
    {
      warps: 1,
      rowTiles: 1,
      unroll: 1,
      batch: 1,
      prefetch: false,
      sharedX: true,
      split: 4,
      reduce: "flat",
    },
  ] as const;
  let seed = 7;
  for (const bits of [2, 3, 4, 8]) {
    // 320 columns in groups of 64 (two chunks each: unroll 4 is lowered to 2).
    const p = packWeights(randomQuantized(70, 320, bits, 64, seed++), { scaleType: "f32" });
    const w = uploadPackedWeight(gpu, p);
    const m = 5;
    const x = randomX(m, 320, seed++, "f32");
    const expected = qmatmulReference(x, p).data;
    for (const [i, variant] of variants.entries()) {
      const dequant = (i + bits) % 2 === 0 ? "exact" : "fma";
      const y = await qmatmul(x, w, { backend: "webgpu", variant: { ...variant, dequant } });
      const err = relError(y.data, expected);
      assert(
        err < 1e-5,
        `${bits} bits ${dequant} ${JSON.stringify(variant)}: relative error ${err}`,
      );
    }
    destroyPackedWeight(w);
  }
});

Deno.test("split-K, the codes-first emission order and the tiled path match the CPU reference for every width, group layout, scale and activation type", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const plain = { split: 1, sharedX: false, batchedStage: false, reduce: "tree" } as const;
  const variants = [
    { ...plain, splitK: 4, dequant: "fma", rowTiles: 2, warps: 2, batch: 8, unroll: 1 },
    { ...plain, splitK: 2, dequant: "exact", rowTiles: 1, warps: 1, batch: 12, unroll: 2 },
    {
      ...plain,
      splitK: 8,
      dequant: "fma",
      codesFirst: true,
      rowTiles: 4,
      warps: 1,
      batch: 20,
      unroll: 1,
      prefetch: true,
    },
    { ...plain, codesFirst: true, dequant: "fma", rowTiles: 1, warps: 2, batch: 32, unroll: 1 },
    { ...plain, codesFirst: true, dequant: "exact", rowTiles: 1, warps: 4, batch: 5, unroll: 1 },
    {
      ...plain,
      codesFirst: true,
      dequant: "exact",
      sharedX: true,
      rowTiles: 4,
      warps: 1,
      batch: 3,
      unroll: 2,
      prefetch: true,
    },
    {
      ...plain,
      tiled: true,
      dequant: "fma",
      rowTiles: 1,
      batch: 8,
      microRows: 4,
      microBatch: 4,
      warps: 1,
      unroll: 2,
      prefetch: false,
    },
    // Within the 16 KB of workgroup memory that WebGPU guarantees.
    {
      ...plain,
      tiled: true,
      dequant: "fma",
      rowTiles: 1,
      batch: 16,
      microRows: 8,
      microBatch: 4,
      warps: 2,
      unroll: 1,
      prefetch: true,
    },
    {
      ...plain,
      tiled: true,
      dequant: "fma",
      rowTiles: 1,
      batch: 16,
      microRows: 4,
      microBatch: 8,
      warps: 2,
      unroll: 1,
      prefetch: false,
    },
    {
      ...plain,
      tiled: true,
      dequant: "fma",
      rowTiles: 2,
      batch: 32,
      microRows: 8,
      microBatch: 8,
      warps: 1,
      unroll: 1,
      prefetch: true,
    },
  ] as const;
  // Batches that are not multiples of the tiles, f16 or f32 scales and activations in turn.
  for (const c of productCases([2, 3, 4, 8], [21, 7, 37], 600)) {
    const { index, bits, layout, groupSize, m, scaleType, dtype, x } = c;
    const p = packWeights(c.q, { scaleType });
    const w = uploadPackedWeight(gpu, p);
    const expected = qmatmulReference(x, p).data;
    // Three variants per case (4 cases per width), so that every width meets all 10.
    for (const v of [0, 4, 8]) {
      const variant = variants[(index + v) % 10]!;
      if (variant.dequant === "exact" && !qmatmulExactZeros(p)) continue;
      const y = await qmatmul(x, w, { backend: "webgpu", variant });
      const err = relError(y.data, expected);
      assert(
        err < 1e-5,
        `${bits} bits, ${layout}, group ${groupSize}, ${scaleType} scales, M = ${m}, x ${dtype}, ${
          JSON.stringify(variant)
        }: relative error ${err}`,
      );
    }
    destroyPackedWeight(w);
  }
});

Deno.test("the accumulating qmatmul adds the product to y on the default, split-K and tiled paths, as its CPU reference does", async () => {
  // The reference: y0 + the product, y0 untouched.
  const q0 = randomQuantized(45, 256, 4, 32, 800);
  const p0 = packWeights(q0, { scaleType: "f32" });
  const x0 = randomX(3, 256, 801, "f32"), y0 = randomX(3, 45, 802, "f32");
  const copy = Float32Array.from(y0.data);
  const sum = qmatmulReference(x0, p0, y0), plain = qmatmulReference(x0, p0);
  assert.deepEqual(y0.data, copy);
  assert.deepEqual(sum.data, plain.data.map((v, i) => copy[i]! + v));
  assert.deepEqual((await qmatmul(x0, p0, { backend: "cpu", addend: y0 })).data, sum.data);
  await assert.rejects(
    () => qmatmul(x0, p0, { backend: "cpu", addend: randomX(2, 45, 1, "f32") }),
    /'addend' must be f32 \[3, 45\]/,
  );
  const gpu = await testGpu();
  if (!gpu) return;
  const plainSplit = { split: 1, sharedX: false, batchedStage: false, reduce: "tree" } as const;
  const variants = [
    {},
    { ...plainSplit, splitK: 4, dequant: "fma", rowTiles: 2, warps: 2, batch: 8, unroll: 1 },
    {
      ...plainSplit,
      tiled: true,
      dequant: "fma",
      rowTiles: 1,
      batch: 16,
      microRows: 4,
      microBatch: 4,
      warps: 2,
      unroll: 1,
      prefetch: false,
    },
  ] as const;
  for (const c of productCases([3, 4], [1, 21, 37], 810)) {
    const { index, bits, layout, m, scaleType, dtype, x } = c;
    const p = packWeights(c.q, { scaleType });
    // A residual of the product's size.
    const r = randomX(m, 45, 900 + index, "f32");
    const addend = { ...r, data: r.data.map((v) => 16 * v) };
    const expected = qmatmulReference(x, p, addend).data;
    // Each variant meets every batch size.
    const variant = variants[(index + Math.floor(index / 3)) % variants.length]!;
    const y = await qmatmul(x, p, { backend: "webgpu", variant, addend });
    const err = relError(y.data, expected);
    assert(
      err < 1e-5,
      `${bits} bits, ${layout}, M = ${m}, x ${dtype}, ${
        JSON.stringify(variant)
      }: relative error ${err}`,
    );
    // Without the addend in the sum, the error would be of its size.
    assert(relError(y.data, qmatmulReference(x, p).data) > 0.1);
  }
});

Deno.test("the default at batch 9–16 with a long K splits K over workgroups and matches the CPU reference", async () => {
  // 256 chunks of 32 columns: the split-K default.
  const q = randomQuantized(40, 8192, 4, 128, 700);
  const p = packWeights(q);
  const spec = qmatmulSpec(p, 12, { workgroupBytes: 49152, invocations: 1024 });
  assert.equal(spec.splitK, 4);
  assert.equal(qmatmulSpec(p, 17).splitK, undefined);
  const gpu = await testGpu();
  if (!gpu) return;
  for (const [m, dtype] of [[12, "f32"], [9, "f16"]] as const) {
    const x = randomX(m, 8192, 701 + m, dtype);
    const y = await qmatmul(x, p, { backend: "webgpu" });
    const err = relError(y.data, qmatmulReference(x, p).data);
    assert(err < 1e-5, `M = ${m}, x ${dtype}: relative error ${err}`);
  }
});

Deno.test("the half and dot4 dequantizations match the CPU reference for 2, 4 and 8 bits, every group layout, scale and activation type", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const c of productCases([2, 4, 8], [1, 3, 20], 300)) {
    const { index, bits, layout, groupSize, m, scaleType, dtype, q, x } = c;
    // Fractional zero points on every other case: "half" takes any zero point.
    const odd = index % 2 === 1;
    const zq = odd ? { ...q, zeros: q.zeros.map((z) => z + 0.375) } : q;
    const p = packWeights(zq, { scaleType });
    const expected = qmatmulReference(x, p).data;
    for (const dequant of ["half", "dot4"] as const) {
      const variant = { dequant, sharedX: true, unroll: odd ? 1 : 2 };
      const y = await qmatmul(x, p, { backend: "webgpu", variant });
      const err = relError(y.data, expected);
      assert(
        err < 1e-6,
        `${dequant}: ${bits} bits, ${layout}, group ${groupSize}, ${scaleType} scales, M = ${m}, x ${dtype}: relative error ${err}`,
      );
    }
  }
});

Deno.test("the half and dot4 dequantizations keep codes at every bit offset of a word exact", async () => {
  // Every code q at every position against a one-hot x: y = s·(q − z) exactly.
  const gpu = await testGpu();
  if (!gpu) return;
  for (const bits of [2, 4, 8]) {
    const cols = 64, rows = 2 ** bits;
    const q = randomQuantized(rows, cols, bits, 32, 400 + bits);
    // Row r holds code (r + c) mod 2^b in column c.
    const codes = q.codes.map((_, e) => (Math.floor(e / cols) + (e % cols)) % rows);
    const p = packWeights({ ...q, codes }, { scaleType: "f32" });
    const x = { dtype: "f32", shape: [cols, cols], data: new Float32Array(cols * cols) } as const;
    for (let c = 0; c < cols; c++) x.data[c * cols + c] = 1;
    const expected = Array.from(qmatmulReference(x, p).data);
    for (const dequant of ["half", "dot4"] as const) {
      const variant = { dequant, sharedX: true, batch: 16 };
      const y = await qmatmul(x, p, { backend: "webgpu", variant });
      assert.deepEqual(Array.from(y.data), expected, `${dequant}, ${bits} bits`);
    }
  }
});

Deno.test("the dot4 dequantization errs by at most 2^-24 of each chunk's largest activation, over activations of mixed magnitudes", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rows = 40, cols = 256;
  for (const bits of [4, 8]) {
    const q = randomQuantized(rows, cols, bits, 64, 500 + bits);
    const p = packWeights(q, { scaleType: "f32" });
    const w = dequantize(q).data; // [rows, cols]
    // Magnitudes from 2^-20 to 2^20 within every chunk of 32, random signs.
    const x = randomX(2, cols, 510 + bits, "f32");
    const xd = x.data.map((v, i) => Math.sign(v) * 2 ** (((i * 7919) % 41) - 20));
    const xt = { ...x, data: Float32Array.from(xd) };
    const y = await qmatmul(xt, p, {
      backend: "webgpu",
      variant: { dequant: "dot4", sharedX: true },
    });
    for (let m = 0; m < 2; m++) {
      for (let r = 0; r < rows; r++) {
        let exact = 0, bound = 0, mag = 0;
        for (let c0 = 0; c0 < cols; c0 += 32) {
          let top = 0;
          for (let c = c0; c < c0 + 32; c++) top = Math.max(top, Math.abs(xt.data[m * cols + c]!));
          for (let c = c0; c < c0 + 32; c++) {
            const t = w[r * cols + c]! * xt.data[m * cols + c]!;
            exact += t;
            mag += Math.abs(t);
            bound += 2 ** -24 * top * Math.abs(w[r * cols + c]!);
          }
        }
        // The rounding of x, plus f32 accumulation (a few ulps of the magnitudes summed).
        const err = Math.abs(y.data[m * rows + r]! - exact);
        assert(err <= bound + 1e-6 * mag, `${bits} bits, row ${r}: error ${err}, bound ${bound}`);
      }
    }
  }
});

Deno.test("qmatmul dequantizes fractional zero points with the FMA or half path and refuses the exact one", async () => {
  const q = randomQuantized(40, 128, 4, 32, 21);
  const frac = { ...q, zeros: q.zeros.map((z) => z + 0.375) };
  const p = packWeights(frac, { scaleType: "f32" });
  assert.equal(qmatmulExactZeros(p), false);
  assert.equal(qmatmulSpec(p, 2).dequant, "fma");
  assert.equal(qmatmulSpec(p, 1).dequant, "fma");
  assert.equal(qmatmulSweptFewRowSpec(p, 2).dequant, "fma");
  assert.equal(qmatmulSweptFewRowSpec(p, 1).dequant, "half");
  assert.equal(qmatmulExactZeros(packWeights(q)), true);
  assert.equal(qmatmulSpec(packWeights(q), 2).dequant, "exact");
  assert.equal(qmatmulSweptFewRowSpec(packWeights(q), 2).dequant, "exact");
  const gpu = await testGpu();
  if (!gpu) return;
  for (const m of [1, 2]) {
    const x = randomX(m, 128, 22, "f32");
    const swept = qmatmulSweptFewRowSpec(p, m);
    for (const variant of [{}, { dequant: swept.dequant, sharedX: swept.sharedX }]) {
      const y = await qmatmul(x, p, { backend: "webgpu", variant });
      const err = relError(y.data, qmatmulReference(x, p).data);
      assert(err < 1e-5, `batch ${m} ${JSON.stringify(variant)}: relative error ${err}`);
    }
  }
  const x = randomX(2, 128, 22, "f32");
  await assert.rejects(
    () => qmatmul(x, p, { backend: "webgpu", variant: { dequant: "exact" } }),
    RangeError,
  );
});

Deno.test("the default qmatmul specialization is valid and within the device limits for every shape and batch", () => {
  for (
    const [rows, cols, bits, groupSize] of [[45, 256, 4, 32], [4096, 4096, 4, 128], [
      64,
      8192,
      2,
      128,
    ], [
      33,
      200,
      3,
      -1,
    ]] as const
  ) {
    const p = packWeights(randomQuantized(rows, cols, bits, groupSize, 31));
    for (const limits of [{}, { workgroupBytes: 49152, invocations: 1024 }]) {
      for (let m = 1; m <= 130; m += m < 20 ? 1 : 37) {
        // The previous batch 1–4 default too.
        const specs = [qmatmulSpec(p, m, limits)];
        if (m <= 4) specs.push(qmatmulSweptFewRowSpec(p, m, limits));
        for (const spec of specs) {
          checkQmatmulSpec(spec);
          assert(
            qmatmulWorkgroupBytes(spec) <= (limits.workgroupBytes ?? 16384),
            JSON.stringify(spec),
          );
          assert(spec.warps * 32 <= (limits.invocations ?? 256), JSON.stringify(spec));
          assert(spec.batch <= m && spec.chunks === p.paddedCols / 32, JSON.stringify(spec));
        }
      }
    }
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
    chunks: 8,
    groupChunks: 2,
    rowTiles: 1,
    warps: 8,
    split: 1,
    batchedStage: false,
    batch: 1,
    unroll: 1,
    prefetch: true,
    sharedX: false,
    dequant: "fma",
    reduce: "tree",
  } as const;
  assert.throws(() => qmatmulWgsl({ ...spec, bits: 5 }), RangeError);
  assert.throws(() => qmatmulWgsl({ ...spec, batch: 33 }), RangeError);
  assert.throws(() => qmatmulWgsl({ ...spec, splitK: 3 }), RangeError);
  assert.throws(() => qmatmulWgsl({ ...spec, codesFirst: true, dequant: "half" }), RangeError);
  const tiled = { ...spec, tiled: true, batch: 16, rowTiles: 2 } as const;
  assert.doesNotThrow(() => qmatmulWgsl(tiled));
  assert.throws(() => qmatmulWgsl({ ...tiled, splitK: 2 }), RangeError);
  assert.throws(() => qmatmulWgsl({ ...tiled, batch: 18 }), RangeError); // not a multiple of 4
  assert.throws(() => qmatmulWgsl({ ...tiled, batch: 136 }), RangeError);
  assert.throws(() => qmatmulWgsl({ ...tiled, microRows: 2 }), RangeError);
  assert.throws(() => qmatmulWgsl({ ...tiled, sharedX: true }), RangeError);
  assert.throws(() => qmatmulWgsl({ ...tiled, dequant: "exact" }), RangeError);
  assert.throws(() => qmatmulWgsl({ ...spec, split: 3 }), RangeError);
  // SwiGLU: a thread must own the gate and the up tile, in one pass.
  assert.doesNotThrow(() => qmatmulWgsl({ ...spec, rowTiles: 2, swiglu: true }));
  assert.throws(() => qmatmulWgsl({ ...spec, swiglu: true }), /'swiglu' must be false unless/);
  assert.throws(() => qmatmulWgsl({ ...spec, rowTiles: 2, swiglu: true, splitK: 2 }), RangeError);
  assert.throws(() => qmatmulWgsl({ ...spec, rowTiles: 2, swiglu: true, accumulate: true }));
  assert.throws(() => qmatmulWgsl({ ...tiled, swiglu: true }), RangeError);
  assert.throws(() => qmatmulWgsl({ ...spec, unroll: 3 }), RangeError);
  assert.throws(() => qmatmulWgsl({ ...spec, unroll: 4 }), RangeError); // 4 does not divide 2
  assert.throws(() => qmatmulWgsl({ ...spec, groupChunks: 3 }), RangeError);
  assert.throws(() => qmatmulWgsl({ ...spec, dequant: "half" }), RangeError); // needs sharedX
  assert.throws(
    () => qmatmulWgsl({ ...spec, dequant: "half", sharedX: true, bits: 3 }),
    RangeError,
  );
  assert.doesNotThrow(() => qmatmulWgsl({ ...spec, dequant: "half", sharedX: true }));
  assert.throws(() => qmatmulWgsl({ ...spec, dequant: "dot4" }), RangeError); // needs sharedX
  assert.throws(
    () => qmatmulWgsl({ ...spec, dequant: "dot4", sharedX: true, bits: 3 }),
    RangeError,
  );
  const gpu = await testGpu();
  if (!gpu) return;
  // A column map needs a scratch buffer for the gathered x.
  const w = uploadPackedWeight(gpu, p);
  const batch = new GpuBatch(gpu);
  const x = uploadBuffer(gpu, new Float32Array(64));
  const y = storageBuffer(gpu, 36);
  assert.throws(() => encodeQmatmul(batch, w, { x, input: "f32", m: 1, y }), RangeError);
  // Split-K needs a partials buffer of splitK·M·N values.
  const scratch = storageBuffer(gpu, 64 * 4), partials = storageBuffer(gpu, 4);
  assert.throws(
    () => encodeQmatmul(batch, w, { x, input: "f32", m: 1, y, scratch, partials }, { splitK: 2 }),
    RangeError,
  );
  await batch.submit();
  for (const b of [x, y, scratch, partials, w.words, w.scales, w.zeros!, w.colIdx!]) b.destroy();
});

Deno.test("qmatmul never picks the half dequantization on a device that flushes f16 subnormals, and refuses it there", async () => {
  const p = packWeights(randomQuantized(64, 256, 4, 64, 41));
  assert.equal(qmatmulSweptFewRowSpec(p, 1).dequant, "half");
  assert.equal(qmatmulSweptFewRowSpec(p, 1, { f16Subnormals: false }).dequant, "exact");
  const p2 = packWeights(randomQuantized(64, 256, 2, 64, 42));
  assert.equal(qmatmulSweptFewRowSpec(p2, 1, { f16Subnormals: false }).dequant, "exact");
  // Where x staged in workgroup memory does not fit (K = 14336 in 48 KB), the default without it.
  const long = packWeights(randomQuantized(64, 14336, 4, 128, 43));
  const limits = { workgroupBytes: 49152, invocations: 1024 };
  assert.deepEqual(
    qmatmulSweptFewRowSpec(long, 1, limits),
    qmatmulSweptFewRowSpec(long, 1, { ...limits, f16Subnormals: false }),
  );
  // The defaults never take it (the few-row path reads x from global memory, "half" a staged x).
  for (const m of [1, 2, 5, 16]) assert.notEqual(qmatmulSpec(p, m).dequant, "half");
  const gpu = await testGpu();
  if (!gpu) return;
  const flushing = { ...gpu, f16Subnormals: false };
  assert.notEqual(qmatmulResolvedSpec(flushing, p, 1).dequant, "half");
  assert.throws(
    () => qmatmulResolvedSpec(flushing, p, 1, { dequant: "half", sharedX: true }),
    /flushes f16 subnormals/,
  );
  const swept = qmatmulSweptFewRowSpec(p, 1, { f16Subnormals: gpu.f16Subnormals });
  assert.equal(swept.dequant, gpu.f16Subnormals ? "half" : "exact");
  assert.doesNotThrow(() => qmatmulResolvedSpec(gpu, p, 1, swept));
});

Deno.test("qmatmul's RMSNorm prologue equals the product of rmsNorm(x) for every dequantization, staged and global x, prefetch, split-K, SwiGLU and several rows; act-order weights refuse it", async () => {
  // The prologue's sums take one f32 per thread of workgroup memory, whatever the dequantization.
  const base = qmatmulSpec(packWeights(randomQuantized(64, 256, 4, 64, 90)), 1);
  for (const dequant of ["fma", "exact", "half", "dot4"] as const) {
    const spec = { ...base, dequant, sharedX: dequant === "half" || dequant === "dot4" };
    assert.equal(
      qmatmulWorkgroupBytes({ ...spec, norm: true }) - qmatmulWorkgroupBytes(spec),
      spec.warps * 32 * 4,
      dequant,
    );
  }
  const gpu = await testGpu();
  if (!gpu) return;
  const eps = 1e-5;
  const K = 256, N = 128;
  /** x/sqrt(mean(x²) + eps)·w per row, in float64. */
  const rmsNorm = (x: Float32Array, m: number, w: Float32Array) => {
    const out = new Float32Array(m * K);
    for (let r = 0; r < m; r++) {
      let ss = 0;
      for (let j = 0; j < K; j++) ss += x[r * K + j]! ** 2;
      const inv = 1 / Math.sqrt(ss / K + eps);
      for (let j = 0; j < K; j++) out[r * K + j] = x[r * K + j]! * inv * w[j]!;
    }
    return out;
  };
  const p = packWeights(randomQuantized(N, K, 4, 64, 91));
  const w = uploadPackedWeight(gpu, p);
  const nw = randomX(1, K, 92).data;
  const nb = uploadBuffer(gpu, nw);
  const variants: [string, Record<string, unknown>, number][] = [
    ["default", {}, 1],
    ["fma", { dequant: "fma" }, 1],
    ["exact, staged, flat", { dequant: "exact", sharedX: true, reduce: "flat" }, 1],
    ["half", { dequant: "half", sharedX: true, batchedStage: true }, 1],
    ["dot4", { dequant: "dot4", sharedX: true }, 1],
    ["codesFirst, no prefetch", { dequant: "fma", codesFirst: true, prefetch: false }, 2],
    ["split-K", { splitK: 2, rowTiles: 1 }, 3],
    ["two row tiles", { rowTiles: 2, warps: 2 }, 4],
    // Every sub-team takes one step: its loads go out before the prologue, no loop.
    ["one step a sub-team", { unroll: 2, warps: 1, split: 4, prefetch: true }, 2],
    ["one step a sub-team, SwiGLU", { unroll: 2, warps: 1, split: 4, prefetch: true }, 1],
    ["swiglu", {}, 1],
  ];
  for (const [name, variant, m] of variants) {
    const swiglu = name.endsWith("swiglu") || name.endsWith("SwiGLU");
    const x = randomX(m, K, 93 + m).data;
    const h = rmsNorm(x, m, nw);
    const full = qmatmulReference({ dtype: "f32", shape: [m, K], data: h }, p).data;
    let want = full;
    if (swiglu) {
      want = new Float32Array(m * (N / 2));
      for (let r = 0; r < m; r++) {
        for (let j = 0; j < N / 2; j++) {
          const t = Math.floor(j / 32), l = j % 32;
          const gate = full[r * N + t * 64 + l]!, up = full[r * N + t * 64 + 32 + l]!;
          want[r * (N / 2) + j] = gate / (1 + Math.exp(-gate)) * up;
        }
      }
    }
    const xb = uploadBuffer(gpu, x), yb = storageBuffer(gpu, want.length * 4);
    const batch = new GpuBatch(gpu);
    encodeQmatmul(
      batch,
      w,
      { x: xb, input: "f32", m, y: yb, norm: { weight: nb, eps }, ...(swiglu ? { swiglu } : {}) },
      variant,
    );
    const { data } = await batch.submit([yb]);
    const e = relError(new Float32Array(data[0]!), want);
    // dot4 rounds x to 24 bits per chunk; the others only reorder f32 sums.
    assert.ok(e < (name === "dot4" ? 1e-5 : 2e-6), `${name}, ${m} rows: ${e}`);
    xb.destroy();
    yb.destroy();
  }
  // Act-order weights gather x first: no prologue.
  const act = uploadPackedWeight(gpu, packWeights(randomQuantized(N, K, 4, 64, 94, "actOrder")));
  const batch = new GpuBatch(gpu);
  const xb = uploadBuffer(gpu, new Float32Array(K)), yb = storageBuffer(gpu, N * 4);
  const scratch = storageBuffer(gpu, K * 4);
  assert.throws(
    () =>
      encodeQmatmul(batch, act, {
        x: xb,
        input: "f32",
        m: 1,
        y: yb,
        scratch,
        norm: { weight: nb, eps },
      }),
    /RMSNorm prologue/,
  );
  await batch.submit();
  for (const b of [xb, yb, scratch, nb]) b.destroy();
  destroyPackedWeight(w);
  destroyPackedWeight(act);
});

Deno.test("at one row the norm prologue takes the swept specialization, x·w staged in workgroup memory, where the few-row spec reads x from storage, and equals the reference", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  // 1B q/k/v: the few-row default, x read from storage every step.
  const N = 3072, K = 2048, eps = 1e-5;
  const p = packWeights(randomQuantized(N, K, 4, 128, 95));
  const plain = qmatmulProductSpec(gpu, p, 1, false, false, {});
  assert.equal(plain.sharedX, false);
  assert.equal(plain.split > 1, true);
  const normed = qmatmulProductSpec(gpu, p, 1, false, true, {});
  const swept = qmatmulSweptFewRowSpec(p, 1, qmatmulDeviceLimits(gpu));
  assert.deepEqual(normed, { ...qmatmulResolvedSpec(gpu, p, 1, swept), norm: true });
  assert.equal(normed.sharedX, true);
  assert.equal(normed.split, 1);
  // A variant's fields apply over the swept specialization.
  assert.equal(qmatmulProductSpec(gpu, p, 1, false, true, { warps: 4 }).warps, 4);
  // A variant that sets sharedX keeps it; two rows keep the spec as it is.
  assert.equal(qmatmulProductSpec(gpu, p, 1, false, true, { sharedX: false }).sharedX, false);
  assert.equal(
    qmatmulProductSpec(gpu, p, 2, false, true, {}).sharedX,
    qmatmulProductSpec(gpu, p, 2, false, false, {}).sharedX,
  );
  const w = uploadPackedWeight(gpu, p);
  const nw = randomX(1, K, 96).data, x = randomX(1, K, 97).data;
  let ss = 0;
  for (let j = 0; j < K; j++) ss += x[j]! ** 2;
  const inv = 1 / Math.sqrt(ss / K + eps);
  const h = x.map((v, j) => v * inv * nw[j]!);
  const want = qmatmulReference({ dtype: "f32", shape: [1, K], data: h }, p).data;
  const xb = uploadBuffer(gpu, x), yb = storageBuffer(gpu, N * 4), nb = uploadBuffer(gpu, nw);
  const batch = new GpuBatch(gpu);
  encodeQmatmul(batch, w, { x: xb, input: "f32", m: 1, y: yb, norm: { weight: nb, eps } });
  const { data } = await batch.submit([yb]);
  const e = relError(new Float32Array(data[0]!), want);
  assert.ok(e < 2e-6, `relative error ${e}`);
  for (const b of [xb, yb, nb]) b.destroy();
  destroyPackedWeight(w);
});
