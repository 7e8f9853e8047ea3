/**
 * Batched WebGPU command encoding: many dispatches in one submission, with
 * uniforms packed into shared arenas, phases timed by timestamp queries, and
 * read-backs that fail (never hang) on device loss; and the folding of large
 * workgroup counts into two dimensions.
 *
 * Web-standard only.
 *
 * @module
 */

import { dynamicLayouts } from "./_dynamic_uniforms.ts";
import { copyMappedRange, takeMappedRange } from "./_mapped_range.ts";
import { releaseReadback, takeReadback } from "./_readback_pool.ts";
import { assertDeviceAlive, type Gpu } from "./gpu_device.ts";
import { UniformArenas, type UniformField } from "./_uniform_arenas.ts";

/** Races a promise against device loss, so a lost device rejects instead of hanging. */
async function guardLoss<T>(gpu: Gpu, p: Promise<T>): Promise<T> {
  const lost = gpu.device.lost.then((info) => {
    throw new Error(`the WebGPU device was lost (${info.reason}): ${info.message}`);
  });
  return await Promise.race([p, lost]);
}

const objectIds = new WeakMap<object, number>();
let nextObjectId = 0;

/** A number naming an object for as long as it lives (bind group cache keys). */
function objectId(o: object): number {
  let id = objectIds.get(o);
  if (id === undefined) objectIds.set(o, id = nextObjectId++);
  return id;
}

export type { UniformField };

/**
 * What {@linkcode GpuBatch.submit} reads back: a whole buffer, or a byte range,
 * optionally into a given host array.
 */
export type GpuRead =
  | GPUBuffer
  | {
    buffer: GPUBuffer;
    offset: number;
    size: number;
    into?: Uint8Array | Promise<Uint8Array>;
  };

const MAX_PHASES = 16;

/**
 * Records many dispatches into one compute pass of one submission (each
 * dispatch is its own synchronization scope, so later dispatches see earlier
 * writes), with uniforms packed into shared arenas, and timestamps around the
 * whole batch when the device has `timestamp-query`.
 */
