/**
 * The library's tensor: a plain `{ dtype, shape, data }` record, row-major.
 *
 * Web-standard only (no `Deno` namespace).
 *
 * @module
 */

/** Element types a {@linkcode Tensor} can hold. */
export type DType =
  | "f64"
  | "f32"
  | "f16"
  | "bf16"
  | "f8e4m3"
  | "f8e5m2"
  | "i8"
  | "u8"
  | "i16"
  | "u16"
  | "i32"
  | "u32"
  | "i64"
  | "bool";

/** The typed array that stores each dtype (bf16 and FP8 hold raw bits). */
export interface DTypeStorage {
  /** IEEE binary64. */
  f64: Float64Array;
  /** IEEE binary32. */
  f32: Float32Array;
  /** IEEE binary16. */
  f16: Float16Array;
  /** bfloat16 raw bits. */
  bf16: Uint16Array;
  /** OCP FP8 E4M3 raw bits. */
  f8e4m3: Uint8Array;
  /** OCP FP8 E5M2 raw bits. */
  f8e5m2: Uint8Array;
  /** Signed 8-bit integers. */
  i8: Int8Array;
  /** Unsigned 8-bit integers. */
  u8: Uint8Array;
  /** Signed 16-bit integers. */
  i16: Int16Array;
  /** Unsigned 16-bit integers. */
  u16: Uint16Array;
  /** Signed 32-bit integers. */
  i32: Int32Array;
  /** Unsigned 32-bit integers. */
  u32: Uint32Array;
  /** Signed 64-bit integers. */
  i64: BigInt64Array;
  /** Booleans, one byte each (0 or 1). */
  bool: Uint8Array;
}

/** A row-major tensor: element type, shape and flat storage. */
export interface Tensor<D extends DType = DType> {
  /** Element type. */
  readonly dtype: D;
  /** Extent of each axis, outermost first. */
  readonly shape: readonly number[];
  /** Flat row-major storage of `numel(shape)` elements. */
  readonly data: DTypeStorage[D];
}

/** All dtypes, in a stable order. */
export const DTYPES: readonly DType[] = [
  "f64",
  "f32",
  "f16",
  "bf16",
  "f8e4m3",
  "f8e5m2",
  "i8",
  "u8",
  "i16",
  "u16",
  "i32",
  "u32",
  "i64",
  "bool",
];

const ITEM_SIZE: Record<DType, number> = {
  f64: 8,
  f32: 4,
  f16: 2,
  bf16: 2,
  f8e4m3: 1,
  f8e5m2: 1,
  i8: 1,
  u8: 1,
  i16: 2,
  u16: 2,
  i32: 4,
  u32: 4,
  i64: 8,
  bool: 1,
};

/**
 * Bytes per element of a dtype.
 *
 * @param dtype The element type.
 * @returns The item size in bytes.
 */
export function itemSize(dtype: DType): number {
  const size = ITEM_SIZE[dtype];
  if (size === undefined) throw new TypeError(`Unknown dtype: ${String(dtype)}`);
  return size;
}

/**
 * Number of elements of a shape (1 for a scalar shape `[]`).
 *
 * @param shape Axis extents.
 * @returns Their product.
 */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function checkShape(shape: readonly number[]): void {
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new RangeError(
        `Cannot make a tensor as 'shape' must hold non-negative integers: current value is [${shape}]`,
      );
    }
  }
}

/** The constructor of a dtype's storage (see {@linkcode STORAGE_ARRAYS}). */
export interface StorageArrayConstructor<D extends DType> {
  /** Zeroed storage for `n` elements. */
  new (n: number): DTypeStorage[D];
  /** A view of `n` elements of `buffer` from byte `byteOffset`. */
  new (buffer: ArrayBufferLike, byteOffset: number, n: number): DTypeStorage[D];
  /** The constructor's name, e.g. "Float32Array". */
  readonly name: string;
}

/** The typed array constructor that stores each dtype ({@linkcode DTypeStorage}). */
export const STORAGE_ARRAYS: { readonly [D in DType]: StorageArrayConstructor<D> } = {
  f64: Float64Array,
  f32: Float32Array,
  f16: Float16Array,
  bf16: Uint16Array,
  f8e4m3: Uint8Array,
  f8e5m2: Uint8Array,
  i8: Int8Array,
  u8: Uint8Array,
  i16: Int16Array,
  u16: Uint16Array,
  i32: Int32Array,
  u32: Uint32Array,
  i64: BigInt64Array,
  bool: Uint8Array,
};

