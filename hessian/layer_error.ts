/**
 * Relative output error of an approximated layer, from its Hessian: on the
 * CPU in float64 ({@linkcode layerError}), or on a chosen backend
 * ({@linkcode evaluateLayerError}: on the GPU the two quadratic forms are one
 * matrix product and row dot products in float32). Web-standard only.
 *
 * @module
 */

import { dims2, type Tensor } from "../core/tensor.ts";
import { asFloat64 } from "../core/convert.ts";
import {
  type Backend,
  bindingLimit,
  type Gpu,
  GpuBatch,
  resolveBackend,
  storageBuffer,
  writeBuffer,
} from "../kernels/backend.ts";
import { encodeGemm, gemmSpec } from "../kernels/gemm_kernel.ts";
import { encodeRowDot } from "../kernels/row_dot_kernel.ts";
import type { Hessian } from "./hessian.ts";
import { type DeviceHessian, isDeviceHessian } from "./device_hessian.ts";

/**
 * ‖(W − Ŵ)X‖²_F / ‖WX‖²_F computed as tr(D·H·Dᵀ) / tr(W·H·Wᵀ) with D = W − Ŵ
 * and H the mean of x·xᵀ (float64 throughout).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { layerError } from "./layer_error.ts";
 * import { hessian } from "./hessian.ts";
 * import { tensor } from "../core/tensor.ts";
 * const h = hessian(tensor("f64", [2, 2], new Float64Array([1, 0, 0, 1])));
 * const w = tensor("f64", [1, 2], new Float64Array([1, 1]));
 * const a = tensor("f64", [1, 2], new Float64Array([1, 0]));
 * assert(layerError(w, a, h) === 0.5);
 * ```
 *
 * @param weight W [rows, cols].
 * @param approx Ŵ [rows, cols].
 * @param hessian H over the layer's inputs (cols × cols).
 * @returns The relative error (0 when W·X is 0 and Ŵ = W; Infinity when only W·X is 0).
 * @throws {RangeError} on shape mismatches.
 */
export function layerError(weight: Tensor, approx: Tensor, hessian: Hessian): number {
  const [rows, cols] = checkShapes(weight, approx, hessian);
  const w = asFloat64(weight), a = asFloat64(approx), h = hessian.xtx;
  const d = new Float64Array(cols), wr = new Float64Array(cols);
  let num = 0, den = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      wr[c] = w[r * cols + c]!;
      d[c] = wr[c]! - a[r * cols + c]!;
    }
    for (let i = 0; i < cols; i++) {
      const di = d[i]!, wi = wr[i]!;
      if (di === 0 && wi === 0) continue;
      const hi = i * cols;
      let sd = 0, sw = 0;
      for (let j = 0; j < cols; j++) {
        const hij = h[hi + j]!;
        sd += hij * d[j]!;
        sw += hij * wr[j]!;
      }
      num += di * sd;
      den += wi * sw;
    }
  }
  if (den === 0) return num === 0 ? 0 : Infinity;
  return num / den;
}

function checkShapes(
  weight: Tensor,
  approx: Tensor,
  hessian: { readonly cols: number },
): [number, number] {
  const [rows, cols] = dims2(weight, "weight");
  const [ar, ac] = dims2(approx, "approx");
  if (ar !== rows || ac !== cols) {
    throw new RangeError(
      `Cannot compute the layer error as 'approx' [${approx.shape}] differs from 'weight' [${weight.shape}]`,
    );
  }
  if (hessian.cols !== cols) {
    throw new RangeError(
      `Cannot compute the layer error as the Hessian has ${hessian.cols} columns and 'weight' ${cols}`,
    );
  }
  return [rows, cols];
}

/** Options of {@linkcode evaluateLayerError}. */
export interface LayerErrorOptions {
  /**
   * Where the quadratic forms run: "auto" (WebGPU on a hardware adapter, else
   * the CPU), "cpu" (float64), or "webgpu" (any adapter; float32 products).
   * A Hessian larger than one storage binding runs on the CPU under "auto".
   * @default "auto"
   */
  backend?: Backend;
}

/**
 * {@linkcode layerError} on a chosen backend. On the CPU it costs 4·rows·cols²
 * float64 operations (minutes for an 8192-column layer in JavaScript); on the
 * GPU, [D; W]·H is one float32 matrix product (D = W − Ŵ formed in float64,
 * then rounded), followed by the row dot products with [D; W].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { evaluateLayerError } from "./layer_error.ts";
 * import { hessian } from "./hessian.ts";
 * import { tensor } from "../core/tensor.ts";
 * const h = hessian(tensor("f64", [2, 2], new Float64Array([1, 0, 0, 1])));
 * const w = tensor("f64", [1, 2], new Float64Array([1, 1]));
 * const a = tensor("f64", [1, 2], new Float64Array([1, 0]));
 * assert((await evaluateLayerError(w, a, h, { backend: "cpu" })) === 0.5);
 * ```
 * @param weight W [rows, cols].
 * @param approx Ŵ [rows, cols].
 * @param hessian H over the layer's inputs (cols × cols), on the host or on a
 *   device (read in place on its own device, else read back).
 * @param options Backend.
 * @returns The relative error.
 * @throws {RangeError} on shape mismatches, or with backend "webgpu" when H
 *   exceeds one storage binding.
 */
