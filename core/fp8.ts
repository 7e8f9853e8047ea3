/**
 * FP8 codecs after the OCP 8-bit Floating Point Specification (OFP8, v1.0):
 * E4M3 and E5M2, stored as raw bits in a `Uint8Array`. Web-standard only.
 *
 * - **E4M3** (`"f8e4m3"`): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no
 *   infinities; `S.1111.111` is NaN; largest magnitude 448; smallest
 *   subnormal 2⁻⁹.
 * - **E5M2** (`"f8e5m2"`): 1 sign, 5 exponent (bias 15), 2 mantissa bits;
 *   IEEE-like: `S.11111.00` is ±∞, `S.11111.{01,10,11}` are NaN; largest
 *   finite magnitude 57344; smallest subnormal 2⁻¹⁶.
 *
 * Encoding rounds to nearest, ties to even, in the spec's **saturating** mode:
 * a finite value whose magnitude rounds above the largest finite one becomes
 * ±max. NaN becomes the quiet NaN code (`0x7f` for E4M3, `0x7e` for E5M2).
 * Infinities: E5M2 keeps them (±∞ → ±∞, since they are representable and are
 * not "out of range finite values"); E4M3 has none, so ±∞ saturates to ±448.
 * Negative values that round to zero keep their sign (−0).
 *
 * @module
 */

/** The two FP8 dtypes. */
export type Fp8DType = "f8e4m3" | "f8e5m2";

interface Fp8Format {
  /** Mantissa (trailing significand) bits. */
  readonly mbits: number;
  /** Exponent bias. */
  readonly bias: number;
  /** Largest finite magnitude. */
  readonly max: number;
  /** Code of +max. */
  readonly maxCode: number;
  /** Code of the quiet NaN written by the encoder. */
  readonly nanCode: number;
  /** Code of +∞, or -1 when the format has none. */
  readonly infCode: number;
  /** Decoded value of every code. */
  readonly table: Float64Array;
  /** Smallest normal magnitude, 2^(1 − bias). */
  readonly minNormal: number;
  /** `scale[e + 16]` = 2^(mbits − e), for e in [−16, 16]. */
  readonly scale: Float64Array;
}

function decodeFormula(bits: number, ebits: number, mbits: number, bias: number, ieee: boolean) {
  const sign = bits & 0x80 ? -1 : 1;
  const exp = (bits >> mbits) & ((1 << ebits) - 1);
  const man = bits & ((1 << mbits) - 1);
  const expMax = (1 << ebits) - 1;
  if (ieee && exp === expMax) return man === 0 ? sign * Infinity : NaN;
  if (!ieee && exp === expMax && man === (1 << mbits) - 1) return NaN;
  if (exp === 0) return sign * man * 2 ** (1 - bias - mbits);
  return sign * (2 ** mbits + man) * 2 ** (exp - bias - mbits);
}

function makeFormat(ebits: number, mbits: number, ieee: boolean): Fp8Format {
  const bias = (1 << (ebits - 1)) - 1;
  const table = new Float64Array(256);
  for (let c = 0; c < 256; c++) table[c] = decodeFormula(c, ebits, mbits, bias, ieee);
  // largest finite code: the largest positive code whose value is finite
  let maxCode = 0x7f;
  while (!Number.isFinite(table[maxCode]!)) maxCode--;
  const nanCode = ieee ? ((1 << ebits) - 1) << mbits | (1 << (mbits - 1)) : 0x7f;
  const infCode = ieee ? ((1 << ebits) - 1) << mbits : -1;
  const max = table[maxCode]!;
  if (max >= 2 ** 16 || 1 - bias < -16) throw new Error("FP8 format outside the encoder's range");
  const scale = Float64Array.from({ length: 33 }, (_, i) => 2 ** (mbits - (i - 16)));
  return { mbits, bias, max, maxCode, nanCode, infCode, table, minNormal: 2 ** (1 - bias), scale };
}

const FORMATS: Record<Fp8DType, Fp8Format> = {
  f8e4m3: makeFormat(4, 3, false),
  f8e5m2: makeFormat(5, 2, true),
};

function format(dtype: Fp8DType): Fp8Format {
  const f = FORMATS[dtype];
  if (f === undefined) {
    throw new TypeError(
      `Cannot use FP8 as 'dtype' must be "f8e4m3" or "f8e5m2": current value is ${String(dtype)}`,
    );
  }
  return f;
}

/** Largest finite magnitude of E4M3 (`S.1111.110`). */
export const FP8_E4M3_MAX = 448;
/** Largest finite magnitude of E5M2 (`S.11110.11`). */
export const FP8_E5M2_MAX = 57344;

