/**
 * EvoPress: a (1+λ) evolutionary search for one compression level per module
 * under a global constraint (average bits per weight, or average sparsity),
 * scored against the dense model's output rather than summed layer errors
 * (error monotonicity fails for LLMs: a set of lower per-layer errors can
 * give a worse model). Each generation makes λ offspring of the parent by
 * level switches that keep the constraint exact, scores them on a few
 * calibration tokens, keeps the best few, scores those on more, and replaces
 * the parent when the last survivor beats it on the last stage's tokens.
 * Fitness is the mean KL divergence of the candidate's next-token
 * distribution from the dense model's on held-apart calibration text.
 * Web-standard only.
 *
 * It sits in the pipeline because it needs the model only through
 * `CompressibleModel` (embed, the blocks' forward, the head), which gives
 * the logits on the host; every random choice of generation g comes from a
 * generator seeded with (seed, g), so a run resumed from a generation's state
 * continues exactly as the uninterrupted run.
 *
 * @see Sieberling et al., "EvoPress: Towards Optimal Dynamic Model
 * Compression via Evolutionary Search" (2024), Algorithm 1 and Section 3.2
 * (level-switch mutation, multi-step selection).
 *
 * @module
 */

import { mixSeed } from "../core/_mix_seed.ts";
import { prng } from "../core/prng.ts";
import {
  type Allocation,
  allocationCost,
  allocationOf,
  exactBudget,
  levelSwitch,
} from "./_allocation.ts";
import { KlFitness } from "./_kl_fitness.ts";
import { dpAllocation, type SensitivityOptions } from "./dp_allocation.ts";
import type { LevelDatabase } from "./level_database.ts";
import type { CompressibleModel } from "./model.ts";

/** One step of the multi-step selection. */
export interface SelectionStep {
  /** Calibration tokens each candidate is scored on (the first this many). */
  readonly tokens: number;
  /** How many candidates go on to the next step (1 at the last step). */
  readonly survivors: number;
}

/** Where a search stands after a generation: enough to resume it. */
export interface EvoPressState {
  /** Generations done. */
  readonly generation: number;
  /** The parent's level index per module, in the database's module order. */
  readonly levels: readonly number[];
  /** The parent's fitness on the last selection step's tokens. */
  readonly fitness: number;
  /** The starting allocation's fitness on the last selection step's tokens. */
  readonly startFitness: number;
  /** The parent's fitness after each generation so far. */
  readonly history: readonly number[];
  /** Tokens scored so far (forward passes, in tokens). */
  readonly tokensScored: number;
}

/** What {@linkcode evoPress} reports after each generation. */
export interface EvoPressProgress {
  /** The state (for a journal). */
  readonly state: EvoPressState;
  /** Generations asked for. */
  readonly generations: number;
  /** Whether this generation's survivor replaced the parent. */
  readonly improved: boolean;
  /** Seconds since the call started. */
  readonly seconds: number;
}

/** Options of {@linkcode evoPress}. */
export interface EvoPressOptions extends SensitivityOptions {
  /** The weight-count-weighted average level value to meet exactly (e.g. 3 bits, 50 percent). */
  target: number;
  /**
   * Held-apart calibration token sequences (not the ones the database was
   * built on): the fitness is measured on their first tokens.
   */
  calibration: readonly (readonly number[])[];
  /** Generations. @default 50 */
  generations?: number;
  /** Offspring per generation (λ). @default 16 */
  offspring?: number;
  /** Each offspring makes between 1 and this many level switches. @default 3 */
  maxSwitches?: number;
  /**
   * The multi-step selection; the parent competes with the last step's
   * survivor on the last step's tokens.
   * @default [{ tokens: 256, survivors: 4 }, { tokens: every calibration token, survivors: 1 }]
   */
  selection?: readonly SelectionStep[];
  /** Seed of the mutations. @default 0 */
  seed?: number;
  /**
   * The starting level index per module name (it must meet the target).
   * @default the {@linkcode dpAllocation} for the target
   */
  start?: ReadonlyMap<string, number>;
  /** A state from `onGeneration` to continue from (same options otherwise). */
  resume?: EvoPressState;
  /** Called after each generation (awaited: a journal can save the state). */
  onGeneration?: (p: EvoPressProgress) => void | Promise<void>;
}

/** What {@linkcode evoPress} returns. */
export interface EvoPressResult extends Allocation {
  /** The search's final state. */
  readonly state: EvoPressState;
  /** The starting allocation's fitness on the last selection step's tokens. */
  readonly startFitness: number;
  /** Seconds this call took. */
  readonly seconds: number;
}

function positiveInteger(name: string, v: number): void {
  if (!(Number.isSafeInteger(v) && v >= 1)) {
    throw new RangeError(
      `Cannot search as '${name}' must be a positive integer: current value is ${v}`,
    );
  }
}

/**
 * Searches for the level of every module that minimizes the compressed
 * model's KL divergence from the dense model, with the weighted average level
 * value fixed at `target`.
 *
 * @example
 * ```ts ignore
 * import { evoPress } from "./evopress.ts";
 * const r = await evoPress(model, database, { target: 3, calibration: heldApart, seed: 0 });
 * console.log(r.bitsPerWeight, r.fitness, r.levels.get("layers.0.w2"));
 * ```
 * @param model The model (its head gives the logits; not modified).
 * @param database The level database.
 * @param options Target, held-apart calibration, search settings, resumption.
 * @returns The best allocation found, its fitness and the search's state.
 * @throws {RangeError} for bad options, a start or resume state that misses the target.
 */
