/**
 * Library-internal dense float64 kernels on raw row-major arrays. The public,
 * validated API over tensors is `linalg.ts`; solvers call these directly to
 * avoid copies. Web-standard only.
 *
 * @module
 */

/** A matrix is not positive definite: `pivot` is the failing diagonal index. */
export class CholeskyError extends Error {
  /** Index of the first non-positive pivot. */
  readonly pivot: number;
  /**
   * @param pivot Index of the failing pivot.
   * @param value The pivot's value before the square root.
   */
  constructor(pivot: number, value: number) {
    super(`Cholesky failed: the matrix is not positive definite (pivot ${pivot} is ${value})`);
    this.name = "CholeskyError";
    this.pivot = pivot;
  }
}

/**
 * Overwrites the lower triangle of `a` [n, n] with its Cholesky factor L
 * (A = L·Lᵀ) and zeroes the strict upper triangle.
 *
 * @param a Symmetric positive-definite matrix, row-major; overwritten.
 * @param n Order.
 * @throws {CholeskyError} at the first non-positive pivot.
 */
export function choleskyLowerInPlace(a: Float64Array, n: number): void {
  for (let j = 0; j < n; j++) {
    const rj = j * n;
    let d = a[rj + j]!;
    for (let k = 0; k < j; k++) d -= a[rj + k]! * a[rj + k]!;
    if (!(d > 0) || !Number.isFinite(d)) throw new CholeskyError(j, d);
    const ljj = Math.sqrt(d);
    a[rj + j] = ljj;
    const inv = 1 / ljj;
    for (let i = j + 1; i < n; i++) {
      const ri = i * n;
      let s = a[ri + j]!;
      for (let k = 0; k < j; k++) s -= a[ri + k]! * a[rj + k]!;
      a[ri + j] = s * inv;
    }
    for (let k = j + 1; k < n; k++) a[rj + k] = 0;
  }
}

/**
 * Inverse of a lower-triangular matrix, into a fresh array.
 *
 * @param l Lower-triangular [n, n].
 * @param n Order.
 * @returns L⁻¹ (lower triangular).
 */
export function invertLower(l: Float64Array, n: number): Float64Array {
  const x = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    x[j * n + j] = 1 / l[j * n + j]!;
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      const ri = i * n;
      for (let k = j; k < i; k++) s += l[ri + k]! * x[k * n + j]!;
      x[ri + j] = -s / l[ri + i]!;
    }
  }
  return x;
}

/**
 * A⁻¹ from the lower Cholesky factor L of A: A⁻¹ = L⁻ᵀ·L⁻¹, symmetric.
 *
 * @param l Lower factor [n, n].
 * @param n Order.
 * @returns A⁻¹ [n, n], full (both triangles).
 */
export function inverseFromCholesky(l: Float64Array, n: number): Float64Array {
  const li = invertLower(l, n);
  const out = new Float64Array(n * n);
  // out[i][j] = sum_k li[k][i] * li[k][j], k >= max(i, j)
  for (let k = 0; k < n; k++) {
    const rk = k * n;
    for (let i = 0; i <= k; i++) {
      const a = li[rk + i]!;
      if (a === 0) continue;
      const ri = i * n;
      for (let j = 0; j <= i; j++) out[ri + j] = out[ri + j]! + a * li[rk + j]!;
    }
  }
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < i; j++) out[j * n + i] = out[i * n + j]!;
  }
  return out;
}

/**
 * C = A·B for row-major A [m, k] and B [k, n] (i-k-j order, blocked over k).
 *
 * @param a Left factor.
 * @param b Right factor.
 * @param m Rows of A.
 * @param k Columns of A (rows of B).
 * @param n Columns of B.
 * @returns C [m, n].
 */
export function matmulRaw(
  a: Float64Array,
  b: Float64Array,
  m: number,
  k: number,
  n: number,
): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const ci = i * n;
    for (let p = 0; p < k; p++) {
      const av = a[i * k + p]!;
      if (av === 0) continue;
      const bp = p * n;
      for (let j = 0; j < n; j++) c[ci + j] = c[ci + j]! + av * b[bp + j]!;
    }
  }
  return c;
}

/**
 * G = XᵀX for row-major X [rows, cols] (symmetric; both triangles filled).
 *
 * @param x Input.
 * @param rows Rows of X.
 * @param cols Columns of X.
 * @returns G [cols, cols].
 */
export function gramRaw(x: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const g = new Float64Array(cols * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let i = 0; i < cols; i++) {
      const xi = x[o + i]!;
      if (xi === 0) continue;
      const gi = i * cols;
      for (let j = i; j < cols; j++) g[gi + j] = g[gi + j]! + xi * x[o + j]!;
    }
  }
  for (let i = 0; i < cols; i++) {
    for (let j = i + 1; j < cols; j++) g[j * cols + i] = g[i * cols + j]!;
  }
  return g;
}
