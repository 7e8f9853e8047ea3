/**
 * compressed-tensors' sparse layouts of one pruned linear layer,
 * "sparse-bitmask" and "sparse-24-bitmask", and converters from a pruned
 * weight and to a {@linkcode SparseBitmaskLinear}. Web-standard only.
 *
 * ## The layouts
 *
 * For a linear layer [N, K] (tensor names `<module>.<suffix>`, no `.weight`):
 *
 * - `bitmask` u8 [N, ⌈K/8⌉]: bit j (least significant first) of byte b of
 *   row n is set when W[n, 8b + j] is stored (numpy's `packbits` with
 *   `bitorder="little"`).
 * - `compressed`: the stored values in row-major order, in the weight's
 *   float dtype. "sparse-bitmask": 1-D [nnz], the non-zero weights;
 *   "sparse-24-bitmask": [N, K/2], two of every four consecutive weights of a
 *   row (compressed-tensors keeps the two largest magnitudes, zeros included).
 * - `row_offsets` i64 [N] ("sparse-bitmask" only): index in `compressed` of
 *   row n's first value.
 * - `shape` i64: [N, K] ("sparse-bitmask") or [[N], [K]] ("sparse-24-bitmask").
 *
 * Every weight not stored is 0.
 *
 * @see compressed-tensors, `compressors/sparse_compressors/sparse_bitmask.py`,
 *   `sparse_24_bitmask.py` and `utils/helpers.py` (`pack_bitmasks`).
 *
 * @module
 */

import { asFloat32, convert } from "../../core/convert.ts";
import { type Tensor, tensor } from "../../core/tensor.ts";
import type { ScaleDType, SparseBitmaskLinear } from "./packed_linear.ts";

/** The two sparse layouts. */
export type SparseFormat = "sparse-bitmask" | "sparse-24-bitmask";

/** The tensors of one sparse linear, by suffix. */
export interface SparseBitmaskTensors {
  /** u8 [N, ⌈K/8⌉]. */
  bitmask: Tensor<"u8">;
  /** [nnz] or [N, K/2]. */
  compressed: Tensor<ScaleDType>;
  /** i64 [N] ("sparse-bitmask" only). */
  row_offsets?: Tensor<"i64">;
  /** i64 [2] or [2, 1]. */
  shape: Tensor<"i64">;
}

/**
 * Whether a keep-mask [N, K] keeps exactly two of every four consecutive
 * weights of each row (the "sparse-24-bitmask" layout).
 *
 * @param mask Keep-mask (1 kept).
 * @param N Rows.
 * @param K Columns.
 * @returns True for 2:4.
 */
export function isTwoFour(mask: Uint8Array, N: number, K: number): boolean {
  if (K % 4 !== 0) return false;
  for (let i = 0; i < N * K; i += 4) {
    if (
      (mask[i] ? 1 : 0) + (mask[i + 1] ? 1 : 0) + (mask[i + 2] ? 1 : 0) + (mask[i + 3] ? 1 : 0) !==
        2
    ) {
      return false;
    }
  }
  return true;
}

/**
 * Converts a pruned weight to a sparse layout's tensors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { toSparseBitmask } from "./sparse_bitmask.ts";
 * import { tensor } from "../../core/tensor.ts";
 * const w = tensor("f32", [1, 4], new Float32Array([0, 2, 0, 3]));
 * const t = toSparseBitmask(w, Uint8Array.from([0, 1, 0, 1]), "sparse-24-bitmask");
 * assert.deepEqual([...t.bitmask.data], [0b1010]);
 * assert.deepEqual([...t.compressed.data], [2, 3]);
 * ```
 * @param weight The pruned weight [N, K] (0 wherever `mask` is 0).
 * @param mask Keep-mask [N, K] (1 kept).
 * @param format The layout: "sparse-bitmask" stores the non-zero weights,
 *   "sparse-24-bitmask" the kept ones (the mask must be 2:4).
 * @param dtype Storage of the values. @default "f32"
 * @returns The tensors.
 * @throws {RangeError} for a weight not zero where the mask prunes, or a
 *   mask that is not 2:4 for "sparse-24-bitmask".
 */
