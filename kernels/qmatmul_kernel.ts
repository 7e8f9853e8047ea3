/**
 * Low-bit matrix products y = x·Ŵᵀ for WebGPU, with Ŵ dequantized on the fly
 * from our "rowtile32" packed layout (`packed_layout.ts`): 2, 3, 4 and
 * 8-bit codes, per-group scales and zero points in f16 or f32 (or one common
 * zero point), any group layout (act-order weights arrive with contiguous
 * groups and a column map that gathers x), activations f32 or f16, f32
 * accumulation, y f32. An accumulating variant adds the product to y's
 * values (y += x·Ŵᵀ, into a residual stream) in its last pass.
 *
 * One kernel family (`qmatmul_wgsl.ts`, whose module docs describe the work
 * split and the dequantizations) covers every batch size: batch 1 is the
 * GEMV (up to 4 rows, the few-row default: many workgroups of 8–32 weight
 * rows whose teams split K, x read from global memory), larger batches are
 * split into tiles of up to 32 x rows (16 in the
 * defaults), each thread feeding every dequantized code to the FMAs of all
 * rows of its tile; where K is long and the rows few, K is also split over
 * workgroups whose partial sums a second pass adds (`splitK`). This
 * file holds the resident weights, the dispatcher (validation, the pipeline
 * cache, the split-K partials) and `qmatmul`; the default specialization per
 * shape and batch is in `qmatmul_default_spec.ts`, the CPU references in
 * `qmatmul_reference.ts`.
 *
 * Activations that are f16, or that need the column map (act-order,
 * padding), go through a small gather pass into an f32 scratch [M, Kp] first.
 *
 * Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { PACK_TILE, type PackedWeight } from "./packed_layout.ts";
import {
  type Backend,
  cachedPipeline,
  foldGroups,
  type Gpu,
  GpuBatch,
  resolveBackend,
  storageBuffer,
  type UniformField,
  uploadBuffer,
} from "./backend.ts";
import {
  type QmatmulGatherSpec,
  qmatmulGatherWgsl,
  qmatmulSplitReduceWgsl,
  qmatmulWgsl,
  qmatmulWorkgroupBytes,
} from "./qmatmul_wgsl.ts";
import type { QmatmulSpec } from "./qmatmul_spec.ts";
import {
  qmatmulDeviceLimits,
  qmatmulResolvedSpec,
  qmatmulSweptFewRowSpec,
  type QmatmulVariant,
} from "./qmatmul_default_spec.ts";
import { qmatmulReference } from "./qmatmul_reference.ts";
import { xShape } from "./_qmatmul_x_shape.ts";

/** A packed weight resident on the GPU (see {@linkcode uploadPackedWeight}). */
export interface GpuPackedWeight {
  /** The packed weight's description (its arrays are not read again). */
  readonly packed: PackedWeight;
  /** Code words. */
  readonly words: GPUBuffer;
  /** Scales (f16 pairs or f32). */
  readonly scales: GPUBuffer;
  /** Zero points, when stored per group. */
  readonly zeros: GPUBuffer | null;
  /** The column map, when not the identity. */
  readonly colIdx: GPUBuffer | null;
}

/**
 * Uploads a packed weight's arrays into GPU buffers.
 *
 * @param gpu The GPU.
 * @param packed The packed weight.
 * @returns The resident weight (destroy it with {@linkcode destroyPackedWeight}).
 */
export function uploadPackedWeight(gpu: Gpu, packed: PackedWeight): GpuPackedWeight {
  if (packed?.kind !== "packed" || packed.format !== "rowtile32") {
    throw new TypeError('Cannot upload weights: not a "rowtile32" packed weight');
  }
  return {
    packed,
    words: uploadBuffer(gpu, packed.words, "qmatmul-words"),
    scales: uploadBuffer(gpu, packed.scales, "qmatmul-scales"),
    zeros: packed.zeros ? uploadBuffer(gpu, packed.zeros, "qmatmul-zeros") : null,
    colIdx: packed.colIdx ? uploadBuffer(gpu, packed.colIdx, "qmatmul-colidx") : null,
  };
}

