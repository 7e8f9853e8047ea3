import assert from "node:assert/strict";
import { KlFitness } from "../../pipeline/_kl_fitness.ts";
import { moduleSensitivities } from "../../pipeline/dp_allocation.ts";
import { evoPress, type EvoPressState } from "../../pipeline/evopress.ts";
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
  const { lm, db, heldApart } = s;
  const a = await evoPress(lm, db, { ...SEARCH, calibration: heldApart, seed: 5 });
  const b = await evoPress(lm, db, { ...SEARCH, calibration: heldApart, seed: 5 });
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
  const { lm, db, heldApart } = s;
  const start = new Map(db.modules.map((m) => [m.name, 1])); // uniform 3 bits
  const states: EvoPressState[] = [];
  const whole = await evoPress(lm, db, {
    ...SEARCH,
    calibration: heldApart,
    start,
    onGeneration: (p) => {
      states.push(p.state);
    },
  });
  assert.equal(states.length, 4);
  const resumed = await evoPress(lm, db, { ...SEARCH, calibration: heldApart, resume: states[1]! });
  assert.deepEqual([...resumed.levels], [...whole.levels]);
  assert.deepEqual(resumed.state.history, whole.state.history);
  assert.equal(resumed.fitness, whole.fitness);
});

Deno.test("evoPress() refuses a start that misses the target and bad options, naming them", async () => {
  const s = await storiesLevels();
  if (!s) return;
  const { lm, db, heldApart } = s;
  const start = new Map(db.modules.map((m) => [m.name, 2])); // 4 bits everywhere
  await assert.rejects(
    () => evoPress(lm, db, { ...SEARCH, calibration: heldApart, start }),
    /'start' does not meet 'target' 3 exactly/,
  );
  await assert.rejects(
    () => evoPress(lm, db, { ...SEARCH, calibration: heldApart, offspring: 0 }),
    /'offspring' must be a positive integer: current value is 0/,
  );
  await assert.rejects(
    () =>
      evoPress(lm, db, {
        ...SEARCH,
        calibration: heldApart,
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
    () => evoPress(lm, db, { ...SEARCH, calibration: heldApart, resume: old }),
    /'resume' must give a level to every module/,
  );
});

Deno.test("evoPress() re-scores the parent on each generation's resampled windows of the pool", async () => {
  const s = await storiesLevels();
  if (!s) return;
  const { lm, db, pool } = s;
  // From the uniform 3-bit allocation; every generation's last step scores the survivor and the
  // parent on 2 of the pool's 8 windows of 24 tokens, drawn afresh.
  const start = new Map(db.modules.map((m) => [m.name, 1]));
  const progress: { levels: readonly number[]; fitness: number; improved: boolean }[] = [];
  const r = await evoPress(lm, db, {
    target: 3,
    calibration: pool,
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
  // The result is scored on the evaluation tokens (the whole pool) and never worse than the start.
  const all = fit.evaluate(db.modules.map((m, i) => m.variants[r.state.start[i]!]!.weight), 8 * 24);
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
