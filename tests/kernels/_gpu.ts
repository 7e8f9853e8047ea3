/**
 * Test helper: the WebGPU device the kernel tests run on (any adapter,
 * software included), or null after printing why the GPU tests are skipped.
 *
 * @module
 */

import { acquireGpu, type Gpu } from "../../kernels/backend.ts";

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

/**
 * Relative Frobenius error ‖a − b‖ / ‖b‖.
 *
 * @param a Values.
 * @param b Reference values.
 * @returns The relative error.
 */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}
