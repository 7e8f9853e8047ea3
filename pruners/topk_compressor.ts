/**
 * Sparsifying compressors for gradients and weights: exact top-k by magnitude
 * and seeded random-k, per tensor or per block. Web-standard only.
 *
 * Each has three forms: `…Select(x, options)` returns the kept entries as a
 * {@linkcode SparseEntries} (indices ascending), `…Compress(x, options)` returns
 * the dense vector with everything else zeroed (C(x), what error feedback
 * needs), and `…Compressor(options)` returns a
 * {@linkcode CompressFn} for {@linkcode errorFeedback}.
 *
 * Top-k is exact: the k largest |x| are kept, ties broken towards the lower
 * index (found by quickselect, O(n) on average, not by sorting).
 *
 * These compressors are synchronous, unlike the library's weight compressors:
 * they run inside optax-style transforms, whose `update` is synchronous.
 *
 * @see Stich et al., "Sparsified SGD with Memory" (2018) for top-k/random-k.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { topKCompress } from "./topk_compressor.ts";
 * const c = topKCompress(new Float32Array([0.1, -3, 2, 0.5]), { k: 2 });
 * assert(c.join() === "0,-3,2,0");
 * ```
 *
 * @module
 */

import { type Prng, resolvePrng } from "../core/prng.ts";
import { mixSeed } from "../core/_mix_seed.ts";
import type { CompressContext, CompressFn } from "../core/error_feedback.ts";

/** Kept entries of a sparsified vector. */
export interface SparseEntries {
  /** Length of the dense vector. */
  readonly length: number;
  /** Kept positions, ascending. */
  readonly indices: Int32Array;
  /** Kept values (already scaled, for an unbiased random-k). */
  readonly values: Float32Array;
}

/** Options shared by top-k and random-k. */
export interface SparsifyOptions {
  /**
   * Entries kept per tensor, or per block when `blockSize` is set (a shorter
   * last block keeps min(k, its length)). Give `k` or `density`, not both.
   */
  k?: number;
  /**
   * Fraction of entries kept: ⌈density·n⌉ per tensor or block (see
   * {@linkcode densityToK}).
   * @default 0.01 (when `k` is not given)
   */
  density?: number;
  /**
   * Select within consecutive blocks of this many entries instead of over
   * the whole tensor.
   * @default undefined (the whole tensor is one block)
   */
  blockSize?: number;
}

/** Options of random-k. */
export interface RandomKOptions extends SparsifyOptions {
  /** Seed of the random choice. @default 0 */
  seed?: number;
  /** A generator to draw from instead of `seed`. */
  prng?: Prng;
  /**
   * Scale kept values by n/k (per block) so that E[C(x)] = x.
   * @default false
   */
  unbiased?: boolean;
}

interface Resolved {
  readonly blockSize: number;
  readonly keep: (len: number) => number;
}

function resolve(n: number, options: SparsifyOptions, what: string): Resolved {
  const { k, density, blockSize } = options;
  if (k !== undefined && density !== undefined) {
    throw new TypeError(`Cannot ${what} with both 'k' (${k}) and 'density' (${density})`);
  }
  if (k !== undefined && (!Number.isSafeInteger(k) || k < 0)) {
    throw new RangeError(
      `Cannot ${what} as 'k' must be a non-negative integer: current value is ${k}`,
    );
  }
  if (density !== undefined && !(density > 0 && density <= 1)) {
    throw new RangeError(
      `Cannot ${what} as 'density' must be in (0, 1]: current value is ${density}`,
    );
  }
  if (blockSize !== undefined && (!Number.isSafeInteger(blockSize) || blockSize < 1)) {
    throw new RangeError(
      `Cannot ${what} as 'blockSize' must be a positive integer: current value is ${blockSize}`,
    );
  }
  const d = density ?? 0.01;
  return {
    blockSize: blockSize ?? Math.max(1, n),
    keep: k !== undefined ? (len) => Math.min(k, len) : (len) => densityToK(len, d),
  };
}

