/**
 * SpQR: small groups with bilevel statistics and float16 outliers, found and
 * compensated during the Optimal Brain Surgeon column loop (the solver's
 * "spqr" decider), on the CPU or on WebGPU (`kernels/obs_spqr_kernel.ts`).
 * Web-standard only.
 *
 * @see Dettmers, Svirschevski, Egiazarian, Kuznedelev, Frantar, Ashkboos,
 *   Borzunov, Hoefler, Alistarh, "SpQR: A Sparse-Quantized Representation for
 *   Near-Lossless LLM Weight Compression" (ICLR 2024), Algorithm 1.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import type { Hessian } from "../hessian/hessian.ts";
import type { DeviceHessian } from "../hessian/device_hessian.ts";
import { obsSolve } from "../hessian/obs.ts";
import { checkSpqrOptions } from "../hessian/_obs_spqr.ts";
import type { Backend } from "../kernels/backend.ts";
import { spqrBitsPerWeight, type SpqrOutliers, type SpqrWeight } from "./spqr_weight.ts";

/** Options of {@linkcode spqr}; the defaults are the paper's (3-bit codes, groups of 16, 3-bit statistics). */
export interface SpqrOptions {
  /** Bits per code, in [1, 8]. @default 3 */
  bits?: number;
  /** Input columns per first-level group (runs of the processing order). @default 16 */
  groupSize?: number;
  /** Bits of each group's scale, quantized again (second level), in [1, 8]. @default 3 */
  scaleBits?: number;
  /** Bits of each group's zero point, quantized again, in [1, 8]. @default 3 */
  zeroBits?: number;
  /**
   * Output rows per second-level run: the scales (and the zero points) of a
   * group in this many consecutive rows share one float16 range. The last run
   * is shorter when it does not divide the rows.
   * @default 16
   */
  statisticGroupSize?: number;
  /**
   * τ (the reference's `outlier_relative_threshold`): a weight is an outlier
   * when its OBS error (w − q)²/[U]_jj² exceeds τ times the layer's typical
   * one, the mean over columns of Var_rows(W[:, j])/[U]_jj². Larger τ: fewer
   * outliers; `Infinity`: none.
   * @default 0.2
   */
  outlierThreshold?: number;
  /**
   * Fit each group's grid on all of its weights, skipping the reference's
   * leave-one-out screening of likely outliers (faster, usually worse).
   * @default false
   */
  simplifiedOutliers?: boolean;
  /** Process columns by decreasing Hessian diagonal (the paper's setting). @default true */
  actOrder?: boolean;
  /** Columns per lazy batch update (no effect on the result beyond rounding). @default 128 */
  blockSize?: number;
  /** Damping as a fraction of the mean Hessian diagonal (the reference's `percdamp`). @default 0.01 */
  dampRatio?: number;
  /** Called after each block with the columns done and the total. */
  onProgress?: (done: number, total: number) => void;
  /**
   * Where the column loop runs: "auto" (WebGPU on a hardware adapter, else
   * the CPU), "cpu", or "webgpu" (any adapter, software ones included; throws
   * without one). The GPU gives the same stored form; its float32 factor and
   * arithmetic (the CPU's factor and some of its sums are float64) can put a
   * rare near-tie of a code or of the outlier test the other way.
   * @default "auto"
   */
  backend?: Backend;
}

