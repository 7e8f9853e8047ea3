/**
 * Wanda: pruning by weights and activations. Web-standard only.
 *
 * @see Sun, Liu, Bair, Kolter. "A Simple and Effective Pruning Approach for
 * Large Language Models" (2023), section 3: the score |W_ij|·‖X_j‖₂, compared
 * within each output row.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import type { Hessian } from "../hessian/hessian.ts";
import { type DeviceHessian, isDeviceHessian } from "../hessian/device_hessian.ts";
import { checkedWeight, maskedResult } from "./_common.ts";
import type { PruneResult } from "./prune_result.ts";
import { type SparsityStructure, structureMask, validateStructure } from "./structure.ts";

/** Options of {@linkcode wanda}. */
export interface WandaOptions {
  /**
   * Which weights may be pruned together. An unstructured structure without a
   * `scope` compares weights within each output row (`"row"`), as the paper does.
   */
  structure: SparsityStructure;
}

/**
 * Wanda scores |W_ij|·‖x_j‖ [rows, cols], with ‖x_j‖ ∝ sqrt(xtx_jj) from the
 * Hessian's diagonal (the constant factor √count changes no ranking).
 *
 * @param weight Float weight [rows, cols].
 * @param hessian Input statistics with `cols` matching the weight.
 * @returns The scores, row-major.
 */
export function wandaScores(weight: Tensor, hessian: Hessian | DeviceHessian): Float64Array {
  const { rows, cols, w } = checkedWeight(weight, "score with Wanda");
  return scoresOf(w, rows, cols, hessian);
}

function scoresOf(
  w: Float64Array,
  rows: number,
  cols: number,
  hessian: Hessian | DeviceHessian,
): Float64Array {
  const norms = inputNorms(hessian, cols);
  const scores = new Float64Array(rows * cols); // [rows, cols]
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let c = 0; c < cols; c++) scores[o + c] = Math.abs(w[o + c]!) * norms[c]!;
  }
  return scores;
}

function inputNorms(hessian: Hessian | DeviceHessian, cols: number): Float64Array {
  const onDevice = isDeviceHessian(hessian);
  if (
    hessian === null || typeof hessian !== "object" ||
    !(onDevice || hessian.xtx instanceof Float64Array)
  ) {
    throw new TypeError(
      `Cannot prune with Wanda as 'hessian' must be a Hessian { cols, count, xtx }`,
    );
  }
  if (hessian.cols !== cols || (!onDevice && hessian.xtx.length !== cols * cols)) {
    throw new RangeError(
      `Cannot prune with Wanda as 'hessian' has ${hessian.cols} columns but 'weight' has ${cols}`,
    );
  }
  const norms = new Float64Array(cols);
  for (let c = 0; c < cols; c++) {
    const d = onDevice ? hessian.diag[c]! : hessian.xtx[c * cols + c]!;
    if (!(d >= 0) || !Number.isFinite(d)) {
      throw new TypeError(
        `Cannot prune with Wanda as 'hessian.xtx' has diagonal ${d} at column ${c}`,
      );
    }
    norms[c] = Math.sqrt(d);
  }
  return norms;
}

/**
 * Prunes by the Wanda score |W_ij|·‖x_j‖, exactly the count the structure
 * asks for (ties: the earlier weight first). Kept weights are unchanged; no
 * weight update, unlike SparseGPT.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "../core/tensor.ts";
 * import { wanda } from "./wanda.ts";
 * const w = tensor("f32", [1, 2], new Float32Array([1, 2]));
 * const h = { cols: 2, count: 1, xtx: new Float64Array([9, 0, 0, 1]) };
 * const { weight } = await wanda(w, h, { structure: { kind: "unstructured", sparsity: 0.5 } });
 * assert(weight.data[0] === 1 && weight.data[1] === 0); // 1·3 > 2·1
 * ```
 * @param weight Float weight [rows, cols] = [out features, in features]; not mutated.
 * @param hessian Calibration statistics: `xtx` [cols, cols] = mean of x·xᵀ (only its
 *   diagonal is used; a device Hessian's host diagonal serves).
 * @param options The structure.
 * @returns The pruned weight (f32), its keep-mask, the achieved sparsity and the seconds spent.
 * @throws {RangeError} for an invalid structure or mismatched shapes.
 * @throws {TypeError} for NaN or infinite weights or a malformed Hessian.
 */
export function wanda(
  weight: Tensor,
  hessian: Hessian | DeviceHessian,
  options: WandaOptions,
): Promise<PruneResult> {
  try {
    const t0 = performance.now();
    const { structure } = options ?? {};
    const { rows, cols, w } = checkedWeight(weight, "prune with Wanda");
    validateStructure(structure, cols, "prune with Wanda");
    const scores = scoresOf(w, rows, cols, hessian);
    const mask = structureMask(scores, [rows, cols], structure, "row");
    return Promise.resolve(
      maskedResult(w, mask, rows, cols, { seconds: (performance.now() - t0) / 1000 }),
    );
  } catch (e) {
    return Promise.reject(e);
  }
}
