/**
 * WebGPU device acquisition for the solver kernels: choosing a backend,
 * acquiring one adapter and device per process, and a check that fails
 * (never hangs) once the device was lost.
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
  /**
   * Whether `unpack2x16float` turns f16 subnormals into their exact f32
   * values on this device (probed by one dispatch when the device is
   * acquired; WGSL lets a device flush them). The "half" dequantization of
   * the packed low-bit matmul needs it.
   */
  readonly f16Subnormals: boolean;
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
  const f16Subnormals = await probeF16Subnormals(device);
  return { device, description, software, f16, timestamps, limits: device.limits, f16Subnormals };
}

/**
 * Whether `unpack2x16float` keeps f16 subnormals: the halves 1 and 3 (the
 * subnormals 2^−24 and 3·2^−24) read from a buffer, so no compiler can fold
 * the conversion, must come back exact. False when the probe fails.
 */
async function probeF16Subnormals(device: GPUDevice): Promise<boolean> {
  const STORAGE = 0x80, COPY_SRC = 0x4, COPY_DST = 0x8, MAP_READ = 0x1;
  let io: GPUBuffer | null = null, read: GPUBuffer | null = null;
  try {
    const module = device.createShaderModule({
      code: `@group(0) @binding(0) var<storage, read_write> io: array<u32, 2>;
@compute @workgroup_size(1)
fn main() {
  let v = unpack2x16float(io[0]);
  io[0] = bitcast<u32>(v.x);
  io[1] = bitcast<u32>(v.y);
}
`,
    });
    const pipeline = device.createComputePipeline({
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    io = device.createBuffer({ size: 8, usage: STORAGE | COPY_SRC | COPY_DST });
    read = device.createBuffer({ size: 8, usage: MAP_READ | COPY_DST });
    device.queue.writeBuffer(io, 0, new Uint32Array([0x00030001, 0]));
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(
      0,
      device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [{ binding: 0, resource: { buffer: io } }],
      }),
    );
    pass.dispatchWorkgroups(1);
    pass.end();
    enc.copyBufferToBuffer(io, 0, read, 0, 8);
    device.queue.submit([enc.finish()]);
    await read.mapAsync(MAP_READ);
    const [lo, hi] = new Float32Array(read.getMappedRange().slice(0));
    read.unmap();
    return lo === 2 ** -24 && hi === 3 * 2 ** -24;
  } catch {
    return false;
  } finally {
    io?.destroy();
    read?.destroy();
  }
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
