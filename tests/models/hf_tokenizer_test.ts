import assert from "node:assert/strict";
import { dataFile } from "../_helpers.ts";
import { loadTokenizer } from "../../models/tokenizer.ts";
import { hfTokenizerJson, parseHfTokenizer } from "../../models/hf_tokenizer.ts";
import { loadLlama2cTokenizer } from "../../models/llama2c_tokenizer.ts";

const FIXTURES = new URL("../fixtures/hf/", import.meta.url).pathname;
const KINDS = ["bytelevel_bos", "bytelevel_nobos", "sentencepiece"] as const;

interface Case {
  text: string;
  ids: number[];
  decoded: string;
  decoded_with_special: string;
}
interface Reference {
  tokenizers: string;
  cases: Record<string, { vocab_size: number; cases: Case[] }>;
}

const reference: Reference = JSON.parse(
  await Deno.readTextFile(`${FIXTURES}tokenizers/reference.json`),
);

/** The parsed fixture tokenizer.json files, by kind. */
const fixtures = new Map<string, Record<string, unknown>>();
for (const kind of KINDS) {
  fixtures.set(kind, JSON.parse(await Deno.readTextFile(`${FIXTURES}tokenizers/${kind}.json`)));
}

async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

for (const kind of KINDS) {
  Deno.test(`the ${kind} tokenizer.json encodes and decodes every reference text as Hugging Face's tokenizers does`, async () => {
    const tok = await loadTokenizer(`${FIXTURES}tokenizers/${kind}.json`);
    const { vocab_size, cases } = reference.cases[kind]!;
    assert.equal(reference.tokenizers, "0.23.2");
    assert.equal(tok.vocabSize, vocab_size);
    assert.equal(cases.length, 7);
    for (const c of cases) {
      const what = `${kind} on ${JSON.stringify(c.text)}`;
      assert.deepEqual(tok.encode(c.text), c.ids, what);
      assert.equal(tok.decode(c.ids), c.decoded, what);
      assert.equal(tok.decode(c.ids, { skipSpecialTokens: false }), c.decoded_with_special, what);
    }
  });
}

Deno.test("BOS is what the post-processor adds by default, and bos/eos options force it either way", () => {
  const cases = (kind: string) => reference.cases[kind]!.cases.filter((c) => c.text !== "");
  // Llama 3 style: the template adds <|begin_of_text|> (id 0); nothing names an EOS.
  const llama3 = parseHfTokenizer(fixtures.get("bytelevel_bos")!, "bytelevel_bos.json");
  assert.deepEqual([llama3.bos, llama3.eos], [0, undefined]);
  for (const c of cases("bytelevel_bos")) {
    assert.equal(c.ids[0], 0);
    assert.deepEqual(llama3.encode(c.text, { bos: true }), c.ids);
    assert.deepEqual(llama3.encode(c.text, { bos: false }), c.ids.slice(1));
  }
  assert.throws(
    () => llama3.encode("x", { eos: true }),
    (e: Error) => e instanceof TypeError && /bytelevel_bos\.json has no EOS token/.test(e.message),
  );
  // Qwen style: no BOS at all; asking for one is an error, refusing it a no-op.
  const qwen = parseHfTokenizer(fixtures.get("bytelevel_nobos")!, "bytelevel_nobos.json");
  assert.deepEqual([qwen.bos, qwen.eos], [undefined, undefined]);
  for (const c of cases("bytelevel_nobos")) {
    assert.deepEqual(qwen.encode(c.text, { bos: false }), c.ids);
  }
  assert.throws(() => qwen.encode("x", { bos: true }), /bytelevel_nobos\.json has no BOS token/);
  // Llama 2 style, with the EOS that tokenizer_config.json names.
  const llama2 = parseHfTokenizer(fixtures.get("sentencepiece")!, "sp.json", {
    config: { bos_token: "<s>", eos_token: { content: "</s>", special: true } },
  });
  assert.deepEqual([llama2.bos, llama2.eos], [1, 2]);
  for (const c of cases("sentencepiece")) {
    assert.deepEqual(llama2.encode(c.text), c.ids);
    assert.deepEqual(llama2.encode(c.text, { eos: true }), [...c.ids, 2]);
    assert.deepEqual(llama2.encode(c.text, { bos: false, eos: true }), [...c.ids.slice(1), 2]);
  }
  assert.deepEqual(llama2.encode("", { eos: true }), [1, 2]);
  // tokenizer_config.json's null means none, whatever the post-processor adds.
  const none = parseHfTokenizer(fixtures.get("sentencepiece")!, "sp.json", {
    config: { bos_token: null },
  });
  assert.equal(none.bos, undefined);
  assert.throws(
    () =>
      parseHfTokenizer(fixtures.get("sentencepiece")!, "sp.json", {
        config: { eos_token: "<eos>" },
      }),
    /sp\.json: tokenizer_config\.json's eos_token "<eos>" is not a token/,
  );
});

