/**
 * One entry point for a model on disk: {@linkcode loadModel} reads a Hugging
 * Face folder (Llama, Mistral, Qwen2, Qwen3; see `hf_config.ts`) or a
 * llama2.c `.bin` file and returns a {@linkcode CausalLM}: its normalized
 * configuration, logits and perplexity on the CPU or WebGPU, and the blocks
 * the layer-wise pipeline compresses (it is a `CompressibleModel`). Uses the
 * `Deno` namespace (file system).
 *
 * @module
 */

import type { Backend } from "../kernels/backend.ts";
import type { CompressibleModel } from "../pipeline/model.ts";
import { llamaCompressible } from "./compressible.ts";
import { checkTokenIds } from "./forward.ts";
import { llamaForwardGpu, perplexityGpu } from "./forward_gpu.ts";
import { loadHfLlama, type LoadHfOptions } from "./hf.ts";
import { loadLlama2c } from "./llama2c.ts";
import type { LlamaConfig, LlamaModel } from "./model.ts";
import type { PerplexityOptions, PerplexityResult } from "./perplexity.ts";

/** Options of {@linkcode CausalLM.logits}. */
export interface LogitsOptions {
  /**
   * Where the forward pass runs: `"webgpu"` on any adapter (throws without
   * one), `"auto"` on a hardware adapter and else on the CPU, `"cpu"`.
   * @default "auto"
   */
  backend?: Backend;
}

/** Options of {@linkcode CausalLM.perplexity}. */
export interface CausalLMPerplexityOptions extends PerplexityOptions, LogitsOptions {}

/** A causal language model: configuration, forward pass, and the pipeline's view of it. */
export interface CausalLM extends CompressibleModel {
  /** The normalized configuration. */
  readonly config: LlamaConfig;
  /** The weights (block weights widened one block at a time when read). */
  readonly model: LlamaModel;
  /** Where it was read from. */
  readonly source: string;
  /**
   * Next-token logits at every position of one sequence, float32 compute. On
   * WebGPU each call uploads the weights once for its one pass; for many
   * passes keep a session (`llamaSession(lm.model, { backend })`). The linears
   * of a GPTQ or compressed-tensors pack-quantized folder stay packed: on
   * WebGPU they run through the low-bit `qmatmul` (2, 3, 4 or 8 bits; other
   * widths and sparse-bitmask linears are widened to float32), on the CPU
   * through the formats' CPU reference (`dequantizePackedRows`).
   *
   * @param ids Token ids (each in [0, vocabSize)).
   * @param options Backend.
   * @returns Logits [ids.length × vocab], row-major.
   * @throws {RangeError} for an empty sequence or an id outside the vocabulary (naming it and its position).
   */
  logits(ids: ArrayLike<number>, options?: LogitsOptions): Promise<Float32Array>;
  /**
   * Perplexity of a token stream over windows of `seqLen` tokens (on WebGPU,
   * one session for all the windows; packed linears run as in {@linkcode CausalLM.logits}).
   *
   * @param ids Token ids (documents concatenated).
   * @param options Window length, cap, progress, backend.
   * @returns Perplexity, mean NLL and the count of scored tokens.
   */
  perplexity(
    ids: ArrayLike<number>,
    options?: CausalLMPerplexityOptions,
  ): Promise<PerplexityResult>;
}

/** Options of {@linkcode loadModel}. */
export type LoadModelOptions = LoadHfOptions;

/**
 * A {@linkcode CausalLM} over a model already in memory.
 *
 * @param model The model.
 * @param source Where it came from (for messages).
 * @returns The causal LM.
 */
export function causalLM(model: LlamaModel, source = "(in memory)"): CausalLM {
  const { blocks, head, embed, calibrationRunner } = llamaCompressible(model);
  return {
    config: model.config,
    model,
    source,
    blocks,
    ...(head ? { head } : {}),
    embed,
    ...(calibrationRunner ? { calibrationRunner } : {}),
    logits(ids, options = {}) {
      if (ids.length < 1) {
        return Promise.reject(new RangeError("Cannot compute logits of an empty token sequence"));
      }
      try {
        checkTokenIds(ids, model.config.vocabSize);
      } catch (e) {
        return Promise.reject(e);
      }
      return llamaForwardGpu(model, ids, options);
    },
    perplexity(ids, options = {}) {
      return perplexityGpu(model, ids, options);
    },
  };
}

/**
 * Loads a model: a Hugging Face folder (`config.json` and safetensors, one
 * file or shards through `model.safetensors.index.json`; tensors stay in their
 * stored dtype) or a llama2.c `.bin` checkpoint.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadModel } from "./causal_lm.ts";
 * const lm = await loadModel(new URL("../tests/fixtures/hf/models/qwen3", import.meta.url).pathname);
 * const logits = await lm.logits([1, 2, 3], { backend: "cpu" });
 * assert.equal(logits.length, 3 * lm.config.vocabSize);
 * ```
 * @param path The folder or the `.bin` file.
 * @param options When to widen the block weights (Hugging Face folders).
 * @returns The model.
 * @throws {RangeError} naming the path when it is neither, and the loaders'
 *   errors (naming the file, the tensor or the key) for a bad checkpoint.
 */
export async function loadModel(path: string, options: LoadModelOptions = {}): Promise<CausalLM> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    throw new RangeError(`Cannot load a model from ${path}: ${(e as Error).message}`);
  }
  if (info.isDirectory) return causalLM(await loadHfLlama(path, options), path);
  if (info.isFile && path.endsWith(".bin")) return causalLM(await loadLlama2c(path), path);
  throw new RangeError(
    `Cannot load a model from ${path}: expected a Hugging Face folder (config.json and safetensors) ` +
      `or a llama2.c .bin file`,
  );
}