/**
 * Largest finite magnitude of an FP8 dtype.
 *
 * @param dtype `"f8e4m3"` (448) or `"f8e5m2"` (57344).
 * @returns The saturation bound.
 */
export function fp8Max(dtype: Fp8DType): number {
  return format(dtype).max;
}

/**
 * Decodes one FP8 code.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeFp8 } from "./fp8.ts";
 * assert(decodeFp8("f8e4m3", 0x7e) === 448);
 * assert(decodeFp8("f8e5m2", 0x7c) === Infinity);
 * ```
 * @param dtype The FP8 dtype.
 * @param bits The code (only the low 8 bits are used).
 * @returns Its value (NaN for NaN codes, ±∞ for E5M2 infinities).
 */
export function decodeFp8(dtype: Fp8DType, bits: number): number {
  return format(dtype).table[bits & 0xff]!;
}

function encodeWith(f: Fp8Format, x: number): number {
  if (x !== x) return f.nanCode;
  const sign = x < 0 || (x === 0 && 1 / x < 0) ? 0x80 : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | (f.infCode >= 0 ? f.infCode : f.maxCode);
  if (a >= f.max) return sign | f.maxCode; // saturating mode
  if (a === 0) return sign;
  // Exponent e = floor(log2 a), clamped below to emin (the subnormal grid).
  // For 2^emin ≤ a < max < 2^16, a·2^16 lies in [1, 2^32) and flooring it
  // keeps its leading bit, so clz32 gives e exactly.
  const e = a < f.minNormal ? 1 - f.bias : 15 - Math.clz32(Math.floor(a * 65536));
  const q = a * f.scale[e + 16]!; // a / 2^(e - mbits): exact, a power-of-two scaling
  let r = Math.floor(q);
  const frac = q - r; // exact: q < 2^(mbits+1)
  if (frac > 0.5 || (frac === 0.5 && (r & 1) === 1)) r++;
  const one = 1 << f.mbits;
  if (r < one) return sign | r; // subnormal (exponent field 0), or zero
  if (r === 2 * one) return sign | ((e + 1 + f.bias) << f.mbits); // carried into the next binade
  return sign | ((e + f.bias) << f.mbits) | (r - one);
}

/**
 * Encodes a number as FP8: round to nearest, ties to even, saturating
 * finite overflow to ±max; NaN → NaN; E5M2 keeps ±∞, E4M3 saturates ±∞ to ±448.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeFp8, encodeFp8 } from "./fp8.ts";
 * assert(encodeFp8("f8e4m3", 1000) === 0x7e); // saturates to 448
 * assert(decodeFp8("f8e4m3", encodeFp8("f8e4m3", 0.3)) === 0.3125);
 * ```
 * @param dtype The FP8 dtype.
 * @param x The value (a float64, rounded once).
 * @returns The 8-bit code.
 */
export function encodeFp8(dtype: Fp8DType, x: number): number {
  return encodeWith(format(dtype), x);
}

/**
 * Decodes an array of FP8 codes.
 *
 * @param dtype The FP8 dtype.
 * @param codes Raw codes.
 * @param out Optional destination of the same length (written in place).
 * @returns `out`, or a fresh Float32Array (every FP8 value is exact in f32).
 */
export function decodeFp8Array<O extends Float32Array | Float64Array = Float32Array>(
  dtype: Fp8DType,
  codes: Uint8Array,
  out?: O,
): O {
  const { table } = format(dtype);
  const dst = out ?? (new Float32Array(codes.length) as O);
  if (dst.length !== codes.length) {
    throw new RangeError(
      `Cannot decode FP8 as 'out' must have ${codes.length} elements: current length is ${dst.length}`,
    );
  }
  for (let i = 0; i < codes.length; i++) dst[i] = table[codes[i]!]!;
  return dst;
}

/**
 * Encodes an array of numbers as FP8 (see {@linkcode encodeFp8} for rounding).
 *
 * @param dtype The FP8 dtype.
 * @param values Values to encode.
 * @param out Optional destination of the same length (written in place).
 * @returns `out`, or a fresh Uint8Array of codes.
 */
export function encodeFp8Array(
  dtype: Fp8DType,
  values: ArrayLike<number>,
  out?: Uint8Array,
): Uint8Array {
  const f = format(dtype);
  const dst = out ?? new Uint8Array(values.length);
  if (dst.length !== values.length) {
    throw new RangeError(
      `Cannot encode FP8 as 'out' must have ${values.length} elements: current length is ${dst.length}`,
    );
  }
  for (let i = 0; i < values.length; i++) dst[i] = encodeWith(f, values[i]!);
  return dst;
}
