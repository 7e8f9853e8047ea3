/**
 * Compact storage of pruned weights, so that a pruned layer is smaller on
 * disk and not just zero-filled. Web-standard only.
 *
 * Formats (one description each; `pack`/`unpack` round-trip exactly):
 *
 * - **Bitmask** ({@linkcode PackedBitmask}): element `i` of the row-major
 *   [rows, cols] keep-mask is bit `i & 7` (least significant first) of byte
 *   `i >>> 3`; ⌈rows·cols/8⌉ bytes, trailing bits zero.
 * - **Sparse** ({@linkcode PackedSparse}): a bitmask of the kept weights plus
 *   their values in row-major order (`values.length` = number of set bits).
 * - **2:4** ({@linkcode Packed24}): every row is cut into groups of 4
 *   consecutive columns; group `g = r·cols/4 + j` keeps 2 values,
 *   `values[2g]` and `values[2g + 1]`, at in-group positions `i0 < i1`,
 *   stored as the 4-bit code `i0 | i1 << 2` in nibble `g & 1` (low nibble
 *   first) of byte `g >>> 1` of `indices` — two 2-bit indices per group, the
 *   layout of NVIDIA's 2:4 sparse metadata. `values` is [rows, cols/2],
 *   `indices` holds rows·cols/8 bytes.
 *
 * @module
 */

import { asFloat64 } from "../core/convert.ts";
import { dims2, type Tensor, tensor } from "../core/tensor.ts";

/** A keep-mask packed 8 elements per byte (see the module docs for the bit order). */
export interface PackedBitmask {
  /** Discriminant. */
  readonly kind: "bitmask";
  /** [rows, cols] of the mask. */
  readonly shape: readonly [number, number];
  /** ⌈rows·cols/8⌉ bytes, least significant bit first. */
  readonly bits: Uint8Array;
}

/** A pruned weight as a bitmask of kept positions plus the kept values. */
export interface PackedSparse {
  /** Discriminant. */
  readonly kind: "sparse";
  /** [rows, cols] of the weight. */
  readonly shape: readonly [number, number];
  /** Packed keep-mask. */
  readonly mask: PackedBitmask;
  /** Kept values in row-major order. */
  readonly values: Float32Array;
}

/** A 2:4-sparse weight: 2 values and two 2-bit indices per group of 4 columns. */
export interface Packed24 {
  /** Discriminant. */
  readonly kind: "2:4";
  /** [rows, cols] of the dense weight (cols a multiple of 4). */
  readonly shape: readonly [number, number];
  /** Kept values [rows, cols/2], in column order within each group. */
  readonly values: Float32Array;
  /** rows·cols/8 bytes: one 4-bit code `i0 | i1 << 2` per group, low nibble first. */
  readonly indices: Uint8Array;
}

function maskValues(mask: Tensor, what: string): Uint8Array {
  if (mask.dtype !== "bool" && mask.dtype !== "u8") {
    throw new TypeError(
      `Cannot ${what} as 'mask' must be a "bool" or "u8" tensor: current dtype is ${mask.dtype}`,
    );
  }
  const m = mask.data as Uint8Array;
  for (let i = 0; i < m.length; i++) {
    if (m[i]! > 1) {
      throw new RangeError(`Cannot ${what} as 'mask' holds ${m[i]} at ${i} (only 0 or 1)`);
    }
  }
  return m;
}

/**
 * Packs a keep-mask 8 elements per byte.
 *
 * @param mask Keep-mask [rows, cols] ("bool" or "u8", values 0/1).
 * @returns The packed bitmask.
 */
export function packBitmask(mask: Tensor): PackedBitmask {
  const [rows, cols] = dims2(mask, "mask");
  const m = maskValues(mask, "pack a bitmask");
  const bits = new Uint8Array(Math.ceil(m.length / 8));
  for (let i = 0; i < m.length; i++) if (m[i] === 1) bits[i >>> 3]! |= 1 << (i & 7);
  return { kind: "bitmask", shape: [rows, cols], bits };
}

