import assert from "node:assert/strict";
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
  for (let g = 1; g < 4; g++) assert(a.state.history[g]! <= a.state.history[g - 1]!);
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
});