/**
 * Frees the buffers of a resident packed weight.
 *
 * @param w The resident weight.
 */
export function destroyPackedWeight(w: GpuPackedWeight): void {
  w.words.destroy();
  w.scales.destroy();
  w.zeros?.destroy();
  w.colIdx?.destroy();
}

/** Whether x must go through the gather pass (f16, or a column map). */
export function qmatmulNeedsGather(packed: PackedWeight, input: "f32" | "f16"): boolean {
  return input === "f16" || packed.colIdx !== null;
}

/** Operands of {@linkcode encodeQmatmul}. */
export interface QmatmulOperands {
  /** x, [M, K] row-major, f32 or f16 (f16 as 2-byte values). */
  readonly x: GPUBuffer;
  /** Storage type of x. */
  readonly input: "f32" | "f16";
  /** Rows of x. */
  readonly m: number;
  /** y, f32 [M, N]. */
  readonly y: GPUBuffer;
  /** Add the product to y's values (y += x·Ŵᵀ) instead of overwriting them. @default false */
  readonly accumulate?: boolean;
  /** f32 scratch of at least M·Kp values, needed when {@linkcode qmatmulNeedsGather}. */
  readonly scratch?: GPUBuffer;
  /**
   * f32 scratch of at least splitK·M·N values for the partial sums of a
   * split-K specialization (else a buffer cached per device is used).
   */
  readonly partials?: GPUBuffer;
  /**
   * SwiGLU epilogue (`QmatmulSpec.swiglu`): the weight's tiles alternate
   * gate and up rows, y is [M, N/2] = silu(gate)·up. The specialization
   * then owns two row tiles per thread and does not split K. @default false
   */
  readonly swiglu?: boolean;
  /**
   * RMSNorm prologue (`QmatmulSpec.norm`): each row of x is used as
   * x/sqrt(mean(x²) + eps)·weight (weight f32 [K]). Needs f32 x without a
   * column map, and a specialization that is not tiled.
   */
  readonly norm?: QmatmulNorm;
}

/** The RMSNorm a product applies to x first (see {@linkcode QmatmulOperands.norm}). */
export interface QmatmulNorm {
  /** Norm weight, f32 [K]. */
  readonly weight: GPUBuffer;
  /** Added to mean(x²) under the square root. */
  readonly eps: number;
}

const partialBuffers = new WeakMap<GPUDevice, GPUBuffer>();

/**
 * A partials buffer of at least `bytes` bytes, cached per device (grown,
 * never shrunk; a replaced buffer is left to the garbage collector, as
 * batches recorded before may still use it).
 */
function cachedPartials(gpu: Gpu, bytes: number): GPUBuffer {
  let b = partialBuffers.get(gpu.device);
  if (!b || b.size < bytes) {
    b = storageBuffer(gpu, Math.max(bytes, 2 * (b?.size ?? 0)), "qmatmul-partials");
    partialBuffers.set(gpu.device, b);
  }
  return b;
}

/**
 * Records y = x·Ŵᵀ (or y += x·Ŵᵀ with `accumulate`) into a batch (the gather
 * pass first when needed).
 *
 * @param batch The batch to record into.
 * @param w The resident packed weight.
 * @param ops x, y, the batch size and the scratch buffer.
 * @param variant Overrides of the default specialization ({@linkcode qmatmulResolvedSpec}).
 */
