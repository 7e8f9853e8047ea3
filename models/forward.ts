/**
 * The Llama forward pass on the CPU in float32 storage with float64
 * accumulation: RMSNorm, rotary embeddings on interleaved pairs (as llama2.c),
 * grouped-query attention with a causal mask, SwiGLU, tied or untied
 * classifier. Activations are row-major `Float32Array`s [tokens, width].
 * Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { asFloat32 } from "../core/convert.ts";
import { llamaDims } from "./model.ts";
import { type RopeTables, ropeTables } from "./_rope.ts";
import { STORED_LINEARS } from "./model.ts";
import { fakeQuantizeActivations } from "../quantizers/activation_quant.ts";
import { fakeQuantizeKvCache } from "../quantizers/kv_cache_quant.ts";
import { applyOnlineHadamard } from "./_online_hadamard.ts";
import {
  dequantizePackedRows,
  isPackedLinear,
  type PackedLinear,
} from "./formats/packed_linear.ts";
import type {
  LlamaConfig,
  LlamaLayer,
  LlamaLinear,
  LlamaModel,
  RopeScaling,
  WeightDType,
} from "./model.ts";

/**
 * Receives the input of a linear layer during a block's forward pass.
 * `input` is [tokens, in] and must not be modified; the same array is passed
 * for linears that share their input (wq, wk, wv; w1, w3).
 */
export type LinearInputHook = (name: LlamaLinear, input: Float32Array, tokens: number) => void;

/**
 * y = x·Wᵀ for x [T, in] and W [out, in].
 *
 * @param x Input rows.
 * @param T Number of rows.
 * @param w Weight [out, in].
 * @returns y [T, out].
 */
export function linearForward(x: Float32Array, T: number, w: Tensor<"f32">): Float32Array {
  const out = w.shape[0]!, inp = w.shape[1]!;
  if (x.length !== T * inp) {
    throw new RangeError(`linear: input has ${x.length} values, expected ${T}×${inp}`);
  }
  const W = w.data;
  const y = new Float32Array(T * out);
  let t = 0;
  // 4 tokens × 2 outputs per pass: each loaded value feeds several products.
  for (; t + 4 <= T; t += 4) {
    const a0 = t * inp, a1 = a0 + inp, a2 = a1 + inp, a3 = a2 + inp;
    let o = 0;
    for (; o + 2 <= out; o += 2) {
      const wa = o * inp, wb = wa + inp;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0, r0 = 0, r1 = 0, r2 = 0, r3 = 0;
      for (let i = 0; i < inp; i++) {
        const u = W[wa + i]!, v = W[wb + i]!;
        const x0 = x[a0 + i]!, x1 = x[a1 + i]!, x2 = x[a2 + i]!, x3 = x[a3 + i]!;
        s0 += x0 * u;
        s1 += x1 * u;
        s2 += x2 * u;
        s3 += x3 * u;
        r0 += x0 * v;
        r1 += x1 * v;
        r2 += x2 * v;
        r3 += x3 * v;
      }
      const b = t * out + o;
      y[b] = s0;
      y[b + out] = s1;
      y[b + 2 * out] = s2;
      y[b + 3 * out] = s3;
      y[b + 1] = r0;
      y[b + out + 1] = r1;
      y[b + 2 * out + 1] = r2;
      y[b + 3 * out + 1] = r3;
    }
    for (; o < out; o++) {
      const wa = o * inp;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < inp; i++) {
        const u = W[wa + i]!;
        s0 += x[a0 + i]! * u;
        s1 += x[a1 + i]! * u;
        s2 += x[a2 + i]! * u;
        s3 += x[a3 + i]! * u;
      }
      y[t * out + o] = s0;
      y[(t + 1) * out + o] = s1;
      y[(t + 2) * out + o] = s2;
      y[(t + 3) * out + o] = s3;
    }
  }
  for (; t < T; t++) {
    const a = t * inp;
    for (let o = 0; o < out; o++) {
      const wo = o * inp;
      let s = 0;
      for (let i = 0; i < inp; i++) s += x[a + i]! * W[wo + i]!;
      y[t * out + o] = s;
    }
  }
  return y;
}