export class GpuBatch {
  /** The GPU this batch records for. */
  readonly gpu: Gpu;
  #encoder: GPUCommandEncoder;
  #pass: GPUComputePassEncoder | null = null;
  #uniforms: UniformArenas;
  #query: GPUQuerySet | null = null;
  #passes: string[] = [];
  #dispatches = 0;
  #bindGroups = new Map<string, GPUBindGroup>();
  #bindGroupsCreated = 0;
  #lastPipeline: GPUComputePipeline | null = null;
  #copies: {
    src: GPUBuffer;
    srcOffset: number;
    dst: GPUBuffer;
    dstOffset: number;
    size: number;
  }[] = [];

  /** @param gpu The GPU to record for. */
  constructor(gpu: Gpu) {
    assertDeviceAlive();
    this.gpu = gpu;
    this.#uniforms = new UniformArenas(gpu, "uniforms");
    this.#encoder = gpu.device.createCommandEncoder();
    if (gpu.timestamps) {
      this.#query = gpu.device.createQuerySet({ type: "timestamp", count: 2 * MAX_PHASES });
    }
  }

  /** Number of dispatches recorded so far. */
  get dispatches(): number {
    return this.#dispatches;
  }

  /** Number of bind groups created so far (dispatches may share them). */
  get bindGroups(): number {
    return this.#bindGroupsCreated;
  }

  #passEncoder(): GPUComputePassEncoder {
    if (this.#pass === null) {
      const desc: GPUComputePassDescriptor = {};
      const i = this.#passes.length;
      if (this.#query !== null && i < MAX_PHASES) {
        desc.timestampWrites = {
          querySet: this.#query,
          beginningOfPassWriteIndex: 2 * i,
          endOfPassWriteIndex: 2 * i + 1,
        };
      }
      this.#passes.push("");
      this.#pass = this.#encoder.beginComputePass(desc);
      this.#lastPipeline = null;
    }
    return this.#pass;
  }

  /**
   * Ends the current phase (a compute pass) under a name; its GPU time is
   * reported by `submit` (up to 16 phases are timed).
   *
   * @param name The phase's name.
   */
  phase(name: string): void {
    if (this.#pass !== null) {
      this.#pass.end();
      this.#pass = null;
    }
    // The passes a `copy` ended since the last phase belong to this one too.
    for (let i = this.#passes.length - 1; i >= 0 && this.#passes[i] === ""; i--) {
      this.#passes[i] = name;
    }
  }

  /**
   * Records a buffer-to-buffer copy in order: dispatches recorded before it
   * finish first, and later ones see the copied bytes (it ends the current
   * compute pass; the phase it belongs to is named by the next `phase`).
   *
   * @param src Source buffer (COPY_SRC).
   * @param srcOffset Source byte offset (a multiple of 4).
   * @param dst Destination buffer (COPY_DST).
   * @param dstOffset Destination byte offset (a multiple of 4).
   * @param size Bytes (a multiple of 4).
   */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    if (this.#pass !== null) {
      this.#pass.end();
      this.#pass = null;
    }
    if (size > 0) this.#encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, size);
  }

  /**
   * Packs a uniform block into an arena and returns its binding.
   *
   * @param fields Fields in declaration order (4 bytes each).
   * @returns The binding resource.
   */
  uniform(fields: readonly UniformField[]): GPUBufferBinding {
    return this.#uniforms.uniform(fields);
  }

  /**
   * Records one dispatch.
   *
   * @param pipeline A cached pipeline.
   * @param resources Bindings of group 0, in binding order (buffers or buffer bindings).
   * @param groups Workgroup counts [x, y?, z?].
   */
  dispatch(
    pipeline: GPUComputePipeline,
    resources: readonly (GPUBuffer | GPUBufferBinding)[],
    groups: readonly [number, number?, number?],
  ): void {
    const counts = workgroupCounts(this.gpu, groups);
    if (counts === null) return;
    const [x, y, z] = counts;
    const dynamic = dynamicLayouts.get(pipeline);
    const pass = this.#passEncoder();
    if (this.#lastPipeline !== pipeline) {
      pass.setPipeline(pipeline);
      this.#lastPipeline = pipeline;
    }
    if (dynamic === undefined) {
      this.#bindGroupsCreated++;
      pass.setBindGroup(
        0,
        this.gpu.device.createBindGroup({
          layout: pipeline.getBindGroupLayout(0),
          entries: resources.map((r, binding) => ({
            binding,
            resource: "buffer" in r ? r : { buffer: r },
          })),
        }),
      );
    } else {
      // Uniforms bind at offset 0 of their arena and move by a dynamic
      // offset: dispatches on the same buffers share one bind group.
      const offsets: number[] = [];
      let key = `${objectId(pipeline)}`;
      const entries = resources.map((r, binding): GPUBindGroupEntry => {
        const b: GPUBufferBinding = "buffer" in r ? r : { buffer: r };
        if (dynamic.uniforms.has(binding)) {
          offsets.push(b.offset ?? 0);
          key += `|${objectId(b.buffer)}:${b.size}`;
          return {
            binding,
            resource: {
              buffer: b.buffer,
              offset: 0,
              ...(b.size === undefined ? {} : { size: b.size }),
            },
          };
        }
        key += `|${objectId(b.buffer)}:${b.offset ?? 0}:${b.size}`;
        return { binding, resource: b };
      });
      let bindGroup = this.#bindGroups.get(key);
      if (bindGroup === undefined) {
        bindGroup = this.gpu.device.createBindGroup({ layout: dynamic.layout, entries });
        this.#bindGroups.set(key, bindGroup);
        this.#bindGroupsCreated++;
      }
      pass.setBindGroup(0, bindGroup, offsets);
    }
    pass.dispatchWorkgroups(x, y, z);
    this.#dispatches++;
  }

  /**
   * Records a buffer-to-buffer copy at the end of the batch (after all dispatches).
   *
   * @param src Source buffer.
   * @param srcOffset Source byte offset.
   * @param dst Destination buffer.
   * @param dstOffset Destination byte offset.
   * @param size Bytes (a multiple of 4).
   */
  copyAtEnd(
    src: GPUBuffer,
    srcOffset: number,
    dst: GPUBuffer,
    dstOffset: number,
    size: number,
  ): void {
    this.#copies.push({ src, srcOffset, dst, dstOffset, size });
  }

  /**
   * Submits everything in one submission, reads the requested buffers back
   * once, and reports the GPU time between the first and the last dispatch.
   *
   * @param reads Buffers (or byte ranges) to read back after the work. A range
   *   with `into` (a view of exactly `size` bytes, or a promise of one,
   *   awaited once the GPU is done) is copied there, in chunks, and the
   *   ArrayBuffer under that view is its result (several ranges may fill
   *   parts of one array): an array whose pages were mapped while the GPU
   *   worked spares the read-back the first-touch page faults of fresh memory.
   *
   *   The submission is queued before this method's first `await`: host work
   *   that the caller does before awaiting the returned promise overlaps the GPU's.
   * @returns The read-back bytes, in order, the GPU seconds from the first dispatch to the
   *   last (NaN without timestamps), the GPU seconds of each named phase, and the wall
   *   seconds spent taking the mapped bytes out.
   */
  async submit(
    reads: readonly GpuRead[] = [],
  ): Promise<
    { data: ArrayBuffer[]; gpuSeconds: number; phases: Record<string, number>; readSeconds: number }
  > {
    assertDeviceAlive();
    const device = this.gpu.device;
    this.phase("rest");
    const timed = Math.min(this.#passes.length, MAX_PHASES);
    this.#uniforms.upload();
    device.pushErrorScope("validation");
    device.pushErrorScope("out-of-memory");
    // The work goes first; the copies, the read-back buffers and the
    // timestamps follow in a second submission: allocating host-visible
    // read-back buffers costs about 0.3 ms per MB on the GPU machine, which
    // then overlaps the GPU's work instead of delaying it.
    device.queue.submit([this.#encoder.finish()]);
    const tail = device.createCommandEncoder();
    for (const c of this.#copies) {
      tail.copyBufferToBuffer(c.src, c.srcOffset, c.dst, c.dstOffset, c.size);
    }
    const staging: {
      buffer: GPUBuffer;
      size: number;
      into?: Uint8Array | Promise<Uint8Array> | undefined;
    }[] = [];
    for (const r of reads) {
      const src = "offset" in r ? r : { buffer: r, offset: 0, size: r.size };
      const size = Math.ceil(src.size / 4) * 4;
      const dst = takeReadback(device, size);
      tail.copyBufferToBuffer(src.buffer, src.offset, dst, 0, size);
      staging.push({ buffer: dst, size: src.size, into: "into" in r ? r.into : undefined });
    }
    let queryBuffer: GPUBuffer | null = null, resolve: GPUBuffer | null = null;
    if (this.#query !== null && timed > 0) {
      const bytes = 16 * timed;
      resolve = device.createBuffer({ size: bytes, usage: 0x200 | 0x4, label: "timestamps" });
      tail.resolveQuerySet(this.#query, 0, 2 * timed, resolve, 0);
      queryBuffer = takeReadback(device, bytes);
      tail.copyBufferToBuffer(resolve, 0, queryBuffer, 0, bytes);
    }
    device.queue.submit([tail.finish()]);
    // Both scopes are popped now: a batch submitted before this one's promise
    // settles pushes its own scopes above nothing of ours.
    const oomScope = device.popErrorScope(), invalidScope = device.popErrorScope();
    // Read-back buffers go back to the pool once read, else (on an error) are destroyed.
    const pending = new Set(staging.map((s) => s.buffer));
    if (queryBuffer !== null) pending.add(queryBuffer);
    const release = (b: GPUBuffer) => {
      pending.delete(b);
      releaseReadback(device, b);
    };
    try {
      const oom = await oomScope;
      const invalid = await invalidScope;
      if (oom) throw new Error(`WebGPU ran out of memory: ${oom.message}`);
      if (invalid) throw new Error(`WebGPU validation failed: ${invalid.message}`);
      const data: ArrayBuffer[] = [];
      // Only the bytes read: a pooled buffer may be larger.
      const maps = staging.map((s) => s.buffer.mapAsync(0x1, 0, Math.ceil(s.size / 4) * 4));
      if (queryBuffer !== null) maps.push(queryBuffer.mapAsync(0x1, 0, 16 * timed));
      await guardLoss(
        this.gpu,
        Promise.all(maps.length > 0 ? maps : [device.queue.onSubmittedWorkDone()]),
      );
      const targets = await Promise.all(staging.map((s) => s.into));
      const tRead = performance.now();
      for (let i = 0; i < staging.length; i++) {
        const s = staging[i]!, into = targets[i];
        if (into !== undefined && into.byteLength !== s.size) {
          throw new RangeError(
            `Cannot read back ${s.size} bytes into a view of ${into.byteLength} bytes`,
          );
        }
        data.push(
          into === undefined ? takeMappedRange(s.buffer, s.size) : copyMappedRange(s.buffer, into),
        );
        release(s.buffer);
      }
      const readSeconds = (performance.now() - tRead) / 1000;
      let gpuSeconds = NaN;
      const phases: Record<string, number> = {};
      if (queryBuffer !== null) {
        const t = new BigUint64Array(queryBuffer.getMappedRange(0, 16 * timed).slice(0));
        gpuSeconds = Number(t[2 * timed - 1]! - t[0]!) / 1e9;
        for (let i = 0; i < timed; i++) {
          const name = this.#passes[i]!;
          phases[name] = (phases[name] ?? 0) + Number(t[2 * i + 1]! - t[2 * i]!) / 1e9;
        }
        release(queryBuffer);
      }
      return { data, gpuSeconds, phases, readSeconds };
    } finally {
      for (const b of pending) b.destroy();
      resolve?.destroy();
      for (const b of this.#uniforms.buffers) b.destroy();
      this.#query?.destroy();
    }
  }
}

/**
 * A dispatch's workgroup counts [x, y, z] (missing ones 1), checked against
 * the device's per-dimension limit.
 *
 * @param gpu The GPU.
 * @param groups Workgroup counts [x, y?, z?].
 * @returns The counts, or null when one is 0 (nothing to dispatch).
 * @throws {RangeError} when a count exceeds the limit.
 */
export function workgroupCounts(
  gpu: Gpu,
  groups: readonly [number, number?, number?],
): [number, number, number] | null {
  const [x, y = 1, z = 1] = groups;
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (x > max || y > max || z > max) {
    throw new RangeError(`dispatch of [${x}, ${y}, ${z}] workgroups exceeds ${max} per dimension`);
  }
  return x === 0 || y === 0 || z === 0 ? null : [x, y, z];
}

/**
 * Workgroup counts for `n` workgroups, folded into two dimensions when `n`
 * exceeds the per-dimension limit (kernels recover the index as
 * `id.x + id.y * count.x`).
 *
 * @param gpu The GPU.
 * @param n Total workgroups.
 * @returns [x, y].
 */
export function foldGroups(gpu: Gpu, n: number): [number, number] {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (n <= max) return [n, 1];
  const y = Math.ceil(n / max);
  return [Math.ceil(n / y), y];
}
