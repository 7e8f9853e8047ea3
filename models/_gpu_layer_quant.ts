/**
 * Library-internal: what the WebGPU passes (the forward pass, the decode
 * session, the calibration runner) run of a layer's activation settings,
 * checked and uploaded once: the activation quantization of each product's
 * input (`_gpu_act_quant.ts`), QuaRot's online Hadamard before w2 (its dense
 * Qᵀ, shared by the layers with the same one), and the query/key rotation and
 * KV cache quantization (`_gpu_attention_inputs.ts`). Web-standard only.
 *
 * @module
 */

import { type Gpu, type GpuBatch, uploadBuffer } from "../kernels/backend.ts";
import {
  actQuantBuffers,
  type BlockActQuant,
  checkBlockActQuant,
  gpuActQuantIssue,
  uploadBlockActQuant,
} from "./_gpu_act_quant.ts";
import {
  attentionInputBuffers,
  checkAttentionInputs,
  encodeAttentionInputs,
  type GpuAttentionInputs,
  uploadAttentionInputs,
} from "./_gpu_attention_inputs.ts";
import type { BlockProduct } from "./_gpu_block.ts";
import { onlineRotation } from "./_online_hadamard.ts";
import { type GpuFeatures, type LlamaConfig, llamaDims, type LlamaLayer } from "./model.ts";

/**
 * What the WebGPU passes run of the CPU-only features: all of them, except
 * different activation quantizations of linears that share a product.
 */
export const WEBGPU_LAYER_QUANT: GpuFeatures = {
  actQuant: gpuActQuantIssue,
  onlineHadamard: true,
  kvQuant: true,
  qkHadamard: true,
};

/** A layer's activation settings on the GPU. */
export interface GpuLayerQuant {
  /** The activation quantization of each product's input. */
  readonly actQuant: BlockActQuant;
  /** Qᵀ [hidden, hidden] of the online Hadamard before w2 (shared by layers), or null. */
  readonly hadamard: GPUBuffer | null;
  /** The query/key rotation and KV cache quantization. */
  readonly attention: GpuAttentionInputs;
}

/** The input width of each block product. */
export function productWidths(config: LlamaConfig): Record<BlockProduct, number> {
  const { dim, hiddenDim } = config;
  return { qkv: dim, o: llamaDims(config).qDim, gateUp: dim, down: hiddenDim };
}

/**
 * Checks a layer's activation settings as the CPU forward pass does.
 *
 * @param config The configuration.
 * @param layer The layer.
 * @param i Its index, for the messages.
 * @throws {TypeError|RangeError} naming the layer and the option.
 */
export function checkLayerQuant(config: LlamaConfig, layer: LlamaLayer, i: number): void {
  const { hiddenDim } = config;
  checkBlockActQuant(layer, productWidths(config));
  checkAttentionInputs(config, layer, i);
  if (layer.onlineHadamard && layer.onlineHadamard.n !== hiddenDim) {
    throw new RangeError(
      `Cannot upload layer ${i}: 'onlineHadamard.n' must be w2's input width ${hiddenDim}: ` +
        `current value is ${layer.onlineHadamard.n}`,
    );
  }
}

/**
 * Uploads the layers' activation settings (checked by {@linkcode checkLayerQuant}).
 *
 * @param gpu The GPU.
 * @param config The configuration.
 * @param layers The layers.
 * @param label Buffer label prefix.
 * @returns One plan per layer.
 */
export function uploadLayerQuant(
  gpu: Gpu,
  config: LlamaConfig,
  layers: readonly LlamaLayer[],
  label: string,
): GpuLayerQuant[] {
  const widths = productWidths(config);
  const attention = uploadAttentionInputs(gpu, layers, label);
  const rotations = new Map<string, GPUBuffer>();
  return layers.map((l, i) => {
    let hadamard: GPUBuffer | null = null;
    if (l.onlineHadamard) {
      const { n, seed } = l.onlineHadamard;
      const key = `${n}/${seed}`;
      hadamard = rotations.get(key) ?? null;
      if (hadamard === null) {
        const q = onlineRotation(l.onlineHadamard).dense(); // [n, n]
        const t = new Float32Array(n * n);
        for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) t[c * n + r] = q[r * n + c]!;
        rotations.set(key, hadamard = uploadBuffer(gpu, t, `${label}:hadamard:${key}`));
      }
    }
    return {
      actQuant: uploadBlockActQuant(gpu, l, widths, `${label}:${i}:actQuant`),
      hadamard,
      attention: attention[i]!,
    };
  });
}

/** The distinct buffers of the plans (to destroy them). */
export function layerQuantBuffers(plans: readonly GpuLayerQuant[]): GPUBuffer[] {
  const out = new Set<GPUBuffer>(attentionInputBuffers(plans.map((p) => p.attention)));
  for (const p of plans) {
    for (const b of actQuantBuffers(p.actQuant)) out.add(b);
    if (p.hadamard) out.add(p.hadamard);
  }
  return [...out];
}

/**
 * The hook of `encodeBlockWith` that records a layer's query/key rotation and
 * KV cache quantization, or undefined when it has neither.
 *
 * @param config The configuration.
 * @param plan The layer's plan.
 * @returns The hook or undefined.
 */
export function attentionInputsHook(
  config: LlamaConfig,
  plan: GpuLayerQuant,
): ((batch: GpuBatch, qkv: GPUBuffer, rows: number) => void) | undefined {
  const a = plan.attention;
  if (a.rotation === null && a.kvQuant === null) return undefined;
  return (batch, qkv, rows) => encodeAttentionInputs(batch, config, qkv, a, rows);
}
