import assert from "node:assert/strict";
import { assertClose, dataFile } from "../_helpers.ts";
import { testGpu } from "../kernels/_gpu.ts";
import { bindingLimit } from "../../kernels/backend.ts";
import { fixtureDir } from "./_hf_fixtures.ts";
import { loadModel } from "../../models/causal_lm.ts";
import { llamaForward } from "../../models/forward.ts";
import {
  type DecodeAttention,
  decodeSession,
  generate,
  type GenerateResult,
} from "../../models/generate.ts";
import { loadLlama2c } from "../../models/llama2c.ts";
import type { BlockLinears, LinearWeight } from "../../models/linear_weight.ts";
import { LLAMA_LINEARS, type LlamaModel } from "../../models/model.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { packWeights, unpackWeights } from "../../quantizers/pack.ts";
import type { QuantizedWeight } from "../../quantizers/quantized_weight.ts";
import { rtn } from "../../quantizers/rtn.ts";
import type { ActivationQuant } from "../../quantizers/activation_quant.ts";
import { quarot } from "../../models/quarot.ts";
import { withKvCacheQuant } from "../../models/with_kv_cache_quant.ts";
import { syntheticModel } from "./_synthetic_model.ts";
import { relError } from "../_helpers.ts";

// The software adapter is slow: tiny fixtures, short prompts, a few tokens.

const PROMPT = [1, 5, 9, 22, 7];

function argmax(a: Float32Array, from: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (a[from + i]! > a[from + best]!) best = i;
  return best;
}

/** Generates on WebGPU, keeping each step's logits. */
async function gpuRun(
  model: LlamaModel,
  prompt: number[],
  maxNewTokens: number,
  options: { weights?: "f32" | "f16"; linears?: BlockLinears[]; attention?: DecodeAttention } = {},
): Promise<{ result: GenerateResult; logits: Float32Array[] }> {
  const session = await decodeSession(model, { backend: "webgpu", maxTokens: 32, ...options });
  try {
    const logits: Float32Array[] = [];
    const result = await session.generate(prompt, {
      maxNewTokens,
      onLogits: (l) => logits.push(l),
    });
    return { result, logits };
  } finally {
    session.dispose();
  }
}

Deno.test("GPU greedy decoding picks the CPU forward pass's argmax at every step, logits within 1e-4, on llama, qwen2, qwen3 and llama3-rope fixtures", async () => {
  if (!await testGpu()) return;
  for (const name of ["llama", "qwen2", "qwen3", "llama3_rope"]) {
    const { model } = await loadModel(fixtureDir(name));
    const V = model.config.vocabSize;
    // The decode step's row (default) and split attention on every fixture, tiles on one.
    const runs = name === "llama"
      ? [["f32", "row"], ["f16", "row"], ["f32", "tiles"], ["f32", "split"]] as const
      : [["f32", "row"], ["f32", "split"]] as const;
    for (const [weights, attention] of runs) {
      const { result, logits } = await gpuRun(model, PROMPT, 6, { weights, attention });
      assert.equal(result.tokens.length, 6);
      assert.equal(result.finishReason, "length");
      const seq = [...PROMPT];
      result.tokens.forEach((id, i) => {
        const full = llamaForward(model, seq);
        const last = (seq.length - 1) * V;
        assert.equal(id, argmax(full, last, V), `${name} ${weights} ${attention}: token ${i}`);
        assertClose(logits[i]!, full.subarray(last, last + V), {
          atol: 1e-4,
          rtol: 0,
          message: `${name} ${weights} ${attention}: logits of step ${i}`,
        });
        seq.push(id);
      });
    }
  }
});

Deno.test("GPU greedy decoding with quantized activations, QuaRot's Hadamards and a quantized KV cache picks the CPU forward pass's argmax, logits within 1e-4", async () => {
  if (!await testGpu()) return;
  const base = syntheticModel({ hiddenDim: 48 }, 40, 0.35);
  const rotated = quarot(base, { seed: 1, onlineHadamard: true, qkHadamard: true });
  const act = (model: LlamaModel, spec: ActivationQuant): LlamaModel => {
    const actQuant = Object.fromEntries(LLAMA_LINEARS.map((n) => [n, spec]));
    return { ...model, layers: model.layers.map((l) => ({ ...l, actQuant })) };
  };
  const models: [string, LlamaModel][] = [
    [
      "quarot-w16a4-kv4",
      withKvCacheQuant(act(rotated, { format: "int4" }), {
        format: "int4",
        asymmetric: true,
        clipRatio: 0.95,
      }),
    ],
    ["a8-kv-nvfp4", withKvCacheQuant(act(base, { format: "int8" }), { format: "nvfp4" })],
  ];
  const V = base.config.vocabSize;
  for (const [name, model] of models) {
    const { result, logits } = await gpuRun(model, PROMPT, 6);
    assert.equal(result.tokens.length, 6);
    const seq = [...PROMPT];
    const floatSeq = [...PROMPT];
    let differs = false;
    result.tokens.forEach((id, i) => {
      const full = llamaForward(model, seq);
      const last = (seq.length - 1) * V;
      assert.equal(id, argmax(full, last, V), `${name}: token ${i}`);
      const want = full.subarray(last, last + V);
      assert(relError(logits[i]!, want) < 1e-4, `${name}: logits of step ${i}`);
      // the quantization is applied: the float model's logits are farther away
      const float = llamaForward(base, floatSeq).subarray(last, last + V);
      if (relError(float, want) > 1e-3) differs = true;
      seq.push(id);
      floatSeq.push(id);
    });
    assert(differs, `${name}: the quantization changed nothing`);
  }
});