export function encodeQmatmul(
  batch: GpuBatch,
  w: GpuPackedWeight,
  ops: QmatmulOperands,
  variant: QmatmulVariant = {},
): void {
  const { packed } = w;
  const [N, K] = packed.shape;
  const { m, input } = ops;
  if (!Number.isInteger(m) || m < 1) {
    throw new RangeError(
      `Cannot encode qmatmul as 'm' must be a positive integer: current value is ${m}`,
    );
  }
  if (input !== "f32" && input !== "f16") {
    throw new RangeError(
      `Cannot encode qmatmul as 'input' must be "f32" or "f16": current value is ${String(input)}`,
    );
  }
  const Kp = packed.paddedCols;
  const xBytes = m * K * (input === "f16" ? 2 : 4);
  const swiglu = ops.swiglu === true;
  const yCols = swiglu ? N / 2 : N;
  if (ops.x.size < xBytes || ops.y.size < m * yCols * 4) {
    throw new RangeError(
      `Cannot encode qmatmul: x (${ops.x.size} bytes) or y (${ops.y.size} bytes) is smaller than [${m}, ${K}] ${input} or [${m}, ${yCols}] f32`,
    );
  }
  if (swiglu && (N % (2 * PACK_TILE) !== 0 || ops.accumulate)) {
    throw new RangeError(
      `Cannot encode a SwiGLU qmatmul over ${N} rows${
        ops.accumulate ? " accumulating" : ""
      }: gate and up tiles need a multiple of ${2 * PACK_TILE} rows, and no accumulation`,
    );
  }
  const gpu = batch.gpu;
  if (ops.norm) {
    if (!qmatmulTakesNorm(gpu, packed, m, input, swiglu, variant)) {
      throw new RangeError(
        "Cannot encode qmatmul with an RMSNorm prologue: it needs f32 x without a column map and a specialization that is not tiled and fits the workgroup memory",
      );
    }
    if (ops.norm.weight.size < K * 4) {
      throw new RangeError(
        `Cannot encode qmatmul: the norm weight (${ops.norm.weight.size} bytes) is smaller than [${K}] f32`,
      );
    }
  }
  const resolved = qmatmulProductSpec(gpu, packed, m, swiglu, ops.norm !== undefined, variant);
  const spec = ops.accumulate ? { ...resolved, accumulate: true } : resolved;
  let x = ops.x;
  if (qmatmulNeedsGather(packed, input)) {
    if (!ops.scratch || ops.scratch.size < m * Kp * 4) {
      throw new RangeError(
        `Cannot encode qmatmul: a scratch buffer of ${
          m * Kp * 4
        } bytes is needed (f16 input or a column map)`,
      );
    }
    const gspec: QmatmulGatherSpec = { input, gather: packed.colIdx !== null };
    const gather = cachedPipeline(
      gpu,
      `qmatmul-gather:${JSON.stringify(gspec)}`,
      () => qmatmulGatherWgsl(gspec),
    );
    const [gx, gy] = foldGroups(gpu, Math.ceil((m * Kp) / 256));
    const res: (GPUBuffer | GPUBufferBinding)[] = [ops.scratch, ops.x];
    if (w.colIdx) res.push(w.colIdx);
    res.push(batch.uniform([{ u32: m }, { u32: K }, { u32: Kp }, { u32: gx }]));
    batch.dispatch(gather, res, [gx, gy]);
    x = ops.scratch;
  }
  const sk = spec.splitK ?? 1;
  let partials: GPUBuffer | undefined;
  if (sk > 1) {
    const bytes = sk * m * N * 4;
    if (ops.partials && ops.partials.size < bytes) {
      throw new RangeError(
        `Cannot encode qmatmul: the partials buffer (${ops.partials.size} bytes) is smaller than the ${bytes} bytes of splitK ${sk}`,
      );
    }
    partials = ops.partials ?? cachedPartials(gpu, bytes);
  }
  const d = qmatmulDispatch(gpu, w, x, ops.y, m, spec, partials, ops.norm);
  batch.dispatch(d.pipeline, [...d.resources, batch.uniform(d.uniform)], d.groups);
  if (d.reduce) {
    const r = d.reduce;
    batch.dispatch(r.pipeline, [...r.resources, batch.uniform(r.uniform)], r.groups);
  }
}

