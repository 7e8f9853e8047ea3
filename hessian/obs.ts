/**
 * The one Optimal Brain Surgeon column solver that GPTQ, SparseGPT and joint
 * sparse + quantized compression share. A *decider* chooses the new values of
 * each column; the solver propagates the error to the columns not yet visited
 * through the upper Cholesky factor of H⁻¹, with lazy batch updates.
 *
 * Built-in deciders are plain values (`{ kind: "grid", ... }`,
 * `{ kind: "prune", ... }`, `{ kind: "prune+grid", ... }`) so that a GPU
 * backend can run the same decision in a kernel, `{ kind: "spqr" }`
 * (bilevel groups and float16 outliers) included: on the GPU its groups are
 * fitted and their statistics quantized between segments of the in-block
 * kernel (`kernels/obs_spqr_kernel.ts`). `{ kind: "custom" }` takes a
 * JavaScript callback (CPU only), and `{ kind: "float-grid" }` (MXFP4, NVFP4,
 * FP8) has no kernel (CPU only). Web-standard only.
 *
 * @see Frantar et al., "GPTQ" (2023), Algorithm 1; Frantar & Alistarh,
 * "SparseGPT" (2023), Algorithm 1.
 *
 * @module
 */

import { dims2, type Tensor, tensor } from "../core/tensor.ts";
import { CholeskyError, gemmSubInPlaceF32 } from "../core/_dense.ts";
import type { CompressionStats } from "../core/compression_stats.ts";
import type { GridOptions } from "../core/uniform_grid.ts";
import type { ScaledFloatFormat } from "../core/scaled_float.ts";
import type { Hessian } from "./hessian.ts";
import { type DeviceHessian, hostHessian, isDeviceHessian } from "./device_hessian.ts";
import { upperCholeskyOfInverse } from "./_obs_kernels.ts";
import { checkObsFinite, complementMask, countOnes, prepareObs, setObsMasks } from "./_obs_host.ts";
import { checkStructure, compileDecider, fail, type SolveContext } from "./_obs_deciders.ts";
import { type Backend, bindingLimit, resolveBackend } from "../kernels/backend.ts";
import { obsSolveGpu } from "./obs_gpu.ts";
import type { DeviceWeight } from "../kernels/device_copies.ts";

/** Rows per chunk of the in-block loop: a [128, 256] float32 slice is 128 KiB. */
const ROW_CHUNK = 256;

/**
 * Which weights a pruning decider removes.
 * - `unstructured`: in each block of `blockSize` columns, exactly
 *   ⌊sparsity · rows · width⌋ weights with the smallest w²/[U]_jj² over all
 *   rows of the block (so per-row sparsity varies while each block's total is exact).
 * - `nm`: keep `n` of every `m` consecutive columns in each row: at the first
 *   column of each group of m, the m − n smallest scores of the group (on the
 *   already-updated weights) are removed. `m` must divide the columns.
 */
export type ObsPruneStructure =
  | { readonly kind: "unstructured"; readonly sparsity: number }
  | { readonly kind: "nm"; readonly n: number; readonly m: number };

/** What the custom decider is told about the column it decides. */
export interface ObsColumnInfo {
  /** Position in the processing order. */
  readonly position: number;
  /** Index of the column in the original weight. */
  readonly column: number;
  /** [U]_jj, the diagonal of the upper Cholesky factor of H⁻¹ at this position. */
  readonly hinvDiag: number;
}

