/**
 * Library-internal: uniform blocks packed into shared arenas, one 256-byte
 * slot per block (the dynamic-offset alignment), each arena one uniform
 * buffer written once before use. `GpuBatch` keeps its uniforms in one for a
 * submission; a recorded program keeps its own for every replay.
 * Web-standard only.
 *
 * @module
 */

import type { Gpu } from "./gpu_device.ts";

/** One field of a uniform block (4 bytes). */
export type UniformField = { u32: number } | { i32: number } | { f32: number };

/** Bytes of one slot: every block starts on this alignment. */
export const UNIFORM_SLOT = 256;
/** Slots per arena buffer. */
const SLOTS = 1024;
const UNIFORM_USAGE = 0x40 | 0x8; // UNIFORM | COPY_DST

/** Arenas of uniform blocks. */
export class UniformArenas {
  readonly #gpu: Gpu;
  readonly #label: string;
  readonly #arenas: { buffer: GPUBuffer; data: ArrayBuffer; used: number }[] = [];

  /**
   * @param gpu The GPU.
   * @param label Debug label of the arena buffers.
   */
  constructor(gpu: Gpu, label: string) {
    this.#gpu = gpu;
    this.#label = label;
  }

  /**
   * Packs a uniform block into the current arena (a new one when it is full).
   *
   * @param fields The block's fields, 4 bytes each (at most 64).
   * @returns Its binding (valid once {@linkcode UniformArenas.upload} ran).
   * @throws {RangeError} for a block larger than one slot.
   */
  uniform(fields: readonly UniformField[]): GPUBufferBinding {
    const bytes = Math.max(16, Math.ceil(fields.length / 4) * 16);
    if (bytes > UNIFORM_SLOT) throw new RangeError("uniform block too large");
    let arena = this.#arenas[this.#arenas.length - 1];
    if (!arena || arena.used + UNIFORM_SLOT > arena.data.byteLength) {
      const size = UNIFORM_SLOT * SLOTS;
      arena = {
        buffer: this.#gpu.device.createBuffer({ size, usage: UNIFORM_USAGE, label: this.#label }),
        data: new ArrayBuffer(size),
        used: 0,
      };
      this.#arenas.push(arena);
    }
    const view = new DataView(arena.data, arena.used, bytes);
    fields.forEach((f, i) => {
      if ("u32" in f) view.setUint32(i * 4, f.u32, true);
      else if ("i32" in f) view.setInt32(i * 4, f.i32, true);
      else view.setFloat32(i * 4, f.f32, true);
    });
    const binding = { buffer: arena.buffer, offset: arena.used, size: bytes };
    arena.used += UNIFORM_SLOT;
    return binding;
  }

  /** Writes the packed blocks into their buffers (queued before any later submission). */
  upload(): void {
    for (const a of this.#arenas) {
      this.#gpu.device.queue.writeBuffer(a.buffer, 0, a.data, 0, a.used);
    }
  }

  /** The arena buffers (their owner destroys them). */
  get buffers(): GPUBuffer[] {
    return this.#arenas.map((a) => a.buffer);
  }
}