/**
 * RMSNorm of each row: x / sqrt(mean(x²) + eps) · weight.
 *
 * @param x Rows [T, dim].
 * @param T Number of rows.
 * @param weight Scale [dim].
 * @param eps Epsilon.
 * @returns Normalized rows [T, dim].
 */
export function rmsNorm(
  x: Float32Array,
  T: number,
  weight: Float32Array,
  eps: number,
): Float32Array {
  const dim = weight.length;
  const y = new Float32Array(T * dim);
  for (let t = 0; t < T; t++) {
    const o = t * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[o + i]! * x[o + i]!;
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) y[o + i] = x[o + i]! * inv * weight[i]!;
  }
  return y;
}

const ropeCache = new Map<string, RopeTables>();

/** The rotary tables of at least T positions (at least 1024), cached per head width, θ and scheme. */
function cachedRopeTables(
  headDim: number,
  theta: number,
  scaling: RopeScaling | undefined,
  T: number,
): RopeTables {
  const key = `${headDim}/${theta}/${JSON.stringify(scaling ?? null)}`;
  let c = ropeCache.get(key);
  if (!c || c.cos.length < T * (headDim / 2)) {
    c = ropeTables(headDim, theta, Math.max(T, 1024), scaling);
    ropeCache.set(key, c);
  }
  return c;
}

function applyRope(
  x: Float32Array,
  T: number,
  width: number,
  config: LlamaConfig,
  startPos: number,
): void {
  const { headDim } = llamaDims(config);
  const { cos, sin } = cachedRopeTables(headDim, config.ropeTheta, config.rope, startPos + T);
  const half = headDim / 2;
  for (let t = 0; t < T; t++) {
    const p = (startPos + t) * half;
    for (let j = 0; j < width; j += 2) {
      const i = (j % headDim) / 2;
      const c = cos[p + i]!, s = sin[p + i]!;
      const a = x[t * width + j]!, b = x[t * width + j + 1]!;
      x[t * width + j] = a * c - b * s;
      x[t * width + j + 1] = a * s + b * c;
    }
  }
}

/**
 * Causal grouped-query attention over one sequence (queries and keys already rotated).
 *
 * @param q Queries [T, nHeads·headDim].
 * @param k Keys [T, nKvHeads·headDim].
 * @param v Values [T, nKvHeads·headDim].
 * @param T Sequence length.
 * @param config Head counts.
 * @returns The attention output [T, nHeads·headDim] (heads concatenated).
 * @throws {RangeError} when T exceeds the configuration's sliding window.
 */
