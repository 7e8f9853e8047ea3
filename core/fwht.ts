/**
 * Fast Walsh–Hadamard transform on the last axis, for every constructible
 * Hadamard order (see `hadamard.ts`), with the CPU code doubling as the
 * executable specification of the GPU kernel. Web-standard only.
 *
 * For `H_n = H_{2^K} ⊗ P_1 ⊗ … ⊗ P_r` each row x (length n) is seen as a tensor
 * of shape [2^K, m_1, …, m_r]; every dense block P_i (order m_i) is applied
 * along its axis (m_i multiply-adds per element) and the Sylvester part by the
 * radix-2 butterfly over the first axis (K add/subtract passes). The result is
 * `y = H·x` (or `Hᵀ·x`), i.e. `Y = X·Hᵀ` for a matrix X of rows. Work is done in
 * float64 per row; f32 results are rounded once at the end.
 *
 * @module
 */

import {
  type HadamardFactor,
  hadamardFactorMatrix,
  requireHadamardConstruction,
} from "./hadamard.ts";
import { type Tensor, tensor } from "./tensor.ts";
import { paleyFastApplies, paleyFastPlan, paleyInPlace } from "./_paley_fast.ts";

/** A dense orthogonal (or any) m×m block to use in place of the Paley blocks. */
export interface FwhtBlock {
  /** Order of the block. */
  readonly m: number;
  /** Row-major [m, m] entries. */
  readonly data: Float64Array;
}

/** Options of {@linkcode fwht}. */
export interface FwhtOptions {
  /**
   * Scale by 1/√n so that the transform is orthonormal (with `block`, by
   * 1/√(n/m): the block is used as given).
   * @default false
   */
  normalize?: boolean;
  /** Apply Hᵀ instead of H (they differ for Paley I blocks). @default false */
  transpose?: boolean;
  /**
   * Transform with `H_{n/m} ⊗ block` instead of the Hadamard matrix of order n;
   * n/m must be a constructible Hadamard order. Used by the structured fallback
   * of `randomHadamard` for orders with no Hadamard construction.
   */
  block?: FwhtBlock;
}

/** One dense factor of a plan. */
export interface FwhtDense {
  /** Order. */
  readonly m: number;
  /** Row-major [m, m]. */
  readonly h: Float64Array;
  /**
   * How to apply the transpose: Paley II blocks are symmetric (Bᵀ = B), Paley I
   * blocks are I + skew (Bᵀ·x = 2x − B·x), custom blocks carry `ht`.
   */
  readonly kind: "paley1" | "paley2" | "custom";
  /** Row-major Bᵀ (custom blocks only). */
  readonly ht?: Float64Array;
}

/** How {@linkcode fwht} transforms rows of length n: `H_pow2 ⊗ dense[0] ⊗ … ⊗ dense[r−1]`. */
export interface FwhtPlan {
  /** Row length. */
  readonly n: number;
  /** Order of the Sylvester (butterfly) part, a power of two (1 when absent). */
  readonly pow2: number;
  /** Dense blocks after the Sylvester part, in Kronecker order. */
  readonly dense: readonly FwhtDense[];
  /** Factor applied when normalizing (1/√n, or 1/√(n/m) with a custom block). */
  readonly normScale: number;
  /** Human-readable recipe. */
  readonly description: string;
}

/** Paley blocks already expanded, least recently used first; bounded by CACHE_ENTRIES. */
const denseCache = new Map<string, FwhtDense>();
const CACHE_ENTRIES = 1 << 21;
let cachedEntries = 0;

function paleyBlock(f: HadamardFactor): FwhtDense {
  const key = `${f.kind}:${f.n}`;
  const hit = denseCache.get(key);
  if (hit !== undefined) {
    denseCache.delete(key);
    denseCache.set(key, hit);
    return hit;
  }
  if (f.kind === "sylvester") throw new Error("unreachable: Sylvester blocks are butterflies");
  const d: FwhtDense = { m: f.n, h: Float64Array.from(hadamardFactorMatrix(f)), kind: f.kind };
  if (d.h.length <= CACHE_ENTRIES) {
    for (const [k, v] of denseCache) {
      if (cachedEntries + d.h.length <= CACHE_ENTRIES) break;
      denseCache.delete(k);
      cachedEntries -= v.h.length;
    }
    denseCache.set(key, d);
    cachedEntries += d.h.length;
  }
  return d;
}

