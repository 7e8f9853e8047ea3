/**
 * NF4, the 4-bit NormalFloat data type of QLoRA: 16 levels in [−1, 1] built
 * from standard normal quantiles (8 on the positive side, 7 on the negative
 * side and an exact zero), used with per-block absmax scaling. The baseline
 * HIGGS is compared with. Web-standard only.
 *
 * @see T. Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs" (2023), Section 3.
 * @module
 */

import { asFloat32 } from "../core/convert.ts";
import { dims2, type Tensor, tensor } from "../core/tensor.ts";
import type { CompressionStats } from "./quantized_weight.ts";
import { normalQuantile } from "./_normal.ts";

let levelsCache: Float64Array | null = null;

/**
 * The 16 NF4 levels in increasing order. Positive side: Φ⁻¹ at 8 probabilities
 * evenly spaced from `offset` down to 1/2 (exclusive); negative side: −Φ⁻¹ at 7
 * probabilities from `offset` to 1/2 (exclusive); plus 0; all divided by
 * Φ⁻¹(offset). The offset is QLoRA's: the mean of 1 − 1/(2·15) and
 * 1 − 1/(2·16), the outermost quantiles of 15 and 16 equal-probability bins.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { nf4Levels } from "./nf4.ts";
 * const v = nf4Levels();
 * assert(v.length === 16 && v[0] === -1 && v[7] === 0 && v[15] === 1);
 * ```
 * @returns A fresh array of the 16 levels.
 */
export function nf4Levels(): Float64Array {
  if (levelsCache === null) {
    const offset = ((1 - 1 / 30) + (1 - 1 / 32)) / 2;
    const top = normalQuantile(offset);
    const values: number[] = [0];
    // Positive: 9 evenly spaced probabilities from offset to 0.5, the last (0.5) dropped.
    for (let i = 0; i < 8; i++) {
      values.push(normalQuantile(offset + ((0.5 - offset) * i) / 8) / top);
    }
    // Negative: 8 evenly spaced probabilities from offset to 0.5, the last dropped.
    for (let i = 0; i < 7; i++) {
      values.push(-normalQuantile(offset + ((0.5 - offset) * i) / 7) / top);
    }
    levelsCache = Float64Array.from(values.sort((a, b) => a - b));
  }
  return levelsCache.slice();
}

/** Options of {@linkcode nf4}. */
export interface Nf4Options {
  /** Consecutive weights of a row that share one absmax scale. @default 64 */
  blockSize?: number;
}

/** An NF4-quantized weight. */
export interface Nf4Weight {
  /** Discriminant. */
  readonly kind: "nf4";
  /** [rows, cols]. */
  readonly shape: readonly [number, number];
  /** Weights per absmax block (along a row; the last block of a row may be shorter). */
  readonly blockSize: number;
  /** Level index per weight, [rows, cols]. */
  readonly codes: Uint8Array;
  /** Absmax per block, rounded to float16, [rows, blocksPerRow]. */
  readonly absmax: Float32Array;
  /** 4 + 16/blockSize (float16 absmax). */
  readonly bitsPerWeight: number;
  /** What was measured. */
  readonly stats: CompressionStats;
}

/**
 * Quantizes a weight to NF4 with per-block absmax scaling (no double quantization).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dequantizeNf4, nf4 } from "./nf4.ts";
 * import { tensor } from "../core/tensor.ts";
 * const w = tensor("f32", [1, 4], new Float32Array([-2, 0, 1, 2]));
 * const q = await nf4(w, { blockSize: 4 });
 * assert(dequantizeNf4(q).data[3] === 2);
 * ```
 * @param weight [rows, cols], any float dtype.
 * @param options Block size.
 * @returns The quantized weight.
 */
export async function nf4(weight: Tensor, options: Nf4Options = {}): Promise<Nf4Weight> {
  const { blockSize = 64 } = options;
  const [rows, cols] = dims2(weight, "weight");
  if (!Number.isInteger(blockSize) || blockSize < 1) {
    throw new RangeError(
      `Cannot quantize to NF4 as 'blockSize' must be a positive integer: current value is ${blockSize}`,
    );
  }
  const t0 = performance.now();
  const w = asFloat32(weight);
  const levels = nf4Levels();
  const mids = new Float64Array(15);
  for (let i = 0; i < 15; i++) mids[i] = 0.5 * (levels[i]! + levels[i + 1]!);
  const blocks = Math.ceil(cols / blockSize);
  const codes = new Uint8Array(rows * cols);
  const absmax = new Float32Array(rows * blocks);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < blocks; b++) {
      const c0 = r * cols + b * blockSize, c1 = r * cols + Math.min(cols, (b + 1) * blockSize);
      let m = 0;
      for (let i = c0; i < c1; i++) {
        const v = w[i]!;
        if (!Number.isFinite(v)) {
          throw new RangeError(`Cannot quantize to NF4: weight [${r}, ${i - r * cols}] is ${v}`);
        }
        m = Math.max(m, Math.abs(v));
      }
      const scale = Math.f16round(m);
      absmax[r * blocks + b] = scale;
      const inv = scale > 0 ? 1 / scale : 0;
      for (let i = c0; i < c1; i++) {
        const x = w[i]! * inv;
        let k = 0;
        while (k < 15 && x > mids[k]!) k++;
        codes[i] = k;
      }
    }
  }
  await Promise.resolve();
  return {
    kind: "nf4",
    shape: [rows, cols],
    blockSize,
    codes,
    absmax,
    bitsPerWeight: 4 + 16 / blockSize,
    stats: { seconds: (performance.now() - t0) / 1000 },
  };
}

/**
 * The float32 weight an NF4 weight stands for: absmax · level[code].
 *
 * @param q The quantized weight.
 * @returns Ŵ, f32 [rows, cols].
 */
export function dequantizeNf4(q: Nf4Weight): Tensor<"f32"> {
  const [rows, cols] = q.shape;
  const levels = nf4Levels();
  const blocks = Math.ceil(cols / q.blockSize);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      out[i] = q.absmax[r * blocks + Math.floor(c / q.blockSize)]! * levels[q.codes[i]!]!;
    }
  }
  return tensor("f32", [rows, cols], out);
}
