import assert from "node:assert/strict";
import { KlFitness } from "../../pipeline/_kl_fitness.ts";
import { moduleSensitivities } from "../../pipeline/dp_allocation.ts";
import { evoPress, type EvoPressState } from "../../pipeline/evopress.ts";
import type { CompressibleModel } from "../../pipeline/model.ts";
import { storiesLevels } from "./_stories_levels.ts";

const SEARCH = {
  target: 3,
  generations: 4,
  offspring: 4,
  selection: [{ tokens: 24, survivors: 2 }, { tokens: 96, survivors: 1 }],
  tokens: 48,
};

Deno.test("evoPress() is deterministic for a seed and keeps the target exactly", async () => {
  const s = await storiesLevels();
  if (!s) return;
  const { lm, db, pool } = s;
  const a = await evoPress(lm, db, { ...SEARCH, calibration: pool, seed: 5 });
  const b = await evoPress(lm, db, { ...SEARCH, calibration: pool, seed: 5 });
  assert.deepEqual([...a.levels], [...b.levels]);
  assert.equal(a.fitness, b.fitness);
  assert.deepEqual(a.state, b.state);
  assert.equal(a.value, 3);
  assert(a.fitness <= a.startFitness);
  assert.equal(a.state.history.length, 4);
  // 4 offspring and the parent per generation; the start's and the result's evaluations.
  assert(a.state.evaluations >= 4 * (4 + 2 + 1) && a.state.tokensScored > 0);
  if (!a.improved) assert.deepEqual([...a.levels.values()], a.state.start);
});

Deno.test("evoPress() resumed from a generation's state ends as the uninterrupted run", async () => {
  const s = await storiesLevels();
  if (!s) return;
  const { lm, db, pool } = s;
  const start = new Map(db.modules.map((m) => [m.name, 1])); // uniform 3 bits
  const states: EvoPressState[] = [];
  const whole = await evoPress(lm, db, {
    ...SEARCH,
    calibration: pool,
    start,
    onGeneration: (p) => {
      states.push(p.state);
    },
  });
  assert.equal(states.length, 4);
  const resumed = await evoPress(lm, db, { ...SEARCH, calibration: pool, resume: states[1]! });
  assert.deepEqual([...resumed.levels], [...whole.levels]);
  assert.deepEqual(resumed.state.history, whole.state.history);
  assert.equal(resumed.fitness, whole.fitness);
});

Deno.test("evoPress() refuses a start that misses the target and bad options, naming them", async () => {
  const s = await storiesLevels();
  if (!s) return;
  const { lm, db, pool } = s;
  const start = new Map(db.modules.map((m) => [m.name, 2])); // 4 bits everywhere
  await assert.rejects(
    () => evoPress(lm, db, { ...SEARCH, calibration: pool, start }),
    /'start' does not meet 'target' 3 exactly/,
  );
  await assert.rejects(
    () => evoPress(lm, db, { ...SEARCH, calibration: pool, offspring: 0 }),
    /'offspring' must be a positive integer: current value is 0/,
  );
  // Evaluation tokens past the evaluation windows, or a pool of one window that cannot be split.
  await assert.rejects(
    () =>
      evoPress(lm, db, { ...SEARCH, calibration: pool, evaluation: pool, evaluationTokens: 999 }),
    /'evaluationTokens' must be an integer in \[2, 192\]/,
  );
  await assert.rejects(
    () => evoPress(lm, db, { ...SEARCH, calibration: pool.slice(0, 1) }),
    /'calibration' must hold 2 sequences of at least 2 tokens/,
  );
  await assert.rejects(
    () =>
      evoPress(lm, db, {
        ...SEARCH,
        calibration: pool,
        selection: [{ tokens: 24, survivors: 2 }],
      }),
    /'selection' must end with a step of 1 survivor/,
  );
  // A state saved without its start (before the start was kept in it) is refused, not misread.
  const old = {
    generation: 1,
    levels: db.modules.map(() => 1),
    fitness: 0.1,
    startFitness: 0.1,
    history: [0.1],
    evaluations: 5,
    tokensScored: 100,
  } as unknown as EvoPressState;
  await assert.rejects(
    () => evoPress(lm, db, { ...SEARCH, calibration: pool, resume: old }),
    /'resume' must give a level to every module/,
  );
});

