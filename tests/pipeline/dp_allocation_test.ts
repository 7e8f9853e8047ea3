import assert from "node:assert/strict";
import { prng } from "../../core/prng.ts";
import {
  allocateExactly,
  dpAllocation,
  moduleSensitivities,
} from "../../pipeline/dp_allocation.ts";
import { storiesLevels } from "./_stories_levels.ts";

/** The least total score over every choice meeting the budget, by enumeration. */
function bruteForce(
  scores: number[][],
  costs: number[][],
  budget: number,
): number | null {
  let best: number | null = null;
  const walk = (i: number, cost: number, score: number) => {
    if (i === scores.length) {
      if (cost === budget && (best === null || score < best)) best = score;
      return;
    }
    for (let j = 0; j < scores[i]!.length; j++) {
      walk(i + 1, cost + costs[i]![j]!, score + scores[i]![j]!);
    }
  };
  walk(0, 0, 0);
  return best;
}

Deno.test("allocateExactly() finds the brute-force optimum for every budget of small instances", () => {
  const rng = prng(11);
  let instances = 0;
  for (let trial = 0; trial < 40; trial++) {
    const items = 2 + rng.int(5), options = 2 + rng.int(3);
    const units = Array.from({ length: items }, () => 1 + rng.int(4));
    const values = Array.from({ length: options }, () => rng.int(9)).sort((a, b) => a - b);
    const costs = units.map((u) => values.map((v) => u * v));
    const scores = units.map(() => values.map(() => rng.uniform()));
    const maxCost = costs.reduce((s, row) => s + Math.max(...row), 0);
    for (let budget = 0; budget <= maxCost; budget++) {
      const expected = bruteForce(scores, costs, budget);
      const got = allocateExactly(scores, costs, budget);
      if (expected === null) {
        assert.equal(got, null);
        continue;
      }
      instances++;
      assert(got !== null);
      const cost = got.choice.reduce((s, j, i) => s + costs[i]![j]!, 0);
      const score = got.choice.reduce((s, j, i) => s + scores[i]![j]!, 0);
      assert.equal(cost, budget);
      assert(Math.abs(score - expected) < 1e-12, `${score} vs ${expected}`);
      assert(Math.abs(got.score - expected) < 1e-12);
    }
  }
  assert(instances > 200);
});

Deno.test("allocateExactly() refuses negative or fractional costs, naming the value", () => {
  assert.throws(() => allocateExactly([[1, 2]], [[0, 1.5]], 1), /non-negative integer.*1\.5/);
  assert.throws(() => allocateExactly([[1, 2]], [[0, 1]], -1), /'budget'.*-1/);
  assert.throws(() => allocateExactly([[1, 2]], [[0]], 1), /same shape/);
});

Deno.test("dpAllocation() meets the target exactly and spends bits where sensitivity × error is largest", async () => {
  const s = await storiesLevels();
  if (!s) return;
  const { lm, db, heldApart } = s;
  const sensitivities = moduleSensitivities(lm, db, heldApart, { tokens: 48, seed: 1 });
  assert.equal(sensitivities.size, db.modules.length);
  for (const v of sensitivities.values()) assert(Number.isFinite(v) && v > 0);
  const dp = dpAllocation(lm, db, { target: 3, calibration: heldApart, sensitivities });
  assert.equal(dp.value, 3);
  assert(new Set(dp.levels.values()).size > 1); // non-uniform
  assert(dp.fitness > 0 && Number.isFinite(dp.fitness));
  // Its predicted damage is no larger than the uniform 3-bit allocation's.
  const uniform = db.modules.reduce(
    (a, m) => a + sensitivities.get(m.name)! * m.variants[1]!.weightError,
    0,
  );
  assert(dp.predicted <= uniform + 1e-12);
  assert.throws(
    () => dpAllocation(lm, db, { target: 3.0001, calibration: heldApart, sensitivities }),
    /'target' must be a multiple.*3\.0001/,
  );
});
