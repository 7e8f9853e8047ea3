/**
 * Activation quantization as a value and its fake quantization: the input
 * X [tokens, in] of a linear is quantized and dequantized in float32 before
 * the matmul (what the W8A8 and W4A4 papers evaluate for perplexity).
 * Web-standard only.
 *
 * Formats and scales (s the float32 scale, amax the largest magnitude it covers):
 *
 * - `int8`, `int4`: symmetric, q = clamp(round_half_even(x/s), −Q, Q) with
 *   Q = 127 or 7 and s = amax/Q; x̂ = fl32(q·s).
 * - `fp8`: E4M3, s = amax/448, x̂ = fl32(E4M3(x/s)·s) (saturating).
 * - `mxfp4`: E2M1 with an E8M0 scale 2^(⌊log₂ amax_block⌋ − 2) per block of
 *   32 consecutive inputs of a token (always dynamic).
 * - `nvfp4`: E2M1 with an E4M3 scale per block of 16 and a float32 scale
 *   amax/(6·448), amax of the token (dynamic) or the calibrated one (static).
 *
 * `granularity: "token"` takes amax of each token's row when the row is
 * quantized (dynamic); `"tensor"` uses one static `absMax` calibrated on the
 * calibration set. `outliers` (QUIK) keeps some input columns in a wider
 * format: the other columns are scaled by their own per-token amax, the kept
 * ones by theirs.
 *
 * @see G. Xiao et al., "SmoothQuant" (2023); S. Ashkboos et al., "QuaRot"
 * (2024) and "QUIK" (2023); OCP Microscaling Formats Specification v1.0.
 * @module
 */

import { roundHalfEven } from "../core/uniform_grid.ts";
import {
  absMax,
  e2m1Code,
  e2m1Value,
  e4m3Code,
  e4m3Value,
  fp8Scale,
  mxScaleCode,
  mxScaleValue,
  mxTensorScale,
} from "../core/scaled_float.ts";

/** The formats an activation can be quantized to. */
export type ActivationFormat = "int8" | "int4" | "fp8" | "mxfp4" | "nvfp4";

/** Where an activation scale comes from: each token's row (dynamic) or the calibration set (static). */
export type ActivationGranularity = "token" | "tensor";

/** Input columns kept in a wider format (QUIK). */
export interface ActivationOutliers {
  /** The kept input columns (distinct, in [0, in)). */
  readonly columns: ArrayLike<number>;
  /** Their format, scaled per token on the kept columns alone. */
  readonly format: "int8" | "fp8";
}

/** Activation quantization at the input of one linear, as plain data. */
export interface ActivationQuant {
  /** The element format. */
  readonly format: ActivationFormat;
  /** Dynamic per-token scales or one static scale. @default "token" */
  readonly granularity?: ActivationGranularity;
  /** The calibrated largest magnitude, for `granularity: "tensor"` (required there). */
  readonly absMax?: number;
  /** Input columns kept in a wider format (per-token scales only; int and FP8 formats only). */
  readonly outliers?: ActivationOutliers;
}

/** Element bits of each activation format. */
export const ACTIVATION_ELEMENT_BITS: Readonly<Record<ActivationFormat, number>> = {
  int8: 8,
  int4: 4,
  fp8: 8,
  mxfp4: 4,
  nvfp4: 4,
};

/** The activation formats. */
export const ACTIVATION_FORMATS = Object.keys(
  ACTIVATION_ELEMENT_BITS,
) as readonly ActivationFormat[];

/**
 * Checks an activation quantization and returns it.
 *
 * @param spec The value to check.
 * @param inFeatures The input width, when known (checks the outlier columns).
 * @returns The spec.
 * @throws {TypeError} for an unknown format or granularity.
 * @throws {RangeError} for a missing or invalid static `absMax`, or bad outlier columns.
 */
