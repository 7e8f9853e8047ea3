/**
 * Test inputs of the Hessian tests: seeded normal matrices whose columns
 * have different scales, so that a Hessian of them is not close to a
 * multiple of I.
 *
 * @module
 */

import { prng } from "../../core/prng.ts";
import { type Tensor, tensor } from "../../core/tensor.ts";

/**
 * A seeded [rows, cols] float32 matrix, column c scaled by 1 + c/cols.
 *
 * @param rows Rows.
 * @param cols Columns.
 * @param seed Seed.
 * @param scale Overall scale.
 * @returns The matrix.
 */
export function randomTensor(rows: number, cols: number, seed: number, scale = 1): Tensor<"f32"> {
  const rng = prng(seed);
  const data = Float32Array.from(
    { length: rows * cols },
    (_, i) => rng.normal() * scale * (1 + (i % cols) / cols),
  );
  return tensor("f32", [rows, cols], data);
}