Deno.test("a model folder's tokenizer loads with its tokenizer_config.json, and may be smaller than the embedding", async () => {
  for (const name of ["llama", "llama3_rope", "llama_linear_rope", "mistral", "qwen2", "qwen3"]) {
    const dir = `${FIXTURES}models/${name}`;
    const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    const tok = await loadTokenizer(dir, { vocabSize: config.vocab_size });
    assert.equal(tok.vocabSize, 400, name);
    assert.ok(tok.vocabSize < config.vocab_size, name);
    await assert.rejects(
      () => loadTokenizer(dir, { vocabSize: 300 }),
      new RegExp(`${name}/tokenizer\\.json: has 400 ids, more than the model's vocabulary of 300`),
    );
  }
  await withTempDir(async (dir) => {
    await Deno.copyFile(`${FIXTURES}tokenizers/bytelevel_nobos.json`, `${dir}/tokenizer.json`);
    await Deno.writeTextFile(
      `${dir}/tokenizer_config.json`,
      JSON.stringify({
        bos_token: null,
        eos_token: "<|im_end|>",
        clean_up_tokenization_spaces: true,
      }),
    );
    const tok = await loadTokenizer(dir);
    assert.deepEqual([tok.bos, tok.eos], [undefined, 2]);
    const c = reference.cases.bytelevel_nobos!.cases[0]!;
    assert.deepEqual(tok.encode(c.text), c.ids);
    assert.deepEqual(tok.encode(c.text, { eos: true }), [...c.ids, 2]);
    // transformers' clean-up of spaces is not tokenizers' decode: never applied.
    const spaced = "a , b . c 's";
    assert.equal(tok.decode(tok.encode(spaced)), spaced);
  });
});

Deno.test("a missing, broken or unsupported tokenizer.json is refused naming the file", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(() => loadTokenizer(`${dir}/absent`), /absent: cannot read the tokenizer/);
    await assert.rejects(
      () => loadTokenizer(dir),
      new RegExp(`${dir}/tokenizer\\.json: cannot read the tokenizer`),
    );
    await Deno.writeTextFile(`${dir}/tokenizer.json`, "{ not json");
    await assert.rejects(() => loadTokenizer(dir), /tokenizer\.json: not valid JSON/);
    await Deno.writeTextFile(`${dir}/tok.json`, JSON.stringify({ version: "1.0" }));
    await assert.rejects(
      () => loadTokenizer(`${dir}/tok.json`),
      /tok\.json: not a tokenizer\.json/,
    );
    await Deno.copyFile(`${FIXTURES}tokenizers/sentencepiece.json`, `${dir}/tokenizer.json`);
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, "[1,");
    await assert.rejects(() => loadTokenizer(dir), /tokenizer_config\.json: not valid JSON/);
    await Deno.writeTextFile(`${dir}/tok.model`, "");
    await assert.rejects(() => loadTokenizer(`${dir}/tok.model`), /tok\.model: not a tokenizer/);
  });
  const sp = fixtures.get("sentencepiece")!;
  assert.throws(
    () => parseHfTokenizer({ ...sp, model: { type: "Nonesuch" } }, "n.json"),
    /n\.json: cannot build the tokenizer/,
  );
  const metaspace = { type: "Metaspace", replacement: "▁", prepend_scheme: "first" };
  assert.throws(
    () => parseHfTokenizer({ ...sp, normalizer: null, pre_tokenizer: metaspace }, "m.json"),
    /m\.json: pre_tokenizer Metaspace with split true is not supported/,
  );
  parseHfTokenizer({ ...sp, normalizer: null, pre_tokenizer: { ...metaspace, split: false } });
  const split = {
    type: "Split",
    pattern: { String: "▁" },
    behavior: "MergedWithNext",
    invert: false,
  };
  assert.throws(
    () =>
      parseHfTokenizer(
        { ...sp, pre_tokenizer: { type: "Sequence", pretokenizers: [split] } },
        "s.json",
      ),
    /s\.json: pre_tokenizer Split with behavior MergedWithNext and invert false is not supported/,
  );
  assert.throws(
    () => parseHfTokenizer({ ...sp, model: { ...(sp.model as object), dropout: 0.1 } }, "d.json"),
    /d\.json: model\.dropout 0\.1 is not supported/,
  );
  const tok = parseHfTokenizer(sp, "sp.json");
  assert.throws(() => tok.decode([1, 400]), /Cannot decode token 400: sp\.json has no such id/);
  assert.throws(() => tok.decode([-1]), RangeError);
  assert.equal(tok.decode([]), "");
});

