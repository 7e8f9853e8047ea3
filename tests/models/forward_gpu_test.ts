import assert from "node:assert/strict";
import { assertClose, dataFile } from "../_helpers.ts";
import { testGpu } from "../kernels/_gpu.ts";
import { prng } from "../../core/prng.ts";
import { loadLlama2c } from "../../models/llama2c.ts";
import { llamaForward } from "../../models/forward.ts";
import type { LlamaConfig, LlamaModel } from "../../models/model.ts";
import { ropeFrequencies } from "../../models/_rope.ts";
import { syntheticModel } from "./_synthetic_model.ts";
import { perplexity } from "../../models/perplexity.ts";
import {
  llamaForwardGpu,
  llamaSession,
  perplexityGpu,
  sessionPerplexity,
} from "../../models/forward_gpu.ts";

// The software adapter runs about 1.5 GFLOP/s: short sequences keep these tests fast.

interface Golden {
  tokens: number[];
  logits_pos0_first8: number[];
}

async function realModel(name: string): Promise<{ model: LlamaModel; golden: Golden } | null> {
  const path = dataFile(`${name}/${name}.bin`);
  const goldenPath = dataFile(`${name}/golden_greedy.json`);
  if (!path || !goldenPath) return null;
  return {
    model: await loadLlama2c(path),
    golden: JSON.parse(await Deno.readTextFile(goldenPath)),
  };
}

function argmax(a: Float32Array, from: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (a[from + i]! > a[from + best]!) best = i;
  return best;
}

Deno.test("the WebGPU forward pass gives the CPU forward pass's logits on stories260K and llama5M", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const [name, T] of [["stories260K", 32], ["llama5M", 8]] as const) {
    const real = await realModel(name);
    if (!real) continue;
    const tokens = real.golden.tokens.slice(0, T);
    const logits = await llamaForwardGpu(real.model, tokens, { backend: "webgpu" });
    assertClose(logits, llamaForward(real.model, tokens), {
      atol: 1e-4,
      rtol: 1e-4,
      message: name,
    });
    assertClose(logits.subarray(0, 8), real.golden.logits_pos0_first8, {
      atol: 1e-4,
      rtol: 0,
      message: `${name} golden logits after BOS`,
    });
  }
});

Deno.test("greedy decoding with the WebGPU forward pass reproduces stories260K's golden tokens", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const real = await realModel("stories260K");
  if (!real) return;
  const { model, golden } = real;
  const V = model.config.vocabSize;
  const session = await llamaSession(model, { backend: "webgpu" });
  try {
    assert.equal(session.backend, "webgpu");
    const steps = 16;
    const seq = [golden.tokens[0]!];
    for (let step = 0; step < steps; step++) {
      const logits = await session.forward(seq);
      seq.push(argmax(logits, (seq.length - 1) * V, V));
    }
    assert.deepEqual(seq, golden.tokens.slice(0, steps + 1));
  } finally {
    session.dispose();
  }
});

Deno.test("the WebGPU forward pass matches the CPU on head widths above, below and not dividing 64, past 64 positions", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const shapes: Partial<LlamaConfig>[] = [
    { dim: 160, nHeads: 2, nKvHeads: 1 }, // head width 80: more than a workgroup
    { dim: 72, nHeads: 3, nKvHeads: 3 }, // head width 24: 64 threads in 2 parts of 24
    { dim: 32, nHeads: 4, nKvHeads: 1 }, // head width 8, 4 query heads per key/value head
  ];
  const rng = prng(7);
  for (const [i, shape] of shapes.entries()) {
    const model = syntheticModel(shape, 100 + i);
    const tokens = Array.from({ length: 70 }, () => rng.int(model.config.vocabSize));
    const logits = await llamaForwardGpu(model, tokens, { backend: "webgpu" });
    assertClose(logits, llamaForward(model, tokens), {
      atol: 1e-4,
      rtol: 1e-4,
      message: JSON.stringify(shape),
    });
  }
});

/** Rotary scaling with frequencies of head widths 16 and 32 (θ = 10⁴) in all three llama3 bands. */
const LLAMA3_ROPE = {
  type: "llama3",
  factor: 8,
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPositions: 64,
} as const;

/** Shapes with each optional feature of the configuration, and all of them together. */
const FEATURE_SHAPES: Partial<LlamaConfig>[] = [
  { dim: 32, nHeads: 4, nKvHeads: 2, headDim: 12 }, // qDim 48 > dim
  { dim: 48, nHeads: 4, nKvHeads: 1, headDim: 6 }, // qDim 24 < dim
  { qkvBias: true },
  { qkNorm: true },
  { dim: 32, nHeads: 2, nKvHeads: 1, rope: { type: "linear", factor: 4 } },
  { dim: 32, nHeads: 2, nKvHeads: 1, rope: LLAMA3_ROPE },
  {
    dim: 40,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 32, // qDim 128 > dim
    qkvBias: true,
    qkNorm: true,
    rope: LLAMA3_ROPE,
    slidingWindow: 64,
  },
];

