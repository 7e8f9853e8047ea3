/**
 * Conversions between dtypes. Web-standard only.
 *
 * bf16 ↔ f32 rounds to nearest even and keeps NaN and infinities; f16 goes
 * through `Float16Array`; FP8 goes through {@linkcode ./fp8.ts}.
 *
 * @module
 */

import { allocate, type DType, type Tensor, tensor } from "./tensor.ts";

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/**
 * Rounds a number to bfloat16 bits (round to nearest, ties to even; NaN stays NaN).
 *
 * @param x The value.
 * @returns The 16 raw bits.
 */
export function f32ToBf16Bits(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0]!;
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x007fffff) !== 0) {
    return ((u >>> 16) | 0x0040) & 0xffff; // quiet NaN, sign kept
  }
  const rounded = u + 0x7fff + ((u >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/**
 * Decodes bfloat16 bits.
 *
 * @param bits The 16 raw bits.
 * @returns The value.
 */
export function bf16BitsToF32(bits: number): number {
  u32buf[0] = (bits & 0xffff) << 16;
  return f32buf[0]!;
}

/**
 * Reads element `i` of a tensor as a JavaScript number (i64 through `Number`).
 *
 * @param t The tensor.
 * @param i Flat index.
 * @returns The value.
 */
export function elementAsNumber(t: Tensor, i: number): number {
  return toNumberReader(t)(i);
}

type Reader = (i: number) => number;
type Writer = (i: number, v: number) => void;

let fp8Codec:
  | {
    decode(dtype: "f8e4m3" | "f8e5m2", bits: number): number;
    encode(dtype: "f8e4m3" | "f8e5m2", x: number): number;
  }
  | undefined;

/**
 * Registers the FP8 codec (done by `fp8.ts`, so that this file does not
 * depend on it at load time).
 *
 * @param codec Decoder and saturating encoder.
 */
export function registerFp8Codec(codec: NonNullable<typeof fp8Codec>): void {
  fp8Codec = codec;
}

function toNumberReader(t: Tensor): Reader {
  const d = t.data;
  switch (t.dtype) {
    case "bf16":
      return (i) => bf16BitsToF32((d as Uint16Array)[i]!);
    case "f8e4m3":
    case "f8e5m2": {
      const codec = fp8Codec;
      if (!codec) throw new TypeError("FP8 codec not loaded: import core/fp8.ts");
      const dtype = t.dtype;
      return (i) => codec.decode(dtype, (d as Uint8Array)[i]!);
    }
    case "i64":
      return (i) => Number((d as BigInt64Array)[i]!);
    default:
      return (i) => (d as Float64Array)[i]!;
  }
}

function toNumberWriter(dtype: DType, out: Tensor["data"]): Writer {
  switch (dtype) {
    case "bf16":
      return (i, v) => ((out as Uint16Array)[i] = f32ToBf16Bits(v));
    case "f8e4m3":
    case "f8e5m2": {
      const codec = fp8Codec;
      if (!codec) throw new TypeError("FP8 codec not loaded: import core/fp8.ts");
      return (i, v) => ((out as Uint8Array)[i] = codec.encode(dtype, v));
    }
    case "i64":
      return (i, v) => ((out as BigInt64Array)[i] = BigInt(Math.trunc(v)));
    case "bool":
      return (i, v) => ((out as Uint8Array)[i] = v !== 0 ? 1 : 0);
    case "i8":
    case "u8":
    case "i16":
    case "u16":
    case "i32":
    case "u32":
      return (i, v) => ((out as Int32Array)[i] = Math.round(v));
    default:
      return (i, v) => ((out as Float64Array)[i] = v);
  }
}

/**
 * Converts a tensor to another dtype (a fresh copy, even when the dtype is the same).
 *
 * Floats to integers round half away from zero and wrap as the typed array does;
 * floats to FP8 saturate as the OCP FP8 spec allows.
 *
 * @param t The tensor.
 * @param dtype Target dtype.
 * @returns A fresh tensor.
 */
export function convert<D extends DType>(t: Tensor, dtype: D): Tensor<D> {
  const n = t.data.length;
  const out = allocate(dtype, n);
  if (t.dtype === dtype) {
    // deno-lint-ignore no-explicit-any
    (out as any).set(t.data);
    return tensor(dtype, t.shape, out);
  }
  if (t.dtype === "i64" && dtype !== "i64" && dtype !== "f64" && dtype !== "f32") {
    // keep exact 64-bit integers exact where the target can hold them
    const src = t.data as BigInt64Array;
    const write = toNumberWriter(dtype, out);
    for (let i = 0; i < n; i++) write(i, Number(src[i]!));
    return tensor(dtype, t.shape, out);
  }
  const read = toNumberReader(t);
  const write = toNumberWriter(dtype, out);
  for (let i = 0; i < n; i++) write(i, read(i));
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
