/**
 * Seeded random Hadamard rotations `Q = T·diag(s)` (T an orthonormal Hadamard
 * transform, s random ±1), with a structured fallback for orders that have no
 * Hadamard construction, and helpers to rotate linear layers without changing
 * their output: `W·x = (W·Q)·(Qᵀ·x)`. Web-standard only.
 *
 * @see S. Ashkboos et al., "QuaRot: Outlier-Free 4-Bit Inference in Rotated LLMs" (2024).
 * @see A. Tseng et al., "QuIP#: Even Better LLM Quantization with Hadamard Incoherence" (2024).
 * @module
 */

import { asFloat32 } from "./convert.ts";
import { fwhtInPlace, type FwhtPlan, fwhtPlan } from "./fwht.ts";
import { hadamardConstruction } from "./hadamard.ts";
import { prng } from "./prng.ts";
import { dims2, type Tensor, tensor, transpose } from "./tensor.ts";

/**
 * What to do when n has no Hadamard construction: `"none"` throws,
 * `"kronecker"` uses `H_c ⊗ R_m` (c the largest constructible order dividing n,
 * R_m a seeded Haar-random orthogonal m×m block, m ≤ 1024), `"blockDiagonal"` uses
 * `I_{n/c} ⊗ H_c` (the same Hadamard block on each of n/c column groups).
 */
export type RotationFallback = "none" | "kronecker" | "blockDiagonal";

/** Options of {@linkcode randomHadamard}. */
export interface RandomHadamardOptions {
  /** Seed of the random signs (and of R_m in the fallback). @default 0 */
  seed?: number;
  /** Structure to use when n is not a constructible Hadamard order. @default "none" */
  fallback?: RotationFallback;
}

/** A seeded orthogonal n×n rotation Q that applies in O(n log n)–O(n·m) per vector. */
export interface Rotation {
  /** The order. */
  readonly n: number;
  /** Which structure was used. */
  readonly kind: "hadamard" | "kronecker" | "blockDiagonal";
  /** Human-readable construction, e.g. `"Sylvester(128) ⊗ random orthogonal(107)"`. */
  readonly description: string;
  /** The random signs s (±1), [n]. */
  readonly signs: Float64Array;
  /**
   * Applies Q (or Qᵀ) to every row vector of x: returns X·Qᵀ (or X·Q), fresh.
   * @param x f32/f64 tensor [..., n] (other float dtypes are read as f32).
   * @param options `transpose`: apply Qᵀ instead (default false).
   */
  applyToRows(x: Tensor, options?: { transpose?: boolean }): Tensor<"f32" | "f64">;
  /**
   * Applies Q (or Qᵀ) to every column of a 2-D x: returns Q·X (or Qᵀ·X), fresh.
   * @param x f32/f64 tensor [n, cols].
   * @param options `transpose`: apply Qᵀ instead (default false).
   */
  applyToColumns(x: Tensor, options?: { transpose?: boolean }): Tensor<"f32" | "f64">;
  /** The dense matrix Q, row-major [n, n] (for tests and small n). */
  dense(): Float64Array;
}

/**
 * A seeded Haar-random orthogonal m×m matrix: the Q factor of a Gaussian
 * matrix (twice-orthogonalized Gram–Schmidt, signs fixed by diag(R) > 0).
 *
 * @param m Order.
 * @param seed Seed.
 * @returns Row-major [m, m], Q·Qᵀ = I to float tolerance.
 */
export function randomOrthogonal(m: number, seed = 0): Float64Array {
  if (!Number.isSafeInteger(m) || m < 1) {
    throw new RangeError(
      `Cannot draw a random orthogonal matrix as 'm' must be a positive integer: current value is ${m}`,
    );
  }
  const rng = prng(seed);
  // Columns of a Gaussian matrix, orthonormalized in order; stored as rows of `cols`.
  const cols = new Float64Array(m * m);
  for (let i = 0; i < m * m; i++) cols[i] = rng.normal();
  for (let j = 0; j < m; j++) {
    const vj = cols.subarray(j * m, (j + 1) * m);
    let rjj = 0;
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < j; i++) {
        const vi = cols.subarray(i * m, (i + 1) * m);
        let d = 0;
        for (let t = 0; t < m; t++) d += vi[t]! * vj[t]!;
        for (let t = 0; t < m; t++) vj[t] = vj[t]! - d * vi[t]!;
      }
    }
    for (let t = 0; t < m; t++) rjj += vj[t]! * vj[t]!;
    const inv = 1 / Math.sqrt(rjj);
    for (let t = 0; t < m; t++) vj[t] = vj[t]! * inv;
  }
  // Q[:, j] = column j; return row-major Q.
  const q = new Float64Array(m * m);
  for (let j = 0; j < m; j++) for (let t = 0; t < m; t++) q[t * m + j] = cols[j * m + t]!;
  return q;
}

/** Largest random orthogonal block of the Kronecker fallback (O(m³) to draw, m per element to apply). */
const MAX_RANDOM_BLOCK = 1024;

/** Largest constructible Hadamard order dividing n. */
function largestHadamardDivisor(n: number): number {
  let best = 1;
  for (let d = 1; d * d <= n; d++) {
    if (n % d !== 0) continue;
    for (const c of [d, n / d]) {
      if (c > best && hadamardConstruction(c) !== null) best = c;
    }
  }
  return best;
}

/**
 * A seeded random Hadamard rotation `Q = T·diag(s)`: T = H_n/√n when a
 * Hadamard matrix of order n is constructible, else the requested fallback.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { randomHadamard } from "./rotation.ts";
 * import { tensor } from "./tensor.ts";
 * const q = randomHadamard(12, { seed: 1 });
 * const x = tensor("f64", [1, 12], new Float64Array(12).fill(1));
 * const back = q.applyToRows(q.applyToRows(x), { transpose: true });
 * assert(Math.abs(back.data[5]! - 1) < 1e-12);
 * ```
 * @param n The order.
 * @param options Seed and fallback.
 * @returns The rotation.
 * @throws {RangeError} naming n and the nearest supported orders when n is not
 * constructible and `fallback` is `"none"`.
 */
