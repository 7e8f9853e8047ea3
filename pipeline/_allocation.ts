/**
 * What the allocations share: the exact integer form of the global
 * constraint, the level-switch mutation that keeps it, and the result type.
 * Web-standard only.
 *
 * The constraint is Σₘ nₘ·v(lₘ) = target·Σₘ nₘ over the modules m (nₘ
 * weights, level lₘ with integer value v). Dividing every nₘ by their
 * greatest common divisor g gives small integer units uₘ = nₘ/g (Llama's
 * linears are multiples of one another: in llama5M wk and wv are 1 unit, wq
 * and wo 2, w1, w3 and w2 6), and the budget Σₘ uₘ·v(lₘ) = target·Σₘ uₘ is
 * an integer compared exactly.
 *
 * @module
 */

import type { Prng } from "../core/prng.ts";
import type { LevelDatabase } from "./level_database.ts";

/** The integer form of the constraint of a database and a target. */
export interface ExactBudget {
  /** Units of each module (weights / gcd). */
  readonly units: readonly number[];
  /** Value of each level. */
  readonly values: readonly number[];
  /** The exact budget Σ uₘ·v(lₘ) every allocation must meet. */
  readonly budget: number;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * The integer constraint for a target average value.
 *
 * @param database The database.
 * @param target The weighted average value to meet exactly.
 * @param caller What is being done (for messages).
 * @returns Units, values and budget.
 * @throws {RangeError} when the target is not finite, outside the levels'
 *   range, or not reachable exactly with these module sizes.
 */
export function exactBudget(database: LevelDatabase, target: number, caller: string): ExactBudget {
  const values = database.levels.map((l) => l.value);
  if (database.modules.length === 0) {
    throw new RangeError(`Cannot ${caller} as the database holds no module`);
  }
  const g = database.modules.reduce((a, m) => gcd(a, m.weights), 0);
  const units = database.modules.map((m) => m.weights / g);
  const total = units.reduce((a, b) => a + b, 0);
  const budget = target * total;
  const lo = Math.min(...values), hi = Math.max(...values);
  if (!(Number.isFinite(target) && target >= lo && target <= hi)) {
    throw new RangeError(
      `Cannot ${caller} as 'target' must be a number in [${lo}, ${hi}] (the levels' values): ` +
        `current value is ${target}`,
    );
  }
  if (Math.abs(budget - Math.round(budget)) > 1e-9 * total) {
    throw new RangeError(
      `Cannot ${caller} as 'target' must be a multiple of 1/${total} (the modules' sizes in ` +
        `units of ${g} weights) to be met exactly: current value is ${target}`,
    );
  }
  return { units, values, budget: Math.round(budget) };
}

/**
 * The cost Σ uₘ·v(lₘ) of an allocation.
 *
 * @param b The constraint.
 * @param levels Level index per module.
 * @returns The cost (an integer).
 */
export function allocationCost(b: ExactBudget, levels: ArrayLike<number>): number {
  let c = 0;
  for (let m = 0; m < b.units.length; m++) c += b.units[m]! * b.values[levels[m]!]!;
  return c;
}

/**
 * One level switch that keeps the cost exact: module A moves one level up or
 * down (by level order of value), and a module B ≠ A moves to a level whose
 * cost change cancels A's exactly (uB·Δv_B = −uA·Δv_A), chosen uniformly among
 * all such (B, level) pairs. Draws again (A, direction) when none exists.
 *
 * @param b The constraint.
 * @param levels Level index per module (not modified).
 * @param rng The generator.
 * @param attempts Draws of (A, direction) before giving up.
 * @returns A new allocation, or null when no exact switch was found.
 */
export function levelSwitch(
  b: ExactBudget,
  levels: Int32Array,
  rng: Prng,
  attempts = 64,
): Int32Array | null {
  const { units, values } = b;
  // Level indices sorted by value: "one level up" is the next larger value.
  const byValue = values.map((_, i) => i).sort((x, y) => values[x]! - values[y]! || x - y);
  const rank = new Int32Array(values.length);
  byValue.forEach((l, r) => rank[l] = r);
  const M = units.length;
  for (let t = 0; t < attempts; t++) {
    const a = rng.int(M);
    const r = rank[levels[a]!]! + (rng.uniform() < 0.5 ? -1 : 1);
    if (r < 0 || r >= byValue.length) continue;
    const la = byValue[r]!;
    const delta = units[a]! * (values[la]! - values[levels[a]!]!);
    if (delta === 0) continue;
    const pairs: [number, number][] = [];
    for (let m = 0; m < M; m++) {
      if (m === a) continue;
      for (let l = 0; l < values.length; l++) {
        if (units[m]! * (values[l]! - values[levels[m]!]!) === -delta) pairs.push([m, l]);
      }
    }
    if (pairs.length === 0) continue;
    const [m, l] = pairs[rng.int(pairs.length)]!;
    const out = Int32Array.from(levels);
    out[a] = la;
    out[m] = l;
    return out;
  }
  return null;
}

/** A chosen level per module and what it costs. */
export interface Allocation {
  /** Level index (into the database's levels) of each module, by name, in forward order. */
  readonly levels: ReadonlyMap<string, number>;
  /** The weight-count-weighted average level value (equals the target exactly). */
  readonly value: number;
  /** Weight-count-weighted average storage bits per weight, as the pipeline counts them. */
  readonly bitsPerWeight: number;
  /** Weight-count-weighted average fraction of weights kept. */
  readonly density: number;
  /**
   * Mean KL divergence (nats per token) of the compressed model's next-token
   * distribution from the dense model's on the fitness tokens.
   */
  readonly fitness: number;
}

/**
 * The allocation record of level indices.
 *
 * @param database The database.
 * @param levels Level index per module.
 * @param fitness Its fitness.
 * @returns The allocation.
 */
export function allocationOf(
  database: LevelDatabase,
  levels: ArrayLike<number>,
  fitness: number,
): Allocation {
  let n = 0, v = 0, bits = 0, density = 0;
  const byName = new Map<string, number>();
  database.modules.forEach((m, i) => {
    const l = levels[i]!;
    const variant = m.variants[l]!;
    byName.set(m.name, l);
    n += m.weights;
    v += m.weights * database.levels[l]!.value;
    bits += m.weights * variant.bitsPerWeight;
    density += m.weights * variant.density;
  });
  return { levels: byName, value: v / n, bitsPerWeight: bits / n, density: density / n, fitness };
}
