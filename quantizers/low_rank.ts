/**
 * PowerSGD-style low-rank compression: M ≈ P·Qᵀ with P orthonormal, found by
 * power iteration warm-started from the previous step's Q. Web-standard only.
 *
 * One step from a warm start Q [cols, rank]: P ← orth(M·Q), Q ← Mᵀ·P, and
 * M̂ = P·Qᵀ, which is the projection of M on span(P). Repeated on a slowly
 * changing M (the gradients of consecutive steps), the warm start makes one
 * iteration per step track the best rank-r approximation. The warm start is
 * an explicit input and output, never hidden state; with
 * {@linkcode errorFeedback}, {@linkcode lowRankCompressor} keeps it inside the
 * transform's state.
 *
 * @see Vogels et al., "PowerSGD: Practical Low-Rank Gradient Compression for
 *   Distributed Optimization" (2019), Algorithm 1.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lowRankCompress } from "./low_rank.ts";
 * // A rank-1 matrix is recovered exactly by rank 1.
 * const m = new Float32Array([1, 2, 3, 2, 4, 6]); // [2, 3]
 * const { approx } = lowRankCompress(m, { rows: 2, cols: 3, rank: 1 });
 * assert(approx.every((v, i) => Math.abs(v - m[i]!) < 1e-5));
 * ```
 *
 * @module
 */

import { type Prng, resolvePrng } from "../core/prng.ts";
import { mixSeed } from "../core/_mix_seed.ts";
import type { StatefulCompressor } from "../core/error_feedback.ts";

/** Options of {@linkcode lowRankCompress}. */
export interface LowRankOptions {
  /** Rows of M. */
  rows: number;
  /** Columns of M. */
  cols: number;
  /** Target rank r, 1 ≤ r ≤ min(rows, cols). */
  rank: number;
  /** Warm start Q [cols, rank]; drawn from N(0, 1) with `seed` when absent. */
  q?: Float32Array;
  /** Power iterations this call. @default 1 */
  powerIterations?: number;
  /** Seed of the initial Q when `q` is absent. @default 0 */
  seed?: number;
  /** A generator for the initial Q instead of `seed`. */
  prng?: Prng;
}

/** Result of {@linkcode lowRankCompress}. */
export interface LowRankResult {
  /** M̂ = P·Qᵀ, [rows, cols]. */
  readonly approx: Float32Array;
  /** Orthonormal columns, [rows, rank]. */
  readonly p: Float32Array;
  /** Mᵀ·P, [cols, rank]: the warm start of the next call. */
  readonly q: Float32Array;
}

/**
 * Compresses a matrix to rank r by warm-started power iteration.
 *
 * @param m The matrix, row-major [rows, cols].
 * @param options Shape, rank, warm start and iterations.
 * @returns M̂, P and the new Q.
 */
export function lowRankCompress(m: ArrayLike<number>, options: LowRankOptions): LowRankResult {
  const { rows, cols, rank, powerIterations = 1 } = options;
  for (const [key, v] of [["rows", rows], ["cols", cols]] as const) {
    if (!Number.isSafeInteger(v) || v < 1) {
      throw new RangeError(
        `Cannot compress to low rank as '${key}' must be a positive integer: current value is ${v}`,
      );
    }
  }
  if (m.length !== rows * cols) {
    throw new RangeError(
      `Cannot compress to low rank a matrix of ${m.length} elements as [${rows}, ${cols}]`,
    );
  }
  if (!Number.isSafeInteger(rank) || rank < 1 || rank > Math.min(rows, cols)) {
    throw new RangeError(
      `Cannot compress to low rank as 'rank' must be an integer in [1, ${
        Math.min(rows, cols)
      }]: current value is ${rank}`,
    );
  }
  if (!Number.isSafeInteger(powerIterations) || powerIterations < 1) {
    throw new RangeError(
      `Cannot compress to low rank as 'powerIterations' must be a positive integer: ` +
        `current value is ${powerIterations}`,
    );
  }
  let q: Float64Array; // [cols, rank]
  if (options.q !== undefined) {
    if (options.q.length !== cols * rank) {
      throw new RangeError(
        `Cannot compress to low rank as 'q' must have cols·rank = ${cols * rank} elements: ` +
          `it has ${options.q.length}`,
      );
    }
    q = Float64Array.from(options.q);
  } else {
    const rng = resolvePrng(options);
    q = new Float64Array(cols * rank);
    for (let i = 0; i < q.length; i++) q[i] = rng.normal();
  }
  const p = new Float64Array(rows * rank); // [rows, rank]
  for (let it = 0; it < powerIterations; it++) {
    // P ← M·Q
    p.fill(0);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        const mij = m[i * cols + j]!;
        if (mij === 0) continue;
        for (let c = 0; c < rank; c++) p[i * rank + c]! += mij * q[j * rank + c]!;
      }
    }
    orthonormalizeColumns(p, rows, rank);
    // Q ← Mᵀ·P
    q.fill(0);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        const mij = m[i * cols + j]!;
        if (mij === 0) continue;
        for (let c = 0; c < rank; c++) q[j * rank + c]! += mij * p[i * rank + c]!;
      }
    }
  }
  const approx = new Float32Array(rows * cols); // P·Qᵀ
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      let s = 0;
      for (let c = 0; c < rank; c++) s += p[i * rank + c]! * q[j * rank + c]!;
      approx[i * cols + j] = s;
    }
  }
  return { approx, p: Float32Array.from(p), q: Float32Array.from(q) };
}

