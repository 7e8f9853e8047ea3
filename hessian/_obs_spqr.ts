/**
 * Library-internal: the OBS solver's "spqr" decider. Columns are quantized in
 * small groups (in processing order) on min–max grids whose scales and zero
 * points are quantized again in runs along the output dimension; a weight
 * whose OBS error (w − q)²/[U]_jj² exceeds τ times the layer's typical error
 * is an outlier, kept in float16. Follows the decisions of the authors'
 * `SPQRUtil.quantize` (github.com/Vahe1994/SpQR, spqr_engine.py): the
 * typical error, the leave-one-out screening before each group's grid is
 * fitted, the grid fitted on the current (already updated) weights, and the
 * outlier test on each column's quantization error. Web-standard only.
 *
 * @see Dettmers et al., "SpQR" (2023), Algorithm 1 and §4.1–4.2.
 *
 * @module
 */

import { codeOnGrid, minMaxGrid, quantizeStatistics, valueOnGrid } from "../core/_bilevel_grid.ts";
import type { ObsBilevelStatistics, ObsDecider } from "./obs.ts";
import { type ColumnDecider, fail, type SolveContext } from "./_obs_deciders.ts";

const f = Math.fround;

/** The "spqr" decider's options. */
type SpqrDecider = Extract<ObsDecider, { kind: "spqr" }>;

/** What the "spqr" decider decided (positions in processing order until unpermuted). */
export interface SpqrState {
  /** Codes [rows, n]; an outlier's code is that of 0, as the reference stores it. */
  codes: Uint8Array;
  /** Decoded first-level steps [rows, groups]. */
  scales: Float32Array;
  /** Decoded first-level zero points [rows, groups]. */
  zeros: Float32Array;
  /** Group of each position [n]. */
  gIdx: Int32Array;
  /** The stored statistics. */
  statistics: ObsBilevelStatistics;
  /** 1 where the weight is an outlier [rows, n]. */
  outliers: Uint8Array;
}

/**
 * Checks a "spqr" decider's options, naming the one that is wrong.
 *
 * @param d The options.
 * @param what The operation, for messages ("run the OBS solver").
 * @throws {RangeError} for a value out of range; {TypeError} for a non-boolean flag.
 */
export function checkSpqrOptions(d: Omit<SpqrDecider, "kind">, what: string): void {
  const int = (name: string, v: unknown, lo: number, hi: number): void => {
    if (!(Number.isInteger(v) && (v as number) >= lo && (v as number) <= hi)) {
      throw new RangeError(
        `Cannot ${what} as '${name}' must be an integer in [${lo}, ${hi}]: current value is ${v}`,
      );
    }
  };
  int("bits", d.bits, 1, 8);
  int("groupSize", d.groupSize, 1, 2 ** 31 - 1);
  int("scaleBits", d.scaleBits, 1, 8);
  int("zeroBits", d.zeroBits, 1, 8);
  int("statisticGroupSize", d.statisticGroupSize, 1, 2 ** 31 - 1);
  const tau = d.outlierThreshold;
  if (typeof tau !== "number" || !(tau >= 0)) {
    throw new RangeError(
      `Cannot ${what} as 'outlierThreshold' must be a number >= 0 (Infinity: no outliers): ` +
        `current value is ${tau}`,
    );
  }
  if (d.simplifiedOutliers !== undefined && typeof d.simplifiedOutliers !== "boolean") {
    throw new TypeError(
      `Cannot ${what} as 'simplifiedOutliers' must be a boolean: current value is ${d.simplifiedOutliers}`,
    );
  }
}

/**
 * Each column's variance over the rows (unbiased, as `torch.var`) on the
 * weights as given with dead columns zeroed, in processing order: the
 * typical error's numerators, shared by the CPU and GPU solvers.
 *
 * @param rows Rows of W (at least 2).
 * @param n Columns.
 * @param cleaned Weights with dead columns zeroed, original order [rows, n].
 * @param perm Processing order.
 * @returns The variances [n], position order.
 */
export function spqrColumnVariances(
  rows: number,
  n: number,
  cleaned: Float32Array,
  perm: Int32Array,
): Float64Array {
  // Row-major passes (each column still sums its rows in order).
  const mean = new Float64Array(n), ss = new Float64Array(n);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < n; c++) mean[c] = mean[c]! + cleaned[r * n + c]!;
  }
  for (let c = 0; c < n; c++) mean[c] = mean[c]! / rows;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < n; c++) ss[c] = ss[c]! + (cleaned[r * n + c]! - mean[c]!) ** 2;
  }
  const out = new Float64Array(n);
  for (let pos = 0; pos < n; pos++) out[pos] = ss[perm[pos]!]! / (rows - 1);
  return out;
}

