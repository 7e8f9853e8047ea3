/**
 * Seeded random Llama models of any small shape, for tests.
 *
 * @module
 */

import { prng } from "../../core/prng.ts";
import { tensor } from "../../core/tensor.ts";
import type { LlamaConfig, LlamaModel } from "../../models/model.ts";
import { llamaDims } from "../../models/model.ts";

/**
 * A seeded random model (untied classifier) with the given shape, with q/k/v
 * biases and q/k head norms when the shape asks for them. `qkScale` scales the
 * wq and wk entries: at 1, attention scores have a spread of about dim, so
 * the softmax is nearly one-hot and ties between scores amplify float32
 * rounding; about 2/√dim keeps it smooth.
 */
export function syntheticModel(shape: Partial<LlamaConfig>, seed: number, qkScale = 1): LlamaModel {
  const config: LlamaConfig = {
    dim: 32,
    hiddenDim: 48,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    vocabSize: 40,
    seqLen: 128,
    ropeTheta: 10000,
    normEps: 1e-5,
    sharedClassifier: false,
    ...shape,
  };
  const rng = prng(seed);
  const { dim, hiddenDim: H, vocabSize: V } = config;
  const { headDim, qDim, kvDim } = llamaDims(config);
  const mat = (rows: number, cols: number, scale = 1 / Math.sqrt(cols)) =>
    tensor(
      "f32",
      [rows, cols],
      Float32Array.from({ length: rows * cols }, () => scale * rng.normal()),
    );
  const norm = (n = dim) => Float32Array.from({ length: n }, () => 1 + 0.2 * rng.normal());
  const vec = (n: number) => Float32Array.from({ length: n }, () => 0.5 * rng.normal());
  // The optional weights are drawn after the others: models without them stay as they were.
  const layers = Array.from({ length: config.nLayers }, () => ({
    attnNorm: norm(),
    wq: mat(qDim, dim, qkScale),
    wk: mat(kvDim, dim, qkScale),
    wv: mat(kvDim, dim),
    wo: mat(dim, qDim),
    ffnNorm: norm(),
    w1: mat(H, dim),
    w2: mat(dim, H),
    w3: mat(H, dim),
    ...(config.qkvBias ? { bq: vec(qDim), bk: vec(kvDim), bv: vec(kvDim) } : {}),
    ...(config.qkNorm ? { qNorm: norm(headDim), kNorm: norm(headDim) } : {}),
  }));
  return {
    config,
    tokenEmbedding: mat(V, dim, 1),
    layers,
    finalNorm: norm(),
    classifier: mat(V, dim),
  };
}
