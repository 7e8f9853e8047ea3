import assert from "node:assert/strict";
import { syntheticModel } from "./_synthetic_model.ts";
import { roundHalfEven } from "../../core/uniform_grid.ts";
import {
  linearForward,
  llamaEmbed,
  llamaForward,
  llamaHead,
  rmsNorm,
} from "../../models/forward.ts";
import { llamaForwardGpu, perplexityGpu, webgpuForwardFeature } from "../../models/forward_gpu.ts";
import { perplexity } from "../../models/perplexity.ts";
import { prng } from "../../core/prng.ts";
import { testGpu } from "../kernels/_gpu.ts";
import { quarot } from "../../models/quarot.ts";
import { llamaDims, type LlamaLayer, type LlamaModel } from "../../models/model.ts";
import { meanKvCacheBits, withKvCacheQuant } from "../../models/with_kv_cache_quant.ts";
import type { KvCacheQuant } from "../../quantizers/kv_cache_quant.ts";
import { relError } from "../_helpers.ts";

const f = Math.fround;

/** Asymmetric b-bit fake quantization of each group of n, written out for the test. */
function asymGroups(x: Float32Array, n: number, bits: number, clip: number): Float32Array {
  const M = 2 ** bits - 1, out = new Float32Array(x.length);
  for (let o = 0; o < x.length; o += n) {
    const g = x.subarray(o, o + n);
    const lo = f(Math.min(0, ...g) * clip), hi = f(Math.max(0, ...g) * clip);
    const s = f((hi - lo) / M), z = roundHalfEven(f(-lo / s));
    for (let i = 0; i < n; i++) {
      const q = Math.min(M, Math.max(0, roundHalfEven(f(g[i]! / s)) + z));
      out[o + i] = f(s * (q - z));
    }
  }
  return out;
}

/** Rotary embedding of interleaved pairs, θ^(−2i/hd), at position `pos`, in place on one row. */
function rope(row: Float32Array, pos: number, hd: number, theta: number): void {
  for (let j = 0; j < row.length; j += 2) {
    const i = (j % hd) / 2, angle = pos * theta ** (-2 * i / hd);
    const a = row[j]!, b = row[j + 1]!;
    row[j] = a * Math.cos(angle) - b * Math.sin(angle);
    row[j + 1] = a * Math.sin(angle) + b * Math.cos(angle);
  }
}

/** One block by hand for T ≤ a few tokens, with the keys and values quantized when `kv` is set. */
function blockByHand(
  model: LlamaModel,
  layer: LlamaLayer,
  x: Float32Array,
  T: number,
  kv: { bits: number; clip: number } | null,
): Float32Array {
  const c = model.config, { headDim: hd, qDim, kvDim } = llamaDims(c);
  const h = rmsNorm(x, T, layer.attnNorm, c.normEps);
  const q = linearForward(h, T, layer.wq), k0 = linearForward(h, T, layer.wk);
  const v0 = linearForward(h, T, layer.wv);
  for (let t = 0; t < T; t++) {
    rope(q.subarray(t * qDim, (t + 1) * qDim), t, hd, c.ropeTheta);
    rope(k0.subarray(t * kvDim, (t + 1) * kvDim), t, hd, c.ropeTheta);
  }
  const k = kv ? asymGroups(k0, hd, kv.bits, kv.clip) : k0;
  const v = kv ? asymGroups(v0, hd, kv.bits, kv.clip) : v0;
  const a = new Float32Array(T * qDim), group = c.nHeads / c.nKvHeads;
  for (let t = 0; t < T; t++) {
    for (let head = 0; head < c.nHeads; head++) {
      const kh = Math.floor(head / group), scores: number[] = [];
      for (let u = 0; u <= t; u++) {
        let d = 0;
        for (let i = 0; i < hd; i++) {
          d += q[t * qDim + head * hd + i]! * k[u * kvDim + kh * hd + i]!;
        }
        scores.push(d / Math.sqrt(hd));
      }
      const m = Math.max(...scores), e = scores.map((s) => Math.exp(s - m));
      const sum = e.reduce((p, w) => p + w, 0);
      for (let i = 0; i < hd; i++) {
        let acc = 0;
        for (let u = 0; u <= t; u++) acc += e[u]! * v[u * kvDim + kh * hd + i]!;
        a[t * qDim + head * hd + i] = acc / sum;
      }
    }
  }
  const o = linearForward(a, T, layer.wo);
  const y = x.map((xi, i) => xi + o[i]!);
  const g = rmsNorm(y, T, layer.ffnNorm, c.normEps);
  const u1 = linearForward(g, T, layer.w1), u3 = linearForward(g, T, layer.w3);
  const m = u1.map((z, i) => z / (1 + Math.exp(-z)) * u3[i]!);
  const d = linearForward(m, T, layer.w2);
  return y.map((yi, i) => yi + d[i]!);
}

