/**
 * GPTQ with outlier input columns kept on a wider grid (QUIK's weights): the
 * chosen columns go last in the processing order, so the OBS loop pushes the
 * error of the narrow columns into them, and each row has two grids, one
 * over its narrow columns and one over its kept columns, fitted on the
 * original weights. One OBS loop (`obsSolve`, a `custom` decider); CPU only.
 * Web-standard only.
 *
 * @see S. Ashkboos et al., "QUIK: Towards End-to-End 4-Bit Inference on
 * Generative Large Language Models" (2023), §3.
 * @module
 */

import { dims2, type Tensor } from "../core/tensor.ts";
import { asFloat32 } from "../core/convert.ts";
import { codeOf, fitParams } from "../core/uniform_grid.ts";
import type { CompressionStats } from "../core/compression_stats.ts";
import type { Hessian } from "../hessian/hessian.ts";
import { type DeviceHessian, hostHessian } from "../hessian/device_hessian.ts";
import { obsSolve } from "../hessian/obs.ts";

/** Options of {@linkcode gptqOutliers}. */
export interface GptqOutliersOptions {
  /** Bits of the narrow columns, an integer in [2, 8]. */
  bits: number;
  /** The input columns kept on the wider grid (distinct, in [0, cols)). */
  columns: ArrayLike<number>;
  /** Bits of the kept columns, an integer in [bits, 16]. @default 8 */
  outlierBits?: number;
  /** Symmetric grids. @default false */
  symmetric?: boolean;
  /** Damping as a fraction of the mean Hessian diagonal. @default 0.01 */
  dampRatio?: number;
  /** Columns per lazy batch update. @default 128 */
  blockSize?: number;
}

/** The result of {@linkcode gptqOutliers}. */
export interface OutlierWeight {
  /** Discriminant. */
  readonly kind: "outliers";
  /** Ŵ [rows, cols] in the original column order. */
  readonly weight: Tensor<"f32">;
  /** The kept columns, ascending. */
  readonly columns: Int32Array;
  /** Bits of the narrow columns. */
  readonly bits: number;
  /** Bits of the kept columns. */
  readonly outlierBits: number;
  /**
   * Storage bits per weight: codes at their bits, and per row and grid an f16
   * scale and (asymmetric) a zero point at the grid's bits.
   */
  readonly bitsPerWeight: number;
  /** What the solve measured. */
  readonly stats: CompressionStats;
}

/**
 * The `count` columns with the largest Hessian diagonal (the largest input
 * norms ‖X_j‖², QUIK's outlier criterion), ascending.
 *
 * @param h The input Hessian (mean of x·xᵀ).
 * @param count How many (at most the columns).
 * @returns The columns.
 */
export function largestInputColumns(h: Hessian, count: number): Int32Array {
  const n = h.cols;
  if (!(Number.isInteger(count) && count >= 0 && count <= n)) {
    throw new RangeError(
      `Cannot pick outlier columns as 'count' must be an integer in [0, ${n}]: current value is ${count}`,
    );
  }
  const order = Array.from({ length: n }, (_, j) => j);
  order.sort((a, b) => h.xtx[b * n + b]! - h.xtx[a * n + a]! || a - b);
  return Int32Array.from(order.slice(0, count)).sort();
}

/**
 * GPTQ on two grids per row: `bits` over the narrow columns, `outlierBits`
 * over `columns`, the kept columns solved last.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gptqOutliers } from "./gptq_outliers.ts";
 * import { hessian } from "../hessian/hessian.ts";
 * import { tensor } from "../core/tensor.ts";
 * const x = tensor("f32", [64, 8], Float32Array.from({ length: 512 }, (_, i) => Math.cos(i * 0.7)));
 * const w = tensor("f32", [2, 8], Float32Array.from({ length: 16 }, (_, i) => Math.sin(i)));
 * const q = await gptqOutliers(w, hessian(x), { bits: 4, columns: [3] });
 * assert.equal(q.weight.shape[1], 8);
 * ```
 * @param weight [rows, cols].
 * @param hessian The input Hessian [cols, cols].
 * @param options Bits, kept columns, symmetry, damping.
 * @returns Ŵ and its storage.
 * @throws {RangeError} for bits out of range or bad columns.
 */
export async function gptqOutliers(
  weight: Tensor,
  hessian: Hessian | DeviceHessian,
  options: GptqOutliersOptions,
): Promise<OutlierWeight> {
  const t0 = performance.now();
  const { bits, columns, outlierBits = 8, symmetric = false, dampRatio, blockSize } = options;
  const [rows, cols] = dims2(weight, "weight");
  if (!(Number.isInteger(bits) && bits >= 2 && bits <= 8)) {
    throw new RangeError(
      `Cannot quantize as 'bits' must be an integer in [2, 8]: current value is ${bits}`,
    );
  }
  if (!(Number.isInteger(outlierBits) && outlierBits >= bits && outlierBits <= 16)) {
    throw new RangeError(
      `Cannot quantize as 'outlierBits' must be an integer in [${bits}, 16]: current value is ${outlierBits}`,
    );
  }
  const kept = new Uint8Array(cols);
  for (const c of Array.from(columns)) {
    if (!Number.isInteger(c) || c < 0 || c >= cols || kept[c]) {
      throw new RangeError(
        `Cannot quantize as 'columns' must be distinct integers in [0, ${cols}): found ${c}`,
      );
    }
    kept[c] = 1;
  }
  const keep = Int32Array.from(columns).sort();
  const narrow = Int32Array.from({ length: cols - keep.length });
  for (let c = 0, j = 0; c < cols; c++) if (!kept[c]) narrow[j++] = c;
  const w = asFloat32(weight); // [rows, cols]
  // Two grids per row, fitted on the original weights: [rows] each.
  const fit = (idx: Int32Array, b: number) => {
    const scale = new Float32Array(rows), zero = new Float32Array(rows);
    const buf = new Float32Array(idx.length);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < idx.length; i++) buf[i] = w[r * cols + idx[i]!]!;
      const p = fitParams(buf, 0, buf.length, 1, 2 ** b - 1, symmetric, false);
      scale[r] = p.scale;
      zero[r] = p.zero;
    }
    return { scale, zero, maxq: 2 ** b - 1 };
  };
  const grids = [fit(narrow, bits), fit(keep, outlierBits)];
  const h = await hostHessian(hessian);
  const res = await obsSolve(weight, h, {
    decider: {
      kind: "custom",
      decide: (col, info) => {
        const g = grids[kept[info.column]!]!;
        return col.map((v, r) => {
          const s = g.scale[r]!, z = g.zero[r]!;
          return Math.fround(s * (codeOf(v, s, z, g.maxq) - z));
        });
      },
    },
    perm: Int32Array.from([...narrow, ...keep]),
    backend: "cpu",
    ...(dampRatio !== undefined ? { dampRatio } : {}),
    ...(blockSize !== undefined ? { blockSize } : {}),
  });
  const perRow = (16 + (symmetric ? 0 : bits)) +
    (keep.length > 0 ? 16 + (symmetric ? 0 : outlierBits) : 0);
  const bitsPerWeight = ((cols - keep.length) * bits + keep.length * outlierBits + perRow) / cols;
  return {
    kind: "outliers",
    weight: res.weight,
    columns: keep,
    bits,
    outlierBits,
    bitsPerWeight,
    stats: { seconds: (performance.now() - t0) / 1000 },
  };
}
