import assert from "node:assert/strict";
import {
  upperCholeskyOfInverseGpu,
  upperCholeskyOfInverseReference,
} from "../../kernels/cholesky_kernel.ts";
import { CholeskyError } from "../../core/_dense.ts";
import { prng } from "../../core/prng.ts";
import { relError, testGpu } from "./_gpu.ts";

function randomSpd(n: number, seed: number): Float64Array {
  const rng = prng(seed);
  const k = n + 8;
  const x = new Float64Array(k * n);
  for (let i = 0; i < x.length; i++) x[i] = rng.normal();
  const h = new Float64Array(n * n);
  for (let t = 0; t < k; t++) {
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) h[i * n + j] = h[i * n + j]! + x[t * n + i]! * x[t * n + j]! / k;
    }
  }
  for (let i = 0; i < n; i++) h[i * n + i] = h[i * n + i]! + 0.1;
  return h;
}

Deno.test("GPU upper Cholesky factor of H⁻¹ matches the float64 reference across panel edges", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const n of [5, 64, 150, 333]) {
    const h = randomSpd(n, n);
    const { u } = await upperCholeskyOfInverseGpu(gpu, h, n);
    const ref = upperCholeskyOfInverseReference(h, n);
    const err = relError(u, ref);
    assert.ok(err < 2e-4, `n = ${n}: relative error ${err}`);
    // Below the diagonal U is exactly zero.
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) assert.equal(u[i * n + j], 0);
  }
});

Deno.test("GPU Cholesky reports an indefinite matrix as a CholeskyError", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const n = 70;
  const h = randomSpd(n, 3);
  h[69 * n + 69] = -5;
  await assert.rejects(() => upperCholeskyOfInverseGpu(gpu, h, n), CholeskyError);
});
