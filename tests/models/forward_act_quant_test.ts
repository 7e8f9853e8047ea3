import assert from "node:assert/strict";
import { assertClose } from "../_helpers.ts";
import { syntheticModel } from "./_synthetic_model.ts";
import { llamaForward } from "../../models/forward.ts";
import { llamaForwardGpu, perplexityGpu } from "../../models/forward_gpu.ts";
import { perplexity } from "../../models/perplexity.ts";
import { llamaCompressible } from "../../models/compressible.ts";
import { llamaCalibrationRunner } from "../../models/calibration_gpu.ts";
import { decodeSession } from "../../models/generate.ts";
import { quarot } from "../../models/quarot.ts";
import { prng } from "../../core/prng.ts";
import { testGpu } from "../kernels/_gpu.ts";
import { LLAMA_LINEARS, type LlamaModel } from "../../models/model.ts";
import {
  type ActivationQuant,
  fakeQuantizeActivations,
} from "../../quantizers/activation_quant.ts";

function withActQuant(model: LlamaModel, spec: ActivationQuant): LlamaModel {
  const actQuant = Object.fromEntries(LLAMA_LINEARS.map((n) => [n, spec]));
  return { ...model, layers: model.layers.map((l) => ({ ...l, actQuant })) };
}

/** x·Wᵀ for one row. */
function matvec(x: Float32Array, w: { shape: readonly number[]; data: Float32Array }) {
  const [out, inp] = [w.shape[0]!, w.shape[1]!];
  return Float32Array.from({ length: out }, (_, o) => {
    let s = 0;
    for (let i = 0; i < inp; i++) s += x[i]! * w.data[o * inp + i]!;
    return s;
  });
}

function norm(x: Float32Array, g: Float32Array, eps: number): Float32Array {
  const rms = Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length + eps);
  return x.map((v, i) => (v / rms) * g[i]!);
}

/**
 * The logits of a one-token sequence by hand: with one position, attention
 * returns v (each query head reads its key/value head), so rotary embeddings
 * do not matter. Every linear multiplies its fake-quantized input.
 */
function oneTokenLogits(model: LlamaModel, id: number, spec: ActivationQuant): Float32Array {
  const { dim, nHeads, nKvHeads, normEps: eps } = model.config;
  const hd = dim / nHeads;
  const q = (x: Float32Array) => fakeQuantizeActivations(x, 1, spec);
  let x = Float32Array.from(model.tokenEmbedding.data.slice(id * dim, (id + 1) * dim));
  for (const l of model.layers) {
    const v = matvec(q(norm(x, l.attnNorm, eps)), l.wv);
    const a = new Float32Array(nHeads * hd);
    for (let h = 0; h < nHeads; h++) {
      const kh = Math.floor(h / (nHeads / nKvHeads));
      a.set(v.subarray(kh * hd, (kh + 1) * hd), h * hd);
    }
    const o = matvec(q(a), l.wo);
    const y = x.map((xi, i) => xi + o[i]!);
    const g = q(norm(y, l.ffnNorm, eps));
    const u1 = matvec(g, l.w1), u3 = matvec(g, l.w3);
    const u = u1.map((z, i) => (z / (1 + Math.exp(-z))) * u3[i]!);
    const d = matvec(q(u), l.w2);
    x = y.map((yi, i) => yi + d[i]!);
  }
  return matvec(norm(x, model.finalNorm, eps), model.classifier as never);
}

const specs: ActivationQuant[] = [
  { format: "int8" },
  { format: "int4" },
  { format: "fp8" },
  { format: "mxfp4" },
  { format: "nvfp4" },
  { format: "int8", granularity: "tensor", absMax: 2 },
];

Deno.test("llamaForward() with quantized activations equals a hand-computed one-token forward", () => {
  const model = syntheticModel({}, 3);
  for (const spec of specs) {
    const want = oneTokenLogits(model, 5, spec);
    const got = llamaForward(withActQuant(model, spec), [5]);
    assertClose(got, want, { atol: 1e-4, rtol: 1e-4, message: JSON.stringify(spec) });
  }
  // and the float forward differs from the 4-bit one by more than the tolerance
  const float = llamaForward(model, [5]);
  const int4 = llamaForward(withActQuant(model, { format: "int4" }), [5]);
  assert(float.some((v, i) => Math.abs(v - int4[i]!) > 1e-2));
});

Deno.test("llamaForward() quantizes activations per token: a prefix's logits do not change", () => {
  const model = withActQuant(syntheticModel({}, 4), { format: "int4" });
  const long = llamaForward(model, [3, 9, 1, 7]);
  const short = llamaForward(model, [3, 9]);
  assertClose(long.subarray(0, short.length), short, { atol: 1e-5, rtol: 1e-5 });
});

