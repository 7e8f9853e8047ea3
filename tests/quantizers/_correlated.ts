/**
 * Test inputs that mimic LLM activations: a random low-rank-plus-diagonal
 * covariance with a few outlier channels of much larger scale.
 */

import { type Tensor, tensor } from "../../core/tensor.ts";
import { permutation, prng, randn } from "../../core/prng.ts";

/**
 * Inputs X [tokens, cols] = F·M + noise·N, with `outliers` channels scaled by `outlierScale`.
 *
 * @param tokens Rows.
 * @param cols Channels.
 * @param seed Seed.
 * @param options Rank of the shared part, outlier count and scale.
 * @returns X, f32.
 */
export function correlatedInputs(
  tokens: number,
  cols: number,
  seed: number,
  options: { rank?: number; outliers?: number; outlierScale?: number; noise?: number } = {},
): Tensor<"f32"> {
  const { rank = 8, outliers = 4, outlierScale = 10, noise = 0.3 } = options;
  const g = prng(seed);
  const f = randn(tokens * rank, g), m = randn(rank * cols, g), e = randn(tokens * cols, g);
  const scale = new Float64Array(cols).fill(1);
  const perm = permutation(cols, g);
  for (let i = 0; i < outliers; i++) scale[perm[i]!] = outlierScale;
  const x = new Float32Array(tokens * cols);
  for (let t = 0; t < tokens; t++) {
    for (let c = 0; c < cols; c++) {
      let s = noise * e[t * cols + c]!;
      for (let k = 0; k < rank; k++) s += f[t * rank + k]! * m[k * cols + c]!;
      x[t * cols + c] = s * scale[c]!;
    }
  }
  return tensor("f32", [tokens, cols], x);
}

/**
 * A random weight [rows, cols] with entries N(0, 0.02²).
 *
 * @param rows Rows.
 * @param cols Columns.
 * @param seed Seed.
 * @returns W, f32.
 */
export function randomWeight(rows: number, cols: number, seed: number): Tensor<"f32"> {
  return tensor(
    "f32",
    [rows, cols],
    Float32Array.from(randn(rows * cols, prng(seed)), (v) => 0.02 * v),
  );
}