/** The per-column decision of the OBS loop, as a value. */
export type ObsDecider =
  | {
    /**
     * GPTQ: round each column onto a uniform grid fitted per output row. As
     * in the reference, per-channel grids are fitted on the weights as given
     * (before dead columns are zeroed).
     */
    readonly kind: "grid";
    readonly grid: GridOptions;
    /**
     * Fit the group grids on the original weights before the loop, in the
     * original column order (only with groups). Otherwise each group's grid
     * is fitted when the loop reaches its first column, on the weights as the
     * lazy updates left them, in processing order.
     * @default false
     */
    readonly staticGroups?: boolean;
  }
  | {
    /**
     * GPTQ on a scaled floating-point format (`core/scaled_float.ts`): each
     * column rounds to nearest on the format's grid (E2M1 under the block
     * multiplier for MXFP4/NVFP4, E4M3 under the row's or tensor's scale for
     * FP8). CPU only. The NVFP4 tensor scale and the FP8 scales are fitted on
     * the weights as given, before the loop. The MX block scales are fitted
     * per block of 32 (MXFP4) or 16 (NVFP4) columns of each row when the loop
     * reaches the block's first column, on the weights as the lazy updates left
     * them (as the grid decider's dynamic groups), or, with `staticGroups`, on
     * the original weights before the loop (needed for act-order or `perm`, as
     * the blocks are runs of original columns).
     */
    readonly kind: "float-grid";
    readonly format: ScaledFloatFormat;
    /** FP8 only: one scale per output row or per tensor. @default "channel" */
    readonly granularity?: "channel" | "tensor";
    /** MX formats only: fit the block scales before the loop. @default false */
    readonly staticGroups?: boolean;
  }
  | {
    /** SparseGPT: set the weights chosen by `structure` to zero. */
    readonly kind: "prune";
    readonly structure: ObsPruneStructure;
  }
  | {
    /** Joint: pruned weights become exactly 0, the others land on the grid. */
    readonly kind: "prune+grid";
    readonly structure: ObsPruneStructure;
    readonly grid: GridOptions;
    /** As for `grid`. @default false */
    readonly staticGroups?: boolean;
  }
  | {
    /**
     * SpQR: groups of `groupSize` columns (in processing order) on min–max
     * grids fitted when the loop reaches them, on the updated weights; their
     * scales and zero points quantized again to `scaleBits`/`zeroBits` in
     * runs of `statisticGroupSize` output rows; a weight whose error
     * (w − q)²/[U]_jj² exceeds `outlierThreshold` times the layer's typical
     * error is an outlier, kept in float16. On the GPU as on the CPU.
     */
    readonly kind: "spqr";
    /** Bits per code, in [1, 8]. */
    readonly bits: number;
    /** Columns per first-level group. */
    readonly groupSize: number;
    /** Bits of each scale's code (second level), in [1, 8]. */
    readonly scaleBits: number;
    /** Bits of each zero point's code (second level), in [1, 8]. */
    readonly zeroBits: number;
    /** Output rows per second-level run. */
    readonly statisticGroupSize: number;
    /** τ, relative to the typical error; `Infinity`: no outliers. */
    readonly outlierThreshold: number;
    /** Fit each group's grid on all its weights (no leave-one-out screening). @default false */
    readonly simplifiedOutliers?: boolean;
  }
  | {
    /** Any JavaScript decision (CPU only). */
    readonly kind: "custom";
    /**
     * New values of one column.
     * @param column The column's current (already updated) values [rows]; a copy.
     * @param info Where the column is.
     * @returns The new values [rows].
     */
    readonly decide: (column: Float32Array, info: ObsColumnInfo) => ArrayLike<number>;
  };

