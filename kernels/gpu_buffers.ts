/**
 * WebGPU storage buffers: the per-binding size limit, allocation, and
 * uploads of typed arrays.
 *
 * Web-standard only.
 *
 * @module
 */

import { assertDeviceAlive, type Gpu } from "./gpu_device.ts";

const STORAGE_USAGE = 0x80 | 0x4 | 0x8; // STORAGE | COPY_SRC | COPY_DST

/**
 * The largest buffer one storage binding can hold on this device, in bytes
 * (the smaller of `maxStorageBufferBindingSize` and `maxBufferSize`).
 *
 * @param gpu The GPU.
 * @returns Bytes.
 */
export function bindingLimit(gpu: Gpu): number {
  return Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
}

/**
 * A storage buffer of `bytes` (rounded up to 4), usable as copy source and
 * destination too.
 *
 * @param gpu The GPU.
 * @param bytes Size in bytes.
 * @param label Debug label.
 * @returns The buffer (its contents are zero).
 */
export function storageBuffer(gpu: Gpu, bytes: number, label = "storage"): GPUBuffer {
  assertDeviceAlive();
  const size = Math.max(4, Math.ceil(bytes / 4) * 4);
  if (size > gpu.limits.maxBufferSize) {
    throw new RangeError(
      `Cannot allocate ${label}: ${size} bytes exceeds the device's maxBufferSize ${gpu.limits.maxBufferSize}`,
    );
  }
  return gpu.device.createBuffer({ size, usage: STORAGE_USAGE, label });
}

/**
 * Uploads a typed array into a fresh storage buffer.
 *
 * @param gpu The GPU.
 * @param data Values to upload.
 * @param label Debug label.
 * @returns The buffer.
 */
export function uploadBuffer(gpu: Gpu, data: ArrayBufferView, label = "upload"): GPUBuffer {
  // queue.writeBuffer, not mappedAtCreation: on the H100 through Deno 2.9.6 a
  // mapped 64 MB upload took 6 s, writeBuffer 0.04 s.
  const buffer = storageBuffer(gpu, data.byteLength, label);
  writeBuffer(gpu, buffer, 0, data);
  return buffer;
}

/**
 * Uploads float values (any float typed array) as float32.
 *
 * @param gpu The GPU.
 * @param data Values (float64 are rounded to nearest float32).
 * @param label Debug label.
 * @returns The buffer.
 */
export function uploadF32(
  gpu: Gpu,
  data: Float64Array | Float32Array,
  label = "upload",
): GPUBuffer {
  return uploadBuffer(gpu, data instanceof Float32Array ? data : Float32Array.from(data), label);
}

/**
 * Writes a typed array into a buffer at a byte offset (padded to 4 bytes).
 *
 * @param gpu The GPU.
 * @param buffer Destination.
 * @param offset Byte offset (a multiple of 4).
 * @param data Values.
 */
export function writeBuffer(
  gpu: Gpu,
  buffer: GPUBuffer,
  offset: number,
  data: ArrayBufferView,
): void {
  const bytes = new Uint8Array(
    data.buffer as ArrayBuffer,
    data.byteOffset,
    data.byteLength,
  );
  if (bytes.byteLength % 4 === 0) {
    gpu.device.queue.writeBuffer(buffer, offset, bytes);
  } else {
    const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
    padded.set(bytes);
    gpu.device.queue.writeBuffer(buffer, offset, padded);
  }
}
