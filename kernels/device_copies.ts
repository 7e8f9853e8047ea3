/**
 * Device copies of host float32 arrays: a registry that says "these host
 * values are also in this GPU buffer, at this byte offset", so that code on
 * the same device copies them on the GPU instead of uploading them again.
 * A calibration runner registers the weights of the block it uploaded (views
 * into its buffers, which it keeps), a solver registers the new weights it
 * left on the device (copies handed over to whoever takes them), and each
 * side reads what the other registered. Nothing here knows an algorithm.
 *
 * The host array is the key, so a copy is found through any tensor that
 * wraps the same array; host arrays are treated as immutable (as tensors
 * are in this library): whoever changes the buffer range must release the
 * entry first. Each function takes the array or a tensor of it: a tensor is
 * keyed by its storage without being filled (`core/lazy_tensor.ts`), so a
 * weight whose host values are computed only when read can stand for its
 * device copy. Web-standard only.
 *
 * @module
 */

import type { Gpu } from "./backend.ts";
import { numel, type Tensor } from "../core/tensor.ts";
import { storageIdentity } from "../core/lazy_tensor.ts";

/** Host values: a float32 array, or a tensor of one (possibly lazy, then not filled here). */
export type HostValues = Float32Array | Tensor<"f32">;

function keyOf(values: HostValues): object {
  return ArrayBuffer.isView(values) ? values : storageIdentity(values);
}

function byteLengthOf(values: HostValues): number {
  return ArrayBuffer.isView(values) ? values.byteLength : numel(values.shape) * 4;
}

/** Where a host array's values are on a device. */
export interface DeviceCopy {
  /** The GPU the buffer belongs to. */
  readonly gpu: Gpu;
  /** The buffer (STORAGE | COPY_SRC | COPY_DST, as `storageBuffer` makes them). */
  readonly buffer: GPUBuffer;
  /** Byte offset of the first value in the buffer (a multiple of 4). */
  readonly offset: number;
  /**
   * Whether the registry owns the buffer: an owned copy is destroyed when it
   * is released (a view into a buffer someone else keeps is only forgotten).
   */
  readonly owned: boolean;
}

/** A float32 array in a buffer of its own on a device, handed to whoever receives it. */
export interface DeviceWeight {
  /** The GPU the buffer belongs to. */
  readonly gpu: Gpu;
  /** The buffer; its receiver owns it (and destroys it, or registers it as an owned copy). */
  readonly buffer: GPUBuffer;
}

const copies = new WeakMap<object, DeviceCopy>();

/**
 * Registers a device copy of `values` (replacing, and releasing, any earlier one).
 *
 * @param values The host values, or a tensor of them (their bytes are at `offset` of the buffer).
 * @param copy Where they are, and whether the registry owns the buffer.
 * @throws {RangeError} when the range does not fit the buffer or the offset is unaligned.
 */
export function attachDeviceCopy(values: HostValues, copy: DeviceCopy): void {
  const { buffer, offset } = copy;
  if (!(Number.isInteger(offset) && offset >= 0 && offset % 4 === 0)) {
    throw new RangeError(
      `Cannot attach a device copy at byte offset ${offset}: it must be a multiple of 4`,
    );
  }
  const byteLength = byteLengthOf(values);
  if (offset + byteLength > buffer.size) {
    throw new RangeError(
      `Cannot attach a device copy of ${byteLength} bytes at offset ${offset} ` +
        `of a buffer of ${buffer.size} bytes`,
    );
  }
  const key = keyOf(values);
  const prev = copies.get(key);
  if (prev !== undefined && prev.buffer !== buffer) releaseDeviceCopy(values);
  copies.set(key, copy);
}

/**
 * The device copy of `values` on `gpu`'s device, if one is registered.
 *
 * @param values The host values, or a tensor of them.
 * @param gpu The device the copy must live on.
 * @returns The copy, or null.
 */
export function deviceCopyOf(values: HostValues, gpu: Gpu): DeviceCopy | null {
  const c = copies.get(keyOf(values));
  return c !== undefined && c.gpu.device === gpu.device ? c : null;
}

/**
 * Removes the entry of `values` and hands it over: the caller now owns the
 * buffer of an owned copy (and destroys it when done).
 *
 * @param values The host values, or a tensor of them.
 * @param gpu The device the copy must live on.
 * @returns The copy, or null (then nothing changed).
 */
export function takeDeviceCopy(values: HostValues, gpu: Gpu): DeviceCopy | null {
  const c = deviceCopyOf(values, gpu);
  if (c !== null) copies.delete(keyOf(values));
  return c;
}

/**
 * Forgets the device copy of `values`, destroying its buffer when the
 * registry owns it. Nothing happens when none is registered.
 *
 * @param values The host values, or a tensor of them.
 */
export function releaseDeviceCopy(values: HostValues): void {
  const key = keyOf(values);
  const c = copies.get(key);
  if (c === undefined) return;
  copies.delete(key);
  if (c.owned) c.buffer.destroy();
}
