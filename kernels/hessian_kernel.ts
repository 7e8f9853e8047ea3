/**
 * Hessian accumulation on the GPU: XᵀX over batches of tokens, in float32
 * from float32 or float16 inputs, computing one (lower) triangle and
 * mirroring it on read-back. Inputs larger than the device's
 * `maxStorageBufferBindingSize` are split into token tiles that accumulate
 * into the same result.
 *
 * Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import {
  bindingLimit,
  cachedPipeline,
  type Gpu,
  GpuBatch,
  storageBuffer,
  uploadBuffer,
} from "./backend.ts";
import { encodeGemm, type GemmSpec, gemmSpec, gemmWgsl } from "./gemm_kernel.ts";
import { encodeGemmTiled } from "./gemm_tiled_kernel.ts";
import { gemmTiledSpec } from "./gemm_tiled_wgsl.ts";

/** Specialization of {@linkcode hessianWgsl}. */
export interface HessianSpec {
  /** Storage type of X. */
  readonly inputs: "f32" | "f16";
}

function gemmSpecOf(spec: HessianSpec): GemmSpec {
  return gemmSpec({ transA: true, accumulate: true, inputs: spec.inputs, lowerC: true });
}

/**
 * WGSL of the accumulation C ← β·C + XᵀX on the tiles of C that touch its
 * lower triangle (bindings: 0 = C [cols, cols] f32, 1 and 2 = X [tokens,
 * cols] bound twice, 3 = parameters).
 *
 * @param spec The input type.
 * @returns WGSL source.
 */
export function hessianWgsl(spec: HessianSpec): string {
  return gemmWgsl(gemmSpecOf(spec));
}

/** Result of {@linkcode xtxGpu}. */
export interface GpuXtx {
  /** XᵀX summed over the tokens (not averaged), full symmetric, [cols, cols]. */
  readonly xtx: Float64Array;
  /** GPU seconds (timestamp queries; NaN without them). */
  readonly gpuSeconds: number;
}

/**
 * Tokens per product of {@linkcode encodeHessian}: longer inputs run as
 * products over slices of this many tokens, each added into C, so that no
 * float32 sum runs over more than this many products before it lands in C.
 * One sum over all of a calibration's tokens (8,192 for llama5M) moved the
 * Hessian by up to 7e-5 relative and flipped 0.18% of layer 0's query codes
 * against the float64 Hessian; slices of 1,024 (or 256, or 2,048) tokens
 * flipped none (tests/bench/calibration_agreement.ts has the whole-model figures).
 */
export const HESSIAN_SLICE_TOKENS = 1024;

/**
 * Records C ← β·C + XᵀX (lower-triangle tiles) for X already on the GPU, in
 * products over slices of {@linkcode HESSIAN_SLICE_TOKENS} tokens: on
 * a hardware adapter with the tiled kernel's fastest Hessian variant
 * (`gemm_tiled_kernel.ts`; on the H100 48.5 TFLOP/s of computed tiles, 1.23×
 * the large tiles of `gemm_kernel.ts`, which shapes it cannot take fall back
 * to), elsewhere with `gemm_kernel.ts`'s large tiles ({@linkcode hessianWgsl}).
 *
 * @param batch The batch.
 * @param x X's buffer [tokens, cols], f32 or f16 per `spec`.
 * @param tokens Rows of X.
 * @param cols Columns of X.
 * @param out C's buffer [cols, cols] f32.
 * @param spec Input type.
 * @param beta 0 to overwrite C, 1 to accumulate.
 */
export function encodeHessian(
  batch: GpuBatch,
  x: GPUBuffer,
  tokens: number,
  cols: number,
  out: GPUBuffer,
  spec: HessianSpec,
  beta: 0 | 1,
): void {
  const tiled = batch.gpu.software ? null : gemmTiledSpec({
    transA: true,
    accumulate: true,
    inputs: spec.inputs,
    lowerC: true,
    bk: 32,
    doubleBuffer: false,
  });
  // One product at least: with no tokens it still applies β.
  const slices = Math.max(1, Math.ceil(tokens / HESSIAN_SLICE_TOKENS));
  for (let s = 0; s < slices; s++) {
    const r0 = s * HESSIAN_SLICE_TOKENS, k = Math.min(HESSIAN_SLICE_TOKENS, tokens - r0);
    const shape = {
      m: cols,
      n: cols,
      k,
      lda: cols,
      ldb: cols,
      ldc: cols,
      offA: r0 * cols,
      offB: r0 * cols,
      alpha: 1,
      beta: r0 === 0 ? beta : 1,
    };
    if (tiled === null) encodeGemm(batch, gemmSpecOf(spec), { c: out, a: x, b: x }, shape);
    else encodeGemmTiled(batch, tiled, { c: out, a: x, b: x }, shape, { fallback: true });
  }
}