function logitsByHand(
  model: LlamaModel,
  ids: number[],
  kv: { bits: number; clip: number } | null,
): Float32Array {
  let x = llamaEmbed(model, ids);
  for (const layer of model.layers) x = blockByHand(model, layer, x, ids.length, kv);
  return llamaHead(model, x, ids.length);
}

Deno.test("the forward pass with a 4-bit KV cache equals a hand-computed one- and two-token reference", () => {
  const model = syntheticModel({ nLayers: 1 }, 31, 0.5);
  const spec: KvCacheQuant = { format: "int4", asymmetric: true, clipRatio: 0.9 };
  const kv = withKvCacheQuant(model, spec);
  for (const ids of [[7], [7, 19]]) {
    const want = logitsByHand(model, ids, { bits: 4, clip: 0.9 });
    const got = llamaForward(kv, ids);
    assert(relError(got, want) < 1e-5, `${ids.length} tokens: error ${relError(got, want)}`);
    // the quantization is visible: the float cache gives other logits
    const float = logitsByHand(model, ids, null);
    assert(
      relError(float, want) > 1e-3,
      `${ids.length} tokens: the KV quantization changed nothing`,
    );
    assert(relError(llamaForward(model, ids), float) < 1e-5);
  }
  // int8 with the full range
  const kv8 = withKvCacheQuant(model, { format: "int8", asymmetric: true });
  const want8 = logitsByHand(model, [7, 19], { bits: 8, clip: 1 });
  assert(relError(llamaForward(kv8, [7, 19]), want8) < 1e-5);
  assert.equal(meanKvCacheBits(kv), 4 + 36 / 8);
  assert.equal(meanKvCacheBits(model), 32);
});

Deno.test("the online Hadamard of queries and keys alone leaves the float logits unchanged", () => {
  const ids = [3, 9, 1, 7, 22, 5, 13, 2];
  for (const [shape, seed] of [[{}, 32], [{ qkvBias: true, qkNorm: true }, 33]] as const) {
    const model = syntheticModel(shape, seed, 0.3);
    const want = llamaForward(model, ids);
    const { headDim } = llamaDims(model.config);
    const qkOnly: LlamaModel = {
      ...model,
      layers: model.layers.map((l) => ({ ...l, qkHadamard: { n: headDim, seed: 5 } })),
    };
    assert(relError(llamaForward(qkOnly, ids), want) < 1e-5);
    const r = quarot(model, { seed: 2, qkHadamard: true });
    assert.deepEqual(r.layers[1]!.qkHadamard, { n: headDim, seed: 5 });
    assert(relError(llamaForward(r, ids), want) < 1e-5);
    assert.equal(quarot(model, { seed: 2 }).layers[0]!.qkHadamard, undefined);
    // with a quantized cache, the rotation changes which keys are quantized
    const spec: KvCacheQuant = { format: "int4", asymmetric: true };
    const a = llamaForward(withKvCacheQuant(model, spec), ids);
    const b = llamaForward(withKvCacheQuant(qkOnly, spec), ids);
    assert(relError(a, b) > 1e-4);
  }
});

