/**
 * The rotations of online Hadamards, built once per order and seed.
 *
 * @module
 */

import { randomHadamard, type Rotation } from "../core/rotation.ts";
import type { OnlineHadamard } from "./model.ts";

const cache = new Map<string, Rotation>();

/**
 * The rotation an online Hadamard stands for (cached).
 *
 * @param spec Order and seed.
 * @returns Q = randomHadamard(n, { seed, fallback: "kronecker" }).
 */
export function onlineRotation(spec: OnlineHadamard): Rotation {
  const key = `${spec.n}/${spec.seed}`;
  let q = cache.get(key);
  if (!q) cache.set(key, q = randomHadamard(spec.n, { seed: spec.seed, fallback: "kronecker" }));
  return q;
}

/**
 * x·Q for rows x [T, n] (what `rotateActivations` returns), float32.
 *
 * @param x Rows [T, n] (not modified).
 * @param T Number of rows.
 * @param spec The online Hadamard.
 * @returns The rotated rows, fresh.
 */
export function applyOnlineHadamard(
  x: Float32Array,
  T: number,
  spec: OnlineHadamard,
): Float32Array {
  const q = onlineRotation(spec);
  return q.applyToRows({ dtype: "f32", shape: [T, spec.n], data: x }, { transpose: true })
    .data as Float32Array;
}
