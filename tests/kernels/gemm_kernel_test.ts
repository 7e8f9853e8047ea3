import assert from "node:assert/strict";
import { GpuBatch, uploadBuffer } from "../../kernels/backend.ts";
import { encodeGemm, gemmReference, type GemmSpec, gemmSpec } from "../../kernels/gemm_kernel.ts";
import { prng } from "../../core/prng.ts";
import { relError, testGpu } from "./_gpu.ts";

function randomArray(n: number, seed: number): Float32Array {
  const rng = prng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal();
  return out;
}

const base: GemmSpec = gemmSpec({ tile: "small" });

Deno.test("gemm kernel matches its float64 reference for every layout, tile and ragged size", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  let seed = 1;
  for (const tile of ["small", "large"] as const) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        for (const accumulate of [false, true]) {
          // The large tile compiles slowly on a software adapter: two of its variants suffice.
          if (tile === "large" && (transA === transB || accumulate !== transA)) continue;
          const spec = { ...base, tile, transA, transB, accumulate };
          const m = 70, n = 45, k = 37;
          const lda = (transA ? m : k) + 3, ldb = (transB ? k : n) + 2, ldc = n + 5;
          const a = randomArray(lda * (transA ? k : m) + 4, seed++);
          const b = randomArray(ldb * (transB ? n : k) + 1, seed++);
          const c = randomArray(ldc * m + 7, seed++);
          const shape = { m, n, k, lda, ldb, ldc, offA: 4, offB: 1, offC: 7, alpha: -0.5, beta: 2 };
          const batch = new GpuBatch(gpu);
          const cb = uploadBuffer(gpu, c);
          encodeGemm(
            batch,
            spec,
            { c: cb, a: uploadBuffer(gpu, a), b: uploadBuffer(gpu, b) },
            shape,
          );
          const { data } = await batch.submit([cb]);
          const expected = Float64Array.from(c);
          gemmReference(spec, expected, a, b, shape);
          const err = relError(new Float32Array(data[0]!), expected);
          assert(err < 1e-5, `${JSON.stringify(spec)}: relative error ${err}`);
        }
      }
    }
  }
});

Deno.test("gemm kernel reads operands aliased in C and skips tiles above the diagonal", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  // C[70:, 70:] (lower) −= C[70:, 0:40] · C[70:, 0:40]ᵀ within one 200 × 200 buffer.
  const n = 200;
  const c = randomArray(n * n, 42);
  const spec = { ...base, aInC: true, bInC: true, transB: true, accumulate: true, lowerC: true };
  const shape = {
    m: 130,
    n: 130,
    k: 40,
    lda: n,
    ldb: n,
    ldc: n,
    offA: 70 * n,
    offB: 70 * n,
    offC: 70 * n + 70,
    alpha: -1,
    beta: 1,
  };
  const batch = new GpuBatch(gpu);
  const cb = uploadBuffer(gpu, c);
  encodeGemm(batch, spec, { c: cb }, shape);
  const { data } = await batch.submit([cb]);
  const expected = Float64Array.from(c);
  gemmReference(spec, expected, undefined, undefined, shape);
  const err = relError(new Float32Array(data[0]!), expected);
  assert(err < 1e-5, `relative error ${err}`);
});
