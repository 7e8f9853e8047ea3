/**
 * compressed-tensors' "pack-quantized" layout of one linear layer (the format
 * llm-compressor writes and vLLM and transformers load), and converters from
 * a {@linkcode QuantizedWeight} and to a {@linkcode PackQuantizedLinear}.
 * Web-standard only.
 *
 * ## The layout
 *
 * For a linear layer with K input features, N output features, b bits
 * (1–8) and groups of G input features (G = K per channel):
 *
 * - **Codes are word-aligned**: a 32-bit word holds p = ⌊32/b⌋ whole codes
 *   (8 at 4 bits, 10 at 3 bits with bits 30–31 unused, 4 at 8 bits), code j
 *   of the word at bits [j·b, (j+1)·b) (the first code in the lowest bits).
 *   Unlike GPTQ's bit stream (`core/bitpack.ts`), no code straddles two
 *   words; for b = 2, 4, 8 the two layouts are the same.
 * - **Stored values are unsigned**: compressed-tensors quantizes to signed
 *   integers q in [−2^(b−1), 2^(b−1)) and stores q + 2^(b−1). Our codes c in
 *   [0, 2^b) and zero points z are those unsigned values: q = c − 2^(b−1),
 *   and its zero point is z − 2^(b−1).
 * - `weight_packed` i32 [N, ⌈K/p⌉]: row n packs W[n, 0..K) along K, padded
 *   with zero fields.
 * - `weight_scale` [N, groups] (float; we write f16 unless told otherwise).
 * - `weight_zero_point` i32 [⌈N/p⌉, groups], asymmetric grids only: column g
 *   packs the zero points of group g for all N outputs along N, the same way
 *   (zero point n in word ⌊n/p⌋ at bits (n mod p)·b). Symmetric grids store
 *   none: their zero point is 0 signed, 2^(b−1) unsigned.
 * - `weight_shape` i64 [2] = [N, K].
 * - `weight_g_idx` i32 [K], only under act-order (`actorder: "group"`): the
 *   group of each input feature, as GPTQ's `g_idx`. Without it, feature k
 *   is in group ⌊k/G⌋, and G must divide K.
 *
 * Dequantization: Ŵ[n, k] = scale[n, g]·(c[n, k] − z[n, g]), g = g_idx[k].
 *
 * @see compressed-tensors, `compressors/quantized_compressors/pack_quantized.py`
 *   (`pack_to_int32`, `unpack_from_int32`) and
 *   `quantization/lifecycle/forward.py` (`dequantize`).
 *
 * @module
 */

import { tensorChecker } from "./_tensor_check.ts";
import { convert } from "../../core/convert.ts";
import { type Tensor, tensor } from "../../core/tensor.ts";
import type { QuantizedWeight } from "../../quantizers/quantized_weight.ts";
import type { PackQuantizedLinear, ScaleDType } from "./packed_linear.ts";

/** Bit widths compressed-tensors packs (`num_bits` ≤ 8). */
export const PACK_QUANTIZED_BITS: readonly number[] = [1, 2, 3, 4, 5, 6, 7, 8];

/**
 * Codes per 32-bit word at b bits, ⌊32/b⌋.
 *
 * @param bits Bits per code.
 * @returns The pack factor.
 */
export function packFactor(bits: number): number {
  return Math.floor(32 / bits);
}

/** The tensors of one pack-quantized linear, by suffix (`weight_packed`, ...). */
export interface PackQuantizedTensors {
  /** i32 [N, ⌈K/p⌉]. */
  weight_packed: Tensor<"i32">;
  /** Float [N, groups]. */
  weight_scale: Tensor<ScaleDType>;
  /** i64 [2]: [N, K]. */
  weight_shape: Tensor<"i64">;
  /** i32 [⌈N/p⌉, groups], asymmetric grids only. */
  weight_zero_point?: Tensor<"i32">;
  /** i32 [K], act-order only. */
  weight_g_idx?: Tensor<"i32">;
}

/**
 * Packs values along the last axis of [rows, cols], p = ⌊32/b⌋ per word.
 *
 * @param values Unsigned fields in [0, 2^b), row-major [rows, cols].
 * @param rows Rows.
 * @param cols Columns.
 * @param bits Bits per field.
 * @returns Words, [rows, ⌈cols/p⌉].
 */
function packRows(
  values: ArrayLike<number>,
  rows: number,
  cols: number,
  bits: number,
): Int32Array {
  const per = packFactor(bits), words = Math.ceil(cols / per);
  const out = new Int32Array(rows * words);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const w = r * words + Math.floor(c / per);
      out[w] = out[w]! | (values[r * cols + c]! << ((c % per) * bits));
    }
  }
  return out;
}