Deno.test("GPU greedy decoding reproduces stories260K's golden tokens from BOS (one-token prompt)", async () => {
  if (!await testGpu()) return;
  const path = dataFile("stories260K/stories260K.bin");
  const goldenPath = dataFile("stories260K/golden_greedy.json");
  if (!path || !goldenPath) return;
  const model = await loadLlama2c(path);
  const golden: number[] = JSON.parse(await Deno.readTextFile(goldenPath)).tokens;
  const { tokens } = await generate(model, golden.slice(0, 1), {
    maxNewTokens: 24,
    backend: "webgpu",
  });
  assert.deepEqual(tokens, golden.slice(1, 25));
});

/** RTN-quantized linears of every block, in every form the session takes. */
async function quantizedBlocks(
  model: LlamaModel,
): Promise<{ quantized: BlockLinears[]; dequantized: BlockLinears[] }> {
  const quantized: BlockLinears[] = [], dequantized: BlockLinears[] = [];
  for (const [i, layer] of model.layers.entries()) {
    const q: Record<string, LinearWeight> = {}, d: Record<string, LinearWeight> = {};
    for (const name of LLAMA_LINEARS) {
      // Block 1 keeps its dense wk: q, k, v run part by part (dense, quantized, quantized).
      if (i === 1 && name === "wk") continue;
      let w: QuantizedWeight = await rtn(layer[name], {
        bits: name === "w2" ? 3 : 4,
        groupSize: 32,
      });
      if (i === 2 && name === "wv") {
        // Groups that are not contiguous (as act-order's): v cannot join q and k.
        const groups = w.scales.length / w.shape[0];
        w = { ...w, gIdx: w.gIdx.map((_, c) => (c * 7) % groups) };
      }
      q[name] = i === 0 && name === "wo" ? packWeights(w) : w;
      // What the kernels read: f16 scales and zero points.
      d[name] = dequantize(unpackWeights(packWeights(w)));
    }
    quantized.push(q);
    dequantized.push(d);
  }
  return { quantized, dequantized };
}

Deno.test("quantized linears (packed, unpacked, grouped, mixed with dense) give the dense path's logits with the dequantized weights", async () => {
  if (!await testGpu()) return;
  for (const name of ["llama", "qwen3"]) {
    const { model } = await loadModel(fixtureDir(name));
    const { quantized, dequantized } = await quantizedBlocks(model);
    const dense = await gpuRun(model, PROMPT, 4, { linears: dequantized });
    const packed = await gpuRun(model, PROMPT, 4, { linears: quantized });
    assert.deepEqual(packed.result.tokens, dense.result.tokens, name);
    packed.logits.forEach((l, i) =>
      assertClose(l, dense.logits[i]!, { atol: 1e-4, rtol: 0, message: `${name} step ${i}` })
    );
    // The CPU session dequantizes the same linears.
    const cpu = await decodeSession(model, { backend: "cpu", maxTokens: 32, linears: quantized });
    assert.deepEqual((await cpu.generate(PROMPT, { maxNewTokens: 4 })).tokens, dense.result.tokens);
  }
});

