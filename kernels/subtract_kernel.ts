/**
 * In-place elementwise subtraction on WebGPU, a[i] ← a[i] − b[i] (f32), with
 * its CPU reference: what turns a copy of W into W − Ŵ on the device.
 * Web-standard only.
 *
 * @module
 */

import { cachedPipeline, type GpuBatch } from "./backend.ts";

/** Workgroups of the grid-stride loop. */
const GROUPS = 1024;

/**
 * WGSL of the subtraction (bindings: 0 = a [count] f32, read and written;
 * 1 = b [count] f32; 2 = {count}).
 *
 * @returns WGSL source.
 */
export function subtractWgsl(): string {
  return `
struct Params { count: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<uniform> prm: Params;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let stride = nwg.x * 256u;
  for (var i = gid.x; i < prm.count; i += stride) { A[i] = A[i] - B[i]; }
}
`;
}

/**
 * Records a[i] ← a[i] − b[i] for i < count.
 *
 * @param batch The batch.
 * @param a A (at least `count` f32; another buffer than `b`).
 * @param b B (at least `count` f32).
 * @param count Elements.
 * @throws {RangeError} when a buffer is shorter than `count` values.
 */
export function encodeSubtract(batch: GpuBatch, a: GPUBuffer, b: GPUBuffer, count: number): void {
  if (!Number.isSafeInteger(count) || count < 0 || count * 4 > a.size || count * 4 > b.size) {
    throw new RangeError(
      `Cannot subtract ${count} values: the buffers hold ${a.size} and ${b.size} bytes`,
    );
  }
  if (count === 0) return;
  const pipe = cachedPipeline(batch.gpu, "subtract", subtractWgsl);
  const u = batch.uniform([{ u32: count }, { u32: 0 }, { u32: 0 }, { u32: 0 }]);
  batch.dispatch(pipe, [a, b, u], [Math.min(GROUPS, Math.ceil(count / 256))]);
}

/**
 * CPU reference of {@linkcode encodeSubtract} (float32 results).
 *
 * @param a A, updated in place.
 * @param b B.
 */
export function subtractReference(a: Float32Array, b: ArrayLike<number>): void {
  for (let i = 0; i < a.length; i++) a[i] = a[i]! - b[i]!;
}
