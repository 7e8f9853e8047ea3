import assert from "node:assert/strict";
import { syntheticModel } from "./_synthetic_model.ts";
import { llamaForward } from "../../models/forward.ts";
import { linearInputStats } from "../../models/linear_input_stats.ts";
import { smoothQuant } from "../../models/smooth_quant.ts";
import type { LlamaModel } from "../../models/model.ts";
import { relError } from "../_helpers.ts";

const tokens = [3, 9, 1, 7, 22, 5, 13, 2];
const calib = [[1, 5, 9, 2, 7, 3, 8, 4], [6, 2, 11, 30, 4, 17, 9, 1]];

/** A model whose attention-norm input has a few large channels, as real LLMs do. */
function withOutliers(model: LlamaModel): LlamaModel {
  const e = model.tokenEmbedding.data as Float32Array;
  const dim = model.config.dim;
  return {
    ...model,
    tokenEmbedding: { ...model.tokenEmbedding, data: e.map((v, i) => (i % dim < 2 ? 20 * v : v)) },
  };
}

Deno.test("smoothQuant() leaves the float model's logits unchanged (GQA, biases, head norms)", () => {
  for (const shape of [{}, { qkvBias: true, qkNorm: true, nKvHeads: 1 }]) {
    const model = withOutliers(syntheticModel(shape, 12, 0.3));
    const stats = linearInputStats(model, calib);
    for (const outputs of [true, false]) {
      const smooth = smoothQuant(model, stats, { alpha: 0.5, outputs });
      const err = relError(llamaForward(smooth, tokens), llamaForward(model, tokens));
      assert(err < 1e-5, `relative error ${err} (${JSON.stringify(shape)}, outputs ${outputs})`);
      assert.notDeepEqual(smooth.layers[0]!.attnNorm, model.layers[0]!.attnNorm);
      assert.equal(smooth.layers[0]!.wo === model.layers[0]!.wo, !outputs);
    }
  }
});

Deno.test("smoothQuant() with α = 0.5 evens the activation and weight ranges of each channel", () => {
  const model = withOutliers(syntheticModel({}, 13, 0.3));
  const smooth = smoothQuant(model, linearInputStats(model, calib), { outputs: false });
  const after = linearInputStats(smooth, calib).get("layers.0.wq")!.channelAbsMax;
  const { dim } = model.config;
  for (let j = 0; j < dim; j++) {
    let w = 0;
    for (const t of [smooth.layers[0]!.wq, smooth.layers[0]!.wk, smooth.layers[0]!.wv]) {
      for (let r = 0; r < t.shape[0]!; r++) w = Math.max(w, Math.abs(t.data[r * dim + j]!));
    }
    // max|X_j/s_j| = max|W_j·s_j| = sqrt(max|X_j|·max|W_j|)
    assert(Math.abs(after[j]! - w) <= 1e-4 * w, `channel ${j}: ${after[j]} vs ${w}`);
  }
});

Deno.test("smoothQuant() names bad options", () => {
  const model = syntheticModel({}, 14);
  const stats = linearInputStats(model, calib);
  assert.throws(
    () => smoothQuant(model, stats, { alpha: 1.5 }),
    /'alpha' must be a number in \[0, 1\]/,
  );
  assert.throws(() => smoothQuant(model, new Map()), /lack layers\.0\.wq/);
});