Deno.test("generation stops at a stop token with tokens already queued, one or several steps a submission, and the session runs again", async () => {
  if (!await testGpu()) return;
  const { model } = await loadModel(fixtureDir("llama_linear_rope"));
  const session = await decodeSession(model, { backend: "webgpu", maxTokens: 32 });
  try {
    const full = await session.generate(PROMPT, { maxNewTokens: 6, inFlight: 4 });
    const stopAt = full.tokens[2]!;
    const firstStop = full.tokens.indexOf(stopAt);
    const streamed: number[] = [];
    const stopped = await session.generate(PROMPT, {
      maxNewTokens: 6,
      stop: [stopAt],
      inFlight: 4,
      onToken: (id, i) => streamed[i] = id,
    });
    assert.deepEqual(stopped.tokens, full.tokens.slice(0, firstStop + 1));
    assert.deepEqual(streamed, stopped.tokens);
    assert.equal(stopped.finishReason, "stop");
    // Several steps per submission: the same tokens, and a stop inside a submission's steps.
    for (const stepsPerSubmission of [2, 4, 8]) {
      const chunked = await session.generate(PROMPT, {
        maxNewTokens: 6,
        inFlight: 4,
        stepsPerSubmission,
      });
      assert.deepEqual(chunked.tokens, full.tokens, `${stepsPerSubmission} steps a submission`);
      // The rate between read-backs needs two after the one holding a quarter of the tokens:
      // 2 a submission reads back 1 (the prompt's), 3, 5 and 6 tokens; 4 a submission 1, 5 and
      // 6; 8 a submission 1 and 6.
      const steady = chunked.steadyTokensPerSecond!;
      if (stepsPerSubmission < 8) assert.ok(steady > 0 && Number.isFinite(steady), `${steady}`);
      else assert.ok(Number.isNaN(steady), `${stepsPerSubmission}: ${steady}`);
      const early = await session.generate(PROMPT, {
        maxNewTokens: 6,
        stop: [stopAt],
        stepsPerSubmission,
      });
      assert.deepEqual(early.tokens, stopped.tokens, `${stepsPerSubmission}, stopped`);
    }
    const again = await session.generate([...PROMPT, 3], { maxNewTokens: 3, inFlight: 2 });
    const cpu = await decodeSession(model, { backend: "cpu", maxTokens: 32 });
    const onCpu = await cpu.generate([...PROMPT, 3], { maxNewTokens: 3 });
    assert.deepEqual(again.tokens, onCpu.tokens);
    assert.equal(onCpu.steadyTokensPerSecond, undefined);
  } finally {
    session.dispose();
  }
});

Deno.test("a profiled run reports the GPU time of each phase of a step", async () => {
  const gpu = await testGpu();
  if (!gpu?.timestamps) return;
  const { model } = await loadModel(fixtureDir("llama"));
  const r = await generate(model, PROMPT, { maxNewTokens: 3, backend: "webgpu", profile: true });
  assert(r.gpu !== undefined);
  assert.deepEqual(Object.keys(r.gpu.phases).sort(), [
    "attention",
    "down",
    "gate-up",
    "head",
    "o",
    "qkv",
  ]);
  assert(r.gpu.stepSeconds > 0);
});

Deno.test("a traced run reports the GPU time of steps as they run queued, and the same tokens", async () => {
  const gpu = await testGpu();
  if (!gpu?.timestamps) return;
  const { model } = await loadModel(fixtureDir("llama"));
  const session = await decodeSession(model, { backend: "webgpu", maxTokens: 32 });
  try {
    const opts = { maxNewTokens: 12, inFlight: 6, stepsPerSubmission: 3 };
    const plain = await session.generate(PROMPT, opts);
    assert.equal(plain.sustained, undefined);
    const traced = await session.generate(PROMPT, { ...opts, trace: true });
    assert.deepEqual(traced.tokens, plain.tokens);
    assert(traced.sustained !== undefined);
    const { gpuStepSeconds, gpuUtilization } = traced.sustained;
    assert(gpuStepSeconds > 0 && gpuStepSeconds < traced.decodeSeconds, `${gpuStepSeconds}`);
    assert(gpuUtilization > 0 && gpuUtilization <= 1, `${gpuUtilization}`);
    assert(traced.sustained.longestIdleSeconds >= 0);
    // One step in flight at a time (profiled or with logits) leaves nothing queued to trace.
    const single = await session.generate(PROMPT, { ...opts, trace: true, profile: true });
    assert.equal(single.sustained, undefined);
  } finally {
    session.dispose();
  }
});

Deno.test("the CPU session is the reference: the argmax of the full forward pass over each prefix", async () => {
  const { model } = await loadModel(fixtureDir("llama"));
  const session = await decodeSession(model, { backend: "cpu", maxTokens: 16 });
  const r = await session.generate(PROMPT, { maxNewTokens: 3 });
  const seq = [...PROMPT];
  for (const id of r.tokens) {
    const logits = llamaForward(model, seq);
    assert.equal(id, argmax(logits, (seq.length - 1) * 448, 448));
    seq.push(id);
  }
  assert.equal(r.promptTokens, PROMPT.length);
});

