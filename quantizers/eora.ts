/**
 * EoRA: training-free compensation of a compressed weight by a low-rank
 * correction found in the eigenspace of the layer's inputs. Web-standard only.
 *
 * Given W, its compressed stand-in Ŵ (quantized, pruned or both) and the
 * Hessian H = XᵀX / tokens (the mean of x·xᵀ, no factor 2), EoRA finds B
 * [rows, r] and A [r, cols] minimizing ‖(ΔW − B·A)X‖²_F with ΔW = W − Ŵ:
 *
 * 1. H = Q·Λ·Qᵀ (`eigh`), so ‖E·X‖²_F / tokens = ‖E·Q·Λ^½‖²_F for any E.
 * 2. M = ΔW·Q·Λ^½ [rows, cols]; its SVD M = U·Σ·Vᵀ, truncated to rank r, is
 *    the best rank-r approximation of M (Eckart–Young), and B·A·Q·Λ^½ =
 *    U_r·Σ_r·V_rᵀ is exactly that. The loss left is Σ_{k>r} σ_k².
 * 3. Mapping back through (Q·Λ^½)⁻¹ = Λ^-½·Qᵀ gives the paper's
 *    B·A = U_r·Σ_r·V_rᵀ·Λ^-½·Qᵀ. Since V_rᵀ = Σ_r⁻¹·U_rᵀ·M, that product is
 *    U_r·U_rᵀ·ΔW, and we store B = U_r, A = U_rᵀ·ΔW: the correction
 *    projects the error's columns onto the top-r left singular subspace of
 *    M. Λ^-½ is never formed, so tiny eigenvalues cannot blow up A.
 *
 * Zero and tiny eigenvalues, exactly: with λ_max the largest eigenvalue, an
 * eigenvalue λᵢ ≤ `eigenFloor`·λ_max (this covers the small negative values
 * rounding gives a semidefinite H) is treated as exactly 0: column i of M is
 * 0, so directions the calibration inputs do not excite have no say in U_r.
 * In those directions the loss does not depend on A at all; A = U_rᵀ·ΔW
 * applies the same projection U_r·U_rᵀ there too, which among the loss-optimal
 * corrections with that column space is the one closest to ΔW in Frobenius
 * norm. When M has rank below r (fewer tokens than r, or Ŵ = W on the excited
 * span), singular values at most 1e-12·σ₁ count as 0 and the factor rows and
 * columns past M's rank are zero rather than arbitrary. With H = 0 the
 * correction is 0.
 *
 * @see Liu et al., "EoRA: Training-free Compensation for Compressed LLM with
 *   Eigenspace Low-Rank Approximation" (2024): the eigenspace projection
 *   of the compression error and its truncated SVD.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { tensor } from "../core/tensor.ts";
import { eigh } from "../core/linalg.ts";
import { matmulRaw } from "../core/_dense.ts";
import { firstNonFinite } from "../core/_finite.ts";
import type { Hessian } from "../hessian/hessian.ts";
import { type DeviceHessian, hostHessian, isDeviceHessian } from "../hessian/device_hessian.ts";
import type { LowRankFactorOptions, LowRankFactors } from "./low_rank_factors.ts";
import {
  correctionInputs,
  quadraticLoss,
  residual,
  resolveFactorOptions,
  truncatedFactors,
} from "./_low_rank_factors.ts";

/** Options of {@linkcode eora}. */
export interface EoraOptions extends LowRankFactorOptions {
  /**
   * Relative eigenvalue floor: eigenvalues λᵢ of H with λᵢ ≤ eigenFloor·λ_max
   * (negative rounding noise included) are treated as exactly 0, i.e. as
   * directions the inputs do not excite. In [0, 1).
   * @default 1e-10
   */
  eigenFloor?: number;
}

