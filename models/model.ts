/**
 * The Llama model as plain data: a configuration and float32 weights, all
 * matrices row-major [out, in]. Loaders (llama2.c, Hugging Face) produce it;
 * the forward pass, the perplexity evaluation and the pipeline adapter read it.
 * Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { asFloat32 } from "../core/convert.ts";
import type { PackedLinear } from "./formats/packed_linear.ts";
import type { ActivationQuant } from "../quantizers/activation_quant.ts";
import type { KvCacheQuant } from "../quantizers/kv_cache_quant.ts";

/**
 * How the rotary frequencies are derived from θ (Hugging Face's `rope_type`):
 * `default` fᵢ = θ^(−2i/headDim); `linear` divides every frequency by
 * `factor` (position interpolation); `llama3` divides the low frequencies
 * (wavelength above originalMaxPositions/lowFreqFactor) by `factor`, keeps the
 * high ones (below originalMaxPositions/highFreqFactor) and interpolates
 * smoothly between (Llama 3.1's scheme).
 */
export type RopeScaling =
  | { readonly type: "default" }
  | { readonly type: "linear"; readonly factor: number }
  | {
    readonly type: "llama3";
    readonly factor: number;
    readonly lowFreqFactor: number;
    readonly highFreqFactor: number;
    readonly originalMaxPositions: number;
  };

/** The Hugging Face families whose decoder this model covers. */
export type ModelFamily = "llama" | "mistral" | "qwen2" | "qwen3";

/**
 * Architecture hyper-parameters of a Llama-style decoder (Llama 2/3, Mistral,
 * Qwen2/2.5, Qwen3 differ only in the optional fields).
 */
export interface LlamaConfig {
  /** Model (residual stream) width. */
  readonly dim: number;
  /** Width of the SwiGLU feed-forward layer. */
  readonly hiddenDim: number;
  /** Number of transformer blocks. */
  readonly nLayers: number;
  /** Attention (query) heads. */
  readonly nHeads: number;
  /** Key/value heads (grouped-query attention when fewer than `nHeads`). */
  readonly nKvHeads: number;
  /** Vocabulary size. */
  readonly vocabSize: number;
  /** Longest context the model was trained for. */
  readonly seqLen: number;
  /** Rotary embedding base θ. */
  readonly ropeTheta: number;
  /** RMSNorm epsilon. */
  readonly normEps: number;
  /** Whether the classifier shares the token embedding matrix. */
  readonly sharedClassifier: boolean;
  /** Width of one attention head. @default dim / nHeads */
  readonly headDim?: number;
  /** Rotary frequency scheme. @default { type: "default" } */
  readonly rope?: RopeScaling;
  /** q, k and v projections have biases (Qwen2). @default false */
  readonly qkvBias?: boolean;
  /** RMSNorm of each query and key head before the rotation (Qwen3). @default false */
  readonly qkNorm?: boolean;
  /**
   * Attention window of the checkpoint (Mistral's `sliding_window`): the forward
   * passes refuse longer sequences, where the window would change the result.
   * @default no window
   */
  readonly slidingWindow?: number;
  /** The family the model was read as (for writing it back). @default "llama" */
  readonly family?: ModelFamily;
}

/** The names of the seven linear layers of a Llama block, in forward order. */
export const LLAMA_LINEARS = ["wq", "wk", "wv", "wo", "w1", "w3", "w2"] as const;

/** One linear layer's name within a block. */
export type LlamaLinear = (typeof LLAMA_LINEARS)[number];

/** A block linear as stored, and the row order the forward pass uses. */
export interface StoredLinear {
  /**
   * The weight [out, in] as stored: a dense tensor, or a quantized
   * checkpoint's packed tensors (GPTQ, compressed-tensors pack-quantized).
   */
  readonly weight: Tensor<WeightDType> | PackedLinear;
  /**
   * Stored row of each row in the forward pass's layout (the rotary
   * permutation of q and k); the identity when absent.
   */
  readonly rowOrder?: Int32Array;
}

/**
 * Key under which a lazily loaded layer keeps its linears as stored. It is
 * not enumerable, so a copy of the layer (`{ ...layer, wq }`) does not carry
 * it and is read through its float32 fields; the CPU forward pass multiplies
 * by the stored weights directly, widening rows in chunks into a reused
 * buffer, so a forward over a lazily loaded model leaves no widened block
 * behind.
 */
export const STORED_LINEARS: unique symbol = Symbol("llmcompress.storedLinears");