/**
 * The outlier threshold on (w − q)²/[U]_jj²: τ times the mean over columns of
 * the column's variance over the rows divided by [U]_jj²
 * ({@linkcode spqrColumnVariances}). ∞ when τ is ∞ or W has one row (no
 * spread to compare with).
 */
function outlierThreshold(ctx: SolveContext, tau: number): number {
  const { rows, n, cleaned, perm, u } = ctx;
  if (tau === Infinity || rows < 2) return Infinity;
  const v = spqrColumnVariances(rows, n, cleaned, perm);
  let typical = 0;
  for (let pos = 0; pos < n; pos++) {
    const d = u[pos * n + pos]!;
    typical += v[pos]! / (d * d);
  }
  return tau * (typical / n);
}

/**
 * terms[k] = ((q(v[k]) − v[k])/d[k])², k ≠ skip, on the min–max grid of
 * [lo, hi] (terms[skip] = 0).
 */
function groupTerms(
  v: Float64Array,
  dg: Float64Array,
  len: number,
  skip: number,
  lo: number,
  hi: number,
  maxq: number,
  terms: Float64Array,
): void {
  const { scale, zero } = minMaxGrid(lo, hi, maxq);
  for (let k = 0; k < len; k++) {
    const x = v[k]!;
    const t = (valueOnGrid(codeOnGrid(x, scale, zero, maxq), scale, zero) - x) / dg[k]!;
    terms[k] = k === skip ? 0 : t * t;
  }
}

/** Σ terms[k] over k < len, k ≠ skip. */
function sumBut(terms: Float64Array, len: number, skip: number): number {
  let e = 0;
  for (let k = 0; k < len; k++) if (k !== skip) e += terms[k]!;
  return e;
}

/**
 * The reference's leave-one-out screening of one row of a group: marks in
 * `likely` the weights whose removal from the grid's fit lowers the group's
 * OBS error Σ((q − w)/[U]_jj)² (the removed weight counted as exact) by more
 * than the threshold. Leaving out a weight other than the (first) smallest
 * or largest keeps the grid, so only those two need a grid of their own.
 */
function screenRow(
  v: Float64Array,
  dg: Float64Array,
  len: number,
  maxq: number,
  threshold: number,
  likely: Uint8Array,
  terms: Float64Array,
  other: Float64Array,
): void {
  // Smallest and largest two, so that each leave-one-out range is O(1).
  let min1 = Infinity, min2 = Infinity, max1 = -Infinity, max2 = -Infinity, iMin = -1, iMax = -1;
  for (let k = 0; k < len; k++) {
    const x = v[k]!;
    if (x < min1) {
      min2 = min1;
      min1 = x;
      iMin = k;
    } else if (x < min2) min2 = x;
    if (x > max1) {
      max2 = max1;
      max1 = x;
      iMax = k;
    } else if (x > max2) max2 = x;
  }
  groupTerms(v, dg, len, -1, min1, max1, maxq, terms);
  const base = sumBut(terms, len, -1);
  for (let j = 0; j < len; j++) {
    let loo = 0;
    if (len > 1 && (j === iMin || j === iMax)) {
      groupTerms(v, dg, len, j, j === iMin ? min2 : min1, j === iMax ? max2 : max1, maxq, other);
      loo = sumBut(other, len, j);
    } else if (len > 1) loo = sumBut(terms, len, j);
    likely[j] = base - loo > threshold ? 1 : 0;
  }
}

/**
 * Compiles the "spqr" decider for one solve on the CPU (it needs whole
 * columns, as the second level spans rows); the GPU solver runs the same
 * decisions in `kernels/obs_spqr_kernel.ts`.
 *
 * @param ctx The solve.
 * @param d The options (checked here).
 * @returns The decider and the state it fills.
 */
