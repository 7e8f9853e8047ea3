/**
 * HIGGS: data-free quantization by random Hadamard rotation in groups, a
 * per-group scale, and rounding to an MSE-optimal grid for the standard
 * normal (Lloyd–Max for p = 1, a k-means grid for p = 2). After the rotation a
 * group of weights is close to Gaussian whatever the original distribution,
 * so one fixed grid fits all groups. Web-standard only.
 *
 * @see V. Malinovskii et al., "Pushing the Limits of Large Language Model
 * Quantization via the Linearity Theorem" (2024), Algorithm 1.
 * @module
 */

import { asFloat32 } from "../core/convert.ts";
import { randomHadamard, type Rotation } from "../core/rotation.ts";
import { dims2, type Tensor, tensor } from "../core/tensor.ts";
import { gaussianVectorGrid, lloydMaxGrid, nearestLevel, nearestPointSearch } from "./lloyd_max.ts";
import type { CompressionStats } from "./quantized_weight.ts";

/** Options of {@linkcode higgs}. */
export interface HiggsOptions {
  /** Bits per weight of the grid: 1–8 for p = 1, 1–4 for p = 2. */
  bits: number;
  /**
   * Consecutive input columns rotated together and sharing one scale; a
   * constructible Hadamard order dividing the columns (64, 128, 256, …).
   * @default 128
   */
  groupSize?: number;
  /** Grid dimension: 1 (Lloyd–Max scalar grid) or 2 (k-means vector grid). @default 1 */
  p?: 1 | 2;
  /** Seed of the rotation's random signs. @default 0 */
  seed?: number;
  /**
   * Alternations of "round to the grid" and "refit the group's scale by least
   * squares" after the initial RMS scale (0 keeps the RMS scale).
   * @default 2
   */
  scaleSteps?: number;
}

/** A HIGGS-quantized weight; codes index the grid in the rotated basis. */
export interface HiggsWeight {
  /** Discriminant. */
  readonly kind: "higgs";
  /** [rows, cols] of the original weight. */
  readonly shape: readonly [number, number];
  /** Bits per weight of the grid. */
  readonly bits: number;
  /** Grid dimension. */
  readonly p: 1 | 2;
  /** Rotation group size. */
  readonly groupSize: number;
  /** Seed of the rotation (it is rebuilt from `groupSize` and `seed`). */
  readonly seed: number;
  /** Grid index per p rotated weights, [rows, cols / p]. */
  readonly codes: Uint8Array | Uint16Array;
  /** Scale per row and group, rounded to float16, [rows, cols / groupSize]. */
  readonly scales: Float32Array;
  /** The grid: levels [2^bits] for p = 1, points [2^(2·bits), 2] for p = 2. */
  readonly grid: Float64Array;
  /** bits + 16 / groupSize (float16 scales). */
  readonly bitsPerWeight: number;
  /** What was measured (`seconds`, `rotatedMse`: mean squared error, equal in both bases). */
  readonly stats: CompressionStats;
}

/**
 * Quantizes a weight with HIGGS: per row, each group of `groupSize` input
 * columns is rotated by the same seeded random Hadamard `Q` (v ↦ Q·v), scaled
 * to unit RMS, rounded to the nearest grid point, and its scale refit.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dequantizeHiggs, higgs } from "./higgs.ts";
 * import { tensor } from "../core/tensor.ts";
 * const w = tensor("f32", [2, 64], Float32Array.from({ length: 128 }, (_, i) => Math.sin(i)));
 * const q = await higgs(w, { bits: 4, groupSize: 64 });
 * const back = dequantizeHiggs(q);
 * assert(q.bitsPerWeight === 4.25 && Math.abs(back.data[5]! - Math.sin(5)) < 0.2);
 * ```
 * @param weight [rows, cols], any float dtype.
 * @param options Bits, group size, grid dimension, seed.
 * @returns The quantized weight.
 */
