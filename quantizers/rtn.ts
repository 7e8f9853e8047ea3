/**
 * Round-to-nearest (RTN) quantization: a fitted uniform grid, no error
 * compensation. The baseline GPTQ is measured against. Web-standard only.
 *
 * @module
 */

import { dims2, type Tensor } from "../core/tensor.ts";
import { fitGrid, gridQuantize } from "./grid.ts";
import type { QuantizedWeight } from "./quantized_weight.ts";

/** Options of {@linkcode rtn}. */
export interface RtnOptions {
  /** Bits per code, an integer in [1, 16]. */
  bits: number;
  /** Input columns per group; −1 for one grid per output row. @default -1 */
  groupSize?: number;
  /** Symmetric grids. @default false */
  symmetric?: boolean;
  /** One grid for the whole tensor (only with `groupSize` −1). @default false */
  perTensor?: boolean;
  /** MSE clipping search (see `GridOptions.mse`). @default false */
  mse?: boolean;
}

/**
 * Quantizes a weight to the nearest point of a grid fitted to it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rtn } from "./rtn.ts";
 * import { tensor } from "../core/tensor.ts";
 * const q = await rtn(tensor("f32", [1, 3], new Float32Array([-1, 0.2, 1])), { bits: 8 });
 * assert(q.codes.length === 3);
 * ```
 *
 * @param weight [rows, cols], any float dtype.
 * @param options Bits, grouping, symmetry, MSE search.
 * @returns The quantized weight.
 * @throws {RangeError} on invalid options or non-finite weights.
 */
export async function rtn(weight: Tensor, options: RtnOptions): Promise<QuantizedWeight> {
  await Promise.resolve();
  const t0 = performance.now();
  if (options === null || typeof options !== "object") {
    throw new TypeError(
      `Cannot quantize as 'options' must be an object: current value is ${options}`,
    );
  }
  const { bits, groupSize = -1, symmetric = false, perTensor = false, mse = false } = options;
  const grid = fitGrid(weight, { bits, groupSize, symmetric, perTensor, mse });
  const codes = gridQuantize(weight, grid);
  const [rows, cols] = dims2(weight, "weight");
  return {
    kind: "uniform",
    shape: [rows, cols],
    bits: grid.bits,
    groupSize: grid.groupSize,
    symmetric: grid.symmetric,
    codes,
    scales: grid.scales,
    zeros: grid.zeros,
    gIdx: grid.gIdx,
    stats: { seconds: (performance.now() - t0) / 1000 },
  };
}
