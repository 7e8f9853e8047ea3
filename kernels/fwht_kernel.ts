/**
 * Fast Walsh–Hadamard transform of the rows of a matrix on the GPU, for
 * every order `core/fwht.ts` can plan: n = 2^k · m₁ ⋯ m_r. Each dense factor
 * is one pass (a product with the m×m block through the gemm kernel when it
 * is the innermost axis, a strided kernel otherwise); the power-of-two part
 * is one pass with each row staged in workgroup memory, running all k
 * butterfly stages between barriers, and scaling when normalizing.
 *
 * Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { fwht, type FwhtOptions, fwhtPlan } from "../core/fwht.ts";
import {
  cachedPipeline,
  foldGroups,
  type Gpu,
  GpuBatch,
  storageBuffer,
  uploadBuffer,
} from "./backend.ts";
import { encodeGemm } from "./gemm_kernel.ts";

/** Specialization of {@linkcode fwhtButterflyWgsl}. */
export interface FwhtButterflySpec {
  /** Row length n. */
  readonly n: number;
  /** Order of the power-of-two part (2^k). */
  readonly pow2: number;
}

/** Workgroup words a row of length n takes (one padding word per 16). */
function paddedLength(n: number): number {
  return n + Math.ceil(n / 16);
}

/**
 * WGSL of the butterfly pass (H_{pow2} ⊗ I_{n/pow2}) on each row, in place,
 * times a scale. One workgroup per row, staged in workgroup memory. Bindings: 0 = X, 1 = parameters
 * {rows, scale}.
 *
 * @param spec Row length and power-of-two order.
 * @returns WGSL source.
 */
export function fwhtButterflyWgsl(spec: FwhtButterflySpec): string {
  const { n, pow2 } = spec;
  const inner = n / pow2;
  const stages = Math.round(Math.log2(pow2));
  // Rounds of up to 4 stages, largest strides first (the stages commute):
  // each thread takes 2^r elements h apart into registers and runs their r
  // butterfly stages there (no private arrays). The first round reads
  // straight from global memory (coalesced: thread q takes q + c·h); the
  // others go through workgroup memory, one barrier each.
  const rounds: string[] = [];
  for (let top = stages; top > 0; top -= 4) {
    const r = Math.min(4, top), s0 = top - r, g = 1 << r;
    const h = inner * (1 << s0), span = h * g;
    const first = top === stages;
    const body: string[] = [];
    body.push(`  for (var q = t; q < ${n / g}u; q += 256u) {`);
    body.push(`    let base = (q / ${h}u) * ${span}u + q % ${h}u;`);
    for (let c = 0; c < g; c++) {
      body.push(
        first
          ? `    var v${c} = X[row0 + base + ${c * h}u];`
          : `    var v${c} = s[pad(base + ${c * h}u)];`,
      );
    }
    for (let b = 0; b < r; b++) {
      for (let c = 0; c < g; c++) {
        if (c & (1 << b)) continue;
        const d = c + (1 << b);
        body.push(`    { let u = v${c}; v${c} = u + v${d}; v${d} = u - v${d}; }`);
      }
    }
    for (let c = 0; c < g; c++) body.push(`    s[pad(base + ${c * h}u)] = v${c};`);
    body.push(`  }`);
    body.push(`  workgroupBarrier();`);
    rounds.push(body.join("\n"));
  }
  if (stages === 0) {
    rounds.push(
      `  for (var i = t; i < ${n}u; i += 256u) { s[pad(i)] = X[row0 + i]; }\n  workgroupBarrier();`,
    );
  }
  return `
struct Params { rows: u32, scale: f32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read_write> X: array<f32>;
@group(0) @binding(1) var<uniform> prm: Params;
var<workgroup> s: array<f32, ${paddedLength(n)}>;
// One padding word per 16: the 16 elements a thread takes at stride 1 fall in distinct banks.
fn pad(i: u32) -> u32 { return i + (i >> 4u); }

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let row = wg.x + wg.y * nwg.x;
  if (row >= prm.rows) { return; }
  let row0 = row * ${n}u;
${rounds.join("\n")}
  for (var i = t; i < ${n}u; i += 256u) { X[row0 + i] = s[pad(i)] * prm.scale; }
}
`;
}