Deno.test("evoPress() re-scores the parent on each generation's resampled windows of the pool", async () => {
  const s = await storiesLevels();
  if (!s) return;
  const { lm, db, pool, heldApart } = s;
  // From the uniform 3-bit allocation; every generation's last step scores the survivor and the
  // parent on 2 of the pool's 8 windows of 24 tokens, drawn afresh; the evaluation is apart.
  const start = new Map(db.modules.map((m) => [m.name, 1]));
  const progress: { levels: readonly number[]; fitness: number; improved: boolean }[] = [];
  const r = await evoPress(lm, db, {
    target: 3,
    calibration: pool,
    evaluation: heldApart,
    start,
    generations: 6,
    offspring: 3,
    selection: [{ tokens: 24, survivors: 2 }, { tokens: 48, survivors: 1 }],
    seed: 2,
    onGeneration: (p) => {
      progress.push({ levels: p.state.levels, fitness: p.state.fitness, improved: p.improved });
    },
  });
  assert.equal(progress.length, 6);
  // A generation's parent fitness is its KL on 2 whole windows of the pool: one of the 28 pairs.
  const fit = new KlFitness(lm, db.modules, pool, "test");
  const pairsOf = (levels: readonly number[]) => {
    const w = db.modules.map((m, i) => m.variants[levels[i]!]!.weight);
    const out: number[] = [];
    for (let i = 0; i < pool.length; i++) {
      for (let j = i + 1; j < pool.length; j++) {
        const one = fit.evaluate(w, [{ sequence: i, length: 24 }]);
        const two = fit.evaluate(w, [{ sequence: j, length: 24 }]);
        out.push((one + two) / 2);
      }
    }
    return out;
  };
  for (const p of progress) {
    const pairs = pairsOf(p.levels);
    assert(pairs.some((v) => Math.abs(v - p.fitness) < 1e-12), `${p.fitness} is not on 2 windows`);
  }
  // A parent kept from one generation to the next is scored again, on other windows.
  const kept = progress.filter((p, g) => g > 0 && !p.improved);
  assert(kept.length > 0);
  for (const p of kept) {
    const g = progress.indexOf(p);
    assert.deepEqual(p.levels, progress[g - 1]!.levels);
  }
  assert(kept.some((p) => p.fitness !== progress[progress.indexOf(p) - 1]!.fitness));
  // The result is scored on the evaluation tokens (held apart) and never worse than the start.
  const held = new KlFitness(lm, db.modules, heldApart, "test");
  const all = held.evaluate(db.modules.map((m, i) => m.variants[r.state.start[i]!]!.weight), 96);
  assert.equal(r.startFitness, all);
  assert(r.fitness <= r.startFitness);
});

Deno.test("evoPress() starts from the better of the DP and the uniform allocation and never ends worse", async () => {
  const s = await storiesLevels();
  if (!s) return;
  const { lm, db, pool } = s;
  const sensitivities = moduleSensitivities(lm, db, pool, { tokens: 48 });
  const fit = new KlFitness(lm, db.modules, pool, "test");
  const uniform = fit.evaluate(db.modules.map((m) => m.variants[1]!.weight), 96);
  const r = await evoPress(lm, db, {
    target: 3,
    calibration: pool,
    sensitivities,
    generations: 2,
    offspring: 3,
    selection: [{ tokens: 24, survivors: 2 }, { tokens: 48, survivors: 1 }],
    evaluationTokens: 96,
  });
  assert(r.startFitness <= uniform);
  assert(r.fitness <= r.startFitness && r.fitness <= uniform);
  assert.equal(r.value, 3);
  // No search at all returns the start, scored on the evaluation tokens.
  const none = await evoPress(lm, db, {
    target: 3,
    calibration: pool,
    sensitivities,
    generations: 0,
    evaluationTokens: 96,
  });
  assert.equal(none.fitness, r.startFitness);
  assert.deepEqual([...none.levels.values()], r.state.start);
  assert(!none.improved);
});

/** The model, recording the token sequences its forward passes start from. */
function recording(lm: CompressibleModel): { model: CompressibleModel; seen: number[][] } {
  const seen: number[][] = [];
  const model: CompressibleModel = {
    blocks: lm.blocks,
    ...(lm.head ? { head: lm.head } : {}),
    embed: (tokens) => {
      seen.push([...tokens]);
      return lm.embed(tokens);
    },
  };
  return { model, seen };
}

/** Whether `piece` is the first tokens of one of `seqs`. */
function within(piece: readonly number[], seqs: readonly (readonly number[])[]): boolean {
  return seqs.some((q) => piece.length <= q.length && piece.every((t, i) => t === q[i]));
}

Deno.test("evoPress() samples only the pool and judges its start and result on the held-apart evaluation windows", async () => {
  const s = await storiesLevels();
  if (!s) return;
  const { lm, db, pool, heldApart } = s;
  const start = new Map(db.modules.map((m) => [m.name, 1]));
  const search = {
    target: 3,
    start,
    generations: 4,
    offspring: 4,
    selection: [{ tokens: 24, survivors: 2 }, { tokens: 72, survivors: 1 }],
    seed: 3,
  };
  // Given apart (`evaluation`), or the default: the first 2 of the pool's 8 windows (48 of its
  // 192 tokens) set apart, the selection sampling the other 6.
  for (
    const [options, evaluation, sampled] of [
      [{ calibration: pool, evaluation: heldApart }, heldApart, pool],
      [{ calibration: pool }, pool.slice(0, 2), pool.slice(2)],
    ] as const
  ) {
    for (const e of evaluation) assert(!within(e, sampled) && !sampled.some((q) => within(q, [e])));
    const states: EvoPressState[] = [];
    const whole = await evoPress(lm, db, {
      ...search,
      ...options,
      onGeneration: (p) => {
        states.push(p.state);
      },
    });
    // The start is scored on the evaluation windows alone.
    const first = recording(lm);
    await evoPress(first.model, db, { ...search, ...options, generations: 0 });
    assert(first.seen.length > 0 && first.seen.every((t) => within(t, evaluation)));
    // The generations score the pool's windows alone, and the final guard the evaluation's.
    const rec = recording(lm);
    let searched = 0;
    const resumed = await evoPress(rec.model, db, {
      ...search,
      ...options,
      resume: states[0]!,
      onGeneration: () => {
        searched = rec.seen.length;
      },
    });
    assert.deepEqual([...resumed.levels], [...whole.levels]);
    assert.deepEqual(resumed.state, whole.state);
    assert.equal(resumed.fitness, whole.fitness);
    assert.notDeepEqual(whole.state.levels, whole.state.start);
    const during = rec.seen.slice(0, searched);
    const guard = rec.seen.slice(searched);
    assert(during.length > 0 && during.every((t) => within(t, sampled) && !within(t, evaluation)));
    assert(guard.length > 0 && guard.every((t) => within(t, evaluation)));
  }
});
