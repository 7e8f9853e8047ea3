/**
 * Library-internal kernels of the OBS solver: the upper Cholesky factor of
 * H⁻¹. Raw row-major arrays;
 * web-standard only.
 *
 * @module
 */

import { choleskyLowerInPlace, invertLower } from "../core/_dense.ts";

/**
 * The upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU, positive diagonal) for the
 * damped Hessian in processing order, H = P·xtx·Pᵀ with `diag` replacing the
 * diagonal and `damping` added to it, without forming H⁻¹: with J the
 * reversal matrix and JHJ = L·Lᵀ, U = J·L⁻¹·J. This costs one Cholesky and one
 * triangular inverse (the reference's cholesky → cholesky_inverse → cholesky
 * costs about twice as much).
 *
 * @param xtx Hessian [n, n] in the original column order (read only).
 * @param n Order.
 * @param perm Processing order: position i holds column perm[i].
 * @param diag Diagonal to use, by original column (dead columns already 1).
 * @param damping Added to the diagonal.
 * @returns U [n, n], upper triangular, in float32 (as the reference).
 * @throws {CholeskyError} if the damped H is not positive definite.
 */
export function upperCholeskyOfInverse(
  xtx: Float64Array,
  n: number,
  perm: Int32Array,
  diag: Float64Array,
  damping: number,
): Float32Array {
  const a = new Float64Array(n * n); // J·P·H·Pᵀ·J, lower triangle
  for (let i = 0; i < n; i++) {
    const ci = perm[n - 1 - i]!, src = ci * n, dst = i * n;
    for (let j = 0; j < i; j++) a[dst + j] = xtx[src + perm[n - 1 - j]!]!;
    a[dst + i] = diag[ci]! + damping;
  }
  choleskyLowerInPlace(a, n);
  const li = invertLower(a, n);
  const u = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    const src = (n - 1 - i) * n + (n - 1), dst = i * n;
    for (let j = i; j < n; j++) u[dst + j] = li[src - j]!;
  }
  return u;
}