/** Options of {@linkcode obsSolve}. */
export interface ObsOptions {
  /** The per-column decision. */
  decider: ObsDecider;
  /** Columns per lazy batch update (N:M rounds it down to a multiple of m). @default 128 */
  blockSize?: number;
  /** Damping added to the diagonal, as a fraction of its mean. @default 0.01 */
  dampRatio?: number;
  /** Process columns by decreasing Hessian diagonal (act-order). @default false */
  actOrder?: boolean;
  /** Explicit processing order (a permutation of the columns); excludes `actOrder`. */
  perm?: ArrayLike<number>;
  /** Times the damping is multiplied by 10 when Cholesky fails before giving up. @default 6 */
  maxDampingRetries?: number;
  /** Called after each block with the columns done and the total. */
  onProgress?: (done: number, total: number) => void;
  /**
   * With a prune decider, which of the result's masks is built with it
   * (`pruned` or `kept`); the other one is computed on first access.
   * @default "pruned"
   */
  mask?: "pruned" | "kept";
  /**
   * Measure the layer error ‖(W − Ŵ)X‖²/‖WX‖² (undamped H) in the GPU loop's
   * own submission, into `stats.layerError`: honoured when the loop runs on
   * the GPU with a device Hessian and no permutation (elsewhere the field is
   * absent; `evaluateLayerError` measures it).
   * @default false
   */
  measureError?: boolean;
  /**
   * Receives the new weights on the device, when the loop ran on the GPU with
   * W in one buffer in the original order (no permutation): a buffer of
   * [rows, cols] float32 on the solve's device, equal to `result.weight`,
   * which the callee now owns (and must destroy). Not called otherwise. A
   * pipeline that runs its calibration passes on the same device copies it
   * there instead of uploading the new weights again.
   */
  onDeviceWeight?: (weight: DeviceWeight) => void;
  /**
   * Where the column loop runs: "auto" (WebGPU, except for a "custom" or "float-grid" decider, on a hardware adapter, else
   * the CPU), "cpu", or "webgpu" (any adapter, software ones included; throws
   * without one). The GPU path gives the same result to float32 tolerance.
   * @default "auto"
   */
  backend?: Backend;
}

/** Statistics of an OBS solve. */
export interface ObsStats extends CompressionStats {
  /**
   * Σ (w − q)²/[U]_jj² over all decisions: the output error ‖(W − Ŵ)X‖²/count
   * under the damped Hessian. It equals the error the reference GPTQ prints
   * when its n counts tokens (its H = 2/n·Σxxᵀ and its loss carries ½).
   */
  obsLoss: number;
  /** Absolute damping added to the diagonal (after retries). */
  damping: number;
  /** Columns whose Hessian diagonal was zero (weights set to 0). */
  deadColumns: number;
  /** Total wall-clock seconds. */
  seconds: number;
  /** Seconds in the factorization of H⁻¹ (including retries). */
  choleskySeconds: number;
  /** Seconds in the column loop inside blocks (decisions and in-block updates). */
  loopSeconds: number;
  /** Seconds in the lazy batch updates between blocks. */
  updateSeconds: number;
  /** The layer error, when `measureError` was honoured (see {@linkcode ObsOptions.measureError}). */
  layerError?: number;
}

/**
 * The stored statistics of the "spqr" decider: each first-level scale and zero
 * point as a code, and the float16 range of each second-level run (the run of
 * rows [b·statisticGroupSize, …) of group k is entry k·rowGroups + b).
 */
export interface ObsBilevelStatistics {
  /** Codes of the first-level steps [rows, groups]. */
  scaleCodes: Uint8Array;
  /** Codes of the first-level zero points [rows, groups]. */
  zeroCodes: Uint8Array;
  /** Smallest step of each run (float16 value) [groups, rowGroups]. */
  scaleLo: Float32Array;
  /** Largest step of each run (float16 value) [groups, rowGroups]. */
  scaleHi: Float32Array;
  /** Smallest zero point of each run (float16 value) [groups, rowGroups]. */
  zeroLo: Float32Array;
  /** Largest zero point of each run (float16 value) [groups, rowGroups]. */
  zeroHi: Float32Array;
  /** The absolute threshold on (w − q)²/[U]_jj² (τ times the typical error). */
  outlierThreshold: number;
}

