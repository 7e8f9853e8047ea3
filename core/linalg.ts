/**
 * Float64 linear algebra over tensors: products, Cholesky, triangular solves,
 * symmetric eigendecomposition and thin SVD. Inputs of any numeric dtype are
 * read as float64 and never mutated; results are fresh `"f64"` tensors.
 * Web-standard only.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cholesky, eigh, fromArray, matmul, svd, transpose } from "./mod.ts";
 * const a = fromArray([[4, 2], [2, 3]], { dtype: "f64" });
 * const l = cholesky(a); // lower factor
 * const llt = matmul(l, transpose(l)); // L·Lᵀ = A
 * assert(Math.abs(llt.data[1]! - 2) < 1e-12);
 * const { values } = eigh(a); // ascending: (7 ∓ √17) / 2
 * assert(Math.abs(values.data[0]! - (7 - Math.sqrt(17)) / 2) < 1e-12);
 * const { s } = svd(a); // for an SPD matrix, the eigenvalues in descending order
 * assert(Math.abs(s.data[0]! - values.data[1]!) < 1e-12);
 * ```
 *
 * @module
 */

import {
  choleskyLowerInPlace,
  gemmInPlace,
  gramRaw,
  inverseFromCholesky as inverseFromLowerFactor,
  matmulRaw,
} from "./_dense.ts";
import { asFloat64 } from "./convert.ts";
import { type Tensor, tensor, transpose } from "./tensor.ts";
import { eighRaw, svdRaw } from "./_decompositions.ts";

function matrixDims(t: Tensor, name: string, fn: string): [number, number] {
  if (t === null || typeof t !== "object" || !("shape" in t) || !("data" in t)) {
    throw new TypeError(`Cannot compute ${fn}() as '${name}' is not a tensor`);
  }
  if (t.shape.length !== 2) {
    throw new RangeError(
      `Cannot compute ${fn}() as '${name}' must be 2-D: current shape is [${t.shape}]`,
    );
  }
  return [t.shape[0]!, t.shape[1]!];
}

function squareOrder(t: Tensor, name: string, fn: string): number {
  const [r, c] = matrixDims(t, name, fn);
  if (r !== c) {
    throw new RangeError(
      `Cannot compute ${fn}() as '${name}' must be square: current shape is [${t.shape}]`,
    );
  }
  return r;
}

function checkFinite(x: Float64Array, name: string, fn: string): void {
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i]!)) {
      throw new RangeError(
        `Cannot compute ${fn}() as '${name}' must be finite: element ${i} is ${x[i]}`,
      );
    }
  }
}

/**
 * Matrix product A·B in float64.
 *
 * @param a Left factor [m, k].
 * @param b Right factor [k, n].
 * @returns A·B [m, n].
 * @throws {RangeError} when the operands are not 2-D or their inner dimensions differ.
 */
export function matmul(a: Tensor, b: Tensor): Tensor<"f64"> {
  const [m, k] = matrixDims(a, "a", "matmul");
  const [k2, n] = matrixDims(b, "b", "matmul");
  if (k !== k2) {
    throw new RangeError(
      `Cannot compute matmul() as the shapes [${a.shape}] and [${b.shape}] do not chain (${k} ≠ ${k2})`,
    );
  }
  return tensor("f64", [m, n], matmulRaw(asFloat64(a), asFloat64(b), m, k, n));
}

/**
 * Gram matrix XᵀX in float64 (exactly symmetric). For a layer's inputs X
 * [tokens, features] this is the Hessian proxy without GPTQ's factor 2.
 *
 * @param x Input [rows, cols].
 * @returns XᵀX [cols, cols].
 * @throws {RangeError} when `x` is not 2-D.
 */
export function gram(x: Tensor): Tensor<"f64"> {
  const [rows, cols] = matrixDims(x, "x", "gram");
  const src = x.dtype === "f64" || x.dtype === "f32"
    ? x.data as Float64Array | Float32Array
    : asFloat64(x);
  return tensor("f64", [cols, cols], gramRaw(src, rows, cols));
}