/**
 * Quantizes a layer weight with SpQR: GPTQ's column loop (act-order by
 * default) over groups of `groupSize` columns, each row's group on the
 * min–max grid of its weights (zero point not rounded) fitted when the loop
 * reaches the group, on the updated weights, after the reference's
 * leave-one-out screening has set aside the weights whose exclusion lowers
 * the group's error by more than the threshold; the group's scales and zero
 * points quantized to `scaleBits`/`zeroBits` on the range of each run of
 * `statisticGroupSize` rows (stored in float16); then every weight whose
 * error (w − q)²/[U]_jj² exceeds τ times the typical error is kept in
 * float16, and the loop compensates whatever error remains.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { spqr } from "./spqr.ts";
 * import { dequantize } from "./dequantize.ts";
 * import { hessian } from "../hessian/hessian.ts";
 * import { tensor } from "../core/tensor.ts";
 * const x = tensor("f32", [64, 32], Float32Array.from({ length: 2048 }, (_, i) => Math.cos(i * 0.7)));
 * const w = tensor("f32", [16, 32], Float32Array.from({ length: 512 }, (_, i) => Math.sin(i)));
 * const q = await spqr(w, hessian(x), { bits: 3, groupSize: 16 });
 * assert(dequantize(q).shape[1] === 32 && q.stats.bitsPerWeight >= 3.625);
 * ```
 * @param weight [rows, cols] = [out features, in features], any float dtype.
 * @param hessian Hessian of the layer's inputs (cols × cols); a device one is read back.
 * @param options Bits, groups, statistics, outlier threshold, order, damping.
 * @returns The quantized weight, with its bits per weight counted in `stats`.
 * @throws {RangeError} on invalid options (naming the option), a Hessian of
 *   the wrong order, non-finite values in the weight or the Hessian, or an
 *   outlier beyond float16's range.
 * @throws {TypeError} for arguments of the wrong type; {Error} for
 *   `backend: "webgpu"` without a WebGPU adapter.
 */
export async function spqr(
  weight: Tensor,
  hessian: Hessian | DeviceHessian,
  options: SpqrOptions = {},
): Promise<SpqrWeight> {
  if (options === null || typeof options !== "object") {
    throw new TypeError(
      `Cannot quantize with SpQR as 'options' must be an object: current value is ${options}`,
    );
  }
  const {
    bits = 3,
    groupSize = 16,
    scaleBits = 3,
    zeroBits = 3,
    statisticGroupSize = 16,
    outlierThreshold = 0.2,
    simplifiedOutliers = false,
    actOrder = true,
    blockSize = 128,
    dampRatio = 0.01,
    onProgress,
    backend = "auto",
  } = options;
  const decider = {
    kind: "spqr",
    bits,
    groupSize,
    scaleBits,
    zeroBits,
    statisticGroupSize,
    outlierThreshold,
    simplifiedOutliers,
  } as const;
  checkSpqrOptions(decider, "quantize with SpQR");
  const res = await obsSolve(weight, hessian, {
    decider,
    blockSize,
    dampRatio,
    actOrder,
    backend,
    ...(onProgress ? { onProgress } : {}),
  });
  const [rows, cols] = [weight.shape[0]!, weight.shape[1]!];
  const s = res.statistics!;
  const outliers = outlierStore(res.outliers!, res.weight.data, rows, cols);
  const count = outliers.values.length;
  return {
    kind: "spqr",
    shape: [rows, cols],
    bits,
    groupSize,
    statisticGroupSize,
    codes: res.codes as Uint8Array,
    gIdx: res.gIdx!,
    scales: { bits: scaleBits, codes: s.scaleCodes, lo: s.scaleLo, hi: s.scaleHi },
    zeros: { bits: zeroBits, codes: s.zeroCodes, lo: s.zeroLo, hi: s.zeroHi },
    outliers,
    ...(res.perm ? { perm: res.perm } : {}),
    stats: {
      ...res.stats,
      bitsPerWeight: spqrBitsPerWeight({
        rows,
        cols,
        bits,
        groupSize,
        scaleBits,
        zeroBits,
        statisticGroupSize,
        outliers: count,
        permuted: res.perm !== undefined,
      }),
      outliers: count,
      outlierFraction: count / (rows * cols),
      outlierThreshold: s.outlierThreshold,
    },
  };
}

/** The CSR store of the outliers, whose float16 values the solver left in `weight`. */
function outlierStore(
  mask: Uint8Array,
  weight: Float32Array,
  rows: number,
  cols: number,
): SpqrOutliers {
  const rowStart = new Int32Array(rows + 1);
  for (let r = 0; r < rows; r++) {
    let c = 0;
    for (let j = 0; j < cols; j++) c += mask[r * cols + j]!;
    rowStart[r + 1] = rowStart[r]! + c;
  }
  const count = rowStart[rows]!;
  const columns = new Int32Array(count), values = new Float16Array(count);
  for (let r = 0, e = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) {
      if (!mask[r * cols + j]) continue;
      columns[e] = j;
      values[e++] = weight[r * cols + j]!;
    }
  }
  return { rowStart, columns, values };
}
