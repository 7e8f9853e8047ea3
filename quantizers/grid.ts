/**
 * Uniform integer grids: fitting (min/max or MSE clipping search; symmetric or
 * asymmetric; per tensor, per output channel or per group of input columns)
 * and the pure `gridQuantize`/`gridDequantize` functions.
 *
 * A grid maps a weight w to a code c = clamp(round(w / scale) + zero, 0, 2^bits − 1)
 * (round half to even, as `torch.round`) and back to scale·(c − zero). The
 * conventions are those of the reference GPTQ implementation: the range is
 * always widened to include 0, asymmetric zero points are rounded to integers,
 * and symmetric grids put the zero point at (2^bits)/2. Web-standard only.
 *
 * @see Frantar et al., "GPTQ" (2023), reference `Quantizer.find_params`.
 *
 * @module
 */

import { dims2, type Tensor, tensor } from "../core/tensor.ts";
import { asFloat32 } from "../core/convert.ts";
import { codeOf, fitParams, type GridOptions, resolveGrid } from "../core/uniform_grid.ts";

export type { GridOptions } from "../core/uniform_grid.ts";

/** A fitted grid for a weight of shape [rows, cols]. */
export interface UniformGrid {
  /** Bits per code. */
  readonly bits: number;
  /** Whether the grid is symmetric. */
  readonly symmetric: boolean;
  /** Input columns per group, or −1 for one group per row. */
  readonly groupSize: number;
  /** [rows, cols] of the weight it was fitted to. */
  readonly shape: readonly [number, number];
  /** Step per row and group, [rows, groups]. */
  readonly scales: Float32Array;
  /** Zero point per row and group in code units, [rows, groups]. */
  readonly zeros: Float32Array;
  /** Group of each column, [cols]. */
  readonly gIdx: Int32Array;
}

function checkWeight(weight: Tensor, what: string): Float32Array {
  if (weight === null || typeof weight !== "object" || !("shape" in weight)) {
    throw new TypeError(`Cannot ${what} as 'weight' must be a Tensor`);
  }
  dims2(weight, "weight");
  const w = asFloat32(weight);
  for (let i = 0; i < w.length; i++) {
    if (!Number.isFinite(w[i]!)) {
      throw new RangeError(
        `Cannot ${what} as 'weight' must be finite: element ${i} is ${w[i]}`,
      );
    }
  }
  return w;
}

/**
 * Group of each column for a group size (−1: all columns in group 0).
 *
 * @param cols Columns.
 * @param groupSize Columns per group or −1.
 * @returns gIdx [cols].
 */
export function groupIndex(cols: number, groupSize: number): Int32Array {
  const g = new Int32Array(cols);
  if (groupSize > 0) { for (let c = 0; c < cols; c++) g[c] = Math.floor(c / groupSize); }
  return g;
}

/**
 * Fits a uniform grid to a weight (min/max, or the MSE clipping search).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fitGrid, gridDequantize, gridQuantize } from "./grid.ts";
 * import { tensor } from "../core/tensor.ts";
 * const w = tensor("f32", [1, 4], new Float32Array([-1, -0.5, 0.5, 2]));
 * const grid = fitGrid(w, { bits: 2 });
 * const back = gridDequantize(gridQuantize(w, grid), grid);
 * assert(back.data[3] === 2 && back.data[0] === -1);
 * ```
 *
 * @param weight [rows, cols], any float dtype.
 * @param options Bits, symmetry, grouping, MSE search.
 * @returns The grid.
 * @throws {RangeError} on invalid options or non-finite weights.
 */
export function fitGrid(weight: Tensor, options: GridOptions): UniformGrid {
  const g = resolveGrid(options, "fit a grid");
  const w = checkWeight(weight, "fit a grid");
  const [rows, cols] = dims2(weight, "weight");
  const gs = g.groupSize > 0 ? g.groupSize : cols;
  const groups = g.groupSize > 0 ? Math.max(1, Math.ceil(cols / gs)) : 1;
  const scales = new Float32Array(rows * groups);
  const zeros = new Float32Array(rows * groups);
  if (g.perTensor) {
    const { scale, zero } = fitParams(w, 0, rows * cols, 1, g.maxq, g.symmetric, g.mse);
    scales.fill(scale);
    zeros.fill(zero);
  } else {
    for (let r = 0; r < rows; r++) {
      for (let k = 0; k < groups; k++) {
        const start = k * gs, len = Math.min(cols, start + gs) - start;
        const p = fitParams(w, r * cols + start, len, 1, g.maxq, g.symmetric, g.mse);
        scales[r * groups + k] = p.scale;
        zeros[r * groups + k] = p.zero;
      }
    }
  }
  return {
    bits: g.bits,
    symmetric: g.symmetric,
    groupSize: g.groupSize,
    shape: [rows, cols],
    scales,
    zeros,
    gIdx: groupIndex(cols, g.groupSize),
  };
}

function checkShape(shape: readonly number[], grid: UniformGrid, what: string): void {
  if (shape.length !== 2 || shape[0] !== grid.shape[0] || shape[1] !== grid.shape[1]) {
    throw new RangeError(
      `Cannot ${what} as the shape [${shape}] differs from the grid's [${grid.shape}]`,
    );
  }
}

/**
 * Codes of a weight on a fitted grid (round half to even, clamped).
 *
 * @param weight [rows, cols] matching the grid.
 * @param grid The grid.
 * @returns Codes [rows, cols] (Uint8Array up to 8 bits, else Uint16Array).
 */
export function gridQuantize(weight: Tensor, grid: UniformGrid): Uint8Array | Uint16Array {
  checkShape(weight.shape, grid, "quantize");
  const w = checkWeight(weight, "quantize");
  const [rows, cols] = grid.shape;
  const groups = grid.scales.length / rows;
  const maxq = 2 ** grid.bits - 1;
  const codes = grid.bits <= 8 ? new Uint8Array(rows * cols) : new Uint16Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const k = r * groups + grid.gIdx[c]!;
      codes[r * cols + c] = codeOf(w[r * cols + c]!, grid.scales[k]!, grid.zeros[k]!, maxq);
    }
  }
  return codes;
}

/**
 * Values of codes on a grid: scale·(code − zero), as float32.
 *
 * @param codes Codes [rows, cols].
 * @param grid The grid.
 * @returns The dequantized weight, f32 [rows, cols].
 */
export function gridDequantize(codes: ArrayLike<number>, grid: UniformGrid): Tensor<"f32"> {
  const [rows, cols] = grid.shape;
  if (codes.length !== rows * cols) {
    throw new RangeError(
      `Cannot dequantize as 'codes' has ${codes.length} elements, the grid's shape [${grid.shape}] needs ${
        rows * cols
      }`,
    );
  }
  const groups = grid.scales.length / rows;
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const k = r * groups + grid.gIdx[c]!;
      out[r * cols + c] = grid.scales[k]! * (codes[r * cols + c]! - grid.zeros[k]!);
    }
  }
  return tensor("f32", [rows, cols], out);
}