export async function evoPress(
  model: CompressibleModel,
  database: LevelDatabase,
  options: EvoPressOptions,
): Promise<EvoPressResult> {
  const t0 = performance.now();
  const {
    target,
    calibration,
    generations = 50,
    offspring = 16,
    maxSwitches = 3,
    seed = 0,
    start,
    resume,
    onGeneration,
  } = options;
  const b = exactBudget(database, target, "search");
  positiveInteger("offspring", offspring);
  positiveInteger("maxSwitches", maxSwitches);
  if (!(Number.isSafeInteger(generations) && generations >= 0)) {
    throw new RangeError(
      `Cannot search as 'generations' must be a non-negative integer: current value is ${generations}`,
    );
  }
  if (!Number.isSafeInteger(seed)) {
    throw new RangeError(`Cannot search as 'seed' must be an integer: current value is ${seed}`);
  }
  const fit = new KlFitness(model, database.modules, calibration, "search");
  const selection = options.selection ?? [
    { tokens: Math.min(256, fit.totalTokens), survivors: Math.min(4, offspring) },
    { tokens: fit.totalTokens, survivors: 1 },
  ];
  if (selection.length === 0 || selection[selection.length - 1]!.survivors !== 1) {
    throw new RangeError(`Cannot search as 'selection' must end with a step of 1 survivor`);
  }
  for (const s of selection) {
    if (!(Number.isSafeInteger(s.tokens) && s.tokens >= 2 && s.tokens <= fit.totalTokens)) {
      throw new RangeError(
        `Cannot search as a selection step's 'tokens' must be an integer in [2, ${fit.totalTokens}] ` +
          `(the calibration tokens): current value is ${s.tokens}`,
      );
    }
    positiveInteger("survivors", s.survivors);
  }
  const finalTokens = selection[selection.length - 1]!.tokens;
  const M = database.modules.length;
  const weightsOf = (levels: Int32Array) =>
    database.modules.map((m, i) => m.variants[levels[i]!]!.weight);
  const checkExact = (levels: ArrayLike<number>, what: string) => {
    if (levels.length !== M || Array.from(levels).some((l) => !database.levels[l])) {
      throw new RangeError(`Cannot search as '${what}' must give a level to every module`);
    }
    if (allocationCost(b, levels) !== b.budget) {
      throw new RangeError(
        `Cannot search as '${what}' does not meet 'target' ${target} exactly`,
      );
    }
  };

  let parent: Int32Array;
  let parentFitness: number;
  let history: number[];
  let generation: number;
  let startFitness: number;
  if (resume) {
    checkExact(resume.levels, "resume");
    parent = Int32Array.from(resume.levels);
    parentFitness = resume.fitness;
    history = [...resume.history];
    generation = resume.generation;
    startFitness = resume.startFitness;
    fit.tokensScored = resume.tokensScored;
  } else {
    let init: readonly number[];
    if (start) {
      init = database.modules.map((m) => start.get(m.name) ?? -1);
    } else {
      const dp = dpAllocation(model, database, options);
      init = database.modules.map((m) => dp.levels.get(m.name)!);
    }
    checkExact(init, "start");
    parent = Int32Array.from(init);
    fit.setAnchor(weightsOf(parent));
    parentFitness = fit.evaluate(weightsOf(parent), finalTokens);
    startFitness = parentFitness;
    history = [];
    generation = 0;
  }
  for (; generation < generations; generation++) {
    const rng = prng(mixSeed(seed, generation, "evopress"));
    const pw = weightsOf(parent);
    fit.setAnchor(pw);
    let pool: Int32Array[] = [];
    for (let k = 0; k < offspring; k++) {
      let child: Int32Array | null = parent;
      const switches = 1 + rng.int(maxSwitches);
      for (let s = 0; s < switches && child; s++) child = levelSwitch(b, child, rng);
      if (child === null || child === parent) continue;
      // Every candidate meets the constraint exactly (by construction; checked).
      if (allocationCost(b, child) !== b.budget) throw new Error("level switch broke the budget");
      pool.push(child);
    }
    let scores: number[] = [];
    for (const step of selection) {
      scores = pool.map((c) => fit.evaluate(weightsOf(c), step.tokens));
      const order = pool.map((_, i) => i).sort((x, y) => scores[x]! - scores[y]! || x - y);
      const keep = order.slice(0, step.survivors);
      pool = keep.map((i) => pool[i]!);
      scores = keep.map((i) => scores[i]!);
    }
    const improved = pool.length > 0 && scores[0]! < parentFitness;
    if (improved) {
      parent = pool[0]!;
      parentFitness = scores[0]!;
    }
    history.push(parentFitness);
    await onGeneration?.({
      state: state(),
      generations,
      improved,
      seconds: (performance.now() - t0) / 1000,
    });
  }
  function state(): EvoPressState {
    return {
      generation: generation + 1,
      levels: Array.from(parent),
      fitness: parentFitness,
      startFitness,
      history: [...history],
      tokensScored: fit.tokensScored,
    };
  }
  const final: EvoPressState = {
    generation,
    levels: Array.from(parent),
    fitness: parentFitness,
    startFitness,
    history,
    tokensScored: fit.tokensScored,
  };
  return {
    ...allocationOf(database, parent, parentFitness),
    state: final,
    startFitness,
    seconds: (performance.now() - t0) / 1000,
  };
}