/**
 * WGSL of the finishing pass of an accumulated Hessian, in place: for every
 * row ≥ column, v = scale·C[row, col] is written to both C[row, col] and
 * C[col, row], and the diagonal also to d (bindings: 0 = C [cols, cols] f32,
 * 1 = d [cols] f32, 2 = {cols, scale}). The upper triangle is only written,
 * the lower only read and rewritten by its own thread: no thread reads what
 * another writes.
 *
 * @returns WGSL source.
 */
export function hessianFinishWgsl(): string {
  return `
struct Params { cols: u32, scale: f32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read_write> C: array<f32>;
@group(0) @binding(1) var<storage, read_write> d: array<f32>;
@group(0) @binding(2) var<uniform> prm: Params;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) g: vec3u) {
  let n = prm.cols;
  let i = g.y; let j = g.x;
  if (i >= n || j > i) { return; }
  let v = C[i * n + j] * prm.scale;
  C[i * n + j] = v;
  C[j * n + i] = v;
  if (i == j) { d[i] = v; }
}
`;
}

/**
 * Records the finishing pass of a Hessian accumulated by
 * {@linkcode encodeHessian} (lower triangle of the sum): C becomes the full
 * symmetric matrix times `scale` (e.g. 1/tokens for the mean), and its
 * diagonal is copied to `diag`.
 *
 * @param batch The batch.
 * @param c C [cols, cols] f32 (lower triangle valid on entry).
 * @param cols Order.
 * @param scale Factor.
 * @param diag Output [cols] f32.
 */
export function encodeHessianFinish(
  batch: GpuBatch,
  c: GPUBuffer,
  cols: number,
  scale: number,
  diag: GPUBuffer,
): void {
  if (cols === 0) return;
  const pipe = cachedPipeline(batch.gpu, "hessian-finish", hessianFinishWgsl);
  const u = batch.uniform([{ u32: cols }, { f32: scale }, { u32: 0 }, { u32: 0 }]);
  const groups = Math.ceil(cols / 16);
  batch.dispatch(pipe, [c, diag, u], [groups, groups]);
}

/**
 * CPU reference of {@linkcode encodeHessianFinish} (float32 products, as the kernel).
 *
 * @param lower C [cols, cols] (only row ≥ column is read).
 * @param cols Order.
 * @param scale Factor.
 * @returns The symmetric result and its diagonal.
 */
export function hessianFinishReference(
  lower: Float32Array,
  cols: number,
  scale: number,
): { xtx: Float32Array; diag: Float32Array } {
  const xtx = new Float32Array(cols * cols), diag = new Float32Array(cols);
  const s = Math.fround(scale);
  for (let i = 0; i < cols; i++) {
    for (let j = 0; j <= i; j++) {
      const v = Math.fround(lower[i * cols + j]! * s);
      xtx[i * cols + j] = v;
      xtx[j * cols + i] = v;
    }
    diag[i] = xtx[i * cols + i]!;
  }
  return { xtx, diag };
}

/**
 * The symmetric float64 matrix whose lower triangle (row ≥ column) a Hessian
 * kernel read back, times `scale`; the upper triangle is mirrored by a blocked
 * transpose (a column walk over an 8192² matrix misses the cache at every step).
 *
 * @param lower The read-back [cols, cols] f32 (only row ≥ column is read).
 * @param cols Order.
 * @param scale Factor (e.g. 1/tokens for the mean).
 * @returns The full symmetric matrix.
 */
