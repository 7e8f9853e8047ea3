/**
 * EvoPress: a (1+λ) evolutionary search for one compression level per module
 * under a global constraint (average bits per weight, or average sparsity),
 * scored against the dense model's output rather than summed layer errors
 * (error monotonicity fails for LLMs: a set of lower per-layer errors can
 * give a worse model). Fitness is the mean KL divergence of the candidate's
 * next-token distribution from the dense model's on held-apart calibration
 * text. Web-standard only.
 *
 * A generation makes λ distinct offspring of the parent by level switches
 * that keep the constraint exact, then selects in steps: every step scores
 * the remaining candidates on a fresh seeded sample of calibration windows
 * (few tokens first, many at the end) and keeps the best few; at the last
 * step the parent is scored again on the same tokens as the survivors, and
 * the best of them becomes the parent. Resampling keeps the search from
 * fitting one small set of tokens, and re-scoring the parent lets a parent
 * that was lucky on one sample be replaced. The search starts from the
 * better, on the evaluation tokens (a fixed set held apart from the pool the
 * selection samples), of the DP allocation and the uniform allocation when
 * one meets the target, and returns its final parent only when that is
 * better than the start on those tokens, which the selection never scored.
 *
 * It sits in the pipeline because it needs the model only through
 * `CompressibleModel` (embed, the blocks' forward, the head), which gives
 * the logits on the host; every random choice of generation g comes from a
 * generator seeded with (seed, g), so a run resumed from a generation's state
 * continues exactly as the uninterrupted run.
 *
 * @see Sieberling et al., "EvoPress: Towards Optimal Dynamic Model
 * Compression via Evolutionary Search" (2024), Algorithm 1 and Section 3.2
 * (level-switch mutation, multi-step selection on resampled calibration
 * data, elitism).
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
  /**
   * Calibration tokens each candidate of the step is scored on: whole
   * windows drawn afresh at random (seeded) each generation and step, the
   * last one cut.
   */
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
  /**
   * The parent's fitness on the last generation's last selection sample
   * (before the first generation: on the evaluation tokens).
   */
  readonly fitness: number;
  /** The starting allocation's level index per module. */
  readonly start: readonly number[];
  /** The starting allocation's fitness on the evaluation tokens. */
  readonly startFitness: number;
  /** The parent's fitness on each generation's last selection sample. */
  readonly history: readonly number[];
  /** Fitness evaluations so far (one candidate on one sample). */
  readonly evaluations: number;
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
   * built on): the pool the selection steps sample windows from. Without
   * `evaluation`, its first whole sequences holding `evaluationTokens` tokens
   * are set apart as the evaluation tokens and never sampled.
   */
  calibration: readonly (readonly number[])[];
  /**
   * Evaluation sequences, apart from `calibration` (the search never samples
   * them): the start is chosen on their first `evaluationTokens` tokens, and
   * the result must beat the start on them.
   * @default the first whole sequences of `calibration` that hold `evaluationTokens` tokens, taken out of the pool
   */
  evaluation?: readonly (readonly number[])[];
  /**
   * Generations. About 20 s each with the default offspring and selection
   * on llama5M on a free CPU core (25-40 s on a shared one).
   * @default 24
   */
  generations?: number;
  /** Distinct offspring per generation (λ). @default 16 */
  offspring?: number;
  /**
   * An offspring makes between 1 and this many level switches, the count
   * drawn as the least of two uniform draws (biased towards 1, as EvoPress).
   * @default 3
   */
  maxSwitches?: number;
  /**
   * The multi-step selection; the parent competes with the last step's
   * candidates on the last step's tokens. Token counts above the pool's are
   * an error.
   * (EvoPress's own runs use 2,048 → 16,384 → 131,072 tokens with 16 → 4 → 1
   * survivors of 128 offspring on a GPU; these defaults fit a CPU.)
   * @default [{ tokens: 128, survivors: 4 }, { tokens: 512, survivors: 2 }, { tokens: 1024, survivors: 1 }], each clipped to the pool's tokens
   */
  selection?: readonly SelectionStep[];
  /**
   * Evaluation tokens (the first of `evaluation`) on which the start
   * candidates are compared and the final parent must beat the start.
   * @default every token of `evaluation`; without it, a quarter of the calibration tokens (whole sequences, all but one at most)
   */
  evaluationTokens?: number;
  /** Seed of the mutations and the samples. @default 0 */
  seed?: number;
  /**
   * The starting level index per module name (it must meet the target).
   * @default the better on the evaluation tokens of the {@linkcode dpAllocation}
   * and, when a level's value equals the target, the uniform allocation
   */
  start?: ReadonlyMap<string, number>;
  /**
   * Sensitivities by module name for the default start's DP allocation
   * (measured when absent).
   */
  sensitivities?: ReadonlyMap<string, number>;
  /** A state from `onGeneration` to continue from (same options otherwise). */
  resume?: EvoPressState;
  /** Called after each generation (awaited: a journal can save the state). */
  onGeneration?: (p: EvoPressProgress) => void | Promise<void>;
}