export function randomHadamard(n: number, options: RandomHadamardOptions = {}): Rotation {
  const { seed = 0, fallback = "none" } = options;
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new RangeError(
      `Cannot make a rotation as 'n' must be a positive integer: current value is ${n}`,
    );
  }
  if (!["none", "kronecker", "blockDiagonal"].includes(fallback)) {
    throw new RangeError(
      `Cannot make a rotation as 'fallback' must be "none", "kronecker" or "blockDiagonal": current value is ${fallback}`,
    );
  }
  const rng = prng(seed);
  const signs = new Float64Array(n);
  for (let i = 0; i < n; i++) signs[i] = (rng.nextU32() & 1) === 0 ? 1 : -1;
  let kind: Rotation["kind"];
  let plan: FwhtPlan;
  let description: string;
  if (hadamardConstruction(n) !== null || fallback === "none") {
    plan = fwhtPlan(n); // throws with the nearest orders when n is not constructible
    kind = "hadamard";
    description = plan.description;
  } else {
    const c = largestHadamardDivisor(n);
    if (fallback === "kronecker") {
      const m = n / c;
      if (m > MAX_RANDOM_BLOCK) {
        throw new RangeError(
          `Cannot make a Kronecker fallback for n = ${n}: its random orthogonal block would be ${m}×${m} (more than ${MAX_RANDOM_BLOCK}); use fallback "blockDiagonal"`,
        );
      }
      plan = fwhtPlan(n, { m, data: randomOrthogonal(m, seed ^ 0x5bd1e995) });
      kind = "kronecker";
      description = c === 1
        ? `random orthogonal(${m})`
        : `${fwhtPlan(c).description} ⊗ random orthogonal(${m})`;
    } else {
      plan = fwhtPlan(c);
      kind = "blockDiagonal";
      description = `I(${n / c}) ⊗ ${plan.description}`;
    }
  }
  const rowsOf = (x: Tensor): Float32Array | Float64Array => {
    const last = x.shape[x.shape.length - 1];
    if (last !== n) {
      throw new RangeError(
        `Cannot rotate as the last axis must have length ${n}: current shape is [${x.shape}]`,
      );
    }
    return x.dtype === "f64" ? (x.data as Float64Array).slice() : asFloat32(x).slice();
  };
  const applyToRows = (x: Tensor, opts: { transpose?: boolean } = {}): Tensor<"f32" | "f64"> => {
    const tr = opts.transpose ?? false;
    const data = rowsOf(x);
    const rows = data.length / n;
    if (!tr) scaleRows(data, signs, rows, n);
    fwhtInPlace(data, plan, { normalize: true, transpose: tr });
    if (tr) scaleRows(data, signs, rows, n);
    return tensor(x.dtype === "f64" ? "f64" : "f32", x.shape, data);
  };
  const applyToColumns = (x: Tensor, opts: { transpose?: boolean } = {}): Tensor<"f32" | "f64"> => {
    dims2(x, "x");
    const xt = x.dtype === "f64" || x.dtype === "f32" ? x : tensor("f32", x.shape, asFloat32(x));
    return transpose(applyToRows(transpose(xt as Tensor<"f32" | "f64">), opts));
  };
  const dense = (): Float64Array => {
    // Row i of Q is Qᵀ·e_i, so rotate the identity's rows with the transpose.
    const eye = new Float64Array(n * n);
    for (let i = 0; i < n; i++) eye[i * n + i] = 1;
    return applyToRows(tensor("f64", [n, n], eye), { transpose: true }).data as Float64Array;
  };
  return { n, kind, description, signs, applyToRows, applyToColumns, dense };
}

function scaleRows(data: Float32Array | Float64Array, s: Float64Array, rows: number, n: number) {
  for (let r = 0; r < rows; r++) {
    const off = r * n;
    for (let i = 0; i < n; i++) data[off + i] = data[off + i]! * s[i]!;
  }
}

/**
 * Rotates a linear layer's weight on its input side: returns `W·Q`, so that
 * `W·x = (W·Q)·(Qᵀ·x)`. Pair it with {@linkcode rotateActivations}.
 *
 * @param weight [out, in] with in = rotation.n.
 * @param rotation The rotation.
 * @returns W·Q, fresh, f32 (f64 stays f64).
 */
export function rotateWeight(weight: Tensor, rotation: Rotation): Tensor<"f32" | "f64"> {
  dims2(weight, "weight");
  return rotation.applyToRows(weight, { transpose: true });
}

/**
 * Rotates activations laid out as rows `X` [tokens, in]: returns `X·Q` (each
 * row x becomes Qᵀ·x), so that `X·Wᵀ = (X·Q)·(W·Q)ᵀ`.
 *
 * @param x [..., in] with in = rotation.n.
 * @param rotation The rotation.
 * @returns X·Q, fresh.
 */
export function rotateActivations(x: Tensor, rotation: Rotation): Tensor<"f32" | "f64"> {
  return rotation.applyToRows(x, { transpose: true });
}

/**
 * Undoes {@linkcode rotateWeight}: returns `W'·Qᵀ`.
 *
 * @param weight A rotated weight [out, in].
 * @param rotation The rotation used.
 * @returns The weight in the original basis, fresh.
 */
export function unrotateWeight(weight: Tensor, rotation: Rotation): Tensor<"f32" | "f64"> {
  dims2(weight, "weight");
  return rotation.applyToRows(weight);
}
