/**
 * Scaled floating-point weight formats: the layout description of each and
 * the rules that choose their scales, shared by round-to-nearest
 * (`quantizers/mx.ts`, `quantizers/fp8_quantize.ts`) and the OBS solver's
 * `"float-grid"` decider (GPTQ over these grids). Web-standard only.
 *
 * - **MXFP4** (OCP Microscaling Formats Specification v1.0, §5 and §6.3):
 *   E2M1 elements, one E8M0 scale per 32 consecutive elements of a row. The
 *   scale of a block with largest magnitude `amax` is
 *   X = 2^(⌊log₂ amax⌋ − 2) (2 being E2M1's largest exponent), so amax/X lies
 *   in [4, 8); elements are rounded to nearest-even E2M1 after division by X,
 *   magnitudes above 6 saturating. An all-zero block gets X = 2^−127.
 * - **NVFP4** (NVIDIA's recipe): E2M1 elements, one E4M3 scale per 16
 *   elements of a row and one float32 scale per tensor,
 *   s = amax(W)/(6·448). A block's scale code is E4M3(amax_block/6/s) (round
 *   to nearest even, saturating) and its multiplier m = fl32(E4M3 value · s);
 *   elements are E2M1(w/m). A block whose scale rounds to 0 (or s = 0) is all
 *   zeros.
 * - **FP8** (E4M3 with a float32 scale per output row, "channel", or per
 *   tensor): s = fl32(amax/448), codes E4M3(w/s).
 *
 * Every format dequantizes as Ŵ = fl32(value(code) · m), m the block's (or
 * row's) float32 multiplier. A short last block (columns not a multiple of
 * the block size) is scaled on its own elements.
 *
 * @module
 */

import { decodeFp8, encodeFp8, FP8_E4M3_MAX } from "./fp8.ts";
import { decodeE2M1, encodeE2M1, FP4_E2M1_MAX } from "./fp4.ts";
import { decodeE8M0, encodeE8M0, floorLog2 } from "./e8m0.ts";

/** The microscaling formats (E2M1 elements with block scales). */
export type MxFormat = "mxfp4" | "nvfp4";

/** Every scaled floating-point weight format. */
export type ScaledFloatFormat = MxFormat | "fp8";

/**
 * The layout of a microscaling format: the one description `packMx`,
 * `unpackMx` and `dequantize` follow.
 */
export interface MxLayout {
  /** The format. */
  readonly format: MxFormat;
  /** Element dtype: E2M1 (see `core/fp4.ts`), 4 bits. */
  readonly element: "e2m1";
  /** Bits per element code. */
  readonly elementBits: 4;
  /** Consecutive elements of one row that share a scale (the last block of a row may be shorter). */
  readonly blockSize: number;
  /** Dtype of the block scales, one byte each, row-major [rows, ⌈cols/blockSize⌉]. */
  readonly scale: "e8m0" | "e4m3";
  /** Whether a float32 scale per tensor multiplies every block scale. */
  readonly tensorScale: boolean;
  /**
   * Packing of the element codes: two per byte, row-major, each row starting
   * on a byte (⌈cols/2⌉ bytes per row); column 2j in the low nibble, column
   * 2j + 1 in the high nibble, a missing last high nibble 0.
   */
  readonly packing: "2 codes per byte, low nibble first, rows byte-aligned";
}

/** The layout of each microscaling format. */
export const MX_LAYOUTS: { readonly [F in MxFormat]: MxLayout } = {
  mxfp4: {
    format: "mxfp4",
    element: "e2m1",
    elementBits: 4,
    blockSize: 32,
    scale: "e8m0",
    tensorScale: false,
    packing: "2 codes per byte, low nibble first, rows byte-aligned",
  },
  nvfp4: {
    format: "nvfp4",
    element: "e2m1",
    elementBits: 4,
    blockSize: 16,
    scale: "e4m3",
    tensorScale: true,
    packing: "2 codes per byte, low nibble first, rows byte-aligned",
  },
};

/**
 * The layout of a microscaling format, validated.
 *
 * @param format The format.
 * @param what What the caller was doing, for the error message.
 * @returns Its layout.
 * @throws {TypeError} for an unknown format.
 */
