/**
 * Linear layers kept packed in memory as a compressed checkpoint stores them
 * ({@linkcode PackedLinear}: the GPTQ tensors, compressed-tensors'
 * pack-quantized or sparse bitmask ones, as read), and their CPU reference:
 * dequantization of a range of rows into float32
 * ({@linkcode dequantizePackedRows}), which the CPU forward pass runs a chunk
 * of rows at a time. The layouts are described once, in
 * `quantizers/gptq_checkpoint.ts` (GPTQ), `pack_quantized.ts` and
 * `sparse_bitmask.ts` (compressed-tensors). Web-standard only.
 *
 * @module
 */

import { type Tensor, tensor } from "../../core/tensor.ts";
import { asFloat32 } from "../../core/convert.ts";
import type { QuantizedWeight } from "../../quantizers/quantized_weight.ts";
import { sparseRows } from "./sparse_bitmask.ts";

/** Storage types of scales in a packed linear. */
export type ScaleDType = "f32" | "f16" | "bf16";

/**
 * A linear layer in the GPTQ checkpoint layout (see
 * `quantizers/gptq_checkpoint.ts`), as read: K input and N output features.
 */
export interface GptqLinear {
  /** Discriminant. */
  readonly kind: "gptq";
  /** [N, K] = [out features, in features]. */
  readonly shape: readonly [number, number];
  /** Bits per code: 2, 3, 4 or 8. */
  readonly bits: number;
  /** Number of groups (scales per output feature). */
  readonly groups: number;
  /** `qweight`, [⌈K·b/32⌉, N]: column n is row n's codes as one bit stream along K. */
  readonly qweight: Int32Array;
  /** `qzeros`, [groups, ⌈N·b/32⌉]: row g is group g's zero points as a bit stream along N. */
  readonly qzeros: Int32Array;
  /** `scales`, [groups, N]. */
  readonly scales: Tensor<ScaleDType>;
  /** `g_idx`, [K]: the group of each input feature. */
  readonly gIdx: Int32Array;
  /**
   * 1 for `checkpoint_format` "gptq" (v1: zero − 1 stored), 0 for "gptq_v2".
   * v1 zero points are read as GPTQModel turns v1 into v2: 0x…1111 (one 1
   * per field) added to each 32-bit word of `qzeros` at 2, 4 and 8 bits, 1
   * added modulo 2^b to each field at 3 bits. Where every stored field is
   * below 2^b − 1 that is simply stored + 1; it also recovers the zero point
   * 0 that GPTQModel's v1 writer stores by the reverse subtraction (our
   * writer refuses to store it in v1, as other loaders misread it).
   */
  readonly zeroOffset: 0 | 1;
  /** Whether the checkpoint says the grid is symmetric (`sym`), kept for round trips. */
  readonly symmetric: boolean;
  /** The checkpoint's `group_size` (−1 per channel), kept for round trips. */
  readonly groupSize: number;
}

/**
 * A linear layer in compressed-tensors' pack-quantized layout (see
 * `pack_quantized.ts`), as read: K input and N output features.
 */
export interface PackQuantizedLinear {
  /** Discriminant. */
  readonly kind: "pack-quantized";
  /** [N, K] = [out features, in features]. */
  readonly shape: readonly [number, number];
  /** Bits per code, 1–8. */
  readonly bits: number;
  /** Number of groups (scales per output feature). */
  readonly groups: number;
  /** `weight_packed`, [N, ⌈K/⌊32/b⌋⌉]. */
  readonly packed: Int32Array;
  /** `weight_scale`, [N, groups]. */
  readonly scales: Tensor<ScaleDType>;
  /**
   * `weight_zero_point`, [⌈N/⌊32/b⌋⌉, groups], packed along N; null for a
   * symmetric grid (every zero point is 2^(b−1) in unsigned code units).
   */
  readonly zeros: Int32Array | null;
  /** `weight_g_idx`, [K]; null when group g holds input features [g·K/groups, (g+1)·K/groups). */
  readonly gIdx: Int32Array | null;
}

/**
 * A pruned linear layer in compressed-tensors' "sparse-bitmask" or
 * "sparse-24-bitmask" layout (see `sparse_bitmask.ts`), as read.
 */