/** What {@linkcode evoPress} returns. */
export interface EvoPressResult extends Allocation {
  /** The search's final state. */
  readonly state: EvoPressState;
  /** The starting allocation's fitness on the evaluation tokens. */
  readonly startFitness: number;
  /**
   * Whether the search's final parent beat the start on the evaluation
   * tokens (otherwise the start is returned).
   */
  readonly improved: boolean;
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
 * @returns The best allocation found, its fitness on the evaluation tokens and the search's state.
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
    generations = 24,
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
  let pool = calibration;
  let held = options.evaluation;
  if (held === undefined) {
    // The first whole sequences holding the evaluation tokens, set apart from the pool.
    const seqs = calibration.filter((q) => q.length >= 2);
    const all = seqs.reduce((a, q) => a + q.length, 0);
    const want = options.evaluationTokens ?? Math.ceil(all / 4);
    let n = 0;
    for (let got = 0; got < want && n < seqs.length; n++) got += seqs[n]!.length;
    if (seqs.length >= 2 && n >= seqs.length) n = seqs.length - 1;
    if (seqs.length < 2 || !(Number.isSafeInteger(want) && want >= 2)) {
      throw new RangeError(
        `Cannot search as 'calibration' must hold 2 sequences of at least 2 tokens to set the ` +
          `evaluation tokens apart from the pool (or pass 'evaluation'), and 'evaluationTokens' ` +
          `must be an integer of at least 2: current values are ${seqs.length} sequences, ${want}`,
      );
    }
    held = seqs.slice(0, n);
    pool = seqs.slice(n);
  }
  const fit = new KlFitness(model, database.modules, pool, "search", held);
  if (fit.heldTokens < 2) {
    throw new RangeError(
      `Cannot search as 'evaluation' must hold a sequence of at least 2 tokens`,
    );
  }
  const total = fit.totalTokens;
  const selection = options.selection ?? [
    { tokens: Math.min(128, total), survivors: Math.min(4, offspring) },
    { tokens: Math.min(512, total), survivors: Math.min(2, offspring) },
    { tokens: Math.min(1024, total), survivors: 1 },
  ];
  if (selection.length === 0 || selection[selection.length - 1]!.survivors !== 1) {
    throw new RangeError(`Cannot search as 'selection' must end with a step of 1 survivor`);
  }
  const tokenRange = (what: string, v: number) => {
    if (!(Number.isSafeInteger(v) && v >= 2 && v <= total)) {
      throw new RangeError(
        `Cannot search as ${what} must be an integer in [2, ${total}] ` +
          `(the calibration tokens): current value is ${v}`,
      );
    }
  };
  for (const s of selection) {
    tokenRange("a selection step's 'tokens'", s.tokens);
    positiveInteger("survivors", s.survivors);
  }
  const evaluationTokens = options.evaluationTokens ?? fit.heldTokens;
  if (
    !(Number.isSafeInteger(evaluationTokens) && evaluationTokens >= 2 &&
      evaluationTokens <= fit.heldTokens)
  ) {
    throw new RangeError(
      `Cannot search as 'evaluationTokens' must be an integer in [2, ${fit.heldTokens}] (the ` +
        `evaluation tokens, apart from a pool of at least one sequence): current value is ` +
        `${evaluationTokens}`,
    );
  }
  const evaluation = fit.held(evaluationTokens);
  const M = database.modules.length;
  const weightsOf = (levels: ArrayLike<number>) =>
    database.modules.map((m, i) => m.variants[levels[i]!]!.weight);
  const checkExact = (levels: ArrayLike<number> | undefined, what: string) => {
    // (A state saved before the start was kept in it has no `start`.)
    if (
      levels?.length !== M || Array.from(levels).some((l) => !database.levels[l])
    ) {
      throw new RangeError(`Cannot search as '${what}' must give a level to every module`);
    }
    if (allocationCost(b, levels) !== b.budget) {
      throw new RangeError(
        `Cannot search as '${what}' does not meet 'target' ${target} exactly`,
      );
    }
  };
  const same = (x: ArrayLike<number>, y: ArrayLike<number>) =>
    Array.from(x).every((l, i) => l === y[i]);

