import assert from "node:assert/strict";
import { assertClose } from "../_helpers.ts";
import { syntheticModel } from "./_synthetic_model.ts";
import { llamaForward } from "../../models/forward.ts";
import { llamaForwardGpu } from "../../models/forward_gpu.ts";
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

Deno.test("the WebGPU forward refuses quantized activations, naming the option", async () => {
  const model = withActQuant(syntheticModel({}, 5), { format: "int8" });
  await assert.rejects(
    () => llamaForwardGpu(model, [1, 2], { backend: "webgpu" }),
    /'actQuant' of layer 0.*backend "cpu"/,
  );
  // "auto" runs it on the CPU
  const auto = await llamaForwardGpu(model, [1, 2], { backend: "auto" });
  assertClose(auto, llamaForward(model, [1, 2]), { atol: 0, rtol: 0 });
});
