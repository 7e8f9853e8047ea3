import assert from "node:assert/strict";
import { loadModel } from "../../models/causal_lm.ts";
import { writeHfLlama } from "../../models/hf.ts";
import { hfModelConfig } from "../../models/hf_config.ts";
import { STORED_LINEARS } from "../../models/model.ts";
import { readSafetensors, writeSafetensors } from "../../core/safetensors_file.ts";
import { tensor } from "../../core/tensor.ts";
import { testGpu } from "../kernels/_gpu.ts";
import {
  compareLogits,
  copyFixture,
  editConfig,
  FIXTURE_MODELS,
  fixtureDir,
  referenceLogits,
} from "./_hf_fixtures.ts";

// The issue's bar: within 5e-4 relative RMS of transformers' float32 logits, the same argmax
// at every position.
const REL_RMS = 5e-4;

async function assertMatchesReference(dir: string, name: string, what = name): Promise<void> {
  const lm = await loadModel(dir);
  for (const [i, ref] of (await referenceLogits(name)).entries()) {
    const logits = await lm.logits(ref.ids, { backend: "cpu" });
    const { relRms, argmaxMismatches } = compareLogits(logits, ref.logits, lm.config.vocabSize);
    assert(relRms < REL_RMS, `${what}, sequence ${i}: relative RMS ${relRms}`);
    assert.deepEqual(argmaxMismatches, [], `${what}, sequence ${i}: argmax differs`);
  }
}

for (const name of FIXTURE_MODELS) {
  Deno.test(`loadModel reads the ${name} folder saved by transformers and matches its float32 logits`, async () => {
    await assertMatchesReference(fixtureDir(name), name);
  });
}

Deno.test("on WebGPU every family matches transformers' logits too", async () => {
  if (!(await testGpu())) return;
  for (const name of FIXTURE_MODELS) {
    const lm = await loadModel(fixtureDir(name));
    // The software adapter is slow: the first two sequences (50–155 tokens).
    for (const [i, ref] of (await referenceLogits(name)).slice(0, 2).entries()) {
      const logits = await lm.logits(ref.ids, { backend: "webgpu" });
      const { relRms, argmaxMismatches } = compareLogits(logits, ref.logits, lm.config.vocabSize);
      assert(relRms < REL_RMS, `${name}, sequence ${i} on WebGPU: relative RMS ${relRms}`);
      assert.deepEqual(argmaxMismatches, [], `${name}, sequence ${i} on WebGPU: argmax differs`);
    }
  }
});

Deno.test("each fixture is read as its family, with the features its config names", async () => {
  const expect: Record<string, Record<string, unknown>> = {
    llama: { family: "llama", ropeTheta: 500000, nKvHeads: 2, sharedClassifier: false },
    llama3_rope: { family: "llama", headDim: 32, sharedClassifier: true, nKvHeads: 1 },
    llama_linear_rope: { family: "llama", rope: { type: "linear", factor: 4 } },
    mistral: { family: "mistral", ropeTheta: 1000000 },
    qwen2: { family: "qwen2", qkvBias: true, sharedClassifier: true },
    qwen3: { family: "qwen3", qkNorm: true, headDim: 32 },
  };
  for (const name of FIXTURE_MODELS) {
    const lm = await loadModel(fixtureDir(name));
    for (const [key, value] of Object.entries(expect[name]!)) {
      assert.deepEqual(lm.config[key as keyof typeof lm.config], value, `${name}: ${key}`);
    }
    assert.equal(lm.model.tokenEmbedding.dtype, "bf16", `${name} keeps its stored dtype`);
  }
  const llama3 = (await loadModel(fixtureDir("llama3_rope"))).config.rope;
  assert.deepEqual(llama3, {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositions: 64,
  });
});

/** Rewrites transformers 5's `rope_parameters` as transformers 4 wrote it. */
function toTransformers4(json: Record<string, unknown>): void {
  const { rope_theta, rope_type, ...rest } = json.rope_parameters as Record<string, unknown>;
  delete json.rope_parameters;
  json.rope_theta = rope_theta;
  json.rope_scaling = rope_type === "default" ? null : { rope_type, ...rest };
}