/**
 * The specialization a product runs: the default (or variant), adapted to
 * SwiGLU and the norm. At one row, a norm prologue (without SwiGLU, where the
 * variant does not set `sharedX`) takes the swept batch-1 specialization
 * (`qmatmulSweptFewRowSpec` with the variant's fields over it): whole row
 * tiles, so fewer workgroups repeat the prologue, and x·w staged in
 * workgroup memory once per workgroup. Where that does not stage x or does
 * not fit, a few-row specialization that reads x from storage stages x·w
 * instead (`sharedX`), rather than load the norm weight beside x every step.
 * On an H100 at 1B shapes (`deno task bench:generate --no-kernels
 * --tokens=128,512 --runs=256x32`, GPU ms of a 4-bit decode step queued, 128
 * new tokens): the swept specialization on q/k/v 0.839 against 0.914 with
 * the staged few-row one (one call), which took 0.914 against 0.951 with
 * the norm weight loaded every step (an earlier call).
 *
 * @param gpu The GPU.
 * @param packed The packed weight.
 * @param m Rows of x.
 * @param swiglu The SwiGLU epilogue.
 * @param norm The RMSNorm prologue.
 * @param variant Overrides of the default specialization.
 * @returns The specialization.
 */
export function qmatmulProductSpec(
  gpu: Gpu,
  packed: PackedWeight,
  m: number,
  swiglu: boolean,
  norm: boolean,
  variant: QmatmulVariant,
): QmatmulSpec {
  let resolved = qmatmulResolvedSpec(gpu, packed, m, variant);
  if (swiglu) {
    resolved = qmatmulResolvedSpec(gpu, packed, m, {
      ...variant,
      rowTiles: resolved.rowTiles === 1 ? 2 : resolved.rowTiles,
      splitK: 1,
    });
    resolved = { ...resolved, swiglu: true };
  }
  if (!norm) return resolved;
  if (m === 1 && !swiglu && !resolved.tiled && variant.sharedX === undefined) {
    const fits = (s: QmatmulSpec) =>
      s.sharedX && qmatmulWorkgroupBytes(s) <= gpu.limits.maxComputeWorkgroupStorageSize;
    // The swept batch-1 specialization under the variant: whole row tiles, x·w staged.
    try {
      const swept: QmatmulSpec = {
        ...qmatmulResolvedSpec(gpu, packed, m, {
          ...qmatmulSweptFewRowSpec(packed, m, qmatmulDeviceLimits(gpu)),
          ...variant,
        }),
        norm: true,
      };
      if (fits(swept)) return swept;
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
    }
    if (!resolved.sharedX) {
      const staged: QmatmulSpec = {
        ...qmatmulResolvedSpec(gpu, packed, m, { ...variant, sharedX: true }),
        norm: true,
      };
      if (fits(staged)) return staged;
    }
  }
  return { ...resolved, norm: true };
}

/**
 * Whether a product of `m` rows can take an RMSNorm prologue
 * ({@linkcode QmatmulOperands.norm}): f32 x without a column map, a
 * specialization that is not tiled, and workgroup memory for the sums.
 *
 * @param gpu The GPU.
 * @param packed The packed weight.
 * @param m Rows of x.
 * @param input Storage of x.
 * @param swiglu The SwiGLU epilogue.
 * @param variant Overrides of the default specialization.
 * @returns Whether `encodeQmatmul` accepts `norm` for it.
 */
export function qmatmulTakesNorm(
  gpu: Gpu,
  packed: PackedWeight,
  m: number,
  input: "f32" | "f16" = "f32",
  swiglu = false,
  variant: QmatmulVariant = {},
): boolean {
  if (qmatmulNeedsGather(packed, input)) return false;
  const spec = qmatmulProductSpec(gpu, packed, m, swiglu, true, variant);
  return !spec.tiled &&
    qmatmulWorkgroupBytes(spec) <= gpu.limits.maxComputeWorkgroupStorageSize;
}

