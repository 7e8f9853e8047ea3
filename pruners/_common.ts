/**
 * Library-internal helpers shared by the pruners: weight validation and
 * result assembly. Web-standard only.
 *
 * @module
 */

import { asFloat64 } from "../core/convert.ts";
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

/** Checks that a weight is a finite 2-D float tensor (without copying f32/f64 storage). */
export function checkWeight(weight: Tensor, caller: string): { rows: number; cols: number } {
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
  const w: ArrayLike<number> = weight.dtype === "f32" || weight.dtype === "f64"
    ? weight.data as Float32Array
    : asFloat64(weight);
  for (let i = 0; i < w.length; i++) {
    if (!Number.isFinite(w[i]!)) {
      throw new TypeError(
        `Cannot ${caller} as 'weight' holds ${w[i]} at [${Math.floor(i / cols)}, ${i % cols}]`,
      );
    }
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
 * The keep-mask (1 = kept) of a pruned-mask (1 = pruned) and the count pruned.
 *
 * @param pruned 1 where pruned, 0 elsewhere.
 * @returns The complement and the number of ones in `pruned`.
 */
export function keepMaskOf(pruned: Uint8Array): { mask: Uint8Array; prunedCount: number } {
  const mask = new Uint8Array(pruned.length);
  let prunedCount = 0;
  for (let i = 0; i < mask.length; i++) {
    mask[i] = pruned[i] ? 0 : 1;
    prunedCount += pruned[i]!;
  }
  return { mask, prunedCount };
}
