/**
 * Private: the pool of idle read-back (MAP_READ) buffers that
 * `GpuBatch.submit` takes from and returns to, one per device, dropped on
 * device loss. `readback_pool.ts` holds its public controls.
 *
 * Web-standard only.
 *
 * @module
 */

/**
 * Bytes of idle read-back (MAP_READ) buffers kept per device for later
 * submissions: on the GPU machine a fresh 180 MB one costs ~50 ms to
 * allocate and fault in, a reused one nothing.
 */
const READBACK_POOL_BYTES = 512 << 20;
/** Read-back sizes are rounded up to this many bytes, so small ones are reused too. */
const READBACK_GRAIN = 256;

/** The idle read-back buffers of one device. */
export interface ReadbackPool {
  /** Idle buffers, unmapped, least recently released first. */
  readonly free: GPUBuffer[];
  /** Their bytes in all. */
  bytes: number;
  /** The device was lost: nothing is kept. */
  lost: boolean;
}

/** Each device's pool, created on first use. */
export const readbackPools = new WeakMap<GPUDevice, ReadbackPool>();

/** A device's pool, created on first use and emptied on device loss. */
function readbackPool(device: GPUDevice): ReadbackPool {
  let pool = readbackPools.get(device);
  if (pool === undefined) {
    const p: ReadbackPool = { free: [], bytes: 0, lost: false };
    readbackPools.set(device, p);
    device.lost.then(() => {
      p.lost = true;
      clearPool(p);
    });
    pool = p;
  }
  return pool;
}

/** Destroys a pool's idle buffers. */
export function clearPool(pool: ReadbackPool): void {
  for (const b of pool.free) b.destroy();
  pool.free.length = 0;
  pool.bytes = 0;
}

/**
 * A read-back buffer of at least `size` bytes: the smallest idle one of the
 * pool that is not more than twice as large, else a fresh one.
 */
export function takeReadback(device: GPUDevice, size: number): GPUBuffer {
  const pool = readbackPool(device);
  const want = Math.max(READBACK_GRAIN, Math.ceil(size / READBACK_GRAIN) * READBACK_GRAIN);
  let best = -1;
  for (let i = 0; i < pool.free.length; i++) {
    const s = pool.free[i]!.size;
    if (s >= want && s <= 2 * want && (best < 0 || s < pool.free[best]!.size)) best = i;
  }
  if (best >= 0) {
    const [buffer] = pool.free.splice(best, 1);
    pool.bytes -= buffer!.size;
    return buffer!;
  }
  return device.createBuffer({ size: want, usage: 0x1 | 0x8, label: "readback" });
}

/**
 * Unmaps a read-back buffer and keeps it for reuse, evicting the least
 * recently released ones beyond {@linkcode READBACK_POOL_BYTES}.
 */
export function releaseReadback(device: GPUDevice, buffer: GPUBuffer): void {
  const pool = readbackPool(device);
  if (pool.lost || buffer.size > READBACK_POOL_BYTES) {
    buffer.destroy();
    return;
  }
  buffer.unmap();
  pool.free.push(buffer);
  pool.bytes += buffer.size;
  while (pool.bytes > READBACK_POOL_BYTES) {
    const old = pool.free.shift()!;
    pool.bytes -= old.size;
    old.destroy();
  }
}