/** Modified Gram–Schmidt on the columns of a [rows, rank] matrix, in place; a
 * column with (numerically) no component outside the previous ones becomes 0. */
function orthonormalizeColumns(p: Float64Array, rows: number, rank: number): void {
  for (let c = 0; c < rank; c++) {
    let before = 0;
    for (let i = 0; i < rows; i++) before += p[i * rank + c]! ** 2;
    for (let d = 0; d < c; d++) {
      let dot = 0;
      for (let i = 0; i < rows; i++) dot += p[i * rank + c]! * p[i * rank + d]!;
      for (let i = 0; i < rows; i++) p[i * rank + c]! -= dot * p[i * rank + d]!;
    }
    let norm = 0;
    for (let i = 0; i < rows; i++) norm += p[i * rank + c]! ** 2;
    const keep = norm > 1e-24 * Math.max(before, 1e-300);
    const inv = keep ? 1 / Math.sqrt(norm) : 0;
    for (let i = 0; i < rows; i++) p[i * rank + c]! *= inv;
  }
}

/** Options of {@linkcode lowRankCompressor}. */
export interface LowRankCompressorOptions {
  /** Target rank (clamped to each matrix's min(rows, cols)). */
  rank: number;
  /** [rows, cols] of each parameter to compress; others pass through unchanged. */
  shapes: Readonly<Record<string, readonly [number, number]>>;
  /** Power iterations per step. @default 1 */
  powerIterations?: number;
  /** Seed of the initial Q (mixed with each parameter's name). @default 0 */
  seed?: number;
}

/** Per-tensor state of {@linkcode lowRankCompressor}: the warm start, or null
 * for a tensor passed through uncompressed. */
export interface LowRankCompressorState {
  /** Q [cols, rank] from the previous step. */
  readonly q: Float32Array | null;
}

/**
 * PowerSGD as a stateful compressor for {@linkcode errorFeedback}; the warm
 * start Q of each matrix is kept in the compressor state.
 *
 * @param options Rank, shapes, iterations and seed.
 * @returns A {@linkcode StatefulCompressor}.
 */
export function lowRankCompressor(
  options: LowRankCompressorOptions,
): StatefulCompressor<LowRankCompressorState> {
  const { rank, shapes, powerIterations = 1, seed = 0 } = options;
  if (!Number.isSafeInteger(rank) || rank < 1) {
    throw new RangeError(
      `Cannot build a low-rank compressor as 'rank' must be a positive integer: ` +
        `current value is ${rank}`,
    );
  }
  return {
    init(x: Float32Array, name: string): LowRankCompressorState {
      const shape = shapes[name];
      if (shape === undefined) return { q: null };
      const [rows, cols] = shape;
      if (rows * cols !== x.length) {
        throw new RangeError(
          `Cannot build a low-rank compressor: '${name}' has ${x.length} elements, ` +
            `not [${rows}, ${cols}]`,
        );
      }
      const r = Math.min(rank, rows, cols);
      const rng = resolvePrng({ seed: mixSeed(seed, 0, name) });
      const q = new Float32Array(cols * r);
      for (let i = 0; i < q.length; i++) q[i] = rng.normal();
      return { q };
    },
    compress(
      x: Float32Array,
      state: LowRankCompressorState,
      context,
    ): [Float32Array, LowRankCompressorState] {
      const shape = shapes[context.name];
      if (shape === undefined || state.q === null) return [x.slice(), state];
      const [rows, cols] = shape;
      const r = state.q.length / cols;
      const out = lowRankCompress(x, { rows, cols, rank: r, q: state.q, powerIterations });
      return [out.approx, { q: out.q }];
    },
  };
}
