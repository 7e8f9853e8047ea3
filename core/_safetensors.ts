/**
 * Library-internal safetensors format rules shared by `safetensors.ts`
 * (bytes in memory) and `safetensors_file.ts` (files): the dtype table,
 * header validation, the write plan. Web-standard only.
 *
 * Format: an unsigned 64-bit little-endian header length `N`, then `N` bytes
 * of UTF-8 JSON (an object: tensor name → `{ dtype, shape, data_offsets }`,
 * plus an optional `__metadata__` string→string map), then the data section.
 * `data_offsets` are `[begin, end)` byte offsets relative to the start of the
 * data section; tensors are contiguous, little-endian, row-major.
 *
 * @module
 */

import {
  allocate,
  type DType,
  type DTypeStorage,
  itemSize,
  STORAGE_ARRAYS,
  type Tensor,
} from "./tensor.ts";

/** A malformed safetensors file (or one this library cannot represent). */
export class SafetensorsError extends Error {
  /**
   * Makes the error.
   *
   * @param message What rule was broken, naming the tensor where there is one.
   */
  constructor(message: string) {
    super(message);
    this.name = "SafetensorsError";
  }
}

/** Largest header accepted (the same bound as Hugging Face's reader). */
export const MAX_HEADER_BYTES = 100_000_000;

const FROM_ST = new Map<string, DType>([
  ["F64", "f64"],
  ["F32", "f32"],
  ["F16", "f16"],
  ["BF16", "bf16"],
  ["I64", "i64"],
  ["I32", "i32"],
  ["I16", "i16"],
  ["I8", "i8"],
  ["U8", "u8"],
  ["U16", "u16"],
  ["U32", "u32"],
  ["BOOL", "bool"],
  ["F8_E4M3", "f8e4m3"],
  ["F8_E5M2", "f8e5m2"],
]);
const TO_ST = new Map<DType, string>([...FROM_ST].map(([s, d]) => [d, s]));

/** The safetensors dtype string of one of our dtypes. */
export function safetensorsDType(dtype: DType): string {
  const s = TO_ST.get(dtype);
  if (s === undefined) throw new TypeError(`Unknown dtype: ${String(dtype)}`);
  return s;
}

/** One tensor's place in a file, validated. */
export interface Entry {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Offset of the first byte, relative to the data section. */
  readonly begin: number;
  /** Offset one past the last byte, relative to the data section. */
  readonly end: number;
}

/** A validated header. */
export interface Header {
  /** Tensors in data order (by offset). */
  readonly entries: readonly Entry[];
  readonly metadata: Record<string, string>;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

const show = (v: unknown): string => {
  try {
    const s = JSON.stringify(v) ?? String(v);
    return s.length > 80 ? `${s.slice(0, 77)}...` : s;
  } catch {
    return String(v);
  }
};

/**
 * Reads and checks the 8-byte header length against the file length.
 *
 * @returns `N`, the JSON header's byte length.
 */
export function headerLength(first8: Uint8Array, fileLength: number): number {
  if (fileLength < 8 || first8.length < 8) {
    throw new SafetensorsError(
      `Invalid safetensors file: it has ${fileLength} bytes, fewer than the 8-byte header length`,
    );
  }
  const lo = first8[0]! | first8[1]! << 8 | first8[2]! << 16 | first8[3]! * 2 ** 24;
  const hi = first8[4]! | first8[5]! << 8 | first8[6]! << 16 | first8[7]! * 2 ** 24;
  if (hi !== 0 || lo > MAX_HEADER_BYTES) {
    const n = BigInt(hi) << 32n | BigInt(lo >>> 0);
    throw new SafetensorsError(
      `Invalid safetensors header: its length ${n} exceeds the limit of ${MAX_HEADER_BYTES} bytes`,
    );
  }
  if (8 + lo > fileLength) {
    throw new SafetensorsError(
      `Invalid safetensors header: its length ${lo} runs past the end of the ${fileLength}-byte file`,
    );
  }
  if (lo === 0) throw new SafetensorsError("Invalid safetensors header: its length is 0");
  return lo;
}

function checkEntry(name: string, raw: unknown, dataLength: number): Entry {
  const where = `tensor ${JSON.stringify(name)}`;
  if (!isObject(raw)) {
    throw new SafetensorsError(`Invalid ${where}: its header entry must be an object`);
  }
  const { dtype: st, shape, data_offsets: offsets } = raw;
  const dtype = typeof st === "string" ? FROM_ST.get(st) : undefined;
  if (dtype === undefined) {
    throw new SafetensorsError(
      `Invalid ${where}: unsupported dtype ${show(st)} (expected one of ${[...FROM_ST.keys()]})`,
    );
  }
  if (!Array.isArray(shape)) {
    throw new SafetensorsError(`Invalid ${where}: 'shape' must be an array, not ${show(shape)}`);
  }
  const size = itemSize(dtype);
  let count = 1;
  let zero = false;
  for (const d of shape) {
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      throw new SafetensorsError(
        `Invalid ${where}: 'shape' must hold non-negative integers, not ${show(d)}`,
      );
    }
    if (d === 0) zero = true;
    else count *= d; // a double: no overflow, only lost precision past 2^53
  }
  if (zero) count = 0;
  else if (count * size > Number.MAX_SAFE_INTEGER) count = Infinity;
  if (
    !Array.isArray(offsets) || offsets.length !== 2 ||
    !offsets.every((o) => typeof o === "number" && Number.isSafeInteger(o) && o >= 0)
  ) {
    throw new SafetensorsError(
      `Invalid ${where}: 'data_offsets' must be two non-negative integers, not ${show(offsets)}`,
    );
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) {
    throw new SafetensorsError(`Invalid ${where}: 'data_offsets' [${begin}, ${end}] are reversed`);
  }
  if (end > dataLength) {
    throw new SafetensorsError(
      `Invalid ${where}: 'data_offsets' [${begin}, ${end}] run past the ${dataLength}-byte data section`,
    );
  }
  if (count * size !== end - begin) {
    throw new SafetensorsError(
      `Invalid ${where}: shape [${shape}] of ${dtype} needs ${
        count === Infinity ? "more than 2^53 bytes" : `${count * size} bytes`
      }, but 'data_offsets' [${begin}, ${end}] hold ${end - begin}`,
    );
  }
  return { name, dtype, shape: [...shape] as number[], begin, end };
}