/**
 * WGSL of one dense factor along a strided axis, out of place:
 * y[o, i, t] = Σ_j B[i, j]·x[o, j, t] for rows seen as [·, m, stride].
 * Bindings: 0 = Y, 1 = X, 2 = B [m, m], 3 = parameters {total, m, stride}.
 *
 * @returns WGSL source.
 */
export function fwhtDenseWgsl(): string {
  return `
struct Params { total: u32, m: u32, stride: u32, pad: u32 }
@group(0) @binding(0) var<storage, read_write> Y: array<f32>;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<uniform> prm: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * 256u;
  if (e >= prm.total) { return; }
  let s = prm.stride; let m = prm.m;
  let t = e % s; let i = (e / s) % m; let o = e / (s * m);
  let src = o * s * m + t;
  var acc = 0.0;
  for (var j = 0u; j < m; j++) { acc = fma(B[i * m + j], X[src + j * s], acc); }
  Y[e] = acc;
}
`;
}

/** A transform prepared for one row length: plan and uploaded dense blocks. */
interface Prepared {
  n: number;
  pow2: number;
  normScale: number;
  dense: { m: number; buffer: GPUBuffer }[];
}

/**
 * Records H·row (or Hᵀ·row) for every row of `x` [rows, n] into `out`
 * (`x` is used as scratch when there are dense factors).
 *
 * @param batch The batch.
 * @param prepared From {@linkcode prepareFwht}.
 * @param x Input buffer [rows, n] f32 (clobbered when dense factors exist).
 * @param scratch A second buffer of the same size.
 * @param rows Rows.
 * @param normalize Orthonormal scaling.
 * @returns The buffer that holds the result (`x` or `scratch`).
 */
export function encodeFwht(
  batch: GpuBatch,
  prepared: FwhtPrepared,
  x: GPUBuffer,
  scratch: GPUBuffer,
  rows: number,
  normalize: boolean,
): GPUBuffer {
  const p = prepared as unknown as Prepared;
  const gpu = batch.gpu;
  const n = p.n;
  let cur = x, other = scratch;
  let inner = 1;
  for (const d of p.dense) inner *= d.m;
  let stride = inner;
  for (const d of p.dense) {
    stride /= d.m;
    if (stride === 1) {
      // Innermost axis: Y[rows·n/m, m] = X · Bᵀ.
      encodeGemm(
        batch,
        {
          transA: false,
          transB: true,
          accumulate: false,
          inputs: "f32",
          aInC: false,
          bInC: false,
          lowerC: false,
          lowerB: false,
          tile: "large",
        },
        { c: other, a: cur, b: d.buffer },
        {
          m: (rows * n) / d.m,
          n: d.m,
          k: d.m,
          lda: d.m,
          ldb: d.m,
          ldc: d.m,
        },
      );
    } else {
      const pipe = cachedPipeline(gpu, "fwht-dense", fwhtDenseWgsl);
      batch.dispatch(pipe, [
        other,
        cur,
        d.buffer,
        batch.uniform([
          { u32: rows * n },
          { u32: d.m },
          { u32: stride },
          { u32: 0 },
        ]),
      ], foldGroups(gpu, Math.ceil((rows * n) / 256)));
    }
    [cur, other] = [other, cur];
  }
  const spec: FwhtButterflySpec = { n, pow2: p.pow2 };
  const pipe = cachedPipeline(gpu, `fwht-butterfly:${n}:${p.pow2}`, () => fwhtButterflyWgsl(spec));
  batch.dispatch(pipe, [
    cur,
    batch.uniform([
      { u32: rows },
      { f32: normalize ? p.normScale : 1 },
      { u32: 0 },
      { u32: 0 },
    ]),
  ], foldGroups(gpu, rows));
  return cur;
}

/** An opaque transform prepared by {@linkcode prepareFwht}. */
export interface FwhtPrepared {
  /** Row length. */
  readonly n: number;
}

