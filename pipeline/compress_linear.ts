/**
 * Runs a recipe's stages on one linear layer: rotate → prune → quantize → a
 * low-rank correction (EoRA or SVD), each stage calling the library's
 * compressor, and accounts the storage the result needs in bits per weight.
 * Web-standard only.
 *
 * @module
 */

import { tensor } from "../core/tensor.ts";
import type { Tensor } from "../core/tensor.ts";
import { randomHadamard, rotateWeight, unrotateWeight } from "../core/rotation.ts";
import type { Rotation } from "../core/rotation.ts";
import type { Hessian } from "../hessian/hessian.ts";
import { type DeviceHessian, hostHessian } from "../hessian/device_hessian.ts";
import { evaluateLayerError } from "../hessian/layer_error.ts";
import { magnitudePrune } from "../pruners/magnitude.ts";
import type { PruneResult } from "../pruners/prune_result.ts";
import type { SparsityStructure } from "../pruners/structure.ts";
import { wanda } from "../pruners/wanda.ts";
import { sparsegpt } from "../pruners/sparsegpt.ts";
import { hadamardConstruction } from "../core/hadamard.ts";
import { dequantizeHiggs, higgs } from "../quantizers/higgs.ts";
import type { HiggsWeight } from "../quantizers/higgs.ts";
import { dequantizeNf4, nf4 } from "../quantizers/nf4.ts";
import type { Nf4Weight } from "../quantizers/nf4.ts";
import { aqlm, dequantizeAqlm } from "../quantizers/aqlm.ts";
import type { AqlmWeight } from "../quantizers/aqlm.ts";
import { dequantize, dequantizeLazily } from "../quantizers/dequantize.ts";
import { gptq } from "../quantizers/gptq.ts";
import { rtn } from "../quantizers/rtn.ts";
import type { QuantizedWeight } from "../quantizers/quantized_weight.ts";
import { mxQuantize, type MxWeight } from "../quantizers/mx.ts";
import { fp8Quantize, type Fp8Weight } from "../quantizers/fp8_quantize.ts";
import { MX_LAYOUTS } from "../core/scaled_float.ts";
import { spqr } from "../quantizers/spqr.ts";
import type { SpqrWeight } from "../quantizers/spqr_weight.ts";
import { eora } from "../quantizers/eora.ts";
import { lowRankSvd } from "../quantizers/low_rank_svd.ts";
import { addLowRank, type LowRankFactors } from "../quantizers/low_rank_factors.ts";
import { isLowRankStage, type Stage, weightStages } from "./recipe.ts";
import { gptqOutliers, largestInputColumns } from "../quantizers/gptq_outliers.ts";
import type { Backend } from "../kernels/backend.ts";
import { attachDeviceCopy, type DeviceWeight } from "../kernels/device_copies.ts";

/** A compressed linear layer: its dense stand-in, storage cost and records. */
export interface CompressedLinear {
  /** Module name. */
  readonly name: string;
  /**
   * The dense weight the compressed form stands for, [out, in], in the
   * original basis; with a low-rank stage, Ŵ + B·A (dense even where a
   * pruner's `mask` is 0).
   */
  readonly weight: Tensor<"f32">;
  /**
   * Storage in bits per weight: values (codes or float32), grid scales (f16) and
   * zero points, sparsity metadata (bitmask, or the N:M index per kept weight),
   * codebooks, SpQR's second-level statistics, outliers and order, and a low-rank
   * correction's factors (`lowRank.bitsPerWeight`).
   * 32 for an uncompressed float32 layer.
   */
  readonly bitsPerWeight: number;
  /** Fraction of the weights of Ŵ kept (1 when not pruned; a low-rank correction is not counted). */
  readonly density: number;
  /** The stage kinds applied, in order. */
  readonly stages: readonly string[];
  /**
   * Relative output error ‖(W − Ŵ)X‖² / ‖WX‖² on the calibration inputs (0
   * uncompressed; NaN when no Hessian was given).
   */
  readonly layerError: number;
  /** Seconds spent in the stages. */
  readonly seconds: number;
  /** The quantized form, when a quantizer ran (in the rotated basis after `rotate`). */
  readonly quantized?:
    | QuantizedWeight
    | AqlmWeight
    | HiggsWeight
    | Nf4Weight
    | MxWeight
    | Fp8Weight
    | SpqrWeight;
  /** Keep-mask [out, in] (1 kept) of Ŵ, when a pruner ran. */
  readonly mask?: Uint8Array;
  /** The input columns a GPTQ stage with `outliers` (QUIK) kept on its wider grid, ascending. */
  readonly outlierColumns?: Int32Array;
  /**
   * The correction B [out, r], A [r, in] of an `eora` or `svd` stage, in the
   * original basis: `weight` = Ŵ + B·A, with Ŵ what the other stages made.
   */
  readonly lowRank?: LowRankFactors;
}

