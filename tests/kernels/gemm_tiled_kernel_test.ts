import assert from "node:assert/strict";
import { type Gpu, GpuBatch, uploadBuffer } from "../../kernels/backend.ts";
import type { GemmShape } from "../../kernels/gemm_kernel.ts";
import { encodeGemmTiled, gemmTiledReference } from "../../kernels/gemm_tiled_kernel.ts";
import { type GemmTiledSpec, gemmTiledSpec } from "../../kernels/gemm_tiled_wgsl.ts";
import { prng } from "../../core/prng.ts";
import { relError, testGpu } from "./_gpu.ts";

function randomArray(n: number, seed: number, f16: boolean): Float32Array | Float16Array {
  const rng = prng(seed);
  const out = Float32Array.from({ length: n }, () => rng.normal());
  return f16 ? Float16Array.from(out) : out;
}

const up4 = (v: number) => Math.ceil(v / 4) * 4;

/**
 * Runs one product on the GPU and returns its relative error against the
 * float64 reference (computed from the values as stored, f16 included).
 * Leading dimensions and offsets are padded (multiples of 4 with `vec4`,
 * odd without), and C starts random, so that untouched elements are checked.
 */
async function productError(
  gpu: Gpu,
  spec: GemmTiledSpec,
  m: number,
  n: number,
  k: number,
  seed: number,
  options: { sameX?: boolean; fallback?: boolean } = {},
): Promise<number> {
  const f16 = spec.inputs === "f16";
  const pad = (v: number) => spec.vec4 ? up4(v) + 4 : v + 3;
  const off = spec.vec4 ? 4 : 1;
  const lda = pad(spec.transA ? m : k), ldb = pad(spec.transB ? k : n), ldc = pad(n);
  const a = randomArray(lda * (spec.transA ? k : m) + off, seed, f16);
  // With `sameX`, B is A's buffer (the Hessian XᵀX binds X twice).
  const b = options.sameX ? a : randomArray(ldb * (spec.transB ? n : k) + off, seed + 1, f16);
  const c = randomArray(ldc * m + off, seed + 2, false) as Float32Array;
  const shape: GemmShape = {
    m,
    n,
    k,
    lda,
    ldb: options.sameX ? lda : ldb,
    ldc,
    offA: off,
    offB: off,
    offC: off,
    alpha: spec.accumulate ? -0.5 : 1.5,
    beta: 2,
  };
  const batch = new GpuBatch(gpu);
  const cb = uploadBuffer(gpu, c), ab = uploadBuffer(gpu, a);
  const bb = options.sameX ? ab : uploadBuffer(gpu, b);
  encodeGemmTiled(batch, spec, { c: cb, a: ab, b: bb }, shape, {
    fallback: options.fallback ?? false,
  });
  const { data } = await batch.submit([cb]);
  for (const buf of new Set([ab, bb, cb])) buf.destroy();
  const expected = Float64Array.from(c);
  gemmTiledReference(spec, expected, a, b, shape);
  return relError(new Float32Array(data[0]!), expected);
}

// Small tiles, so that the software adapter compiles them quickly; together they cover both
// buffering schemes, vec4 and scalar loads of every layout, tail slices (k = 37 is no multiple
// of bk), ragged load counts (fewer vectors per slice than threads), the rolled k loop, the warp
// arrangement of threads, every padding and 4/8/16-row thread tiles.
const SMALL: Partial<GemmTiledSpec>[] = [
  { bm: 32, bn: 32, bk: 8, tm: 4, tn: 4 },
  { bm: 32, bn: 32, bk: 4, tm: 4, tn: 4, pad: 2 }, // 32 vectors of A per slice, 64 threads
  { bm: 32, bn: 64, bk: 4, tm: 4, tn: 8, vec4: false, doubleBuffer: false, pad: 0 },
  { bm: 64, bn: 32, bk: 16, tm: 16, tn: 4, unrollK: false, warpCols: 8 },
  { bm: 64, bn: 64, bk: 8, tm: 8, tn: 16, vec4: false, warpCols: 4, doubleBuffer: false },
];