export interface SparseBitmaskLinear {
  /** Discriminant. */
  readonly kind: "sparse-bitmask";
  /** [N, K] = [out features, in features]. */
  readonly shape: readonly [number, number];
  /** The layout ("sparse-24-bitmask": K/2 values a row). */
  readonly format: "sparse-bitmask" | "sparse-24-bitmask";
  /** `compressed`: the stored values, row by row. */
  readonly values: Tensor<ScaleDType>;
  /** `bitmask`, [N, ⌈K/8⌉]: bit k mod 8 of byte ⌊k/8⌋ of row n set when W[n, k] is stored. */
  readonly bitmask: Uint8Array;
  /** Index in `values` of each row's first value, [N + 1] (the last is the count). */
  readonly rowOffsets: Float64Array;
}

/** A quantized linear kept packed (GPTQ or pack-quantized). */
export type QuantizedPackedLinear = GptqLinear | PackQuantizedLinear;

/** A linear layer kept packed as its checkpoint stores it. */
export type PackedLinear = QuantizedPackedLinear | SparseBitmaskLinear;

/**
 * Whether a stored weight is a {@linkcode PackedLinear} (rather than a dense tensor).
 *
 * @param w A stored weight.
 * @returns True for a packed linear.
 */
export function isPackedLinear(w: Tensor | PackedLinear): w is PackedLinear {
  return "kind" in w &&
    (w.kind === "gptq" || w.kind === "pack-quantized" || w.kind === "sparse-bitmask");
}

/**
 * Bytes a packed linear holds (codes, zero points, scales, group indices).
 *
 * @param w The packed linear.
 * @returns The byte count.
 */
export function packedLinearBytes(w: PackedLinear): number {
  if (w.kind === "sparse-bitmask") return w.values.data.byteLength + w.bitmask.byteLength;
  const scales = w.scales.data.byteLength;
  if (w.kind === "gptq") {
    return w.qweight.byteLength + w.qzeros.byteLength + scales + w.gIdx.byteLength;
  }
  return w.packed.byteLength + (w.zeros?.byteLength ?? 0) + scales + (w.gIdx?.byteLength ?? 0);
}

/** Codes of one 32-bit word holding ⌊32/b⌋ whole codes, code j at bits [j·b, (j+1)·b). */
function decodeAligned(
  words: Int32Array | Uint32Array,
  offset: number,
  bits: number,
  count: number,
  out: Uint16Array,
): void {
  const per = Math.floor(32 / bits), mask = (1 << bits) - 1;
  for (let k = 0, w = offset; k < count; w++) {
    const word = words[w]! >>> 0;
    for (let j = 0; j < per && k < count; j++, k++) out[k] = (word >>> (j * bits)) & mask;
  }
}

/** Codes of a little-endian bit stream (`core/bitpack.ts`), codes may straddle words. */
function decodeStream(words: Uint32Array, bits: number, count: number, out: Uint16Array): void {
  if (32 % bits === 0) return decodeAligned(words, 0, bits, count, out);
  const mask = (1 << bits) - 1;
  for (let k = 0; k < count; k++) {
    const s = k * bits, w = s >>> 5, o = s & 31;
    let v = words[w]! >>> o;
    if (o + bits > 32) v |= words[w + 1]! << (32 - o);
    out[k] = v & mask;
  }
}

/** Code `i` of a little-endian bit stream of words. */
function streamCode(words: Int32Array, base: number, bits: number, i: number): number {
  const s = i * bits, w = base + (s >>> 5), o = s & 31;
  let v = words[w]! >>> o;
  if (o + bits > 32) v |= words[w + 1]! << (32 - o);
  return v & ((1 << bits) - 1);
}

/** Scales of rows [r0, r1) as float32 [rows, groups] (row-major by output feature). */
function rowScales(w: QuantizedPackedLinear, r0: number, r1: number): Float32Array {
  const N = w.shape[0], G = w.groups, rows = r1 - r0;
  if (w.kind === "pack-quantized") {
    // [N, groups]: the rows' scales are contiguous.
    const part = w.scales.data.subarray(r0 * G, r1 * G);
    return Float32Array.from(asFloat32({ ...w.scales, shape: [rows * G], data: part } as Tensor));
  }
  // [groups, N]: gather column by column.
  const out = new Float32Array(rows * G);
  for (let g = 0; g < G; g++) {
    const part = w.scales.data.subarray(g * N + r0, g * N + r1);
    const f = asFloat32({ ...w.scales, shape: [rows], data: part } as Tensor);
    for (let i = 0; i < rows; i++) out[i * G + g] = f[i]!;
  }
  return out;
}

