import assert from "node:assert/strict";
import { dataFile } from "../_helpers.ts";
import { loadModel } from "../../models/causal_lm.ts";
import { loadLlama2c } from "../../models/llama2c.ts";
import { llamaForward } from "../../models/forward.ts";
import { perplexity } from "../../models/perplexity.ts";
import { loadTokenizer } from "../../models/tokenizer.ts";

Deno.test("loadModel reads a llama2.c .bin file as the llama2.c loader does", async () => {
  const path = dataFile("stories260K/stories260K.bin");
  if (!path) return;
  const lm = await loadModel(path);
  const model = await loadLlama2c(path);
  assert.deepEqual(lm.config, model.config);
  const ids = [1, 403, 407, 261, 378];
  assert.deepEqual(await lm.logits(ids, { backend: "cpu" }), llamaForward(model, ids));
  const stream = Array.from({ length: 300 }, (_, i) => (i * 37) % 512);
  const ppl = await lm.perplexity(stream, { backend: "cpu", seqLen: 64 });
  assert.equal(ppl.tokens, perplexity(model, stream, { seqLen: 64 }).tokens);
  assert(Math.abs(ppl.nll - perplexity(model, stream, { seqLen: 64 }).nll) < 1e-9);
  // The pipeline's view: one block per layer, seven linears each.
  assert.equal(lm.blocks.length, model.config.nLayers);
  assert.deepEqual(Object.keys(lm.blocks[0]!.linears), ["wq", "wk", "wv", "wo", "w1", "w3", "w2"]);
});

Deno.test("a fixture folder loads with its own tokenizer, smaller than the embedding", async () => {
  const dir = new URL("../fixtures/hf/models/qwen2", import.meta.url).pathname;
  const [lm, tok] = await Promise.all([loadModel(dir), loadTokenizer(dir)]);
  assert(tok.vocabSize < lm.config.vocabSize);
  const ids = tok.encode("Once upon a time, there was a little girl named Lily.");
  const logits = await lm.logits(ids, { backend: "cpu" });
  assert.equal(logits.length, ids.length * lm.config.vocabSize);
  assert.equal(tok.decode(ids), "Once upon a time, there was a little girl named Lily.");
});