/** Weights of one transformer block. */
export interface LlamaLayer {
  /** RMSNorm weight before attention, [dim]. */
  readonly attnNorm: Float32Array;
  /** Query projection, [qDim, dim] (qDim = nHeads·headDim). */
  readonly wq: Tensor<"f32">;
  /** Key projection, [kvDim, dim]. */
  readonly wk: Tensor<"f32">;
  /** Value projection, [kvDim, dim]. */
  readonly wv: Tensor<"f32">;
  /** Attention output projection, [dim, qDim]. */
  readonly wo: Tensor<"f32">;
  /** RMSNorm weight before the feed-forward layer, [dim]. */
  readonly ffnNorm: Float32Array;
  /** Gate projection, [hidden, dim]. */
  readonly w1: Tensor<"f32">;
  /** Down projection, [dim, hidden]. */
  readonly w2: Tensor<"f32">;
  /** Up projection, [hidden, dim]. */
  readonly w3: Tensor<"f32">;
  /** Query bias, [qDim] (when `config.qkvBias`). */
  readonly bq?: Float32Array;
  /** Key bias, [kvDim] (when `config.qkvBias`). */
  readonly bk?: Float32Array;
  /** Value bias, [kvDim] (when `config.qkvBias`). */
  readonly bv?: Float32Array;
  /** RMSNorm weight of each query head, [headDim] (when `config.qkNorm`). */
  readonly qNorm?: Float32Array;
  /** RMSNorm weight of each key head, [headDim] (when `config.qkNorm`). */
  readonly kNorm?: Float32Array;
  /**
   * Activation quantization at the inputs of linears: the CPU forward pass
   * fake-quantizes (quantize → dequantize in float32) a linear's input
   * before its matmul (see `quantizers/activation_quant.ts`). The WebGPU
   * forward pass (`llamaSession`, perplexity), the decode session and the
   * calibration runner run every format, static scales and QUIK's kept
   * columns, where linears that share an input (wq, wk, wv; w1, w3) have
   * the same settings (see `webgpuForwardFeature`).
   */
  readonly actQuant?: Readonly<Partial<Record<LlamaLinear, ActivationQuant>>>;
  /**
   * A seeded randomized Hadamard applied to w2's input in the forward pass
   * (QuaRot's online Hadamard; w2 then holds W2·H). The CPU and every
   * WebGPU pass (forward, decode session, calibration runner).
   */
  readonly onlineHadamard?: OnlineHadamard;
  /**
   * A seeded randomized Hadamard of the head width applied to every query
   * and key head after the rotary embedding (QuaRot's online rotation of the
   * keys; q·kᵀ is unchanged, the keys spread their outliers). The CPU and
   * every WebGPU pass.
   */
  readonly qkHadamard?: OnlineHadamard;
  /**
   * KV cache quantization: the CPU forward pass fake-quantizes the keys
   * (after the rotary embedding and `qkHadamard`) and the values, one group
   * per token per key/value head, before attention reads them (see
   * `quantizers/kv_cache_quant.ts`). The CPU and every WebGPU pass (the decode
   * session's cache holds the quantized values).
   */
  readonly kvQuant?: KvCacheQuant;
  /** The linears as stored, on a lazily loaded layer (see {@linkcode STORED_LINEARS}). */
  readonly [STORED_LINEARS]?: Readonly<Record<LlamaLinear, StoredLinear>>;
}

/**
 * An online rotation, as data: the forward pass rebuilds Q =
 * `randomHadamard(n, { seed, fallback: "kronecker" })` and multiplies the
 * input rows by it (x ↦ x·Q).
 */
export interface OnlineHadamard {
  /** The order (w2's input width; the head width for `qkHadamard`). */
  readonly n: number;
  /** The seed of the random signs. */
  readonly seed: number;
}

/** What a WebGPU pass runs of the features {@linkcode cpuOnlyFeature} lists. */
export interface GpuFeatures {
  /**
   * Describes what the pass cannot run of a layer's `actQuant` (null: all of
   * it). Absent: the pass runs no activation quantization.
   */
  readonly actQuant?: (layer: LlamaLayer, i: number) => string | null;
  /** Whether the pass runs the online Hadamard before w2 (`onlineHadamard`). @default false */
  readonly onlineHadamard?: boolean;
  /** Whether the pass runs KV cache quantization (`kvQuant`). @default false */
  readonly kvQuant?: boolean;
  /** Whether the pass runs the query/key Hadamard (`qkHadamard`). @default false */
  readonly qkHadamard?: boolean;
}