/** Zero points (unsigned code units) of rows [r0, r1), [rows, groups]. */
function rowZeros(w: QuantizedPackedLinear, r0: number, r1: number): Float64Array {
  const N = w.shape[0], G = w.groups, b = w.bits, rows = r1 - r0;
  const out = new Float64Array(rows * G);
  if (w.kind === "gptq") {
    const wordsN = Math.ceil((N * b) / 32), mask = (1 << b) - 1;
    // v1 at 2, 4, 8 bits: one 1 per field added to the whole word (carries included).
    const ones = w.zeroOffset === 1 && 32 % b === 0 ? Math.floor(0xffffffff / mask) : 0;
    for (let g = 0; g < G; g++) {
      for (let i = 0; i < rows; i++) {
        const n = r0 + i;
        if (ones !== 0) {
          const word = (w.qzeros[g * wordsN + ((n * b) >>> 5)]! + ones) >>> 0;
          out[i * G + g] = (word >>> ((n * b) & 31)) & mask;
        } else {
          out[i * G + g] = (streamCode(w.qzeros, g * wordsN, b, n) + w.zeroOffset) & mask;
        }
      }
    }
    return out;
  }
  if (w.zeros === null) return out.fill(2 ** (b - 1));
  const per = Math.floor(32 / b), mask = (1 << b) - 1;
  for (let i = 0; i < rows; i++) {
    const n = r0 + i, base = Math.floor(n / per) * G, shift = (n % per) * b;
    for (let g = 0; g < G; g++) out[i * G + g] = ((w.zeros[base + g]! >>> 0) >>> shift) & mask;
  }
  return out;
}

/** Group of each input feature. */
function groupOf(w: QuantizedPackedLinear): Int32Array {
  if (w.gIdx) return w.gIdx;
  const K = w.shape[1], size = K / w.groups;
  return Int32Array.from({ length: K }, (_, k) => Math.floor(k / size));
}

/**
 * Calls `row(i, codes)` with the K codes of each row r0 + i in [r0, r1)
 * (the same scratch array each time).
 */
function forEachRowCodes(
  w: QuantizedPackedLinear,
  r0: number,
  r1: number,
  row: (i: number, codes: Uint16Array) => void,
): void {
  const [N, K] = w.shape, b = w.bits, rows = r1 - r0;
  const codes = new Uint16Array(K);
  if (w.kind === "pack-quantized") {
    const wordsK = Math.ceil(K / Math.floor(32 / b));
    for (let i = 0; i < rows; i++) {
      decodeAligned(w.packed, (r0 + i) * wordsK, b, K, codes);
      row(i, codes);
    }
    return;
  }
  // qweight is [wordsK, N]: gather the chunk's columns word row by word row
  // (contiguous reads), then decode each column's stream.
  const wordsK = Math.ceil((K * b) / 32);
  const cols = new Uint32Array(rows * wordsK);
  for (let j = 0; j < wordsK; j++) {
    const base = j * N + r0;
    for (let i = 0; i < rows; i++) cols[i * wordsK + j] = w.qweight[base + i]!;
  }
  for (let i = 0; i < rows; i++) {
    decodeStream(cols.subarray(i * wordsK, (i + 1) * wordsK), b, K, codes);
    row(i, codes);
  }
}

function checkRows(w: PackedLinear, r0: number, r1: number, out: Float32Array): void {
  const [N, K] = w.shape;
  if (!(Number.isInteger(r0) && Number.isInteger(r1) && 0 <= r0 && r0 <= r1 && r1 <= N)) {
    throw new RangeError(`Cannot dequantize rows [${r0}, ${r1}) of a weight of ${N} rows`);
  }
  if (out.length < (r1 - r0) * K) {
    throw new RangeError(
      `Cannot dequantize ${r1 - r0} rows of ${K} into 'out' of ${out.length} values`,
    );
  }
}

