/**
 * Microscaling weights: MXFP4 and NVFP4 (E2M1 elements with block scales),
 * round to nearest (`mxQuantize`), their packed form (`packMx`/`unpackMx`)
 * and their dequantization. The scale rules and the layouts are in
 * `core/scaled_float.ts`; GPTQ over these grids is `gptq(w, h, { format })`.
 * Web-standard only.
 *
 * @see OCP Microscaling Formats (MX) Specification v1.0 (2023), §5–6.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import type { CompressionStats } from "../core/compression_stats.ts";
import {
  absMax,
  e2m1Code,
  e2m1Value,
  type MxFormat,
  mxLayout,
  mxScaleCode,
  mxScaleValue,
  mxTensorScale,
} from "../core/scaled_float.ts";
import { finiteWeight } from "./_weight.ts";

export type { MxFormat } from "../core/scaled_float.ts";

/**
 * A microscaling weight, unpacked: Ŵ[r, c] = fl32(E2M1(codes[r, c]) · m) with
 * m the multiplier of scale code `scales[r, ⌊c/blockSize⌋]` (see `mxScaleValue`).
 */
export interface MxWeight {
  /** Discriminant for `dequantize()`. */
  readonly kind: "mx";
  /** The format (its layout is `MX_LAYOUTS[format]`). */
  readonly format: MxFormat;
  /** [rows, cols] = [out features, in features]. */
  readonly shape: readonly [number, number];
  /** E2M1 codes, one per byte (low 4 bits), row-major [rows, cols]. */
  readonly codes: Uint8Array;
  /** Block scale codes (E8M0 or E4M3), row-major [rows, ⌈cols/blockSize⌉]. */
  readonly scales: Uint8Array;
  /** The float32 scale of the whole tensor (NVFP4), 1 for MXFP4. */
  readonly tensorScale: number;
  /** What the method measured. */
  readonly stats: CompressionStats;
}

/** Options of {@linkcode mxQuantize}. */
export interface MxQuantizeOptions {
  /** `"mxfp4"` (E8M0 scale per 32) or `"nvfp4"` (E4M3 scale per 16 and a tensor scale). */
  format: MxFormat;
}

/**
 * Quantizes a weight to a microscaling format, rounding each element to the
 * nearest E2M1 value of its block (ties to even). Scales as in
 * `core/scaled_float.ts`: MXFP4 2^(⌊log₂ amax⌋ − 2) per 32, NVFP4
 * E4M3(amax/6/s) per 16 with s = amax(W)/(6·448).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mxQuantize } from "./mx.ts";
 * import { dequantize } from "./dequantize.ts";
 * import { tensor } from "../core/tensor.ts";
 * const w = tensor("f32", [1, 4], new Float32Array([5, -1.2, 0.3, 2.6]));
 * const q = await mxQuantize(w, { format: "mxfp4" }); // block scale 2^(2 − 2) = 1
 * assert.deepEqual([...dequantize(q).data], [4, -1, 0.5, 3]);
 * ```
 *
 * @param weight [rows, cols], any float dtype.
 * @param options The format.
 * @returns The quantized weight.
 * @throws {TypeError} for an unknown format.
 * @throws {RangeError} for non-finite weights.
 */
export async function mxQuantize(weight: Tensor, options: MxQuantizeOptions): Promise<MxWeight> {
  await Promise.resolve();
  const t0 = performance.now();
  if (options === null || typeof options !== "object") {
    throw new TypeError(
      `Cannot quantize as 'options' must be an object: current value is ${options}`,
    );
  }
  const { format } = options;
  const { blockSize: bs } = mxLayout(format);
  const { w, rows, cols } = finiteWeight(weight, "quantize");
  const blocks = Math.ceil(cols / bs);
  const tensorScale = mxTensorScale(format, absMax(w, 0, w.length));
  const codes = new Uint8Array(rows * cols), scales = new Uint8Array(rows * blocks);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < blocks; k++) {
      const c0 = k * bs, c1 = Math.min(cols, c0 + bs), o = r * cols;
      const sc = mxScaleCode(format, absMax(w, o + c0, c1 - c0), tensorScale);
      scales[r * blocks + k] = sc;
      const m = mxScaleValue(format, sc, tensorScale);
      for (let c = c0; c < c1; c++) codes[o + c] = e2m1Code(w[o + c]!, m);
    }
  }
  return {
    kind: "mx",
    format,
    shape: [rows, cols],
    codes,
    scales,
    tensorScale,
    stats: { seconds: (performance.now() - t0) / 1000 },
  };
}