/** Whether gIdx is the plain grouping ⌊k/G⌋ of `groups` equal groups. */
function isPlainGrouping(gIdx: Int32Array, groups: number): boolean {
  const K = gIdx.length;
  if (K % groups !== 0) return false;
  const size = K / groups;
  for (let k = 0; k < K; k++) if (gIdx[k] !== Math.floor(k / size)) return false;
  return true;
}

/** Options of {@linkcode toPackQuantized}. */
export interface ToPackQuantizedOptions {
  /** Storage of `weight_scale` (values are rounded to it). @default "f16" */
  scaleDtype?: ScaleDType;
}

/**
 * Converts a quantized weight to compressed-tensors' pack-quantized tensors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { toPackQuantized } from "./pack_quantized.ts";
 * import type { QuantizedWeight } from "../../quantizers/quantized_weight.ts";
 * const q: QuantizedWeight = {
 *   kind: "uniform", shape: [1, 8], bits: 4, groupSize: -1, symmetric: true,
 *   codes: Uint8Array.from([0, 1, 2, 3, 4, 5, 6, 7]), scales: new Float32Array([0.5]),
 *   zeros: new Float32Array([8]), gIdx: new Int32Array(8), stats: { seconds: 0 },
 * };
 * const t = toPackQuantized(q);
 * assert.equal(t.weight_packed.data[0], 0x76543210); // code j at bits 4j
 * assert.equal(t.weight_zero_point, undefined); // symmetric: no zero points
 * ```
 * @param q The quantized weight, codes [N, K].
 * @param options Scale storage.
 * @returns The tensors (`weight_zero_point` only for asymmetric grids,
 *   `weight_g_idx` only when the grouping is not ⌊k/G⌋).
 * @throws {RangeError} for bits outside 1–8, a symmetric weight whose zero
 *   points are not 2^(b−1), a zero point that is not a code, or groups that
 *   compressed-tensors cannot describe (G not dividing K without act-order,
 *   act-order groups of unequal sizes).
 */
export function toPackQuantized(
  q: QuantizedWeight,
  options: ToPackQuantizedOptions = {},
): PackQuantizedTensors {
  const { scaleDtype = "f16" } = options;
  if (scaleDtype !== "f16" && scaleDtype !== "bf16" && scaleDtype !== "f32") {
    throw new RangeError(
      `Cannot pack as 'scaleDtype' must be "f16", "bf16" or "f32": current value is ${scaleDtype}`,
    );
  }
  const { bits } = q;
  if (!PACK_QUANTIZED_BITS.includes(bits)) {
    throw new RangeError(`compressed-tensors packs 1 to 8-bit codes: 'bits' is ${bits}`);
  }
  const [N, K] = q.shape;
  const groups = q.scales.length / N;
  if (!Number.isInteger(groups) || q.zeros.length !== q.scales.length || q.gIdx.length !== K) {
    throw new RangeError(
      `Cannot pack: 'scales' (${q.scales.length}) and 'zeros' (${q.zeros.length}) must hold ` +
        `${N} rows × groups values and 'gIdx' (${q.gIdx.length}) ${K}`,
    );
  }
  const plain = isPlainGrouping(q.gIdx, groups);
  if (!plain) {
    const counts = new Int32Array(groups);
    for (const g of q.gIdx) counts[g]!++;
    const size = Math.ceil(K / groups);
    if (K % size !== 0 || counts.some((c) => c !== size)) {
      throw new RangeError(
        `compressed-tensors needs groups of one size dividing K = ${K}: ` +
          (K % (q.groupSize > 0 ? q.groupSize : K) !== 0
            ? `the group size ${q.groupSize} does not divide it`
            : `the act-order groups have sizes ${[...new Set(counts)].join(", ")}`),
      );
    }
  }
  const mid = 2 ** (bits - 1), maxq = 2 ** bits - 1;
  for (let i = 0; i < q.zeros.length; i++) {
    const z = q.zeros[i]!;
    if (q.symmetric ? z !== mid : !(Number.isInteger(z) && z >= 0 && z <= maxq)) {
      throw new RangeError(
        `Cannot store zero point ${z} (row ${Math.floor(i / groups)}, group ${i % groups}) of a ` +
          `${q.symmetric ? "symmetric" : "asymmetric"} ${bits}-bit grid: ` +
          (q.symmetric
            ? `symmetric grids have ${mid}`
            : `zero points are integers in [0, ${maxq}]`),
      );
    }
  }
  const out: PackQuantizedTensors = {
    weight_packed: tensor(
      "i32",
      [N, Math.ceil(K / packFactor(bits))],
      packRows(q.codes, N, K, bits),
    ),
    weight_scale: convert(tensor("f32", [N, groups], Float32Array.from(q.scales)), scaleDtype),
    weight_shape: tensor("i64", [2], BigInt64Array.from([BigInt(N), BigInt(K)])),
  };
  if (!q.symmetric) {
    // [N, groups] → transpose → pack along N → transpose back: [⌈N/p⌉, groups].
    const zt = new Uint16Array(groups * N);
    for (let n = 0; n < N; n++) {
      for (let g = 0; g < groups; g++) zt[g * N + n] = q.zeros[n * groups + g]!;
    }
    const packed = packRows(zt, groups, N, bits), words = Math.ceil(N / packFactor(bits));
    const zp = new Int32Array(words * groups);
    for (let g = 0; g < groups; g++) {
      for (let w = 0; w < words; w++) zp[w * groups + g] = packed[g * words + w]!;
    }
    out.weight_zero_point = tensor("i32", [words, groups], zp);
  }
  if (!plain) out.weight_g_idx = tensor("i32", [K], Int32Array.from(q.gIdx));
  return out;
}

