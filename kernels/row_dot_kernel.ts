/**
 * Row-wise dot products of two matrices on WebGPU, s[r] = Σ_j A[r, j]·B[r, j]
 * (f32 in, f32 partial sums in a workgroup tree, one workgroup per row), with
 * its CPU reference. The quadratic forms tr(D·H·Dᵀ) of layer errors reduce
 * through it after one matrix product. Web-standard only.
 *
 * @module
 */

import { cachedPipeline, foldGroups, type GpuBatch } from "./backend.ts";

/** Threads per row. */
const WG = 256;

/**
 * WGSL of the row dot products (bindings: 0 = s [rows] f32, 1 = A, 2 = B
 * [rows, cols] f32, 3 = {rows, cols}).
 *
 * @returns WGSL source with entry point `main`.
 */
export function rowDotWgsl(): string {
  return `struct P { rows: u32, cols: u32 }
@group(0) @binding(0) var<storage, read_write> S: array<f32>;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  let r = wg.x + wg.y * nw.x;
  var s = 0.0;
  if (r < p.rows) {
    let o = r * p.cols;
    for (var j = lid; j < p.cols; j += ${WG}u) { s = fma(A[o + j], B[o + j], s); }
  }
  red[lid] = s;
  workgroupBarrier();
  for (var st = ${WG / 2}u; st > 0u; st = st >> 1u) {
    if (lid < st) { red[lid] = red[lid] + red[lid + st]; }
    workgroupBarrier();
  }
  if (lid == 0u && r < p.rows) { S[r] = red[0]; }
}
`;
}

/**
 * Records s[r] = Σ_j A[r, j]·B[r, j] for r < rows.
 *
 * @param batch The batch.
 * @param s Output [rows] f32.
 * @param a A [rows, cols] f32.
 * @param b B [rows, cols] f32 (another buffer).
 * @param rows Rows.
 * @param cols Columns.
 */
export function encodeRowDot(
  batch: GpuBatch,
  s: GPUBuffer,
  a: GPUBuffer,
  b: GPUBuffer,
  rows: number,
  cols: number,
): void {
  if (rows === 0) return;
  const pipeline = cachedPipeline(batch.gpu, "row-dot", rowDotWgsl);
  const u = batch.uniform([{ u32: rows }, { u32: cols }]);
  batch.dispatch(pipeline, [s, a, b, u], foldGroups(batch.gpu, rows));
}

/**
 * CPU reference of {@linkcode encodeRowDot}, in float64.
 *
 * @param a A [rows, cols].
 * @param b B [rows, cols].
 * @param rows Rows.
 * @param cols Columns.
 * @returns s [rows].
 */
export function rowDotReference(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  rows: number,
  cols: number,
): Float64Array {
  const s = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let j = 0; j < cols; j++) acc += a[r * cols + j]! * b[r * cols + j]!;
    s[r] = acc;
  }
  return s;
}
