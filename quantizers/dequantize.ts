/**
 * `dequantize(q)`: the float32 weight a quantized format stands for.
 * Web-standard only.
 *
 * @module
 */

import { type Tensor, tensor } from "../core/tensor.ts";
import { lazyTensor } from "../core/lazy_tensor.ts";
import type { QuantizedWeight } from "./quantized_weight.ts";
import { type AqlmWeight, dequantizeAqlm } from "./aqlm.ts";
import { dequantizeGrid } from "../core/uniform_grid.ts";
import { dequantizeMx, type MxWeight } from "./mx.ts";
import { dequantizeFp8, type Fp8Weight } from "./fp8_quantize.ts";
import { dequantizeSpqr, type SpqrWeight } from "./spqr_weight.ts";

/** Every weight {@linkcode dequantize} accepts. */
export type Dequantizable = QuantizedWeight | AqlmWeight | MxWeight | Fp8Weight | SpqrWeight;

function dequantizeUniform(q: QuantizedWeight, out?: Float32Array): Float32Array {
  const [rows, cols] = q.shape;
  return dequantizeGrid(q.codes, q.scales, q.zeros, q.gIdx, rows, cols, out);
}

/**
 * {@linkcode dequantize}'s values, computed when they are first read
 * (`core/lazy_tensor.ts`): for a caller that may never need Ŵ on the host
 * (a pipeline whose Ŵ stays on the GPU). A uniform grid is dequantized
 * straight into the tensor's storage on the first read; other formats
 * (whose solvers run on the host) are dequantized now.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dequantize, dequantizeLazily } from "./dequantize.ts";
 * import { rtn } from "./rtn.ts";
 * import { tensor } from "../core/tensor.ts";
 * const q = await rtn(tensor("f32", [2, 4], Float32Array.from([1, -2, 3, 0.5, 4, 1, -1, 2])), { bits: 3 });
 * assert.deepEqual(dequantizeLazily(q).data, dequantize(q).data);
 * ```
 *
 * @param q The quantized weight (not copied: it must not change afterwards).
 * @returns Ŵ, f32 [rows, cols] (a uniform grid's filled on first read).
 * @throws {TypeError} for an unknown format.
 */
export function dequantizeLazily(q: Dequantizable): Tensor<"f32"> {
  if (q?.kind !== "uniform") return dequantize(q);
  const t = lazyTensor("f32", [q.shape[0], q.shape[1]], (out) => void dequantizeUniform(q, out));
  sources.set(t, q);
  return t;
}

const sources = new WeakMap<Tensor<"f32">, QuantizedWeight>();

/**
 * The uniform grid a tensor of {@linkcode dequantizeLazily} stands for,
 * so that a caller that must know whether a weight is its grid, bit for bit
 * (a checkpoint writer, a journal), need not dequantize to compare.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dequantize, dequantizedFrom, dequantizeLazily } from "./dequantize.ts";
 * import { rtn } from "./rtn.ts";
 * import { tensor } from "../core/tensor.ts";
 * const q = await rtn(tensor("f32", [1, 2], new Float32Array([1, -1])), { bits: 4 });
 * assert.equal(dequantizedFrom(dequantizeLazily(q)), q);
 * assert.equal(dequantizedFrom(dequantize(q)), undefined);
 * ```
 *
 * @param t A tensor.
 * @returns The grid it was made from by `dequantizeLazily`, else undefined.
 */
export function dequantizedFrom(t: Tensor): QuantizedWeight | undefined {
  return sources.get(t as Tensor<"f32">);
}

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
export function dequantize(q: Dequantizable): Tensor<"f32"> {
  switch (q?.kind) {
    case "uniform":
      return tensor("f32", [q.shape[0], q.shape[1]], dequantizeUniform(q));
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
