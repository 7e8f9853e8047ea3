import assert from "node:assert/strict";
import {
  checkQgemvSpec,
  encodeQgemv,
  qgemvApplies,
  qgemvSpec,
  type QgemvVariant,
  qgemvWgsl,
} from "../../kernels/qgemv_kernel.ts";
import { destroyPackedWeight, uploadPackedWeight } from "../../kernels/qmatmul_kernel.ts";
import { qmatmulReference } from "../../kernels/qmatmul_reference.ts";
import { GpuBatch, storageBuffer, uploadBuffer } from "../../kernels/backend.ts";
import type { PackedWeight } from "../../kernels/packed_layout.ts";
import { packWeights } from "../../quantizers/pack.ts";
import { randomQuantized } from "../quantizers/_random_quantized.ts";
import { randomX, relError, testGpu } from "./_gpu.ts";
import type { Gpu } from "../../kernels/backend.ts";

/** Relative error allowed against the float64 CPU reference (f32 sums over K ≤ 1024). */
const TOLERANCE = 1e-5;

/** y = x·Ŵᵀ (or y0 + x·Ŵᵀ) on the GPU through encodeQgemv. */
async function run(
  gpu: Gpu,
  p: PackedWeight,
  x: Float32Array,
  options: { accumulate?: boolean; swiglu?: boolean; y0?: Float32Array; variant?: QgemvVariant },
): Promise<Float32Array> {
  const w = uploadPackedWeight(gpu, p);
  const n = options.swiglu ? p.shape[0] / 2 : p.shape[0];
  const xb = uploadBuffer(gpu, x);
  const yb = options.y0 ? uploadBuffer(gpu, options.y0) : storageBuffer(gpu, n * 4);
  const batch = new GpuBatch(gpu);
  encodeQgemv(batch, w, {
    x: xb,
    y: yb,
    accumulate: options.accumulate === true,
    swiglu: options.swiglu === true,
  }, options.variant);
  const { data } = await batch.submit([yb]);
  for (const b of [xb, yb]) b.destroy();
  destroyPackedWeight(w);
  return new Float32Array(data[0]!).slice(0, n);
}

Deno.test("qgemv equals the packed layout's CPU reference at 2, 3, 4 and 8 bits, f16 and f32 scales, per-group and common zero points, for every work split", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  // 100 rows: the last row tile is partial, and no split's rows divide them.
  const splits: QgemvVariant[] = [
    {},
    { lanes: 4, rows: 1, teams: 8, unroll: 1 },
    { lanes: 8, rows: 2, teams: 4, unroll: 2 },
    { lanes: 16, rows: 4, teams: 2, unroll: 4 },
    { lanes: 8, rows: 8, teams: 4, unroll: 1 },
    { lanes: 32, rows: 2, teams: 8, unroll: 8 },
  ];
  let seed = 1;
  for (const bits of [2, 3, 4, 8]) {
    for (const scaleType of ["f16", "f32"] as const) {
      for (const symmetric of [false, true]) {
        const q = randomQuantized(100, 384, bits, 128, seed++, "regular", symmetric);
        const p = packWeights(q, { scaleType });
        assert.ok(qgemvApplies(p));
        assert.equal(p.zeros === null, symmetric);
        const x = randomX(1, 384, seed++).data;
        const want = qmatmulReference({ dtype: "f32", shape: [1, 384], data: x }, p).data;
        // Two splits per case (every split meets every width across the cases).
        const pick = [splits[seed % splits.length]!, splits[(seed + 3) % splits.length]!];
        for (const variant of pick) {
          const got = await run(gpu, p, x, { variant });
          const e = relError(got, want);
          assert.ok(
            e < TOLERANCE,
            `${bits} bits ${scaleType} ${symmetric ? "common" : "group"} zeros ${
              JSON.stringify(variant)
            }: ${e}`,
          );
        }
      }
    }
  }
});

