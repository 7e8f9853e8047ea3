/**
 * QuaRot's rotation of a Llama model, without changing its function: the
 * RMSNorm weights fold into the linears that read them (attention norm into
 * wq, wk, wv; MLP norm into w1, w3; the final norm into the classifier) and
 * become ones, so each norm commutes with an orthogonal Q; the residual
 * stream is rotated by a seeded randomized Hadamard Q of the model's width
 * (x ↦ x·Q): the embedding's rows become E·Q, the linears that read the
 * stream W·Q, those that write it (wo, w2) Qᵀ·W, the classifier C·Q. With
 * `onlineHadamard`, w2 also holds W2·H for a randomized Hadamard H of its
 * input width, and the forward pass multiplies w2's input by H (the layer's
 * `onlineHadamard`). With `headHadamard`, each head's values are rotated
 * by a randomized Hadamard H_h of the head width (wv's rows and bias become
 * H_hᵀ per head) and wo's columns by H_h per query head, which attention
 * passes through (it mixes positions, not channels), so wo reads rotated
 * inputs at no cost. With `qkHadamard`, the forward pass multiplies every
 * query and key head by a randomized Hadamard of the head width after the
 * rotary embedding (the layer's `qkHadamard`; q·kᵀ is unchanged), for a
 * quantized KV cache: the keys are rotated before they are quantized, and
 * the values already are by `headHadamard`. Orders without a Hadamard construction use the
 * Kronecker fallback of `randomHadamard` (see `core/hadamard.ts`).
 * Web-standard only.
 *
 * Left out: QuaRot's online Hadamard across heads before wo (only the
 * per-head part is folded).
 *
 * @see S. Ashkboos et al., "QuaRot: Outlier-Free 4-Bit Inference in Rotated
 * LLMs" (NeurIPS 2024), §4 and Figure 3.
 * @module
 */

import { randomHadamard } from "../core/rotation.ts";
import { type Tensor, tensor, transpose } from "../core/tensor.ts";
import { onlineRotation } from "./_online_hadamard.ts";
import { f32Weight, llamaDims, type LlamaLayer, type LlamaModel } from "./model.ts";

/** Options of {@linkcode quarot}. */
export interface QuarotOptions {
  /** Seed of the residual rotation's signs (the online Hadamard's is seed + 1). @default 0 */
  seed?: number;
  /** Rotate w2's input online by a randomized Hadamard. @default true */
  onlineHadamard?: boolean;
  /** Rotate v and wo's input per head (seed + 2), folded into wv and wo. @default true */
  headHadamard?: boolean;
  /**
   * Rotate every query and key head online after the rotary embedding
   * (seed + 3), for a quantized KV cache (`withKvCacheQuant`). @default false
   */
  qkHadamard?: boolean;
}

const f32 = (t: Tensor): Tensor<"f32"> =>
  t.dtype === "f32"
    ? t as Tensor<"f32">
    : tensor("f32", t.shape, Float32Array.from(t.data as Float64Array));

/** W·diag(g). */
function foldNorm(w: Tensor<"f32">, g: Float32Array): Tensor<"f32"> {
  const cols = w.shape[1]!;
  return tensor("f32", w.shape, w.data.map((v, i) => v * g[i % cols]!));
}

/**
 * The rotated model (norms folded and set to ones, a shared classifier
 * untied; logits unchanged up to float rounding).
 *
 * @example
 * ```ts ignore
 * const rotated = quarot(model, { seed: 0, onlineHadamard: true });
 * ```
 * @param model The model (not modified; lazily loaded weights are widened).
 * @param options Seed and the online Hadamards.
 * @returns The rotated model.
 * @throws {RangeError} for a bad seed.
 */
export function quarot(model: LlamaModel, options: QuarotOptions = {}): LlamaModel {
  const { seed = 0, onlineHadamard = true, headHadamard = true, qkHadamard = false } = options;
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(
      `Cannot rotate as 'seed' must be a non-negative integer: current value is ${seed}`,
    );
  }
  const flags = [
    ["onlineHadamard", onlineHadamard],
    ["headHadamard", headHadamard],
    ["qkHadamard", qkHadamard],
  ];
  for (const [k, v] of flags) {
    if (typeof v !== "boolean") {
      throw new TypeError(`Cannot rotate as '${k}' must be a boolean: current value is ${v}`);
    }
  }
  const { dim, hiddenDim } = model.config;
  const Q = randomHadamard(dim, { seed, fallback: "kronecker" });
  const online = { n: hiddenDim, seed: seed + 1 };
  const H = onlineHadamard ? onlineRotation(online) : null;
  const ones = new Float32Array(dim).fill(1);
  const reads = (w: Tensor<"f32">, g: Float32Array) =>
    f32(Q.applyToRows(foldNorm(w, g), { transpose: true })); // W·diag(g)·Q
  const writes = (w: Tensor<"f32">) => f32(Q.applyToColumns(w, { transpose: true })); // Qᵀ·W
  const { headDim } = llamaDims(model.config);
  const Hh = headHadamard
    ? randomHadamard(headDim, { seed: seed + 2, fallback: "kronecker" })
    : null;
  // X·(I ⊗ H_h) for rows of whole heads: the rows split into heads, each times H_h.
  const perHead = (x: Tensor<"f32">): Tensor<"f32"> => {
    const rows = x.data.length / headDim;
    const r = Hh!.applyToRows(tensor("f32", [rows, headDim], x.data), { transpose: true });
    return tensor("f32", x.shape, f32(r).data);
  };
  const qk = qkHadamard ? { n: headDim, seed: seed + 3 } : null;
  const layers = model.layers.map((layer): LlamaLayer => {
    let w2 = writes(layer.w2);
    if (H) w2 = f32(H.applyToRows(w2, { transpose: true })); // ·H
    let wv = reads(layer.wv, layer.attnNorm), wo = writes(layer.wo), bv = layer.bv;
    if (Hh) {
      wv = transpose(perHead(transpose(wv))); // (I ⊗ H_h)ᵀ·Wv
      wo = perHead(wo); // Wo·(I ⊗ H_h)
      if (bv) bv = perHead(tensor("f32", [bv.length], bv)).data;
    }
    return {
      ...layer,
      attnNorm: ones,
      ffnNorm: ones,
      wq: reads(layer.wq, layer.attnNorm),
      wk: reads(layer.wk, layer.attnNorm),
      wv,
      wo,
      ...(bv ? { bv } : {}),
      w1: reads(layer.w1, layer.ffnNorm),
      w3: reads(layer.w3, layer.ffnNorm),
      w2,
      ...(H ? { onlineHadamard: online } : {}),
      ...(qk ? { qkHadamard: qk } : {}),
    };
  });
  const embedding = f32(Q.applyToRows(f32Weight(model.tokenEmbedding), { transpose: true }));
  const classifier = reads(f32Weight(model.classifier), model.finalNorm);
  return {
    config: { ...model.config, sharedClassifier: false },
    tokenEmbedding: embedding,
    layers,
    finalNorm: ones,
    classifier,
  };
}