/**
 * Unpacks a bitmask.
 *
 * @param packed The packed bitmask.
 * @returns Keep-mask [rows, cols] ("bool").
 */
export function unpackBitmask(packed: PackedBitmask): Tensor<"bool"> {
  const [rows, cols] = packed.shape;
  const n = rows * cols;
  if (packed.bits.length !== Math.ceil(n / 8)) {
    throw new RangeError(
      `Cannot unpack a bitmask of shape [${rows}, ${cols}] from ${packed.bits.length} bytes`,
    );
  }
  const m = new Uint8Array(n);
  for (let i = 0; i < n; i++) m[i] = (packed.bits[i >>> 3]! >>> (i & 7)) & 1;
  return tensor("bool", [rows, cols], m);
}

/**
 * Stores a pruned weight as its packed keep-mask plus the kept values.
 *
 * @param weight Float weight [rows, cols].
 * @param mask Keep-mask [rows, cols]; pruned positions are dropped whatever their value.
 * @returns The compact form.
 */
export function packSparse(weight: Tensor, mask: Tensor): PackedSparse {
  const [rows, cols] = dims2(weight, "weight");
  const [mr, mc] = dims2(mask, "mask");
  if (mr !== rows || mc !== cols) {
    throw new RangeError(
      `Cannot pack a sparse weight as 'mask' is [${mr}, ${mc}] but 'weight' is [${rows}, ${cols}]`,
    );
  }
  const packedMask = packBitmask(mask);
  const m = mask.data as Uint8Array;
  const w = asFloat64(weight);
  let kept = 0;
  for (let i = 0; i < m.length; i++) kept += m[i]!;
  const values = new Float32Array(kept);
  for (let i = 0, k = 0; i < m.length; i++) if (m[i] === 1) values[k++] = w[i]!;
  return { kind: "sparse", shape: [rows, cols], mask: packedMask, values };
}

/**
 * Restores the dense weight of a {@linkcode PackedSparse}.
 *
 * @param packed The compact form.
 * @returns The weight [rows, cols] (f32), zero at pruned positions.
 */
export function unpackSparse(packed: PackedSparse): Tensor<"f32"> {
  const mask = unpackBitmask(packed.mask).data;
  let kept = 0;
  for (let i = 0; i < mask.length; i++) kept += mask[i]!;
  if (kept !== packed.values.length) {
    throw new RangeError(
      `Cannot unpack a sparse weight: the mask keeps ${kept} values but ${packed.values.length} are stored`,
    );
  }
  const out = new Float32Array(mask.length);
  for (let i = 0, k = 0; i < mask.length; i++) if (mask[i] === 1) out[i] = packed.values[k++]!;
  return tensor("f32", [...packed.shape], out);
}

/**
 * Packs a 2:4-sparse weight: two values and their two 2-bit positions per
 * group of 4 columns.
 *
 * Without `mask`, the kept positions are the group's nonzero weights; a group
 * with fewer than 2 nonzeros is completed with its first zero positions (which
 * store 0). With `mask`, the kept positions are the mask's (at most 2 per
 * group, completed the same way).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "../core/tensor.ts";
 * import { pack24, unpack24 } from "./mask_storage.ts";
 * const w = tensor("f32", [1, 4], new Float32Array([0, 5, 0, -1]));
 * const p = pack24(w);
 * assert(p.indices[0] === (1 | (3 << 2)) && unpack24(p).data[1] === 5);
 * ```
 * @param weight Float weight [rows, cols], cols a multiple of 4.
 * @param mask Optional keep-mask [rows, cols].
 * @returns The 2:4 form.
 * @throws {RangeError} when cols is not a multiple of 4 or a group has more than 2 kept weights.
 */
