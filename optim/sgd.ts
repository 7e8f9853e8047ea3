/**
 * Plain SGD as an optax-style transform: the update is −lr·g. Compose it after
 * {@linkcode errorFeedback} for compressed SGD:
 * `chain(errorFeedback(topKCompressor({ density: 0.01 })), sgd({ learningRate }))`.
 * Web-standard only.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sgd } from "./sgd.ts";
 * const opt = sgd({ learningRate: 0.5 });
 * const [u] = opt.update({ w: new Float32Array([2]) }, opt.init({ w: new Float32Array(1) }));
 * assert(u.w![0] === -1);
 * ```
 *
 * @module
 */

import {
  type GradientTransform,
  type LearningRate,
  scaleByLearningRate,
  type TransformState,
} from "../core/transform.ts";

/** Options of {@linkcode sgd}. */
export interface SgdOptions {
  /** Step size, or a schedule of the step count. */
  learningRate: LearningRate;
}

/**
 * Stochastic gradient descent without momentum (no state but `count`).
 *
 * @param options The learning rate.
 * @returns A transform whose updates are −lr·g.
 */
export function sgd(options: SgdOptions): GradientTransform<TransformState> {
  return scaleByLearningRate(options.learningRate);
}