/** Options of {@linkcode compressLinear}. */
export interface CompressLinearOptions {
  /** Module name (recorded; mixed into rotation seeds). @default "linear" */
  name?: string;
  /**
   * Where GPTQ, SparseGPT and the layer error run ("auto": WebGPU on a
   * hardware adapter, else the CPU).
   * @default "auto"
   */
  backend?: Backend;
  /**
   * Leave the compressed weight on the GPU where a lone GPTQ or SparseGPT
   * stage solved it there (in the original column order): it is registered
   * as an owned device copy of `result.weight.data`
   * (`kernels/device_copies.ts`), for calibration passes on the same device
   * to copy instead of uploading it. Whoever is done with it releases it
   * (`releaseDeviceCopy`); a consumer may take it. A GPTQ or RTN weight is
   * then dequantized on the host only when `result.weight.data` is first
   * read (`dequantizeLazily`).
   * @default false
   */
  deviceWeight?: boolean;
}

/**
 * Storage bits per weight of a scaled floating-point weight's scales: 8 per
 * MX block (E8M0 or E4M3), 32 for the NVFP4 tensor scale, 32 per FP8 scale.
 */
function floatOverhead(q: MxWeight | Fp8Weight): number {
  const [rows, cols] = q.shape;
  if (q.kind === "fp8") return (32 * q.scales.length) / (rows * cols);
  const tensorBits = MX_LAYOUTS[q.format].tensorScale ? 32 : 0;
  return (8 * q.scales.length + tensorBits) / (rows * cols);
}

/** Storage bits per weight of a uniform grid's scales (f16) and zero points. */
function gridOverhead(q: QuantizedWeight): number {
  const [rows, cols] = q.shape;
  const groups = q.scales.length / rows;
  const perGroup = 16 + (q.symmetric ? 0 : q.bits);
  const gIdx = q.perm && q.groupSize > 0 ? 32 / rows : 0; // act-order with groups stores g_idx
  return (groups * perGroup) / cols + gIdx;
}

function maskBits(structure: SparsityStructure | "mask"): number {
  if (structure !== "mask" && structure.kind === "nm") {
    return (structure.n * Math.ceil(Math.log2(structure.m))) / structure.m;
  }
  return 1; // a bitmask
}

function hashName(name: string, seed: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

function rotateHessian(h: Hessian, rot: Rotation): Hessian {
  const n = h.cols;
  const a = rot.applyToRows(tensor("f64", [n, n], h.xtx), { transpose: true }); // H·Q
  const b = rot.applyToColumns(a, { transpose: true }); // Qᵀ·H·Q
  const xtx = Float64Array.from(b.data as ArrayLike<number>);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const m = 0.5 * (xtx[i * n + j]! + xtx[j * n + i]!);
      xtx[i * n + j] = m;
      xtx[j * n + i] = m;
    }
  }
  return { cols: n, count: h.count, xtx };
}

function asF32(t: Tensor): Tensor<"f32"> {
  if (t.dtype === "f32") return t as Tensor<"f32">;
  return tensor("f32", t.shape, Float32Array.from(t.data as ArrayLike<number>));
}

/**
 * Whether a stage reads the Hessian (calibration inputs) of its layer.
 *
 * @param stage The stage.
 * @returns True for GPTQ (on a grid or a float format), SpQR, SparseGPT, Wanda, AQLM and EoRA.
 */
export function stageNeedsHessian(stage: Stage): boolean {
  return stage.kind === "gptq" || stage.kind === "sparsegpt" || stage.kind === "wanda" ||
    stage.kind === "aqlm" || stage.kind === "eora" || stage.kind === "spqr" ||
    ((stage.kind === "mx" || stage.kind === "fp8") && stage.method === "gptq");
}

/**
 * The HIGGS group size for a width: the largest constructible Hadamard order
 * of at most 128 that divides it.
 *
 * @param cols Input columns.
 * @returns The group size (at least 2 for even widths).
 */
