/**
 * Float64 kernels at n = 512 and 1024 against a naive i-k-j matmul measured in
 * the same run. GFLOP/s = flops / time: 2n³ for matmul and gram (gram computes
 * only one triangle, so its figure is an effective rate), n³/3 for Cholesky,
 * 2n³/3 for the inverse from a Cholesky factor.
 *
 * Run: `deno bench -A tests/core/linalg_bench.ts`
 *
 * @module
 */

import {
  choleskyLowerInPlace,
  gemmSubInPlace,
  gramRaw,
  inverseFromCholesky,
  matmulRaw,
} from "../../core/_dense.ts";
import { prng, randn } from "../../core/prng.ts";

/** The baseline: a plain i-k-j triple loop over row-major arrays. */
function naiveMatmul(a: Float64Array, b: Float64Array, n: number): Float64Array {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const ci = i * n;
    for (let p = 0; p < n; p++) {
      const av = a[i * n + p]!;
      const bp = p * n;
      for (let j = 0; j < n; j++) c[ci + j] = c[ci + j]! + av * b[bp + j]!;
    }
  }
  return c;
}

/** A Hessian-like SPD matrix: XᵀX/rows + 1e-2·I with X [2n, n] standard normal. */
function spd(n: number, seed: number): Float64Array {
  const rows = 2 * n;
  const h = gramRaw(randn(rows * n, prng(seed)), rows, n);
  for (let i = 0; i < n * n; i++) h[i] = h[i]! / rows;
  for (let i = 0; i < n; i++) h[i * n + i] = h[i * n + i]! + 1e-2;
  return h;
}

for (const n of [512, 1024]) {
  const a = randn(n * n, prng(n));
  const b = randn(n * n, prng(n + 1));
  const h = spd(n, n + 2);
  const l = h.slice();
  choleskyLowerInPlace(l, n);
  const group = `n=${n}`;
  Deno.bench(`naive i-k-j matmul n=${n}`, { group, baseline: true }, () => {
    naiveMatmul(a, b, n);
  });
  Deno.bench(`matmulRaw n=${n}`, { group }, () => {
    matmulRaw(a, b, n, n, n);
  });
  Deno.bench(`gramRaw [n, n] n=${n}`, { group }, () => {
    gramRaw(a, n, n);
  });
  Deno.bench(`choleskyLowerInPlace n=${n}`, { group }, () => {
    choleskyLowerInPlace(h.slice(), n);
  });
  Deno.bench(`inverseFromCholesky n=${n}`, { group }, () => {
    inverseFromCholesky(l, n);
  });
  const c = new Float64Array(n * n);
  Deno.bench(`gemmSubInPlace k=128 (GPTQ lazy batch) n=${n}`, { group }, () => {
    // W[:, 128:] -= E[:, 0:128]·Hinv[0:128, 128:] on a row-major W [n, n]
    gemmSubInPlace(c, a, b, n, 128, n - 128, 128, n, 0, n, 128, n);
  });
}
