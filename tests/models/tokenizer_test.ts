import assert from "node:assert/strict";
import { dataFile } from "../_helpers.ts";
import { loadTokenizer } from "../../models/tokenizer.ts";
import { loadLlama2cTokenizer } from "../../models/llama2c_tokenizer.ts";

Deno.test("loadTokenizer reads a llama2.c .bin as the llama2.c loader does, with no BOS unless asked", async () => {
  const tokPath = dataFile("stories260K/tok512.bin");
  if (!tokPath) return;
  const tok = await loadTokenizer(tokPath, { vocabSize: 512 });
  const l2c = await loadLlama2cTokenizer(tokPath, { vocabSize: 512 });
  assert.deepEqual([tok.vocabSize, tok.bos, tok.eos], [512, 1, 2]);
  const text = "Once upon a time, Lily saw a dog.";
  assert.deepEqual(tok.encode(text), l2c.encode(text));
  assert.deepEqual(tok.encode(text, { bos: true, eos: true }), [1, ...l2c.encode(text), 2]);
  await assert.rejects(
    () => loadTokenizer(tokPath, { vocabSize: 1000 }),
    /tok512\.bin: holds 512 pieces, but the model's vocabulary has 1000/,
  );
});

Deno.test("the llama2.c decode leaves out unk, BOS and EOS unless told to keep them", async () => {
  const tokPath = dataFile("stories260K/tok512.bin");
  if (!tokPath) return;
  const tok = await loadLlama2cTokenizer(tokPath, { vocabSize: 512 });
  const ids = tok.encode("The cat sat.", { bos: true, eos: true });
  assert.equal(tok.decode(ids), "The cat sat.");
  assert.equal(tok.decode(ids.slice(1)), " The cat sat.");
  const kept = tok.decode(ids, { skipSpecialTokens: false });
  assert.equal(kept, tok.pieces[1] + "The cat sat." + tok.pieces[2]);
  assert.throws(() => tok.decode([512]), /Cannot decode token 512: the vocabulary has 512/);
});
