/**
 * Library-internal kernels of the OBS solver: the upper Cholesky factor of
 * H⁻¹ and the two rank-k updates of the column loop. Raw row-major arrays;
 * web-standard only.
 *
 * @module
 */

import { choleskyLowerInPlace } from "../core/_dense.ts";

/**
 * Inverse of a lower-triangular L [n, n] by rows (row i of L⁻¹ is a
 * combination of the rows above it), so every inner loop is contiguous.
 *
 * @param l Lower factor, row-major (upper triangle ignored).
 * @param n Order.
 * @returns L⁻¹, lower triangular, fresh.
 */
function invertLowerByRows(l: Float64Array, n: number): Float64Array {
  const x = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    // x_i = (e_i − Σ_{k<i} L[i,k]·x_k) / L[i,i]; x_k is zero past column k.
    for (let k = 0; k < i; k++) {
      const a = l[ri + k]!;
      if (a === 0) continue;
      const rk = k * n;
      for (let j = 0; j <= k; j++) x[ri + j] = x[ri + j]! - a * x[rk + j]!;
    }
    const inv = 1 / l[ri + i]!;
    for (let j = 0; j < i; j++) x[ri + j] = x[ri + j]! * inv;
    x[ri + i] = inv;
  }
  return x;
}

/**
 * The upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU, positive diagonal) without
 * forming H⁻¹: with J the reversal matrix and JHJ = L·Lᵀ, U = J·L⁻¹·J. This
 * costs one Cholesky and one triangular inverse (the reference's
 * cholesky → cholesky_inverse → cholesky costs twice as much).
 *
 * @param h Damped Hessian [n, n] (read only).
 * @param n Order.
 * @returns U [n, n], upper triangular.
 * @throws {CholeskyError} if H is not positive definite.
 */
export function upperCholeskyOfInverse(h: Float64Array, n: number): Float64Array {
  const a = new Float64Array(n * n); // J·H·J
  for (let i = 0; i < n; i++) {
    const src = (n - 1 - i) * n + (n - 1);
    const dst = i * n;
    for (let j = 0; j <= i; j++) a[dst + j] = h[src - j]!;
  }
  choleskyLowerInPlace(a, n);
  const li = invertLowerByRows(a, n);
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const src = (n - 1 - i) * n + (n - 1);
    const dst = i * n;
    for (let j = i; j < n; j++) u[dst + j] = li[src - j]!;
  }
  return u;
}

/**
 * The lazy batch update of GPTQ: W[:, i2:] −= E · U[i1:i2, i2:]. The product
 * is accumulated in float64 and subtracted once (one float32 rounding per
 * element, as a matmul followed by a subtraction).
 *
 * @param w Weights [rows, n] (float32, updated in place).
 * @param rows Rows of W.
 * @param n Columns of W and order of U.
 * @param i1 First column of the finished block.
 * @param i2 One past its last column.
 * @param e Scaled errors of the block, row-major [rows, i2 − i1].
 * @param u Upper factor [n, n].
 */
export function lazyBatchUpdate(
  w: Float32Array,
  rows: number,
  n: number,
  i1: number,
  i2: number,
  e: Float64Array,
  u: Float64Array,
): void {
  const b = i2 - i1;
  const TILE = 256;
  const acc0 = new Float64Array(TILE), acc1 = new Float64Array(TILE);
  for (let j0 = i2; j0 < n; j0 += TILE) {
    const width = Math.min(n, j0 + TILE) - j0;
    for (let r = 0; r < rows; r += 2) {
      const two = r + 1 < rows;
      const e0 = r * b, e1 = two ? e0 + b : e0;
      acc0.fill(0, 0, width);
      acc1.fill(0, 0, width);
      let k = 0;
      for (; k + 3 < b; k += 4) {
        const a0 = e[e0 + k]!, a1 = e[e0 + k + 1]!, a2 = e[e0 + k + 2]!, a3 = e[e0 + k + 3]!;
        const c0 = e[e1 + k]!, c1 = e[e1 + k + 1]!, c2 = e[e1 + k + 2]!, c3 = e[e1 + k + 3]!;
        const u0 = (i1 + k) * n + j0, u1 = u0 + n, u2 = u1 + n, u3 = u2 + n;
        for (let j = 0; j < width; j++) {
          const x0 = u[u0 + j]!, x1 = u[u1 + j]!, x2 = u[u2 + j]!, x3 = u[u3 + j]!;
          acc0[j] = acc0[j]! + (a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3);
          acc1[j] = acc1[j]! + (c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3);
        }
      }
      for (; k < b; k++) {
        const a0 = e[e0 + k]!, c0 = e[e1 + k]!, u0 = (i1 + k) * n + j0;
        for (let j = 0; j < width; j++) {
          const x0 = u[u0 + j]!;
          acc0[j] = acc0[j]! + a0 * x0;
          acc1[j] = acc1[j]! + c0 * x0;
        }
      }
      const w0 = r * n + j0;
      for (let j = 0; j < width; j++) w[w0 + j] = w[w0 + j]! - acc0[j]!;
      if (two) {
        const w1 = w0 + n;
        for (let j = 0; j < width; j++) w[w1 + j] = w[w1 + j]! - acc1[j]!;
      }
    }
  }
}