  let parent: Int32Array;
  let parentFitness: number;
  let history: number[];
  let generation: number;
  let startLevels: Int32Array;
  let startFitness: number;
  if (resume) {
    checkExact(resume.levels, "resume");
    checkExact(resume.start, "resume");
    parent = Int32Array.from(resume.levels);
    parentFitness = resume.fitness;
    history = [...resume.history];
    generation = resume.generation;
    startLevels = Int32Array.from(resume.start);
    startFitness = resume.startFitness;
    fit.evaluations = resume.evaluations;
    fit.tokensScored = resume.tokensScored;
  } else {
    const candidates: number[][] = [];
    const scores: number[] = [];
    if (start) {
      candidates.push(database.modules.map((m) => start.get(m.name) ?? -1));
    } else {
      // The DP allocation's own fitness is measured on the evaluation tokens.
      const dp = dpAllocation(model, database, {
        ...options,
        calibration: evaluation.map((p) => fit.tokensOf(p)),
      });
      // Counted as one evaluation of the search (the sensitivities are not counted).
      fit.evaluations++;
      fit.tokensScored += evaluationTokens;
      candidates.push(database.modules.map((m) => dp.levels.get(m.name)!));
      scores.push(dp.fitness);
      const u = database.levels.findIndex((l) => l.value === target);
      const uniform = database.modules.map(() => u);
      if (u >= 0 && !same(uniform, candidates[0]!)) candidates.push(uniform);
    }
    candidates.forEach((c) => checkExact(c, "start"));
    // The better on the evaluation tokens (ties: the first, i.e. the DP allocation).
    for (let i = scores.length; i < candidates.length; i++) {
      scores.push(fit.evaluate(weightsOf(candidates[i]!), evaluation));
    }
    const best = scores.indexOf(Math.min(...scores));
    startLevels = Int32Array.from(candidates[best]!);
    startFitness = scores[best]!;
    parent = startLevels;
    parentFitness = startFitness;
    history = [];
    generation = 0;
  }
  for (; generation < generations; generation++) {
    const rng = prng(mixSeed(seed, generation, "evopress"));
    fit.setAnchor(weightsOf(parent));
    // λ distinct offspring, none equal to the parent (a bounded number of draws).
    let pool: Int32Array[] = [];
    const seen = new Set([parent.join(",")]);
    for (let draw = 0; draw < 8 * offspring && pool.length < offspring; draw++) {
      let child: Int32Array | null = parent;
      const switches = Math.min(1 + rng.int(maxSwitches), 1 + rng.int(maxSwitches));
      for (let s = 0; s < switches && child; s++) child = levelSwitch(b, child, rng);
      if (child === null) continue;
      // Every candidate meets the constraint exactly (by construction; checked).
      if (allocationCost(b, child) !== b.budget) throw new Error("level switch broke the budget");
      const key = child.join(",");
      if (seen.has(key)) continue;
      seen.add(key);
      pool.push(child);
    }
    let scores: number[] = [];
    let parentScore = parentFitness;
    for (let si = 0; si < selection.length && pool.length > 0; si++) {
      const step = selection[si]!;
      const sample = fit.sample(step.tokens, rng);
      const last = si === selection.length - 1;
      // The last step's candidates keep their block outputs: the next generation's anchor, should
      // one of them become the parent, starts from them.
      scores = pool.map((c) => fit.evaluate(weightsOf(c), sample, { keepOutputs: last }));
      // The parent meets the last step's candidates on the same tokens.
      if (last) parentScore = fit.evaluate(weightsOf(parent), sample);
      const order = pool.map((_, i) => i).sort((x, y) => scores[x]! - scores[y]! || x - y);
      const keep = order.slice(0, step.survivors);
      pool = keep.map((i) => pool[i]!);
      scores = keep.map((i) => scores[i]!);
    }
    const improved = pool.length > 0 && scores[0]! < parentScore;
    if (improved) {
      parent = pool[0]!;
      parentFitness = scores[0]!;
    } else {
      parentFitness = parentScore;
    }
    history.push(parentFitness);
    await onGeneration?.({
      state: state(generation + 1),
      generations,
      improved,
      seconds: (performance.now() - t0) / 1000,
    });
  }
  function state(g: number): EvoPressState {
    return {
      generation: g,
      levels: Array.from(parent),
      fitness: parentFitness,
      start: Array.from(startLevels),
      startFitness,
      history: [...history],
      evaluations: fit.evaluations,
      tokensScored: fit.tokensScored,
    };
  }
  // The final parent is returned only when it beats the start on the evaluation tokens.
  let final = startLevels;
  let finalFitness = startFitness;
  if (!same(parent, startLevels)) {
    const f = fit.evaluate(weightsOf(parent), evaluation);
    if (f < startFitness) {
      final = parent;
      finalFitness = f;
    }
  }
  return {
    ...allocationOf(database, final, finalFitness),
    state: state(generation),
    startFitness,
    improved: final !== startLevels,
    seconds: (performance.now() - t0) / 1000,
  };
}