/** One dispatch of the product kernel: what {@linkcode encodeQmatmul} records. */
export interface QmatmulDispatch {
  /** The cached pipeline. */
  readonly pipeline: GPUComputePipeline;
  /** Bindings 0… in order, before the uniform block. */
  readonly resources: readonly GPUBuffer[];
  /** The uniform block (the last binding). */
  readonly uniform: readonly UniformField[];
  /** Workgroup counts. */
  readonly groups: readonly [number, number];
  /** The second pass of a split-K specialization (partials summed into y), to record after. */
  readonly reduce?: Omit<QmatmulDispatch, "reduce">;
}

/**
 * The product kernel's dispatch for f32 x already in packed column order (no
 * gather pass), for callers that bind and record it themselves (benchmarks).
 *
 * @param gpu The GPU.
 * @param w The resident packed weight.
 * @param x x, f32 [m, Kp].
 * @param y y, f32 [m, N].
 * @param m Rows of x.
 * @param spec The specialization ({@linkcode qmatmulResolvedSpec}).
 * @param partials f32 scratch of splitK·m·N values, needed when `spec.splitK` > 1.
 * @param norm The norm weight and epsilon, needed when `spec.norm`.
 * @returns Pipeline, bindings, uniform block and workgroup counts (and the second pass).
 */
export function qmatmulDispatch(
  gpu: Gpu,
  w: GpuPackedWeight,
  x: GPUBuffer,
  y: GPUBuffer,
  m: number,
  spec: QmatmulSpec,
  partials?: GPUBuffer,
  norm?: QmatmulNorm,
): QmatmulDispatch {
  const { packed } = w;
  const sk = spec.splitK ?? 1;
  if (sk > 1 && !partials) {
    throw new TypeError("Cannot encode qmatmul: splitK > 1 needs a partials buffer");
  }
  const pipeline = cachedPipeline(gpu, `qmatmul:${JSON.stringify(spec)}`, () => qmatmulWgsl(spec));
  const resources = [sk > 1 ? partials! : y, x, w.words, w.scales];
  if (spec.zeros) {
    if (!w.zeros) {
      throw new TypeError(
        "Cannot encode qmatmul: the specialization reads zero points the weight lacks",
      );
    }
    resources.push(w.zeros);
  }
  if (spec.norm) {
    if (!norm) throw new TypeError("Cannot encode qmatmul: a norm specialization needs its weight");
    resources.push(norm.weight);
  }
  return {
    pipeline,
    resources,
    uniform: [
      { u32: m },
      { u32: packed.shape[0] },
      { u32: packed.paddedRows },
      { f32: packed.zero },
      ...(spec.norm ? [{ f32: norm!.eps }] : []),
    ],
    groups: [
      Math.ceil(packed.paddedRows / PACK_TILE / spec.rowTiles) * spec.split,
      Math.ceil(m / spec.batch) * sk,
    ],
    ...(sk > 1
      ? {
        reduce: splitReduceDispatch(gpu, y, partials!, m * packed.shape[0], sk, !!spec.accumulate),
      }
      : {}),
  };
}

/** The second pass of a split-K product: y (+)= Σ over the slices of the partials, in order. */
function splitReduceDispatch(
  gpu: Gpu,
  y: GPUBuffer,
  partials: GPUBuffer,
  count: number,
  splitK: number,
  accumulate: boolean,
): Omit<QmatmulDispatch, "reduce"> {
  const pipeline = cachedPipeline(
    gpu,
    `qmatmul-split-reduce:${splitK}:${accumulate}`,
    () => qmatmulSplitReduceWgsl(splitK, accumulate),
  );
  const [gx, gy] = foldGroups(gpu, Math.ceil(count / 256));
  return {
    pipeline,
    resources: [y, partials],
    uniform: [{ u32: count }, { u32: gx }],
    groups: [gx, gy],
  };
}