Deno.test("the llama3 rope of the feature tests has frequencies kept, divided by the factor and in between", () => {
  for (const hd of [16, 32]) {
    const plain = ropeFrequencies(hd, 10000);
    const scaled = ropeFrequencies(hd, 10000, LLAMA3_ROPE);
    const kept = scaled.filter((f, i) => f === plain[i]).length;
    const divided = scaled.filter((f, i) => f === Math.fround(plain[i]! / 8)).length;
    assert.ok(
      kept > 0 && divided > 0 && kept + divided < hd / 2,
      `head width ${hd}: ${kept} kept, ${divided} divided`,
    );
  }
});

Deno.test("the WebGPU forward pass matches the CPU with an explicit head width, q/k/v biases, q/k norms, linear and llama3 rope, and all together", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(11);
  for (const [i, shape] of FEATURE_SHAPES.entries()) {
    const model = syntheticModel(shape, 200 + i, 0.35);
    const tokens = Array.from({ length: 40 }, () => rng.int(model.config.vocabSize));
    const logits = await llamaForwardGpu(model, tokens, { backend: "webgpu" });
    assertClose(logits, llamaForward(model, tokens), {
      atol: 1e-4,
      rtol: 1e-4,
      message: JSON.stringify(shape),
    });
  }
});

Deno.test("the WebGPU forward pass uses whichever of the q/k/v biases and q/k norms a layer has, as the CPU does", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const full = syntheticModel({ qkvBias: true, qkNorm: true }, 300, 0.35);
  const [l0, l1] = full.layers;
  // Layer 0 keeps only bk and kNorm, layer 1 only bq, bv and qNorm.
  const { bq: _bq, bv: _bv, qNorm: _qNorm, ...kOnly } = l0!;
  const { bk: _bk, kNorm: _kNorm, ...qvOnly } = l1!;
  const model: LlamaModel = { ...full, layers: [kOnly, qvOnly] };
  const tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8];
  const logits = await llamaForwardGpu(model, tokens, { backend: "webgpu" });
  assertClose(logits, llamaForward(model, tokens), { atol: 1e-4, rtol: 1e-4 });
  const short: LlamaModel = {
    ...full,
    layers: [{ ...l0!, bk: l0!.bk!.subarray(1) }, l1!],
  };
  await assert.rejects(
    () => llamaSession(short, { backend: "webgpu" }),
    /layer 0: 'bk' must have 16 values: current length is 15/,
  );
});

Deno.test("the WebGPU path refuses sequences longer than the sliding window before running them", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const model = syntheticModel({ slidingWindow: 8, qkNorm: true }, 400, 0.35);
  const session = await llamaSession(model, { backend: "webgpu" });
  try {
    const long = [1, 2, 3, 4, 5, 6, 7, 8, 9];
    await assert.rejects(() => session.forward(long), RangeError);
    await assert.rejects(() => session.forward(long), /sliding_window is 8/);
    assert.throws(() => llamaForward(model, long), /sliding_window is 8/);
    await assert.rejects(
      () => session.nll([long.slice(0, 4), long], [long.slice(1, 5), long]),
      /sequence of 9 tokens: the model's sliding_window is 8/,
    );
    await assert.rejects(
      () => sessionPerplexity(session, [...long, 10], { seqLen: 9 }),
      /sliding_window is 8/,
    );
    await assert.rejects(
      () => perplexityGpu(model, [...long, 10], { seqLen: 9, backend: "webgpu" }),
      /sliding_window is 8/,
    );
    // A window of exactly 8 runs, and matches the CPU.
    const logits = await session.forward(long.slice(0, 8));
    assertClose(logits, llamaForward(model, long.slice(0, 8)), { atol: 1e-4, rtol: 1e-4 });
    const windows = await sessionPerplexity(session, [...long, 10], { seqLen: 8 });
    assertClose(windows.nll, perplexity(model, [...long, 10], { seqLen: 8 }).nll, {
      atol: 0,
      rtol: 1e-5,
    });
  } finally {
    session.dispose();
  }
});