/**
 * Allocates zeroed storage for `n` elements of a dtype.
 *
 * @param dtype The element type.
 * @param n Element count.
 * @returns A fresh typed array.
 */
export function allocate<D extends DType>(dtype: D, n: number): DTypeStorage[D] {
  if (!Object.hasOwn(STORAGE_ARRAYS, dtype)) {
    throw new TypeError(`Unknown dtype: ${String(dtype)}`);
  }
  return new STORAGE_ARRAYS[dtype](n);
}

/**
 * Makes a tensor from existing storage (not copied) or zeros.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "./tensor.ts";
 * const t = tensor("f32", [2, 3], new Float32Array([1, 2, 3, 4, 5, 6]));
 * assert(t.shape[1] === 3);
 * ```
 * @param dtype The element type.
 * @param shape Axis extents.
 * @param data Storage with exactly `numel(shape)` elements; zeros when absent.
 * @returns The tensor.
 */
export function tensor<D extends DType>(
  dtype: D,
  shape: readonly number[],
  data?: DTypeStorage[D],
): Tensor<D> {
  checkShape(shape);
  const n = numel(shape);
  const storage = data ?? allocate(dtype, n);
  if (storage.length !== n) {
    throw new RangeError(
      `Cannot make a tensor of shape [${shape}] (${n} elements) from ${storage.length} elements`,
    );
  }
  return { dtype, shape: [...shape], data: storage };
}

/**
 * A zero-filled tensor.
 *
 * @param dtype The element type.
 * @param shape Axis extents.
 * @returns The tensor.
 */
export function zeros<D extends DType>(dtype: D, shape: readonly number[]): Tensor<D> {
  return tensor(dtype, shape);
}

/**
 * A float tensor from nested or flat JavaScript numbers.
 *
 * @param values A flat array (then `shape` is required) or a rectangular nested array.
 * @param options `dtype` (default `"f32"`) and an optional `shape`.
 * @returns The tensor.
 */
export function fromArray(
  values: readonly unknown[],
  options: { dtype?: "f32" | "f64"; shape?: readonly number[] } = {},
): Tensor<"f32" | "f64"> {
  const { dtype = "f32" } = options;
  if (dtype !== "f32" && dtype !== "f64") {
    throw new TypeError(
      `Cannot make a tensor as 'dtype' must be "f32" or "f64": current value is ${String(dtype)}`,
    );
  }
  const shape: number[] = [];
  let level: unknown = values;
  while (Array.isArray(level)) {
    shape.push(level.length);
    level = level[0];
  }
  const flat: number[] = [];
  const walk = (v: unknown, depth: number): void => {
    if (depth === shape.length) {
      if (typeof v !== "number") {
        throw new TypeError(`Cannot make a tensor from a non-number value: ${String(v)}`);
      }
      flat.push(v);
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[depth]) {
      throw new RangeError(
        `Cannot make a tensor from a ragged array: expected ${
          shape[depth]
        } entries at depth ${depth}`,
      );
    }
    for (const x of v) walk(x, depth + 1);
  };
  walk(values, 0);
  const finalShape = options.shape ?? shape;
  checkShape(finalShape);
  if (numel(finalShape) !== flat.length) {
    throw new RangeError(
      `Cannot make a tensor of shape [${finalShape}] from ${flat.length} values`,
    );
  }
  const data = dtype === "f64" ? Float64Array.from(flat) : Float32Array.from(flat);
  return tensor(dtype, finalShape, data);
}

/**
 * The same storage seen with another shape of the same element count.
 *
 * @param t The tensor.
 * @param shape New shape; one axis may be `-1` (inferred).
 * @returns A tensor sharing `t.data`.
 */
