/**
 * SparseGPT: one-shot pruning with Optimal Brain Surgeon weight updates,
 * unstructured or N:M, optionally joint with quantization in the same pass.
 * A thin decider choice on the one OBS column solver (`obsSolve`), which
 * GPTQ shares. Web-standard only.
 *
 * @see Frantar, Alistarh. "SparseGPT: Massive Language Models Can Be
 * Accurately Pruned in One-Shot" (2023), Algorithm 1 (adaptive mask selection
 * per block of columns, section 3.3 for N:M and joint quantization).
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { tensor } from "../core/tensor.ts";
import type { Hessian } from "../hessian/hessian.ts";
import type { DeviceHessian } from "../hessian/device_hessian.ts";
import {
  type ObsDecider,
  type ObsPruneStructure,
  type ObsResult,
  obsSolve,
} from "../hessian/obs.ts";
import type { Backend } from "../kernels/backend.ts";
import type { DeviceWeight } from "../kernels/device_copies.ts";
import type { GridOptions } from "../quantizers/grid.ts";
import type { QuantizedWeight } from "../quantizers/quantized_weight.ts";
import { checkWeight } from "./_common.ts";
import type { PruneResult } from "./prune_result.ts";
import { type SparsityStructure, validateStructure } from "./structure.ts";

/** Options of {@linkcode sparsegpt}. */
export interface SparseGptOptions {
  /**
   * What to prune. Unstructured: in each block of `blockSize` columns,
   * exactly ⌊sparsity·rows·width⌋ weights with the smallest OBS saliency
   * w²/[U]_jj² over all rows of the block, chosen on the already-updated
   * weights when the block starts (per-row sparsity varies; each block's total
   * is exact; the reference code thresholds at sorted index ⌊sparsity·numel⌋
   * inclusive, one weight more per block); `scope` is not accepted. N:M: in each row, the m − n smallest
   * saliencies of every group of m columns, chosen at the group's first column.
   */
  structure: SparsityStructure;
  /**
   * Columns per block: the unit of mask selection (unstructured) and of the
   * solver's lazy batch updates. With N:M it is rounded down to a multiple of m.
   * @default 128
   */
  blockSize?: number;
  /** Damping added to the Hessian diagonal, as a fraction of its mean. @default 0.01 */
  dampRatio?: number;
  /**
   * Joint sparse + quantized compression: kept weights are rounded onto this
   * uniform grid in the same pass (pruned ones stay exactly 0), and the result
   * carries `quantized`.
   */
  quantize?: GridOptions;
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
   * `result.weight`; the callee owns the buffer); see `ObsOptions.onDeviceWeight`.
   */
  onDeviceWeight?: (weight: DeviceWeight) => void;
}

/** What {@linkcode sparsegpt} returns. */
export interface SparseGptResult extends PruneResult {
  /** With `quantize`: the codes and grids; pruned weights have code = zero point (value 0). */
  readonly quantized?: QuantizedWeight;
}

/**
 * Prunes a linear layer with SparseGPT: OBS saliency masks and weight updates
 * that compensate each pruned weight on the columns not yet visited.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "../core/tensor.ts";
 * import { hessian } from "../hessian/hessian.ts";
 * import { sparsegpt } from "./sparsegpt.ts";
 * const x = tensor("f32", [16, 8], Float32Array.from({ length: 128 }, (_, i) => Math.sin(i * i)));
 * const w = tensor("f32", [4, 8], Float32Array.from({ length: 32 }, (_, i) => Math.cos(i)));
 * const res = await sparsegpt(w, hessian(x), { structure: { kind: "nm", n: 2, m: 4 } });
 * assert(res.sparsity === 0.5);
 * ```
 * @param weight Float weight [rows, cols] = [out features, in features]; not mutated.
 * @param hessian Calibration statistics (mean of x·xᵀ) with `cols` columns.
 * @param options Structure, block size, damping, optional grid, progress.
 * @returns The pruned weight (f32), its keep-mask, the achieved sparsity, the
 * solver's statistics (OBS loss, damping, dead columns, seconds) and, when
 * joint, the quantized weight.
 * @throws {RangeError} for invalid options or mismatched shapes.
 * @throws {TypeError} for NaN or infinite weights.
 * @throws {CholeskyError} when the Hessian stays indefinite after the solver's damping retries.
 */
export async function sparsegpt(
  weight: Tensor,
  hessian: Hessian | DeviceHessian,
  options: SparseGptOptions,
): Promise<SparseGptResult> {
  if (options === null || typeof options !== "object") {
    throw new TypeError(`Cannot prune with SparseGPT as 'options' must be an object`);
  }
  const {
    structure,
    blockSize = 128,
    dampRatio = 0.01,
    quantize,
    onProgress,
    backend = "auto",
    measureError = false,
    onDeviceWeight,
  } = options;
  // The values are scanned by obsSolve (on the GPU when it runs there): its
  // error is replaced by this function's own TypeError below.
  const { rows, cols } = checkWeight(weight, "prune with SparseGPT", false);
  validateStructure(structure, cols, "prune with SparseGPT");
  if (structure.kind === "unstructured" && structure.scope !== undefined) {
    throw new RangeError(
      `Cannot prune with SparseGPT as 'structure.scope' is not used: the mask is chosen per block ` +
        `of 'blockSize' columns over all rows (set 'blockSize' to the column count for one ` +
        `layer-wide choice): current value is ${structure.scope}`,
    );
  }
  if (!Number.isSafeInteger(blockSize) || blockSize < 1) {
    throw new RangeError(
      `Cannot prune with SparseGPT as 'blockSize' must be a positive integer: current value is ${blockSize}`,
    );
  }
  if (typeof dampRatio !== "number" || !(dampRatio >= 0) || !Number.isFinite(dampRatio)) {
    throw new RangeError(
      `Cannot prune with SparseGPT as 'dampRatio' must be a finite number ≥ 0: current value is ${dampRatio}`,
    );
  }
  const obsStructure: ObsPruneStructure = structure.kind === "nm"
    ? { kind: "nm", n: structure.n, m: structure.m }
    : { kind: "unstructured", sparsity: structure.sparsity };
  const decider: ObsDecider = quantize === undefined
    ? { kind: "prune", structure: obsStructure }
    : { kind: "prune+grid", structure: obsStructure, grid: quantize };
  let res: ObsResult;
  try {
    res = await obsSolve(weight, hessian, {
      decider,
      blockSize,
      dampRatio,
      backend,
      measureError,
      ...(onDeviceWeight ? { onDeviceWeight } : {}),
      mask: "kept",
      ...(onProgress ? { onProgress } : {}),
    });
  } catch (e) {
    checkWeight(weight, "prune with SparseGPT"); // a non-finite weight: its TypeError
    throw e;
  }
  // res.kept is this call's own fresh array.
  const mask = res.kept!, prunedCount = res.prunedCount!;
  const result: SparseGptResult = {
    weight: res.weight,
    mask: tensor("bool", [rows, cols], mask),
    sparsity: mask.length === 0 ? 0 : prunedCount / mask.length,
    stats: res.stats,
  };
  if (quantize === undefined) return result;
  const quantized: QuantizedWeight = {
    kind: "uniform",
    shape: [rows, cols],
    bits: quantize.bits,
    groupSize: quantize.groupSize ?? -1,
    symmetric: quantize.symmetric ?? false,
    codes: res.codes!,
    scales: res.scales!,
    zeros: res.zeros!,
    gIdx: res.gIdx!,
    stats: res.stats,
  };
  return { ...result, quantized };
}
