/**
 * Library-internal: what {@linkcode eora} and {@linkcode lowRankSvd} share:
 * checking W and Ŵ, resolving the factor options, storing the factors
 * B = U_r and A = (BᵀB)⁺·Bᵀ·ΔW (rounded or quantized) and their bits, and
 * the quadratic loss tr(E·H·Eᵀ). Web-standard only.
 *
 * @module
 */

import { dims2, type Tensor, tensor } from "../core/tensor.ts";
import { asFloat64 } from "../core/convert.ts";
import { eigh, svd } from "../core/linalg.ts";
import { matmulRaw } from "../core/_dense.ts";
import { firstNonFinite } from "../core/_finite.ts";
import { resolveGrid } from "../core/uniform_grid.ts";
import type { GridOptions } from "./grid.ts";
import { rtn } from "./rtn.ts";
import { dequantize } from "./dequantize.ts";
import type { QuantizedWeight } from "./quantized_weight.ts";
import type { LowRankFactorOptions } from "./low_rank_factors.ts";

/** W, Ŵ and ΔW = W − Ŵ [rows, cols] in float64. */
export interface CorrectionInputs {
  rows: number;
  cols: number;
  /** ΔW = W − Ŵ, row-major [rows, cols]. */
  d: Float64Array;
}

function isTensor(t: unknown): t is Tensor {
  return t !== null && typeof t === "object" && "shape" in t && "data" in t && "dtype" in t;
}

/**
 * Checks `weight` and `approx` (tensors, 2-D, one shape, finite) and returns ΔW.
 *
 * @param weight W.
 * @param approx Ŵ.
 * @param fn The function, for messages.
 * @returns The shape and ΔW.
 */
export function correctionInputs(weight: Tensor, approx: Tensor, fn: string): CorrectionInputs {
  for (const [name, t] of [["weight", weight], ["approx", approx]] as const) {
    if (!isTensor(t)) throw new TypeError(`Cannot compute ${fn}() as '${name}' is not a tensor`);
  }
  const [rows, cols] = dims2(weight, "weight");
  const [ar, ac] = dims2(approx, "approx");
  if (ar !== rows || ac !== cols) {
    throw new RangeError(
      `Cannot compute ${fn}() as 'approx' [${approx.shape}] must have the shape of 'weight' [${weight.shape}]`,
    );
  }
  const w = asFloat64(weight), a = asFloat64(approx);
  for (const [name, x] of [["weight", w], ["approx", a]] as const) {
    const bad = firstNonFinite(x);
    if (bad >= 0) {
      throw new RangeError(
        `Cannot compute ${fn}() as '${name}' must be finite: element ${bad} is ${x[bad]}`,
      );
    }
  }
  const d = new Float64Array(rows * cols);
  for (let i = 0; i < d.length; i++) d[i] = w[i]! - a[i]!;
  return { rows, cols, d };
}

/** {@linkcode LowRankFactorOptions}, validated, defaults applied. */
export interface ResolvedFactorOptions {
  rank: number;
  dtype: "f16" | "f32";
  grid: GridOptions | undefined;
}

/**
 * Validates the options every low-rank correction takes.
 *
 * @param options The options.
 * @param rows Rows of W.
 * @param cols Columns of W.
 * @param fn The function, for messages.
 * @returns The resolved options.
 */
export function resolveFactorOptions(
  options: LowRankFactorOptions,
  rows: number,
  cols: number,
  fn: string,
): ResolvedFactorOptions {
  if (options === null || typeof options !== "object") {
    throw new TypeError(
      `Cannot compute ${fn}() as 'options' must be an object: current value is ${options}`,
    );
  }
  const { rank, dtype = "f16", quantize } = options;
  const most = Math.min(rows, cols);
  if (!Number.isInteger(rank) || rank < 1 || rank > most) {
    throw new RangeError(
      `Cannot compute ${fn}() as 'rank' must be an integer in [1, min(rows, cols) = ${most}] ` +
        `for a [${rows}, ${cols}] weight: current value is ${rank}`,
    );
  }
  if (dtype !== "f16" && dtype !== "f32") {
    throw new RangeError(
      `Cannot compute ${fn}() as 'dtype' must be "f16" or "f32": current value is ${dtype}`,
    );
  }
  if (quantize !== undefined) resolveGrid(quantize, `compute ${fn}() with 'quantize'`);
  return { rank, dtype, grid: quantize };
}

