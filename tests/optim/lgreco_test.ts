import assert from "node:assert/strict";
import { type CompressionLevel, lgrecoLevels } from "../../optim/lgreco.ts";
import { prng } from "../../core/prng.ts";
import { assertClose } from "../_helpers.ts";

/** Brute force: every combination of levels. */
function brute(tables: CompressionLevel[][], budget: number): number {
  let best = Infinity;
  const walk = (l: number, err: number, cost: number) => {
    if (cost > budget) return;
    if (l === tables.length) {
      best = Math.min(best, err);
      return;
    }
    for (const { error, cost: c } of tables[l]!) walk(l + 1, err + error, cost + c);
  };
  walk(0, 0, 0);
  return best;
}

Deno.test("lgrecoLevels finds the least total error under the budget, as brute force does", () => {
  const rng = prng(1);
  for (let trial = 0; trial < 300; trial++) {
    const layers = 1 + rng.int(5);
    const tables = Array.from(
      { length: layers },
      () =>
        Array.from({ length: 1 + rng.int(4) }, () => ({
          error: Math.round(rng.uniform() * 1000) / 10,
          cost: rng.int(20),
        })),
    );
    const budget = rng.int(60);
    const expected = brute(tables, budget);
    if (expected === Infinity) {
      assert.throws(() => lgrecoLevels(tables, { budget }), RangeError);
      continue;
    }
    const r = lgrecoLevels(tables, { budget });
    assertClose(r.error, expected, { atol: 1e-9 });
    assert.ok(r.cost <= budget);
    // The reported totals are those of the reported levels.
    assertClose(r.error, r.levels.reduce((s, j, l) => s + tables[l]![j]!.error, 0));
    assert.equal(r.cost, r.levels.reduce((s, j, l) => s + tables[l]![j]!.cost, 0));
  }
});

Deno.test("lgrecoLevels with a coarse cost resolution never exceeds the budget", () => {
  const rng = prng(2);
  for (let trial = 0; trial < 100; trial++) {
    const tables = Array.from(
      { length: 4 },
      () => Array.from({ length: 3 }, () => ({ error: rng.uniform(), cost: rng.uniform() * 10 })),
    );
    const budget = 5 + rng.uniform() * 20;
    try {
      const r = lgrecoLevels(tables, { budget, costResolution: 0.5 });
      assert.ok(r.cost <= budget + 1e-9);
      assert.ok(r.error >= brute(tables, budget) - 1e-12); // no better than the exact optimum
    } catch (e) {
      assert.ok(e instanceof RangeError);
    }
  }
  assert.throws(
    () => lgrecoLevels([[{ error: 0, cost: 1 }]], { budget: -1 }),
    (e: Error) => e instanceof RangeError && e.message.includes("'budget'"),
  );
});
