/**
 * MSE-optimal grids for the standard normal, computed (and cached) by the
 * library: Lloyd–Max scalar quantizers from exact Gaussian integrals, and
 * 2-dimensional vector grids fitted by seeded k-means on normal samples.
 * These are the grids HIGGS rounds Hadamard-rotated weights to. Web-standard only.
 *
 * @see S. P. Lloyd, "Least squares quantization in PCM" (1982); J. Max,
 * "Quantizing for minimum distortion" (1960).
 * @see V. Malinovskii et al., "Pushing the Limits of Large Language Model
 * Quantization via the Linearity Theorem" (HIGGS, 2024), Section 4.
 * @module
 */

import { prng } from "../core/prng.ts";
import { normalInterval, normalIntervalError, normalPdf, normalQuantile } from "./_normal.ts";

/** A scalar grid for N(0, 1). */
export interface ScalarGrid {
  /** Bits per value; the grid has 2^bits levels. */
  readonly bits: number;
  /** Levels in increasing order, [2^bits]. */
  readonly levels: Float64Array;
  /** Decision thresholds (midpoints of neighbouring levels), [2^bits − 1]. */
  readonly thresholds: Float64Array;
  /** E[(X − Q(X))²] for X ~ N(0, 1), from exact integrals. */
  readonly mse: number;
  /** Lloyd iterations run. */
  readonly iterations: number;
}

/** A vector grid for N(0, I_p). */
export interface VectorGrid {
  /** Bits per coordinate; the grid has 2^(bits·p) points. */
  readonly bits: number;
  /** Dimension. */
  readonly p: number;
  /** Points, row-major [2^(bits·p), p]. */
  readonly points: Float64Array;
  /** Mean squared error per coordinate on held-out normal samples. */
  readonly mse: number;
}

const scalarCache = new Map<number, ScalarGrid>();
const vectorCache = new Map<string, VectorGrid>();

function checkBits(bits: number, max: number, what: string): void {
  if (!Number.isInteger(bits) || bits < 1 || bits > max) {
    throw new RangeError(
      `Cannot build ${what} as 'bits' must be an integer in [1, ${max}]: current value is ${bits}`,
    );
  }
}

/**
 * The Lloyd–Max quantizer of N(0, 1) with 2^bits levels: alternates
 * thresholds at midpoints and levels at conditional means
 * E[X | t_{i−1} < X < t_i] = (φ(t_{i−1}) − φ(t_i)) / P_i until the levels move
 * less than 1e-13. Cached per `bits`; the arrays returned are fresh copies.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lloydMaxGrid } from "./lloyd_max.ts";
 * const g = lloydMaxGrid(2);
 * assert(Math.abs(g.mse - 0.1175) < 1e-4);
 * ```
 * @param bits 1–8.
 * @returns The grid and its MSE.
 */
export function lloydMaxGrid(bits: number): ScalarGrid {
  checkBits(bits, 8, "a Lloyd–Max grid");
  let g = scalarCache.get(bits);
  if (g === undefined) {
    g = computeLloydMax(bits);
    scalarCache.set(bits, g);
  }
  return { ...g, levels: g.levels.slice(), thresholds: g.thresholds.slice() };
}