export function checkActivationQuant(spec: ActivationQuant, inFeatures?: number): ActivationQuant {
  if (spec === null || typeof spec !== "object") {
    throw new TypeError(
      `Cannot quantize activations as the spec must be an object: current value is ${spec}`,
    );
  }
  const { format, granularity = "token", absMax: amax, outliers } = spec;
  if (!ACTIVATION_FORMATS.includes(format)) {
    throw new TypeError(
      `Cannot quantize activations as 'format' must be one of ${ACTIVATION_FORMATS.join(", ")}: ` +
        `current value is ${String(format)}`,
    );
  }
  if (granularity !== "token" && granularity !== "tensor") {
    throw new TypeError(
      `Cannot quantize activations as 'granularity' must be "token" or "tensor": ` +
        `current value is ${String(granularity)}`,
    );
  }
  if (granularity === "tensor") {
    if (format === "mxfp4") {
      throw new RangeError(
        `Cannot quantize activations as 'granularity' "tensor" has no meaning for mxfp4 ` +
          `(its E8M0 block scales are always computed per block): use "token"`,
      );
    }
    if (!(typeof amax === "number" && Number.isFinite(amax) && amax >= 0)) {
      throw new RangeError(
        `Cannot quantize activations as 'absMax' must be a finite number ≥ 0 with granularity ` +
          `"tensor" (calibrate it): current value is ${amax}`,
      );
    }
  }
  if (outliers !== undefined) {
    if (granularity !== "token" || format === "mxfp4" || format === "nvfp4") {
      throw new RangeError(
        `Cannot quantize activations as 'outliers' needs granularity "token" and an int or fp8 ` +
          `format: current values are ${granularity} and ${format}`,
      );
    }
    if (outliers.format !== "int8" && outliers.format !== "fp8") {
      throw new TypeError(
        `Cannot quantize activations as 'outliers.format' must be "int8" or "fp8": ` +
          `current value is ${String(outliers.format)}`,
      );
    }
    const seen = new Set<number>();
    for (const c of Array.from(outliers.columns)) {
      const bad = !Number.isInteger(c) || c < 0 || (inFeatures !== undefined && c >= inFeatures);
      if (bad || seen.has(c)) {
        throw new RangeError(
          `Cannot quantize activations as 'outliers.columns' must be distinct integers in ` +
            `[0, ${inFeatures ?? "in"}): found ${c}`,
        );
      }
      seen.add(c);
    }
  }
  return spec;
}

/**
 * Storage bits per activation element: the element bits, plus a float32
 * scale per token (dynamic int, FP8 and NVFP4's token scale) spread over the
 * token's `inFeatures` values, plus the 8-bit block scales of MXFP4 (per 32)
 * and NVFP4 (per 16); QUIK's kept columns at their own bits and scale.
 *
 * @param spec The activation quantization.
 * @param inFeatures The input width.
 * @returns Bits per element.
 */
export function activationBits(spec: ActivationQuant, inFeatures: number): number {
  const dynamic = (spec.granularity ?? "token") === "token";
  const scale = dynamic ? 32 / inFeatures : 0;
  const block = spec.format === "mxfp4" ? 8 / 32 : spec.format === "nvfp4" ? 8 / 16 : 0;
  const base = ACTIVATION_ELEMENT_BITS[spec.format] + block + (spec.format === "mxfp4" ? 0 : scale);
  const k = spec.outliers ? spec.outliers.columns.length : 0;
  if (k === 0) return base;
  return ((inFeatures - k) * ACTIVATION_ELEMENT_BITS[spec.format] + k * 8 + 64) / inFeatures;
}

const f = Math.fround;

/** Fake-quantizes x[idx[i]] (or x[o, o + n) when idx is null) of one row into out, one scale. */
function quantizeRun(
  x: Float32Array,
  out: Float32Array,
  o: number,
  n: number,
  idx: Int32Array | null,
  format: "int8" | "int4" | "fp8",
  amax: number,
): void {
  const at = (i: number) => o + (idx ? idx[i]! : i);
  if (format === "fp8") {
    const s = fp8Scale(amax);
    for (let i = 0; i < n; i++) out[at(i)] = e4m3Value(e4m3Code(x[at(i)]!, s), s);
    return;
  }
  const Q = format === "int8" ? 127 : 7;
  const s = f(amax / Q);
  for (let i = 0; i < n; i++) {
    if (!(s > 0)) {
      out[at(i)] = 0;
      continue;
    }
    const q = roundHalfEven(f(x[at(i)]! / s));
    out[at(i)] = f((q > Q ? Q : q < -Q ? -Q : q) * s);
  }
}