/**
 * The plan for rows of length n: which butterfly and dense blocks `fwht` runs.
 *
 * @param n Row length.
 * @param block Optional custom dense block (see {@linkcode FwhtOptions.block}).
 * @returns The plan.
 * @throws {RangeError} when n (or n/m with a block) is not a constructible order.
 */
export function fwhtPlan(n: number, block?: FwhtBlock): FwhtPlan {
  let outer = n;
  let custom: FwhtDense | null = null;
  if (block !== undefined) {
    const { m, data } = block;
    if (!Number.isSafeInteger(m) || m < 1 || n % m !== 0 || data.length !== m * m) {
      throw new RangeError(
        `Cannot plan a transform of length ${n} as 'block' must be m×m with m dividing n: current m is ${m} with ${data.length} entries`,
      );
    }
    outer = n / m;
    const ht = new Float64Array(m * m);
    for (let i = 0; i < m; i++) for (let j = 0; j < m; j++) ht[j * m + i] = data[i * m + j]!;
    custom = { m, h: data, kind: "custom", ht };
  }
  const c = requireHadamardConstruction(outer);
  let pow2 = 1;
  const dense: FwhtDense[] = [];
  for (const f of c.factors) {
    if (f.kind === "sylvester") {
      pow2 = f.n;
      continue;
    }
    dense.push(paleyBlock(f));
  }
  if (custom !== null) dense.push(custom);
  const description = custom === null
    ? c.description
    : `${outer === 1 ? "" : `${c.description} ⊗ `}custom block(${custom.m})`;
  return { n, pow2, dense, normScale: 1 / Math.sqrt(outer), description };
}

/**
 * Transforms every row of `data` (rows of length `plan.n`) in place.
 *
 * @param data Row-major values; overwritten with `H·row` (or `Hᵀ·row`) per row.
 * @param plan From {@linkcode fwhtPlan}.
 * @param options `normalize` and `transpose` as in {@linkcode FwhtOptions}.
 */
export function fwhtInPlace(
  data: Float32Array | Float64Array,
  plan: FwhtPlan,
  options: { normalize?: boolean; transpose?: boolean } = {},
): void {
  const { normalize = false, transpose = false } = options;
  const n = plan.n;
  if (n === 0 || data.length % n !== 0) {
    throw new RangeError(
      `Cannot transform rows of length ${n}: the data holds ${data.length} elements`,
    );
  }
  const rows = data.length / n;
  const scale = normalize ? plan.normScale : 1;
  let inner = 1, maxM = 0;
  for (const d of plan.dense) {
    inner *= d.m;
    maxM = Math.max(maxM, d.m);
  }
  const row = data instanceof Float64Array ? null : new Float64Array(n);
  // Scratch for a slab of any dense axis (m_i · stride_i ≤ inner) and for two chunks.
  const slab = new Float64Array(Math.max(inner, 2 * maxM));
  const acc = new Float64Array(Math.max(inner, maxM));
  const tables = new Float64Array(256 * Math.ceil(maxM / 8));
  const paleyScratch = new Float64Array(5 * maxM);
  for (let r = 0; r < rows; r++) {
    let x: Float64Array;
    if (row === null) {
      x = (data as Float64Array).subarray(r * n, (r + 1) * n);
    } else {
      x = row;
      for (let i = 0; i < n; i++) x[i] = data[r * n + i]!;
    }
    let stride = inner;
    for (const d of plan.dense) {
      stride /= d.m;
      const reflect = transpose && d.kind === "paley1";
      if (d.kind === "paley1" && paleyFastApplies(d.m - 1)) {
        paleyInPlace(x, paleyFastPlan(d.m - 1), stride, reflect, paleyScratch);
      } else if (stride === 1 && d.kind !== "custom" && d.m >= SIGNED_MIN) {
        applySigns(x, n, d.m, signPatterns(d), reflect, tables);
      } else {
        const b = transpose && d.kind === "custom" ? d.ht! : d.h;
        applyDense(x, n, d.m, stride, b, reflect, slab, acc);
      }
    }
    butterfly(x, n, inner);
    if (scale !== 1) { for (let i = 0; i < n; i++) x[i] = x[i]! * scale; }
    if (row !== null) data.set(x, r * n);
  }
}

/** Smallest ±1 block applied with the table method of {@linkcode applySigns}. */
const SIGNED_MIN = 64;

const patternCache = new WeakMap<FwhtDense, Uint8Array>();