function checkMx(q: MxWeight, what: string): { rows: number; cols: number; bs: number } {
  const { blockSize: bs } = mxLayout(q.format, what);
  const [rows, cols] = q.shape;
  if (q.codes.length !== rows * cols || q.scales.length !== rows * Math.ceil(cols / bs)) {
    throw new RangeError(
      `Cannot ${what} as 'codes' (${q.codes.length}) or 'scales' (${q.scales.length}) do not match the shape [${q.shape}] in ${q.format}`,
    );
  }
  return { rows, cols, bs };
}

/**
 * The float32 weight of a microscaling weight.
 *
 * @param q The weight.
 * @returns Ŵ [rows, cols], row-major.
 * @throws {RangeError} when the arrays do not match the shape.
 */
export function dequantizeMx(q: MxWeight): Float32Array {
  const { rows, cols, bs } = checkMx(q, "dequantize");
  const blocks = Math.ceil(cols / bs);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < blocks; k++) {
      const m = mxScaleValue(q.format, q.scales[r * blocks + k]!, q.tensorScale);
      const c1 = Math.min(cols, k * bs + bs);
      for (let c = k * bs; c < c1; c++) out[r * cols + c] = e2m1Value(q.codes[r * cols + c]!, m);
    }
  }
  return out;
}

/** A microscaling weight in its stored form (layout: `MX_LAYOUTS[format]`). */
export interface PackedMx {
  /** The format. */
  readonly format: MxFormat;
  /** [rows, cols]. */
  readonly shape: readonly [number, number];
  /** E2M1 codes, two per byte, [rows, ⌈cols/2⌉] (see `MxLayout.packing`). */
  readonly packed: Uint8Array;
  /** Block scale codes [rows, ⌈cols/blockSize⌉]. */
  readonly scales: Uint8Array;
  /** The tensor scale (1 for MXFP4). */
  readonly tensorScale: number;
}

/**
 * Packs a microscaling weight's codes two per byte (column 2j in the low
 * nibble, 2j + 1 in the high one, each row starting on a byte).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mxQuantize, packMx, unpackMx } from "./mx.ts";
 * import { tensor } from "../core/tensor.ts";
 * const q = await mxQuantize(tensor("f32", [2, 3], new Float32Array([1, -2, 3, 0, 6, -6])), { format: "nvfp4" });
 * const p = packMx(q);
 * assert(p.packed.length === 4);
 * assert.deepEqual(unpackMx(p).codes, q.codes);
 * ```
 * @param q The weight.
 * @returns Its stored form (the scales are copied).
 * @throws {RangeError} when the arrays do not match the shape.
 */
export function packMx(q: MxWeight): PackedMx {
  const { rows, cols } = checkMx(q, "pack");
  const rowBytes = Math.ceil(cols / 2);
  const packed = new Uint8Array(rows * rowBytes);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      packed[r * rowBytes + (c >> 1)]! |= (q.codes[r * cols + c]! & 15) << ((c & 1) * 4);
    }
  }
  return {
    format: q.format,
    shape: [rows, cols],
    packed,
    scales: q.scales.slice(),
    tensorScale: q.tensorScale,
  };
}

/**
 * Unpacks a stored microscaling weight (the inverse of {@linkcode packMx}).
 *
 * @param p The stored form.
 * @returns The weight, one code per byte (empty stats).
 * @throws {RangeError} when the arrays do not match the shape.
 */
export function unpackMx(p: PackedMx): MxWeight {
  const { blockSize: bs } = mxLayout(p.format, "unpack");
  const [rows, cols] = p.shape;
  const rowBytes = Math.ceil(cols / 2);
  if (p.packed.length !== rows * rowBytes || p.scales.length !== rows * Math.ceil(cols / bs)) {
    throw new RangeError(
      `Cannot unpack as 'packed' (${p.packed.length}) or 'scales' (${p.scales.length}) do not match the shape [${p.shape}] in ${p.format}`,
    );
  }
  const codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      codes[r * cols + c] = (p.packed[r * rowBytes + (c >> 1)]! >> ((c & 1) * 4)) & 15;
    }
  }
  return {
    kind: "mx",
    format: p.format,
    shape: [rows, cols],
    codes,
    scales: p.scales.slice(),
    tensorScale: p.tensorScale,
    stats: { seconds: 0 },
  };
}
