/**
 * Safetensors files on disk: {@linkcode readSafetensors},
 * {@linkcode writeSafetensors} (atomic) and {@linkcode openSafetensors}
 * (lazy, by offset, for files larger than memory).
 *
 * **Uses the `Deno` namespace** (file system), unlike the rest of `core/`;
 * the in-memory format lives in `safetensors.ts`. Validation is the same:
 * any broken rule throws {@linkcode SafetensorsError}.
 *
 * @module
 */

import type { DType, Tensor } from "./tensor.ts";
import { allocate, itemSize } from "./tensor.ts";
import {
  headerLength,
  LITTLE_ENDIAN,
  parseHeader,
  planSafetensors,
  SafetensorsError,
  storageFrom,
  type TensorMap,
} from "./_safetensors.ts";
import { parseSafetensors, type Safetensors } from "./safetensors.ts";

/**
 * Reads a whole safetensors file into memory. Tensors whose data is aligned
 * view the file's buffer (read once, never shared), the others are copies.
 *
 * @example
 * ```ts ignore
 * import { readSafetensors } from "./safetensors_file.ts";
 * const { tensors, metadata } = await readSafetensors("model.safetensors");
 * ```
 * @param path File path.
 * @returns The tensors, in file order, and the metadata.
 * @throws {SafetensorsError} When the file breaks a rule of the format.
 */
export async function readSafetensors(path: string | URL): Promise<Safetensors> {
  return parseSafetensors(await readWholeFile(path));
}

/**
 * A file's bytes in one buffer of exactly its size (`Deno.readFile` may grow
 * its buffer in steps, holding up to twice a large file at once).
 */
async function readWholeFile(path: string | URL): Promise<Uint8Array> {
  using file = await Deno.open(path, { read: true });
  const size = (await file.stat()).size;
  const bytes = new Uint8Array(size);
  let at = 0;
  while (at < size) {
    const n = await file.read(bytes.subarray(at));
    if (n === null) break;
    at += n;
  }
  // A file that shrank while being read is parsed as what was read (and refused if truncated).
  return at === size ? bytes : bytes.subarray(0, at);
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await file.write(bytes.subarray(at));
}

function tempPathFor(path: string): string {
  const slash = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  const dir = path.slice(0, slash + 1);
  const base = path.slice(slash + 1);
  return `${dir}.${base}.${crypto.randomUUID()}.tmp`;
}

/**
 * Writes tensors to a safetensors file atomically: the bytes go to a
 * temporary file in the same folder, which is flushed to disk and renamed
 * over `path`; on any failure the temporary file is removed and `path` is
 * left as it was. Streams each tensor's bytes (no second copy in memory).
 *
 * @example
 * ```ts ignore
 * import { writeSafetensors } from "./safetensors_file.ts";
 * import { tensor } from "./tensor.ts";
 * await writeSafetensors("out.safetensors", { w: tensor("f32", [2]) }, { format: "pt" });
 * ```
 * @param path Destination path.
 * @param tensors Name → tensor (a Map or a record), written in this order.
 * @param metadata Optional string→string map stored as `__metadata__`.
 * @returns Resolves once the file is in place.
 * @throws {TypeError} Or {RangeError}, for invalid tensors or metadata
 *   (see `serializeSafetensors`); nothing is written then.
 */
export async function writeSafetensors(
  path: string,
  tensors: TensorMap,
  metadata?: Readonly<Record<string, string>>,
): Promise<void> {
  if (typeof path !== "string" || path.length === 0) {
    throw new TypeError(
      `Cannot write safetensors as 'path' must be a non-empty string: current value is ${
        String(path)
      }`,
    );
  }
  const plan = planSafetensors(tensors, metadata);
  const temp = tempPathFor(path);
  let file: Deno.FsFile | undefined;
  try {
    file = await Deno.open(temp, { write: true, createNew: true });
    await writeAll(file, plan.header);
    for (const part of plan.parts) await writeAll(file, part);
    await file.sync();
    file.close();
    file = undefined;
    await Deno.rename(temp, path);
  } catch (err) {
    try {
      file?.close();
    } catch { /* already closed */ }
    try {
      await Deno.remove(temp);
    } catch { /* never created */ }
    throw err;
  }
}

/** Where a tensor lies in an opened file. */
export interface SafetensorsTensorInfo {
  /** Element type. */
  readonly dtype: DType;
  /** Shape. */
  readonly shape: readonly number[];
  /** Absolute byte offset of its data in the file. */
  readonly byteOffset: number;
  /** Byte length of its data. */
  readonly byteLength: number;
}

/** A safetensors file opened for lazy reads (see {@linkcode openSafetensors}). */
export interface SafetensorsFile {
  /** Tensor names, in the order of their data in the file. */
  readonly names: readonly string[];
  /** The `__metadata__` map (empty when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  /**
   * Dtype, shape and byte range of a tensor.
   * @throws {RangeError} For an unknown name.
   */
  info(name: string): SafetensorsTensorInfo;
  /**
   * Reads one tensor into fresh memory (reads are queued, never interleaved).
   * @throws {RangeError} For an unknown name.
   * @throws {SafetensorsError} When the file shrank since it was opened.
   */
  read(name: string): Promise<Tensor>;
  /** Closes the file once the reads already queued are done; later reads throw. */
  close(): void;
  /** Same as `close()`, for `using`. */
  [Symbol.dispose](): void;
}