/** What {@linkcode obsSolve} returns; columns in the original order. */
export interface ObsResult {
  /** The new weights [rows, cols]. */
  weight: Tensor<"f32">;
  /** Processing order, when not the identity (act-order or `perm`). */
  perm?: Int32Array;
  /** Grid codes [rows, cols] (grid deciders). */
  codes?: Uint8Array | Uint16Array;
  /** Grid step per row and group [rows, groups] (grid deciders). */
  scales?: Float32Array;
  /** Grid zero point per row and group [rows, groups] (grid deciders). */
  zeros?: Float32Array;
  /** Group of each column [cols] (grid deciders). */
  gIdx?: Int32Array;
  /**
   * Block scale codes [rows, ⌈cols/blockSize⌉] (E8M0 or E4M3; "float-grid"
   * with an MX format); `scales` then holds their float32 multipliers, and for
   * FP8 the scale of each row [rows] or of the tensor [1].
   */
  scaleCodes?: Uint8Array;
  /** The NVFP4 tensor scale (1 for MXFP4; "float-grid" with an MX format). */
  tensorScale?: number;
  /**
   * 1 where the weight was pruned to 0, [rows, cols] (prune deciders). It and
   * `kept` are the result's own arrays: the one the solver produced is a
   * value, the other is computed on first access.
   */
  pruned?: Uint8Array;
  /** 1 where the weight was kept: the complement of `pruned` [rows, cols] (prune deciders). */
  kept?: Uint8Array;
  /** The number of pruned weights (prune deciders). */
  prunedCount?: number;
  /** 1 where the weight is an outlier, kept in float16, [rows, cols] ("spqr"). */
  outliers?: Uint8Array;
  /**
   * The bilevel statistics ("spqr"); `scales` and `zeros` then hold their
   * decoded values, and an outlier's entry in `codes` is the code of 0.
   */
  statistics?: ObsBilevelStatistics;
  /** Loss, damping, dead columns and timings. */
  stats: ObsStats;
}

/**
 * The Optimal Brain Surgeon column loop (GPTQ / SparseGPT Algorithm 1) with a
 * pluggable decision.
 *
 * Steps: dead inputs (zero Hessian diagonal) get diagonal 1 and weights 0;
 * columns are optionally permuted (act-order: decreasing diagonal); H is
 * damped by `dampRatio` × its mean diagonal (×10 per retry while Cholesky
 * fails); U = upper Cholesky factor of H⁻¹. Then, block by block, each
 * column's new values q are decided, the error (w − q)/U_jj is propagated to
 * the rest of the block immediately and to later blocks in one batch
 * (W[:, i2:] −= Err·U[block, i2:]). Arithmetic on W is float32 (as the
 * reference), the factorization float64 with U rounded to float32 (as the reference).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { obsSolve } from "./obs.ts";
 * import { hessian } from "./hessian.ts";
 * import { tensor } from "../core/tensor.ts";
 * const x = tensor("f32", [8, 4], Float32Array.from({ length: 32 }, (_, i) => Math.sin(i)));
 * const w = tensor("f32", [2, 4], new Float32Array([0.3, -0.2, 0.9, 0.1, -0.5, 0.4, 0.05, 0.7]));
 * const res = await obsSolve(w, hessian(x), { decider: { kind: "grid", grid: { bits: 2 } } });
 * assert(res.codes!.length === 8 && res.stats.obsLoss >= 0);
 * ```
 *
 * @param weight The layer weight [rows, cols] = [out, in], any float dtype.
 * @param hessian The layer's Hessian over its inputs (cols × cols), on the
 *   host or on the device the solve runs on (a device Hessian is read in
 *   place; where the solve runs on the CPU or another device it is read back).
 * @param options Decider, block size, damping, column order, progress.
 * @returns New weights, the decisions (codes / mask) and statistics.
 * @throws {RangeError} on shape mismatches, invalid options, non-finite values
 *   anywhere in W or H (both paths; the solve reads only H's lower triangle,
 *   H being symmetric). The GPU path reads W and that triangle in float32, so
 *   a finite float64 value beyond the float32 range is refused there too.
 * @throws {RangeError} on the GPU path when U (cols² float32) exceeds one storage binding.
 * @throws {CholeskyError} if H stays indefinite after all damping retries.
 */
