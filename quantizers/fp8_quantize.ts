/**
 * FP8 (E4M3) weights with a float32 scale per output row ("channel") or per
 * tensor: round to nearest (`fp8Quantize`) and dequantization. GPTQ over this
 * grid is `gptq(w, h, { format: "fp8" })`. Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import type { CompressionStats } from "../core/compression_stats.ts";
import { absMax, e4m3Code, e4m3Value, fp8Scale } from "../core/scaled_float.ts";
import { finiteWeight } from "./_weight.ts";

/** Which elements share an FP8 scale. */
export type Fp8Granularity = "channel" | "tensor";

/**
 * An FP8 weight: Ŵ[r, c] = fl32(E4M3(codes[r, c]) · scales[r]) (`scales[0]` for every row per tensor).
 */
export interface Fp8Weight {
  /** Discriminant for `dequantize()`. */
  readonly kind: "fp8";
  /** Which elements share a scale. */
  readonly granularity: Fp8Granularity;
  /** [rows, cols] = [out features, in features]. */
  readonly shape: readonly [number, number];
  /** E4M3 codes (see `core/fp8.ts`), row-major [rows, cols]; already the stored form. */
  readonly codes: Uint8Array;
  /** Scale per row [rows] ("channel") or [1] ("tensor"), amax/448 in float32. */
  readonly scales: Float32Array;
  /** What the method measured. */
  readonly stats: CompressionStats;
}

/** Options of {@linkcode fp8Quantize}. */
export interface Fp8QuantizeOptions {
  /** One scale per output row or one for the tensor. @default "channel" */
  granularity?: Fp8Granularity;
}

/**
 * Checks an FP8 granularity.
 *
 * @param granularity The value.
 * @param what What the caller was doing.
 * @returns It.
 */
export function checkFp8Granularity(granularity: unknown, what: string): Fp8Granularity {
  if (granularity !== "channel" && granularity !== "tensor") {
    throw new TypeError(
      `Cannot ${what} as 'granularity' must be "channel" or "tensor": current value is ${
        String(granularity)
      }`,
    );
  }
  return granularity;
}

/**
 * Quantizes a weight to E4M3 with scale amax/448 per row or per tensor,
 * rounding to nearest even.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fp8Quantize } from "./fp8_quantize.ts";
 * import { dequantize } from "./dequantize.ts";
 * import { tensor } from "../core/tensor.ts";
 * const q = await fp8Quantize(tensor("f32", [1, 2], new Float32Array([448, 3.3])), { granularity: "channel" });
 * assert.deepEqual([...dequantize(q).data], [448, 3.25]); // scale 1
 * ```
 *
 * @param weight [rows, cols], any float dtype.
 * @param options The granularity.
 * @returns The quantized weight.
 * @throws {TypeError} for an unknown granularity.
 * @throws {RangeError} for non-finite weights.
 */
export async function fp8Quantize(
  weight: Tensor,
  options: Fp8QuantizeOptions = {},
): Promise<Fp8Weight> {
  await Promise.resolve();
  const t0 = performance.now();
  if (options === null || typeof options !== "object") {
    throw new TypeError(
      `Cannot quantize as 'options' must be an object: current value is ${options}`,
    );
  }
  const granularity = checkFp8Granularity(options.granularity ?? "channel", "quantize");
  const { w, rows, cols } = finiteWeight(weight, "quantize");
  const scales = granularity === "channel"
    ? Float32Array.from({ length: rows }, (_, r) => fp8Scale(absMax(w, r * cols, cols)))
    : Float32Array.of(fp8Scale(absMax(w, 0, w.length)));
  const codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const s = scales[granularity === "channel" ? r : 0]!;
    for (let c = 0; c < cols; c++) codes[r * cols + c] = e4m3Code(w[r * cols + c]!, s);
  }
  return {
    kind: "fp8",
    granularity,
    shape: [rows, cols],
    codes,
    scales,
    stats: { seconds: (performance.now() - t0) / 1000 },
  };
}

/**
 * The float32 weight of an FP8 weight.
 *
 * @param q The weight.
 * @returns Ŵ [rows, cols], row-major.
 * @throws {RangeError} when the arrays do not match the shape.
 */
export function dequantizeFp8(q: Fp8Weight): Float32Array {
  const [rows, cols] = q.shape;
  const perRow = q.granularity === "channel";
  if (q.codes.length !== rows * cols || q.scales.length !== (perRow ? rows : 1)) {
    throw new RangeError(
      `Cannot dequantize as 'codes' (${q.codes.length}) or 'scales' (${q.scales.length}) do not match the shape [${q.shape}] per ${q.granularity}`,
    );
  }
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const s = q.scales[perRow ? r : 0]!;
    for (let c = 0; c < cols; c++) out[r * cols + c] = e4m3Value(q.codes[r * cols + c]!, s);
  }
  return out;
}