/** Options for {@linkcode cholesky}. */
export interface CholeskyOptions {
  /** Return the upper factor U = Lᵀ (A = UᵀU) instead of the lower one. @default false */
  upper?: boolean;
}

/**
 * Cholesky factor of a symmetric positive-definite matrix: L with A = L·Lᵀ
 * (lower, the default) or U with A = UᵀU. Only the lower triangle of A is read.
 *
 * @param a Symmetric positive-definite [n, n].
 * @param options `upper`.
 * @returns The triangular factor [n, n] (the other triangle is zero).
 * @throws {CholeskyError} carrying the failing pivot when A is not positive
 * definite (retry with more damping).
 * @throws {RangeError} when `a` is not square.
 */
export function cholesky(a: Tensor, options: CholeskyOptions = {}): Tensor<"f64"> {
  const { upper = false } = options;
  if (typeof upper !== "boolean") {
    throw new TypeError(
      `Cannot compute cholesky() as 'upper' must be a boolean: current value is ${upper}`,
    );
  }
  const n = squareOrder(a, "a", "cholesky");
  const l = Float64Array.from(asFloat64(a));
  choleskyLowerInPlace(l, n);
  const factor = tensor("f64", [n, n], l);
  return upper ? transpose(factor) : factor;
}

/**
 * Inverse of a symmetric positive-definite matrix through its Cholesky factor:
 * A⁻¹ = L⁻ᵀ·L⁻¹ (exactly symmetric).
 *
 * @param a Symmetric positive-definite [n, n] (only its lower triangle is read).
 * @returns A⁻¹ [n, n].
 * @throws {CholeskyError} when A is not positive definite.
 * @throws {RangeError} when `a` is not square.
 */
export function choleskyInverse(a: Tensor): Tensor<"f64"> {
  const n = squareOrder(a, "a", "choleskyInverse");
  const l = Float64Array.from(asFloat64(a));
  choleskyLowerInPlace(l, n);
  return tensor("f64", [n, n], inverseFromLowerFactor(l, n));
}

/** Rows per block of {@linkcode solveTriangular}. */
const SOLVE_BLOCK = 64;

/**
 * Solves the diagonal block [i0, i1) of M·X = B in place by substitution, where
 * M = T or Tᵀ (`transpose`) is lower (`forward`) or upper triangular; only
 * entries of T inside the block are read.
 */
function substituteBlock(
  l: Float64Array,
  x: Float64Array,
  n: number,
  k: number,
  i0: number,
  i1: number,
  forward: boolean,
  transpose: boolean,
): void {
  const count = i1 - i0;
  if (!transpose) {
    // X[i] = (B[i] − Σ_p T[i, p]·X[p]) / T[i, i]: row i of T is contiguous
    for (let s = 0; s < count; s++) {
      const i = forward ? i0 + s : i1 - 1 - s;
      const xi = i * k, ti = i * n;
      const p0 = forward ? i0 : i + 1, p1 = forward ? i : i1;
      for (let p = p0; p < p1; p++) {
        const f = l[ti + p]!;
        if (f === 0) continue;
        const xp = p * k;
        for (let j = 0; j < k; j++) x[xi + j] = x[xi + j]! - f * x[xp + j]!;
      }
      const inv = 1 / l[ti + i]!;
      for (let j = 0; j < k; j++) x[xi + j] = x[xi + j]! * inv;
    }
  } else {
    // Tᵀ: once X[i] is final, subtract T[i, p]·X[i] from the rows p it feeds
    for (let s = 0; s < count; s++) {
      const i = forward ? i0 + s : i1 - 1 - s;
      const xi = i * k, ti = i * n;
      const inv = 1 / l[ti + i]!;
      for (let j = 0; j < k; j++) x[xi + j] = x[xi + j]! * inv;
      const p0 = forward ? i + 1 : i0, p1 = forward ? i1 : i;
      for (let p = p0; p < p1; p++) {
        const f = l[ti + p]!;
        if (f === 0) continue;
        const xp = p * k;
        for (let j = 0; j < k; j++) x[xp + j] = x[xp + j]! - f * x[xi + j]!;
      }
    }
  }
}