Deno.test("bad input is a RangeError naming the problem: empty prompt, beyond the context or the cache, ids outside the vocabulary, bad options", async () => {
  const { model } = await loadModel(fixtureDir("llama")); // seqLen 256, vocab 448
  const session = await decodeSession(model, { backend: "cpu", maxTokens: 64 });
  const reject = (p: Promise<unknown>, re: RegExp) =>
    assert.rejects(p, (e: Error) => e instanceof RangeError && re.test(e.message));
  await reject(session.generate([], { maxNewTokens: 2 }), /empty prompt/);
  await reject(
    session.generate([1, 448], { maxNewTokens: 2 }),
    /Token 448 at position 1 is outside the vocabulary of 448/,
  );
  await reject(session.generate([1, -1]), /Token -1/);
  await reject(session.generate([1], { maxNewTokens: 2, stop: [500] }), /Token 500/);
  await reject(
    session.generate([1, 2], { maxNewTokens: 255 }),
    /257 positions exceed the model's context of 256/,
  );
  await reject(
    session.generate([1, 2], { maxNewTokens: 63 }),
    /65 positions exceed the session's 'maxTokens' of 64/,
  );
  await reject(
    session.generate([1], { maxNewTokens: 0 }),
    /'maxNewTokens' must be a positive integer: current value is 0/,
  );
  await reject(session.generate([1], { inFlight: 1.5 }), /'inFlight'/);
  await reject(
    session.generate([1], { stepsPerSubmission: 0 }),
    /'stepsPerSubmission' must be a positive integer: current value is 0/,
  );
  await reject(generate(model, [1], { maxNewTokens: 300, backend: "cpu" }), /context of 256/);
  await reject(
    decodeSession(model, { weights: "f8" as "f16" }),
    /'weights' must be "f32" or "f16": current value is f8/,
  );
  await reject(decodeSession(model, { maxTokens: 0 }), /'maxTokens'/);
  await reject(
    decodeSession(model, { attention: "rows" as "split" }),
    /'attention' must be "split", "row" or "tiles": current value is rows/,
  );
  const wq = model.layers[0]!.wq;
  await reject(
    decodeSession(model, { linears: [{ wk: wq }] }),
    /'linears'\[0\]\.wk is \[64,64\], the model's is \[32,64\]/,
  );
  const gpu = await testGpu();
  if (!gpu) return;
  const kvBytes = 32 * 4; // kvDim 32
  await reject(
    decodeSession(model, {
      backend: "webgpu",
      maxTokens: Math.floor(bindingLimit(gpu) / kvBytes) + 1,
    }),
    /one layer's KV cache would take \d+ bytes, more than one storage binding holds/,
  );
  const wo = model.layers[0]!.wo;
  const huge = { ...wo, data: Float32Array.from(wo.data, (v, i) => i === 7 ? 1e5 : v) };
  await reject(
    decodeSession(model, {
      backend: "webgpu",
      weights: "f16",
      maxTokens: 8,
      linears: [{ wo: huge }],
    }),
    /Cannot store decode:0:o in f16: it holds a value of magnitude 100000 .*use f32 weights/,
  );
  const five = await rtn(model.layers[0]!.wo, { bits: 5, groupSize: 32 });
  await reject(
    decodeSession(model, { backend: "webgpu", maxTokens: 8, linears: [{ wo: five }] }),
    /'bits' must be 2, 3, 4 or 8 .*current value is 5/,
  );
});

Deno.test("a decode step reports its dispatches: 5 per block (6 with the split attention), 4-bit linears alike, and 4 around them", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const { model } = await loadModel(fixtureDir("llama"));
  const L = model.layers.length;
  const linears: BlockLinears[] = [];
  for (const l of model.layers) {
    const b: Record<string, LinearWeight> = {};
    for (const name of LLAMA_LINEARS) b[name] = await rtn(l[name], { bits: 4, groupSize: 32 });
    linears.push(b);
  }
  for (
    const options of [{}, { linears }, { attention: "split" as const }, {
      linears,
      attention: "split" as const,
    }]
  ) {
    const plain = await generate(model, PROMPT, { maxNewTokens: 2, backend: "webgpu", ...options });
    // Per block qkv (with the norm, packed weights too), attention
    // (which rotates q and k from the rotary table; the split kernel's two passes), o (adding to
    // the residual), gate-up (with the norm, alike, and SwiGLU), down; the head's norm,
    // classifier, 2 argmax passes (the second advances the position and gathers the next step's
    // embedding row).
    const attention = "attention" in options ? 2 : 1;
    assert.equal(plain.stepDispatches, (4 + attention) * L + 4);
    if (!gpu.timestamps) continue;
    const r = await generate(model, PROMPT, {
      maxNewTokens: 2,
      backend: "webgpu",
      profile: true,
      ...options,
    });
    assert.deepEqual(r.gpu?.phaseDispatches, {
      qkv: L,
      attention: attention * L,
      o: L,
      "gate-up": L,
      down: L,
      head: 4,
    });
  }
});
