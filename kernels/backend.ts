/**
 * WebGPU device management for the solver kernels: choosing a backend,
 * acquiring one adapter and device per process, buffers, a pipeline cache
 * keyed by the full kernel specialization, batched command encoding with
 * timestamp queries, and read-backs that fail (never hang) on device loss.
 *
 * Web-standard only (`navigator.gpu`); in Deno it needs `--unstable-webgpu`
 * (or `"unstable": ["webgpu"]` in deno.json).
 *
 * @module
 */

/** Where a GPU-capable entry point runs. */
export type Backend = "auto" | "cpu" | "webgpu";

/** What the library knows about the acquired GPU. */
export interface Gpu {
  /** The device every kernel runs on. */
  readonly device: GPUDevice;
  /** Adapter description (vendor, architecture, description). */
  readonly description: string;
  /** Whether the adapter is a software rasterizer (llvmpipe, SwiftShader, WARP). */
  readonly software: boolean;
  /** Whether `shader-f16` was enabled. */
  readonly f16: boolean;
  /** Whether `timestamp-query` was enabled. */
  readonly timestamps: boolean;
  /** The device's limits (the adapter's full limits were requested). */
  readonly limits: GPUSupportedLimits;
}

let acquiring: Promise<Gpu | null> | null = null;
let adapterProbe: Promise<{ adapter: GPUAdapter; software: boolean } | null> | null = null;
let lostReason: string | null = null;

function describe(adapter: GPUAdapter): { description: string; software: boolean } {
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const description = [info.vendor, info.architecture, info.device, info.description]
    .filter((s) => s !== undefined && s !== "").join(" ");
  const software = info.isFallbackAdapter === true ||
    (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter === true ||
    /llvmpipe|lavapipe|swiftshader|software|warp/i.test(description);
  return { description, software };
}

/** The adapter (requested once), without creating a device. */
function probeAdapter(): Promise<{ adapter: GPUAdapter; software: boolean } | null> {
  if (adapterProbe === null) {
    adapterProbe = (async () => {
      const gpu = (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
      if (!gpu) return null;
      try {
        const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
        return adapter ? { adapter, software: describe(adapter).software } : null;
      } catch {
        return null;
      }
    })();
  }
  return adapterProbe;
}

/**
 * Acquires the process-wide GPU once: a high-performance adapter, a device
 * with the adapter's full limits, `shader-f16` and `timestamp-query` when
 * present. Resolves to null (silently) when WebGPU or an adapter is missing.
 * After a device loss the next call acquires a fresh device.
 *
 * @returns The GPU, or null when none is available.
 */
export function acquireGpu(): Promise<Gpu | null> {
  if (acquiring === null) acquiring = acquire();
  return acquiring;
}

async function acquire(): Promise<Gpu | null> {
  const probe = await probeAdapter();
  adapterProbe = null; // an adapter yields one device; a later acquisition asks again
  if (!probe) return null;
  const { adapter } = probe;
  const { description, software } = describe(adapter);
  const requiredFeatures: GPUFeatureName[] = [];
  const f16 = adapter.features.has("shader-f16");
  const timestamps = adapter.features.has("timestamp-query");
  if (f16) requiredFeatures.push("shader-f16");
  if (timestamps) requiredFeatures.push("timestamp-query");
  const requiredLimits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const value = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof value === "number") requiredLimits[key] = value;
  }
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  } catch {
    return null;
  }
  lostReason = null;
  device.lost.then((lost) => {
    lostReason = `the WebGPU device was lost (${lost.reason}): ${lost.message}`;
    acquiring = null;
  });
  return { device, description, software, f16, timestamps, limits: device.limits };
}

/**
 * Resolves a `backend` option: null means "run on the CPU". `"auto"` uses
 * WebGPU only on a hardware adapter (the CPU path is faster than a software
 * one); `"webgpu"` uses any adapter and throws when there is none.
 *
 * @param backend The option's value.
 * @param what The caller's name, for error messages.
 * @returns The GPU to use, or null for the CPU.
 */