function computeLloydMax(bits: number): ScalarGrid {
  const L = 2 ** bits;
  const half = L / 2;
  // By symmetry only the positive half is iterated: levels y[half..L) mirror y[0..half).
  // Start from the high-resolution optimum: point density ∝ φ^(1/3), i.e. N(0, 3) quantiles.
  const pos = new Float64Array(half);
  for (let i = 0; i < half; i++) pos[i] = Math.sqrt(3) * normalQuantile((half + i + 0.5) / L);
  let iterations = 0;
  // A few Lloyd steps, then Newton on F(y) = y − c(y) (tridiagonal Jacobian, from
  // ∂c/∂a = φ(a)(c − a)/P and ∂c/∂b = φ(b)(b − c)/P), which converges quadratically where
  // plain Lloyd iteration needs ~10^5 steps at 8 bits. A Newton step that would unsort the
  // levels or increase the residual is replaced by a Lloyd step.
  const c = new Float64Array(half);
  const sub = new Float64Array(half), diag = new Float64Array(half), sup = new Float64Array(half);
  const residual = (): number => {
    let worst = 0, lo = 0;
    for (let i = 0; i < half; i++) {
      const hi = i + 1 < half ? 0.5 * (pos[i]! + pos[i + 1]!) : Infinity;
      const p = normalInterval(lo, hi);
      const pa = normalPdf(lo), pb = normalPdf(hi);
      const ci = (pa - pb) / p;
      c[i] = ci;
      const dA = i > 0 ? (pa * (ci - lo)) / p : 0;
      const dB = Number.isFinite(hi) ? (pb * (hi - ci)) / p : 0;
      sub[i] = -0.5 * dA;
      sup[i] = -0.5 * dB;
      diag[i] = 1 - 0.5 * (dA + dB);
      worst = Math.max(worst, Math.abs(pos[i]! - ci));
      lo = hi;
    }
    return worst;
  };
  let res = residual();
  const step = new Float64Array(half), cp = new Float64Array(half);
  for (; iterations < 500 && res > 1e-11; iterations++) {
    // Thomas algorithm for J·step = y − c.
    for (let i = 0; i < half; i++) {
      const rhs = pos[i]! - c[i]!;
      const den = i > 0 ? diag[i]! - sub[i]! * cp[i - 1]! : diag[i]!;
      cp[i] = sup[i]! / den;
      step[i] = (i > 0 ? rhs - sub[i]! * step[i - 1]! : rhs) / den;
    }
    for (let i = half - 2; i >= 0; i--) step[i] = step[i]! - cp[i]! * step[i + 1]!;
    const old = pos.slice();
    let sorted = true;
    for (let i = 0; i < half; i++) {
      pos[i] = old[i]! - step[i]!;
      if (!(pos[i]! > (i > 0 ? pos[i - 1]! : 0))) sorted = false;
    }
    const next = sorted ? residual() : Infinity;
    if (next < res) {
      res = next;
      continue;
    }
    pos.set(old);
    residual();
    pos.set(c); // Lloyd step: levels to the centroids
    res = residual();
  }
  const levels = new Float64Array(L);
  for (let i = 0; i < half; i++) {
    levels[half + i] = pos[i]!;
    levels[half - 1 - i] = -pos[i]!;
  }
  const thresholds = new Float64Array(L - 1);
  for (let i = 0; i < L - 1; i++) thresholds[i] = 0.5 * (levels[i]! + levels[i + 1]!);
  let mse = 0;
  for (let i = 0; i < L; i++) {
    const a = i === 0 ? -Infinity : thresholds[i - 1]!;
    const b = i === L - 1 ? Infinity : thresholds[i]!;
    mse += normalIntervalError(a, b, levels[i]!);
  }
  return { bits, levels, thresholds, mse, iterations };
}

/**
 * Index of the nearest level (binary search over the thresholds).
 *
 * @param thresholds Increasing decision thresholds, [L − 1].
 * @param x The value.
 * @returns The level index in [0, L).
 */
