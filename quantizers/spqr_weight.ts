/**
 * The stored form of a SpQR weight (`spqr()`): codes on small groups' grids,
 * those grids' scales and zero points as codes of a second level, float16
 * outliers in a CSR store, and the processing order; its dequantization and
 * its size. Web-standard only.
 *
 * @see Dettmers et al., "SpQR: A Sparse-Quantized Representation for
 *   Near-Lossless LLM Weight Compression" (2023), §4.1–4.3.
 *
 * @module
 */

import { statisticValue, valueOnGrid } from "../core/_bilevel_grid.ts";
import type { CompressionStats } from "../core/compression_stats.ts";

/**
 * One first-level statistic (the steps or the zero points) as stored: a code
 * per row and group, decoded on the float16 range of its run of rows.
 */
export interface SpqrStatistic {
  /** Bits per code. */
  readonly bits: number;
  /** Codes [rows, groups]. */
  readonly codes: Uint8Array;
  /** Smallest value of each run of `statisticGroupSize` rows (a float16 value) [groups, rowGroups]. */
  readonly lo: Float32Array;
  /** Largest value of each run (a float16 value) [groups, rowGroups]. */
  readonly hi: Float32Array;
}

/**
 * Outliers in compressed sparse rows: row r holds the entries
 * [rowStart[r], rowStart[r + 1]).
 */
export interface SpqrOutliers {
  /** Start of each row's entries, [rows + 1]. */
  readonly rowStart: Int32Array;
  /** Column of each entry (original order), increasing within a row, [count]. */
  readonly columns: Int32Array;
  /** The kept weights in float16, [count]. */
  readonly values: Float16Array;
}

/** Statistics of a SpQR quantization. */
export interface SpqrStats extends CompressionStats {
  /**
   * Storage per weight: codes, both levels of statistics (a code per row and
   * group for the scale and for the zero point; 2×16 bits per run of rows for
   * each), 32 bits per outlier (16 for the value, 16 for its column, as the
   * paper counts them), and 16 bits per column for the processing order when
   * there is one.
   */
  bitsPerWeight: number;
  /** Number of outliers. */
  outliers: number;
  /** Outliers / (rows·cols). */
  outlierFraction: number;
  /** The absolute threshold on (w − q)²/[U]_jj² (τ times the typical error). */
  outlierThreshold: number;
}

/** A SpQR-quantized weight. */
export interface SpqrWeight {
  /** Discriminant for `dequantize()`. */
  readonly kind: "spqr";
  /** [rows, cols] = [out features, in features]. */
  readonly shape: readonly [number, number];
  /** Bits per code. */
  readonly bits: number;
  /** Columns per first-level group (runs of the processing order). */
  readonly groupSize: number;
  /** Output rows per second-level run. */
  readonly statisticGroupSize: number;
  /** Codes [rows, cols], original column order (an outlier's is the code of 0). */
  readonly codes: Uint8Array;
  /** Group of each column [cols]. */
  readonly gIdx: Int32Array;
  /** The first-level steps. */
  readonly scales: SpqrStatistic;
  /** The first-level zero points (real-valued, not rounded). */
  readonly zeros: SpqrStatistic;
  /** The outliers, kept in float16. */
  readonly outliers: SpqrOutliers;
  /** Processing order (act-order), when not the identity. */
  readonly perm?: Int32Array;
  /** Bits per weight, outliers, timings. */
  readonly stats: SpqrStats;
}

/**
 * The decoded first-level statistic of every row and group [rows, groups].
 *
 * @param s The statistic.
 * @param rows Rows of the weight.
 * @param statisticGroupSize Rows per second-level run.
 * @returns The values the quantizer used.
 */