/** Group size of a plain grouping (group g holds features [g·size, (g+1)·size)), else 0. */
const plainGroupSize = new WeakMap<QuantizedPackedLinear, number>();

/**
 * Whether each 32-bit word of the linear's rows holds whole codes of one
 * group (codes aligned to words, groups contiguous and a whole number of
 * words), so that rows can be decoded word by word through a per-group table.
 */
function plainWords(w: QuantizedPackedLinear): boolean {
  if (w.kind === "gptq" && 32 % w.bits !== 0) return false;
  let size = plainGroupSize.get(w);
  if (size === undefined) {
    const K = w.shape[1];
    size = w.groups === 1 ? K : w.kind === "pack-quantized" ? K / w.groups : w.groupSize;
    const gIdx = w.gIdx;
    if (gIdx && !gIdx.every((g, k) => g === Math.floor(k / size!))) size = 0;
    plainGroupSize.set(w, size);
  }
  return size > 0 && (size === w.shape[1] || size % Math.floor(32 / w.bits) === 0);
}

/**
 * {@linkcode dequantizePackedRows} for {@linkcode plainWords} layouts: each
 * group's 2^b values fround(scale·(c − zero)) are tabulated once (up to 4
 * bits) and codes are read word by word: the same values as the generic path.
 */
function dequantizeWords(
  w: QuantizedPackedLinear,
  r0: number,
  r1: number,
  scales: Float32Array,
  zeros: Float64Array,
  out: Float32Array,
): void {
  const [N, K] = w.shape, G = w.groups, b = w.bits, size = plainGroupSize.get(w)!;
  const per = Math.floor(32 / b), mask = (1 << b) - 1, levels = 1 << b;
  const wordsK = Math.ceil(K / per), rows = r1 - r0;
  // Row i's words at words[base + i·wordsK + j]: GPTQ's [wordsK, N] columns are
  // gathered word row by word row (contiguous reads) into rows first.
  let words: Int32Array | Uint32Array, base: number;
  if (w.kind === "pack-quantized") [words, base] = [w.packed, r0 * wordsK];
  else {
    [words, base] = [new Uint32Array(rows * wordsK), 0];
    for (let j = 0; j < wordsK; j++) {
      const from = j * N + r0;
      for (let i = 0; i < rows; i++) words[i * wordsK + j] = w.qweight[from + i]!;
    }
  }
  const lut = new Float32Array(levels), tabulate = levels <= 16;
  for (let i = 0; i < rows; i++) {
    const o = i * K;
    let k = 0, wi = base + i * wordsK;
    for (let g = 0; g < G; g++) {
      const s = scales[i * G + g]!, z = zeros[i * G + g]!, end = Math.min(K, k + size);
      if (tabulate) {
        for (let c = 0; c < levels; c++) lut[c] = s * (c - z);
        if (b === 4) {
          // Eight codes a word, unrolled (the common case).
          for (; k + 8 <= end; wi++, k += 8) {
            const word = words[wi]! >>> 0, q = o + k;
            out[q] = lut[word & 15]!;
            out[q + 1] = lut[(word >>> 4) & 15]!;
            out[q + 2] = lut[(word >>> 8) & 15]!;
            out[q + 3] = lut[(word >>> 12) & 15]!;
            out[q + 4] = lut[(word >>> 16) & 15]!;
            out[q + 5] = lut[(word >>> 20) & 15]!;
            out[q + 6] = lut[(word >>> 24) & 15]!;
            out[q + 7] = lut[word >>> 28]!;
          }
        }
        for (; k < end; wi++) {
          const word = words[wi]! >>> 0;
          for (let j = 0; j < per && k < end; j++, k++) {
            out[o + k] = lut[(word >>> (j * b)) & mask]!;
          }
        }
      } else {
        for (; k < end; wi++) {
          const word = words[wi]! >>> 0;
          for (let j = 0; j < per && k < end; j++, k++) {
            out[o + k] = s * (((word >>> (j * b)) & mask) - z);
          }
        }
      }
    }
  }
}

