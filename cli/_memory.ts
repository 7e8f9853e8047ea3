/**
 * Peak memory of a command-line run: the host's from the kernel's high-water
 * mark, the GPU's from the buffers WebGPU devices create. Uses the `Deno`
 * namespace (`/proc`) and, for the GPU, patches `GPUDevice.prototype`: for
 * CLIs only, never for library code.
 *
 * @module
 */

/**
 * The process's peak resident set size in bytes (`VmHWM` of
 * `/proc/self/status`), or null where the kernel does not report it.
 *
 * @returns Bytes, or null.
 */
export function hostPeakBytes(): number | null {
  try {
    const m = /^VmHWM:\s*(\d+)\s*kB$/m.exec(Deno.readTextFileSync("/proc/self/status"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** What {@linkcode trackGpuBuffers} measures. */
export interface GpuBufferTracker {
  /**
   * The largest sum of the sizes of live GPU buffers seen so far (0 when none
   * was created), or null when the runtime has no WebGPU.
   */
  peakBytes(): number | null;
}

let tracker: GpuBufferTracker | null = null;

/**
 * Starts counting the bytes of live WebGPU buffers, once per process: every
 * `createBuffer` of every device adds its size, `destroy()` subtracts it, and
 * a buffer dropped without `destroy()` is subtracted when it is collected
 * (so the peak may include buffers already unreachable but not yet
 * collected: an upper bound of what the device held). Textures and pipelines
 * are not counted; the solver kernels allocate only buffers.
 *
 * @returns The tracker (the same one on every call).
 */
export function trackGpuBuffers(): GpuBufferTracker {
  if (tracker) return tracker;
  const proto = (globalThis as { GPUDevice?: { prototype: GPUDevice } }).GPUDevice?.prototype;
  const bufferProto = (globalThis as { GPUBuffer?: { prototype: GPUBuffer } }).GPUBuffer
    ?.prototype;
  if (!proto || !bufferProto) return tracker = { peakBytes: () => null };
  let live = 0, peak = 0;
  const sizes = new WeakMap<GPUBuffer, number>();
  const collected = new FinalizationRegistry<number>((size) => live -= size);
  const create = proto.createBuffer;
  proto.createBuffer = function (this: GPUDevice, descriptor: GPUBufferDescriptor): GPUBuffer {
    const buffer = create.call(this, descriptor);
    const size = Number(descriptor.size);
    sizes.set(buffer, size);
    collected.register(buffer, size, buffer);
    live += size;
    peak = Math.max(peak, live);
    return buffer;
  };
  const destroy = bufferProto.destroy;
  bufferProto.destroy = function (this: GPUBuffer): undefined {
    const size = sizes.get(this);
    if (size !== undefined) {
      sizes.delete(this);
      collected.unregister(this);
      live -= size;
    }
    return destroy.call(this);
  };
  return tracker = { peakBytes: () => peak };
}