/**
 * Decodes and validates the JSON header against the data section's length.
 *
 * @param json The `N` header bytes.
 * @param dataLength Bytes after the header.
 */
export function parseHeader(json: Uint8Array, dataLength: number): Header {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(json);
  } catch {
    throw new SafetensorsError("Invalid safetensors header: it is not valid UTF-8");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(
      `Invalid safetensors header: it is not JSON (${e instanceof Error ? e.message : e})`,
    );
  }
  if (!isObject(parsed)) {
    throw new SafetensorsError(
      `Invalid safetensors header: it must be a JSON object, not ${show(parsed)}`,
    );
  }
  const entries: Entry[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(parsed)) {
    if (name === "__metadata__") {
      if (raw === null) continue; // Hugging Face's reader takes null as "no metadata"
      if (!isObject(raw)) {
        throw new SafetensorsError(
          `Invalid safetensors header: '__metadata__' must be an object, not ${show(raw)}`,
        );
      }
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== "string") {
          throw new SafetensorsError(
            `Invalid safetensors header: '__metadata__' value of ${
              JSON.stringify(k)
            } must be a string, not ${show(v)}`,
          );
        }
      }
      metadata = Object.fromEntries(Object.entries(raw)) as Record<string, string>;
      continue;
    }
    entries.push(checkEntry(name, raw, dataLength));
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: Entry | undefined;
  for (const e of entries) {
    if (e.begin < cursor) {
      throw new SafetensorsError(
        `Invalid tensor ${JSON.stringify(e.name)}: its bytes [${e.begin}, ${e.end}) overlap ` +
          `tensor ${JSON.stringify(previous!.name)} [${previous!.begin}, ${previous!.end})`,
      );
    }
    if (e.begin > cursor) {
      throw new SafetensorsError(
        `Invalid tensor ${JSON.stringify(e.name)}: a gap of unused bytes [${cursor}, ${e.begin}) ` +
          `precedes it (tensors must be contiguous)`,
      );
    }
    cursor = e.end;
    previous = e;
  }
  if (cursor !== dataLength) {
    throw new SafetensorsError(
      `Invalid safetensors file: tensors cover ${cursor} bytes of the ${dataLength}-byte data section`,
    );
  }
  return { entries, metadata };
}

/** True on little-endian hosts (all current ones); the file format is little-endian. */
export const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function swapInPlace(bytes: Uint8Array, size: number): void {
  if (size === 1) return;
  for (let i = 0; i < bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = bytes[a]!;
      bytes[a] = bytes[b]!;
      bytes[b] = t;
    }
  }
}

/**
 * A typed array of a tensor's elements from its little-endian bytes: a view
 * when `view` is allowed and the bytes are aligned, otherwise a copy.
 */
