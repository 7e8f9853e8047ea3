/**
 * Relative output error of an approximated layer, from its Hessian.
 * Web-standard only.
 *
 * @module
 */

import { dims2, type Tensor } from "../core/tensor.ts";
import { asFloat64 } from "../core/convert.ts";
import type { Hessian } from "./hessian.ts";

/**
 * ‖(W − Ŵ)X‖²_F / ‖WX‖²_F computed as tr(D·H·Dᵀ) / tr(W·H·Wᵀ) with D = W − Ŵ
 * and H the mean of x·xᵀ (float64 throughout).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { layerError } from "./layer_error.ts";
 * import { hessian } from "./hessian.ts";
 * import { tensor } from "../core/tensor.ts";
 * const h = hessian(tensor("f64", [2, 2], new Float64Array([1, 0, 0, 1])));
 * const w = tensor("f64", [1, 2], new Float64Array([1, 1]));
 * const a = tensor("f64", [1, 2], new Float64Array([1, 0]));
 * assert(layerError(w, a, h) === 0.5);
 * ```
 *
 * @param weight W [rows, cols].
 * @param approx Ŵ [rows, cols].
 * @param hessian H over the layer's inputs (cols × cols).
 * @returns The relative error (0 when W·X is 0 and Ŵ = W; Infinity when only W·X is 0).
 * @throws {RangeError} on shape mismatches.
 */
export function layerError(weight: Tensor, approx: Tensor, hessian: Hessian): number {
  const [rows, cols] = dims2(weight, "weight");
  const [ar, ac] = dims2(approx, "approx");
  if (ar !== rows || ac !== cols) {
    throw new RangeError(
      `Cannot compute the layer error as 'approx' [${approx.shape}] differs from 'weight' [${weight.shape}]`,
    );
  }
  if (hessian.cols !== cols) {
    throw new RangeError(
      `Cannot compute the layer error as the Hessian has ${hessian.cols} columns and 'weight' ${cols}`,
    );
  }
  const w = asFloat64(weight), a = asFloat64(approx), h = hessian.xtx;
  const d = new Float64Array(cols), wr = new Float64Array(cols);
  let num = 0, den = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      wr[c] = w[r * cols + c]!;
      d[c] = wr[c]! - a[r * cols + c]!;
    }
    for (let i = 0; i < cols; i++) {
      const di = d[i]!, wi = wr[i]!;
      if (di === 0 && wi === 0) continue;
      const hi = i * cols;
      let sd = 0, sw = 0;
      for (let j = 0; j < cols; j++) {
        const hij = h[hi + j]!;
        sd += hij * d[j]!;
        sw += hij * wr[j]!;
      }
      num += di * sd;
      den += wi * sw;
    }
  }
  if (den === 0) return num === 0 ? 0 : Infinity;
  return num / den;
}
