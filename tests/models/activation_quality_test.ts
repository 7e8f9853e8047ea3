/**
 * Activation quantization on a real model (stories260K, float32 weights so
 * that only the activations differ): the orderings the papers report, by
 * perplexity on 2,048 held-out TinyStories tokens with statistics from 16
 * calibration windows of its disjoint first part.
 */
import assert from "node:assert/strict";
import { perplexity } from "../../models/perplexity.ts";
import { storiesEval } from "../_stories_eval.ts";
import type { LlamaModel } from "../../models/model.ts";
import { linearInputStats } from "../../models/linear_input_stats.ts";
import { quarot } from "../../models/quarot.ts";
import { smoothQuant } from "../../models/smooth_quant.ts";
import { withActivationQuant } from "../../models/with_activation_quant.ts";
import type { Stage } from "../../pipeline/recipe.ts";

const setup = () => storiesEval(2048);

Deno.test("on stories260K, rotation lowers int4 activations' perplexity, smoothing static int8's, and FP8 stays within 1%", async () => {
  const s = await setup();
  if (!s) return;
  const { model, evalIds, calib } = s;
  const ppl = (m: LlamaModel) => perplexity(m, evalIds, { seqLen: 256 }).perplexity;
  const acts = (m: LlamaModel, act: Stage) =>
    withActivationQuant(m, { stages: [act], overrides: [{ match: "output", stages: [] }] }, {
      calibration: calib,
    });
  const int4 = { kind: "act", format: "int4" } as const;
  const static8 = { kind: "act", format: "int8", granularity: "tensor" } as const;
  const fp32 = ppl(model);
  const a4 = ppl(acts(model, int4));
  const rotated = ppl(acts(quarot(model, { seed: 0 }), int4));
  const s8 = ppl(acts(model, static8));
  const smooth = smoothQuant(model, linearInputStats(model, calib), { alpha: 0.5 });
  const smoothed = ppl(acts(smooth, static8));
  const fp8 = ppl(acts(model, { kind: "act", format: "fp8" }));
  const report = JSON.stringify({ fp32, a4, rotated, s8, smoothed, fp8 });
  assert(rotated < a4, report);
  assert(smoothed < s8, report);
  assert(fp8 < 1.01 * fp32, report);
});
