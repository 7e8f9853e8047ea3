/**
 * `dequantize(q)`: the float32 weight a quantized format stands for.
 * Web-standard only.
 *
 * @module
 */

import { type Tensor, tensor } from "../core/tensor.ts";
import type { QuantizedWeight } from "./quantized_weight.ts";
import { type AqlmWeight, dequantizeAqlm } from "./aqlm.ts";
import { dequantizeGrid } from "../core/uniform_grid.ts";
import { dequantizeMx, type MxWeight } from "./mx.ts";
import { dequantizeFp8, type Fp8Weight } from "./fp8_quantize.ts";
import { dequantizeSpqr, type SpqrWeight } from "./spqr_weight.ts";

/**
 * The float32 weight of a quantized weight (uniform grids from RTN/GPTQ,
 * AQLM codebooks, microscaling MXFP4/NVFP4 or FP8 weights, SpQR weights with
 * their outliers). Uniform grids:
 * Ŵ[r, c] = scales[r, g]·(codes[r, c] − zeros[r, g]) with g = gIdx[c].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dequantize } from "./dequantize.ts";
 * import { rtn } from "./rtn.ts";
 * import { tensor } from "../core/tensor.ts";
 * const w = tensor("f32", [1, 2], new Float32Array([-1, 1]));
 * const q = await rtn(w, { bits: 4 });
 * // One group: Ŵ[0, 1] = scale·(code − zero), rounded to float32.
 * const expected = Math.fround(q.scales[0]! * (q.codes[1]! - q.zeros[0]!));
 * assert(dequantize(q).data[1] === expected);
 * ```
 *
 * @param q The quantized weight.
 * @returns Ŵ, f32 [rows, cols].
 * @throws {TypeError} for an unknown format.
 */
export function dequantize(
  q: QuantizedWeight | AqlmWeight | MxWeight | Fp8Weight | SpqrWeight,
): Tensor<"f32"> {
  switch (q?.kind) {
    case "uniform": {
      const [rows, cols] = q.shape;
      if (q.codes.length !== rows * cols || q.gIdx.length !== cols) {
        throw new RangeError(
          `Cannot dequantize as 'codes' (${q.codes.length}) or 'gIdx' (${q.gIdx.length}) do not match the shape [${q.shape}]`,
        );
      }
      return tensor(
        "f32",
        [rows, cols],
        dequantizeGrid(q.codes, q.scales, q.zeros, q.gIdx, rows, cols),
      );
    }
    case "aqlm":
      return tensor("f32", [q.shape[0], q.shape[1]], dequantizeAqlm(q));
    case "mx":
      return tensor("f32", [q.shape[0], q.shape[1]], dequantizeMx(q));
    case "fp8":
      return tensor("f32", [q.shape[0], q.shape[1]], dequantizeFp8(q));
    case "spqr":
      return tensor("f32", [q.shape[0], q.shape[1]], dequantizeSpqr(q));
    default:
      throw new TypeError(
        `Cannot dequantize as 'kind' ${
          (q as { kind?: unknown } | null)?.kind
        } is not a known format`,
      );
  }
}