export async function higgs(weight: Tensor, options: HiggsOptions): Promise<HiggsWeight> {
  const { bits, groupSize = 128, p = 1, seed = 0, scaleSteps = 2 } = options;
  const [rows, cols] = dims2(weight, "weight");
  if (p !== 1 && p !== 2) {
    throw new RangeError(`Cannot quantize with HIGGS as 'p' must be 1 or 2: current value is ${p}`);
  }
  const maxBits = p === 1 ? 8 : 4;
  if (!Number.isInteger(bits) || bits < 1 || bits > maxBits) {
    throw new RangeError(
      `Cannot quantize with HIGGS as 'bits' must be an integer in [1, ${maxBits}] for p = ${p}: current value is ${bits}`,
    );
  }
  if (!Number.isInteger(groupSize) || groupSize < 2 || cols % groupSize !== 0 || groupSize % p) {
    throw new RangeError(
      `Cannot quantize with HIGGS as 'groupSize' must be an even integer dividing the ${cols} columns: current value is ${groupSize}`,
    );
  }
  if (!Number.isInteger(scaleSteps) || scaleSteps < 0) {
    throw new RangeError(
      `Cannot quantize with HIGGS as 'scaleSteps' must be a non-negative integer: current value is ${scaleSteps}`,
    );
  }
  const t0 = performance.now();
  const rotation = higgsRotation(groupSize, seed); // throws with nearest orders if not constructible
  const w = asFloat32(weight);
  for (let i = 0; i < w.length; i++) {
    if (!Number.isFinite(w[i]!)) {
      throw new RangeError(`Cannot quantize with HIGGS: weight element ${i} is ${w[i]}`);
    }
  }
  // Each group is a row of length groupSize: [rows·groups, groupSize].
  const groups = cols / groupSize;
  const v = rotation.applyToRows(tensor("f64", [rows * groups, groupSize], Float64Array.from(w)))
    .data;
  let grid: Float64Array;
  let round: (
    x: Float64Array,
    out: Float64Array,
    codes: Uint8Array | Uint16Array,
    at: number,
  ) => void;
  if (p === 1) {
    const g = lloydMaxGrid(bits);
    grid = g.levels;
    const th = g.thresholds;
    round = (x, out, codes, at) => {
      for (let i = 0; i < x.length; i++) {
        const k = nearestLevel(th, x[i]!);
        codes[at + i] = k;
        out[i] = grid[k]!;
      }
    };
  } else {
    grid = gaussianVectorGrid(bits).points;
    const nearest = nearestPointSearch(grid);
    round = (x, out, codes, at) => {
      for (let i = 0; i < x.length; i += 2) {
        const k = nearest(x[i]!, x[i + 1]!);
        codes[at + i / 2] = k;
        out[i] = grid[2 * k]!;
        out[i + 1] = grid[2 * k + 1]!;
      }
    };
  }
  const perGroup = groupSize / p;
  const codes = bits * p <= 8 ? new Uint8Array(rows * cols / p) : new Uint16Array(rows * cols / p);
  const scales = new Float32Array(rows * groups);
  const x = new Float64Array(groupSize), q = new Float64Array(groupSize);
  let sq = 0;
  for (let gi = 0; gi < rows * groups; gi++) {
    const off = gi * groupSize;
    let ss = 0;
    for (let i = 0; i < groupSize; i++) ss += v[off + i]! * v[off + i]!;
    let s = Math.sqrt(ss / groupSize);
    if (s === 0) {
      scales[gi] = 0;
      round(x.fill(0), q, codes, gi * perGroup); // codes of the level nearest 0
      continue;
    }
    for (let step = 0; step <= scaleSteps; step++) {
      for (let i = 0; i < groupSize; i++) x[i] = v[off + i]! / s;
      round(x, q, codes, gi * perGroup);
      if (step === scaleSteps) break;
      // Least-squares scale for these codes: argmin_s Σ (v − s·q)².
      let vq = 0, qq = 0;
      for (let i = 0; i < groupSize; i++) {
        vq += v[off + i]! * q[i]!;
        qq += q[i]! * q[i]!;
      }
      if (!(qq > 0 && vq > 0)) break;
      s = vq / qq;
    }
    // Final scale for the final codes, stored as float16.
    let vq = 0, qq = 0;
    for (let i = 0; i < groupSize; i++) {
      vq += v[off + i]! * q[i]!;
      qq += q[i]! * q[i]!;
    }
    const stored = Math.f16round(qq > 0 && vq > 0 ? vq / qq : s);
    scales[gi] = stored;
    for (let i = 0; i < groupSize; i++) {
      const e = v[off + i]! - stored * q[i]!;
      sq += e * e;
    }
  }
  await Promise.resolve();
  return {
    kind: "higgs",
    shape: [rows, cols],
    bits,
    p,
    groupSize,
    seed,
    codes,
    scales,
    grid: grid.slice(),
    bitsPerWeight: bits + 16 / groupSize,
    stats: { seconds: (performance.now() - t0) / 1000, rotatedMse: sq / (rows * cols) },
  };
}

/**
 * The rotation HIGGS uses for a group size and seed: `randomHadamard(groupSize, { seed })`.
 *
 * @param groupSize The group size (a constructible Hadamard order).
 * @param seed The seed.
 * @returns The rotation.
 */
export function higgsRotation(groupSize: number, seed: number): Rotation {
  return randomHadamard(groupSize, { seed });
}

/**
 * The float32 weight a HIGGS weight stands for, in the original basis:
 * per group, `Qᵀ·(scale · grid[codes])`.
 *
 * @param q The quantized weight.
 * @returns Ŵ, f32 [rows, cols].
 */
export function dequantizeHiggs(q: HiggsWeight): Tensor<"f32"> {
  const [rows, cols] = q.shape;
  const g = q.groupSize, groups = cols / g, perGroup = g / q.p;
  const rotated = new Float32Array(rows * cols);
  for (let gi = 0; gi < rows * groups; gi++) {
    const s = q.scales[gi]!;
    for (let j = 0; j < perGroup; j++) {
      const k = q.codes[gi * perGroup + j]!;
      if (q.p === 1) rotated[gi * g + j] = s * q.grid[k]!;
      else {
        rotated[gi * g + 2 * j] = s * q.grid[2 * k]!;
        rotated[gi * g + 2 * j + 1] = s * q.grid[2 * k + 1]!;
      }
    }
  }
  const rotation = higgsRotation(g, q.seed);
  const back = rotation.applyToRows(tensor("f32", [rows * groups, g], rotated), {
    transpose: true,
  });
  return tensor("f32", [rows, cols], back.data as Float32Array);
}