/** Sign patterns of a ±1 block, 8 columns per byte, laid out [m, groups]. */
function signPatterns(d: FwhtDense): Uint8Array {
  let pat = patternCache.get(d);
  if (pat !== undefined) return pat;
  const m = d.m, groups = Math.ceil(m / 8);
  pat = new Uint8Array(groups * m);
  for (let i = 0; i < m; i++) {
    for (let g = 0; g < groups; g++) {
      let mask = 0;
      for (let t = 0; t < 8; t++) {
        const j = 8 * g + t;
        if (j < m && d.h[i * m + j]! > 0) mask |= 1 << t;
      }
      pat[i * groups + g] = mask;
    }
  }
  patternCache.set(d, pat);
  return pat;
}

/**
 * y = B·x on contiguous chunks of m for a ±1 block B, by the "four Russians"
 * table method: for each group of 8 inputs, the 256 signed sums ±x_0 ± … ± x_7
 * are tabulated (255 additions), and each output adds one table entry per
 * group, picked by its row's sign pattern: ≈ m/8·(256 + m) additions per chunk
 * instead of m² multiply-adds. With `reflect`, y = 2x − B·x.
 */
function applySigns(
  x: Float64Array,
  n: number,
  m: number,
  pat: Uint8Array,
  reflect: boolean,
  tables: Float64Array,
): void {
  const groups = Math.ceil(m / 8);
  for (let base = 0; base < n; base += m) {
    for (let g = 0; g < groups; g++) {
      const j0 = base + 8 * g, width = Math.min(8, m - 8 * g), t0 = 256 * g;
      let sum = 0;
      for (let t = 0; t < width; t++) sum += x[j0 + t]!;
      tables[t0] = -sum;
      let size = 1;
      for (let t = 0; t < 8; t++, size *= 2) {
        const twice = t < width ? 2 * x[j0 + t]! : 0;
        for (let k = 0; k < size; k++) tables[t0 + size + k] = tables[t0 + k]! + twice;
      }
    }
    for (let i = 0; i < m; i++) {
      const p0 = i * groups;
      let a = 0, b = 0;
      let g = 0;
      for (; g + 2 <= groups; g += 2) {
        a += tables[256 * g + pat[p0 + g]!]!;
        b += tables[256 * g + 256 + pat[p0 + g + 1]!]!;
      }
      if (g < groups) a += tables[256 * g + pat[p0 + g]!]!;
      const y = a + b;
      // x[base + i] is still needed by no later table (all were built), so overwrite.
      x[base + i] = reflect ? 2 * x[base + i]! - y : y;
    }
  }
}

/**
 * y[o, :, t] = B · x[o, :, t] for x seen as [n / (m·s), m, s]; with `reflect`,
 * y = 2x − B·x (which is Bᵀ·x for a Paley I block B = I + S, S skew).
 */
function applyDense(
  x: Float64Array,
  n: number,
  m: number,
  s: number,
  b: Float64Array,
  reflect: boolean,
  slab: Float64Array,
  acc: Float64Array,
): void {
  const span = m * s;
  if (s === 1) {
    // Two chunks × four outputs per sweep of j: 8 accumulators, 6 loads per 8 multiply-adds.
    let base = 0;
    for (; base + 2 * m <= n; base += 2 * m) {
      for (let j = 0; j < 2 * m; j++) slab[j] = x[base + j]!;
      let i = 0;
      for (; i + 4 <= m; i += 4) {
        const r0 = i * m, r1 = r0 + m, r2 = r1 + m, r3 = r2 + m;
        let a0 = 0, a1 = 0, a2 = 0, a3 = 0, c0 = 0, c1 = 0, c2 = 0, c3 = 0;
        for (let j = 0; j < m; j++) {
          const u = slab[j]!, v = slab[m + j]!;
          const b0 = b[r0 + j]!, b1 = b[r1 + j]!, b2 = b[r2 + j]!, b3 = b[r3 + j]!;
          a0 += b0 * u;
          a1 += b1 * u;
          a2 += b2 * u;
          a3 += b3 * u;
          c0 += b0 * v;
          c1 += b1 * v;
          c2 += b2 * v;
          c3 += b3 * v;
        }
        x[base + i] = a0;
        x[base + i + 1] = a1;
        x[base + i + 2] = a2;
        x[base + i + 3] = a3;
        x[base + m + i] = c0;
        x[base + m + i + 1] = c1;
        x[base + m + i + 2] = c2;
        x[base + m + i + 3] = c3;
      }
      for (; i < m; i++) {
        let a = 0, c = 0;
        for (let j = 0; j < m; j++) {
          a += b[i * m + j]! * slab[j]!;
          c += b[i * m + j]! * slab[m + j]!;
        }
        x[base + i] = a;
        x[base + m + i] = c;
      }
      if (reflect) {
        for (let j = 0; j < 2 * m; j++) x[base + j] = 2 * slab[j]! - x[base + j]!;
      }
    }
    for (; base < n; base += m) {
      for (let j = 0; j < m; j++) slab[j] = x[base + j]!;
      for (let i = 0; i < m; i++) {
        let a = 0;
        for (let j = 0; j < m; j++) a += b[i * m + j]! * slab[j]!;
        x[base + i] = reflect ? 2 * slab[i]! - a : a;
      }
    }
    return;
  }
  for (let base = 0; base < n; base += span) {
    for (let t = 0; t < span; t++) slab[t] = x[base + t]!;
    for (let i = 0; i < m; i++) {
      acc.fill(0, 0, s);
      for (let j = 0; j < m; j++) {
        const w = b[i * m + j]!;
        if (w === 0) continue;
        const off = j * s;
        for (let t = 0; t < s; t++) acc[t] = acc[t]! + w * slab[off + t]!;
      }
      const out = base + i * s;
      if (reflect) {
        for (let t = 0; t < s; t++) x[out + t] = 2 * slab[i * s + t]! - acc[t]!;
      } else {
        for (let t = 0; t < s; t++) x[out + t] = acc[t]!;
      }
    }
  }
}

