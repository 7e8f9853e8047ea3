/**
 * The pipeline on a real model (stories260K): the orderings the literature
 * reports (EoRA's included), measured by perplexity on held-out TinyStories text with
 * calibration on the disjoint first part. Small evaluation (2,048 tokens; 16 calibration windows of 256) to
 * stay fast.
 */
import assert from "node:assert/strict";
import { perplexityPool } from "../../models/perplexity_pool.ts";
import { perplexity } from "../../models/perplexity.ts";
import { storiesEval } from "../_stories_eval.ts";
import { llamaCompressible, withCompressedWeights } from "../../models/compressible.ts";
import type { LlamaModel } from "../../models/model.ts";
import { compressModel } from "../../pipeline/compress_model.ts";
import type { Stage } from "../../pipeline/recipe.ts";

const EVAL_TOKENS = 2048;

const setup = () => storiesEval(EVAL_TOKENS);

Deno.test({
  name:
    "on stories260K, GPTQ beats RTN at 4 and 3 bits, SparseGPT beats magnitude at 50% and 2:4, " +
    "and 8-bit RTN stays within 1% of float32",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const s = await setup();
    if (!s) return;
    const { model, evalIds, calib } = s;
    const pool = perplexityPool(2);
    try {
      const ppl = (m: LlamaModel) =>
        pool.evaluate(m, evalIds, { seqLen: 256 }).then((r) => r.perplexity);
      const run = async (stage: Stage) => {
        const res = await compressModel(llamaCompressible(model), calib, {
          stages: [stage],
          overrides: [{ match: "output", stages: [] }],
        });
        return ppl(withCompressedWeights(model, res.modules));
      };
      const half = { kind: "unstructured", sparsity: 0.5 } as const;
      const nm = { kind: "nm", n: 2, m: 4 } as const;
      const results = await Promise.all([
        ppl(model),
        run({ kind: "rtn", bits: 8 }),
        run({ kind: "rtn", bits: 4 }),
        run({ kind: "gptq", bits: 4 }),
        run({ kind: "rtn", bits: 3 }),
        run({ kind: "gptq", bits: 3 }),
        run({ kind: "magnitude", structure: half }),
        run({ kind: "sparsegpt", structure: half }),
        run({ kind: "magnitude", structure: nm }),
        run({ kind: "sparsegpt", structure: nm }),
      ]);
      const [fp32, rtn8, rtn4, gptq4, rtn3, gptq3, mag50, sgpt50, mag24, sgpt24] =
        results as number[];
      const msg = JSON.stringify({
        fp32,
        rtn8,
        rtn4,
        gptq4,
        rtn3,
        gptq3,
        mag50,
        sgpt50,
        mag24,
        sgpt24,
      });
      assert.ok(Math.abs(rtn8! / fp32! - 1) < 0.01, msg);
      assert.ok(gptq4! < rtn4!, msg);
      assert.ok(gptq3! < rtn3!, msg);
      assert.ok(sgpt50! < mag50!, msg);
      assert.ok(sgpt24! < mag24!, msg);
      // Compression costs something, and the pool agrees with the single-threaded evaluation.
      assert.ok(rtn3! > fp32! && gptq3! > fp32!, msg);
      const single = perplexity(model, evalIds, { seqLen: 256 }).perplexity;
      assert.ok(Math.abs(single - fp32!) < 1e-9 * fp32!, `${single} vs ${fp32}`);
    } finally {
      pool.close();
    }
  },
});

Deno.test({
  name: "on stories260K, EoRA after GPTQ 3-bit lowers perplexity more than the plain SVD of the " +
    "error at the same rank, and a higher rank lowers it further",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const s = await setup();
    if (!s) return;
    const { model, evalIds, calib } = s;
    const pool = perplexityPool(2);
    try {
      const run = async (...stages: Stage[]) => {
        const res = await compressModel(llamaCompressible(model), calib, {
          stages,
          overrides: [{ match: "output", stages: [] }],
        });
        const m = withCompressedWeights(model, res.modules);
        return (await pool.evaluate(m, evalIds, { seqLen: 256 })).perplexity;
      };
      const gptq = { kind: "gptq", bits: 3 } as const;
      const q4 = { bits: 4 };
      const [plain, eora4, svd4, eora16] = await Promise.all([
        run(gptq),
        run(gptq, { kind: "eora", rank: 4, quantize: q4 }),
        run(gptq, { kind: "svd", rank: 4, quantize: q4 }),
        run(gptq, { kind: "eora", rank: 16, quantize: q4 }),
      ]);
      const msg = JSON.stringify({ plain, eora4, svd4, eora16 });
      assert.ok(eora4! < svd4! && svd4! < plain!, msg);
      assert.ok(eora16! < eora4!, msg);
    } finally {
      pool.close();
    }
  },
});
