import assert from "node:assert/strict";
import { syntheticModel } from "./_synthetic_model.ts";
import { llamaCompressible, withCompressedWeights } from "../../models/compressible.ts";
import { linearInputStats } from "../../models/linear_input_stats.ts";
import { meanActivationBits, withActivationQuant } from "../../models/with_activation_quant.ts";
import { perplexity } from "../../models/perplexity.ts";
import { perplexityPool } from "../../models/perplexity_pool.ts";
import { compressModel } from "../../pipeline/compress_model.ts";
import { type Recipe, validateRecipe } from "../../pipeline/recipe.ts";

const calib = [[1, 5, 9, 2, 7, 3, 8, 4], [6, 2, 11, 30, 4, 17, 9, 1]];
const stream = Array.from({ length: 40 }, (_, i) => (i * 7 + 3) % 40);
const keepHead = [{ match: "output", stages: [] }] as const;

Deno.test("validateRecipe() takes one 'act' stage anywhere and names bad ones", () => {
  validateRecipe({ stages: [{ kind: "act", format: "int8" }, { kind: "gptq", bits: 8 }] });
  validateRecipe({ stages: [{ kind: "gptq", bits: 8 }, { kind: "act", format: "fp8" }] });
  assert.throws(
    () =>
      validateRecipe({
        stages: [{ kind: "act", format: "int8" }, { kind: "act", format: "int4" }],
      }),
    /at most one 'act' stage/,
  );
  assert.throws(
    () => validateRecipe({ stages: [{ kind: "act", format: "int2" as "int8" }] }),
    /'format' must be one of int8, int4, fp8, mxfp4, nvfp4: current value is int2/,
  );
  assert.throws(
    () =>
      validateRecipe({
        stages: [{ kind: "act", format: "int4", outliers: { count: 0 } }],
      }),
    /'outliers' needs a positive integer 'count'/,
  );
});

Deno.test("W8A8 static: a recipe's act stages calibrate per-tensor scales and perplexity runs on them", async () => {
  const model = syntheticModel({}, 8);
  const recipe: Recipe = {
    stages: [{ kind: "gptq", bits: 8, symmetric: true }, {
      kind: "act",
      format: "int8",
      granularity: "tensor",
    }],
    overrides: [...keepHead, {
      match: "*.w2",
      stages: [{ kind: "gptq", bits: 8, symmetric: true }],
    }],
  };
  const res = await compressModel(llamaCompressible(model), calib, recipe, {
    backend: "cpu",
    solveBackend: "cpu",
  });
  const compressed = withCompressedWeights(model, res.modules);
  assert(res.bitsPerWeight < 9, "the act stage does not keep the weights in float");
  const q = withActivationQuant(compressed, recipe, { calibration: calib });
  const stats = linearInputStats(compressed, calib);
  assert.equal(q.layers[1]!.actQuant!.wq!.absMax, stats.get("layers.1.wq")!.absMax);
  assert.equal(q.layers[0]!.actQuant!.wo!.granularity, "tensor");
  assert.equal(q.layers[0]!.actQuant!.w2, undefined, "the override without 'act' keeps w2's input");
  // dim 32 feeds wq, wk, wv, wo (qDim 32), w1, w3 at 8 bits; w2 (48 inputs) stays at 32
  assert.equal(meanActivationBits(q), (6 * 32 * 8 + 48 * 32) / (6 * 32 + 48));
  assert.equal(meanActivationBits(compressed), 32);
  const a = perplexity(q, stream, { seqLen: 16 });
  const b = perplexity(compressed, stream, { seqLen: 16 });
  assert(Number.isFinite(a.perplexity) && a.perplexity !== b.perplexity);
  const pool = perplexityPool(1);
  try {
    const c = await pool.evaluate(q, stream, { seqLen: 16 });
    assert(Math.abs(c.perplexity - a.perplexity) < 1e-9 * a.perplexity);
  } finally {
    pool.close();
  }
  assert.throws(() => withActivationQuant(compressed, recipe), /needs 'calibration'/);
  assert.throws(
    () => withActivationQuant(compressed, { stages: [{ kind: "act", format: "int8" }] }),
    /classifier \('output'\)/,
  );
});

Deno.test("QUIK: the activations keep the columns the GPTQ stage kept", async () => {
  const model = syntheticModel({}, 9);
  const recipe: Recipe = {
    stages: [
      { kind: "gptq", bits: 4, outliers: { count: 4 } },
      { kind: "act", format: "int4", outliers: { count: 4 } },
    ],
    overrides: keepHead,
  };
  const res = await compressModel(llamaCompressible(model), calib, recipe, {
    backend: "cpu",
    solveBackend: "cpu",
  });
  const q = withActivationQuant(withCompressedWeights(model, res.modules), recipe, {
    modules: res.modules,
  });
  const kept = res.modules.get("layers.1.w2")!.outlierColumns!;
  assert.equal(kept.length, 4);
  assert.deepEqual(q.layers[1]!.actQuant!.w2!.outliers!.columns, kept);
  assert(Number.isFinite(perplexity(q, stream, { seqLen: 16 }).perplexity));
});