/**
 * Dequantizes rows [r0, r1) of a packed linear into `out` (row-major [r1 − r0, K]):
 * Ŵ[n, k] = scale[n, g]·(code[n, k] − zero[n, g]), g = g_idx[k], rounded once
 * to float32, the same value `dequantize()` gives for the unpacked weight. The
 * CPU reference of the packed formats.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dequantizePackedRows, type GptqLinear } from "./packed_linear.ts";
 * import { tensor } from "../../core/tensor.ts";
 * // One row of 8 four-bit codes 0..7 in one word (code k at bits 4k), zero 1 stored as 0 (v1).
 * const w: GptqLinear = {
 *   kind: "gptq", shape: [1, 8], bits: 4, groups: 1, symmetric: false, groupSize: -1,
 *   qweight: new Int32Array([0x76543210]), qzeros: new Int32Array([0]),
 *   scales: tensor("f16", [1, 1], new Float16Array([0.5])), gIdx: new Int32Array(8), zeroOffset: 1,
 * };
 * const out = new Float32Array(8);
 * dequantizePackedRows(w, 0, 1, out);
 * assert.deepEqual([...out], [-0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3]);
 * ```
 * @param w The packed linear.
 * @param r0 First row (output feature).
 * @param r1 End row (exclusive).
 * @param out Destination, at least (r1 − r0)·K values (written into: the caller's buffer).
 * @throws {RangeError} for rows outside the weight or a short `out`.
 */
export function dequantizePackedRows(
  w: PackedLinear,
  r0: number,
  r1: number,
  out: Float32Array,
): void {
  checkRows(w, r0, r1, out);
  if (w.kind === "sparse-bitmask") return sparseRows(w, r0, r1, out);
  const K = w.shape[1], G = w.groups;
  const scales = rowScales(w, r0, r1), zeros = rowZeros(w, r0, r1);
  if (plainWords(w)) return dequantizeWords(w, r0, r1, scales, zeros, out);
  const gIdx = groupOf(w);
  forEachRowCodes(w, r0, r1, (i, codes) => {
    const o = i * K, s = i * G;
    for (let k = 0; k < K; k++) {
      const g = s + gIdx[k]!;
      out[o + k] = scales[g]! * (codes[k]! - zeros[g]!);
    }
  });
}

/**
 * The whole float32 weight of a packed linear, rows optionally reordered.
 *
 * @param w The packed linear.
 * @param rowOrder Stored row of each output row (identity when absent).
 * @returns Ŵ, f32 [N, K].
 */
export function dequantizePacked(w: PackedLinear, rowOrder?: Int32Array): Tensor<"f32"> {
  const [N, K] = w.shape;
  const flat = new Float32Array(N * K);
  dequantizePackedRows(w, 0, N, flat);
  if (!rowOrder) return tensor("f32", [N, K], flat);
  const out = new Float32Array(N * K);
  for (let r = 0; r < N; r++) {
    out.set(flat.subarray(rowOrder[r]! * K, (rowOrder[r]! + 1) * K), r * K);
  }
  return tensor("f32", [N, K], out);
}

/**
 * The unpacked {@linkcode QuantizedWeight} of a packed linear (one code per
 * element, scales widened to float32, zero points in unsigned code units):
 * what `packWeights()` takes to build the layout of the WebGPU `qmatmul`.
 *
 * @param w The packed quantized linear.
 * @returns The quantized weight, codes [N, K] in the stored row order.
 */
export function unpackPackedLinear(w: QuantizedPackedLinear): QuantizedWeight {
  const [N, K] = w.shape, G = w.groups;
  const codes = w.bits <= 8 ? new Uint8Array(N * K) : new Uint16Array(N * K);
  forEachRowCodes(w, 0, N, (i, c) => codes.set(c, i * K));
  const zeros = Float32Array.from(rowZeros(w, 0, N));
  const gIdx = Int32Array.from(groupOf(w));
  const groupSize = w.kind === "gptq" ? w.groupSize : G === 1 ? -1 : K / G;
  const symmetric = w.kind === "gptq" ? w.symmetric : w.zeros === null;
  return {
    kind: "uniform",
    shape: [N, K],
    bits: w.bits,
    groupSize,
    symmetric,
    codes,
    scales: rowScales(w, 0, N),
    zeros,
    gIdx,
    stats: { seconds: 0 },
  };
}