/** Storage bits of a uniform grid: codes, and per group an f16 scale and a zero point. */
function gridBits(q: QuantizedWeight, perTensor: boolean): number {
  const [r, c] = q.shape;
  const groups = perTensor ? 1 : q.scales.length;
  return r * c * q.bits + groups * (16 + (q.symmetric ? 0 : q.bits));
}

/** Values rounded to the storage float type (f16 overflow is an error naming the factor). */
function roundTo(x: Float64Array, dtype: "f16" | "f32", name: string, fn: string): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = dtype === "f16" ? Math.f16round(x[i]!) : Math.fround(x[i]!);
    if (!Number.isFinite(v)) {
      throw new RangeError(
        `Cannot compute ${fn}() with 'dtype' "${dtype}": factor ${name} element ${i} (${x[i]}) ` +
          `does not fit it (use dtype "f32" or 'quantize')`,
      );
    }
    out[i] = v;
  }
  return out;
}

/** The stored factors and their bits. */
export interface StoredFactors {
  a: Tensor<"f32">;
  b: Tensor<"f32">;
  quantized?: { a: QuantizedWeight; b: QuantizedWeight };
  bits: number;
}

/**
 * B = U_r (orthonormal columns; those past `effectiveRank` zero), stored;
 * then A = (BᵀB)⁺·Bᵀ·ΔW for the stored B (= U_rᵀ·ΔW for an exact B), stored.
 * For any B this A minimizes tr((ΔW − B·A)·H·(ΔW − B·A)ᵀ) whatever the
 * Hessian H (its gradient Bᵀ(ΔW − B·A)·H vanishes), so refitting A to the
 * rounded or quantized B never needs H.
 *
 * @param d ΔW [rows, cols].
 * @param u Left singular vectors [rows, uCols] (columns descending).
 * @param uCols Columns of `u`.
 * @param effectiveRank Columns of `u` used (≤ rank).
 * @param o Resolved options.
 * @param fn The function, for messages.
 * @returns The factors as stored and their bits.
 */
export async function storeFactors(
  d: Float64Array,
  rows: number,
  cols: number,
  u: Float64Array,
  uCols: number,
  effectiveRank: number,
  o: ResolvedFactorOptions,
  fn: string,
): Promise<StoredFactors> {
  const r = o.rank;
  const b = new Float64Array(rows * r); // [rows, r]
  for (let i = 0; i < rows; i++) {
    for (let k = 0; k < effectiveRank; k++) b[i * r + k] = u[i * uCols + k]!;
  }
  let bStored: Float32Array, qb: QuantizedWeight | undefined;
  if (o.grid) {
    qb = await rtn(tensor("f64", [rows, r], b), o.grid);
    bStored = dequantize(qb).data;
  } else bStored = roundTo(b, o.dtype, "B", fn);
  const bs = Float64Array.from(bStored);
  // A = (BᵀB)⁺·(Bᵀ·ΔW)
  const bt = new Float64Array(r * rows); // Bᵀ [r, rows]
  for (let i = 0; i < rows; i++) for (let k = 0; k < r; k++) bt[k * rows + i] = bs[i * r + k]!;
  const btd = matmulRaw(bt, d, r, rows, cols); // [r, cols]
  const g = matmulRaw(bt, bs, r, rows, r); // BᵀB [r, r]
  const a = matmulRaw(pseudoInverse(g, r), btd, r, r, cols); // [r, cols]
  let aStored: Float32Array, qa: QuantizedWeight | undefined;
  if (o.grid) {
    qa = await rtn(tensor("f64", [r, cols], a), o.grid);
    aStored = dequantize(qa).data;
  } else aStored = roundTo(a, o.dtype, "A", fn);
  const perTensor = o.grid?.perTensor ?? false;
  const bits = qa && qb
    ? gridBits(qa, perTensor) + gridBits(qb, perTensor)
    : (o.dtype === "f16" ? 16 : 32) * r * (rows + cols);
  return {
    a: tensor("f32", [r, cols], aStored),
    b: tensor("f32", [rows, r], bStored),
    ...(qa && qb ? { quantized: { a: qa, b: qb } } : {}),
    bits,
  };
}

