/**
 * The dynamic-programming allocation of levels to modules: each module's
 * predicted damage is its relative weight error at a level times its
 * sensitivity (the KL divergence one unit of relative weight noise in that
 * module alone causes), the damages add up (HIGGS's linearity theorem), and
 * the sum is minimized exactly under the global constraint by dynamic
 * programming over the integer budget. A fast alternative to `evoPress` and
 * its starting point. Web-standard only.
 *
 * @see Malinovskii et al., "Pushing the Limits of Large Language Model
 * Quantization via the Linearity Theorem" (HIGGS, 2024), Section 4 (the
 * dynamic bitwidth allocation).
 *
 * @module
 */

import { prng } from "../core/prng.ts";
import { tensor } from "../core/tensor.ts";
import type { Tensor } from "../core/tensor.ts";
import { type Allocation, allocationOf, exactBudget } from "./_allocation.ts";
import { KlFitness } from "./_kl_fitness.ts";
import type { LevelDatabase } from "./level_database.ts";
import type { CompressibleModel } from "./model.ts";

export type { Allocation };

/** The exact minimum of a separable objective under one integer budget. */
export interface ExactChoice {
  /** The chosen option of each item. */
  readonly choice: number[];
  /** Its total score. */
  readonly score: number;
}

/**
 * Chooses one option per item so that the costs sum to `budget` exactly and
 * the scores' sum is least (ties: the lowest option indices, item by item
 * from the last). Dynamic programming over the budget: O(items · options ·
 * budget / g), g the gcd of every cost and the budget.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { allocateExactly } from "./dp_allocation.ts";
 * const r = allocateExactly([[3, 1], [2, 0]], [[1, 2], [1, 2]], 3)!;
 * assert.deepEqual(r.choice, [1, 0]);
 * ```
 * @param scores scores[i][j]: item i at option j.
 * @param costs costs[i][j]: non-negative integers.
 * @param budget The exact total cost.
 * @returns The choice, or null when no choice meets the budget.
 * @throws {RangeError} for non-integer or negative costs, or mismatched shapes.
 */
export function allocateExactly(
  scores: readonly (readonly number[])[],
  costs: readonly (readonly number[])[],
  budget: number,
): ExactChoice | null {
  if (scores.length !== costs.length || scores.some((s, i) => s.length !== costs[i]!.length)) {
    throw new RangeError(`Cannot allocate as 'scores' and 'costs' must have the same shape`);
  }
  let g = budget;
  for (const row of costs) {
    for (const c of row) {
      if (!Number.isSafeInteger(c) || c < 0) {
        throw new RangeError(
          `Cannot allocate as every cost must be a non-negative integer: current value is ${c}`,
        );
      }
      g = gcdOf(g, c);
    }
  }
  if (!Number.isSafeInteger(budget) || budget < 0) {
    throw new RangeError(
      `Cannot allocate as 'budget' must be a non-negative integer: current value is ${budget}`,
    );
  }
  if (g === 0) g = 1;
  const C = budget / g;
  const n = scores.length;
  let best = new Float64Array(C + 1).fill(Infinity);
  best[0] = 0;
  const back: Int32Array[] = [];
  for (let i = 0; i < n; i++) {
    const next = new Float64Array(C + 1).fill(Infinity);
    const arg = new Int32Array(C + 1).fill(-1);
    const row = costs[i]!, srow = scores[i]!;
    for (let j = 0; j < row.length; j++) {
      const c = row[j]! / g, s = srow[j]!;
      for (let k = c; k <= C; k++) {
        const v = best[k - c]! + s;
        if (v < next[k]!) {
          next[k] = v;
          arg[k] = j;
        }
      }
    }
    back.push(arg);
    best = next;
  }
  if (!(best[C]! < Infinity)) return null;
  const choice = new Array<number>(n);
  let k = C;
  for (let i = n - 1; i >= 0; i--) {
    const j = back[i]![k]!;
    choice[i] = j;
    k -= costs[i]![j]! / g;
  }
  return { choice, score: best[C]! };
}