/** What a checkpoint's `config_groups` entry says of one linear's weights. */
export interface PackQuantizedArgs {
  /** `num_bits`. */
  readonly bits: number;
  /** `group_size` for strategy "group", −1 for "channel". */
  readonly groupSize: number;
  /** `symmetric`. */
  readonly symmetric: boolean;
}

/**
 * The packed linear of a checkpoint's tensors, checked against the
 * quantization arguments and the shape the model's configuration implies.
 *
 * @param tensors The linear's tensors by suffix (absent ones undefined).
 * @param args Bits, group size and symmetry from `quantization_config`.
 * @param shape [N, K] from `config.json`.
 * @param name The module's name, e.g. `model.layers.0.self_attn.q_proj` (for messages).
 * @returns The packed linear (its arrays are the tensors' own).
 * @throws {RangeError} naming the tensor for a missing tensor, a wrong dtype,
 *   or a shape inconsistent with the bits and the group size.
 */
export function packQuantizedLinear(
  tensors: Partial<Record<keyof PackQuantizedTensors, Tensor>>,
  args: PackQuantizedArgs,
  shape: readonly [number, number],
  name: string,
): PackQuantizedLinear {
  const { bits, groupSize, symmetric } = args;
  const [N, K] = shape;
  const per = packFactor(bits);
  const groups = groupSize > 0 ? K / groupSize : 1;
  const cfg = `num_bits ${bits}, group_size ${groupSize}`;
  if (!Number.isInteger(groups)) {
    throw new RangeError(
      `${name}: group_size ${groupSize} does not divide its ${K} input features, ` +
        `as compressed-tensors requires`,
    );
  }
  const need = tensorChecker<keyof PackQuantizedTensors>(
    tensors,
    name,
    [N, K],
    cfg,
    `${cfg}, symmetric ${symmetric}`,
  );
  const packed = need("weight_packed", ["i32"], [N, Math.ceil(K / per)]);
  const scales = need("weight_scale", ["f16", "bf16", "f32"], [N, groups]) as Tensor<ScaleDType>;
  const ws = tensors.weight_shape;
  if (ws) {
    const dims = Array.from(ws.data as ArrayLike<number | bigint>, Number);
    if (dims.join() !== `${N},${K}`) {
      throw new RangeError(
        `tensor ${name}.weight_shape is [${dims}]; config.json implies [${N}, ${K}]`,
      );
    }
  }
  const zeros = symmetric
    ? null
    : need("weight_zero_point", ["i32"], [Math.ceil(N / per), groups]).data as Int32Array;
  let gIdx: Int32Array | null = null;
  if (tensors.weight_g_idx) {
    gIdx = need("weight_g_idx", ["i32", "i64"], [K]).dtype === "i32"
      ? tensors.weight_g_idx.data as Int32Array
      : Int32Array.from(tensors.weight_g_idx.data as BigInt64Array, Number);
    // compressed-tensors initializes g_idx to −1: columns then stay in their order.
    if (gIdx.includes(-1)) gIdx = null;
    for (let k = 0; gIdx && k < K; k++) {
      if (!(gIdx[k]! >= 0 && gIdx[k]! < groups)) {
        throw new RangeError(
          `tensor ${name}.weight_g_idx[${k}] = ${gIdx[k]} is outside [0, ${groups})`,
        );
      }
    }
  }
  return {
    kind: "pack-quantized",
    shape: [N, K],
    bits,
    groups,
    packed: packed.data as Int32Array,
    scales,
    zeros,
    gIdx,
  };
}
