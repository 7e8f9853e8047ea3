/**
 * KV cache quantization as a value and its fake quantization: the keys
 * (after the rotary embedding) and the values of an attention layer are
 * quantized and dequantized in float32 before attention reads them, with one
 * scale per token per key/value head (groups of the head width), what
 * QuaRot evaluates for its 4-bit KV cache. Web-standard only.
 *
 * Grids, for a group x of one head of one token:
 *
 * - symmetric (`asymmetric: false`): the activation formats of
 *   `fakeQuantizeActivations` with per-token scales, each group a row
 *   (`int8`, `int4`, `fp8`; `mxfp4` and `nvfp4` blocks within the group).
 * - asymmetric (`int8`, `int4` only): with b bits, M = 2^b − 1,
 *   lo = c·min(min x, 0), hi = c·max(max x, 0) for the clipping ratio c,
 *   s = (hi − lo)/M, z = round(−lo/s), q = clamp(round(x/s) + z, 0, M) and
 *   x̂ = fl32(s·(q − z)), rounding ties to even (a group of zeros takes
 *   lo = −1, hi = 1).
 *
 * @see S. Ashkboos et al., "QuaRot: Outlier-Free 4-Bit Inference in Rotated
 * LLMs" (NeurIPS 2024), §4 (KV cache: asymmetric, groups of the head width,
 * clipping ratio 0.95).
 * @module
 */

import { roundHalfEven } from "../core/uniform_grid.ts";
import {
  ACTIVATION_ELEMENT_BITS,
  ACTIVATION_FORMATS,
  type ActivationFormat,
  fakeQuantizeActivations,
} from "./activation_quant.ts";

/** KV cache quantization of one attention layer, as plain data. */
export interface KvCacheQuant {
  /** The element format. */
  readonly format: ActivationFormat;
  /** An asymmetric grid with a zero point per group (`int8`, `int4` only). @default false */
  readonly asymmetric?: boolean;
  /** The range's clipping ratio c in (0, 1] (asymmetric grids only). @default 1 */
  readonly clipRatio?: number;
}

/**
 * Checks a KV cache quantization and returns it.
 *
 * @param spec The value to check.
 * @returns The spec.
 * @throws {TypeError} for an unknown format or a non-boolean `asymmetric`.
 * @throws {RangeError} for a clipping ratio outside (0, 1], or one or an asymmetric grid with a
 *   float format.
 */
export function checkKvCacheQuant(spec: KvCacheQuant): KvCacheQuant {
  if (spec === null || typeof spec !== "object") {
    throw new TypeError(
      `Cannot quantize the KV cache as the spec must be an object: current value is ${spec}`,
    );
  }
  const { format, asymmetric = false, clipRatio = 1 } = spec;
  if (!ACTIVATION_FORMATS.includes(format)) {
    throw new TypeError(
      `Cannot quantize the KV cache as 'format' must be one of ${ACTIVATION_FORMATS.join(", ")}: ` +
        `current value is ${String(format)}`,
    );
  }
  if (typeof asymmetric !== "boolean") {
    throw new TypeError(
      `Cannot quantize the KV cache as 'asymmetric' must be a boolean: current value is ${
        String(asymmetric)
      }`,
    );
  }
  if (asymmetric && format !== "int8" && format !== "int4") {
    throw new RangeError(
      `Cannot quantize the KV cache as 'asymmetric' needs format int8 or int4: ` +
        `current value is ${format}`,
    );
  }
  if (!(typeof clipRatio === "number" && clipRatio > 0 && clipRatio <= 1)) {
    throw new RangeError(
      `Cannot quantize the KV cache as 'clipRatio' must be a number in (0, 1]: ` +
        `current value is ${String(clipRatio)}`,
    );
  }
  if (clipRatio !== 1 && !asymmetric) {
    throw new RangeError(
      `Cannot quantize the KV cache as 'clipRatio' ${clipRatio} needs 'asymmetric': true ` +
        `(symmetric grids take the group's largest magnitude)`,
    );
  }
  return spec;
}

/**
 * Storage bits per cached element: the element bits plus, per group of
 * `headDim`, a float32 scale (and a b-bit zero point on asymmetric grids;
 * MXFP4's and NVFP4's 8-bit block scales, NVFP4's float32 group scale).
 *
 * @param spec The KV cache quantization.
 * @param headDim The group width (the head width).
 * @returns Bits per element.
 */
export function kvCacheBits(spec: KvCacheQuant, headDim: number): number {
  const e = ACTIVATION_ELEMENT_BITS[spec.format];
  if (spec.format === "mxfp4") return e + 8 / 32;
  if (spec.format === "nvfp4") return e + 8 / 16 + 32 / headDim;
  return e + (32 + (spec.asymmetric ? e : 0)) / headDim;
}

const f = Math.fround;

/**
 * Quantizes and dequantizes keys or values X [rows, headDim], one group per
 * row (a row is one head of one token; see the module docs for the grids).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fakeQuantizeKvCache } from "./kv_cache_quant.ts";
 * // one group [0, 15]: asymmetric int4 has s = 1, z = 0, so values round to integers
 * const x = new Float32Array([0, 15, 2.5, 7.2]);
 * const y = fakeQuantizeKvCache(x, 1, { format: "int4", asymmetric: true });
 * assert.deepEqual([...y], [0, 15, 2, 7]);
 * ```
 * @param x Keys or values, row-major [rows, headDim] (not modified).
 * @param rows Number of groups (tokens × key/value heads).
 * @param spec The format, grid and clipping ratio.
 * @returns X̂, fresh, [rows, headDim].
 * @throws {TypeError|RangeError} for an invalid spec or a length not a multiple of `rows`.
 */
export function fakeQuantizeKvCache(
  x: Float32Array,
  rows: number,
  spec: KvCacheQuant,
): Float32Array {
  const { format, asymmetric = false, clipRatio = 1 } = checkKvCacheQuant(spec);
  if (!asymmetric) return fakeQuantizeActivations(x, rows, { format });
  if (!(Number.isInteger(rows) && rows >= 0) || (rows > 0 && x.length % rows !== 0)) {
    throw new RangeError(
      `Cannot quantize the KV cache as 'rows' must divide the ${x.length} values: current value is ${rows}`,
    );
  }
  const n = rows > 0 ? x.length / rows : 0;
  const M = format === "int8" ? 255 : 15;
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    let lo = 0, hi = 0;
    for (let i = o; i < o + n; i++) {
      const v = x[i]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    lo = f(lo * clipRatio);
    hi = f(hi * clipRatio);
    if (lo === 0 && hi === 0) {
      lo = -1;
      hi = 1;
    }
    const s = f((hi - lo) / M);
    const z = roundHalfEven(f(-lo / s));
    for (let i = o; i < o + n; i++) {
      const q = roundHalfEven(f(x[i]! / s)) + z;
      out[i] = f(s * ((q > M ? M : q < 0 ? 0 : q) - z));
    }
  }
  return out;
}