export function toSparseBitmask(
  weight: Tensor<"f32">,
  mask: Uint8Array,
  format: SparseFormat,
  dtype: ScaleDType = "f32",
): SparseBitmaskTensors {
  const [N, K] = weight.shape as [number, number];
  const w = weight.data;
  if (mask.length !== N * K) {
    throw new RangeError(
      `Cannot store a sparse weight: the mask has ${mask.length} entries, not ${N}×${K}`,
    );
  }
  for (let i = 0; i < N * K; i++) {
    if (!mask[i] && w[i] !== 0) {
      throw new RangeError(
        `Cannot store a sparse weight: W[${Math.floor(i / K)}, ${i % K}] = ${
          w[i]
        } where the mask prunes`,
      );
    }
  }
  if (format === "sparse-24-bitmask" && !isTwoFour(mask, N, K)) {
    throw new RangeError(
      "Cannot store sparse-24-bitmask: the mask does not keep 2 of every 4 weights",
    );
  }
  // sparse-bitmask stores the non-zero weights (as compressed-tensors does: `tensor != 0`).
  const stored = (i: number) => format === "sparse-24-bitmask" ? mask[i] !== 0 : w[i] !== 0;
  const bytes = Math.ceil(K / 8);
  const bitmask = new Uint8Array(N * bytes);
  const values: number[] = [];
  const offsets = new BigInt64Array(N);
  for (let n = 0; n < N; n++) {
    offsets[n] = BigInt(values.length);
    for (let k = 0; k < K; k++) {
      if (!stored(n * K + k)) continue;
      bitmask[n * bytes + (k >> 3)]! |= 1 << (k & 7);
      values.push(w[n * K + k]!);
    }
  }
  const flat = tensor("f32", [values.length], Float32Array.from(values));
  const compressed = convert(
    format === "sparse-24-bitmask" ? { ...flat, shape: [N, K / 2] } : flat,
    dtype,
  );
  return {
    bitmask: tensor("u8", [N, bytes], bitmask),
    compressed,
    ...(format === "sparse-bitmask" ? { row_offsets: tensor("i64", [N], offsets) } : {}),
    shape: format === "sparse-24-bitmask"
      ? tensor("i64", [2, 1], BigInt64Array.from([BigInt(N), BigInt(K)]))
      : tensor("i64", [2], BigInt64Array.from([BigInt(N), BigInt(K)])),
  };
}

/**
 * The sparse linear of a checkpoint's tensors, checked against the shape the
 * model's configuration implies.
 *
 * @param tensors The linear's tensors by suffix (absent ones undefined).
 * @param format The layout the `sparsity_config` names.
 * @param shape [N, K] from `config.json`.
 * @param name The module's name (for messages).
 * @returns The sparse linear (values and bitmask are the tensors' own arrays).
 * @throws {RangeError} naming the tensor for a missing or inconsistent one.
 */