export function higgsGroupSize(cols: number): number {
  for (let g = Math.min(128, cols); g >= 2; g--) {
    if (cols % g === 0 && hadamardConstruction(g) !== null) return g;
  }
  throw new RangeError(`No Hadamard order divides ${cols} columns: HIGGS needs an even width`);
}

/**
 * Compresses one linear layer by running stages in order. Pruning records a
 * mask that later quantizers keep (pruned weights stay exactly 0); a
 * `rotate` stage makes later stages work on W·Q and QᵀHQ, and the dense
 * result is rotated back. A last `eora` or `svd` stage then fits a rank-r
 * correction B·A of that result Ŵ against the original W (with `hessian`, in
 * the original basis): the dense stand-in becomes Ŵ + B·A, its layer error is
 * measured on that, and its bits per weight add the factors'.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { compressLinear } from "./compress_linear.ts";
 * import { hessian } from "../hessian/hessian.ts";
 * import { tensor } from "../core/tensor.ts";
 * const x = tensor("f32", [32, 8], Float32Array.from({ length: 256 }, (_, i) => Math.sin(i)));
 * const w = tensor("f32", [4, 8], Float32Array.from({ length: 32 }, (_, i) => Math.cos(i)));
 * const c = await compressLinear(w, hessian(x), [{ kind: "gptq", bits: 4 }]);
 * assert(c.bitsPerWeight > 4 && c.layerError < 0.05);
 * ```
 * @param weight W [out, in] (not modified).
 * @param hessian H over the layer's inputs [in, in] (mean of x·xᵀ), on the host
 *   or on a device (GPTQ, SparseGPT, Wanda and the layer error read it there;
 *   a rotation or AQLM reads it back), or null when no stage needs one (see
 *   {@linkcode stageNeedsHessian}).
 * @param stages The stages, in order (an empty list keeps the layer as it is).
 * @param options The module name.
 * @returns The compressed layer.
 */