export function spqrDecider(
  ctx: SolveContext,
  d: SpqrDecider,
): { decider: ColumnDecider; spqr: SpqrState } {
  checkSpqrOptions(d, "run the OBS solver");
  const { rows, n, u } = ctx;
  const { bits, groupSize: gs, scaleBits, zeroBits, statisticGroupSize: sgs } = d;
  const simplified = d.simplifiedOutliers ?? false;
  const maxq = 2 ** bits - 1;
  const groups = Math.ceil(n / gs), rowGroups = Math.ceil(rows / sgs);
  const threshold = outlierThreshold(ctx, d.outlierThreshold);
  const codes = new Uint8Array(rows * n), outliers = new Uint8Array(rows * n);
  const scales = new Float32Array(rows * groups), zeros = new Float32Array(rows * groups);
  const gIdx = Int32Array.from({ length: n }, (_, pos) => Math.floor(pos / gs));
  const statistics: ObsBilevelStatistics = {
    scaleCodes: new Uint8Array(rows * groups),
    zeroCodes: new Uint8Array(rows * groups),
    scaleLo: new Float32Array(groups * rowGroups),
    scaleHi: new Float32Array(groups * rowGroups),
    zeroLo: new Float32Array(groups * rowGroups),
    zeroHi: new Float32Array(groups * rowGroups),
    outlierThreshold: threshold,
  };
  const v = new Float64Array(gs), dg = new Float64Array(gs), likely = new Uint8Array(gs);
  const terms = new Float64Array(gs), other = new Float64Array(gs);

  /** Fits group k (positions [pos, pos + len)) on the current weights. */
  const fitGroup = (pos: number, i1: number, block: Float32Array): void => {
    const k = gIdx[pos]!, len = Math.min(gs, n - pos), i2 = i1 + block.length / rows;
    for (let t = 0; t < len; t++) dg[t] = u[(pos + t) * n + pos + t]!;
    const screen = !simplified && threshold !== Infinity;
    for (let r = 0; r < rows; r++) {
      for (let t = 0; t < len; t++) {
        const p = pos + t; // in the block: updated there; later: as the lazy updates left it
        v[t] = p < i2 ? block[(p - i1) * rows + r]! : ctx.w[r * n + p]!;
      }
      let lo = Infinity, hi = -Infinity;
      if (screen) {
        // Fit without the likely outliers: they take the mean of the others.
        screenRow(v, dg, len, maxq, threshold, likely, terms, other);
        let sum = 0, count = 0;
        for (let t = 0; t < len; t++) {
          if (!likely[t]) {
            sum += v[t]!;
            count++;
          }
        }
        const mean = f(sum / Math.max(count, 1));
        for (let t = 0; t < len; t++) {
          const x = likely[t] ? mean : v[t]!;
          if (x < lo) lo = x;
          if (x > hi) hi = x;
        }
      } else {
        for (let t = 0; t < len; t++) {
          if (v[t]! < lo) lo = v[t]!;
          if (v[t]! > hi) hi = v[t]!;
        }
      }
      const g = minMaxGrid(lo, hi, maxq);
      scales[r * groups + k] = g.scale;
      zeros[r * groups + k] = g.zero;
    }
    // The second level: runs of `sgs` rows of this group's statistics.
    for (let b = 0; b < rowGroups; b++) {
      const start = b * sgs * groups + k, len2 = Math.min(sgs, rows - b * sgs);
      const s = quantizeStatistics(scales, start, groups, len2, scaleBits, statistics.scaleCodes);
      const z = quantizeStatistics(zeros, start, groups, len2, zeroBits, statistics.zeroCodes);
      statistics.scaleLo[k * rowGroups + b] = s.lo;
      statistics.scaleHi[k * rowGroups + b] = s.hi;
      statistics.zeroLo[k * rowGroups + b] = z.lo;
      statistics.zeroHi[k * rowGroups + b] = z.hi;
    }
  };

  return {
    spqr: { codes, scales, zeros, gIdx, statistics, outliers },
    decider: {
      wholeColumns: true,
      beginBlock() {},
      decide(pos, i1, block, _r0, _r1, q) {
        if (pos % gs === 0) fitGroup(pos, i1, block);
        const k = gIdx[pos]!, o = (pos - i1) * rows, hd = u[pos * n + pos]!;
        for (let r = 0; r < rows; r++) {
          const s = scales[r * groups + k]!, z = zeros[r * groups + k]!, x = block[o + r]!;
          const c = codeOnGrid(x, s, z, maxq);
          const value = valueOnGrid(c, s, z);
          const e = f(f(x - value) / hd);
          if (e * e > threshold) {
            const kept = Math.f16round(x);
            if (!Number.isFinite(kept)) {
              fail(
                `the outlier at row ${r}, column ${ctx.perm[pos]} (${x}) does not fit in float16`,
              );
            }
            outliers[r * n + pos] = 1;
            codes[r * n + pos] = codeOnGrid(0, s, z, maxq);
            q[r] = kept;
          } else {
            codes[r * n + pos] = c;
            q[r] = value;
          }
        }
      },
    },
  };
}
