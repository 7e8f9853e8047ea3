/**
 * Magnitude pruning: drop the weights of smallest absolute value. Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { checkedWeight, maskedResult } from "./_common.ts";
import type { PruneResult } from "./prune_result.ts";
import { type SparsityStructure, structureMask, validateStructure } from "./structure.ts";

/** Options of {@linkcode magnitudePrune}. */
export interface MagnitudePruneOptions {
  /**
   * Which weights may be pruned together. An unstructured structure without a
   * `scope` uses one threshold over the whole layer (`"layer"`), as the
   * reference magnitude baseline does. (That code prunes every |w| at or
   * below the value at sorted index ⌊sparsity·numel⌋, one weight more than
   * the requested count on distinct values; we prune exactly ⌊sparsity·numel⌋.)
   */
  structure: SparsityStructure;
}

/**
 * Prunes the weights of smallest |w|, exactly the count the structure asks
 * for (ties: the earlier weight is pruned first). The kept weights are unchanged.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "../core/tensor.ts";
 * import { magnitudePrune } from "./magnitude.ts";
 * const w = tensor("f32", [1, 4], new Float32Array([0.1, -2, 0.3, -0.05]));
 * const { weight, sparsity } = await magnitudePrune(w, { structure: { kind: "nm", n: 2, m: 4 } });
 * assert(sparsity === 0.5 && weight.data[0] === 0 && weight.data[1] === -2);
 * ```
 * @param weight Float weight [rows, cols] = [out features, in features]; not mutated.
 * @param options The structure.
 * @returns The pruned weight (f32), its keep-mask, the achieved sparsity and the seconds spent.
 * @throws {RangeError} for an invalid structure or a non-2-D weight.
 * @throws {TypeError} for NaN or infinite weights.
 */
export function magnitudePrune(
  weight: Tensor,
  options: MagnitudePruneOptions,
): Promise<PruneResult> {
  try {
    const t0 = performance.now();
    const { structure } = options ?? {};
    const { rows, cols, w } = checkedWeight(weight, "prune by magnitude");
    validateStructure(structure, cols, "prune by magnitude");
    const scores = new Float64Array(w.length);
    for (let i = 0; i < w.length; i++) scores[i] = Math.abs(w[i]!);
    const mask = structureMask(scores, [rows, cols], structure, "layer");
    return Promise.resolve(
      maskedResult(w, mask, rows, cols, { seconds: (performance.now() - t0) / 1000 }),
    );
  } catch (e) {
    return Promise.reject(e);
  }
}