Deno.test("gemmTiled matches its float64 reference for every layout, tile and ragged size, from f32 and f16", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  let seed = 1, i = 0;
  for (const fields of SMALL) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const inputs = gpu.f16 && i % 2 === 1 ? "f16" : "f32";
        const spec = gemmTiledSpec({ ...fields, transA, transB, accumulate: i % 3 === 0, inputs });
        i++;
        const err = await productError(gpu, spec, 70, 45, 37, seed += 3);
        assert(err < 1e-5, `${JSON.stringify(spec)}: relative error ${err}`);
      }
    }
  }
});

Deno.test("gemmTiled's large tiles compute the forward x·Wᵀ and the lower-triangle Hessian XᵀX within 1e-5", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const cases: [Partial<GemmTiledSpec>, number, number, number][] = [
    // The default 128×128 tiles of 8×8 (256 threads): 2×2 tiles, ragged on every side.
    [{ transB: true, pad: 0 }, 150, 136, 40], // (padded, 33 KB: over the software adapter's 32)
    // 128×256 of 8×16 and 256×128 of 16×8, slices of 8.
    [{ transB: true, bn: 256, tn: 16, bk: 8, inputs: "f16" }, 130, 260, 20],
    [{ transB: true, bm: 256, tm: 16, bk: 8 }, 260, 130, 20],
  ];
  for (const [fields, m, n, k] of cases) {
    if (fields.inputs === "f16" && !gpu.f16) continue;
    const spec = gemmTiledSpec(fields);
    const err = await productError(gpu, spec, m, n, k, 7);
    assert(err < 1e-5, `${JSON.stringify(fields)}: relative error ${err}`);
  }
  // XᵀX of X [50, 260] with X bound twice: 3×3 tiles of 128, the 3 above the diagonal kept.
  for (const inputs of gpu.f16 ? ["f32", "f16"] as const : ["f32"] as const) {
    const spec = gemmTiledSpec({ transA: true, accumulate: true, lowerC: true, inputs });
    const err = await productError(gpu, spec, 260, 260, 50, 9, { sameX: true });
    assert(err < 1e-5, `Hessian ${inputs}: relative error ${err}`);
  }
});

Deno.test("gemmTiled refuses vec4 on unaligned operands, and with fallback records the existing kernel", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const spec = gemmTiledSpec({ transB: true, bm: 32, bn: 32, tm: 4, tn: 4, bk: 8 });
  const batch = new GpuBatch(gpu);
  const buf = uploadBuffer(gpu, new Float32Array(64));
  const shape = { m: 4, n: 4, k: 3, lda: 3, ldb: 4, ldc: 4 };
  assert.throws(
    () => encodeGemmTiled(batch, spec, { c: buf, a: buf, b: buf }, shape),
    (e: unknown) => e instanceof RangeError && /'lda' must be a multiple of 4/.test(e.message),
  );
  buf.destroy();
  // The same unaligned layout (odd leading dimensions) through the fallback.
  const err = await productError(gpu, { ...spec, vec4: false }, 70, 45, 37, 11, {
    fallback: true,
  });
  assert(err < 1e-5, `relative error ${err}`);
  const lowered = { ...spec, vec4: true };
  const odd = await productErrorUnaligned(gpu, lowered);
  assert(odd < 1e-5, `fallback relative error ${odd}`);
});

/** A vec4 spec on odd leading dimensions with `fallback`: runs the existing kernel. */
async function productErrorUnaligned(gpu: Gpu, spec: GemmTiledSpec): Promise<number> {
  const m = 40, n = 33, k = 21, lda = k + 1, ldb = k + 3, ldc = n;
  const a = randomArray(lda * m, 21, false), b = randomArray(ldb * n, 22, false);
  const c = new Float32Array(ldc * m);
  const shape = { m, n, k, lda, ldb, ldc };
  const batch = new GpuBatch(gpu);
  const cb = uploadBuffer(gpu, c);
  encodeGemmTiled(batch, spec, { c: cb, a: uploadBuffer(gpu, a), b: uploadBuffer(gpu, b) }, shape, {
    fallback: true,
  });
  const { data } = await batch.submit([cb]);
  const expected = Float64Array.from(c);
  gemmTiledReference(spec, expected, a, b, shape);
  return relError(new Float32Array(data[0]!), expected);
}
