/**
 * Heavy (about 4 CPU-minutes per text): llama5M's perplexity on the first
 * 100,000 held-out tokens of each text, against the values SOURCES.md reports
 * from the training run (float32 PyTorch). It checks the whole evaluation
 * path at once: held-out splits, tokenizer, forward pass and windows.
 * Runs only with LLMC_HEAVY=1.
 */
import assert from "node:assert/strict";
import { dataFile } from "../_helpers.ts";
import { loadLlama2c } from "../../models/llama2c.ts";
import { loadLlama2cTokenizer } from "../../models/llama2c_tokenizer.ts";
import { perplexityPool } from "../../models/perplexity_pool.ts";
import { encodeDocs, loadCorpus } from "../../examples/datasets.ts";

const REFERENCE = { tinystories: 5.83, c4: 10.61, wikitext2: 16.87 } as const;

Deno.test({
  name: "llama5M reproduces its reference perplexities on 100k held-out tokens of each text",
  ignore: Deno.env.get("LLMC_HEAVY") !== "1",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const path = dataFile("llama5M/llama5M.bin");
    const tokPath = dataFile("stories260K/tok512.bin");
    if (!path || !tokPath) return;
    const model = await loadLlama2c(path);
    const tok = await loadLlama2cTokenizer(tokPath, { vocabSize: 512 });
    const pool = perplexityPool();
    try {
      for (const [name, expected] of Object.entries(REFERENCE)) {
        const corpus = await loadCorpus(name as keyof typeof REFERENCE, "eval");
        if (!corpus) return;
        const ids = encodeDocs(tok, corpus.docs, 100_000);
        const r = await pool.evaluate(model, ids, { seqLen: 256 });
        assert.ok(
          Math.abs(r.perplexity - expected) < 0.006,
          `${name}: ${r.perplexity} vs ${expected}`,
        );
      }
    } finally {
      pool.close();
    }
  },
});
