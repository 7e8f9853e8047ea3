import assert from "node:assert/strict";
import { prng } from "../../core/prng.ts";
import { tensor } from "../../core/tensor.ts";
import {
  allocationCost,
  allocationOf,
  exactBudget,
  levelSwitch,
} from "../../pipeline/_allocation.ts";
import type { LevelDatabase } from "../../pipeline/level_database.ts";
import { gptqLevels } from "../../pipeline/level_database.ts";

/** A database of llama-shaped modules (sizes only matter here). */
function llamaShapedDatabase(layers: number, values: readonly number[]): LevelDatabase {
  const sizes = { wq: 2, wk: 1, wv: 1, wo: 2, w1: 6, w3: 6, w2: 6 };
  const levels = gptqLevels(values);
  const modules = [];
  for (let b = 0; b < layers; b++) {
    for (const [local, u] of Object.entries(sizes)) {
      const weight = tensor("f32", [u, 4], new Float32Array(u * 4));
      modules.push({
        name: `layers.${b}.${local}`,
        block: b,
        local,
        weights: u * 4,
        variants: levels.map((l) => ({
          weight,
          bitsPerWeight: l.value + (16 + l.value) / 128,
          density: 1,
          layerError: 0,
          weightError: 0,
        })),
      });
    }
  }
  return { levels, modules };
}

Deno.test("levelSwitch() keeps the budget exact for every candidate it makes", () => {
  const db = llamaShapedDatabase(6, [2, 3, 4, 5, 6, 8]);
  const b = exactBudget(db, 3, "test");
  const rng = prng(7);
  let levels: Int32Array = new Int32Array(db.modules.length).fill(1); // every module at 3 bits
  assert.equal(allocationCost(b, levels), b.budget);
  let moves = 0;
  for (let i = 0; i < 5000; i++) {
    const next = levelSwitch(b, levels, rng);
    if (next === null) continue;
    assert.equal(allocationCost(b, next), b.budget);
    const changed = next.reduce((n, l, m) => n + (l !== levels[m] ? 1 : 0), 0);
    assert.equal(changed, 2);
    levels = next;
    moves++;
  }
  assert(moves > 4000);
  // The walk leaves the uniform start: several levels are in use.
  assert(new Set(levels).size >= 3);
  const a = allocationOf(db, levels, 0);
  assert.equal(a.value, 3);
  assert.equal(a.bitsPerWeight, 3 + 19 / 128);
});

Deno.test("levelSwitch() leaves its argument unchanged and follows its generator", () => {
  const db = llamaShapedDatabase(2, [2, 3, 4]);
  const b = exactBudget(db, 3, "test");
  const levels = new Int32Array(db.modules.length).fill(1);
  const a = levelSwitch(b, levels, prng(3))!;
  const c = levelSwitch(b, levels, prng(3))!;
  assert.deepEqual(levels, new Int32Array(db.modules.length).fill(1));
  assert.deepEqual(a, c);
});

Deno.test("exactBudget() refuses a target that cannot be met exactly, naming it", () => {
  const db = llamaShapedDatabase(1, [2, 3, 4]); // 24 units
  assert.equal(exactBudget(db, 2.5, "search").budget, 60);
  assert.throws(
    () => exactBudget(db, 2.51, "search"),
    /'target' must be a multiple of 1\/24.*2\.51/,
  );
  assert.throws(() => exactBudget(db, 5, "search"), /'target' must be a number in \[2, 4\].*5/);
  assert.throws(() => exactBudget(db, NaN, "search"), /'target'.*NaN/);
});