Deno.test("a Split pre-tokenizer on a String with invert false removes its delimiters, as tokenizers does", () => {
  // The library alone keeps them: see libraryJson in models/hf_tokenizer.ts.
  const bl = fixtures.get("bytelevel_nobos")!;
  const byWords = parseHfTokenizer({
    ...bl,
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { String: " " }, behavior: "Removed", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    },
  });
  const plain = parseHfTokenizer(bl);
  assert.deepEqual(byWords.encode("the  king's"), [
    ...plain.encode("the"),
    ...plain.encode("king's"),
  ]);
});

Deno.test("tok512 written as tokenizer.json reads back through the library and encodes and decodes like the llama2.c tokenizer", async () => {
  const tokPath = dataFile("stories260K/tok512.bin");
  const storiesPath = dataFile("text/tinystories_val_sample.txt");
  if (!tokPath || !storiesPath) return;
  const tok = await loadLlama2cTokenizer(tokPath, { vocabSize: 512 });
  const json = JSON.parse(JSON.stringify(hfTokenizerJson(tok)));
  assert.equal(json.model.vocab["▁the"], tok.pieces.indexOf(" the"));
  const back = parseHfTokenizer(json, "tokenizer.json", { vocabSize: 512 });
  assert.deepEqual([back.vocabSize, back.bos, back.eos], [512, 1, undefined]);
  const text = (await Deno.readTextFile(storiesPath)).slice(0, 20_000) + " héllo 😀  x\t<y>  ";
  const ids = tok.encode(text, { bos: true });
  // Its post-processor adds BOS, as Llama 2's does; llama2.c's encode only when asked.
  assert.deepEqual(back.encode(text), ids);
  assert.deepEqual(back.encode(text, { bos: false }), tok.encode(text));
  assert.equal(back.decode(ids), text);
  assert.equal(tok.decode(ids), text);
  // An HF tokenizer writes back the file it was read from, as a fresh copy.
  const again = hfTokenizerJson(back);
  assert.deepEqual(again, json);
  assert.notEqual(again, json);
});

Deno.test("the library encodes 700 KB of TinyStories with the llama2.c tokenizer's ids in well under a minute", async () => {
  const tokPath = dataFile("stories260K/tok512.bin");
  const storiesPath = dataFile("text/tinystories_val_sample.txt");
  if (!tokPath || !storiesPath) return;
  const text = await Deno.readTextFile(storiesPath);
  assert.ok(text.length > 700_000);
  const l2c = await loadLlama2cTokenizer(tokPath, { vocabSize: 512 });
  const hf = parseHfTokenizer(JSON.parse(JSON.stringify(hfTokenizerJson(l2c))));
  const time = <T>(f: () => T): [T, number] => {
    const t0 = performance.now();
    const r = f();
    return [r, (performance.now() - t0) / 1000];
  };
  const [ref, tL2c] = time(() => l2c.encode(text, { bos: true }));
  const [ids, tHf] = time(() => hf.encode(text));
  assert.deepEqual(ids, ref);
  const docs = text.split(/\n\s*\n/);
  const [perDoc, tDocs] = time(() => docs.flatMap((d) => hf.encode(d)));
  const [perDocL2c, tDocsL2c] = time(() => docs.flatMap((d) => l2c.encode(d, { bos: true })));
  assert.deepEqual(perDoc, perDocL2c);
  const timings: string[] = [];
  for (const kind of KINDS) {
    const tok = parseHfTokenizer(fixtures.get(kind)!);
    const [n, t] = time(() => tok.encode(text).length);
    assert.ok(n > 300_000);
    timings.push(`${kind} ${t.toFixed(2)} s`);
  }
  console.log(
    `encode ${(text.length / 1000).toFixed(0)} KB, ${ref.length} tokens: llama2.c ${
      tL2c.toFixed(2)
    } s, ` +
      `tok512 tokenizer.json ${tHf.toFixed(2)} s (${(tHf / tL2c).toFixed(1)}x); per document ` +
      `(${docs.length}): llama2.c ${tDocsL2c.toFixed(2)} s, tokenizer.json ${
        tDocs.toFixed(2)
      } s; ` +
      `fixtures: ${timings.join(", ")}`,
  );
  assert.ok(tHf < 60 && tDocs < 60, `${tHf} s, ${tDocs} s`);
});
