/**
 * `rotated(quantizer)`: wraps any weight quantizer so that it quantizes
 * `W·Q` (a seeded random Hadamard rotation of the input dimension) and
 * returns the approximation mapped back to the original basis, `Ŵ = (W·Q)^·Qᵀ`.
 * Rotations spread outliers over all columns of a row, which shrinks the
 * range a uniform grid must cover. Web-standard only.
 *
 * @see S. Ashkboos et al., "QuaRot" (2024); A. Tseng et al., "QuIP#" (2024).
 * @module
 */

import { randomHadamard, type RandomHadamardOptions, type Rotation } from "../core/rotation.ts";
import { rotateWeight, unrotateWeight } from "../core/rotation.ts";
import { dims2, type Tensor, tensor } from "../core/tensor.ts";
import { dequantize } from "./dequantize.ts";
import { dequantizeHiggs, type HiggsWeight } from "./higgs.ts";
import { dequantizeNf4, type Nf4Weight } from "./nf4.ts";
import type { QuantizedWeight } from "./quantized_weight.ts";

/** What a wrappable quantizer returns: an approximate weight or a quantized weight. */
export type QuantizerResult = Tensor | QuantizedWeight | HiggsWeight | Nf4Weight;

function approximation(result: QuantizerResult): Tensor {
  if (!("kind" in result)) return result;
  if (result.kind === "higgs") return dequantizeHiggs(result);
  if (result.kind === "nf4") return dequantizeNf4(result);
  return dequantize(result);
}

/** The result of a rotated quantizer. */
export interface RotatedQuantization<R extends QuantizerResult> {
  /** The approximation in the original basis, f32 [rows, cols]. */
  readonly weight: Tensor<"f32">;
  /** The wrapped quantizer's own result, in the rotated basis (store it with `rotation`). */
  readonly rotated: R;
  /** The rotation Q (rebuilt from its order, seed and fallback). */
  readonly rotation: Rotation;
}

/**
 * Wraps a quantizer to work in a rotated basis.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rotated } from "./rotated.ts";
 * import { rtn } from "./rtn.ts";
 * import { tensor } from "../core/tensor.ts";
 * const w = tensor("f32", [1, 8], new Float32Array([9, 0.1, -0.2, 0.3, 0, 0.1, -0.1, 0.2]));
 * const q = await rotated((x) => rtn(x, { bits: 4 }), { seed: 1 })(w);
 * assert(q.weight.shape[1] === 8 && q.rotation.n === 8);
 * ```
 * @param quantizer An async function from a weight [rows, cols] to its
 * approximation, a `QuantizedWeight` (read back with `dequantize`), an
 * `Nf4Weight` or a `HiggsWeight`.
 * @param options Seed and fallback of the rotation (see `randomHadamard`).
 * @returns An async function of the weight [rows, cols] that returns the
 * approximation in the original basis, the raw result and the rotation.
 */
export function rotated<R extends QuantizerResult>(
  quantizer: (weight: Tensor<"f32">) => Promise<R>,
  options: RandomHadamardOptions = {},
): (weight: Tensor) => Promise<RotatedQuantization<R>> {
  if (typeof quantizer !== "function") {
    throw new TypeError(
      `Cannot wrap as 'quantizer' must be a function: current value is ${typeof quantizer}`,
    );
  }
  return async (weight: Tensor): Promise<RotatedQuantization<R>> => {
    const [, cols] = dims2(weight, "weight");
    const rotation = randomHadamard(cols, options);
    const w = rotateWeight(weight, rotation);
    const wf32 = w.dtype === "f32"
      ? (w as Tensor<"f32">)
      : tensor("f32", w.shape, Float32Array.from(w.data as Float64Array));
    const result = await quantizer(wf32);
    const approx = approximation(result);
    const back = unrotateWeight(approx, rotation);
    const data = back.dtype === "f32"
      ? (back.data as Float32Array)
      : Float32Array.from(back.data as Float64Array);
    return { weight: tensor("f32", back.shape, data), rotated: result, rotation };
  };
}
