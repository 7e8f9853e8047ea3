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
