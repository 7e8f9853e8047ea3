/**
 * Test helpers for the rotation-based quantizers: heavy-tailed samples and
 * the mean squared error.
 *
 * @module
 */

import type { Prng } from "../../core/prng.ts";

/**
 * One Student-t sample with 3 degrees of freedom: z / √(χ²₃ / 3), drawing
 * the three normals of χ²₃ first, then z.
 *
 * @param rng The generator (advanced by four normals).
 * @returns The sample.
 */
export function studentT3(rng: Prng): number {
  let chi2 = 0;
  for (let k = 0; k < 3; k++) chi2 += rng.normal() ** 2;
  return rng.normal() / Math.sqrt(chi2 / 3);
}

/**
 * Mean squared error (1/n)·Σ(aᵢ − bᵢ)².
 *
 * @param a Values.
 * @param b Reference values (same length).
 * @returns The mean squared error.
 */
export function mse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i]! - b[i]!) ** 2;
  return s / a.length;
}
