/**
 * Test helpers: the WebGPU device the kernel tests run on (any adapter,
 * software included), or null after printing why the GPU tests are skipped;
 * seeded activations; relative errors.
 *
 * @module
 */

import { acquireGpu, type Gpu } from "../../kernels/backend.ts";
import { prng } from "../../core/prng.ts";
import type { Tensor } from "../../core/tensor.ts";

let announced = false;

/**
 * The test GPU, or null (printing the reason once) when none exists.
 *
 * @returns The GPU or null.
 */
export async function testGpu(): Promise<Gpu | null> {
  const gpu = await acquireGpu();
  if (gpu === null && !announced) {
    announced = true;
    console.log("skipping WebGPU kernel tests: no WebGPU adapter is available");
  }
  return gpu;
}

export { relError } from "../_helpers.ts";

/**
 * Seeded standard-normal activations x [m, k] (drawn in float32; f16 rounds them).
 *
 * @param m Rows.
 * @param k Columns.
 * @param seed PRNG seed.
 * @param dtype Element type.
 * @returns x.
 */
export function randomX(m: number, k: number, seed: number, dtype?: "f32"): Tensor<"f32">;
export function randomX(
  m: number,
  k: number,
  seed: number,
  dtype: "f32" | "f16",
): Tensor<"f32"> | Tensor<"f16">;
export function randomX(
  m: number,
  k: number,
  seed: number,
  dtype: "f32" | "f16" = "f32",
): Tensor<"f32"> | Tensor<"f16"> {
  const rng = prng(seed);
  const v = Float32Array.from({ length: m * k }, () => rng.normal());
  return dtype === "f32"
    ? { dtype, shape: [m, k], data: v }
    : { dtype, shape: [m, k], data: Float16Array.from(v) };
}