export async function compressLinear(
  weight: Tensor<"f32">,
  hessian: Hessian | DeviceHessian | null,
  allStages: readonly Stage[],
  options: CompressLinearOptions = {},
): Promise<CompressedLinear> {
  // An activation stage describes the input, not the weight (the model applies it).
  const stages = weightStages(allStages);
  const { name = "linear", backend = "auto", deviceWeight = false } = options;
  if (typeof deviceWeight !== "boolean") {
    throw new TypeError(
      `Cannot compress ${name} as 'deviceWeight' must be a boolean: current value is ${deviceWeight}`,
    );
  }
  if (!hessian && stages.some(stageNeedsHessian)) {
    throw new TypeError(
      `Cannot compress ${name}: its stages (${stages.map((s) => s.kind)}) need a Hessian`,
    );
  }
  const t0 = performance.now();
  const [rows, cols] = [weight.shape[0]!, weight.shape[1]!];
  let w: Tensor<"f32"> = weight;
  // Null only when no stage reads it (checked above).
  let h: Hessian | DeviceHessian | null = hessian;
  const needH = (): Hessian | DeviceHessian => h!;
  let rotation: Rotation | undefined;
  let mask: Uint8Array | undefined;
  let maskStructure: SparsityStructure | "mask" = "mask";
  let quantized: CompressedLinear["quantized"];
  let valueBits = 32, overhead = 0;
  let lowRank: LowRankFactors | undefined;
  let outlierColumns: Int32Array | undefined;
  const applied: string[] = [];
  // A lone solver stage's result is the final weight: its GPU solve can
  // measure the layer error in its own submission (with a device Hessian).
  const single = stages.length === 1;
  let measured: number | undefined;
  // The solver's Ŵ on the GPU (a lone solver stage: the final weight).
  let onDevice: DeviceWeight | null = null;
  const keepOnDevice = deviceWeight && single
    ? { onDeviceWeight: (d: DeviceWeight) => void (onDevice = d) }
    : {};

  const keepMask = (t: Tensor<"f32">): Tensor<"f32"> => {
    if (!mask) return t;
    const out = Float32Array.from(t.data);
    for (let i = 0; i < out.length; i++) if (mask[i] === 0) out[i] = 0;
    return tensor("f32", [rows, cols], out);
  };
  const pruned = (r: PruneResult, structure: SparsityStructure): void => {
    const m = r.mask.data as Uint8Array;
    mask = mask ? mask.map((v, i) => v & m[i]!) : Uint8Array.from(m);
    maskStructure = structure;
    w = r.weight;
  };

  for (const [at, stage] of stages.entries()) {
    applied.push(stage.kind);
    if (isLowRankStage(stage)) {
      if (at !== stages.length - 1 || !stages.slice(0, at).some((e) => e.kind !== "rotate")) {
        throw new RangeError(
          `Cannot compress ${name}: '${stage.kind}' corrects a compressed weight, so it must be ` +
            `the last stage and follow a pruner or quantizer (stages: ${
              stages.map((e) => e.kind)
            })`,
        );
      }
      continue; // after the rotation is undone, below
    }
    switch (stage.kind) {
      case "rotate": {
        if (rotation) throw new RangeError(`Cannot compress ${name}: two rotate stages`);
        rotation = randomHadamard(cols, {
          seed: hashName(name, stage.seed ?? 0),
          fallback: stage.fallback ?? "kronecker",
        });
        w = asF32(rotateWeight(w, rotation));
        if (h) h = rotateHessian(await hostHessian(h), rotation);
        break;
      }
      case "magnitude":
        pruned(await magnitudePrune(w, { structure: stage.structure }), stage.structure);
        break;
      case "wanda":
        pruned(await wanda(w, needH(), { structure: stage.structure }), stage.structure);
        break;
      case "sparsegpt": {
        const res = await sparsegpt(w, needH(), {
          structure: stage.structure,
          backend,
          measureError: single,
          ...keepOnDevice,
          ...(stage.grid ? { quantize: stage.grid } : {}),
          ...(stage.dampRatio !== undefined ? { dampRatio: stage.dampRatio } : {}),
          ...(stage.blockSize !== undefined ? { blockSize: stage.blockSize } : {}),
        });
        pruned(res, stage.structure);
        measured = res.stats.layerError;
        if (res.quantized) {
          quantized = res.quantized;
          valueBits = res.quantized.bits;
          overhead = gridOverhead(res.quantized);
        }
        break;
      }
      case "higgs": {
        const groupSize = stage.groupSize ?? higgsGroupSize(cols);
        const q = await higgs(w, {
          bits: stage.bits,
          groupSize,
          ...(stage.p !== undefined ? { p: stage.p } : {}),
          seed: hashName(name, stage.seed ?? 0),
        });
        quantized = q;
        w = keepMask(dequantizeHiggs(q));
        valueBits = q.bits;
        overhead = q.bitsPerWeight - q.bits;
        break;
      }
      case "nf4": {
        const q = await nf4(w, stage.blockSize !== undefined ? { blockSize: stage.blockSize } : {});
        quantized = q;
        w = keepMask(dequantizeNf4(q));
        valueBits = 4;
        overhead = q.bitsPerWeight - 4;
        break;
      }
      case "gptq":
        if (stage.outliers !== undefined) {
          const { bits, symmetric, dampRatio, blockSize, outliers } = stage;
          if (stage.groupSize !== undefined || stage.actOrder || stage.mse || stage.staticGroups) {
            throw new TypeError(
              `Cannot compress ${name} as GPTQ with 'outliers' takes per-channel grids only ` +
                `(no 'groupSize', 'actOrder', 'mse' or 'staticGroups')`,
            );
          }
          const host = await hostHessian(needH());
          const q = await gptqOutliers(w, host, {
            bits,
            columns: largestInputColumns(host, Math.min(outliers.count, cols)),
            ...(outliers.bits !== undefined ? { outlierBits: outliers.bits } : {}),
            ...(symmetric !== undefined ? { symmetric } : {}),
            ...(dampRatio !== undefined ? { dampRatio } : {}),
            ...(blockSize !== undefined ? { blockSize } : {}),
          });
          w = keepMask(q.weight);
          outlierColumns = q.columns;
          valueBits = q.bitsPerWeight;
          overhead = 0;
          break;
        }
      // falls through
      case "rtn": {
        const { kind: _k, ...opts } = stage;
        const q = stage.kind === "rtn"
          ? await rtn(w, opts)
          : await gptq(w, needH(), { ...opts, backend, measureError: single, ...keepOnDevice });
        quantized = q;
        // Ŵ that stays on the GPU is dequantized on the host only if someone reads it.
        w = deviceWeight && !mask ? dequantizeLazily(q) : keepMask(dequantize(q));
        measured = (q.stats as { layerError?: number } | undefined)?.layerError;
        valueBits = q.bits;
        overhead = gridOverhead(q);
        break;
      }
      case "mx":
      case "fp8": {
        const { method = "rtn", actOrder, dampRatio, blockSize } = stage;
        if (method !== "rtn" && method !== "gptq") {
          throw new TypeError(
            `Cannot compress ${name} as 'method' must be "rtn" or "gptq": current value is ${
              String(method)
            }`,
          );
        }
        const format = stage.kind === "mx" ? stage.format : "fp8";
        const granularity = stage.kind === "fp8" ? stage.granularity ?? "channel" : undefined;
        let q: MxWeight | Fp8Weight;
        if (method === "rtn") {
          if (actOrder !== undefined || dampRatio !== undefined || blockSize !== undefined) {
            throw new TypeError(
              `Cannot compress ${name} as 'actOrder', 'dampRatio' and 'blockSize' need method "gptq"`,
            );
          }
          q = stage.kind === "mx"
            ? await mxQuantize(w, { format: stage.format })
            : await fp8Quantize(w, { granularity: granularity! });
        } else {
          // GPTQ over these grids runs on the CPU only: "auto" picks it, "webgpu" throws.
          q = await gptq(w, needH(), {
            format,
            backend,
            ...(granularity !== undefined ? { granularity } : {}),
            ...(stage.kind === "mx" && stage.staticGroups !== undefined
              ? { staticGroups: stage.staticGroups }
              : {}),
            ...(actOrder !== undefined ? { actOrder } : {}),
            ...(dampRatio !== undefined ? { dampRatio } : {}),
            ...(blockSize !== undefined ? { blockSize } : {}),
          });
        }
        quantized = q;
        w = keepMask(dequantize(q));
        valueBits = q.kind === "mx" ? 4 : 8;
        overhead = floatOverhead(q);
        break;
      }
      case "spqr": {
        const { kind: _k, ...opts } = stage;
        const q = await spqr(w, needH(), { ...opts, backend });
        quantized = q;
        w = keepMask(dequantize(q));
        valueBits = q.bits;
        overhead = q.stats.bitsPerWeight - q.bits; // statistics, outliers, order
        break;
      }
      case "aqlm": {
        const { kind: _k, ...opts } = stage;
        const q = await aqlm(w, await hostHessian(needH()), opts);
        quantized = q;
        w = keepMask(tensor("f32", [rows, cols], dequantizeAqlm(q)));
        valueBits = q.bitsPerWeight.codes;
        overhead = q.bitsPerWeight.total - q.bitsPerWeight.codes;
        break;
      }
      default:
        throw new TypeError(
          `Cannot compress ${name}: unknown stage kind ${
            String((stage as { kind?: unknown }).kind)
          }`,
        );
    }
  }
  if (rotation) w = asF32(unrotateWeight(w, rotation));
  const last = stages[stages.length - 1];
  if (last && isLowRankStage(last)) {
    const { rank, quantize } = last;
    const options = { rank, ...(quantize !== undefined ? { quantize } : {}) };
    lowRank = last.kind === "eora"
      ? await eora(weight, w, hessian!, { // the original basis: not a rotated `h`
        ...options,
        ...(last.eigenFloor !== undefined ? { eigenFloor: last.eigenFloor } : {}),
      })
      : await lowRankSvd(weight, w, options);
    w = addLowRank(w, lowRank);
    measured = undefined; // the solver measured Ŵ, not Ŵ + B·A
  }
  if (onDevice !== null) {
    const { gpu, buffer } = onDevice as DeviceWeight;
    attachDeviceCopy(w, { gpu, buffer, offset: 0, owned: true });
  }
  let kept = rows * cols;
  if (mask) {
    kept = 0;
    for (let i = 0; i < mask.length; i++) kept += mask[i]!;
  }
  const density = kept / (rows * cols);
  // Only uniform-grid codes and float values shrink with sparsity (zeros need no code).
  const values = quantized && quantized.kind !== "uniform" ? valueBits : density * valueBits;
  const bitsPerWeight = values + overhead + (mask ? maskBits(maskStructure) : 0) +
    (lowRank?.bitsPerWeight ?? 0);
  const err = stages.length === 0
    ? 0
    : measured !== undefined
    ? measured
    : hessian
    ? await evaluateLayerError(weight, w, hessian, { backend })
    : NaN;
  return {
    name,
    weight: w,
    bitsPerWeight,
    density,
    stages: applied,
    layerError: err,
    seconds: (performance.now() - t0) / 1000,
    ...(quantized ? { quantized } : {}),
    ...(mask ? { mask } : {}),
    ...(lowRank ? { lowRank } : {}),
    ...(outlierColumns ? { outlierColumns } : {}),
  };
}
