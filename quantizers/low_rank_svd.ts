/**
 * The plain low-rank baseline of {@linkcode eora}: the truncated SVD of the
 * compression error ΔW = W − Ŵ, which ignores the layer's inputs (EoRA with
 * H = I). Web-standard only.
 *
 * B = U_r, A = U_rᵀ·ΔW with U_r the top-r left singular vectors of ΔW, so
 * B·A = U_r·Σ_r·V_rᵀ, the best rank-r approximation of ΔW in Frobenius norm
 * (Eckart–Young); singular values at most 1e-12·σ₁ count as 0.
 *
 * @see Eckart and Young, "The approximation of one matrix by another of lower
 *   rank", Psychometrika 1 (1936).
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import type { LowRankFactorOptions, LowRankFactors } from "./low_rank_factors.ts";
import {
  correctionInputs,
  quadraticLoss,
  residual,
  resolveFactorOptions,
  truncatedFactors,
} from "./_low_rank_factors.ts";

/** Options of {@linkcode lowRankSvd}: rank and factor storage. */
export type LowRankSvdOptions = LowRankFactorOptions;

/**
 * The rank-r truncated SVD of W − Ŵ as factors B [rows, r], A [r, cols]
 * with W ≈ Ŵ + B·A. Its `stats` losses are Frobenius norms (H = I).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lowRankSvd } from "./low_rank_svd.ts";
 * import { tensor } from "../core/tensor.ts";
 * const w = tensor("f32", [2, 2], new Float32Array([3, 0, 0, 1]));
 * const approx = tensor("f32", [2, 2], new Float32Array(4));
 * const { stats } = await lowRankSvd(w, approx, { rank: 1, dtype: "f32" });
 * assert(Math.abs(stats.error - 1) < 1e-12); // σ₂² is left
 * ```
 * @param weight W [rows, cols], any float dtype.
 * @param approx Ŵ [rows, cols].
 * @param options Rank and factor storage.
 * @returns The factors as stored, their bits and the losses.
 * @throws {RangeError} for mismatched shapes, non-finite values (naming the
 *   argument), or an option out of range.
 */
export async function lowRankSvd(
  weight: Tensor,
  approx: Tensor,
  options: LowRankSvdOptions,
): Promise<LowRankFactors> {
  const t0 = performance.now();
  const { rows, cols, d } = correctionInputs(weight, approx, "lowRankSvd");
  const o = resolveFactorOptions(options, rows, cols, "lowRankSvd");
  const { stored, effectiveRank, discarded } = await truncatedFactors(
    d,
    d,
    rows,
    cols,
    o,
    "lowRankSvd",
  );
  return {
    kind: "svd",
    rank: o.rank,
    ...stored,
    bitsPerWeight: stored.bits / (rows * cols),
    stats: {
      error: quadraticLoss(residual(d, rows, cols, stored), rows, cols, null),
      errorBefore: quadraticLoss(d, rows, cols, null),
      discarded,
      effectiveRank,
      seconds: (performance.now() - t0) / 1000,
    },
  };
}