/**
 * What in a model only the CPU forward pass runs (activation quantization,
 * an online Hadamard, KV cache quantization), or null: of a WebGPU pass that
 * runs some of them (`gpu`), only what it does not.
 *
 * @param model The model.
 * @param gpu What the WebGPU pass runs. @default nothing of them
 * @returns A description naming the layer and the field, or null.
 */
export function cpuOnlyFeature(model: LlamaModel, gpu: GpuFeatures = {}): string | null {
  for (const [i, layer] of model.layers.entries()) {
    if (layer.actQuant && Object.keys(layer.actQuant).length > 0) {
      const issue = gpu.actQuant
        ? gpu.actQuant(layer, i)
        : `activation quantization ('actQuant' of layer ${i})`;
      if (issue !== null) return issue;
    }
    if (layer.onlineHadamard && !gpu.onlineHadamard) {
      return `an online Hadamard ('onlineHadamard' of layer ${i})`;
    }
    if (layer.kvQuant && !gpu.kvQuant) return `KV cache quantization ('kvQuant' of layer ${i})`;
    if (layer.qkHadamard && !gpu.qkHadamard) {
      return `an online Hadamard of queries and keys ('qkHadamard' of layer ${i})`;
    }
  }
  return null;
}

/**
 * A layer's vectors (norms and biases) and activation settings, not its linears: reading them does
 * not widen a lazily loaded layer (see `loadHfLlama`), as a copy of the
 * whole layer (`{ ...layer }`) would.
 *
 * @param layer The layer.
 * @returns Its norms and the biases and head norms it has.
 */
export function layerVectors(layer: LlamaLayer): Omit<LlamaLayer, LlamaLinear> {
  const { attnNorm, ffnNorm, bq, bk, bv, qNorm, kNorm, actQuant, onlineHadamard } = layer;
  const { qkHadamard, kvQuant } = layer;
  return {
    attnNorm,
    ffnNorm,
    ...(actQuant ? { actQuant } : {}),
    ...(onlineHadamard ? { onlineHadamard } : {}),
    ...(qkHadamard ? { qkHadamard } : {}),
    ...(kvQuant ? { kvQuant } : {}),
    ...(bq ? { bq } : {}),
    ...(bk ? { bk } : {}),
    ...(bv ? { bv } : {}),
    ...(qNorm ? { qNorm } : {}),
    ...(kNorm ? { kNorm } : {}),
  };
}

/**
 * Storage types of the weights a model keeps as read: checkpoints stay in
 * their stored dtype and are widened to float32 where the math needs them.
 */
export type WeightDType = "f32" | "f16" | "bf16";

/**
 * A weight as float32: the tensor itself when it is stored so, else a
 * widened copy.
 *
 * @param t The weight.
 * @returns The float32 weight.
 */
export function f32Weight(t: Tensor<WeightDType>): Tensor<"f32"> {
  return t.dtype === "f32"
    ? t as Tensor<"f32">
    : { dtype: "f32", shape: t.shape, data: asFloat32(t) };
}

/** A Llama model: configuration and weights. */
export interface LlamaModel {
  /** Hyper-parameters. */
  readonly config: LlamaConfig;
  /** Token embedding, [vocab, dim], in its stored dtype (rows are widened as they are looked up). */
  readonly tokenEmbedding: Tensor<WeightDType>;
  /** Transformer blocks. */
  readonly layers: readonly LlamaLayer[];
  /** Final RMSNorm weight, [dim]. */
  readonly finalNorm: Float32Array;
  /**
   * Classifier, [vocab, dim], in its stored dtype (widened in chunks of rows as
   * it is applied); the same object as `tokenEmbedding` when shared.
   */
  readonly classifier: Tensor<WeightDType>;
}

/**
 * Head width, query width and key/value width of a configuration.
 *
 * @param config The configuration.
 * @returns `{ headDim, qDim, kvDim }`: qDim = nHeads·headDim, kvDim = nKvHeads·headDim.
 */
export function llamaDims(
  config: LlamaConfig,
): { headDim: number; qDim: number; kvDim: number } {
  const headDim = config.headDim ?? config.dim / config.nHeads;
  return { headDim, qDim: headDim * config.nHeads, kvDim: headDim * config.nKvHeads };
}

/**
 * The shape [out, in] of every linear of a block, from the configuration (so
 * that a lazily loaded layer's linears need not be read for it).
 *
 * @param config The configuration.
 * @returns The shapes by linear.
 */