export function causalAttention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  T: number,
  config: LlamaConfig,
): Float32Array {
  const { nHeads, nKvHeads } = config;
  const { headDim: hd, qDim: dim, kvDim } = llamaDims(config);
  checkWindow(config, T);
  const group = nHeads / nKvHeads;
  const out = new Float32Array(T * dim);
  const scale = 1 / Math.sqrt(hd);
  const att = new Float64Array(T), att2 = new Float64Array(T);
  const acc = new Float64Array(hd), acc2 = new Float64Array(hd);
  // Per-head contiguous float64 copies keep the inner loops monomorphic and short.
  const K = new Float64Array(T * hd), Vh = new Float64Array(T * hd);
  const Q = new Float64Array(hd), Q2 = new Float64Array(hd);
  for (let kh = 0; kh < nKvHeads; kh++) {
    for (let s = 0; s < T; s++) {
      for (let i = 0; i < hd; i++) {
        K[s * hd + i] = k[s * kvDim + kh * hd + i]!;
        Vh[s * hd + i] = v[s * kvDim + kh * hd + i]!;
      }
    }
    for (let h = kh * group; h < (kh + 1) * group; h++) {
      let t = 0;
      // Two query rows at a time share every load of K and V.
      for (; t + 2 <= T; t += 2) {
        const qa = t * dim + h * hd, qb = qa + dim;
        for (let i = 0; i < hd; i++) {
          Q[i] = q[qa + i]! * scale;
          Q2[i] = q[qb + i]! * scale;
        }
        let maxA = -Infinity, maxB = -Infinity;
        for (let s = 0, ks = 0; s <= t + 1; s++, ks += hd) {
          let da = 0, db = 0;
          for (let i = 0; i < hd; i++) {
            const kv = K[ks + i]!;
            da += Q[i]! * kv;
            db += Q2[i]! * kv;
          }
          att[s] = da;
          att2[s] = db;
          if (s <= t && da > maxA) maxA = da;
          if (db > maxB) maxB = db;
        }
        let sumA = 0, sumB = 0;
        acc.fill(0);
        acc2.fill(0);
        for (let s = 0, vs = 0; s <= t; s++, vs += hd) {
          const ea = Math.exp(att[s]! - maxA), eb = Math.exp(att2[s]! - maxB);
          sumA += ea;
          sumB += eb;
          for (let i = 0; i < hd; i++) {
            const vv = Vh[vs + i]!;
            acc[i] = acc[i]! + ea * vv;
            acc2[i] = acc2[i]! + eb * vv;
          }
        }
        const eb = Math.exp(att2[t + 1]! - maxB), vs = (t + 1) * hd;
        sumB += eb;
        for (let i = 0; i < hd; i++) acc2[i] = acc2[i]! + eb * Vh[vs + i]!;
        const invA = 1 / sumA, invB = 1 / sumB;
        for (let i = 0; i < hd; i++) {
          out[qa + i] = acc[i]! * invA;
          out[qb + i] = acc2[i]! * invB;
        }
      }
      for (; t < T; t++) {
        const qi = t * dim + h * hd;
        for (let i = 0; i < hd; i++) Q[i] = q[qi + i]! * scale;
        let max = -Infinity;
        for (let s = 0, ks = 0; s <= t; s++, ks += hd) {
          let d = 0;
          for (let i = 0; i < hd; i++) d += Q[i]! * K[ks + i]!;
          att[s] = d;
          if (d > max) max = d;
        }
        let sum = 0;
        acc.fill(0);
        for (let s = 0, vs = 0; s <= t; s++, vs += hd) {
          const e = Math.exp(att[s]! - max);
          sum += e;
          for (let i = 0; i < hd; i++) acc[i] = acc[i]! + e * Vh[vs + i]!;
        }
        const inv = 1 / sum;
        for (let i = 0; i < hd; i++) out[qi + i] = acc[i]! * inv;
      }
    }
  }
  return out;
}

/**
 * Refuses a sequence longer than the configuration's sliding window, where
 * the window would change the attention (not implemented).
 *
 * @param config The configuration.
 * @param T Sequence length.
 * @throws {RangeError} naming the window and the length.
 */
export function checkWindow(config: LlamaConfig, T: number): void {
  if (config.slidingWindow !== undefined && T > config.slidingWindow) {
    throw new RangeError(
      `Cannot run a sequence of ${T} tokens: the model's sliding_window is ${config.slidingWindow}, ` +
        `and attention within a window shorter than the sequence is not implemented`,
    );
  }
}

/**
 * Queries, keys and values as attention reads them: after the rotary
 * embedding, every query and key head times the layer's `qkHadamard` (q·kᵀ
 * is unchanged), then the keys and values fake-quantized by its `kvQuant`
 * (one group per token per key/value head), as a quantized KV cache holds
 * them. The arguments are not modified.
 *
 * @param config The model configuration.
 * @param layer The block (its `qkHadamard` and `kvQuant`).
 * @param q Queries after the rotary embedding [T, nHeads·headDim].
 * @param k Keys after the rotary embedding [T, nKvHeads·headDim].
 * @param v Values [T, nKvHeads·headDim].
 * @param T Sequence length.
 * @returns The queries, keys and values attention reads.
 * @throws {RangeError} for a `qkHadamard` whose order is not the head width, or a bad `kvQuant`.
 */
