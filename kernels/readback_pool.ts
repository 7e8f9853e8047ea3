/**
 * The public controls of the pool of idle read-back buffers that
 * {@linkcode GpuBatch.submit} keeps per device: its size, and freeing it.
 *
 * Web-standard only.
 *
 * @module
 */

import { clearPool, readbackPools } from "./_readback_pool.ts";
import type { Gpu } from "./gpu_device.ts";

/**
 * The idle read-back buffers {@linkcode GpuBatch.submit} keeps for later
 * submissions on this GPU (at most 512 MiB; dropped on device loss).
 *
 * @param gpu The GPU.
 * @returns How many there are and their bytes in all.
 */
export function readbackPoolSize(gpu: Gpu): { buffers: number; bytes: number } {
  const pool = readbackPools.get(gpu.device);
  return { buffers: pool?.free.length ?? 0, bytes: pool?.bytes ?? 0 };
}

/**
 * Destroys the idle read-back buffers kept for this GPU (their memory is
 * freed; later submissions allocate afresh).
 *
 * @param gpu The GPU.
 */
export function clearReadbackPool(gpu: Gpu): void {
  const pool = readbackPools.get(gpu.device);
  if (pool !== undefined) clearPool(pool);
}