export function llamaLinearShapes(
  config: LlamaConfig,
): Record<LlamaLinear, readonly [number, number]> {
  const { dim, hiddenDim } = config;
  const { qDim, kvDim } = llamaDims(config);
  return {
    wq: [qDim, dim],
    wk: [kvDim, dim],
    wv: [kvDim, dim],
    wo: [dim, qDim],
    w1: [hiddenDim, dim],
    w2: [dim, hiddenDim],
    w3: [hiddenDim, dim],
  };
}

/**
 * Checks a configuration's consistency (integer head width, even for rotary
 * pairs; query heads a multiple of key/value heads).
 *
 * @param config The configuration.
 * @param source Where it came from, for error messages (a file name).
 * @throws {RangeError} naming the source and the problem.
 */
export function validateLlamaConfig(config: LlamaConfig, source: string): void {
  const ints: [string, number][] = [
    ["dim", config.dim],
    ["hiddenDim", config.hiddenDim],
    ["nLayers", config.nLayers],
    ["nHeads", config.nHeads],
    ["nKvHeads", config.nKvHeads],
    ["vocabSize", config.vocabSize],
    ["seqLen", config.seqLen],
  ];
  for (const [name, v] of ints) {
    if (!Number.isSafeInteger(v) || v <= 0 || v > 1 << 24) {
      throw new RangeError(
        `${source}: '${name}' must be a positive integer: current value is ${v}`,
      );
    }
  }
  const headDim = config.headDim ?? config.dim / config.nHeads;
  if (!Number.isSafeInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) {
    throw new RangeError(
      config.headDim === undefined
        ? `${source}: dim ${config.dim} must split into ${config.nHeads} heads of an even width`
        : `${source}: 'headDim' must be a positive even integer: current value is ${headDim}`,
    );
  }
  if (config.nHeads % config.nKvHeads !== 0) {
    throw new RangeError(
      `${source}: nHeads ${config.nHeads} must be a multiple of nKvHeads ${config.nKvHeads}`,
    );
  }
  const rope = config.rope ?? { type: "default" };
  if (rope.type !== "default") {
    const factors: [string, number][] = [["factor", rope.factor]];
    if (rope.type === "llama3") {
      factors.push(
        ["lowFreqFactor", rope.lowFreqFactor],
        ["highFreqFactor", rope.highFreqFactor],
        ["originalMaxPositions", rope.originalMaxPositions],
      );
      if (!(rope.highFreqFactor > rope.lowFreqFactor)) {
        throw new RangeError(
          `${source}: llama3 rope needs highFreqFactor > lowFreqFactor: current values are ` +
            `${rope.highFreqFactor} and ${rope.lowFreqFactor}`,
        );
      }
    } else if (rope.type !== "linear") {
      throw new RangeError(
        `${source}: rope type ${JSON.stringify((rope as { type: unknown }).type)} is not supported`,
      );
    }
    for (const [name, v] of factors) {
      if (!(typeof v === "number" && v > 0 && Number.isFinite(v))) {
        throw new RangeError(
          `${source}: rope '${name}' must be a positive number: current value is ${v}`,
        );
      }
    }
  }
  if (!(config.ropeTheta > 0) || !(config.normEps > 0)) {
    throw new RangeError(
      `${source}: ropeTheta and normEps must be positive: current values are ` +
        `${config.ropeTheta} and ${config.normEps}`,
    );
  }
}

/**
 * Number of parameters (the shared classifier counted once).
 *
 * @param config The configuration.
 * @returns The parameter count.
 */
export function llamaParameterCount(config: LlamaConfig): number {
  const { dim, hiddenDim, nLayers, vocabSize } = config;
  const { headDim, qDim, kvDim } = llamaDims(config);
  const perLayer = 2 * dim + 2 * qDim * dim + 2 * kvDim * dim + 3 * dim * hiddenDim +
    (config.qkvBias ? qDim + 2 * kvDim : 0) + (config.qkNorm ? 2 * headDim : 0);
  return vocabSize * dim * (config.sharedClassifier ? 1 : 2) + nLayers * perLayer + dim;
}

/**
 * A copy of a model whose block linears are replaced (the others shared).
 *
 * @param model The model.
 * @param replace For each layer index, the linears to replace.
 * @returns A new model record (the argument is not modified).
 */
export function withLayerWeights(
  model: LlamaModel,
  replace: readonly Partial<Record<LlamaLinear, Tensor<"f32">>>[],
): LlamaModel {
  const layers = model.layers.map((layer, i) => ({ ...layer, ...(replace[i] ?? {}) }));
  return { ...model, layers };
}
