/**
 * The WebGPU compute pipeline cache, keyed by the full kernel
 * specialization, and validation errors of pipeline and bind group creation
 * as thrown errors.
 *
 * Web-standard only.
 *
 * @module
 */

import { dynamicLayouts, dynamicUniformLayout } from "./_dynamic_uniforms.ts";
import { assertDeviceAlive, type Gpu } from "./gpu_device.ts";

const pipelines = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

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