/**
 * The EoRA correction of a compressed weight: B [rows, r], A [r, cols] with
 * W ≈ Ŵ + B·A, minimizing ‖(W − Ŵ − B·A)X‖²_F for the inputs X whose mean
 * x·xᵀ is `hessian` (see the module docs for the construction and the
 * handling of zero eigenvalues).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { eora } from "./eora.ts";
 * import { hessian } from "../hessian/hessian.ts";
 * import { tensor } from "../core/tensor.ts";
 * const x = tensor("f32", [8, 3], Float32Array.from({ length: 24 }, (_, i) => Math.sin(i)));
 * const w = tensor("f32", [2, 3], new Float32Array([1, 2, 3, 4, 5, 6]));
 * const approx = tensor("f32", [2, 3], new Float32Array([1, 2, 3, 4, 5, 5])); // one weight off
 * const { a, b, stats } = await eora(w, approx, hessian(x), { rank: 1, dtype: "f32" });
 * assert.deepEqual([b.shape, a.shape], [[2, 1], [1, 3]]);
 * assert(stats.error < 1e-10 * stats.errorBefore); // a rank-1 error is removed
 * ```
 * @param weight W [rows, cols], any float dtype.
 * @param approx Ŵ [rows, cols], its compressed stand-in.
 * @param hessian H [cols, cols], the mean of x·xᵀ over the layer's inputs
 *   (in a pipeline: the compressed model's inputs); a device one is read back.
 * @param options Rank, eigenvalue floor, factor storage.
 * @returns The factors as stored, their bits and the losses.
 * @throws {TypeError} when an argument is not a tensor / Hessian.
 * @throws {RangeError} for mismatched shapes, a Hessian of the wrong order,
 *   non-finite values (naming the argument), or an option out of range.
 */
export async function eora(
  weight: Tensor,
  approx: Tensor,
  hessian: Hessian | DeviceHessian,
  options: EoraOptions,
): Promise<LowRankFactors> {
  const t0 = performance.now();
  const { rows, cols, d } = correctionInputs(weight, approx, "eora");
  const o = resolveFactorOptions(options, rows, cols, "eora");
  const { eigenFloor = 1e-10 } = options;
  if (!(typeof eigenFloor === "number" && eigenFloor >= 0 && eigenFloor < 1)) {
    throw new RangeError(
      `Cannot compute eora() as 'eigenFloor' must be a number in [0, 1): current value is ${eigenFloor}`,
    );
  }
  const h = await checkedHessian(hessian, rows, cols);
  let eig: ReturnType<typeof eigh>;
  try {
    eig = eigh(tensor("f64", [cols, cols], h)); // ascending; Q [cols, cols]
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    throw new RangeError(`Cannot compute eora() as 'hessian' is invalid: ${e.message}`);
  }
  const { values, vectors } = eig;
  const lmax = values.data[cols - 1]!;
  const root = new Float64Array(cols); // Λ^½ with the floor applied
  let zeroEigenvalues = 0;
  for (let i = 0; i < cols; i++) {
    const l = values.data[i]!;
    if (lmax > 0 && l > eigenFloor * lmax) root[i] = Math.sqrt(l);
    else zeroEigenvalues++;
  }
  const m = matmulRaw(d, vectors.data, rows, cols, cols); // ΔW·Q [rows, cols]
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) m[i * cols + j] = m[i * cols + j]! * root[j]!;
  }
  const { stored, effectiveRank, discarded } = await truncatedFactors(d, m, rows, cols, o, "eora");
  const error = quadraticLoss(residual(d, rows, cols, stored), rows, cols, h);
  const errorBefore = quadraticLoss(d, rows, cols, h);
  return {
    kind: "eora",
    rank: o.rank,
    ...stored,
    bitsPerWeight: stored.bits / (rows * cols),
    stats: {
      error,
      errorBefore,
      discarded,
      effectiveRank,
      zeroEigenvalues,
      seconds: (performance.now() - t0) / 1000,
    },
  };
}

/** The Hessian's mean x·xᵀ, checked against W's columns and for finiteness. */
async function checkedHessian(
  hessian: Hessian | DeviceHessian,
  rows: number,
  cols: number,
): Promise<Float64Array> {
  if (hessian === null || typeof hessian !== "object" || !("cols" in hessian)) {
    throw new TypeError(
      `Cannot compute eora() as 'hessian' must be a Hessian ({ cols, count, xtx }): ` +
        `current value is ${hessian}`,
    );
  }
  if (hessian.cols !== cols) {
    throw new RangeError(
      `Cannot compute eora() as 'hessian' must be [${cols}, ${cols}] for a [${rows}, ${cols}] ` +
        `weight: it is [${hessian.cols}, ${hessian.cols}]`,
    );
  }
  const h = isDeviceHessian(hessian) ? await hostHessian(hessian) : hessian;
  const xtx = h.xtx;
  if (!(xtx instanceof Float64Array) || xtx.length !== cols * cols) {
    throw new RangeError(
      `Cannot compute eora() as 'hessian.xtx' must be a Float64Array of ${cols}·${cols} ` +
        `elements: it has ${(xtx as { length?: number } | undefined)?.length}`,
    );
  }
  const bad = firstNonFinite(xtx);
  if (bad >= 0) {
    throw new RangeError(
      `Cannot compute eora() as 'hessian' must be finite: element ${bad} is ${xtx[bad]}`,
    );
  }
  return xtx;
}
