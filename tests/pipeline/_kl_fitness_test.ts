import assert from "node:assert/strict";
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
