/**
 * Puts KV cache quantization into a model: every block's keys (after the
 * rotary embedding and any online Hadamard of queries and keys) and values
 * are fake-quantized before attention reads them (`layer.kvQuant`, the CPU
 * and WebGPU forward passes). Web-standard only.
 *
 * @module
 */

import { checkKvCacheQuant, kvCacheBits, type KvCacheQuant } from "../quantizers/kv_cache_quant.ts";
import { llamaDims, type LlamaModel } from "./model.ts";

/**
 * A copy of the model whose blocks quantize their KV cache (the CPU and WebGPU
 * forward passes apply it; rotate the keys first with `quarot(model, { qkHadamard: true })`,
 * as QuaRot does).
 *
 * @example
 * ```ts ignore
 * const rotated = quarot(model, { seed: 0, qkHadamard: true });
 * const kv4 = withKvCacheQuant(rotated, { format: "int4", asymmetric: true, clipRatio: 0.95 });
 * ```
 * @param model The model (not modified).
 * @param spec The format, grid and clipping ratio of the keys and values.
 * @returns The model with `kvQuant` on every layer.
 * @throws {TypeError|RangeError} for an invalid spec, naming the option.
 */
export function withKvCacheQuant(model: LlamaModel, spec: KvCacheQuant): LlamaModel {
  const kvQuant = checkKvCacheQuant(spec);
  return { ...model, layers: model.layers.map((layer) => ({ ...layer, kvQuant })) };
}

/**
 * Mean storage bits per cached key or value element over a model's blocks
 * (a block without KV cache quantization counts 32).
 *
 * @param model The model.
 * @returns Bits per element (32 for a float cache).
 */
export function meanKvCacheBits(model: LlamaModel): number {
  const { headDim } = llamaDims(model.config);
  const n = model.layers.length;
  if (n === 0) return 32;
  let bits = 0;
  for (const layer of model.layers) {
    bits += layer.kvQuant ? kvCacheBits(layer.kvQuant, headDim) : 32;
  }
  return bits / n;
}