export async function resolveBackend(backend: Backend, what: string): Promise<Gpu | null> {
  if (backend === "cpu") return null;
  if (backend !== "auto" && backend !== "webgpu") {
    throw new RangeError(
      `Cannot run ${what} as 'backend' must be "auto", "cpu" or "webgpu": current value is ${
        String(backend)
      }`,
    );
  }
  if (backend === "auto") {
    // Probe the adapter first: no device is created on a software adapter.
    if (acquiring === null) {
      const probe = await probeAdapter();
      if (probe === null || probe.software) return null;
    }
    const gpu = await acquireGpu();
    return gpu !== null && !gpu.software ? gpu : null;
  }
  const gpu = await acquireGpu();
  if (gpu === null) {
    throw new Error(
      `Cannot run ${what} with backend "webgpu": no WebGPU adapter is available (is --unstable-webgpu set?)`,
    );
  }
  return gpu;
}

/** Throws if the device was lost since it was acquired. */
export function assertDeviceAlive(): void {
  if (lostReason !== null) throw new Error(lostReason);
}

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

/** Races a promise against device loss, so a lost device rejects instead of hanging. */
async function guardLoss<T>(gpu: Gpu, p: Promise<T>): Promise<T> {
  const lost = gpu.device.lost.then((info) => {
    throw new Error(`the WebGPU device was lost (${info.reason}): ${info.message}`);
  });
  return await Promise.race([p, lost]);
}

const pipelines = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

/**
 * Pipelines laid out with dynamic offsets for their uniforms: the binding
 * numbers of those uniforms, and the group's layout.
 */
const dynamicLayouts = new WeakMap<
  GPUComputePipeline,
  { readonly layout: GPUBindGroupLayout; readonly uniforms: ReadonlySet<number> }
>();

/**
 * The explicit layout of group 0 of a WGSL source whose bindings are all
 * buffers (uniforms with dynamic offsets), or null when it has others.
 */
