/**
 * Library-internal helpers shared by the pruners: weight validation and
 * result assembly. Web-standard only.
 *
 * @module
 */

import { asFloat64, elementAsNumber } from "../core/convert.ts";
import { firstNonFinite, firstNonFinite16 } from "../core/_finite.ts";
import { type Tensor, tensor } from "../core/tensor.ts";
import type { CompressionStats } from "../quantizers/quantized_weight.ts";
import type { PruneResult } from "./prune_result.ts";

/** A 2-D float weight as float64 values, checked finite. */
export function checkedWeight(
  weight: Tensor,
  caller: string,
): { rows: number; cols: number; w: Float64Array } {
  const { rows, cols } = checkWeight(weight, caller);
  return { rows, cols, w: asFloat64(weight) };
}

/**
 * Checks that a weight is a finite 2-D float tensor (without copying or
 * converting its storage); with `scan` false, only its shape and dtype (for a
 * caller whose solver scans the values itself).
 */
export function checkWeight(
  weight: Tensor,
  caller: string,
  scan = true,
): { rows: number; cols: number } {
  if (weight === null || typeof weight !== "object" || !Array.isArray(weight.shape)) {
    throw new TypeError(
      `Cannot ${caller} as 'weight' must be a Tensor: current value is ${weight}`,
    );
  }
  if (weight.shape.length !== 2) {
    throw new RangeError(
      `Cannot ${caller} as 'weight' must be 2-D [rows, cols]: current shape is [${weight.shape}]`,
    );
  }
  const allowed = ["f64", "f32", "f16", "bf16"];
  if (!allowed.includes(weight.dtype)) {
    throw new TypeError(
      `Cannot ${caller} as 'weight' must be a float tensor (${
        allowed.join(", ")
      }): current dtype is ${weight.dtype}`,
    );
  }
  const rows = weight.shape[0]!, cols = weight.shape[1]!;
  if (!scan) return { rows, cols };
  // Scanned in place: float32/64 values, or the raw bits of float16/bfloat16.
  const data = weight.data as Float32Array | Float64Array | Uint16Array | Float16Array;
  const i = weight.dtype === "f16" || weight.dtype === "bf16"
    ? firstNonFinite16(
      new Uint16Array(data.buffer, data.byteOffset, data.length),
      weight.dtype === "bf16" ? 0x7f80 : 0x7c00,
    )
    : firstNonFinite(data as Float32Array | Float64Array);
  if (i >= 0) {
    throw new TypeError(
      `Cannot ${caller} as 'weight' holds ${elementAsNumber(weight, i)} at [${
        Math.floor(i / cols)
      }, ${i % cols}]`,
    );
  }
  return { rows, cols };
}

/** The {@linkcode PruneResult} of `w` with `mask` applied (w is only read). */
export function maskedResult(
  w: ArrayLike<number>,
  mask: Uint8Array,
  rows: number,
  cols: number,
  stats: CompressionStats,
): PruneResult {
  const out = new Float32Array(rows * cols);
  let pruned = 0;
  for (let i = 0; i < out.length; i++) {
    if (mask[i] === 1) out[i] = w[i]!;
    else pruned++;
  }
  return {
    weight: tensor("f32", [rows, cols], out),
    mask: tensor("bool", [rows, cols], mask),
    sparsity: out.length === 0 ? 0 : pruned / out.length,
    stats,
  };
}

/**
 * Turns a pruned-mask (1 = pruned) into the keep-mask (1 = kept), in place,
 * and counts the pruned weights.
 *
 * @param mask 1 where pruned, 0 elsewhere (no other values); overwritten by its complement.
 * @returns The number of ones `mask` held.
 */
export function invertMaskInPlace(mask: Uint8Array): number {
  const len = mask.length;
  let prunedCount = 0, i = 0;
  if (mask.byteOffset % 4 === 0) {
    // Four bytes at a time: 1 − b is b XOR 1 for b in {0, 1}, and the top
    // byte of x·0x01010101 is the sum of x's four bytes (at most 4: no carry).
    const words = new Uint32Array(mask.buffer, mask.byteOffset, len >>> 2);
    for (let j = 0; j < words.length; j++) {
      const x = words[j]!;
      words[j] = x ^ 0x01010101;
      prunedCount += Math.imul(x, 0x01010101) >>> 24;
    }
    i = words.length * 4;
  }
  for (; i < len; i++) {
    prunedCount += mask[i]!;
    mask[i] = mask[i] ? 0 : 1;
  }
  return prunedCount;
}