export function mxLayout(format: MxFormat, what = "quantize"): MxLayout {
  const layout = Object.hasOwn(MX_LAYOUTS, format) ? MX_LAYOUTS[format] : undefined;
  if (layout === undefined) {
    throw new TypeError(
      `Cannot ${what} as 'format' must be "mxfp4" or "nvfp4": current value is ${String(format)}`,
    );
  }
  return layout;
}

/**
 * Largest magnitude of `src[start, start + len)`.
 *
 * @param src Values.
 * @param start First index.
 * @param len Count.
 * @returns max |src[i]| (0 for an empty range).
 */
export function absMax(src: ArrayLike<number>, start: number, len: number): number {
  let a = 0;
  for (let i = start; i < start + len; i++) {
    const v = Math.abs(src[i]!);
    if (v > a) a = v;
  }
  return a;
}

/**
 * The per-tensor scale of a format: amax/(6·448) in float32 for NVFP4, 1 for MXFP4.
 *
 * @param format The format.
 * @param amax Largest magnitude of the tensor.
 * @returns The scale.
 */
export function mxTensorScale(format: MxFormat, amax: number): number {
  return mxLayout(format).tensorScale ? Math.fround(amax / (FP4_E2M1_MAX * FP8_E4M3_MAX)) : 1;
}

/**
 * The scale code of a block with largest magnitude `amax` (E8M0 for MXFP4,
 * E4M3 for NVFP4; see the module docs).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mxScaleCode } from "./scaled_float.ts";
 * // amax 5: ⌊log₂ 5⌋ − 2 = 0, so X = 1 (E8M0 code 127)
 * assert(mxScaleCode("mxfp4", 5, 1) === 127);
 * ```
 * @param format The format.
 * @param amax Largest magnitude in the block (finite, ≥ 0).
 * @param tensorScale The tensor's scale (`mxTensorScale`).
 * @returns The 8-bit scale code.
 */
export function mxScaleCode(format: MxFormat, amax: number, tensorScale: number): number {
  if (format === "mxfp4") return amax > 0 ? encodeE8M0(floorLog2(amax) - 2) : 0;
  if (!(tensorScale > 0)) return 0;
  return encodeFp8("f8e4m3", amax / FP4_E2M1_MAX / tensorScale);
}

/**
 * The float32 multiplier of a block scale code: 2^(code − 127) for MXFP4,
 * fl32(E4M3(code) · tensorScale) for NVFP4.
 *
 * @param format The format.
 * @param code The block's scale code.
 * @param tensorScale The tensor's scale.
 * @returns The multiplier m (Ŵ = fl32(E2M1(code) · m)).
 */
export function mxScaleValue(format: MxFormat, code: number, tensorScale: number): number {
  return format === "mxfp4"
    ? Math.fround(decodeE8M0(code))
    : Math.fround(decodeFp8("f8e4m3", code) * tensorScale);
}

/**
 * The E2M1 code of x under a block multiplier (0 where the multiplier is 0).
 *
 * @param x The value.
 * @param m The block multiplier.
 * @returns The 4-bit code.
 */
export function e2m1Code(x: number, m: number): number {
  return m > 0 ? encodeE2M1(x / m) : 0;
}

/**
 * The value an E2M1 code stands for under a block multiplier.
 *
 * @param code The 4-bit code.
 * @param m The block multiplier.
 * @returns fl32(E2M1(code) · m).
 */
export function e2m1Value(code: number, m: number): number {
  return Math.fround(decodeE2M1(code) * m);
}

/**
 * The FP8 (E4M3) scale of a row or tensor with largest magnitude `amax`: fl32(amax/448).
 *
 * @param amax Largest magnitude.
 * @returns The scale.
 */
export function fp8Scale(amax: number): number {
  return Math.fround(amax / FP8_E4M3_MAX);
}

/**
 * The E4M3 code of x under a scale (0 where the scale is 0).
 *
 * @param x The value.
 * @param s The scale.
 * @returns The 8-bit code.
 */
export function e4m3Code(x: number, s: number): number {
  return s > 0 ? encodeFp8("f8e4m3", x / s) : 0;
}

/**
 * The value an E4M3 code stands for under a scale.
 *
 * @param code The 8-bit code.
 * @param s The scale.
 * @returns fl32(E4M3(code) · s).
 */
export function e4m3Value(code: number, s: number): number {
  return Math.fround(decodeFp8("f8e4m3", code) * s);
}