export function reshape<D extends DType>(t: Tensor<D>, shape: readonly number[]): Tensor<D> {
  const n = t.data.length;
  const free = shape.indexOf(-1);
  for (const [i, d] of shape.entries()) {
    if (!(Number.isSafeInteger(d) && (d >= 0 || (d === -1 && i === free)))) {
      throw new RangeError(
        `Cannot reshape [${t.shape}] to [${shape}]: axes must be non-negative integers, with at most one -1`,
      );
    }
  }
  let resolved = [...shape];
  if (free >= 0) {
    const rest = numel(shape.filter((_, i) => i !== free));
    if (rest === 0 || n % rest !== 0) {
      throw new RangeError(`Cannot reshape [${t.shape}] (${n} elements) to [${shape}]`);
    }
    resolved = shape.map((d, i) => (i === free ? n / rest : d));
  }
  if (numel(resolved) !== n) {
    throw new RangeError(`Cannot reshape [${t.shape}] (${n} elements) to [${shape}]`);
  }
  return tensor(t.dtype, resolved, t.data);
}

/**
 * Rows and columns of a 2-D tensor, with a clear error for other ranks.
 *
 * @param t The tensor.
 * @param name How to name it in errors.
 * @returns `[rows, cols]`.
 */
export function dims2(t: Tensor, name = "tensor"): [number, number] {
  if (t.shape.length !== 2) {
    throw new RangeError(`'${name}' must be 2-D: current shape is [${t.shape}]`);
  }
  return [t.shape[0]!, t.shape[1]!];
}

/**
 * Rows `[start, end)` of a 2-D (or higher: along the first axis) tensor, copied.
 *
 * @param t The tensor.
 * @param start First row.
 * @param end One past the last row.
 * @returns A fresh tensor.
 */
export function sliceRows<D extends DType>(t: Tensor<D>, start: number, end: number): Tensor<D> {
  if (t.shape.length === 0) {
    throw new RangeError(`Cannot slice rows of a scalar tensor (shape [])`);
  }
  const rows = t.shape[0]!;
  if (
    !(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= rows)
  ) {
    throw new RangeError(`Cannot slice rows [${start}, ${end}) of a tensor with ${rows} rows`);
  }
  const inner = rows === 0 ? 0 : t.data.length / rows;
  const data = t.data.slice(start * inner, end * inner) as DTypeStorage[D];
  return tensor(t.dtype, [end - start, ...t.shape.slice(1)], data);
}

/**
 * Columns `[start, end)` of a 2-D tensor, copied.
 *
 * @param t The tensor.
 * @param start First column.
 * @param end One past the last column.
 * @returns A fresh tensor.
 */
export function sliceCols<D extends DType>(t: Tensor<D>, start: number, end: number): Tensor<D> {
  const [rows, cols] = dims2(t);
  if (
    !(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= cols)
  ) {
    throw new RangeError(
      `Cannot slice columns [${start}, ${end}) of a tensor with ${cols} columns`,
    );
  }
  const width = end - start;
  const out = allocate(t.dtype, rows * width);
  for (let r = 0; r < rows; r++) {
    // deno-lint-ignore no-explicit-any
    (out as any).set(t.data.subarray(r * cols + start, r * cols + end), r * width);
  }
  return tensor(t.dtype, [rows, width], out);
}

/**
 * Transpose of a 2-D tensor, copied.
 *
 * @param t The tensor, shape [rows, cols].
 * @returns A fresh tensor of shape [cols, rows].
 */
export function transpose<D extends DType>(t: Tensor<D>): Tensor<D> {
  const [rows, cols] = dims2(t);
  const out = allocate(t.dtype, rows * cols);
  const src = t.data as unknown as ArrayLike<number> & { [i: number]: number };
  const dst = out as unknown as { [i: number]: number };
  const B = 32;
  for (let r0 = 0; r0 < rows; r0 += B) {
    for (let c0 = 0; c0 < cols; c0 += B) {
      const r1 = Math.min(rows, r0 + B);
      const c1 = Math.min(cols, c0 + B);
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) dst[c * rows + r] = src[r * cols + c]!;
      }
    }
  }
  return tensor(t.dtype, [cols, rows], out);
}

/** Float dtypes whose storage holds numbers directly. */
export type NumericFloat = "f64" | "f32" | "f16";

/**
 * Whether a tensor is f64/f32/f16 (storage readable as numbers).
 *
 * @param t The tensor.
 * @returns True for directly numeric float storage.
 */
export function isPlainFloat(t: Tensor): t is Tensor<NumericFloat> {
  return t.dtype === "f64" || t.dtype === "f32" || t.dtype === "f16";
}
