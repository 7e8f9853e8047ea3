/**
 * Conversions between dtypes. Web-standard only.
 *
 * Every float target is rounded once, to nearest with ties to even, from the
 * exact source value (no double rounding, also for f64 → bf16 and
 * i64 → f32): bf16 through round-to-odd at f32 precision, f16 through
 * `Float16Array`, FP8 through {@linkcode encodeFp8} (saturating). NaN and
 * infinities are preserved wherever the target has them; f32 ↔ bf16 works on
 * the bits, so NaN signs and top payload bits survive.
 *
 * @module
 */

import { decodeFp8, decodeFp8Array, encodeFp8Array, type Fp8DType } from "./fp8.ts";
import { allocate, type DType, type Tensor, tensor } from "./tensor.ts";

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);
const f64buf = new Float64Array(1);
const u64buf = new BigUint64Array(f64buf.buffer);

/** f32 bits of `x` rounded to odd (truncate, then set the last bit if inexact). */
function roundToOddF32Bits(x: number): number {
  f32buf[0] = x;
  let u = u32buf[0]!;
  const f = f32buf[0]!;
  if (f !== x && x === x) {
    if (Math.abs(f) > Math.abs(x)) u -= 1; // one step toward zero (∞ → max finite too)
    u |= 1;
  }
  return u >>> 0;
}

/** bf16 bits from f32 bits: round to nearest even, NaN kept quiet with its sign. */
function bf16FromF32Bits(u: number): number {
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x007fffff) !== 0) {
    return ((u >>> 16) | 0x0040) & 0xffff;
  }
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Rounds a number to bfloat16 bits: round to nearest, ties to even, in one
 * rounding from the exact value (float64 inputs included); NaN stays a quiet
 * NaN, infinities stay infinities, overflow past the largest bf16 goes to ∞.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bf16BitsToF32, f32ToBf16Bits } from "./convert.ts";
 * assert(f32ToBf16Bits(1) === 0x3f80);
 * assert(bf16BitsToF32(f32ToBf16Bits(1 + 2 ** -8)) === 1); // tie → even
 * ```
 * @param x The value.
 * @returns The 16 raw bits.
 */
export function f32ToBf16Bits(x: number): number {
  return bf16FromF32Bits(roundToOddF32Bits(x));
}

/**
 * Decodes bfloat16 bits (exact).
 *
 * @param bits The 16 raw bits.
 * @returns The value.
 */
export function bf16BitsToF32(bits: number): number {
  u32buf[0] = (bits & 0xffff) << 16;
  return f32buf[0]!;
}

/**
 * A float64 from an int64, rounded to odd at 53 bits, so that a later
 * rounding to any narrower float (f32, f16, bf16, FP8) is a correct single
 * rounding of the integer.
 */
function bigintToOddNumber(v: bigint): number {
  const n = Number(v);
  const back = BigInt(n);
  if (back === v) return n;
  f64buf[0] = n;
  let bits = u64buf[0]!;
  if ((back < 0n ? -back : back) > (v < 0n ? -v : v)) bits -= 1n;
  u64buf[0] = bits | 1n;
  return f64buf[0]!;
}

/**
 * Reads element `i` of a tensor as a JavaScript number (i64 through `Number`,
 * which rounds integers beyond 2^53).
 *
 * @param t The tensor.
 * @param i Flat index.
 * @returns The value.
 */
export function elementAsNumber(t: Tensor, i: number): number {
  if (!Number.isInteger(i) || i < 0 || i >= t.data.length) {
    throw new RangeError(
      `Cannot read an element as 'i' must be an integer in [0, ${t.data.length}): current value is ${i}`,
    );
  }
  return toNumberReader(t, false)(i);
}

type Reader = (i: number) => number;
type Writer = (i: number, v: number) => void;

function toNumberReader(t: Tensor, narrow: boolean): Reader {
  const d = t.data;
  switch (t.dtype) {
    case "bf16":
      return (i) => bf16BitsToF32((d as Uint16Array)[i]!);
    case "f8e4m3":
    case "f8e5m2": {
      const dtype = t.dtype;
      return (i) => decodeFp8(dtype, (d as Uint8Array)[i]!);
    }
    case "i64":
      return narrow
        ? (i) => bigintToOddNumber((d as BigInt64Array)[i]!)
        : (i) => Number((d as BigInt64Array)[i]!);
    default:
      return (i) => (d as Float64Array)[i]!;
  }
}

/** Rounds half away from zero (Math.round rounds half toward +∞). */
function roundHalfAway(v: number): number {
  return v < 0 ? -Math.round(-v) : Math.round(v);
}

function toNumberWriter(dtype: DType, out: Tensor["data"]): Writer {
  switch (dtype) {
    case "bf16":
      return (i, v) => ((out as Uint16Array)[i] = f32ToBf16Bits(v));
    case "i64":
      return (i, v) => (
        (out as BigInt64Array)[i] = Number.isFinite(v) ? BigInt(roundHalfAway(v)) : 0n
      );
    case "bool":
      return (i, v) => ((out as Uint8Array)[i] = v !== 0 ? 1 : 0);
    case "i8":
    case "u8":
    case "i16":
    case "u16":
    case "i32":
    case "u32":
      return (i, v) => ((out as Int32Array)[i] = roundHalfAway(v));
    default: // f64, f32, f16: the typed array rounds to nearest even
      return (i, v) => ((out as Float64Array)[i] = v);
  }
}

const INT_BITS: Partial<Record<DType, [number, boolean]>> = {
  i8: [8, true],
  u8: [8, false],
  i16: [16, true],
  u16: [16, false],
  i32: [32, true],
  u32: [32, false],
};

const isFloatTarget = (d: DType): boolean => d === "f64" || d === "f32" || d === "f16";
const isSmallInt = (d: DType): boolean => INT_BITS[d] !== undefined;

/**
 * Converts a tensor to another dtype (a fresh copy, even when the dtype is the same).
 *
 * - Floats round once to nearest even (see the module docs); f32 ↔ bf16 on the bits.
 * - Floats to integers round half away from zero, then wrap modulo 2^bits as
 *   typed arrays do; NaN and ±∞ become 0.
 * - i64 to smaller integers wraps exactly (two's complement); i64 to floats
 *   rounds once.
 * - Anything to bool is `value !== 0` (NaN is true).
 * - Floats to FP8 saturate finite overflow to ±max (OCP saturating mode).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { convert } from "./convert.ts";
 * import { tensor } from "./tensor.ts";
 * const t = convert(tensor("f32", [2], new Float32Array([1.5, -2.5])), "i32");
 * assert(t.data[0] === 2 && t.data[1] === -3);
 * ```
 * @param t The tensor.
 * @param dtype Target dtype.
 * @returns A fresh tensor with the same shape.
 */