export function decodeSpqrStatistic(
  s: SpqrStatistic,
  rows: number,
  statisticGroupSize: number,
): Float32Array {
  const groups = s.codes.length / rows, rowGroups = Math.ceil(rows / statisticGroupSize);
  if (s.lo.length !== groups * rowGroups || s.hi.length !== groups * rowGroups) {
    throw new RangeError(
      `Cannot dequantize as a SpQR statistic has ${s.lo.length} runs: ${groups}·${rowGroups} expected`,
    );
  }
  const maxq = 2 ** s.bits - 1;
  const out = new Float32Array(rows * groups);
  for (let r = 0; r < rows; r++) {
    const b = Math.floor(r / statisticGroupSize);
    for (let k = 0; k < groups; k++) {
      const at = k * rowGroups + b;
      out[r * groups + k] = statisticValue(s.codes[r * groups + k]!, s.lo[at]!, s.hi[at]!, maxq);
    }
  }
  return out;
}

/**
 * The float32 weight a SpQR weight stands for: Ŵ[r, c] = s·(code − z) with
 * s and z the decoded statistics of row r and group gIdx[c], and the outliers'
 * float16 values where they are.
 *
 * @param q The SpQR weight.
 * @returns Ŵ [rows, cols], row-major.
 * @throws {RangeError} when the arrays do not match the shape.
 */
export function dequantizeSpqr(q: SpqrWeight): Float32Array {
  const [rows, cols] = q.shape;
  if (q.codes.length !== rows * cols || q.gIdx.length !== cols) {
    throw new RangeError(
      `Cannot dequantize as 'codes' (${q.codes.length}) or 'gIdx' (${q.gIdx.length}) do not match the shape [${q.shape}]`,
    );
  }
  const { rowStart, columns, values } = q.outliers;
  if (rowStart.length !== rows + 1 || columns.length !== values.length) {
    throw new RangeError(
      `Cannot dequantize as the outliers' 'rowStart' (${rowStart.length}) must have ${
        rows + 1
      } entries and 'columns' (${columns.length}) as many as 'values' (${values.length})`,
    );
  }
  const scales = decodeSpqrStatistic(q.scales, rows, q.statisticGroupSize);
  const zeros = decodeSpqrStatistic(q.zeros, rows, q.statisticGroupSize);
  const groups = scales.length / rows;
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const g = r * groups + q.gIdx[c]!;
      out[r * cols + c] = valueOnGrid(q.codes[r * cols + c]!, scales[g]!, zeros[g]!);
    }
    for (let e = rowStart[r]!; e < rowStart[r + 1]!; e++) out[r * cols + columns[e]!] = values[e]!;
  }
  return out;
}

/**
 * Bits per weight of a SpQR layout, everything counted: b bits per code,
 * (scaleBits + zeroBits) per row and group, 2·(16 + 16) per group and run of
 * rows (the float16 ranges of both statistics), 32 per outlier (a 16-bit
 * value and a 16-bit column index, as the paper counts them), and 16 per
 * column for a processing order. With groups and runs that divide the shape
 * and no order this is the paper's b + (sb + zb)/g + 64/(g·g₂) + 32·outliers/(rows·cols).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { spqrBitsPerWeight } from "./spqr_weight.ts";
 * // 3-bit codes, groups of 16, 3-bit statistics in runs of 16, no outliers:
 * // 3 + 6/16 + 64/256 = 3.625.
 * const bits = spqrBitsPerWeight({
 *   rows: 256, cols: 256, bits: 3, groupSize: 16, scaleBits: 3, zeroBits: 3,
 *   statisticGroupSize: 16, outliers: 0, permuted: false,
 * });
 * assert.equal(bits, 3.625);
 * ```
 * @param p The layout.
 * @returns Bits per weight.
 */
export function spqrBitsPerWeight(p: {
  rows: number;
  cols: number;
  bits: number;
  groupSize: number;
  scaleBits: number;
  zeroBits: number;
  statisticGroupSize: number;
  outliers: number;
  permuted: boolean;
}): number {
  const groups = Math.ceil(p.cols / p.groupSize);
  const rowGroups = Math.ceil(p.rows / p.statisticGroupSize);
  const total = p.rows * p.cols * p.bits +
    p.rows * groups * (p.scaleBits + p.zeroBits) +
    groups * rowGroups * 2 * (16 + 16) +
    32 * p.outliers +
    (p.permuted ? 16 * p.cols : 0);
  return total / (p.rows * p.cols);
}