Deno.test("KV cache options that are wrong are errors naming them", () => {
  const model = syntheticModel({}, 34);
  assert.throws(
    () => withKvCacheQuant(model, { format: "int2" as "int4" }),
    /'format' must be one of .*current value is int2/,
  );
  assert.throws(
    () => withKvCacheQuant(model, { format: "fp8", asymmetric: true }),
    /'asymmetric' needs format int8 or int4/,
  );
  assert.throws(
    () => withKvCacheQuant(model, { format: "int4", asymmetric: true, clipRatio: 2 }),
    /'clipRatio' must be a number in \(0, 1\]: current value is 2/,
  );
  assert.throws(
    () => quarot(model, { qkHadamard: "yes" as unknown as boolean }),
    /'qkHadamard' must be a boolean/,
  );
  const bad: LlamaModel = {
    ...model,
    layers: model.layers.map((l) => ({ ...l, qkHadamard: { n: 16, seed: 0 } })),
  };
  assert.throws(() => llamaForward(bad, [1, 2]), /'qkHadamard.n' must be the head width 8/);
});

Deno.test("the WebGPU forward with a quantized KV cache and the query/key Hadamard gives the CPU forward's logits", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const ids = [3, 9, 1, 7, 22, 5, 13];
  for (
    const [shape, seed] of [[{}, 36], [{ qkvBias: true, qkNorm: true, nKvHeads: 4 }, 37]] as const
  ) {
    const model = syntheticModel(shape, seed, 0.35);
    const float = llamaForward(model, ids);
    const rotated = quarot(model, { seed: 4, qkHadamard: true });
    const models: [string, LlamaModel][] = [
      ["qkHadamard", rotated],
      ["kv4", withKvCacheQuant(model, { format: "int4", asymmetric: true, clipRatio: 0.95 })],
      [
        "quarot-kv4",
        withKvCacheQuant(rotated, { format: "int4", asymmetric: true, clipRatio: 0.95 }),
      ],
      ["kv8", withKvCacheQuant(model, { format: "int8", asymmetric: true })],
      ["kv-int4-symmetric", withKvCacheQuant(rotated, { format: "int4" })],
      ["kv-nvfp4", withKvCacheQuant(model, { format: "nvfp4" })],
    ];
    for (const [what, m] of models) {
      const want = llamaForward(m, ids);
      const got = await llamaForwardGpu(m, ids, { backend: "webgpu" });
      const e = relError(got, want);
      assert(e < 1e-4, `${what} (seed ${seed}): relative error ${e}`);
      if (what !== "qkHadamard") {
        assert(relError(got, float) > 1e-3, `${what}: the KV quantization changed nothing`);
      }
    }
    assert.equal(webgpuForwardFeature(models[2]![1]), null);
  }
  const model = syntheticModel({}, 38, 0.35);
  const kv = withKvCacheQuant(quarot(model, { seed: 4, qkHadamard: true }), {
    format: "int4",
    asymmetric: true,
    clipRatio: 0.95,
  });
  const rng = prng(6);
  const stream = Array.from({ length: 40 }, () => rng.int(model.config.vocabSize));
  const cpu = perplexity(kv, stream, { seqLen: 16 });
  const onGpu = await perplexityGpu(kv, stream, { seqLen: 16, backend: "webgpu" });
  assert.equal(onGpu.tokens, cpu.tokens);
  assert(Math.abs(onGpu.nll - cpu.nll) < 1e-5 * cpu.nll, `${onGpu.nll} against ${cpu.nll}`);
  const bad: LlamaModel = {
    ...model,
    layers: model.layers.map((l) => ({ ...l, qkHadamard: { n: 16, seed: 0 } })),
  };
  await assert.rejects(
    () => llamaForwardGpu(bad, [1, 2], { backend: "webgpu" }),
    /'qkHadamard.n' must be the head width 8: current value is 16/,
  );
});