Deno.test("qgemv adds into y when accumulating, and computes silu(gate)·up over alternating tiles", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const q = randomQuantized(128, 256, 4, 64, 77);
  const p = packWeights(q);
  const x = randomX(1, 256, 78).data;
  const y0 = randomX(1, 128, 79).data;
  const xt = { dtype: "f32" as const, shape: [1, 256], data: x };
  const want = qmatmulReference(xt, p, { dtype: "f32", shape: [1, 128], data: y0 }).data;
  for (const variant of [{}, { lanes: 8, rows: 4, teams: 4 }] as QgemvVariant[]) {
    const got = await run(gpu, p, x, { accumulate: true, y0, variant });
    assert.ok(relError(got, want) < TOLERANCE, `accumulate ${JSON.stringify(variant)}`);
  }
  // Tiles 2j hold gate rows, 2j + 1 the up rows of the same outputs: 64 outputs.
  const y = qmatmulReference(xt, p).data;
  const swiglu = new Float32Array(64);
  for (let j = 0; j < 64; j++) {
    const tile = Math.floor(j / 32), r = j % 32;
    const gate = y[tile * 64 + r]!, up = y[tile * 64 + 32 + r]!;
    swiglu[j] = gate / (1 + Math.exp(-gate)) * up;
  }
  for (
    const variant of [
      {},
      { lanes: 8, rows: 2, teams: 2 },
      { lanes: 16, rows: 4, teams: 4 },
      { lanes: 8, rows: 8, teams: 8 },
      { lanes: 4, rows: 1, teams: 2 },
    ] as QgemvVariant[]
  ) {
    const got = await run(gpu, p, x, { swiglu: true, variant });
    const e = relError(got, swiglu);
    assert.ok(e < TOLERANCE, `swiglu ${JSON.stringify(variant)}: ${e}`);
  }
});

Deno.test("qgemv's default split keeps about 256 workgroups at Llama-3.2-1B widths and gives each lane whole chunks", () => {
  const shapes: [number, number][] = [[3072, 2048], [2048, 2048], [16384, 2048], [2048, 8192]];
  for (const [n, k] of shapes) {
    // The split reads only the layout's sizes.
    const p: PackedWeight = {
      ...packWeights(randomQuantized(32, 32, 4, 32, 1)),
      shape: [n, k],
      groupStride: 128,
      paddedRows: n,
      paddedCols: k,
    };
    const spec = qgemvSpec(p);
    checkQgemvSpec(spec);
    const groups = n / (spec.rows * spec.teams);
    assert.ok(groups >= 256 || spec.rows * spec.teams === 8, `${n}×${k}: ${groups} workgroups`);
    assert.ok(spec.lanes * spec.unroll <= k / 32, `${n}×${k}: lanes·unroll past K`);
    assert.ok(spec.lanes * spec.teams <= 256);
    // The SwiGLU split is valid for the gate-up weight.
    checkQgemvSpec(qgemvSpec(p, { swiglu: true }));
  }
});

Deno.test("qgemv refuses invalid specializations, act-order weights and small buffers with errors naming them", async () => {
  const p = packWeights(randomQuantized(64, 256, 4, 64, 5));
  const spec = qgemvSpec(p);
  assert.throws(() => qgemvWgsl({ ...spec, bits: 5 }), /'bits' must be 2, 3, 4 or 8/);
  assert.throws(() => qgemvWgsl({ ...spec, lanes: 128 }), /'lanes'/);
  assert.throws(() => qgemvWgsl({ ...spec, lanes: 4, rows: 8 }), /'rows'/);
  assert.throws(() => qgemvWgsl({ ...spec, lanes: 64, teams: 8 }), /'teams'/);
  assert.throws(() => qgemvWgsl({ ...spec, unroll: 3 }), /'unroll'/);
  assert.throws(() => qgemvWgsl({ ...spec, groupChunks: 3 }), /'groupChunks'/);
  assert.throws(() => qgemvWgsl({ ...spec, swiglu: true, teams: 3 }), /'swiglu'/);
  assert.throws(() => qgemvWgsl({ ...spec, swiglu: true, accumulate: true }), /'swiglu'/);
  const act = packWeights(randomQuantized(64, 256, 4, 64, 6, "actOrder"));
  assert.equal(qgemvApplies(act), false);
  const gpu = await testGpu();
  if (!gpu) return;
  const w = uploadPackedWeight(gpu, act), w2 = uploadPackedWeight(gpu, p);
  const batch = new GpuBatch(gpu);
  const x = uploadBuffer(gpu, new Float32Array(256)), y = storageBuffer(gpu, 64 * 4);
  assert.throws(() => encodeQgemv(batch, w, { x, y }), /column map/);
  const small = storageBuffer(gpu, 16);
  assert.throws(() => encodeQgemv(batch, w2, { x, y: small }), /smaller than/);
  const odd = packWeights(randomQuantized(96, 256, 4, 64, 7));
  const w3 = uploadPackedWeight(gpu, odd);
  assert.throws(() => encodeQgemv(batch, w3, { x, y, swiglu: true }), /multiple of 64/);
  await batch.submit();
  for (const b of [x, y, small]) b.destroy();
  for (const ww of [w, w2, w3]) destroyPackedWeight(ww);
});
