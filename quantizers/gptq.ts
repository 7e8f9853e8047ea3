/**
 * GPTQ: uniform-grid quantization with Optimal Brain Surgeon error
 * compensation, as the grid decider on the shared OBS column loop.
 * Web-standard only.
 *
 * @see Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training
 * Quantization for Generative Pre-trained Transformers" (ICLR 2023), Algorithm 1.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import type { Hessian } from "../hessian/hessian.ts";
import type { DeviceHessian } from "../hessian/device_hessian.ts";
import { obsSolve } from "../hessian/obs.ts";
import type { Backend } from "../kernels/backend.ts";
import type { DeviceWeight } from "../kernels/device_copies.ts";
import type { QuantizedWeight } from "./quantized_weight.ts";
import type { MxFormat } from "../core/scaled_float.ts";
import type { MxWeight } from "./mx.ts";
import type { Fp8Granularity, Fp8Weight } from "./fp8_quantize.ts";

/** Options of {@linkcode gptq}. */
export interface GptqOptions {
  /** Bits per code, an integer in [1, 16]. */
  bits: number;
  /**
   * Input columns per group; −1 for one grid per output row. When it does not
   * divide the columns, the last group is shorter (as the reference).
   * @default -1
   */
  groupSize?: number;
  /** Symmetric grids (zero point 2^(bits−1)). @default false */
  symmetric?: boolean;
  /** Process columns by decreasing Hessian diagonal. @default false */
  actOrder?: boolean;
  /**
   * Fit every group's grid on the original weights before the loop (groups
   * then follow the original column order even under act-order).
   * @default false
   */
  staticGroups?: boolean;
  /** Columns per lazy batch update. @default 128 */
  blockSize?: number;
  /** Damping as a fraction of the mean Hessian diagonal. @default 0.01 */
  dampRatio?: number;
  /** MSE clipping search for every grid (see `GridOptions.mse`). @default false */
  mse?: boolean;
  /** Called after each block with the columns done and the total. */
  onProgress?: (done: number, total: number) => void;
  /**
   * Where the column loop runs: "auto" (WebGPU on a hardware adapter, else
   * the CPU), "cpu", or "webgpu" (any adapter, software ones included; throws
   * without one). The GPU path gives the same result to float32 tolerance.
   * @default "auto"
   */
  backend?: Backend;
  /**
   * Measure the layer error in the GPU solve's own submission (with a device
   * Hessian, no act-order), into `stats.layerError`; see `ObsOptions.measureError`.
   * @default false
   */
  measureError?: boolean;
  /**
   * Receives the new weights left on the GPU ([rows, cols] float32, equal to
   * `dequantize(result)`; the callee owns the buffer); see `ObsOptions.onDeviceWeight`.
   */
  onDeviceWeight?: (weight: DeviceWeight) => void;
}

/**
 * Options of {@linkcode gptq} over a scaled floating-point format (the OBS
 * solver's "float-grid" decider, CPU only): MXFP4, NVFP4 or FP8 (E4M3).
 */
export interface GptqFloatOptions {
  /** The format: `"mxfp4"`, `"nvfp4"` (microscaling, E2M1) or `"fp8"` (E4M3). */
  format: MxFormat | "fp8";
  /** FP8 only: one scale per output row or per tensor. @default "channel" */
  granularity?: Fp8Granularity;
  /**
   * MX formats only: fit the block scales on the original weights before the
   * loop instead of when the loop reaches each block (on the updated
   * weights); needed with `actOrder`.
   * @default false
   */
  staticGroups?: boolean;
  /** Process columns by decreasing Hessian diagonal. @default false */
  actOrder?: boolean;
  /** Columns per lazy batch update. @default 128 */
  blockSize?: number;
  /** Damping as a fraction of the mean Hessian diagonal. @default 0.01 */
  dampRatio?: number;
  /** Called after each block with the columns done and the total. */
  onProgress?: (done: number, total: number) => void;
  /**
   * "auto" or "cpu" (both solve on the CPU); "webgpu" throws, as the GPU
   * loop has no kernel for these formats yet.
   * @default "auto"
   */
  backend?: Backend;
}

