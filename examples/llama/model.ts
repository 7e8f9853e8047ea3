/**
 * The Llama model as plain data: a configuration and float32 weights, all
 * matrices row-major [out, in]. Loaders (llama2.c, Hugging Face) produce it;
 * the forward pass, the perplexity evaluation and the pipeline adapter read it.
 * Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../../core/tensor.ts";

/** Architecture hyper-parameters of a Llama model. */
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
}

/** The names of the seven linear layers of a Llama block, in forward order. */
export const LLAMA_LINEARS = ["wq", "wk", "wv", "wo", "w1", "w3", "w2"] as const;

/** One linear layer's name within a block. */
export type LlamaLinear = (typeof LLAMA_LINEARS)[number];

/** Weights of one transformer block. */
export interface LlamaLayer {
  /** RMSNorm weight before attention, [dim]. */
  readonly attnNorm: Float32Array;
  /** Query projection, [dim, dim]. */
  readonly wq: Tensor<"f32">;
  /** Key projection, [kvDim, dim]. */
  readonly wk: Tensor<"f32">;
  /** Value projection, [kvDim, dim]. */
  readonly wv: Tensor<"f32">;
  /** Attention output projection, [dim, dim]. */
  readonly wo: Tensor<"f32">;
  /** RMSNorm weight before the feed-forward layer, [dim]. */
  readonly ffnNorm: Float32Array;
  /** Gate projection, [hidden, dim]. */
  readonly w1: Tensor<"f32">;
  /** Down projection, [dim, hidden]. */
  readonly w2: Tensor<"f32">;
  /** Up projection, [hidden, dim]. */
  readonly w3: Tensor<"f32">;
}

/** A Llama model: configuration and weights. */
export interface LlamaModel {
  /** Hyper-parameters. */
  readonly config: LlamaConfig;
  /** Token embedding, [vocab, dim]. */
  readonly tokenEmbedding: Tensor<"f32">;
  /** Transformer blocks. */
  readonly layers: readonly LlamaLayer[];
  /** Final RMSNorm weight, [dim]. */
  readonly finalNorm: Float32Array;
  /** Classifier, [vocab, dim]; the same object as `tokenEmbedding` when shared. */
  readonly classifier: Tensor<"f32">;
}

/**
 * Head width and key/value width of a configuration.
 *
 * @param config The configuration.
 * @returns `{ headDim, kvDim }`.
 */
export function llamaDims(config: LlamaConfig): { headDim: number; kvDim: number } {
  const headDim = config.dim / config.nHeads;
  return { headDim, kvDim: headDim * config.nKvHeads };
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
  if (config.dim % config.nHeads !== 0 || (config.dim / config.nHeads) % 2 !== 0) {
    throw new RangeError(
      `${source}: dim ${config.dim} must split into ${config.nHeads} heads of an even width`,
    );
  }
  if (config.nHeads % config.nKvHeads !== 0) {
    throw new RangeError(
      `${source}: nHeads ${config.nHeads} must be a multiple of nKvHeads ${config.nKvHeads}`,
    );
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
  const { kvDim } = llamaDims(config);
  const perLayer = 2 * dim + 2 * dim * dim + 2 * kvDim * dim + 3 * dim * hiddenDim;
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