export function symmetricFromLower(lower: Float32Array, cols: number, scale = 1): Float64Array {
  const xtx = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) {
    const o = i * cols;
    for (let j = 0; j <= i; j++) xtx[o + j] = lower[o + j]! * scale;
  }
  const B = 64;
  for (let i0 = 0; i0 < cols; i0 += B) {
    const i1 = Math.min(cols, i0 + B);
    for (let j0 = 0; j0 <= i0; j0 += B) {
      const j1 = Math.min(cols, j0 + B);
      for (let i = i0; i < i1; i++) {
        const jEnd = Math.min(j1, i);
        for (let j = j0; j < jEnd; j++) xtx[j * cols + i] = xtx[i * cols + j]!;
      }
    }
  }
  return xtx;
}

/**
 * XᵀX of `x` [tokens, cols] (f32 or f16) on the GPU, in one submission.
 *
 * @param gpu The GPU.
 * @param x Inputs, one token per row.
 * @param options `maxTileBytes`: largest token tile uploaded at once (default: the
 *   device's binding limit).
 * @returns The summed XᵀX (float64, symmetric) and the GPU time.
 */
export async function xtxGpu(
  gpu: Gpu,
  x: Tensor,
  options: { maxTileBytes?: number } = {},
): Promise<GpuXtx> {
  if (x.shape.length !== 2) {
    throw new RangeError(
      `Cannot accumulate a Hessian as 'x' must be 2-D: current shape is [${x.shape}]`,
    );
  }
  if (x.dtype !== "f32" && x.dtype !== "f16") {
    throw new TypeError(
      `Cannot accumulate a Hessian on the GPU from 'x' of dtype ${x.dtype}: use f32 or f16`,
    );
  }
  if (x.dtype === "f16" && !gpu.f16) {
    throw new TypeError("Cannot accumulate a Hessian from f16 inputs: the device lacks shader-f16");
  }
  const [tokens, cols] = x.shape as [number, number];
  const spec: HessianSpec = { inputs: x.dtype };
  const data = x.data as Float32Array | Float16Array;
  const bytesPerRow = cols * data.BYTES_PER_ELEMENT;
  const limit = bindingLimit(gpu);
  if (cols * cols * 4 > limit) {
    throw new RangeError(
      `Cannot accumulate a Hessian of ${cols} columns on the GPU: [${cols}, ${cols}] f32 takes ${
        cols * cols * 4
      } bytes, over the device's storage binding limit of ${limit} bytes; use backend "cpu"`,
    );
  }
  // Token tiles: an even number of rows so that f16 tiles stay 4-byte aligned.
  const tileBytes = Math.min(limit, options.maxTileBytes ?? limit);
  const tileRows = Math.max(2, Math.floor(tileBytes / bytesPerRow / 2) * 2);
  const out = storageBuffer(gpu, cols * cols * 4, "xtx");
  const batch = new GpuBatch(gpu);
  const inputs: GPUBuffer[] = [];
  for (let r0 = 0; r0 < tokens || r0 === 0; r0 += tileRows) {
    const r1 = Math.min(tokens, r0 + tileRows);
    const tile = uploadBuffer(gpu, data.subarray(r0 * cols, r1 * cols), "x-tile");
    inputs.push(tile);
    encodeHessian(batch, tile, r1 - r0, cols, out, spec, r0 === 0 ? 0 : 1);
    if (tokens === 0) break;
  }
  const { data: [bytes], gpuSeconds } = await batch.submit([out]);
  for (const b of inputs) b.destroy();
  out.destroy();
  return { xtx: symmetricFromLower(new Float32Array(bytes!), cols), gpuSeconds };
}

/**
 * CPU reference of {@linkcode xtxGpu}: XᵀX summed over tokens, in float64.
 *
 * @param x Inputs [tokens, cols] (any float dtype readable as numbers).
 * @returns The symmetric [cols, cols] sum.
 */
export function xtxReference(x: Tensor): Float64Array {
  const [tokens, cols] = x.shape as [number, number];
  const d = x.data as ArrayLike<number>;
  const out = new Float64Array(cols * cols);
  for (let t = 0; t < tokens; t++) {
    const row = t * cols;
    for (let i = 0; i < cols; i++) {
      const xi = Number(d[row + i]);
      if (xi === 0) continue;
      const o = i * cols;
      for (let j = 0; j <= i; j++) out[o + j] = out[o + j]! + xi * Number(d[row + j]);
    }
  }
  for (let i = 0; i < cols; i++) {
    for (let j = 0; j < i; j++) out[j * cols + i] = out[i * cols + j]!;
  }
  return out;
}