/** Sylvester butterfly over the outer axis: (H_{n/s} ⊗ I_s)·x, two levels per pass. */
function butterfly(x: Float64Array, n: number, s: number): void {
  let h = s;
  for (; 4 * h <= n; h *= 4) {
    const h2 = 2 * h, h3 = 3 * h;
    for (let base = 0; base < n; base += 4 * h) {
      const end = base + h;
      for (let t = base; t < end; t++) {
        const a = x[t]!, b = x[t + h]!, c = x[t + h2]!, d = x[t + h3]!;
        const ab = a + b, amb = a - b, cd = c + d, cmd = c - d;
        x[t] = ab + cd;
        x[t + h] = amb + cmd;
        x[t + h2] = ab - cd;
        x[t + h3] = amb - cmd;
      }
    }
  }
  if (2 * h <= n) {
    for (let base = 0; base < n; base += 2 * h) {
      for (let t = base; t < base + h; t++) {
        const u = x[t]!, v = x[t + h]!;
        x[t] = u + v;
        x[t + h] = u - v;
      }
    }
  }
}

/**
 * Fast Walsh–Hadamard transform of every row (last axis) of a float tensor:
 * `y = H_n·x`, O(n log n) for powers of two and O(n·(K + Σ m_i)) otherwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fwht } from "./fwht.ts";
 * import { tensor } from "./tensor.ts";
 * const x = tensor("f64", [1, 4], new Float64Array([1, 0, 0, 0]));
 * assert(fwht(x).data.every((v) => v === 1));
 * const y = fwht(fwht(x, { normalize: true }), { normalize: true });
 * assert(Math.abs(y.data[0]! - 1) < 1e-12);
 * ```
 * @param x Tensor of f32 or f64 with last axis n (a constructible Hadamard order).
 * @param options See {@linkcode FwhtOptions}.
 * @returns A fresh tensor of the same dtype and shape.
 */
export function fwht<D extends "f32" | "f64">(x: Tensor<D>, options: FwhtOptions = {}): Tensor<D> {
  const { normalize = false, transpose = false, block } = options;
  if (x.dtype !== "f32" && x.dtype !== "f64") {
    throw new TypeError(`Cannot transform as 'x' must be f32 or f64: current dtype is ${x.dtype}`);
  }
  if (x.shape.length === 0) {
    throw new RangeError("Cannot transform a scalar: 'x' needs at least one axis");
  }
  if (typeof normalize !== "boolean" || typeof transpose !== "boolean") {
    throw new TypeError(
      `Cannot transform as 'normalize' and 'transpose' must be booleans: current values are ${normalize}, ${transpose}`,
    );
  }
  const n = x.shape[x.shape.length - 1]!;
  const plan = fwhtPlan(n, block);
  const out = tensor(x.dtype, x.shape, x.data.slice() as Tensor<D>["data"]);
  if (n > 0) fwhtInPlace(out.data as Float32Array | Float64Array, plan, { normalize, transpose });
  return out;
}