export async function obsSolve(
  weight: Tensor,
  hessian: Hessian | DeviceHessian,
  options: ObsOptions,
): Promise<ObsResult> {
  await Promise.resolve();
  const t0 = performance.now();
  if (weight === null || typeof weight !== "object" || !("shape" in weight)) {
    throw new TypeError(`Cannot run the OBS solver as 'weight' must be a Tensor`);
  }
  if (options === null || typeof options !== "object") {
    throw new TypeError(`Cannot run the OBS solver as 'options' must be an object`);
  }
  const [rows, n] = dims2(weight, "weight");
  const onDevice = isDeviceHessian(hessian);
  if (
    hessian === null || typeof hessian !== "object" ||
    !(onDevice || hessian.xtx instanceof Float64Array)
  ) {
    throw new TypeError(`Cannot run the OBS solver as 'hessian' must be a Hessian`);
  }
  if (hessian.cols !== n || (!onDevice && hessian.xtx.length !== n * n)) {
    fail(`the Hessian has ${hessian.cols} columns and the weight [${weight.shape}] has ${n}`);
  }
  if (onDevice && hessian.released) fail(`the device Hessian was released`);
  const {
    decider,
    blockSize = 128,
    dampRatio = 0.01,
    actOrder = false,
    perm: userPerm,
    maxDampingRetries = 6,
    onProgress,
    backend = "auto",
    mask = "pruned",
    measureError = false,
    onDeviceWeight,
  } = options;
  if (mask !== "pruned" && mask !== "kept") {
    fail(`'mask' must be "pruned" or "kept": current value is ${String(mask)}`);
  }
  if (!Number.isInteger(blockSize) || blockSize < 1) {
    fail(`'blockSize' must be a positive integer: current value is ${blockSize}`);
  }
  if (typeof dampRatio !== "number" || !(dampRatio >= 0) || !Number.isFinite(dampRatio)) {
    fail(`'dampRatio' must be a finite number >= 0: current value is ${dampRatio}`);
  }
  if (!Number.isInteger(maxDampingRetries) || maxDampingRetries < 0) {
    fail(`'maxDampingRetries' must be an integer >= 0: current value is ${maxDampingRetries}`);
  }
  if (typeof actOrder !== "boolean") {
    throw new TypeError(
      `Cannot run the OBS solver as 'actOrder' must be a boolean: current value is ${actOrder}`,
    );
  }
  if (onDeviceWeight !== undefined && typeof onDeviceWeight !== "function") {
    throw new TypeError(`Cannot run the OBS solver as 'onDeviceWeight' must be a function`);
  }
  if (onProgress !== undefined && typeof onProgress !== "function") {
    throw new TypeError(`Cannot run the OBS solver as 'onProgress' must be a function`);
  }
  if (decider?.kind === "float-grid" && backend === "webgpu") {
    throw new TypeError(
      `Cannot run the OBS solver as 'backend' "webgpu" does not support the "${decider.kind}" decider: use "cpu" or "auto"`,
    );
  }
  const gpuDecider = decider !== null && typeof decider === "object" &&
    (decider.kind === "grid" || decider.kind === "prune" || decider.kind === "prune+grid" ||
      decider.kind === "spqr");
  let gpu = gpuDecider || backend !== "auto"
    ? await resolveBackend(backend, "the OBS solver")
    : null;
  // "auto" solves on the CPU a layer whose factor [n, n] one storage binding of this device
  // cannot hold (n > 23170 at 2 GB); "webgpu" says so instead (kernels/obs_gpu.ts).
  if (gpu !== null && backend === "auto" && n * n * 4 > bindingLimit(gpu)) gpu = null;
  // A device Hessian is read in place by a solve on its own device; any other
  // solve reads it back.
  const deviceH = onDevice && gpu !== null && gpu.device === hessian.gpu.device ? hessian : null;
  const xtx = deviceH ? null : (await hostHessian(hessian)).xtx; // [n, n], read only
  // original, cleaned and prepared.w may be the caller's storage: read only.
  // The GPU path scans what it uploads on the GPU (W, the lower triangle of
  // H), the host scans H's upper triangle while the GPU works, and it locates
  // a non-finite value only when there is one; the CPU path scans W and H first.
  const prepared = prepareObs(
    weight,
    xtx ?? { diag: deviceH!.diag },
    rows,
    n,
    actOrder,
    userPerm,
    gpu !== null,
  );
  const { original, cleaned, diag, deadColumns, perm: permOrNull, meanDiag } = prepared;
  const perm = permOrNull ?? Int32Array.from({ length: n }, (_, i) => i);

  // Damping and the factor U of H⁻¹, retrying with 10× more damping.
  const tc = performance.now();
  if (gpu !== null) {
    // The same loop on the GPU (kernels/obs_gpu.ts), in one submission.
    let gpuBlock = blockSize;
    if (decider.kind === "prune" || decider.kind === "prune+grid") {
      checkStructure(decider.structure, n);
      if (decider.structure.kind === "nm") {
        const m = decider.structure.m;
        gpuBlock = Math.max(m, Math.floor(blockSize / m) * m);
      }
    }
    return await obsSolveGpu(gpu, {
      rows,
      n,
      w: prepared.w,
      xtx: xtx ?? deviceH!.buffer,
      diag,
      meanDiag,
      dampRatio,
      maxDampingRetries,
      decider,
      blockSize: gpuBlock,
      perm: permOrNull,
      original,
      cleaned,
      deadColumns,
      t0,
      onProgress,
      // A device Hessian's values are scanned on the device only.
      checkFinite: () => checkObsFinite(original, xtx ?? new Float64Array(0)),
      keepMask: mask === "kept",
      measureError,
      onDeviceWeight,
    });
  }
  let damping = dampRatio * meanDiag;
  let u: Float32Array | null = null;
  for (let attempt = 0; u === null; attempt++) {
    try {
      u = upperCholeskyOfInverse(xtx!, n, perm, diag, damping);
    } catch (e) {
      if (!(e instanceof CholeskyError) || attempt >= maxDampingRetries) throw e;
      damping = damping > 0 ? damping * 10 : 1e-8 * meanDiag;
    }
  }
  const choleskySeconds = (performance.now() - tc) / 1000;

  // The CPU loop updates W in place: never the caller's storage.
  const w = prepared.w === original ? prepared.w.slice() : prepared.w; // [rows, n]
  const ctx: SolveContext = { rows, n, w, original, cleaned, perm, u };
  const compiled = compileDecider(ctx, decider);
  let bs = blockSize;
  if (
    (decider.kind === "prune" || decider.kind === "prune+grid") && decider.structure.kind === "nm"
  ) {
    const m = decider.structure.m;
    bs = Math.max(m, Math.floor(blockSize / m) * m);
  }

  let obsLoss = 0, loopSeconds = 0, updateSeconds = 0;
  const q = new Float32Array(rows), e = new Float64Array(rows);
  for (let i1 = 0; i1 < n; i1 += bs) {
    const i2 = Math.min(n, i1 + bs), width = i2 - i1;
    const tl = performance.now();
    // The block, transposed so that each column is contiguous: [width, rows].
    const block = new Float32Array(width * rows);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < width; i++) block[i * rows + r] = w[r * n + i1 + i]!;
    }
    const err = new Float32Array(rows * width); // [rows, width]
    compiled.decider.beginBlock(i1, i2, block);
    // Rows are independent inside a block (unless the decider needs whole
    // columns), so they go in chunks whose slice of the block stays in cache.
    const chunk = compiled.decider.wholeColumns ? rows : ROW_CHUNK;
    for (let r0 = 0; r0 < rows; r0 += chunk) {
      const r1 = Math.min(rows, r0 + chunk);
      for (let i = 0; i < width; i++) {
        const pos = i1 + i;
        compiled.decider.decide(pos, i1, block, r0, r1, q);
        const uRow = pos * n, ci = i * rows;
        const d = u[uRow + pos]!;
        for (let r = r0; r < r1; r++) {
          const ei = (block[ci + r]! - q[r]!) / d;
          obsLoss += ei * ei;
          e[r] = ei;
          err[r * width + i] = ei;
          block[ci + r] = q[r]!;
        }
        // W1[:, i+1:] −= e ⊗ U[pos, i+1:], four columns per pass over e.
        let j = i + 1;
        for (; j + 3 < width; j += 4) {
          const u0 = u[uRow + i1 + j]!, u1 = u[uRow + i1 + j + 1]!;
          const u2 = u[uRow + i1 + j + 2]!, u3 = u[uRow + i1 + j + 3]!;
          const o0 = j * rows, o1 = o0 + rows, o2 = o1 + rows, o3 = o2 + rows;
          for (let r = r0; r < r1; r++) {
            const er = e[r]!;
            block[o0 + r] = block[o0 + r]! - er * u0;
            block[o1 + r] = block[o1 + r]! - er * u1;
            block[o2 + r] = block[o2 + r]! - er * u2;
            block[o3 + r] = block[o3 + r]! - er * u3;
          }
        }
        for (; j < width; j++) {
          const uij = u[uRow + i1 + j]!, o = j * rows;
          for (let r = r0; r < r1; r++) block[o + r] = block[o + r]! - e[r]! * uij;
        }
      }
    }
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < width; i++) w[r * n + i1 + i] = block[i * rows + r]!;
    }
    const tu = performance.now();
    loopSeconds += (tu - tl) / 1000;
    // Lazy batch update W[:, i2:] −= Err·U[i1:i2, i2:] (float32 operands as
    // the reference, float64 accumulation).
    if (i2 < n) gemmSubInPlaceF32(w, err, u, rows, width, n - i2, i2, n, 0, width, i1 * n + i2, n);
    updateSeconds += (performance.now() - tu) / 1000;
    onProgress?.(i2, n);
  }

  // Back to the original column order.
  let out = w;
  if (permOrNull) {
    out = new Float32Array(rows * n);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < n; i++) out[r * n + perm[i]!] = w[r * n + i]!;
    }
  }
  const result: ObsResult = {
    weight: tensor("f32", [rows, n], out),
    stats: {
      obsLoss,
      damping,
      deadColumns,
      seconds: (performance.now() - t0) / 1000,
      choleskySeconds,
      loopSeconds,
      updateSeconds,
    },
  };
  if (permOrNull) result.perm = permOrNull;
  const unpermute = <A extends Uint8Array | Uint16Array>(src: A): A => {
    if (!permOrNull) return src;
    const dst = new (src.constructor as new (len: number) => A)(src.length);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < n; i++) dst[r * n + perm[i]!] = src[r * n + i]!;
    }
    return dst;
  };
  // A grid's codes, steps, zero points and column groups, in the original column order.
  const gridFields = (g: NonNullable<typeof compiled.grid> | NonNullable<typeof compiled.spqr>) => {
    result.codes = unpermute(g.codes);
    result.scales = g.scales;
    result.zeros = g.zeros;
    const gIdx = new Int32Array(n);
    for (let i = 0; i < n; i++) gIdx[perm[i]!] = g.gIdx[i]!;
    result.gIdx = gIdx;
  };
  if (compiled.grid) gridFields(compiled.grid);
  if (compiled.float) {
    const f = compiled.float;
    result.codes = unpermute(f.codes);
    result.scales = f.scales;
    if (f.scaleCodes) result.scaleCodes = f.scaleCodes;
    if (f.tensorScale !== undefined) result.tensorScale = f.tensorScale;
  }
  if (compiled.spqr) {
    const s = compiled.spqr;
    gridFields(s);
    result.outliers = unpermute(s.outliers);
    result.statistics = s.statistics;
  }
  if (compiled.prune) {
    const pruned = unpermute(compiled.prune.pruned);
    const count = countOnes(pruned);
    if (mask === "kept") setObsMasks(result, complementMask(pruned), true, count);
    else setObsMasks(result, pruned, false, count);
  }
  return result;
}