/** Singular values at most this fraction of the largest count as zero. */
const SIGMA_FLOOR = 1e-12;

/**
 * The rank-`o.rank` correction of ΔW from the left singular vectors of M
 * (ΔW itself for the plain SVD, ΔW·Q·Λ^½ for EoRA): singular values at most
 * 1e-12 of the largest count as zero (B's columns past them are zero), the
 * squared ones past the rank are what the optimum leaves, and the factors
 * are stored as {@linkcode storeFactors} stores them.
 *
 * @param d ΔW [rows, cols].
 * @param m M [rows, cols].
 * @param o Resolved options.
 * @param fn The function, for messages.
 * @returns The stored factors, the rank used and the discarded Σσ².
 */
export async function truncatedFactors(
  d: Float64Array,
  m: Float64Array,
  rows: number,
  cols: number,
  o: ResolvedFactorOptions,
  fn: string,
): Promise<{ stored: StoredFactors; effectiveRank: number; discarded: number }> {
  const { u, s } = svd(tensor("f64", [rows, cols], m)); // U [rows, min], σ descending
  const sigma = s.data, top = sigma[0] ?? 0;
  let effectiveRank = 0;
  while (effectiveRank < o.rank && top > 0 && sigma[effectiveRank]! > SIGMA_FLOOR * top) {
    effectiveRank++;
  }
  let discarded = 0;
  for (let k = effectiveRank; k < sigma.length; k++) discarded += sigma[k]! ** 2;
  const stored = await storeFactors(d, rows, cols, u.data, u.shape[1]!, effectiveRank, o, fn);
  return { stored, effectiveRank, discarded };
}

/**
 * The pseudo-inverse of a symmetric positive-semidefinite G [n, n]:
 * eigenvalues at most 1e-12 of the largest count as zero.
 */
function pseudoInverse(g: Float64Array, n: number): Float64Array {
  const { values, vectors } = eigh(tensor("f64", [n, n], g));
  const v = vectors.data, l = values.data;
  const top = l[n - 1] ?? 0;
  const out = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    const lk = l[k]!;
    if (!(top > 0) || lk <= 1e-12 * top) continue;
    const inv = 1 / lk;
    for (let i = 0; i < n; i++) {
      const vik = v[i * n + k]! * inv;
      if (vik === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j] = out[i * n + j]! + vik * v[j * n + k]!;
    }
  }
  return out;
}

/**
 * ΔW − B·A [rows, cols] in float64.
 *
 * @param d ΔW.
 * @param f The stored factors.
 * @returns The residual.
 */
export function residual(
  d: Float64Array,
  rows: number,
  cols: number,
  f: StoredFactors,
): Float64Array {
  const r = f.a.shape[0]!;
  const ba = matmulRaw(Float64Array.from(f.b.data), Float64Array.from(f.a.data), rows, r, cols);
  const e = new Float64Array(rows * cols);
  for (let i = 0; i < e.length; i++) e[i] = d[i]! - ba[i]!;
  return e;
}

/**
 * tr(E·H·Eᵀ) = Σᵢ eᵢᵀ·H·eᵢ over the rows eᵢ of E [rows, cols]; with H null,
 * ‖E‖²_F.
 *
 * @param e E.
 * @param h H [cols, cols] or null for the identity.
 * @returns The loss.
 */
export function quadraticLoss(
  e: Float64Array,
  rows: number,
  cols: number,
  h: Float64Array | null,
): number {
  let s = 0;
  if (h === null) {
    for (let i = 0; i < e.length; i++) s += e[i]! * e[i]!;
    return s;
  }
  const eh = matmulRaw(e, h, rows, cols, cols);
  for (let i = 0; i < e.length; i++) s += eh[i]! * e[i]!;
  return s;
}