export function storageFrom<D extends DType>(
  dtype: D,
  bytes: Uint8Array,
  view: boolean,
): DTypeStorage[D] {
  const size = itemSize(dtype);
  const n = bytes.length / size;
  let out: DTypeStorage[D];
  if (view && LITTLE_ENDIAN && bytes.byteOffset % size === 0) {
    out = new STORAGE_ARRAYS[dtype](bytes.buffer, bytes.byteOffset, n);
  } else {
    out = allocate(dtype, n);
    const dst = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
    dst.set(bytes);
    if (!LITTLE_ENDIAN) swapInPlace(dst, size);
  }
  if (dtype === "bool") {
    const b = out as Uint8Array;
    for (let i = 0; i < b.length; i++) {
      if (b[i]! > 1) {
        throw new SafetensorsError(`Invalid bool data: byte ${i} is ${b[i]}, not 0 or 1`);
      }
    }
  }
  return out;
}

/** The tensors to write: a Map or a plain record, name → tensor. */
export type TensorMap = ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>;

/** What to write: the header (length prefix included) then each tensor's bytes. */
export interface Plan {
  readonly header: Uint8Array;
  readonly parts: readonly Uint8Array[];
  readonly totalLength: number;
}

/**
 * Validates tensors and metadata and lays them out in the given order:
 * `__metadata__` first, the JSON padded with spaces to a multiple of 8.
 */
export function planSafetensors(
  tensors: TensorMap,
  metadata: Readonly<Record<string, string>> = {},
): Plan {
  const list: [string, Tensor][] = tensors instanceof Map
    ? [...tensors]
    : Object.entries(tensors as Record<string, Tensor>);
  if (!isObject(metadata)) {
    throw new TypeError(
      `Cannot write safetensors as 'metadata' must be a string→string record: current value is ${
        show(metadata)
      }`,
    );
  }
  const pieces: string[] = [];
  const metaEntries = Object.entries(metadata);
  for (const [k, v] of metaEntries) {
    if (typeof v !== "string") {
      throw new TypeError(
        `Cannot write safetensors as 'metadata' values must be strings: ${JSON.stringify(k)} is ${
          show(v)
        }`,
      );
    }
  }
  if (metaEntries.length > 0) {
    pieces.push(
      `"__metadata__":{${
        metaEntries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")
      }}`,
    );
  }
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of list) {
    const where = `tensor ${JSON.stringify(name)}`;
    if (name === "__metadata__") {
      throw new TypeError(`Cannot write safetensors: '__metadata__' is not a valid tensor name`);
    }
    if (!isObject(t) || typeof t.dtype !== "string" || !TO_ST.has(t.dtype)) {
      throw new TypeError(
        `Cannot write ${where}: it must be a Tensor with a known dtype, not ${show(t)}`,
      );
    }
    const data = t.data as ArrayBufferView & { length: number };
    const expected = STORAGE_ARRAYS[t.dtype];
    if (!(data instanceof expected)) {
      throw new TypeError(
        `Cannot write ${where}: dtype ${t.dtype} must be stored in a ${expected.name}, not ${
          (data as { constructor?: { name?: string } } | undefined)?.constructor?.name
        }`,
      );
    }
    let count = 1;
    for (const d of t.shape) {
      if (!Number.isSafeInteger(d) || d < 0) {
        throw new RangeError(
          `Cannot write ${where}: 'shape' must hold non-negative integers: current value is [${t.shape}]`,
        );
      }
      count *= d;
    }
    if (count !== data.length) {
      throw new RangeError(
        `Cannot write ${where}: shape [${t.shape}] has ${count} elements but its data has ${data.length}`,
      );
    }
    let bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (!LITTLE_ENDIAN) {
      bytes = bytes.slice();
      swapInPlace(bytes, itemSize(t.dtype));
    }
    parts.push(bytes);
    pieces.push(
      `${JSON.stringify(name)}:{"dtype":"${TO_ST.get(t.dtype)}","shape":[${
        t.shape.join(",")
      }],"data_offsets":[${offset},${offset + bytes.length}]}`,
    );
    offset += bytes.length;
  }
  const json = new TextEncoder().encode(`{${pieces.join(",")}}`);
  const n = Math.ceil(json.length / 8) * 8;
  if (n > MAX_HEADER_BYTES) {
    throw new RangeError(`Cannot write safetensors: the header would have ${n} bytes`);
  }
  const header = new Uint8Array(8 + n).fill(0x20, 8 + json.length);
  new DataView(header.buffer).setUint32(0, n, true);
  header.set(json, 8);
  return { header, parts, totalLength: header.length + offset };
}