/**
 * Quantizes a layer weight with GPTQ.
 *
 * Same conventions as the paper's reference implementation: asymmetric
 * min/max grids per output row widened to include 0, rounded zero points,
 * round half to even, groups fitted when the loop reaches their first column,
 * 1% damping, lazy blocks of 128. Codes are returned in the original column
 * order; with `actOrder`, `perm` holds the order used and `gIdx` each column's group.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gptq } from "./gptq.ts";
 * import { dequantize } from "./dequantize.ts";
 * import { hessian } from "../hessian/hessian.ts";
 * import { tensor } from "../core/tensor.ts";
 * const x = tensor("f32", [16, 4], Float32Array.from({ length: 64 }, (_, i) => Math.cos(i * 0.7)));
 * const w = tensor("f32", [2, 4], new Float32Array([0.3, -0.2, 0.9, 0.1, -0.5, 0.4, 0.05, 0.7]));
 * const q = await gptq(w, hessian(x), { bits: 4 });
 * assert(dequantize(q).shape[1] === 4);
 * ```
 *
 * @param weight [rows, cols] = [out features, in features], any float dtype.
 * @param hessian Hessian of the layer's inputs (cols × cols).
 * @param options Bits, groups, symmetry, act-order, damping, block size.
 * @returns The quantized weight.
 * @throws {RangeError} on invalid options, shape mismatches or non-finite values.
 */
export async function gptq(
  weight: Tensor,
  hessian: Hessian | DeviceHessian,
  options: GptqOptions,
): Promise<QuantizedWeight>;
/**
 * Quantizes a layer weight with GPTQ onto a microscaling format (MXFP4, NVFP4).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gptq } from "./gptq.ts";
 * import { hessian } from "../hessian/hessian.ts";
 * import { tensor } from "../core/tensor.ts";
 * const x = tensor("f32", [64, 32], Float32Array.from({ length: 2048 }, (_, i) => Math.cos(i * 0.7)));
 * const w = tensor("f32", [2, 32], Float32Array.from({ length: 64 }, (_, i) => Math.sin(i)));
 * const q = await gptq(w, hessian(x), { format: "mxfp4" });
 * assert(q.kind === "mx" && q.scales.length === 2);
 * ```
 *
 * @param weight [rows, cols] = [out features, in features], any float dtype.
 * @param hessian Hessian of the layer's inputs (cols × cols).
 * @param options The format, act-order, damping, block size.
 * @returns The quantized weight.
 * @throws {RangeError} on invalid options, shape mismatches or non-finite values.
 */
export async function gptq(
  weight: Tensor,
  hessian: Hessian | DeviceHessian,
  options: GptqFloatOptions & { format: MxFormat },
): Promise<MxWeight>;
/**
 * Quantizes a layer weight with GPTQ onto FP8 (E4M3) with a scale per row or tensor.
 *
 * @param weight [rows, cols] = [out features, in features], any float dtype.
 * @param hessian Hessian of the layer's inputs (cols × cols).
 * @param options The format, granularity, act-order, damping, block size.
 * @returns The quantized weight.
 * @throws {RangeError} on invalid options, shape mismatches or non-finite values.
 */
export async function gptq(
  weight: Tensor,
  hessian: Hessian | DeviceHessian,
  options: GptqFloatOptions & { format: "fp8" },
): Promise<Fp8Weight>;
/**
 * Quantizes a layer weight with GPTQ onto a scaled floating-point format.
 *
 * @param weight [rows, cols] = [out features, in features], any float dtype.
 * @param hessian Hessian of the layer's inputs (cols × cols).
 * @param options The format and the solver's options.
 * @returns The quantized weight.
 */
