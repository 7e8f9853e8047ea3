/**
 * The Llama model as a pipeline `CompressibleModel`: blocks `layers.i` with
 * linears wq, wk, wv, wo, w1, w3, w2 compressed true-sequentially in the
 * groups [wq, wk, wv] → [wo] → [w1, w3] → [w2], and the classifier head
 * `output`. Web-standard only.
 *
 * @module
 */

import { modelBackend } from "./_model_backend.ts";
import { WEBGPU_LAYER_QUANT } from "./_gpu_layer_quant.ts";
import { tensor } from "../core/tensor.ts";
import { openLlamaCalibrationRunner } from "./calibration_gpu.ts";
import type { Tensor } from "../core/tensor.ts";
import type { CompressibleBlock, CompressibleModel } from "../pipeline/model.ts";
import { llamaBlockPartial, llamaEmbed, rmsNorm } from "./forward.ts";
import type { LlamaBlockCache } from "./forward.ts";
import { f32Weight, LLAMA_LINEARS } from "./model.ts";
import type { LlamaLayer, LlamaLinear, LlamaModel } from "./model.ts";

/** True-sequential groups of a Llama block. */
export const LLAMA_GROUPS: readonly (readonly LlamaLinear[])[] = [
  ["wq", "wk", "wv"],
  ["wo"],
  ["w1", "w3"],
  ["w2"],
];

/** Module name of the classifier. */
export const LLAMA_HEAD = "output";

/**
 * Wraps a Llama model for `compressModel`.
 *
 * @param model The model (not modified).
 * @returns The pipeline view of it.
 */
export function llamaCompressible(model: LlamaModel): CompressibleModel {
  const { config } = model;
  const blocks: CompressibleBlock[] = model.layers.map((layer, i) => {
    // Getters: a lazily loaded layer is widened only when the pipeline reads it.
    const linears: Record<string, Tensor<"f32">> = {};
    for (const n of LLAMA_LINEARS) {
      Object.defineProperty(linears, n, { get: () => layer[n], enumerable: true });
    }
    // Intermediate results per input, reused while the weights they depend on are unchanged.
    const caches = new WeakMap<Tensor<"f32">, LlamaBlockCache>();
    return {
      name: `layers.${i}`,
      linears,
      groups: LLAMA_GROUPS,
      forward(x, weights, options = {}) {
        const T = x.shape[0]!;
        const merged: LlamaLayer = { ...layer, ...(weights as Partial<LlamaLayer>) };
        const wrapped = new Map<Float32Array, Tensor<"f32">>();
        const { onInput, stopAfter } = options;
        const hook = onInput
          ? (name: LlamaLinear, input: Float32Array, rows: number) => {
            let t = wrapped.get(input);
            if (!t) wrapped.set(input, t = tensor("f32", [rows, input.length / rows], input));
            onInput(name, t);
          }
          : undefined;
        let cache = caches.get(x);
        if (!cache) caches.set(x, cache = {});
        const y = llamaBlockPartial(config, merged, x.data, T, hook, stopAfter, cache);
        return y ? tensor("f32", [T, config.dim], y) : null;
      },
    };
  });
  return {
    blocks,
    head: {
      name: LLAMA_HEAD,
      get weight() {
        return f32Weight(model.classifier);
      },
      input: (x) =>
        tensor("f32", x.shape, rmsNorm(x.data, x.shape[0]!, model.finalNorm, config.normEps)),
    },
    embed: (tokens) => tensor("f32", [tokens.length, config.dim], llamaEmbed(model, tokens)),
    async calibrationRunner(sequences, { backend, memoryBudget, prefetch }) {
      const gpu = await modelBackend(model, backend, "the calibration passes", WEBGPU_LAYER_QUANT);
      return gpu === null ? null : await openLlamaCalibrationRunner(gpu, model, sequences, {
        ...(memoryBudget !== undefined ? { memoryBudget } : {}),
        ...(prefetch !== undefined ? { prefetch } : {}),
      });
    },
  };
}

/**
 * A copy of the model with compressed weights in place (modules absent from
 * the map keep theirs). A compressed `output` unties a shared classifier.
 *
 * @param model The model (not modified).
 * @param modules Dense weights by module name (`layers.i.wq`, ..., `output`).
 * @returns The new model.
 * @throws {RangeError} for an unknown module name or a shape mismatch.
 */
export function withCompressedWeights(
  model: LlamaModel,
  modules: ReadonlyMap<string, { readonly weight: Tensor<"f32"> }>,
): LlamaModel {
  const layers = model.layers.map((l) => ({ ...l }));
  let classifier = model.classifier;
  for (const [name, { weight }] of modules) {
    let target: { readonly shape: readonly number[] } | undefined;
    const m = /^layers\.(\d+)\.(\w+)$/.exec(name);
    if (name === LLAMA_HEAD) target = model.classifier;
    else if (m && layers[+m[1]!] && (LLAMA_LINEARS as readonly string[]).includes(m[2]!)) {
      target = layers[+m[1]!]![m[2] as LlamaLinear];
    }
    if (!target) throw new RangeError(`Unknown Llama module '${name}'`);
    if (target.shape.join() !== weight.shape.join()) {
      throw new RangeError(
        `Module '${name}' has shape [${target.shape}], the compressed weight [${weight.shape}]`,
      );
    }
    if (name === LLAMA_HEAD) classifier = weight;
    else layers[+m![1]!]![m![2] as LlamaLinear] = weight;
  }
  return { ...model, layers, classifier };
}