export async function evaluateLayerError(
  weight: Tensor,
  approx: Tensor,
  hessian: Hessian | DeviceHessian,
  options: LayerErrorOptions = {},
): Promise<number> {
  const { backend = "auto" } = options;
  const [rows, cols] = checkShapes(weight, approx, hessian);
  let gpu = await resolveBackend(backend, "compute a layer error");
  if (isDeviceHessian(hessian)) {
    if (gpu !== null && gpu.device === hessian.gpu.device && !hessian.released) {
      return await layerErrorGpu(gpu, floats(weight), floats(approx), hessian.buffer, rows, cols);
    }
    hessian = await hessian.toHost();
  }
  if (gpu !== null && cols * cols * 4 > bindingLimit(gpu)) {
    if (backend === "webgpu") {
      throw new RangeError(
        `Cannot compute the layer error on the GPU: H [${cols}, ${cols}] f32 exceeds the ` +
          `storage binding limit of ${bindingLimit(gpu)} bytes`,
      );
    }
    gpu = null;
  }
  if (gpu === null) return layerError(weight, approx, hessian);
  const h = storageBuffer(gpu, cols * cols * 4, "layer-error:h");
  try {
    writeBuffer(gpu, h, 0, Float32Array.from(hessian.xtx));
    return await layerErrorGpu(gpu, floats(weight), floats(approx), h, rows, cols);
  } finally {
    h.destroy();
  }
}

/** A tensor's values as float32 or float64 (its own storage when it is one of them). */
function floats(t: Tensor): Float32Array | Float64Array {
  return t.data instanceof Float32Array || t.data instanceof Float64Array ? t.data : asFloat64(t);
}

/** The buffers of {@linkcode encodeLayerErrorSums}. */
export interface LayerErrorBuffers {
  /** [D; W]: the rows of D = W − Ŵ, then the same rows of W, [2·rows, cols] f32. */
  readonly m: GPUBuffer;
  /** Scratch for [D; W]·H, [2·rows, cols] f32. */
  readonly p: GPUBuffer;
  /** Receives the quadratic forms: d_r·H·d_rᵀ for each row, then w_r·H·w_rᵀ, [2·rows] f32. */
  readonly s: GPUBuffer;
  /** H [cols, cols] f32, symmetric. */
  readonly h: GPUBuffer;
}

/**
 * Records the per-row quadratic forms of a layer error on the GPU: one
 * product [D; W]·H, then the row dot products with [D; W]. The error is
 * Σ of the first `rows` sums over Σ of the last `rows` (summed on the host).
 *
 * @param batch The batch.
 * @param bufs The buffers.
 * @param rows Rows of D (and of W).
 * @param cols Columns.
 */
export function encodeLayerErrorSums(
  batch: GpuBatch,
  bufs: LayerErrorBuffers,
  rows: number,
  cols: number,
): void {
  encodeGemm(
    batch,
    gemmSpec({ tile: batch.gpu.software ? "small" : "large" }),
    { c: bufs.p, a: bufs.m, b: bufs.h },
    { m: 2 * rows, n: cols, k: cols, lda: cols, ldb: cols, ldc: cols, alpha: 1, beta: 0 },
  );
  encodeRowDot(batch, bufs.s, bufs.p, bufs.m, 2 * rows, cols);
}

/**
 * tr(D·H·Dᵀ) / tr(W·H·Wᵀ) on the GPU, over tiles of rows of [D; W]. D is
 * formed in float64 and rounded (for float32 inputs that is the float32
 * difference itself).
 */
async function layerErrorGpu(
  gpu: Gpu,
  w: Float32Array | Float64Array,
  a: Float32Array | Float64Array,
  h: GPUBuffer,
  rows: number,
  cols: number,
): Promise<number> {
  // Tiles of rows of D and W (both halves), each at most 256 MB per buffer.
  const tileRows = Math.max(
    1,
    Math.min(rows, Math.floor(Math.min(bindingLimit(gpu), 1 << 28) / 8 / cols)),
  );
  const m = storageBuffer(gpu, 2 * tileRows * cols * 4, "layer-error:m");
  const p = storageBuffer(gpu, 2 * tileRows * cols * 4, "layer-error:p");
  const s = storageBuffer(gpu, 2 * tileRows * 4, "layer-error:s");
  const staging = new Float32Array(Math.min(rows * cols, 1 << 20));
  let num = 0, den = 0;
  try {
    for (let r0 = 0; r0 < rows; r0 += tileRows) {
      const n = Math.min(tileRows, rows - r0);
      // D's rows, then W's, through one reused staging array (fresh pages of a
      // tile-sized array would cost more than the subtraction).
      const total = n * cols, base = r0 * cols;
      for (let i0 = 0; i0 < total; i0 += staging.length) {
        const len = Math.min(staging.length, total - i0);
        for (let i = 0; i < len; i++) staging[i] = w[base + i0 + i]! - a[base + i0 + i]!;
        writeBuffer(gpu, m, i0 * 4, staging.subarray(0, len));
      }
      if (w instanceof Float32Array) {
        writeBuffer(gpu, m, total * 4, w.subarray(base, base + total));
      } else {
        for (let i0 = 0; i0 < total; i0 += staging.length) {
          const len = Math.min(staging.length, total - i0);
          for (let i = 0; i < len; i++) staging[i] = w[base + i0 + i]!;
          writeBuffer(gpu, m, (total + i0) * 4, staging.subarray(0, len));
        }
      }
      const batch = new GpuBatch(gpu);
      encodeLayerErrorSums(batch, { m, p, s, h }, n, cols);
      const { data } = await batch.submit([{ buffer: s, offset: 0, size: 2 * n * 4 }]);
      const sums = new Float32Array(data[0]!);
      for (let r = 0; r < n; r++) {
        num += sums[r]!;
        den += sums[n + r]!;
      }
    }
  } finally {
    for (const b of [m, p, s]) b.destroy();
  }
  if (den === 0) return num === 0 ? 0 : Infinity;
  return num / den;
}
