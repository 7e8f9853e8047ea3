import assert from "node:assert/strict";
import { prng } from "../../core/prng.ts";
import { KlFitness } from "../../pipeline/_kl_fitness.ts";
import { storiesLevels } from "./_stories_levels.ts";

Deno.test("KlFitness scores the dense model 0 and a candidate the same from its anchor's block outputs as from scratch", async () => {
  const s = await storiesLevels();
  if (!s) return;
  const { lm, db, heldApart } = s;
  const fresh = new KlFitness(lm, db.modules, heldApart, "test");
  assert.equal(fresh.evaluate(fresh.dense, 96), 0);
  const parent = db.modules.map((m) => m.variants[1]!.weight);
  const child = parent.slice();
  const late = db.modules.findIndex((m) => m.block === 3 && m.local === "w2");
  child[late] = db.modules[late]!.variants[0]!.weight;
  const anchored = new KlFitness(lm, db.modules, heldApart, "test");
  anchored.setAnchor(parent);
  const p = anchored.evaluate(parent, 60);
  const c = anchored.evaluate(child, 60);
  assert.equal(p, fresh.evaluate(parent, 60));
  assert.equal(c, fresh.evaluate(child, 60));
  assert(c > 0 && p > 0 && c !== p);
});

Deno.test("KlFitness.sample() draws whole sequences without repeats, the last one cut, the same for a seed", async () => {
  const s = await storiesLevels();
  if (!s) return;
  const { lm, db, pool } = s;
  const fit = new KlFitness(lm, db.modules, pool, "test");
  const a = fit.sample(60, prng(3));
  assert.deepEqual(a, fit.sample(60, prng(3)));
  assert.deepEqual(a.map((p) => p.length), [24, 24, 12]);
  assert.equal(new Set(a.map((p) => p.sequence)).size, 3);
  assert.notDeepEqual(a, fit.sample(60, prng(4)));
  assert.deepEqual(fit.first(30), [{ sequence: 0, length: 24 }, { sequence: 1, length: 6 }]);
  const w = db.modules.map((m) => m.variants[1]!.weight);
  assert.equal(fit.evaluate(w, fit.first(30)), fit.evaluate(w, 30));
});

Deno.test("KlFitness reuses a kept candidate's block outputs and the old anchor's earlier ones when the anchor changes, scoring as a fresh evaluator", async () => {
  const s = await storiesLevels();
  if (!s) return;
  const { lm, db, pool } = s;
  const B = lm.blocks.length;
  const at = (block: number, local: string) =>
    db.modules.findIndex((m) => m.block === block && m.local === local);
  const parent = db.modules.map((m) => m.variants[1]!.weight);
  const swap = (w: readonly (typeof parent)[number][], i: number, level: number) =>
    w.map((t, j) => j === i ? db.modules[i]!.variants[level]!.weight : t);
  const child = swap(parent, at(2, "w1"), 0);
  const other = swap(child, at(3, "wq"), 2);
  const fresh = new KlFitness(lm, db.modules, pool, "test");
  const fit = new KlFitness(lm, db.modules, pool, "test");
  const pieces = fit.sample(60, prng(1));
  const tokens = pieces.reduce((a, p) => a + p.length, 0);
  fit.setAnchor(parent);
  fit.evaluate(child, pieces, { keepOutputs: true });
  // The child becomes the anchor: every block output on these pieces is known already.
  fit.setAnchor(child);
  let before = fit.blockTokens;
  assert.equal(fit.evaluate(child, pieces), fresh.evaluate(child, pieces));
  assert.equal(fit.blockTokens - before, 0);
  // A candidate that differs from the new anchor from block 3 on runs blocks 3 to B - 1 only.
  before = fit.blockTokens;
  assert.equal(fit.evaluate(other, pieces), fresh.evaluate(other, pieces));
  assert.equal(fit.blockTokens - before, (B - 3) * tokens);
  // An anchor that was not kept: the blocks before 3 stay, the later ones are computed afresh.
  fit.setAnchor(other);
  before = fit.blockTokens;
  assert.equal(fit.evaluate(other, pieces), fresh.evaluate(other, pieces));
  assert.equal(fit.blockTokens - before, (B - 3) * tokens);
  assert.equal(fit.evaluate(parent, pieces), fresh.evaluate(parent, pieces));
});