/**
 * Entries kept out of `n` at a density: ⌈density·n⌉, at least 1 (for n ≥ 1)
 * and at most n. This is the rule of MicroAdam's reference implementation,
 * which takes the ceiling of block size × density for every top-k block
 * (rounding would keep 20 instead of 21 of 2,048 entries at 1%). The product
 * is the float64 one, as in the reference's Python, so a product that lands
 * just above an integer keeps one more: 0.07·100 = 7.000000000000001 keeps 8.
 *
 * @see ISTA-DASLab-Optimizers, `ista_daslab_optimizers/micro_adam/micro_adam.py`
 *   (`k_block_size_many`, `k_block_size_few`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { densityToK } from "./topk_compressor.ts";
 * assert(densityToK(2048, 0.01) === 21 && densityToK(4, 0.01) === 1);
 * ```
 *
 * @param n Entries in the tensor or block, a non-negative integer.
 * @param density Fraction kept, in (0, 1].
 * @returns The number of entries kept.
 */
export function densityToK(n: number, density: number): number {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(
      `Cannot count kept entries as 'n' must be a non-negative integer: current value is ${n}`,
    );
  }
  if (!(density > 0 && density <= 1)) {
    throw new RangeError(
      `Cannot count kept entries as 'density' must be in (0, 1]: current value is ${density}`,
    );
  }
  return Math.ceil(density * n);
}

/**
 * The k-th largest value of `a[0..n)` (1-based k), by iterative quickselect;
 * reorders `a`.
 */
