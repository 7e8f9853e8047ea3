/**
 * L-GreCo: choose a compression level per layer that minimizes the total
 * error under a total size budget, by dynamic programming (a multiple-choice
 * knapsack). Web-standard only.
 *
 * Each layer ℓ offers candidate levels j with an error e[ℓ][j] (e.g. the
 * squared norm of its compression error) and a cost c[ℓ][j] (e.g. the bytes it
 * sends or stores). Costs are counted in units of `costResolution`, each
 * rounded up, so that the returned choice never exceeds the budget; with
 * integer costs and the default resolution 1 the optimum is exact. Time and
 * memory are O(layers · budget/costResolution · levels).
 *
 * @see Markov et al., "L-GreCo: Layerwise-Adaptive Gradient Compression for
 *   Efficient and Accurate Deep Learning" (MLSys 2024), Section 3 (the DP).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lgrecoLevels } from "./lgreco.ts";
 * const tables = [
 *   [{ error: 0, cost: 4 }, { error: 1, cost: 1 }],
 *   [{ error: 0, cost: 4 }, { error: 5, cost: 1 }],
 * ];
 * // Budget 5: compress the layer whose compression costs the least error.
 * assert(lgrecoLevels(tables, { budget: 5 }).levels.join() === "1,0");
 * ```
 *
 * @module
 */

/** One candidate compression level of a layer. */
export interface CompressionLevel {
  /** The error this level causes (non-negative, finite). */
  readonly error: number;
  /** Its size (non-negative, finite), in the unit of the budget. */
  readonly cost: number;
}

/** Options of {@linkcode lgrecoLevels}. */
export interface LgrecoOptions {
  /** The largest allowed total cost. */
  budget: number;
  /**
   * Cost unit of the DP: each cost is rounded up to a multiple of it, the
   * budget down. Coarser is faster but may miss the exact optimum.
   * @default 1
   */
  costResolution?: number;
}

/** The chosen levels. */
export interface LgrecoResult {
  /** Index of the chosen level, per layer. */
  readonly levels: number[];
  /** Total error of the choice. */
  readonly error: number;
  /** Total cost of the choice (≤ budget). */
  readonly cost: number;
}

/**
 * Chooses per-layer compression levels by dynamic programming.
 *
 * @param tables Per layer, its candidate levels (at least one each).
 * @param options The budget and the cost resolution.
 * @returns The levels minimizing the total error with total cost ≤ budget.
 * @throws {RangeError} When no choice fits the budget.
 */
export function lgrecoLevels(
  tables: readonly (readonly CompressionLevel[])[],
  options: LgrecoOptions,
): LgrecoResult {
  const { budget, costResolution = 1 } = options;
  if (!(Number.isFinite(budget) && budget >= 0)) {
    throw new RangeError(
      `Cannot choose levels as 'budget' must be finite and non-negative: current value is ${budget}`,
    );
  }
  if (!(Number.isFinite(costResolution) && costResolution > 0)) {
    throw new RangeError(
      `Cannot choose levels as 'costResolution' must be positive and finite: ` +
        `current value is ${costResolution}`,
    );
  }
  const B = Math.floor(budget / costResolution + 1e-9);
  if (B > 1e7) {
    throw new RangeError(
      `Cannot choose levels as 'budget'/'costResolution' = ${B} units is over 10^7: ` +
        `raise 'costResolution'`,
    );
  }
  const units = tables.map((levels, l) => {
    if (levels.length === 0) throw new RangeError(`Cannot choose levels: layer ${l} has none`);
    return levels.map(({ error, cost }, j) => {
      if (!(Number.isFinite(error) && error >= 0 && Number.isFinite(cost) && cost >= 0)) {
        throw new RangeError(
          `Cannot choose levels: layer ${l} level ${j} has error ${error} and cost ${cost} ` +
            `(both must be finite and non-negative)`,
        );
      }
      return Math.ceil(cost / costResolution - 1e-9);
    });
  });
  // best[b]: least error of the layers so far using exactly b units.
  let best = new Float64Array(B + 1).fill(Infinity);
  best[0] = 0;
  const choice: Int32Array[] = [];
  tables.forEach((levels, l) => {
    const next = new Float64Array(B + 1).fill(Infinity);
    const pick = new Int32Array(B + 1).fill(-1);
    for (let b = 0; b <= B; b++) {
      if (best[b] === Infinity) continue;
      levels.forEach(({ error }, j) => {
        const nb = b + units[l]![j]!;
        if (nb > B) return;
        const v = best[b]! + error;
        if (v < next[nb]!) {
          next[nb] = v;
          pick[nb] = j;
        }
      });
    }
    best = next;
    choice.push(pick);
  });
  let end = -1;
  for (let b = 0; b <= B; b++) if (best[b]! < (end < 0 ? Infinity : best[end]!)) end = b;
  if (end < 0) {
    throw new RangeError(
      `Cannot choose levels: no choice fits 'budget' ${budget} (the cheapest costs ${
        tables.reduce((s, t) => s + Math.min(...t.map((x) => x.cost)), 0)
      })`,
    );
  }
  const levels = new Array<number>(tables.length);
  let error = 0, cost = 0;
  for (let l = tables.length - 1, b = end; l >= 0; l--) {
    const j = choice[l]![b]!;
    levels[l] = j;
    error += tables[l]![j]!.error;
    cost += tables[l]![j]!.cost;
    b -= units[l]![j]!;
  }
  return { levels, error, cost };
}