function dynamicUniformLayout(
  device: GPUDevice,
  wgsl: string,
): { layout: GPUBindGroupLayout; uniforms: Set<number> } | null {
  const decl = /@group\((\d+)\)\s*@binding\((\d+)\)\s*var\s*<\s*(\w+)\s*(?:,\s*(\w+)\s*)?>/g;
  const entries: GPUBindGroupLayoutEntry[] = [];
  const uniforms = new Set<number>();
  for (const m of wgsl.matchAll(decl)) {
    if (m[1] !== "0") return null;
    const binding = Number(m[2]), space = m[3], access = m[4] ?? "read";
    if (space === "uniform") {
      uniforms.add(binding);
      entries.push({ binding, visibility: 4, buffer: { type: "uniform", hasDynamicOffset: true } });
    } else if (space === "storage") {
      const type = access === "read_write" ? "storage" : "read-only-storage";
      entries.push({ binding, visibility: 4, buffer: { type } });
    } else return null;
  }
  if (entries.length !== (wgsl.match(/@binding\(/g) ?? []).length) return null;
  return { layout: device.createBindGroupLayout({ entries }), uniforms };
}

/**
 * A compute pipeline from the cache, compiled on first use. The key must
 * name the full specialization (kernel name and every generator parameter),
 * and `code` must be a pure function of it.
 *
 * @param gpu The GPU.
 * @param key Specialization key.
 * @param code Produces the WGSL source (entry point `main`).
 * @param options `dynamicUniforms`: lay out group 0 explicitly, with dynamic
 *   offsets for its uniforms (every binding must be a buffer, and every
 *   declared one used), so that {@linkcode GpuBatch.dispatch} reuses one bind
 *   group for dispatches that differ only in their uniforms' arena slots
 *   (creating a bind group costs ~16 µs of host time in Deno). Default false.
 * @returns The pipeline (layout "auto", or the explicit one).
 */
export function cachedPipeline(
  gpu: Gpu,
  key: string,
  code: () => string,
  options: { dynamicUniforms?: boolean } = {},
): GPUComputePipeline {
  assertDeviceAlive();
  let cache = pipelines.get(gpu.device);
  if (!cache) pipelines.set(gpu.device, cache = new Map());
  const dynamic = options.dynamicUniforms === true;
  const cacheKey = dynamic ? `${key}#dynamic-uniforms` : key;
  let pipeline = cache.get(cacheKey);
  if (!pipeline) {
    const wgsl = code();
    const module = gpu.device.createShaderModule({ code: wgsl, label: key });
    const explicit = dynamic ? dynamicUniformLayout(gpu.device, wgsl) : null;
    pipeline = gpu.device.createComputePipeline({
      layout: explicit === null
        ? "auto"
        : gpu.device.createPipelineLayout({ bindGroupLayouts: [explicit.layout] }),
      compute: { module, entryPoint: "main" },
      label: key,
    });
    if (explicit !== null) dynamicLayouts.set(pipeline, explicit);
    cache.set(cacheKey, pipeline);
  }
  return pipeline;
}

const objectIds = new WeakMap<object, number>();
let nextObjectId = 0;

/** A number naming an object for as long as it lives (bind group cache keys). */
function objectId(o: object): number {
  let id = objectIds.get(o);
  if (id === undefined) objectIds.set(o, id = nextObjectId++);
  return id;
}

/** A value for a uniform block: u32, i32 or f32 fields in declaration order. */
export type UniformField = { u32: number } | { i32: number } | { f32: number };

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

/**
 * Bytes of idle read-back (MAP_READ) buffers kept per device for later
 * submissions: on the GPU machine a fresh 180 MB one costs ~50 ms to
 * allocate and fault in, a reused one nothing.
 */
const READBACK_POOL_BYTES = 512 << 20;
/** Read-back sizes are rounded up to this many bytes, so small ones are reused too. */
const READBACK_GRAIN = 256;

interface ReadbackPool {
  /** Idle buffers, unmapped, least recently released first. */
  readonly free: GPUBuffer[];
  /** Their bytes in all. */
  bytes: number;
  /** The device was lost: nothing is kept. */
  lost: boolean;
}

const readbackPools = new WeakMap<GPUDevice, ReadbackPool>();

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

function clearPool(pool: ReadbackPool): void {
  for (const b of pool.free) b.destroy();
  pool.free.length = 0;
  pool.bytes = 0;
}

/**
 * A read-back buffer of at least `size` bytes: the smallest idle one of the
 * pool that is not more than twice as large, else a fresh one.
 */
function takeReadback(device: GPUDevice, size: number): GPUBuffer {
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
function releaseReadback(device: GPUDevice, buffer: GPUBuffer): void {
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

const UNIFORM_SLOT = 256;
const MAX_PHASES = 16;
const UNIFORM_CHUNK_SLOTS = 1024;

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
  #chunks: { buffer: GPUBuffer; data: ArrayBuffer; used: number }[] = [];
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
    if (this.#pass === null) return;
    this.#pass.end();
    this.#pass = null;
    this.#passes[this.#passes.length - 1] = name;
  }

  /**
   * Packs a uniform block into an arena and returns its binding.
   *
   * @param fields Fields in declaration order (4 bytes each).
   * @returns The binding resource.
   */
  uniform(fields: readonly UniformField[]): GPUBufferBinding {
    const bytes = Math.max(16, Math.ceil(fields.length / 4) * 16);
    if (bytes > UNIFORM_SLOT) throw new RangeError("uniform block too large");
    let chunk = this.#chunks[this.#chunks.length - 1];
    if (!chunk || chunk.used + UNIFORM_SLOT > chunk.data.byteLength) {
      const size = UNIFORM_SLOT * UNIFORM_CHUNK_SLOTS;
      chunk = {
        buffer: this.gpu.device.createBuffer({ size, usage: 0x40 | 0x8, label: "uniforms" }),
        data: new ArrayBuffer(size),
        used: 0,
      };
      this.#chunks.push(chunk);
    }
    const view = new DataView(chunk.data, chunk.used, bytes);
    fields.forEach((f, i) => {
      if ("u32" in f) view.setUint32(i * 4, f.u32, true);
      else if ("i32" in f) view.setInt32(i * 4, f.i32, true);
      else view.setFloat32(i * 4, f.f32, true);
    });
    const binding = { buffer: chunk.buffer, offset: chunk.used, size: bytes };
    chunk.used += UNIFORM_SLOT;
    return binding;
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
    const [x, y = 1, z = 1] = groups;
    const max = this.gpu.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new RangeError(
        `dispatch of [${x}, ${y}, ${z}] workgroups exceeds ${max} per dimension`,
      );
    }
    if (x === 0 || y === 0 || z === 0) return;
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
    if (this.#pass !== null) this.phase("rest");
    const timed = Math.min(this.#passes.length, MAX_PHASES);
    for (const chunk of this.#chunks) {
      device.queue.writeBuffer(chunk.buffer, 0, chunk.data, 0, chunk.used);
    }
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
      for (const chunk of this.#chunks) chunk.buffer.destroy();
      this.#query?.destroy();
    }
  }
}

/** Whether mapped read ranges are engine-owned copies that may be moved out (Deno). */
const MOVABLE_MAPPED_RANGES = typeof (globalThis as { Deno?: unknown }).Deno === "object";

/**
 * The first `size` bytes of a buffer mapped for reading, as an ArrayBuffer
 * that outlives the mapping. Deno's `getMappedRange` already returns a fresh
 * copy owned by V8 (it copies the mapped memory and detaches the copy on
 * unmap), so moving it out with `transfer()` (no copy) spares a second copy
 * of every read-back; elsewhere (where a range may alias the mapping, and
 * `transfer` is refused) it is copied.
 */
function takeMappedRange(buffer: GPUBuffer, size: number): ArrayBuffer {
  const padded = Math.ceil(size / 4) * 4;
  const range = buffer.getMappedRange(0, padded);
  if (MOVABLE_MAPPED_RANGES && padded === size) {
    try {
      return range.transfer();
    } catch {
      // fall through to the copy
    }
  }
  return range.slice(0, size);
}

/** Bytes per `getMappedRange` of {@linkcode copyMappedRange}. */
const READ_CHUNK = 8 << 20;

/**
 * Copies a buffer mapped for reading into `into` chunk by
 * chunk. In Deno each range is a fresh engine-owned copy that lives until the
 * buffer is unmapped; moving it out and releasing it after its copy
 * (`transfer()`, then `transfer(0)`) lets the allocator reuse the same memory
 * for the next chunk instead of faulting in fresh pages for all of them.
 */
function copyMappedRange(buffer: GPUBuffer, into: Uint8Array): ArrayBuffer {
  const size = into.byteLength, padded = Math.ceil(size / 4) * 4;
  if (size === 0) return into.buffer as ArrayBuffer;
  for (let off = 0; off < padded; off += READ_CHUNK) {
    const len = Math.min(READ_CHUNK, padded - off);
    let range = buffer.getMappedRange(off, len);
    let owned = false;
    if (MOVABLE_MAPPED_RANGES) {
      try {
        range = range.transfer();
        owned = true;
      } catch {
        // copy from the range as it is
      }
    }
    into.set(new Uint8Array(range, 0, Math.min(len, size - off)), off);
    if (owned) range.transfer(0);
  }
  return into.buffer as ArrayBuffer;
}

/**
 * Encodes validation errors raised while building pipelines and bind groups
 * into a thrown Error (WebGPU reports them asynchronously otherwise).
 *
 * @param gpu The GPU.
 * @param build Synchronous work that creates GPU objects.
 * @returns What `build` returned.
 */
export async function withValidation<T>(gpu: Gpu, build: () => T): Promise<T> {
  gpu.device.pushErrorScope("validation");
  let result: T;
  try {
    result = build();
  } catch (e) {
    await gpu.device.popErrorScope();
    throw e;
  }
  const error = await gpu.device.popErrorScope();
  if (error) throw new Error(`WebGPU validation failed: ${error.message}`);
  return result;
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