export async function gptq(
  weight: Tensor,
  hessian: Hessian | DeviceHessian,
  options: GptqFloatOptions,
): Promise<MxWeight | Fp8Weight>;
/**
 * Quantizes a layer weight with GPTQ onto a uniform grid or a scaled floating-point format.
 *
 * @param weight [rows, cols] = [out features, in features], any float dtype.
 * @param hessian Hessian of the layer's inputs (cols × cols).
 * @param options Uniform-grid options, or a `format`.
 * @returns The quantized weight.
 */
export async function gptq(
  weight: Tensor,
  hessian: Hessian | DeviceHessian,
  options: GptqOptions | GptqFloatOptions,
): Promise<QuantizedWeight | MxWeight | Fp8Weight>;
export async function gptq(
  weight: Tensor,
  hessian: Hessian | DeviceHessian,
  options: GptqOptions | GptqFloatOptions,
): Promise<QuantizedWeight | MxWeight | Fp8Weight> {
  if (options === null || typeof options !== "object") {
    throw new TypeError(
      `Cannot quantize as 'options' must be an object: current value is ${options}`,
    );
  }
  if ("format" in options && options.format !== undefined) {
    return await gptqFloat(weight, hessian, options);
  }
  return await gptqGrid(weight, hessian, options as GptqOptions);
}

async function gptqFloat(
  weight: Tensor,
  hessian: Hessian | DeviceHessian,
  options: GptqFloatOptions,
): Promise<MxWeight | Fp8Weight> {
  const {
    format,
    granularity,
    staticGroups = false,
    actOrder = false,
    blockSize = 128,
    dampRatio = 0.01,
    onProgress,
    backend = "auto",
  } = options;
  if ("bits" in options) {
    throw new TypeError(
      `Cannot quantize as 'bits' does not apply with 'format' ${String(format)}: remove one`,
    );
  }
  const res = await obsSolve(weight, hessian, {
    decider: {
      kind: "float-grid",
      format,
      staticGroups,
      ...(granularity !== undefined ? { granularity } : {}),
    },
    blockSize,
    dampRatio,
    actOrder,
    backend,
    ...(onProgress ? { onProgress } : {}),
  });
  const shape: [number, number] = [weight.shape[0]!, weight.shape[1]!];
  const codes = res.codes as Uint8Array;
  if (format === "fp8") {
    return {
      kind: "fp8",
      granularity: granularity ?? "channel",
      shape,
      codes,
      scales: res.scales!,
      stats: res.stats,
    };
  }
  return {
    kind: "mx",
    format,
    shape,
    codes,
    scales: res.scaleCodes!,
    tensorScale: res.tensorScale!,
    stats: res.stats,
  };
}

async function gptqGrid(
  weight: Tensor,
  hessian: Hessian | DeviceHessian,
  options: GptqOptions,
): Promise<QuantizedWeight> {
  const {
    bits,
    groupSize = -1,
    symmetric = false,
    actOrder = false,
    staticGroups = false,
    blockSize = 128,
    dampRatio = 0.01,
    mse = false,
    onProgress,
    backend = "auto",
    measureError = false,
    onDeviceWeight,
  } = options;
  if (typeof staticGroups !== "boolean") {
    throw new TypeError(
      `Cannot quantize as 'staticGroups' must be a boolean: current value is ${staticGroups}`,
    );
  }
  const res = await obsSolve(weight, hessian, {
    decider: { kind: "grid", grid: { bits, groupSize, symmetric, mse }, staticGroups },
    blockSize,
    dampRatio,
    actOrder,
    backend,
    measureError,
    ...(onDeviceWeight ? { onDeviceWeight } : {}),
    ...(onProgress ? { onProgress } : {}),
  });
  const [rows, cols] = [weight.shape[0]!, weight.shape[1]!];
  const q: QuantizedWeight = {
    kind: "uniform",
    shape: [rows, cols],
    bits,
    groupSize,
    symmetric,
    codes: res.codes!,
    scales: res.scales!,
    zeros: res.zeros!,
    gIdx: res.gIdx!,
    ...(res.perm ? { perm: res.perm } : {}),
    stats: res.stats,
  };
  return q;
}
