import assert from "node:assert/strict";
import { compressModel } from "../../pipeline/compress_model.ts";
import { allocationRecipe, sparseGptLevels } from "../../pipeline/level_database.ts";
import { storiesLevels } from "./_stories_levels.ts";

Deno.test("buildLevelDatabase() records each level's cost as the pipeline counts it", async () => {
  const s = await storiesLevels();
  if (!s) return;
  const { lm, db, calibration } = s;
  assert.equal(db.modules.length, 5 * 7);
  assert.deepEqual(db.levels.map((l) => l.value), [2, 3, 4]);
  const direct = await compressModel(lm, calibration, {
    stages: db.levels[1]!.stages,
    overrides: [{ match: "output", stages: [] }],
  }, { backend: "cpu", solveBackend: "cpu" });
  for (const m of db.modules) {
    const c = direct.modules.get(m.name)!;
    assert.equal(m.variants[1]!.bitsPerWeight, c.bitsPerWeight);
    assert.deepEqual(m.variants[1]!.weight.data, c.weight.data);
    // More bits, less error.
    assert(m.variants[0]!.weightError > m.variants[1]!.weightError);
    assert(m.variants[1]!.weightError > m.variants[2]!.weightError);
  }
});

Deno.test("buildLevelDatabase() reads finished levels back from its folder instead of compressing again", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const first = await storiesLevels({ dir });
    if (!first) return;
    const resumed: boolean[] = [];
    const again = (await storiesLevels({
      dir,
      onProgress: (p) => {
        if (p.fraction === 1) resumed[p.level] = p.resumed;
      },
    }))!;
    assert.deepEqual(resumed, [true, true, true]);
    first.db.modules.forEach((m, i) => {
      const n = again.db.modules[i]!;
      assert.equal(n.name, m.name);
      m.variants.forEach((v, l) => {
        assert.deepEqual(n.variants[l]!.weight.data, v.weight.data);
        assert.equal(n.variants[l]!.bitsPerWeight, v.bitsPerWeight);
        assert.equal(n.variants[l]!.weightError, v.weightError);
      });
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("allocationRecipe() gives every module the stages and the cost of its level", async () => {
  const s = await storiesLevels();
  if (!s) return;
  const levels = new Map(s.db.modules.map((m, i) => [m.name, i % 3]));
  const recipe = allocationRecipe(s.db, levels);
  const r = await compressModel(s.lm, s.calibration, recipe, {
    backend: "cpu",
    solveBackend: "cpu",
  });
  s.db.modules.forEach((m, i) => {
    const c = r.modules.get(m.name)!;
    assert.equal(c.bitsPerWeight, m.variants[i % 3]!.bitsPerWeight);
    // The first group sees the dense inputs at every level: the same weights.
    // Later modules see inputs of a differently compressed model (true-sequential).
    if (m.block === 0 && ["wq", "wk", "wv"].includes(m.local)) {
      assert.deepEqual(c.weight.data, m.variants[i % 3]!.weight.data);
    }
  });
  assert(!r.modules.has("output")); // the head stays dense
  assert.throws(() => allocationRecipe(s.db, new Map()), /layers\.0\.wq's level.*undefined/);
});

Deno.test("sparseGptLevels() keeps level 0 dense and names the levels by percent", () => {
  const levels = sparseGptLevels([0, 50]);
  assert.deepEqual(levels.map((l) => [l.name, l.value, l.stages.length]), [
    ["sparsegpt-0", 0, 0],
    ["sparsegpt-50", 50, 1],
  ]);
});
