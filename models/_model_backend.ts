/**
 * The backend a model's passes run on: the one asked for, except that a model
 * with features the pass runs only on the CPU (activation quantization, an
 * online Hadamard, KV cache quantization; each pass says what of them it runs
 * on WebGPU) runs on the CPU under "auto" and is refused on "webgpu".
 *
 * @module
 */

import { type Backend, type Gpu, resolveBackend } from "../kernels/backend.ts";
import { cpuOnlyFeature, type GpuFeatures, type LlamaModel } from "./model.ts";

/**
 * Resolves the backend of a pass over a model.
 *
 * @param model The model.
 * @param backend The backend asked for.
 * @param what The pass, for messages.
 * @param features What the pass runs on WebGPU of the CPU-only features. @default nothing
 * @returns The GPU, or null for the CPU.
 * @throws {TypeError} for "webgpu" on a model with a CPU-only feature, naming it.
 */
export async function modelBackend(
  model: LlamaModel,
  backend: Backend,
  what: string,
  features: GpuFeatures = {},
): Promise<Gpu | null> {
  const feature = cpuOnlyFeature(model, features);
  if (feature === null) return await resolveBackend(backend, what);
  if (backend === "webgpu") {
    throw new TypeError(
      `Cannot run ${what} with 'backend' "webgpu": the model has ${feature}, which only the ` +
        `CPU forward pass implements; use backend "cpu" or "auto"`,
    );
  }
  return null;
}