export function convert<D extends DType>(t: Tensor, dtype: D): Tensor<D> {
  const n = t.data.length;
  const out = allocate(dtype, n);
  const src = t.data;
  if (t.dtype === dtype) {
    // deno-lint-ignore no-explicit-any
    (out as any).set(src);
    return tensor(dtype, t.shape, out);
  }
  if (t.dtype === "f32" && dtype === "bf16") {
    const bits = new Uint32Array(src.buffer, src.byteOffset, n);
    const dst = out as Uint16Array;
    for (let i = 0; i < n; i++) dst[i] = bf16FromF32Bits(bits[i]!);
    return tensor(dtype, t.shape, out);
  }
  if (t.dtype === "bf16" && dtype === "f32") {
    const bits = src as Uint16Array;
    const dst = new Uint32Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i++) dst[i] = bits[i]! << 16;
    return tensor(dtype, t.shape, out);
  }
  if ((t.dtype === "f8e4m3" || t.dtype === "f8e5m2") && (dtype === "f32" || dtype === "f64")) {
    decodeFp8Array(t.dtype, src as Uint8Array, out as Float32Array);
    return tensor(dtype, t.shape, out);
  }
  if (dtype === "f8e4m3" || dtype === "f8e5m2") {
    const reader = toNumberReader(t, true);
    const values = t.dtype === "f64" || t.dtype === "f32" || t.dtype === "f16"
      ? src as Float64Array
      : Float64Array.from({ length: n }, (_, i) => reader(i));
    encodeFp8Array(dtype as Fp8DType, values, out as Uint8Array);
    return tensor(dtype, t.shape, out);
  }
  if (t.dtype === "i64") {
    const big = src as BigInt64Array;
    const bits = INT_BITS[dtype];
    if (bits !== undefined) {
      const [w, signed] = bits;
      const dst = out as Int32Array;
      for (let i = 0; i < n; i++) {
        dst[i] = Number(signed ? BigInt.asIntN(w, big[i]!) : BigInt.asUintN(w, big[i]!));
      }
      return tensor(dtype, t.shape, out);
    }
    if (dtype === "bool") {
      const dst = out as Uint8Array;
      for (let i = 0; i < n; i++) dst[i] = big[i] !== 0n ? 1 : 0;
      return tensor(dtype, t.shape, out);
    }
  }
  const numericSource = t.dtype !== "i64" && t.dtype !== "bf16" &&
    t.dtype !== "f8e4m3" && t.dtype !== "f8e5m2";
  const intSource = isSmallInt(t.dtype) || t.dtype === "bool";
  if (
    numericSource && (isFloatTarget(dtype) || (intSource && isSmallInt(dtype)))
  ) {
    // TypedArray#set converts each element with one correct rounding (floats)
    // or the same modular wrap as our writer (integers to integers).
    // deno-lint-ignore no-explicit-any
    (out as any).set(src);
    return tensor(dtype, t.shape, out);
  }
  const narrow = dtype !== "f64" && dtype !== "i64";
  const reader = toNumberReader(t, narrow);
  const write = toNumberWriter(dtype, out);
  for (let i = 0; i < n; i++) write(i, reader(i));
  return tensor(dtype, t.shape, out);
}

/**
 * The values of a tensor as a Float64Array (the storage itself when already f64).
 *
 * @param t The tensor.
 * @returns Float64 values; do not mutate them (they may alias `t.data`).
 */
export function asFloat64(t: Tensor): Float64Array {
  return t.dtype === "f64" ? (t.data as Float64Array) : (convert(t, "f64").data as Float64Array);
}

/**
 * The values of a tensor as a Float32Array (the storage itself when already f32).
 *
 * @param t The tensor.
 * @returns Float32 values; do not mutate them (they may alias `t.data`).
 */
export function asFloat32(t: Tensor): Float32Array {
  return t.dtype === "f32" ? (t.data as Float32Array) : (convert(t, "f32").data as Float32Array);
}
