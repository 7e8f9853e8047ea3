/**
 * One compressed linear module of a checkpoint, read packed: the tensors its
 * quantization (or sparsity) names, checked. Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../../core/tensor.ts";
import { gptqLinear } from "./gptq_linear.ts";
import { packQuantizedLinear } from "./pack_quantized.ts";
import { sparseBitmaskLinear } from "./sparse_bitmask.ts";
import type { PackedLinear } from "./packed_linear.ts";
import type { ModuleQuantization } from "./quantization_config.ts";

/** Tensor suffixes of each packed layout (GPTQ, then compressed-tensors). */
export const PACKED_SUFFIXES: {
  readonly gptq: readonly string[];
  readonly "pack-quantized": readonly string[];
  readonly "sparse-bitmask": readonly string[];
} = {
  gptq: ["qweight", "qzeros", "scales", "g_idx"],
  "pack-quantized": [
    "weight_packed",
    "weight_scale",
    "weight_zero_point",
    "weight_shape",
    "weight_g_idx",
  ],
  "sparse-bitmask": ["bitmask", "compressed", "row_offsets", "shape"],
};

/**
 * Reads one quantized linear module.
 *
 * @param quantization How the checkpoint stores it (not null).
 * @param tensorOf The checkpoint's tensor of a name, or undefined.
 * @param module The module's name, e.g. `model.layers.0.self_attn.q_proj`.
 * @param shape [N, K] from `config.json`.
 * @returns The packed linear.
 * @throws {RangeError} naming the tensor for a missing or inconsistent one.
 */
export function readPackedLinear(
  quantization: Exclude<ModuleQuantization, null>,
  tensorOf: (name: string) => Tensor | undefined,
  module: string,
  shape: readonly [number, number],
): PackedLinear {
  const parts: Record<string, Tensor> = {};
  for (const s of PACKED_SUFFIXES[quantization.kind]) {
    const t = tensorOf(`${module}.${s}`);
    if (t) parts[s] = t;
  }
  switch (quantization.kind) {
    case "gptq":
      return gptqLinear(parts, quantization.args, shape, module);
    case "pack-quantized":
      return packQuantizedLinear(parts, quantization.args, shape, module);
    case "sparse-bitmask":
      return sparseBitmaskLinear(parts, quantization.format, shape, module);
  }
}
