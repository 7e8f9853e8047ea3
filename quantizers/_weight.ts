/**
 * Library-internal: the checked float32 view of a weight the round-to-nearest
 * float-format quantizers read. Web-standard only.
 *
 * @module
 */

import { dims2, type Tensor } from "../core/tensor.ts";
import { asFloat32 } from "../core/convert.ts";
import { firstNonFinite } from "../core/_finite.ts";

/**
 * The weight as float32 [rows, cols] (the caller's storage when it is f32: read only).
 *
 * @param weight A 2-D tensor, any float dtype.
 * @param what What the caller was doing, for the error message.
 * @returns Its values and shape.
 */
export function finiteWeight(
  weight: Tensor,
  what: string,
): { w: Float32Array; rows: number; cols: number } {
  if (weight === null || typeof weight !== "object" || !("shape" in weight)) {
    throw new TypeError(`Cannot ${what} as 'weight' must be a Tensor`);
  }
  const [rows, cols] = dims2(weight, "weight");
  const w = asFloat32(weight);
  const bad = firstNonFinite(w);
  if (bad >= 0) {
    throw new RangeError(`Cannot ${what} as 'weight' must be finite: element ${bad} is ${w[bad]}`);
  }
  return { w, rows, cols };
}