/** Options for {@linkcode solveTriangular}. */
export interface SolveTriangularOptions {
  /** Whether `t` is lower triangular (else upper); the other triangle is ignored. @default true */
  lower?: boolean;
  /** Solve Tᵀ·X = B instead of T·X = B. @default false */
  transpose?: boolean;
}

/**
 * Solves T·X = B (or Tᵀ·X = B) for a triangular T: blocked substitution whose
 * off-diagonal work is a matrix product.
 *
 * @param t Triangular [n, n]; only the triangle named by `lower` is read.
 * @param b Right-hand side [n] or [n, k].
 * @param options `lower`, `transpose`.
 * @returns X with the shape of `b`.
 * @throws {RangeError} on mismatched shapes or a zero diagonal element (singular T).
 */
export function solveTriangular(
  t: Tensor,
  b: Tensor,
  options: SolveTriangularOptions = {},
): Tensor<"f64"> {
  const { lower = true, transpose = false } = options;
  for (const [name, v] of [["lower", lower], ["transpose", transpose]] as const) {
    if (typeof v !== "boolean") {
      throw new TypeError(
        `Cannot compute solveTriangular() as '${name}' must be a boolean: current value is ${v}`,
      );
    }
  }
  const n = squareOrder(t, "t", "solveTriangular");
  if (b === null || typeof b !== "object" || !("shape" in b)) {
    throw new TypeError(`Cannot compute solveTriangular() as 'b' is not a tensor`);
  }
  if (!(b.shape.length === 1 || b.shape.length === 2) || b.shape[0] !== n) {
    throw new RangeError(
      `Cannot compute solveTriangular() as 'b' must have shape [${n}] or [${n}, k] to match ` +
        `'t' [${t.shape}]: current shape is [${b.shape}]`,
    );
  }
  const k = b.shape.length === 2 ? b.shape[1]! : 1;
  const l = asFloat64(t);
  for (let i = 0; i < n; i++) {
    if (l[i * n + i] === 0) {
      throw new RangeError(
        `Cannot compute solveTriangular() as 't' is singular: diagonal element ${i} is 0`,
      );
    }
  }
  const x = Float64Array.from(asFloat64(b)); // [n, k], solved in place
  // The effective operator M is T or Tᵀ; it is lower triangular ("forward":
  // row i of X depends on the rows before it) when lower ≠ transpose. Blocks
  // of rows are solved in dependency order: first the contribution of the
  // rows already solved is removed with one GEMM, then the block is solved
  // by substitution.
  const forward = lower !== transpose;
  const nb = SOLVE_BLOCK;
  const blocks = Math.ceil(n / nb);
  for (let s = 0; s < blocks; s++) {
    const i0 = (forward ? s : blocks - 1 - s) * nb, i1 = Math.min(n, i0 + nb);
    // solved rows [p0, p1): those before the block (forward) or after it
    const p0 = forward ? 0 : i1, p1 = forward ? i0 : n;
    if (p1 > p0) {
      // X[i0:i1] −= M[i0:i1, p0:p1]·X[p0:p1]; M(i, p) = T(i, p) or T(p, i)
      gemmInPlace(x, l, x, i1 - i0, p1 - p0, k, {
        alpha: -1,
        transA: transpose,
        offA: transpose ? p0 * n + i0 : i0 * n + p0,
        lda: n,
        offB: p0 * k,
        ldb: k,
        offC: i0 * k,
        ldc: k,
      });
    }
    substituteBlock(l, x, n, k, i0, i1, forward, transpose);
  }
  return tensor("f64", b.shape, x);
}