function kthLargest(a: Float32Array, k: number): number {
  let lo = 0, hi = a.length - 1;
  const target = k - 1; // position in descending order
  while (lo < hi) {
    // Median of three as pivot keeps sorted inputs linear.
    const mid = (lo + hi) >>> 1;
    const x = a[lo]!, y = a[mid]!, z = a[hi]!;
    const pivot = x < y ? (y < z ? y : x < z ? z : x) : (x < z ? x : y < z ? z : y);
    let i = lo, j = hi;
    while (i <= j) {
      while (a[i]! > pivot) i++;
      while (a[j]! < pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target]!;
  }
  return a[target]!;
}

/**
 * Exact top-k by magnitude, per tensor or per block.
 *
 * @param x The vector.
 * @param options `k` or `density`, and `blockSize`.
 * @returns The kept entries, indices ascending.
 */
export function topKSelect(x: ArrayLike<number>, options: SparsifyOptions = {}): SparseEntries {
  const n = x.length;
  const { blockSize, keep } = resolve(n, options, "select the top-k entries");
  let total = 0;
  for (let s = 0; s < n; s += blockSize) total += keep(Math.min(n, s + blockSize) - s);
  const indices = new Int32Array(total);
  const abs = new Float32Array(Math.min(n, blockSize));
  let o = 0;
  for (let s = 0; s < n; s += blockSize) {
    const e = Math.min(n, s + blockSize), len = e - s;
    const k = keep(len);
    if (k === 0) continue;
    if (k === len) {
      for (let i = s; i < e; i++) indices[o++] = i;
      continue;
    }
    const a = abs.subarray(0, len);
    for (let i = 0; i < len; i++) a[i] = Math.abs(x[s + i]!);
    const tau = kthLargest(a, k); // reorders `a`; |x| is read again below
    let above = 0;
    for (let i = s; i < e; i++) if (Math.fround(Math.abs(x[i]!)) > tau) above++;
    let ties = k - above; // entries equal to τ still to keep, lowest index first
    for (let i = s; i < e; i++) {
      const v = Math.fround(Math.abs(x[i]!));
      if (v > tau) indices[o++] = i;
      else if (v === tau && ties > 0) {
        indices[o++] = i;
        ties--;
      }
    }
  }
  return gather(x, indices);
}

/**
 * Random-k: k entries per tensor or block, uniformly without replacement.
 *
 * @param x The vector.
 * @param options `k` or `density`, `blockSize`, `seed`/`prng`, `unbiased`.
 * @returns The kept entries, indices ascending.
 */
export function randomKSelect(x: ArrayLike<number>, options: RandomKOptions = {}): SparseEntries {
  const n = x.length;
  const { blockSize, keep } = resolve(n, options, "select random-k entries");
  const rng = resolvePrng(options);
  const idx: number[] = [];
  const scale: number[] = [];
  for (let s = 0; s < n; s += blockSize) {
    const e = Math.min(n, s + blockSize), len = e - s;
    const k = keep(len);
    // Partial Fisher–Yates: the first k slots become a uniform k-subset.
    const p = new Int32Array(len);
    for (let i = 0; i < len; i++) p[i] = i;
    for (let i = 0; i < k; i++) {
      const j = i + rng.int(len - i);
      const t = p[i]!;
      p[i] = p[j]!;
      p[j] = t;
    }
    const chosen = p.subarray(0, k).sort();
    for (const c of chosen) {
      idx.push(s + c);
      scale.push(options.unbiased ? len / k : 1);
    }
  }
  const indices = Int32Array.from(idx);
  const values = new Float32Array(indices.length);
  for (let i = 0; i < indices.length; i++) values[i] = x[indices[i]!]! * scale[i]!;
  return { length: n, indices, values };
}

function gather(x: ArrayLike<number>, indices: Int32Array): SparseEntries {
  const values = new Float32Array(indices.length);
  for (let i = 0; i < indices.length; i++) values[i] = x[indices[i]!]!;
  return { length: x.length, indices, values };
}

/**
 * Scatters sparse entries into a fresh dense vector.
 *
 * @param s The entries.
 * @returns A dense float32 vector of `s.length` with zeros elsewhere.
 */
export function sparseToDense(s: SparseEntries): Float32Array {
  const out = new Float32Array(s.length);
  for (let i = 0; i < s.indices.length; i++) out[s.indices[i]!] = s.values[i]!;
  return out;
}

/**
 * Top-k as a dense vector: the k largest-magnitude entries of `x`, zeros elsewhere.
 *
 * @param x The vector.
 * @param options `k` or `density`, and `blockSize`.
 * @returns C(x), a fresh float32 array.
 */
export function topKCompress(x: ArrayLike<number>, options: SparsifyOptions = {}): Float32Array {
  return sparseToDense(topKSelect(x, options));
}

/**
 * Random-k as a dense vector.
 *
 * @param x The vector.
 * @param options `k` or `density`, `blockSize`, `seed`/`prng`, `unbiased`.
 * @returns C(x), a fresh float32 array.
 */
export function randomKCompress(x: ArrayLike<number>, options: RandomKOptions = {}): Float32Array {
  return sparseToDense(randomKSelect(x, options));
}

/**
 * Top-k as a compressor for {@linkcode errorFeedback}.
 *
 * @param options `k` or `density`, and `blockSize`.
 * @returns A {@linkcode CompressFn}.
 */
export function topKCompressor(options: SparsifyOptions = {}): CompressFn {
  resolve(1, options, "select the top-k entries"); // validate now, not at the first step
  return (x) => topKCompress(x, options);
}

/**
 * Random-k as a compressor for {@linkcode errorFeedback}: each step and tensor
 * draws from its own seed, derived from `seed`, the step and the name.
 *
 * @param options `k` or `density`, `blockSize`, `seed`, `unbiased`.
 * @returns A {@linkcode CompressFn}.
 */
export function randomKCompressor(options: Omit<RandomKOptions, "prng"> = {}): CompressFn {
  resolve(1, options, "select random-k entries");
  const seed = options.seed ?? 0;
  return (x: Float32Array, context: CompressContext) =>
    randomKCompress(x, { ...options, seed: mixSeed(seed, context.step, context.name) });
}
