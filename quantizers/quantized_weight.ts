/**
 * The plain, serializable result of every uniform-grid quantizer (RTN, GPTQ).
 * Web-standard only.
 *
 * Dequantization: `Ŵ[r, c] = scales[r, g] · (codes[r, c] − zeros[r, g])` with
 * `g = gIdx[c]`. Codes are stored in the original column order even when the
 * solver visited the columns in another order (`perm`), exactly as GPTQ
 * checkpoints store `g_idx`.
 *
 * @module
 */

import type { CompressionStats } from "../core/compression_stats.ts";

export type { CompressionStats } from "../core/compression_stats.ts";

/** Uniform-grid quantized weight, unpacked (one code per element). */
export interface QuantizedWeight {
  /** Discriminant, so `dequantize()` can accept other formats too. */
  readonly kind: "uniform";
  /** [rows, cols] = [out features, in features]. */
  readonly shape: readonly [number, number];
  /** Bits per code, 1–16. */
  readonly bits: number;
  /** Input columns per group, or −1 for one group per output row. */
  readonly groupSize: number;
  /** Whether the grid is symmetric (zero point fixed at the middle of the code range). */
  readonly symmetric: boolean;
  /** Codes in [0, 2^bits), row-major [rows, cols]. */
  readonly codes: Uint8Array | Uint16Array;
  /** Scale per row and group, [rows, groups]. */
  readonly scales: Float32Array;
  /** Zero point per row and group, in code units, [rows, groups]. */
  readonly zeros: Float32Array;
  /** Group of each input column, [cols]. */
  readonly gIdx: Int32Array;
  /** Column order the solver used (act-order), if not the identity. */
  readonly perm?: Int32Array;
  /** What the method measured. */
  readonly stats: CompressionStats;
}

/**
 * Number of groups per row of a quantized weight (`max(gIdx) + 1`).
 *
 * @param q The quantized weight.
 * @returns The group count.
 */
export function groupCount(q: QuantizedWeight): number {
  return q.scales.length / q.shape[0];
}
