/**
 * Library-internal: SpQR's two levels of min–max grids. The first level
 * quantizes weights on a grid fitted to a small group's [min, max] with an
 * unrounded zero point; the second level quantizes those grids' scales and
 * zero points again, in runs along the output dimension, with its own range
 * stored in float16. Shared by the OBS solver's "spqr" decider and by
 * `dequantize()`, so that both compute the same values. Web-standard only.
 *
 * @see Dettmers et al., "SpQR: A Sparse-Quantized Representation for
 *   Near-Lossless LLM Weight Compression" (2023), §4.1 (bilevel quantization).
 *
 * @module
 */

import { roundHalfEven } from "./uniform_grid.ts";

const f = Math.fround;
/** The reference's guard against a zero step (`scale.clamp_min(1e-9)`), in float32. */
const EPS = f(1e-9);

/** A first-level grid: Ŵ = scale·(code − zero), with a real-valued zero point. */
export interface MinMaxGrid {
  /** Step (float32). */
  scale: number;
  /** Zero point in code units, not rounded (float32). */
  zero: number;
}

/**
 * The grid the reference's `find_params` fits to values in [min, max] (no
 * widening to include 0, zero point not rounded): step (max − min)/maxq,
 * zero −min/step; an empty range becomes [−1, 1], as in the reference.
 *
 * @param min Smallest value (float32).
 * @param max Largest value (float32).
 * @param maxq Largest code, 2^bits − 1.
 * @returns The grid.
 */
export function minMaxGrid(min: number, max: number, maxq: number): MinMaxGrid {
  if (min === max) {
    min = -1;
    max = 1;
  }
  const scale = f(f(max - min) / maxq);
  return { scale, zero: f(-min / scale) };
}

/**
 * The code of `x`: clamp(round(x/scale + zero), 0, maxq), ties to even, in
 * float32 steps as the reference.
 *
 * @param x Value.
 * @param scale Step.
 * @param zero Zero point (real).
 * @param maxq Largest code.
 * @returns The code.
 */
export function codeOnGrid(x: number, scale: number, zero: number, maxq: number): number {
  const c = roundHalfEven(f(f(x / (scale < EPS ? EPS : scale)) + zero));
  return c < 0 ? 0 : c > maxq ? maxq : c;
}

/**
 * The value of a code, scale·(code − zero) in float32.
 *
 * @param code Code.
 * @param scale Step.
 * @param zero Zero point.
 * @returns The value.
 */
export function valueOnGrid(code: number, scale: number, zero: number): number {
  return f(scale * f(code - zero));
}

/**
 * A second-level value: lo + code·(hi − lo)/maxq in float32, with lo and hi
 * the run's range as stored (float16 values). A constant run (lo = hi) is lo.
 *
 * @param code Code in [0, maxq].
 * @param lo Stored minimum.
 * @param hi Stored maximum.
 * @param maxq Largest code.
 * @returns The statistic.
 */
export function statisticValue(code: number, lo: number, hi: number, maxq: number): number {
  return f(lo + f(code * f(f(hi - lo) / maxq)));
}

/**
 * Quantizes a run of statistics in place (the second level): the run's range
 * [min, max] is stored as two float16 numbers (32 bits, as the paper's 16-bit
 * scale and zero), each value becomes a `bits`-bit code on the grid between
 * them, and `values` receives what the codes decode to.
 *
 * The reference fits this grid as its first level and keeps its scale and
 * zero in float32 while it quantizes; storing the range instead is the same
 * grid and keeps full float16 precision where a narrow range would make a
 * float16 scale subnormal or its zero point overflow. A constant run decodes
 * to its value (the reference's [−1, 1] fallback would move it).
 *
 * @param values Statistics; read at start + i·stride, i < len, and overwritten.
 * @param start First index.
 * @param stride Index step.
 * @param len Count.
 * @param bits Bits per code.
 * @param codes Receives the codes at the same indices.
 * @returns The stored range, float16 values.
 */
export function quantizeStatistics(
  values: Float32Array,
  start: number,
  stride: number,
  len: number,
  bits: number,
  codes: Uint8Array,
): { lo: number; hi: number } {
  let min = Infinity, max = -Infinity;
  for (let i = 0, p = start; i < len; i++, p += stride) {
    const v = values[p]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const lo = Math.f16round(min);
  let hi = Math.f16round(max);
  if (hi < lo) hi = lo;
  const maxq = 2 ** bits - 1;
  const step = f(f(hi - lo) / maxq);
  for (let i = 0, p = start; i < len; i++, p += stride) {
    let c = step > 0 ? roundHalfEven(f(values[p]! - lo) / step) : 0;
    c = c < 0 ? 0 : c > maxq ? maxq : c;
    codes[p] = c;
    values[p] = statisticValue(c, lo, hi, maxq);
  }
  return { lo, hi };
}
