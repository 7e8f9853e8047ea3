/**
 * Low-rank corrections of a compressed weight: the factors B [rows, r] and
 * A [r, cols] with W ≈ Ŵ + B·A that {@linkcode eora} and
 * {@linkcode lowRankSvd} return, how they are stored (float16, float32, or a
 * uniform grid) and counted, and the dense Ŵ + B·A ({@linkcode addLowRank}).
 * Web-standard only.
 *
 * @module
 */

import { dims2, type Tensor, tensor } from "../core/tensor.ts";
import { asFloat64 } from "../core/convert.ts";
import type { CompressionStats } from "../core/compression_stats.ts";
import type { GridOptions } from "./grid.ts";
import type { QuantizedWeight } from "./quantized_weight.ts";

/** Options every low-rank correction takes. */
export interface LowRankFactorOptions {
  /** Rank r of the correction, an integer in [1, min(rows, cols)]. */
  rank: number;
  /**
   * The float type the factors are stored in when `quantize` is absent: they
   * are rounded to it (so `a` and `b` hold exactly what storage holds) and
   * counted at its width.
   * @default "f16"
   */
  dtype?: "f16" | "f32";
  /**
   * Store both factors on a uniform grid by round-to-nearest instead
   * (`bits`, `groupSize`, `symmetric`, ...; groups run along each factor's
   * rows: B's r entries per output row, A's `cols` entries per rank row).
   * B is quantized first, A is then refitted to the quantized B (the
   * least-squares A, which does not depend on the Hessian) and quantized.
   * Absent: float factors (`dtype`).
   */
  quantize?: GridOptions;
}

/** What a low-rank correction measured. */
export interface LowRankStats extends CompressionStats {
  /**
   * The loss of the returned factors, tr((ΔW − B·A)·H·(ΔW − B·A)ᵀ) with
   * ΔW = W − Ŵ and H the mean of x·xᵀ: ‖(ΔW − B·A)X‖²_F per token (no factor
   * 2). For {@linkcode lowRankSvd} H = I: ‖ΔW − B·A‖²_F.
   */
  error: number;
  /** The same loss without the correction, tr(ΔW·H·ΔWᵀ). */
  errorBefore: number;
  /**
   * The closed-form optimum at this rank: the sum of the squared singular
   * values past the r-th of ΔW·Q·Λ^½ (EoRA) or of ΔW (SVD). `error` equals it
   * for exact factors; rounding or quantizing the factors adds to it.
   */
  discarded: number;
  /**
   * Rank of the correction actually used: min(r, rank of the projected
   * error); factor rows and columns past it are zero (and still stored).
   */
  effectiveRank: number;
}

/** A low-rank correction W ≈ Ŵ + B·A. */
export interface LowRankFactors {
  /** How the factors were found. */
  readonly kind: "eora" | "svd";
  /** r. */
  readonly rank: number;
  /** A [rank, cols] (float32 holding the stored values: float16-rounded or dequantized). */
  readonly a: Tensor<"f32">;
  /** B [rows, rank] (as `a`). */
  readonly b: Tensor<"f32">;
  /** The grids of both factors, when `quantize` was given. */
  readonly quantized?: { readonly a: QuantizedWeight; readonly b: QuantizedWeight };
  /**
   * Storage of both factors in bits: values at 16 or 32 bits, or codes plus
   * each group's f16 scale and (asymmetric grids) zero point at the code bits.
   */
  readonly bits: number;
  /** `bits` over the layer's rows·cols weights: what the correction adds to its bits per weight. */
  readonly bitsPerWeight: number;
  /** Losses and timing. */
  readonly stats: LowRankStats;
}

/**
 * The dense weight a correction stands for: Ŵ + B·A, in float32.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { addLowRank, lowRankSvd } from "./mod.ts";
 * import { tensor } from "../core/tensor.ts";
 * const w = tensor("f32", [2, 2], new Float32Array([1, 2, 2, 4])); // rank 1
 * const approx = tensor("f32", [2, 2], new Float32Array(4));
 * const f = await lowRankSvd(w, approx, { rank: 1, dtype: "f32" });
 * const back = addLowRank(approx, f);
 * assert(back.data.every((v, i) => Math.abs(v - w.data[i]!) < 1e-6));
 * ```
 * @param approx Ŵ [rows, cols].
 * @param factors B [rows, r] and A [r, cols].
 * @returns Ŵ + B·A [rows, cols] (a fresh tensor).
 * @throws {RangeError} when the shapes do not chain.
 */
export function addLowRank(
  approx: Tensor,
  factors: Pick<LowRankFactors, "a" | "b">,
): Tensor<"f32"> {
  const [rows, cols] = dims2(approx, "approx");
  const [br, r] = dims2(factors.b, "b");
  const [ar, ac] = dims2(factors.a, "a");
  if (br !== rows || ar !== r || ac !== cols) {
    throw new RangeError(
      `Cannot add a low-rank correction as 'b' [${factors.b.shape}]·'a' [${factors.a.shape}] ` +
        `does not give the shape of 'approx' [${approx.shape}]`,
    );
  }
  const w = asFloat64(approx), a = factors.a.data, b = factors.b.data;
  const out = new Float32Array(rows * cols);
  const acc = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) acc[j] = w[i * cols + j]!;
    for (let k = 0; k < r; k++) {
      const bik = b[i * r + k]!;
      if (bik === 0) continue;
      const ak = k * cols;
      for (let j = 0; j < cols; j++) acc[j] = acc[j]! + bik * a[ak + j]!;
    }
    for (let j = 0; j < cols; j++) out[i * cols + j] = acc[j]!;
  }
  return tensor("f32", [rows, cols], out);
}