export function attentionInputs(
  config: LlamaConfig,
  layer: Pick<LlamaLayer, "qkHadamard" | "kvQuant">,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  T: number,
): { q: Float32Array; k: Float32Array; v: Float32Array } {
  const { headDim } = llamaDims(config);
  const { qkHadamard, kvQuant } = layer;
  if (qkHadamard) {
    if (qkHadamard.n !== headDim) {
      throw new RangeError(
        `Cannot rotate queries and keys as 'qkHadamard.n' must be the head width ${headDim}: ` +
          `current value is ${qkHadamard.n}`,
      );
    }
    q = applyOnlineHadamard(q, q.length / headDim, qkHadamard);
    k = applyOnlineHadamard(k, k.length / headDim, qkHadamard);
  }
  if (kvQuant) {
    const groups = T * config.nKvHeads;
    k = fakeQuantizeKvCache(k, groups, kvQuant);
    v = fakeQuantizeKvCache(v, groups, kvQuant);
  }
  return { q, k, v };
}

/** Adds a bias [width] to every row of x [T, width] in place. */
function addBias(x: Float32Array, bias: Float32Array | undefined): void {
  if (!bias) return;
  const w = bias.length;
  for (let i = 0; i < x.length; i++) x[i] = x[i]! + bias[i % w]!;
}

/** RMSNorm of every head (slices of headDim) of x [T, width] in place, weight [headDim]. */
function headNorm(x: Float32Array, weight: Float32Array | undefined, eps: number): void {
  if (weight) x.set(rmsNorm(x, x.length / weight.length, weight, eps));
}

/**
 * One transformer block over one sequence: x + Attn(norm(x)), then + FFN(norm(·)).
 * A linear with an activation quantization (`layer.actQuant`) multiplies its
 * fake-quantized input; the hook receives the input before quantization (and
 * w2's after the layer's online Hadamard, if any).
 *
 * @param config The model configuration.
 * @param layer The block's weights.
 * @param x Residual stream [T, dim] (not modified).
 * @param T Sequence length.
 * @param onLinearInput Called with each linear's input, in forward order.
 * @returns The block's output [T, dim].
 */
export function llamaBlockForward(
  config: LlamaConfig,
  layer: LlamaLayer,
  x: Float32Array,
  T: number,
  onLinearInput?: LinearInputHook,
): Float32Array {
  return llamaBlockPartial(config, layer, x, T, onLinearInput)!;
}

/**
 * Intermediate results of one block on one input, reused by later calls on
 * the same input while the weights they depend on are the same objects (the
 * pipeline re-runs a block after compressing each group of linears).
 */
export interface LlamaBlockCache {
  /** Attention output, valid for these wq, wk, wv. */
  attn?: { wq: unknown; wk: unknown; wv: unknown; a: Float32Array };
  /** Residual after attention and its norm, valid for this attention output and wo. */
  resid?: { a: Float32Array; wo: unknown; y: Float32Array; g: Float32Array };
  /** SwiGLU activation, valid for this norm output and w1, w3. */
  ffn?: { g: Float32Array; w1: unknown; w3: unknown; u: Float32Array };
}

/**
 * {@linkcode llamaBlockForward} that may stop early: once the inputs of all
 * linears in `stopAfter` were delivered to the hook, it returns null.
 *
 * @param config The model configuration.
 * @param layer The block's weights.
 * @param x Residual stream [T, dim] (not modified).
 * @param T Sequence length.
 * @param onLinearInput Called with each linear's input, in forward order.
 * @param stopAfter Linears whose inputs are all that is needed.
 * @param cache Intermediate results of earlier calls on the same `x` (read and updated).
 * @returns The block's output [T, dim], or null after an early stop.
 */
