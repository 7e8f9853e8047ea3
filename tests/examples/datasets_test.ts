import assert from "node:assert/strict";
import { blankLineBlocks, calibrationWindows, encodeDocs } from "../../examples/datasets.ts";
import type { Tokenizer } from "../../models/tokenizer.ts";
import { loadTokenizer } from "../../models/tokenizer.ts";

const FIXTURES = new URL("../fixtures/hf/models/", import.meta.url).pathname;

Deno.test("encodeDocs() starts each document with the BOS of a tokenizer that has one", async () => {
  const tok = await loadTokenizer(`${FIXTURES}llama`);
  const docs = blankLineBlocks("Once upon a time.\n\nThe end.\n");
  const ids = encodeDocs(tok, docs);
  const a = tok.encode(docs[0]!, { bos: false }), b = tok.encode(docs[1]!, { bos: false });
  assert.deepEqual(ids, [tok.bos!, ...a, tok.bos!, ...b]);
  assert.deepEqual(encodeDocs(tok, docs, 3), ids.slice(0, 3));
});

Deno.test("encodeDocs() ends each document with the EOS of a tokenizer without BOS, and joins them without either", async () => {
  const qwen = await loadTokenizer(`${FIXTURES}qwen3`);
  assert.equal(qwen.bos, undefined);
  const docs = ["Once upon a time.", "The end."];
  const plain = docs.map((d) => qwen.encode(d, { bos: false, eos: false }));
  assert.deepEqual(encodeDocs(qwen, docs), plain.flat());
  // The same tokenizer with an EOS, as Qwen's tokenizer_config.json names <|endoftext|>.
  const eos = 7;
  const withEos: Tokenizer = {
    ...qwen,
    eos,
    encode: (text, options = {}) => [
      ...qwen.encode(text, { ...options, eos: false }),
      ...(options.eos ? [eos] : []),
    ],
  };
  assert.deepEqual(encodeDocs(withEos, docs), [...plain[0]!, eos, ...plain[1]!, eos]);
  assert.equal(calibrationWindows(encodeDocs(qwen, docs), 2, 3, 0).length, 2);
});