function blockOf(h: Float64Array, m: number, transpose: boolean): Float32Array {
  const out = new Float32Array(m * m);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < m; j++) out[i * m + j] = transpose ? h[j * m + i]! : h[i * m + j]!;
  }
  return out;
}

/**
 * Plans the transform of rows of length n and uploads its dense blocks.
 *
 * @param gpu The GPU.
 * @param n Row length (a constructible Hadamard order).
 * @param transpose Use Hᵀ (differs from H for Paley I blocks).
 * @returns The prepared transform.
 * @throws {RangeError} when a row does not fit in workgroup memory or n has no construction.
 */
export function prepareFwht(gpu: Gpu, n: number, transpose = false): FwhtPrepared {
  const plan = fwhtPlan(n);
  if (paddedLength(n) * 4 > gpu.limits.maxComputeWorkgroupStorageSize) {
    throw new RangeError(
      `Cannot transform rows of length ${n} on the GPU: a row exceeds the workgroup memory of ${gpu.limits.maxComputeWorkgroupStorageSize} bytes`,
    );
  }
  const prepared: Prepared = {
    n,
    pow2: plan.pow2,
    normScale: plan.normScale,
    dense: plan.dense.map((d) => ({
      m: d.m,
      buffer: uploadBuffer(gpu, blockOf(d.h, d.m, transpose), "fwht-block"),
    })),
  };
  return prepared;
}

/**
 * The transform of every row of `x` [rows, n] (f32) on the GPU, in one submission.
 *
 * @param gpu The GPU.
 * @param x Rows to transform.
 * @param options `normalize` and `transpose` (no custom `block`); `maxTileRows` caps the
 *   rows uploaded per buffer (default: as many as the device's binding limit allows).
 * @returns H·row for each row (f32) and the GPU seconds.
 */
export async function fwhtGpu(
  gpu: Gpu,
  x: Tensor<"f32">,
  options: { normalize?: boolean; transpose?: boolean; maxTileRows?: number } = {},
): Promise<{ y: Tensor<"f32">; gpuSeconds: number }> {
  if (x.dtype !== "f32" || x.shape.length < 1) {
    throw new TypeError(
      `Cannot transform on the GPU as 'x' must be an f32 tensor: dtype ${x.dtype}`,
    );
  }
  const n = x.shape[x.shape.length - 1]!;
  const rows = n === 0 ? 0 : x.data.length / n;
  const prepared = prepareFwht(gpu, n, options.transpose ?? false);
  // Row tiles within the device's binding limit, all in one submission.
  const limit = Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
  const tileRows = Math.max(
    1,
    Math.min(rows, Math.floor(limit / (n * 4)), options.maxTileRows ?? rows),
  );
  const batch = new GpuBatch(gpu);
  const owned: GPUBuffer[] = [];
  const results: GPUBuffer[] = [];
  for (let r0 = 0; r0 < rows; r0 += tileRows) {
    const r1 = Math.min(rows, r0 + tileRows);
    const a = uploadBuffer(gpu, x.data.subarray(r0 * n, r1 * n), "fwht-x");
    const b = storageBuffer(gpu, (r1 - r0) * n * 4, "fwht-scratch");
    owned.push(a, b);
    results.push(encodeFwht(batch, prepared, a, b, r1 - r0, options.normalize ?? false));
  }
  const { data, gpuSeconds } = await batch.submit(results);
  for (const b of owned) b.destroy();
  for (const d of (prepared as unknown as Prepared).dense) d.buffer.destroy();
  const y = new Float32Array(rows * n);
  let offset = 0;
  for (const bytes of data) {
    const part = new Float32Array(bytes);
    y.set(part, offset);
    offset += part.length;
  }
  return { y: { dtype: "f32", shape: x.shape, data: y }, gpuSeconds };
}

/**
 * CPU reference of {@linkcode fwhtGpu}: `core/fwht.ts`'s transform.
 *
 * @param x Rows to transform.
 * @param options As for `fwht`.
 * @returns The transformed rows.
 */
export function fwhtReference(x: Tensor<"f32">, options: FwhtOptions = {}): Tensor<"f32"> {
  return fwht(x, options);
}