/** Fake-quantizes one row [o, o + n) in an MX format, blocks along the row. */
function quantizeMxRow(
  x: Float32Array,
  out: Float32Array,
  o: number,
  n: number,
  format: "mxfp4" | "nvfp4",
  amax: number,
): void {
  const bs = format === "mxfp4" ? 32 : 16;
  const ts = mxTensorScale(format, amax);
  for (let c0 = 0; c0 < n; c0 += bs) {
    const len = Math.min(bs, n - c0);
    const m = mxScaleValue(format, mxScaleCode(format, absMax(x, o + c0, len), ts), ts);
    for (let c = o + c0; c < o + c0 + len; c++) out[c] = e2m1Value(e2m1Code(x[c]!, m), m);
  }
}

/**
 * Quantizes and dequantizes activations X [tokens, in] (see the module docs
 * for the formats and scales).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fakeQuantizeActivations } from "./activation_quant.ts";
 * // one token, amax 7: int4 scale 1, so values round to integers (ties to even)
 * const x = new Float32Array([7, 2.5, -3.2, 0.4]);
 * assert.deepEqual([...fakeQuantizeActivations(x, 1, { format: "int4" })], [7, 2, -3, 0]);
 * ```
 * @param x Activations, row-major [tokens, in] (not modified).
 * @param tokens Number of rows.
 * @param spec The format, granularity, static scale and kept columns.
 * @returns X̂, fresh, [tokens, in].
 * @throws {TypeError|RangeError} for an invalid spec or a length not a multiple of `tokens`.
 */
export function fakeQuantizeActivations(
  x: Float32Array,
  tokens: number,
  spec: ActivationQuant,
): Float32Array {
  if (!(Number.isInteger(tokens) && tokens >= 0) || (tokens > 0 && x.length % tokens !== 0)) {
    throw new RangeError(
      `Cannot quantize activations as 'tokens' must divide the ${x.length} values: current value is ${tokens}`,
    );
  }
  const n = tokens > 0 ? x.length / tokens : 0;
  const { format, granularity = "token", outliers } = checkActivationQuant(spec, n);
  const out = new Float32Array(x.length);
  const dynamic = granularity === "token";
  let keep: Int32Array | null = null, rest: Int32Array | null = null;
  if (outliers && outliers.columns.length > 0) {
    keep = Int32Array.from(outliers.columns);
    const kept = new Uint8Array(n);
    for (const c of keep) kept[c] = 1;
    rest = Int32Array.from({ length: n - keep.length }, () => 0);
    for (let c = 0, j = 0; c < n; c++) if (!kept[c]) rest[j++] = c;
  }
  const amaxOf = (o: number, idx: Int32Array | null, len: number) => {
    if (!idx) return absMax(x, o, len);
    let a = 0;
    for (let i = 0; i < len; i++) a = Math.max(a, Math.abs(x[o + idx[i]!]!));
    return a;
  };
  for (let t = 0; t < tokens; t++) {
    const o = t * n;
    if (format === "mxfp4" || format === "nvfp4") {
      quantizeMxRow(x, out, o, n, format, dynamic ? absMax(x, o, n) : spec.absMax!);
      continue;
    }
    const len = rest ? rest.length : n;
    quantizeRun(x, out, o, len, rest, format, dynamic ? amaxOf(o, rest, len) : spec.absMax!);
    if (keep) {
      quantizeRun(x, out, o, keep.length, keep, outliers!.format, amaxOf(o, keep, keep.length));
    }
  }
  return out;
}