/** Result of {@linkcode eigh}. */
export interface EighResult {
  /** Eigenvalues in ascending order [n]. */
  values: Tensor<"f64">;
  /** Orthonormal eigenvectors as columns [n, n]: column i belongs to `values[i]`. */
  vectors: Tensor<"f64">;
}

/**
 * Eigendecomposition A = Q·diag(λ)·Qᵀ of a real symmetric matrix by Householder
 * tridiagonalization and implicit QR steps with Wilkinson shifts.
 *
 * @see Golub and Van Loan, Matrix Computations (4th ed.), §8.3 (Algorithms
 * 8.3.1 and 8.3.3).
 * @param a Symmetric [n, n]; (A + Aᵀ)/2 is decomposed.
 * @returns Ascending eigenvalues and the matching orthonormal eigenvectors (columns).
 * @throws {RangeError} when `a` is not square, not finite, or not symmetric
 * (|aᵢⱼ − aⱼᵢ| > 1e-8·max|a|).
 */
export function eigh(a: Tensor): EighResult {
  const n = squareOrder(a, "a", "eigh");
  const src = asFloat64(a);
  checkFinite(src, "a", "eigh");
  let scale = 0;
  for (let i = 0; i < src.length; i++) scale = Math.max(scale, Math.abs(src[i]!));
  const sym = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      const x = src[i * n + j]!, y = src[j * n + i]!;
      if (Math.abs(x - y) > 1e-8 * scale) {
        throw new RangeError(
          `Cannot compute eigh() as 'a' must be symmetric: a[${i}][${j}] = ${x} but a[${j}][${i}] = ${y}`,
        );
      }
      sym[i * n + j] = sym[j * n + i] = (x + y) / 2;
    }
  }
  const { values, vectors } = eighRaw(sym, n);
  return { values: tensor("f64", [n], values), vectors: tensor("f64", [n, n], vectors) };
}

/** Result of {@linkcode svd}: A = U·diag(s)·Vᵀ. */
export interface SvdResult {
  /** Left singular vectors as orthonormal columns [m, r], r = min(m, n). */
  u: Tensor<"f64">;
  /** Singular values in descending order [r]. */
  s: Tensor<"f64">;
  /** Right singular vectors as orthonormal columns [n, r]. */
  v: Tensor<"f64">;
}

/**
 * Thin singular value decomposition A = U·diag(s)·Vᵀ by one-sided (Hestenes)
 * Jacobi rotations, accurate to high relative precision. Columns of U for
 * (numerically) zero singular values are completed to an orthonormal set.
 *
 * @see Demmel and Veselić, "Jacobi's method is more accurate than QR", SIAM
 * J. Matrix Anal. Appl. 13 (1992).
 * @param a Matrix [m, n] (tall, square or wide).
 * @returns `u` [m, r], `s` [r] descending, `v` [n, r] with r = min(m, n).
 * @throws {RangeError} when `a` is not 2-D or not finite.
 */
export function svd(a: Tensor): SvdResult {
  const [m, n] = matrixDims(a, "a", "svd");
  const src = asFloat64(a);
  checkFinite(src, "a", "svd");
  const r = Math.min(m, n);
  if (m >= n) {
    const { u, s, v } = svdRaw(src, m, n);
    return {
      u: tensor("f64", [m, r], u),
      s: tensor("f64", [r], s),
      v: tensor("f64", [n, r], v),
    };
  }
  // Aᵀ = U'·S·V'ᵀ  ⇒  A = V'·S·U'ᵀ
  const { u, s, v } = svdRaw(transpose(tensor("f64", [m, n], src)).data, n, m);
  return {
    u: tensor("f64", [m, r], v),
    s: tensor("f64", [r], s),
    v: tensor("f64", [n, r], u),
  };
}