export function pack24(weight: Tensor, mask?: Tensor): Packed24 {
  const [rows, cols] = dims2(weight, "weight");
  if (cols % 4 !== 0) {
    throw new RangeError(
      `Cannot pack 2:4 as the weight's ${cols} columns are not a multiple of 4`,
    );
  }
  let m: Uint8Array | undefined;
  if (mask !== undefined) {
    const [mr, mc] = dims2(mask, "mask");
    if (mr !== rows || mc !== cols) {
      throw new RangeError(
        `Cannot pack 2:4 as 'mask' is [${mr}, ${mc}] but 'weight' is [${rows}, ${cols}]`,
      );
    }
    m = maskValues(mask, "pack 2:4");
  }
  const w = asFloat64(weight);
  const groups = (rows * cols) / 4;
  const values = new Float32Array(groups * 2);
  const indices = new Uint8Array(Math.ceil(groups / 2));
  const pos = [0, 0];
  for (let g = 0; g < groups; g++) {
    const base = 4 * g;
    let count = 0;
    for (let i = 0; i < 4; i++) {
      const keep = m ? m[base + i] === 1 : w[base + i] !== 0;
      if (!keep) continue;
      if (count === 2) {
        const r = Math.floor(base / cols);
        throw new RangeError(
          `Cannot pack 2:4 as row ${r}, columns ${base % cols}–${
            (base % cols) + 3
          } keep more than 2 ${m ? "positions" : "nonzero weights"}`,
        );
      }
      pos[count++] = i;
    }
    // complete with the first positions not yet kept, in increasing order
    for (let i = 0; count < 2 && i < 4; i++) {
      if (count === 1 && pos[0] === i) continue;
      pos[count++] = i;
    }
    if (pos[0]! > pos[1]!) [pos[0], pos[1]] = [pos[1]!, pos[0]!];
    values[2 * g] = m && m[base + pos[0]!] !== 1 ? 0 : w[base + pos[0]!]!;
    values[2 * g + 1] = m && m[base + pos[1]!] !== 1 ? 0 : w[base + pos[1]!]!;
    indices[g >>> 1]! |= (pos[0]! | (pos[1]! << 2)) << (4 * (g & 1));
  }
  return { kind: "2:4", shape: [rows, cols], values, indices };
}

function check24(packed: Packed24): [number, number] {
  const [rows, cols] = packed.shape;
  const groups = (rows * cols) / 4;
  if (
    cols % 4 !== 0 || packed.values.length !== groups * 2 ||
    packed.indices.length !== Math.ceil(groups / 2)
  ) {
    throw new RangeError(
      `Cannot unpack 2:4 of shape [${rows}, ${cols}] from ${packed.values.length} values and ${packed.indices.length} index bytes`,
    );
  }
  return [rows, cols];
}

function code24(packed: Packed24, g: number): [number, number] {
  const code = (packed.indices[g >>> 1]! >>> (4 * (g & 1))) & 0xf;
  const i0 = code & 3, i1 = code >>> 2;
  if (i0 >= i1) {
    throw new RangeError(`Cannot unpack 2:4 as group ${g} has indices ${i0}, ${i1} (need i0 < i1)`);
  }
  return [i0, i1];
}

/**
 * Restores the dense weight of a {@linkcode Packed24}.
 *
 * @param packed The 2:4 form.
 * @returns The weight [rows, cols] (f32).
 */
export function unpack24(packed: Packed24): Tensor<"f32"> {
  const [rows, cols] = check24(packed);
  const out = new Float32Array(rows * cols);
  for (let g = 0; g < (rows * cols) / 4; g++) {
    const [i0, i1] = code24(packed, g);
    out[4 * g + i0] = packed.values[2 * g]!;
    out[4 * g + i1] = packed.values[2 * g + 1]!;
  }
  return tensor("f32", [rows, cols], out);
}

/**
 * The keep-mask a {@linkcode Packed24} encodes (exactly 2 of every 4).
 *
 * @param packed The 2:4 form.
 * @returns Keep-mask [rows, cols] ("bool").
 */
export function unpack24Mask(packed: Packed24): Tensor<"bool"> {
  const [rows, cols] = check24(packed);
  const out = new Uint8Array(rows * cols);
  for (let g = 0; g < (rows * cols) / 4; g++) {
    const [i0, i1] = code24(packed, g);
    out[4 * g + i0] = 1;
    out[4 * g + i1] = 1;
  }
  return tensor("bool", [rows, cols], out);
}
