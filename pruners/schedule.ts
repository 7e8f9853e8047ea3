/**
 * The gradual magnitude pruning schedule, for training-time users. Web-standard only.
 *
 * @see Zhu, Gupta. "To prune, or not to prune: exploring the efficacy of
 * pruning for model compression" (2017), equation 1.
 *
 * @module
 */

/** Options of {@linkcode cubicSparsity}. */
export interface CubicSparsityOptions {
  /** Sparsity at `startStep` and before, in [0, 1). @default 0 */
  initialSparsity?: number;
  /** Sparsity reached at `endStep` and kept after, in [0, 1). */
  finalSparsity: number;
  /** First pruning step. @default 0 */
  startStep?: number;
  /** Step at which `finalSparsity` is reached (> `startStep`). */
  endStep: number;
  /**
   * Pruning frequency Δt: the sparsity changes only every `frequency` steps
   * from `startStep` (steps in between keep the last value). @default 1
   */
  frequency?: number;
}

/**
 * Target sparsity at a training step under the cubic schedule
 * `s_t = s_f + (s_i − s_f)·(1 − (t − t₀)/(t₁ − t₀))³`, with `t` rounded down
 * to the last pruning step of the frequency grid; `s_i` before `t₀`, `s_f`
 * from `t₁` on. It prunes fast early, when many weights are redundant, and
 * slowly near the end.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cubicSparsity } from "./schedule.ts";
 * const s = cubicSparsity(50, { finalSparsity: 0.8, endStep: 100 });
 * assert(Math.abs(s - 0.7) < 1e-12); // 0.8·(1 − 0.5³)
 * ```
 * @param step The current step (any number; clamped to the schedule).
 * @param options Initial and final sparsity, start and end step, frequency.
 * @returns The sparsity to prune to at this step.
 * @throws {RangeError} for sparsities outside [0, 1), `endStep` ≤ `startStep` or `frequency` < 1.
 */
export function cubicSparsity(step: number, options: CubicSparsityOptions): number {
  const {
    initialSparsity = 0,
    finalSparsity,
    startStep = 0,
    endStep,
    frequency = 1,
  } = options ?? {};
  for (
    const [name, v] of [["initialSparsity", initialSparsity], ["finalSparsity", finalSparsity]]
  ) {
    if (typeof v !== "number" || !(v >= 0 && v < 1)) {
      throw new RangeError(
        `Cannot schedule sparsity as '${name}' must be a number in [0, 1): current value is ${
          String(v)
        }`,
      );
    }
  }
  if (!Number.isFinite(startStep) || !Number.isFinite(endStep) || !(endStep > startStep)) {
    throw new RangeError(
      `Cannot schedule sparsity as 'endStep' must be a finite step after 'startStep' (${startStep}): current value is ${endStep}`,
    );
  }
  if (!(frequency >= 1) || !Number.isFinite(frequency)) {
    throw new RangeError(
      `Cannot schedule sparsity as 'frequency' must be ≥ 1: current value is ${frequency}`,
    );
  }
  if (typeof step !== "number" || Number.isNaN(step)) {
    throw new TypeError(
      `Cannot schedule sparsity as 'step' must be a number: current value is ${step}`,
    );
  }
  if (step <= startStep) return initialSparsity;
  if (step >= endStep) return finalSparsity;
  const t = startStep + Math.floor((step - startStep) / frequency) * frequency;
  const remaining = 1 - (t - startStep) / (endStep - startStep);
  return finalSparsity + (initialSparsity - finalSparsity) * remaining ** 3;
}