/** Options of {@linkcode qmatmul}. */
export interface QmatmulOptions {
  /** Where to run ("auto": WebGPU on a hardware adapter, else the CPU reference). @default "auto" */
  backend?: Backend;
  /** Overrides of the kernel specialization (tuning). @default {} */
  variant?: QmatmulVariant;
  /**
   * y0, f32 [M, N]: the product is added to it, y = y0 + x·Ŵᵀ (the
   * kernel's accumulating variant; y0 itself is not modified).
   * @default none (y = x·Ŵᵀ)
   */
  addend?: Tensor<"f32">;
}

/**
 * y = x·Ŵᵀ (or y0 + x·Ŵᵀ with an `addend`) for a packed low-bit weight,
 * dequantized on the fly.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { qmatmul } from "./qmatmul_kernel.ts";
 * import { packWeights } from "../quantizers/pack.ts";
 * import { rtn } from "../quantizers/rtn.ts";
 * import { tensor } from "../core/tensor.ts";
 * const w = tensor("f32", [3, 64], new Float32Array(192).map((_, i) => Math.cos(i)));
 * const packed = packWeights(await rtn(w, { bits: 4, groupSize: 32 }));
 * const x = tensor("f32", [2, 64], new Float32Array(128).fill(1));
 * const y = await qmatmul(x, packed, { backend: "cpu" });
 * assert(y.shape.join() === "2,3");
 * ```
 * @param x Activations, f32 or f16 [M, K] (or [K]).
 * @param packed The packed weight (or one already resident on the GPU, which the WebGPU path uses as is).
 * @param options Backend, kernel variant and addend.
 * @returns y, f32 [M, N].
 * @throws {RangeError} for x whose width is not K, or an addend that is not f32 [M, N].
 */
export async function qmatmul(
  x: Tensor<"f32"> | Tensor<"f16">,
  packed: PackedWeight | GpuPackedWeight,
  options: QmatmulOptions = {},
): Promise<Tensor<"f32">> {
  const { backend = "auto", variant = {}, addend } = options;
  const resident = "words" in packed && "packed" in packed ? packed : null;
  const p = resident ? resident.packed : packed as PackedWeight;
  if (p?.kind !== "packed" || p.format !== "rowtile32") {
    throw new TypeError("Cannot multiply as 'packed' is not a \"rowtile32\" packed weight");
  }
  const [N, K] = p.shape;
  const m = xShape(x, K);
  if (addend !== undefined && (addend?.dtype !== "f32" || addend.data.length !== m * N)) {
    throw new RangeError(
      `Cannot multiply as 'addend' must be f32 [${m}, ${N}]: current value is ${
        String(addend?.dtype)
      } [${addend?.shape}]`,
    );
  }
  const gpu = await resolveBackend(backend, "qmatmul");
  if (gpu === null) return qmatmulReference(x, p, addend);
  const w = resident ?? uploadPackedWeight(gpu, p);
  const input = x.dtype;
  const xb = uploadBuffer(gpu, x.data, "qmatmul-x");
  const y = addend
    ? uploadBuffer(gpu, addend.data, "qmatmul-y")
    : storageBuffer(gpu, m * N * 4, "qmatmul-y");
  const scratch = qmatmulNeedsGather(p, input)
    ? storageBuffer(gpu, m * p.paddedCols * 4, "qmatmul-xp")
    : undefined;
  try {
    const batch = new GpuBatch(gpu);
    encodeQmatmul(
      batch,
      w,
      { x: xb, input, m, y, accumulate: addend !== undefined, ...(scratch ? { scratch } : {}) },
      variant,
    );
    const { data } = await batch.submit([y]);
    return { dtype: "f32", shape: [m, N], data: new Float32Array(data[0]!) };
  } finally {
    xb.destroy();
    y.destroy();
    scratch?.destroy();
    if (!resident) destroyPackedWeight(w);
  }
}
