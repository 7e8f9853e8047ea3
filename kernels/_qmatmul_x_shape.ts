/**
 * The shape check of the activations of the packed low-bit matmul, shared by
 * `qmatmul` and its CPU references. Private.
 *
 * Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";

/**
 * Rows of x after checking that it is an f32 or f16 tensor [M, k] or [k].
 *
 * @param x Activations.
 * @param k Columns the weight expects.
 * @returns M (1 for a vector).
 */
export function xShape(x: Tensor, k: number): number {
  if (x?.dtype !== "f32" && x?.dtype !== "f16") {
    throw new TypeError(
      `Cannot multiply as 'x' must be an f32 or f16 tensor: its dtype is ${String(x?.dtype)}`,
    );
  }
  const [m, kk] = x.shape.length === 1 ? [1, x.shape[0]] : x.shape;
  if (x.shape.length > 2 || kk !== k) {
    throw new RangeError(`Cannot multiply as 'x' must be [M, ${k}] or [${k}]: it is [${x.shape}]`);
  }
  return m!;
}