export function llamaBlockPartial(
  config: LlamaConfig,
  layer: LlamaLayer,
  x: Float32Array,
  T: number,
  onLinearInput?: LinearInputHook,
  stopAfter?: ReadonlySet<string>,
  cache?: LlamaBlockCache,
): Float32Array | null {
  const { normEps } = config;
  const { qDim, kvDim } = llamaDims(config);
  const need = stopAfter && stopAfter.size > 0 ? new Set(stopAfter) : null;
  const deliver = (name: LlamaLinear, input: Float32Array): boolean => {
    onLinearInput?.(name, input, T);
    if (!need) return false;
    need.delete(name);
    return need.size === 0;
  };
  const c = cache ?? {};
  // A lazily loaded layer multiplies by its stored weights (no widened block is made).
  const stored = layer[STORED_LINEARS];
  const linear = (name: LlamaLinear, x: Float32Array): Float32Array => {
    // Quantized activations: the linear multiplies the fake-quantized input.
    const aq = layer.actQuant?.[name];
    const input = aq ? fakeQuantizeActivations(x, T, aq) : x;
    const s = stored?.[name];
    return s
      ? storedLinearForward(input, T, s.weight, s.rowOrder)
      : linearForward(input, T, layer[name]);
  };
  const wantQkv = onLinearInput !== undefined || need !== null;
  let a: Float32Array;
  if (
    !wantQkv && c.attn && c.attn.wq === layer.wq && c.attn.wk === layer.wk && c.attn.wv === layer.wv
  ) {
    a = c.attn.a;
  } else {
    const h = rmsNorm(x, T, layer.attnNorm, normEps);
    if (deliver("wq", h) || deliver("wk", h) || deliver("wv", h)) return null;
    if (c.attn && c.attn.wq === layer.wq && c.attn.wk === layer.wk && c.attn.wv === layer.wv) {
      a = c.attn.a;
    } else {
      let q = linear("wq", h);
      let k = linear("wk", h);
      let v = linear("wv", h);
      addBias(q, layer.bq);
      addBias(k, layer.bk);
      addBias(v, layer.bv);
      headNorm(q, layer.qNorm, normEps);
      headNorm(k, layer.kNorm, normEps);
      applyRope(q, T, qDim, config, 0);
      applyRope(k, T, kvDim, config, 0);
      ({ q, k, v } = attentionInputs(config, layer, q, k, v, T));
      a = causalAttention(q, k, v, T, config);
      if (cache) cache.attn = { wq: layer.wq, wk: layer.wk, wv: layer.wv, a };
    }
  }
  if (deliver("wo", a)) return null;
  let y: Float32Array, g: Float32Array;
  if (c.resid && c.resid.a === a && c.resid.wo === layer.wo) {
    ({ y, g } = c.resid);
  } else {
    const o = linear("wo", a);
    y = new Float32Array(x.length);
    for (let i = 0; i < y.length; i++) y[i] = x[i]! + o[i]!;
    g = rmsNorm(y, T, layer.ffnNorm, normEps);
    if (cache) cache.resid = { a, wo: layer.wo, y, g };
  }
  if (deliver("w1", g) || deliver("w3", g)) return null;
  let u1: Float32Array;
  if (c.ffn && c.ffn.g === g && c.ffn.w1 === layer.w1 && c.ffn.w3 === layer.w3) {
    u1 = c.ffn.u;
  } else {
    u1 = linear("w1", g);
    const u3 = linear("w3", g);
    for (let i = 0; i < u1.length; i++) {
      const z = u1[i]!;
      u1[i] = (z / (1 + Math.exp(-z))) * u3[i]!;
    }
    // QuaRot's online Hadamard: w2 holds W2·Q and multiplies u·Q.
    if (layer.onlineHadamard) u1 = applyOnlineHadamard(u1, T, layer.onlineHadamard);
    if (cache) cache.ffn = { g, w1: layer.w1, w3: layer.w3, u: u1 };
  }
  if (deliver("w2", u1)) return null;
  const d = linear("w2", u1);
  const out = new Float32Array(y.length);
  for (let i = 0; i < out.length; i++) out[i] = y[i]! + d[i]!;
  return out;
}

