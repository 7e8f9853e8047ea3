/**
 * The GPTQ tensors of one linear layer as read from a checkpoint, checked
 * and kept packed ({@linkcode gptqLinear}). The layout (bit order included)
 * is described in `quantizers/gptq_checkpoint.ts`, whose `toGptqCheckpoint`
 * writes it. Web-standard only.
 *
 * @module
 */

import { tensorChecker } from "./_tensor_check.ts";
import type { Tensor } from "../../core/tensor.ts";
import { GPTQ_CHECKPOINT_BITS } from "../../quantizers/gptq_checkpoint.ts";
import type { GptqLinear, ScaleDType } from "./packed_linear.ts";

/** What a checkpoint's GPTQ `quantization_config` says of every linear. */
export interface GptqArgs {
  /** `bits`: 2, 3, 4 or 8. */
  readonly bits: number;
  /** `group_size`, −1 per channel. */
  readonly groupSize: number;
  /** `sym`. */
  readonly symmetric: boolean;
  /** `desc_act`: act-order, so `g_idx` is required. */
  readonly descAct: boolean;
  /** 1 for `checkpoint_format` "gptq" (zero − 1 stored), 2 for "gptq_v2". */
  readonly version: 1 | 2;
}

/** The tensors of one GPTQ linear, by suffix. */
export interface GptqLinearTensors {
  /** i32 [⌈K·b/32⌉, N]. */
  qweight?: Tensor;
  /** i32 [groups, ⌈N·b/32⌉]. */
  qzeros?: Tensor;
  /** f16 (or bf16, f32) [groups, N]. */
  scales?: Tensor;
  /** i32 [K]; may be absent without act-order. */
  g_idx?: Tensor;
}

/**
 * The packed linear of a checkpoint's GPTQ tensors, checked against the
 * quantization arguments and the shape the model's configuration implies.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gptqLinear } from "./gptq_linear.ts";
 * import { tensor } from "../../core/tensor.ts";
 * const w = gptqLinear({
 *   qweight: tensor("i32", [1, 2]), qzeros: tensor("i32", [1, 1]),
 *   scales: tensor("f16", [1, 2]),
 * }, { bits: 4, groupSize: -1, symmetric: true, descAct: false, version: 1 }, [2, 8], "layer");
 * assert.equal(w.gIdx.length, 8);
 * assert.throws(() => gptqLinear({ qweight: tensor("i32", [2, 2]) },
 *   { bits: 4, groupSize: -1, symmetric: true, descAct: false, version: 1 }, [2, 8], "layer"),
 *   /layer.qweight has shape \[2,2\]; \[1,2\] fits/);
 * ```
 * @param tensors The linear's tensors by suffix (absent ones undefined).
 * @param args Bits, group size, symmetry, act-order and version from `quantization_config`.
 * @param shape [N, K] from `config.json`.
 * @param name The module's name, e.g. `model.layers.0.self_attn.q_proj` (for messages).
 * @returns The packed linear (its arrays are the tensors' own).
 * @throws {RangeError} naming the tensor for a missing tensor, a wrong dtype,
 *   a shape inconsistent with the bits and the group size, or a `g_idx`
 *   entry outside the groups.
 */
export function gptqLinear(
  tensors: GptqLinearTensors,
  args: GptqArgs,
  shape: readonly [number, number],
  name: string,
): GptqLinear {
  const { bits, groupSize, symmetric, descAct, version } = args;
  if (!GPTQ_CHECKPOINT_BITS.includes(bits)) {
    throw new RangeError(`GPTQ checkpoints hold 2, 3, 4 or 8-bit codes: 'bits' is ${bits}`);
  }
  const [N, K] = shape;
  const groups = groupSize > 0 ? Math.ceil(K / groupSize) : 1;
  const cfg = `bits ${bits}, group_size ${groupSize}`;
  const need = tensorChecker<keyof GptqLinearTensors>(tensors, name, [N, K], cfg);
  const qweight = need("qweight", ["i32"], [Math.ceil((K * bits) / 32), N]);
  const qzeros = need("qzeros", ["i32"], [groups, Math.ceil((N * bits) / 32)]);
  const scales = need("scales", ["f16", "bf16", "f32"], [groups, N]) as Tensor<ScaleDType>;
  let gIdx: Int32Array;
  if (tensors.g_idx || descAct) {
    gIdx = need("g_idx", ["i32"], [K]).data as Int32Array;
    for (let k = 0; k < K; k++) {
      if (!(gIdx[k]! >= 0 && gIdx[k]! < groups)) {
        throw new RangeError(`tensor ${name}.g_idx[${k}] = ${gIdx[k]} is outside [0, ${groups})`);
      }
    }
  } else {
    gIdx = Int32Array.from({ length: K }, (_, k) => groupSize > 0 ? Math.floor(k / groupSize) : 0);
  }
  return {
    kind: "gptq",
    shape: [N, K],
    bits,
    groups,
    qweight: qweight.data as Int32Array,
    qzeros: qzeros.data as Int32Array,
    scales,
    gIdx,
    zeroOffset: version === 1 ? 1 : 0,
    symmetric,
    groupSize,
  };
}