export function nearestLevel(thresholds: Float64Array, x: number): number {
  let lo = 0, hi = thresholds.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (x > thresholds[mid]!) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Options of {@linkcode gaussianVectorGrid}. */
export interface VectorGridOptions {
  /** Dimension (only 2 is supported). @default 2 */
  p?: number;
  /** Seed of the training and held-out samples. @default 0 */
  seed?: number;
  /** Training samples per grid point. @default 128 */
  samplesPerPoint?: number;
  /** k-means iterations. @default 40 */
  iterations?: number;
}

/**
 * A grid of 2^(bits·p) points for N(0, I_p) fitted by k-means (Lloyd's
 * algorithm on samples), started from the product of the scalar Lloyd–Max
 * grids so that it can only improve on them. Cached per options.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gaussianVectorGrid, lloydMaxGrid } from "./lloyd_max.ts";
 * const g = gaussianVectorGrid(2, { samplesPerPoint: 64, iterations: 10 });
 * assert(g.points.length === 16 * 2 && g.mse < lloydMaxGrid(2).mse * 1.02);
 * ```
 * @param bits Bits per coordinate, 1–4.
 * @param options Dimension, seed, sample count, iterations.
 * @returns The grid.
 */
export function gaussianVectorGrid(bits: number, options: VectorGridOptions = {}): VectorGrid {
  const { p = 2, seed = 0, samplesPerPoint = 128, iterations = 40 } = options;
  checkBits(bits, 4, "a vector grid");
  if (p !== 2) {
    throw new RangeError(`Cannot build a vector grid as 'p' must be 2: current value is ${p}`);
  }
  if (!Number.isInteger(samplesPerPoint) || samplesPerPoint < 1) {
    throw new RangeError(
      `Cannot build a vector grid as 'samplesPerPoint' must be a positive integer: current value is ${samplesPerPoint}`,
    );
  }
  if (!Number.isInteger(iterations) || iterations < 0) {
    throw new RangeError(
      `Cannot build a vector grid as 'iterations' must be a non-negative integer: current value is ${iterations}`,
    );
  }
  const key = `${bits}:${p}:${seed}:${samplesPerPoint}:${iterations}`;
  let g = vectorCache.get(key);
  if (g === undefined) {
    g = computeVectorGrid(bits, seed, samplesPerPoint, iterations);
    vectorCache.set(key, g);
  }
  return { ...g, points: g.points.slice() };
}

function computeVectorGrid(
  bits: number,
  seed: number,
  samplesPerPoint: number,
  iterations: number,
): VectorGrid {
  const scalar = lloydMaxGrid(bits).levels;
  const s = scalar.length;
  const K = s * s;
  const points = new Float64Array(2 * K);
  for (let i = 0; i < s; i++) {
    for (let j = 0; j < s; j++) {
      points[2 * (i * s + j)] = scalar[i]!;
      points[2 * (i * s + j) + 1] = scalar[j]!;
    }
  }
  const rng = prng(seed);
  const N = K * samplesPerPoint;
  const x = new Float64Array(2 * N);
  for (let i = 0; i < 2 * N; i++) x[i] = rng.normal();
  const sum = new Float64Array(2 * K);
  const count = new Float64Array(K);
  for (let it = 0; it < iterations; it++) {
    sum.fill(0);
    count.fill(0);
    const nearest = nearestPointSearch(points);
    for (let i = 0; i < N; i++) {
      const a = x[2 * i]!, b = x[2 * i + 1]!;
      const k = nearest(a, b);
      sum[2 * k] = sum[2 * k]! + a;
      sum[2 * k + 1] = sum[2 * k + 1]! + b;
      count[k] = count[k]! + 1;
    }
    for (let k = 0; k < K; k++) {
      const c = count[k]!;
      if (c > 0) {
        points[2 * k] = sum[2 * k]! / c;
        points[2 * k + 1] = sum[2 * k + 1]! / c;
      }
    }
  }
  // Held-out estimate of the per-coordinate MSE.
  const test = prng(seed ^ 0x2545f491);
  const M = Math.max(20000, N);
  let err = 0;
  const nearest = nearestPointSearch(points);
  for (let i = 0; i < M; i++) {
    const a = test.normal(), b = test.normal();
    const k = nearest(a, b);
    const da = a - points[2 * k]!, db = b - points[2 * k + 1]!;
    err += da * da + db * db;
  }
  return { bits, p: 2, points, mse: err / (2 * M) };
}

/**
 * A nearest-point search over a 2-D grid: points sorted by their first
 * coordinate, scanned outwards from the query until the first-coordinate gap
 * alone exceeds the best distance (exact, typically ~√K candidates).
 *
 * @param points Row-major [K, 2].
 * @returns `(a, b) => index` of the nearest point (ties to the lower sorted position).
 */
export function nearestPointSearch(points: Float64Array): (a: number, b: number) => number {
  const K = points.length / 2;
  const order = new Int32Array(K);
  for (let k = 0; k < K; k++) order[k] = k;
  order.sort((i, j) => points[2 * i]! - points[2 * j]!);
  const xs = new Float64Array(K), ys = new Float64Array(K);
  for (let k = 0; k < K; k++) {
    xs[k] = points[2 * order[k]!]!;
    ys[k] = points[2 * order[k]! + 1]!;
  }
  return (a: number, b: number): number => {
    let lo = 0, hi = K;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (xs[mid]! < a) lo = mid + 1;
      else hi = mid;
    }
    let best = -1, bestD = Infinity;
    for (let j = lo; j < K; j++) {
      const da = xs[j]! - a;
      if (da * da >= bestD) break;
      const db = ys[j]! - b;
      const d = da * da + db * db;
      if (d < bestD) {
        bestD = d;
        best = j;
      }
    }
    for (let j = lo - 1; j >= 0; j--) {
      const da = a - xs[j]!;
      if (da * da >= bestD) break;
      const db = ys[j]! - b;
      const d = da * da + db * db;
      if (d < bestD) {
        bestD = d;
        best = j;
      }
    }
    return order[best]!;
  };
}