/**
 * Checks that every token id is an integer in [0, vocabSize).
 *
 * @param tokens Token ids.
 * @param vocabSize Vocabulary size.
 * @throws {RangeError} naming the first id outside the vocabulary and its position.
 */
export function checkTokenIds(tokens: ArrayLike<number>, vocabSize: number): void {
  for (let t = 0; t < tokens.length; t++) {
    const id = tokens[t]!;
    if (!(Number.isInteger(id) && id >= 0 && id < vocabSize)) {
      throw new RangeError(
        `Token ${id} at position ${t} is outside the vocabulary of ${vocabSize}`,
      );
    }
  }
}

/**
 * Token embeddings of a sequence.
 *
 * @param model The model.
 * @param tokens Token ids.
 * @returns x [T, dim].
 * @throws {RangeError} for an id outside the vocabulary.
 */
export function llamaEmbed(model: LlamaModel, tokens: ArrayLike<number>): Float32Array {
  const { dim, vocabSize } = model.config;
  checkTokenIds(tokens, vocabSize);
  const x = new Float32Array(tokens.length * dim);
  const e = model.tokenEmbedding;
  for (let t = 0; t < tokens.length; t++) {
    const id = tokens[t]!;
    const row = e.data.subarray(id * dim, (id + 1) * dim);
    x.set(
      e.dtype === "f32" ? row as Float32Array : asFloat32({ ...e, shape: [dim], data: row }),
      t * dim,
    );
  }
  return x;
}

/** Values widened at a time by {@linkcode storedLinearForward} (16 MB of float32). */
const WIDEN_VALUES = 1 << 22;

/**
 * y = x·Wᵀ for a weight kept in its stored dtype: float32 weights in their
 * own order directly, others widened (and reordered) a chunk of rows at a
 * time into one scratch buffer, so that a bf16 weight never exists whole in
 * float32 and nothing but that buffer is left behind.
 *
 * Packed quantized weights are dequantized a chunk of rows at a time the same
 * way ({@linkcode packedLinearForward}).
 *
 * @param x Input rows [T, in].
 * @param T Number of rows.
 * @param w Weight [out, in], f32, f16 or bf16, or packed.
 * @param rowOrder Stored row of each output row (identity when absent).
 * @returns y [T, out].
 */
export function storedLinearForward(
  x: Float32Array,
  T: number,
  w: Tensor<WeightDType> | PackedLinear,
  rowOrder?: Int32Array,
): Float32Array {
  if (isPackedLinear(w)) return packedLinearForward(x, T, w, rowOrder);
  if (w.dtype === "f32" && !rowOrder) return linearForward(x, T, w as Tensor<"f32">);
  const out = w.shape[0]!, inp = w.shape[1]!;
  const y = new Float32Array(T * out);
  const chunk = Math.max(1, Math.min(out, Math.floor(WIDEN_VALUES / inp)));
  const scratch = new Float32Array(chunk * inp);
  const bits = new Uint32Array(scratch.buffer);
  const src = w.data;
  for (let r0 = 0; r0 < out; r0 += chunk) {
    const r1 = Math.min(out, r0 + chunk);
    for (let r = r0; r < r1; r++) {
      const s = (rowOrder ? rowOrder[r]! : r) * inp, d = (r - r0) * inp;
      if (w.dtype === "bf16") {
        for (let i = 0; i < inp; i++) bits[d + i] = (src[s + i]! << 16) >>> 0;
      } else {
        scratch.set((src as Float32Array | Float16Array).subarray(s, s + inp), d);
      }
    }
    const rows = r1 - r0;
    const part = linearForward(x, T, {
      dtype: "f32",
      shape: [rows, inp],
      data: scratch.subarray(0, rows * inp),
    });
    for (let t = 0; t < T; t++) y.set(part.subarray(t * rows, (t + 1) * rows), t * out + r0);
  }
  return y;
}