async function readExactly(file: Deno.FsFile, position: number, into: Uint8Array): Promise<void> {
  await file.seek(position, Deno.SeekMode.Start);
  let at = 0;
  while (at < into.length) {
    const got = await file.read(into.subarray(at));
    if (got === null) {
      throw new SafetensorsError(
        `Invalid safetensors file: it ends at byte ${position + at}, before byte ${
          position + into.length
        } (truncated while open?)`,
      );
    }
    at += got;
  }
}

/**
 * Opens a safetensors file and validates its header, reading tensors only
 * on demand, so files larger than memory work.
 *
 * @example
 * ```ts ignore
 * import { openSafetensors } from "./safetensors_file.ts";
 * using file = await openSafetensors("model.safetensors");
 * for (const name of file.names) console.log(name, file.info(name).shape);
 * const w = await file.read(file.names[0]!);
 * ```
 * @param path File path.
 * @returns A handle; call `close()` (or use `using`) when done.
 * @throws {SafetensorsError} When the header breaks a rule of the format.
 */
export async function openSafetensors(path: string | URL): Promise<SafetensorsFile> {
  const file = await Deno.open(path, { read: true });
  try {
    const size = (await file.stat()).size;
    const first8 = new Uint8Array(Math.min(8, size));
    await readExactly(file, 0, first8);
    const n = headerLength(first8, size);
    const json = new Uint8Array(n);
    await readExactly(file, 8, json);
    const start = 8 + n;
    const { entries, metadata } = parseHeader(json, size - start);
    const byName = new Map(entries.map((e) => [e.name, e]));
    let closed = false;
    let queue: Promise<unknown> = Promise.resolve();
    const entry = (name: string) => {
      const e = byName.get(name);
      if (e === undefined) {
        throw new RangeError(`Cannot find tensor ${JSON.stringify(name)} in ${String(path)}`);
      }
      return e;
    };
    const handle: SafetensorsFile = {
      names: entries.map((e) => e.name),
      metadata,
      info(name) {
        const e = entry(name);
        return {
          dtype: e.dtype,
          shape: [...e.shape],
          byteOffset: start + e.begin,
          byteLength: e.end - e.begin,
        };
      },
      read(name) {
        const e = entry(name);
        if (closed) {
          return Promise.reject(new TypeError(`Cannot read from ${String(path)}: it is closed`));
        }
        const job = queue.then(async (): Promise<Tensor> => {
          const n = (e.end - e.begin) / itemSize(e.dtype);
          const data = allocate(e.dtype, n);
          const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
          await readExactly(file, start + e.begin, bytes);
          let checked = data;
          if (!LITTLE_ENDIAN || e.dtype === "bool") {
            try {
              checked = storageFrom(e.dtype, bytes, LITTLE_ENDIAN);
            } catch (err) {
              if (err instanceof SafetensorsError) {
                throw new SafetensorsError(
                  `Invalid tensor ${JSON.stringify(e.name)}: ${err.message}`,
                );
              }
              throw err;
            }
          }
          return { dtype: e.dtype, shape: [...e.shape], data: checked };
        });
        queue = job.catch(() => {});
        return job;
      },
      close() {
        if (!closed) {
          closed = true;
          // reads already queued finish first
          queue = queue.finally(() => file.close());
        }
      },
      [Symbol.dispose]() {
        this.close();
      },
    };
    return handle;
  } catch (err) {
    file.close();
    throw err;
  }
}

/**
 * Reads one tensor of a safetensors file, synchronously, by the byte range
 * an earlier {@linkcode openSafetensors} reported (`info(name)`): the file
 * is opened, read at that range and closed again, so nothing stays open
 * between reads. For loaders that read a large checkpoint's tensors when
 * they are used rather than at load.
 *
 * @param path File path.
 * @param info The tensor's dtype, shape and byte range (as `info(name)` gave them).
 * @returns The tensor, in fresh memory.
 * @throws {SafetensorsError} When the file ends before the range (it shrank) or
 *   the data is invalid for its dtype.
 */
export function readSafetensorsTensorSync(
  path: string | URL,
  info: SafetensorsTensorInfo,
): Tensor {
  const n = info.byteLength / itemSize(info.dtype);
  const data = allocate(info.dtype, n);
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const file = Deno.openSync(path, { read: true });
  try {
    file.seekSync(info.byteOffset, Deno.SeekMode.Start);
    let at = 0;
    while (at < bytes.length) {
      const got = file.readSync(bytes.subarray(at));
      if (got === null || got === 0) {
        throw new SafetensorsError(
          `Invalid safetensors file ${String(path)}: it ends at byte ${
            info.byteOffset + at
          }, before byte ${info.byteOffset + bytes.length} (it changed since it was opened?)`,
        );
      }
      at += got;
    }
  } finally {
    file.close();
  }
  const checked = !LITTLE_ENDIAN || info.dtype === "bool"
    ? storageFrom(info.dtype, bytes, LITTLE_ENDIAN)
    : data;
  return { dtype: info.dtype, shape: [...info.shape], data: checked };
}