Deno.test("GPU perplexity equals the CPU perplexity on a model with every optional feature", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const model = syntheticModel(FEATURE_SHAPES.at(-1)!, 500, 0.35);
  const rng = prng(12);
  const stream = Array.from({ length: 60 }, () => rng.int(model.config.vocabSize));
  const options = { seqLen: 24 }; // windows of 24, 24 and 11 tokens
  const cpu = perplexity(model, stream, options);
  const onGpu = await perplexityGpu(model, stream, { ...options, backend: "webgpu" });
  assert.equal(onGpu.tokens, 59);
  assert.equal(onGpu.windows, 3);
  assertClose(onGpu.nll, cpu.nll, { atol: 0, rtol: 1e-5 });
  const session = await llamaSession(model, { backend: "webgpu" });
  try {
    const single = await sessionPerplexity(session, stream, { ...options, windowsPerPass: 1 });
    assertClose(single.nll, cpu.nll, { atol: 0, rtol: 1e-5 });
  } finally {
    session.dispose();
  }
});

Deno.test("GPU perplexity over batched windows equals the CPU perplexity, ragged last window included", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const real = await realModel("stories260K");
  if (!real) return;
  const stream = real.golden.tokens.slice(0, 75); // 74 scored tokens: windows of 16, 16, 16, 16, 10
  const options = { seqLen: 16 };
  const cpu = perplexity(real.model, stream, options);
  const seen: number[] = [];
  const onGpu = await perplexityGpu(real.model, stream, {
    ...options,
    backend: "webgpu",
    windowsPerPass: 2,
    onProgress: (done) => seen.push(done),
  });
  assert.equal(onGpu.tokens, 74);
  assert.equal(onGpu.windows, cpu.windows);
  assert.deepEqual(seen, [32, 64, 74]);
  assertClose(onGpu.nll, cpu.nll, { atol: 0, rtol: 1e-5 });
  // The same windows one per pass, through a session that then scores another stream.
  const session = await llamaSession(real.model, { backend: "webgpu" });
  try {
    const single = await sessionPerplexity(session, stream, { ...options, windowsPerPass: 1 });
    assertClose(single.nll, cpu.nll, { atol: 0, rtol: 1e-5 });
    const other = real.golden.tokens.slice(100, 140);
    const again = await sessionPerplexity(session, other, options);
    assertClose(again.nll, perplexity(real.model, other, options).nll, { atol: 0, rtol: 1e-5 });
  } finally {
    session.dispose();
  }
});

Deno.test("the CPU backend of a session is the CPU forward pass and CPU perplexity", async () => {
  const model = syntheticModel({}, 3);
  const tokens = [1, 5, 9, 2, 39];
  const session = await llamaSession(model, { backend: "cpu" });
  assert.equal(session.backend, "cpu");
  assert.deepEqual(await session.forward(tokens), llamaForward(model, tokens));
  const stream = [...tokens, 7, 8, 3, 0, 11];
  const cpu = perplexity(model, stream, { seqLen: 4 });
  const viaSession = await perplexityGpu(model, stream, { seqLen: 4, backend: "cpu" });
  assert.deepEqual(viaSession, cpu);
  const { nll, tokens: scored } = await session.nll([stream.slice(0, 4)], [stream.slice(1, 5)]);
  assert.equal(scored, 4);
  const first = perplexity(model, stream.slice(0, 5), { seqLen: 4 });
  assertClose(nll / 4, first.nll, { atol: 1e-12, rtol: 1e-12 });
});

Deno.test("bad tokens, backends and options are refused with the option and value", async () => {
  const model = syntheticModel({}, 4);
  await assert.rejects(
    () => llamaForwardGpu(model, [1, 40], { backend: "cpu" }),
    RangeError,
  );
  await assert.rejects(
    // @ts-expect-error: an unknown backend
    () => llamaSession(model, { backend: "cuda" }),
    /'backend' must be "auto", "cpu" or "webgpu": current value is cuda/,
  );
  await assert.rejects(
    () => perplexityGpu(model, [1, 2, 3], { windowsPerPass: 0, backend: "cpu" }),
    /'windowsPerPass' must be a positive integer: current value is 0/,
  );
  const gpu = await testGpu();
  if (!gpu) return;
  const session = await llamaSession(model, { backend: "webgpu" });
  try {
    await assert.rejects(() => session.forward([1, 2, 40]), /Token 40 at position 2 is outside/);
    await assert.rejects(() => session.forward([]), /empty token sequence/);
    await assert.rejects(
      () => session.nll([[1, 2]], [[2]]),
      /2 inputs but 1 targets/,
    );
    // A failed call leaves the session usable.
    const ok = await session.forward([1, 2]);
    assertClose(ok, llamaForward(model, [1, 2]), { atol: 1e-4, rtol: 1e-4 });
  } finally {
    session.dispose();
  }
  await assert.rejects(() => session.forward([1, 2]), /disposed/);
  // "auto" takes the GPU only when it is hardware: the CPU path is faster than a software one.
  const auto = await llamaSession(model, { backend: "auto" });
  assert.equal(auto.backend, gpu.software ? "cpu" : "webgpu");
  auto.dispose();
});