/**
 * y = x·Ŵᵀ for a packed quantized weight, the CPU reference: stored rows are
 * dequantized ({@linkcode dequantizePackedRows}) 16 MB of float32 at a time
 * into one scratch buffer and multiplied there, so the weight never exists
 * whole in float32. Each output is the same sum, in the same order, as
 * {@linkcode linearForward} over the dequantized weight: the logits of a packed
 * folder equal those of its dequantized float32 folder.
 *
 * @param x Input rows [T, in].
 * @param T Number of rows.
 * @param w The packed weight, [out, in] as stored.
 * @param rowOrder Stored row of each output row (identity when absent).
 * @returns y [T, out].
 */
export function packedLinearForward(
  x: Float32Array,
  T: number,
  w: PackedLinear,
  rowOrder?: Int32Array,
): Float32Array {
  const [out, inp] = w.shape;
  if (x.length !== T * inp) {
    throw new RangeError(`linear: input has ${x.length} values, expected ${T}×${inp}`);
  }
  // Output position of each stored row (stored rows are dequantized in order).
  let position: Int32Array | null = null;
  if (rowOrder) {
    position = new Int32Array(out);
    for (let r = 0; r < out; r++) position[rowOrder[r]!] = r;
  }
  const y = new Float32Array(T * out);
  const chunk = Math.max(1, Math.min(out, Math.floor(WIDEN_VALUES / inp)));
  const scratch = new Float32Array(chunk * inp);
  for (let s0 = 0; s0 < out; s0 += chunk) {
    const s1 = Math.min(out, s0 + chunk), rows = s1 - s0;
    dequantizePackedRows(w, s0, s1, scratch);
    const part = linearForward(x, T, {
      dtype: "f32",
      shape: [rows, inp],
      data: scratch.subarray(0, rows * inp),
    });
    for (let t = 0; t < T; t++) {
      if (!position) y.set(part.subarray(t * rows, (t + 1) * rows), t * out + s0);
      else for (let i = 0; i < rows; i++) y[t * out + position[s0 + i]!] = part[t * rows + i]!;
    }
  }
  return y;
}

/**
 * Final norm and classifier.
 *
 * @param model The model.
 * @param x Residual stream [T, dim].
 * @param T Sequence length.
 * @returns Logits [T, vocab].
 */
export function llamaHead(model: LlamaModel, x: Float32Array, T: number): Float32Array {
  const h = rmsNorm(x, T, model.finalNorm, model.config.normEps);
  return storedLinearForward(h, T, model.classifier);
}

/**
 * Logits of every position of a sequence (positions start at 0).
 *
 * @example
 * ```ts ignore
 * import { loadLlama2c } from "./llama2c.ts";
 * import { llamaForward } from "./forward.ts";
 * const model = await loadLlama2c("stories260K.bin");
 * const logits = llamaForward(model, [1, 403, 407]); // [3, 512]
 * ```
 * @param model The model.
 * @param tokens Token ids (at most `config.seqLen` is the trained range, not enforced).
 * @returns Logits [T, vocab], row-major.
 */
export function llamaForward(model: LlamaModel, tokens: ArrayLike<number>): Float32Array {
  const T = tokens.length;
  let x = llamaEmbed(model, tokens);
  for (const layer of model.layers) x = llamaBlockForward(model.config, layer, x, T);
  return llamaHead(model, x, T);
}