function gcdOf(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Options of {@linkcode moduleSensitivities}. */
export interface SensitivityOptions {
  /** Fitness tokens to measure each module's KL on. @default 256 */
  tokens?: number;
  /**
   * Relative mean squared error of the Gaussian noise put into each module
   * (‖ε‖²/‖W‖²).
   * @default 0.01
   */
  noise?: number;
  /** Seed of the noise (mixed with the module index). @default 0 */
  seed?: number;
}

/**
 * Each module's sensitivity: the mean KL divergence from the dense model
 * when that module alone gets Gaussian noise of relative MSE `noise`,
 * divided by `noise` (KL per unit of relative weight error).
 *
 * @param model The model (its head gives the logits).
 * @param database The modules to measure (their order and names).
 * @param calibration Held-apart token sequences the KL is measured on.
 * @param options Tokens, noise level, seed.
 * @returns Sensitivity by module name.
 */
export function moduleSensitivities(
  model: CompressibleModel,
  database: LevelDatabase,
  calibration: readonly (readonly number[])[],
  options: SensitivityOptions = {},
): Map<string, number> {
  const { tokens = 256, noise = 0.01, seed = 0 } = options;
  if (!(noise > 0 && noise < 1)) {
    throw new RangeError(
      `Cannot measure sensitivities as 'noise' must be in (0, 1): current value is ${noise}`,
    );
  }
  checkTokens(tokens, "measure sensitivities");
  const fit = new KlFitness(model, database.modules, calibration, "measure sensitivities");
  fit.setAnchor(fit.dense);
  const out = new Map<string, number>();
  database.modules.forEach((m, i) => {
    const w = fit.dense[i]!;
    let ss = 0;
    for (const v of w.data) ss += v * v;
    const sigma = Math.sqrt((noise * ss) / w.data.length);
    const rng = prng((seed * 0x9e3779b1 + i) >>> 0);
    const noisy = tensor(
      "f32",
      w.shape,
      Float32Array.from(w.data, (v) => v + sigma * rng.normal()),
    );
    const assignment: Tensor<"f32">[] = fit.dense.slice();
    assignment[i] = noisy;
    out.set(m.name, fit.evaluate(assignment, tokens) / noise);
  });
  return out;
}

function checkTokens(tokens: number, caller: string): void {
  if (!(Number.isInteger(tokens) && tokens >= 2)) {
    throw new RangeError(
      `Cannot ${caller} as 'tokens' must be an integer of at least 2: current value is ${tokens}`,
    );
  }
}

/** Options of {@linkcode dpAllocation}. */
export interface DpAllocationOptions extends SensitivityOptions {
  /** The weight-count-weighted average level value to meet exactly (e.g. 3 bits, 50 percent). */
  target: number;
  /**
   * Held-apart calibration token sequences (not the ones the database was
   * built on): the sensitivities and the result's fitness are measured on them.
   */
  calibration: readonly (readonly number[])[];
  /** Sensitivities by module name, when already measured (skips measuring them). */
  sensitivities?: ReadonlyMap<string, number>;
}

/** What {@linkcode dpAllocation} returns. */
export interface DpAllocationResult extends Allocation {
  /** The predicted damage Σ sensitivity × weight error of the allocation. */
  readonly predicted: number;
  /** The sensitivities used, by module name. */
  readonly sensitivities: ReadonlyMap<string, number>;
}

/**
 * The allocation that minimizes Σₘ sensitivityₘ · weightErrorₘ(level)
 * exactly under the constraint that the weight-count-weighted average level
 * value equals `target`.
 *
 * @example
 * ```ts ignore
 * import { dpAllocation } from "./dp_allocation.ts";
 * const dp = dpAllocation(model, database, { target: 3, calibration: heldApart });
 * console.log(dp.bitsPerWeight, dp.fitness, dp.levels.get("layers.0.wq"));
 * ```
 * @param model The model (its head gives the logits).
 * @param database The level database.
 * @param options Target, held-apart calibration, sensitivity options.
 * @returns Level per module, its costs, fitness (KL on every calibration token) and prediction.
 * @throws {RangeError} when the target is outside the levels or not met exactly.
 */
export function dpAllocation(
  model: CompressibleModel,
  database: LevelDatabase,
  options: DpAllocationOptions,
): DpAllocationResult {
  const { target, calibration } = options;
  const b = exactBudget(database, target, "allocate levels");
  const sensitivities = options.sensitivities ??
    moduleSensitivities(model, database, calibration, options);
  const scores = database.modules.map((m) => {
    const s = sensitivities.get(m.name);
    if (s === undefined || !Number.isFinite(s)) {
      throw new RangeError(
        `Cannot allocate levels as 'sensitivities' must hold a finite value for ${m.name}: ` +
          `current value is ${s}`,
      );
    }
    return m.variants.map((v) => Math.max(0, s) * v.weightError);
  });
  const costs = b.units.map((u) => b.values.map((v) => u * v));
  const r = allocateExactly(scores, costs, b.budget);
  if (r === null) {
    throw new RangeError(
      `Cannot allocate levels as 'target' ${target} is not met exactly by any choice of levels`,
    );
  }
  const fit = new KlFitness(model, database.modules, calibration, "allocate levels");
  const fitness = fit.evaluate(
    database.modules.map((m, i) => m.variants[r.choice[i]!]!.weight),
    fit.totalTokens,
  );
  return { ...allocationOf(database, r.choice, fitness), predicted: r.score, sensitivities };
}