Deno.test("a transformers 4 config layout (top-level rope_theta, rope_scaling) gives the same logits", async () => {
  for (const name of ["llama", "llama3_rope", "llama_linear_rope"]) {
    const dir = await copyFixture(name);
    try {
      await editConfig(dir, toTransformers4);
      await assertMatchesReference(dir, name, `${name} (transformers 4 layout)`);
      // The older spelling of the type key, "type", too.
      await editConfig(dir, (json) => {
        const s = json.rope_scaling as Record<string, unknown> | null;
        if (s) json.rope_scaling = { type: s.rope_type, ...s, rope_type: undefined };
      });
      await assertMatchesReference(dir, name, `${name} (rope_scaling.type)`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("the reference logits catch a lost rope_theta (the 10000 fallback is 3% off)", async () => {
  const dir = await copyFixture("llama");
  try {
    await editConfig(dir, (json) => {
      json.rope_parameters = { rope_type: "default", rope_theta: 10000 };
    });
    const lm = await loadModel(dir);
    const [ref] = await referenceLogits("llama");
    const { relRms } = compareLogits(
      await lm.logits(ref!.ids, { backend: "cpu" }),
      ref!.logits,
      lm.config.vocabSize,
    );
    assert(relRms > 10 * REL_RMS, `relative RMS ${relRms}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("block weights are widened one block at a time; widen: 'load' gives the same logits", async () => {
  const lazy = await loadModel(fixtureDir("qwen3"));
  const { layers } = lazy.model;
  const wq0 = layers[0]!.wq;
  assert.equal(wq0.dtype, "f32");
  assert.equal(layers[0]!.wq, wq0, "a block stays widened while it is read");
  assert.notEqual(layers[1]!.wq, layers[0]!.wq, "reading another block releases the first");
  assert.notEqual(layers[0]!.wq, wq0, "and reading it again widens it anew");
  assert.deepEqual(layers[0]!.wq.data, wq0.data);
  // The CPU forward multiplies by the stored weights (not carried by copies of the layer).
  assert.equal((layers[0]![STORED_LINEARS]!.w2.weight as { dtype: string }).dtype, "bf16");
  assert.equal({ ...layers[0]! }[STORED_LINEARS], undefined);
  const eager = await loadModel(fixtureDir("qwen3"), { widen: "load" });
  assert.equal(eager.model.layers[0]![STORED_LINEARS], undefined);
  assert.equal(eager.model.tokenEmbedding.dtype, "f32");
  const ids = [1, 2, 3, 400, 5];
  assert.deepEqual(
    await eager.logits(ids, { backend: "cpu" }),
    await lazy.logits(ids, { backend: "cpu" }),
  );
});

Deno.test("writeHfLlama writes biases and q/k norms back in Hugging Face's layout", async () => {
  for (const name of ["qwen2", "qwen3", "llama3_rope"]) {
    const lm = await loadModel(fixtureDir(name));
    const dir = await Deno.makeTempDir();
    try {
      await writeHfLlama(lm.model, dir);
      await assertMatchesReference(dir, name, `${name} written back`);
      const back = await loadModel(dir);
      assert.equal(back.config.family, lm.config.family);
      assert.deepEqual(back.config.rope, lm.config.rope);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

/** Runs `fn` on a scratch copy of a fixture and returns the error loadModel (or logits) throws. */
async function errorOf(
  name: string,
  alter: (dir: string) => Promise<void>,
  run: (dir: string) => Promise<unknown> = (dir) => loadModel(dir),
): Promise<Error> {
  const dir = await copyFixture(name);
  try {
    await alter(dir);
    await run(dir);
  } catch (e) {
    return e as Error;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  throw new assert.AssertionError({ message: `no error for an altered ${name}` });
}

Deno.test("a truncated shard is an error naming the file", async () => {
  const e = await errorOf("llama3_rope", async (dir) => {
    const path = `${dir}/model-00002-of-00004.safetensors`;
    const bytes = await Deno.readFile(path);
    await Deno.writeFile(path, bytes.subarray(0, bytes.length - 100));
  });
  assert.match(e.message, /model-00002-of-00004\.safetensors/);
});

Deno.test("an index naming a missing file is an error naming the index and the file", async () => {
  const e = await errorOf(
    "llama3_rope",
    (dir) => Deno.remove(`${dir}/model-00003-of-00004.safetensors`),
  );
  assert(e instanceof RangeError);
  assert.match(
    e.message,
    /model\.safetensors\.index\.json names model-00003-of-00004\.safetensors/,
  );
});

Deno.test("a tensor of the wrong shape or dtype, or a missing tensor, is an error naming it", async () => {
  const shape = await errorOf("llama", (dir) =>
    editConfig(dir, (json) => {
      json.intermediate_size = 150;
    }));
  assert.match(shape.message, /model\.layers\.0\.mlp\.gate_proj\.weight has shape \[160,64\]/);
  const rewrite =
    (edit: (t: Map<string, ReturnType<typeof tensor>>) => void) => async (dir: string) => {
      const { tensors } = await readSafetensors(`${dir}/model.safetensors`);
      const map = new Map([...tensors].map(([k, v]) => [k, v as ReturnType<typeof tensor>]));
      edit(map);
      await writeSafetensors(`${dir}/model.safetensors`, map);
    };
  const dtype = await errorOf(
    "llama",
    rewrite((t) => t.set("model.norm.weight", tensor("i32", [64], new Int32Array(64)))),
  );
  assert.match(dtype.message, /model\.norm\.weight has dtype i32/);
  const missing = await errorOf(
    "llama",
    rewrite((t) => t.delete("model.layers.2.self_attn.k_proj.weight")),
  );
  assert.match(missing.message, /missing tensor model\.layers\.2\.self_attn\.k_proj\.weight/);
  const bias = await errorOf(
    "qwen2",
    rewrite((t) => t.delete("model.layers.1.self_attn.q_proj.bias")),
  );
  assert.match(bias.message, /missing tensor model\.layers\.1\.self_attn\.q_proj\.bias/);
});

Deno.test("a missing config key or a setting that is not implemented is an error naming the key", async () => {
  const cases: [string, (json: Record<string, unknown>) => void, RegExp][] = [
    ["llama", (j) => delete j.hidden_size, /missing key 'hidden_size'/],
    [
      "llama",
      (j) => (j.architectures = ["GPT2LMHeadModel"]),
      /'architectures' \["GPT2LMHeadModel"\]/,
    ],
    [
      "llama",
      (j) => (j.rope_parameters = { rope_type: "yarn", rope_theta: 1e4, factor: 4 }),
      /'rope_parameters\.rope_type' "yarn"/,
    ],
    [
      "llama",
      (j) => {
        delete j.rope_parameters;
        j.rope_scaling = { type: "dynamic", factor: 2 };
      },
      /'rope_scaling\.rope_type' "dynamic"/,
    ],
    [
      "llama3_rope",
      (j) => delete (j.rope_parameters as Record<string, unknown>).low_freq_factor,
      /'rope_parameters\.low_freq_factor' must be a number/,
    ],
    ["llama", (j) => (j.attention_bias = true), /'attention_bias' true/],
    ["llama", (j) => (j.mlp_bias = true), /'mlp_bias' true/],
    ["llama", (j) => (j.hidden_act = "gelu"), /'hidden_act' "gelu"/],
    ["qwen3", (j) => (j.partial_rotary_factor = 0.5), /partial_rotary_factor' 0\.5/],
  ];
  for (const [name, edit, pattern] of cases) {
    const e = await errorOf(name, (dir) => editConfig(dir, edit));
    assert(e instanceof RangeError, `${pattern}: ${e}`);
    assert.match(e.message, /config\.json/);
    assert.match(e.message, pattern);
  }
});

Deno.test("token ids outside the vocabulary and sequences beyond a sliding window are refused", async () => {
  const lm = await loadModel(fixtureDir("qwen2")); // vocab 448; its tokenizer has 400 pieces
  await assert.rejects(() => lm.logits([0, 448], { backend: "cpu" }), /Token 448 at position 1/);
  await assert.rejects(() => lm.logits([], { backend: "cpu" }), /empty/);
  const e = await errorOf(
    "mistral",
    (dir) =>
      editConfig(dir, (json) => {
        json.sliding_window = 8;
      }),
    async (dir) => (await loadModel(dir)).logits(new Array(9).fill(3), { backend: "cpu" }),
  );
  assert.match(e.message, /sliding_window is 8/);
  const short = hfModelConfig(
    {
      ...JSON.parse(await Deno.readTextFile(`${fixtureDir("mistral")}/config.json`)),
      sliding_window: 8,
    },
    "config.json",
  );
  assert.equal(short.slidingWindow, 8);
});

Deno.test("loadModel names a path that is neither a folder nor a llama2.c file", async () => {
  await assert.rejects(
    () => loadModel("/nonexistent/model"),
    /Cannot load a model from \/nonexistent\/model/,
  );
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(() => loadModel(dir), /config\.json: cannot read the configuration/);
    await Deno.writeTextFile(`${dir}/config.json`, "{not json");
    await assert.rejects(
      () => loadModel(dir),
      /config\.json: the configuration is not a JSON object/,
    );
    await Deno.writeTextFile(`${dir}/x.txt`, "");
    await assert.rejects(() => loadModel(`${dir}/x.txt`), /expected a Hugging Face folder/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