Deno.test("the WebGPU forward refuses mismatched fused inputs, naming them", async () => {
  const model = syntheticModel({}, 5);
  // wq, wk and wv are one product on the GPU: their inputs must be quantized alike
  const layers = model.layers.map((l) => ({ ...l, actQuant: { wq: { format: "int8" as const } } }));
  const mismatched = { ...model, layers };
  await assert.rejects(
    () => llamaForwardGpu(mismatched, [1, 2], { backend: "webgpu" }),
    /different activation quantizations of wq, wk, wv \('actQuant' of layer 0.*backend "cpu"/,
  );
  // kept columns outside the input are refused as on the CPU
  const outside = withActQuant(model, {
    format: "int4",
    outliers: { columns: [40], format: "int8" },
  });
  if (await testGpu()) {
    await assert.rejects(
      () => llamaForwardGpu(outside, [1, 2], { backend: "webgpu" }),
      /'outliers.columns' must be distinct integers in \[0, 32\): found 40/,
    );
  }
  // "auto" runs them on the CPU
  const auto = await llamaForwardGpu(mismatched, [1, 2], { backend: "auto" });
  assertClose(auto, llamaForward(mismatched, [1, 2]), { atol: 0, rtol: 0 });
});

const GPU_SPECS: ActivationQuant[] = [
  { format: "int8" },
  { format: "int4" },
  { format: "fp8" },
  { format: "int8", granularity: "tensor", absMax: 2 },
  { format: "fp8", granularity: "tensor", absMax: 3 },
  { format: "int4", outliers: { columns: [1, 7, 30], format: "int8" } },
  { format: "int4", outliers: { columns: [0, 31], format: "fp8" } },
  { format: "mxfp4" },
  { format: "nvfp4" },
  { format: "nvfp4", granularity: "tensor", absMax: 3 },
];

Deno.test("the WebGPU forward with quantized activations gives the CPU forward's logits", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const model = syntheticModel({}, 6, 0.35);
  const tokens = [3, 9, 1, 7, 20, 11];
  const float = llamaForward(model, tokens);
  for (const spec of GPU_SPECS) {
    const quantized = withActQuant(model, spec);
    const want = llamaForward(quantized, tokens);
    const got = await llamaForwardGpu(quantized, tokens, { backend: "webgpu" });
    assertClose(got, want, { atol: 1e-5, rtol: 1e-4, message: JSON.stringify(spec) });
    // the quantization is applied: the float logits are farther away than the tolerance
    assert(float.some((v, i) => Math.abs(v - got[i]!) > 1e-3), JSON.stringify(spec));
  }
});

Deno.test("GPU perplexity with W4A4-style int4 activations equals the CPU perplexity", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const model = withActQuant(syntheticModel({}, 7, 0.35), { format: "int4" });
  const rng = prng(3);
  const stream = Array.from({ length: 40 }, () => rng.int(model.config.vocabSize));
  const cpu = perplexity(model, stream, { seqLen: 16 });
  const onGpu = await perplexityGpu(model, stream, { seqLen: 16, backend: "webgpu" });
  assert.equal(onGpu.tokens, cpu.tokens);
  assertClose(onGpu.nll, cpu.nll, { atol: 0, rtol: 1e-5 });
});

Deno.test("the WebGPU decode session and calibration runner refuse mismatched fused inputs by name", async () => {
  const model = syntheticModel({}, 8);
  // w1 and w3 are one product on the GPU: their inputs must be quantized alike
  const layers = model.layers.map((l) => ({ ...l, actQuant: { w1: { format: "int4" as const } } }));
  const mismatched = { ...model, layers };
  await assert.rejects(
    () => decodeSession(mismatched, { backend: "webgpu", maxTokens: 8 }),
    /different activation quantizations of w1, w3 \('actQuant' of layer 0/,
  );
  await assert.rejects(
    () => llamaCompressible(mismatched).calibrationRunner!([[1, 2, 3]], { backend: "webgpu" }),
    /different activation quantizations of w1, w3 \('actQuant' of layer 0/,
  );
  const gpu = await testGpu();
  if (!gpu) return;
  assert.throws(
    () => llamaCalibrationRunner(gpu, mismatched, [[1, 2, 3]]),
    /Cannot calibrate on the GPU: the model has different activation quantizations of w1, w3/,
  );
});

Deno.test("the WebGPU forward runs QuaRot's online Hadamard before w2, with and without int4 activations", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const model = syntheticModel({ hiddenDim: 48 }, 9, 0.35);
  const rotated = quarot(model, { seed: 1, onlineHadamard: true });
  assert(rotated.layers[0]!.onlineHadamard);
  const tokens = [4, 8, 15, 16, 23];
  for (const m of [rotated, withActQuant(rotated, { format: "int4" })]) {
    const got = await llamaForwardGpu(m, tokens, { backend: "webgpu" });
    assertClose(got, llamaForward(m, tokens), { atol: 1e-5, rtol: 1e-4 });
  }
  // the rotation leaves the float logits as they were
  const float = await llamaForwardGpu(rotated, tokens, { backend: "webgpu" });
  assertClose(float, llamaForward(model, tokens), { atol: 1e-4, rtol: 1e-4 });
  const bad = {
    ...rotated,
    layers: rotated.layers.map((l) => ({ ...l, onlineHadamard: { n: 16, seed: 1 } })),
  };
  await assert.rejects(
    () => llamaForwardGpu(bad, tokens, { backend: "webgpu" }),
    /'onlineHadamard.n' must be w2's input width 48: current value is 16/,
  );
});