export function sparseBitmaskLinear(
  tensors: Partial<Record<keyof SparseBitmaskTensors, Tensor>>,
  format: SparseFormat,
  shape: readonly [number, number],
  name: string,
): SparseBitmaskLinear {
  const [N, K] = shape;
  const need = (key: keyof SparseBitmaskTensors) => {
    const t = tensors[key];
    if (!t) throw new RangeError(`missing tensor ${name}.${key} (${format})`);
    return t;
  };
  const bitmask = need("bitmask"), values = need("compressed");
  if (bitmask.dtype !== "u8" && bitmask.dtype !== "i8") {
    throw new RangeError(`tensor ${name}.bitmask has dtype ${bitmask.dtype}; expected u8`);
  }
  if (bitmask.shape.join() !== `${N},${Math.ceil(K / 8)}`) {
    throw new RangeError(
      `tensor ${name}.bitmask has shape [${bitmask.shape}]; [${N}, ${K}] needs [${N}, ${
        Math.ceil(K / 8)
      }]`,
    );
  }
  if (values.dtype !== "f32" && values.dtype !== "f16" && values.dtype !== "bf16") {
    throw new RangeError(
      `tensor ${name}.compressed has dtype ${values.dtype}; expected bf16, f16 or f32`,
    );
  }
  const dims = Array.from(need("shape").data as ArrayLike<number | bigint>, Number);
  if (dims.join() !== `${N},${K}`) {
    throw new RangeError(`tensor ${name}.shape is [${dims}]; config.json implies [${N}, ${K}]`);
  }
  const mask = new Uint8Array(
    bitmask.data.buffer,
    bitmask.data.byteOffset,
    bitmask.data.byteLength,
  );
  // Row offsets: from the file, or counted (2:4 rows hold K/2 values each).
  const rowOffsets = new Float64Array(N + 1);
  const bytes = Math.ceil(K / 8);
  for (let n = 0; n < N; n++) {
    let count = 0;
    for (let b = 0; b < bytes; b++) {
      let v = mask[n * bytes + b]!;
      if (b === bytes - 1 && K % 8 !== 0) v &= (1 << (K % 8)) - 1;
      for (; v; v &= v - 1) count++;
    }
    rowOffsets[n + 1] = rowOffsets[n]! + count;
  }
  const nnz = rowOffsets[N]!;
  if (
    format === "sparse-24-bitmask" &&
    (values.shape.join() !== `${N},${K / 2}` || nnz !== (N * K) / 2)
  ) {
    throw new RangeError(
      `tensor ${name}.compressed has shape [${values.shape}] and the bitmask ${nnz} bits; sparse-24-bitmask needs [${N}, ${
        K / 2
      }] and ${(N * K) / 2}`,
    );
  }
  if (format === "sparse-bitmask") {
    if (values.shape.join() !== `${nnz}`) {
      throw new RangeError(
        `tensor ${name}.compressed has shape [${values.shape}]; the bitmask sets ${nnz} bits`,
      );
    }
    const offsets = need("row_offsets");
    const given = Array.from(offsets.data as ArrayLike<number | bigint>, Number);
    if (given.length !== N || given.some((o, n) => o !== rowOffsets[n])) {
      throw new RangeError(
        `tensor ${name}.row_offsets does not count the bitmask's bits row by row`,
      );
    }
  }
  return {
    kind: "sparse-bitmask",
    shape: [N, K],
    format,
    values: values as Tensor<ScaleDType>,
    bitmask: mask,
    rowOffsets,
  };
}

/**
 * Writes rows [r0, r1) of a sparse linear into `out` ([r1 − r0, K], row-major).
 *
 * @param w The sparse linear.
 * @param r0 First row.
 * @param r1 End row (exclusive).
 * @param out Destination (written into).
 */
export function sparseRows(
  w: SparseBitmaskLinear,
  r0: number,
  r1: number,
  out: Float32Array,
): void {
  const K = w.shape[1], bytes = Math.ceil(K / 8);
  const from = w.rowOffsets[r0]!, to = w.rowOffsets[r1]!;
  const v = w.values.data.subarray(from, to);
  const values = asFloat32({ dtype: w.values.dtype, shape: [to - from], data: v } as Tensor);
  out.fill(0, 0, (r1 - r0) * K);
  let j = 0;
  for (let n = r0; n < r1; n++) {
    const o = (n - r0) * K;
    for (let b = 0; b < bytes; b++) {
      let m = w.bitmask[n * bytes + b]!;
      while (m) {
        const bit = 31 - Math.clz32(m & -m), k = b * 8 + bit;
        if (k < K) out[o + k] = values[j++]!;
        m &= m - 1;
      }
    }
  }
}
