/**
 * Low-bit matrix products y = x·Ŵᵀ for WebGPU, with Ŵ dequantized on the fly
 * from our "rowtile32" packed layout (`quantizers/pack.ts`): 2, 3, 4 and
 * 8-bit codes, per-group scales and zero points in f16 or f32 (or one common
 * zero point), any group layout (act-order weights arrive with contiguous
 * groups and a column map that gathers x), activations f32 or f16, f32
 * accumulation, y f32.
 *
 * One kernel family (`qmatmul_wgsl.ts`, whose module docs describe the work
 * split and the dequantizations) covers every batch size: batch 1 is the
 * GEMV, larger batches are split into tiles of up to 32 x rows (16 in the
 * defaults), each thread feeding every dequantized code to the FMAs of all
 * rows of its tile; where K is long and the rows few, K is also split over
 * workgroups whose partial sums a second pass adds (`splitK`). This
 * file holds the dispatcher (validation, the default specialization per shape
 * and batch, the pipeline cache) and the CPU references.
 *
 * Activations that are f16, or that need the column map (act-order,
 * padding), go through a small gather pass into an f32 scratch [M, Kp] first.
 *
 * Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { PACK_TILE, packedChunkOffset, type PackedWeight } from "../quantizers/pack.ts";
import type { QuantizedWeight } from "../quantizers/quantized_weight.ts";
import { dequantize } from "../quantizers/dequantize.ts";
import { unpackBits } from "../quantizers/bitpack.ts";
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
  checkQmatmulSpec,
  type QmatmulGatherSpec,
  qmatmulGatherWgsl,
  qmatmulInvocations,
  type QmatmulSpec,
  qmatmulSplitReduceWgsl,
  qmatmulWgsl,
  qmatmulWorkgroupBytes,
} from "./qmatmul_wgsl.ts";

export {
  checkQmatmulSpec,
  type QmatmulGatherSpec,
  qmatmulGatherWgsl,
  qmatmulInvocations,
  type QmatmulSpec,
  qmatmulSplitReduceWgsl,
  qmatmulWgsl,
  qmatmulWorkgroupBytes,
};

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

/** Tuning knobs: the fields of {@linkcode QmatmulSpec} that do not follow from the weight. */
export type QmatmulVariant = Partial<
  Pick<
    QmatmulSpec,
    | "rowTiles"
    | "warps"
    | "split"
    | "batch"
    | "unroll"
    | "prefetch"
    | "sharedX"
    | "batchedStage"
    | "dequant"
    | "reduce"
    | "codesFirst"
    | "tiled"
    | "microRows"
    | "microBatch"
    | "splitK"
  >
>;

const exactZeros = new WeakMap<PackedWeight, boolean>();

/**
 * Whether a packed weight's zero points allow the "exact" dequantization
 * (integers z with |z| ≤ 2^bits, as GPTQ's and the symmetric grids' are).
 * Cached per weight.
 *
 * @param packed The packed weight.
 * @returns Whether every zero point qualifies.
 */
export function qmatmulExactZeros(packed: PackedWeight): boolean {
  let ok = exactZeros.get(packed);
  if (ok === undefined) {
    const limit = 2 ** packed.bits;
    const fits = (z: number) => Number.isInteger(z) && Math.abs(z) <= limit;
    ok = packed.zeros ? packed.zeros.every(fits) : fits(packed.zero);
    exactZeros.set(packed, ok);
  }
  return ok;
}

/** The largest of 4, 2, 1 that is at most `unroll` and divides `groupChunks`. */
function fitUnroll(unroll: number, groupChunks: number): number {
  let u = 4;
  while (u > 1 && (u > unroll || groupChunks % u !== 0)) u /= 2;
  return u;
}

/** Device limits {@linkcode qmatmulSpec} keeps to (the WebGPU defaults unless given). */
export interface QmatmulLimits {
  /** Workgroup memory, bytes. @default 16384 */
  readonly workgroupBytes?: number;
  /** Invocations per workgroup. @default 256 */
  readonly invocations?: number;
}

/** The power of two nearest to v (in log scale), at least 1. */
function nearestPow2(v: number): number {
  return 2 ** Math.max(0, Math.round(Math.log2(Math.max(1, v))));
}

/**
 * The default specialization for a packed weight and a batch size, from the
 * H100 sweep of tests/bench/qmatmul_sweep.ts (every variant timed in
 * alternation with the previous kernel, fastest of many short passes).
 *
 * - Batch 1–2 (GEMV): "exact" dequantization (where the zero points allow
 *   it), steps of 4 chunks without prefetch, x staged in workgroup memory
 *   (not for 2 and 8 bits, where global broadcast loads were as fast), two
 *   row tiles per thread from 512 tiles (N ≥ 16384) on, and teams so that
 *   about 4096 run (nearest power of two): 32 for N = 4096. At batch 1 with
 *   one row tile at 4 bits, and up to 128 tiles (N ≤ 4096) at 8 bits: x
 *   staged with all loads issued first (`batchedStage`) and at most 16
 *   teams (sweep --gemv, same run: 4096×4096 −6%, 11008×4096 −4%,
 *   4096×11008 −3%, 8-bit 4096×4096 −6% GPU time against the previous
 *   default).
 * - Then the "half" dequantization (x staged, loads first) replaces it at
 *   4 bits for batch 1, and for batch 2 from 512 tiles on, with prefetch
 *   except at batch 1 with two row tiles; and at 2 bits for batch 1 (sweep
 *   --confirm, each entry timed three times, same run: 4096×4096 −8%,
 *   11008×4096 −7%, 4096×11008 −13%, 16384×4096 −10%, 2-bit −6%, batch 2
 *   16384×4096 −12% GPU time; 8 bits and batch 2 on 4096×4096 were slower
 *   with it). Where the staged x does not fit the workgroup memory, the
 *   default falls back to "exact" or "fma" with x read from global memory.
 * - Batch 3–4: from 344 tiles (N ≥ 11008) on two row tiles, 8 teams, steps
 *   of 2 with prefetch; below, one row tile, 32 teams, steps of 2.
 * - Batch 5–8: one x tile; 4 row tiles and 16 teams from 512 tiles on, else
 *   one row tile and 16 teams; single-chunk steps.
 * - Batch 9–16: from 512 tiles on one x tile of 16 rows, 4 row tiles, 8
 *   teams, prefetch; below, x tiles of 8 rows, 2 row tiles, 16 teams, steps
 *   of 2. Except below 512 tiles with a long K (≥ 256 chunks, K ≥ 8192):
 *   one x tile of all m rows, 4 row tiles, 8 teams, prefetch, and K split
 *   over 4 workgroups (`splitK`, partial sums added by a second pass), so
 *   that N = 4096 runs 128 workgroups (sweep --split-confirm, each entry
 *   timed three times, same run, 4096×11008: batch 16 −8% (0.849 against
 *   0.921 of the legacy kernel's time), batch 12 −7% (0.879 against 0.950),
 *   2-bit batch 16 −14% (0.826 against 0.960) GPU time; on K = 4096 the
 *   same split lost: 4096×4096 +6%, 16384×4096 +22%, 11008×4096 ±0%).
 * - Larger batches: x tiles of 16 rows, 4 row tiles, 8 teams.
 *
 * Measured and not taken (sweeps --tiled and --split: batch 16 on the four
 * shapes, 64 and 128 on 4096×4096 and 11008×4096, each entry three times;
 * GPU time over the default's in the same run): the tiled path (`tiled`),
 * at its best per case 1.13× (11008×4096, batch 128) to 1.77× (batch 16),
 * up to 5.9× for other tilings; the codes-first order (`codesFirst`) on the
 * default 0.995–1.19×; x tiles of 32 rows at batch 64 and 128 at best
 * 1.13–1.17×; split-K 2 or 4 on the other defaults 0.99–1.22×. At batch
 * 64 and 128 on the four shapes (sweep --large, same measure): prefetch
 * 0.98–1.01×, 4 teams 0.97–1.98× (16384×4096 batch 128 0.974×), steps of
 * 2 0.96–1.29× (4096×11008 0.965× ±0.04 at batch 64, 0.978× at 128): none
 * more than 3% faster.
 *
 * Teams are then halved until the partial sums (and staged x) fit the
 * workgroup memory and the workgroup fits the invocation limit; x is staged
 * only where it fits.
 *
 * @param packed The packed weight.
 * @param m Rows of x.
 * @param limits The device's limits.
 * @returns The specialization.
 */
export function qmatmulSpec(
  packed: PackedWeight,
  m: number,
  limits: QmatmulLimits = {},
): QmatmulSpec {
  const { workgroupBytes = 16384, invocations = 256 } = limits;
  const tiles = packed.paddedRows / PACK_TILE, chunks = packed.paddedCols / PACK_TILE;
  const groupChunks = packed.groupStride / PACK_TILE;
  const exact = qmatmulExactZeros(packed);
  const base = {
    bits: packed.bits,
    scaleType: packed.scaleType,
    zeros: packed.zeros !== null,
    chunks,
    groupChunks,
    split: 1,
    batchedStage: false,
    reduce: "tree" as const,
  };
  let spec: QmatmulSpec;
  if (m <= 2) {
    const rowTiles = tiles >= 512 ? 2 : 1;
    const warps = nearestPow2(4096 / Math.ceil(tiles / rowTiles));
    // Batch 1 where the --gemv sweep measured batched staging > 3% faster.
    const batched = m === 1 && rowTiles === 1 &&
      (packed.bits === 4 || (packed.bits === 8 && tiles <= 128));
    // Where the --confirm sweep measured "half" faster than "exact" (it stages x).
    const half = (packed.bits === 4 && (m === 1 || tiles >= 512)) ||
      (packed.bits === 2 && m === 1);
    spec = {
      ...base,
      rowTiles,
      warps: batched ? Math.min(16, warps) : warps,
      batch: Math.max(1, m),
      unroll: 4,
      prefetch: half && packed.bits === 4 && (m === 2 || rowTiles === 1),
      sharedX: packed.bits === 3 || packed.bits === 4 || batched || half,
      batchedStage: batched || half,
      dequant: half ? "half" : exact ? "exact" : "fma",
    };
  } else if (m <= 4) {
    const wide = tiles >= 344;
    spec = {
      ...base,
      rowTiles: wide ? 2 : 1,
      warps: wide ? 8 : 32,
      batch: m,
      unroll: 2,
      prefetch: wide,
      sharedX: false,
      dequant: exact ? "exact" : "fma",
    };
  } else if (m <= 8) {
    const wide = tiles >= 512;
    spec = {
      ...base,
      rowTiles: wide ? 4 : 1,
      warps: 16,
      batch: m,
      unroll: 1,
      prefetch: false,
      sharedX: false,
      dequant: "fma",
    };
  } else if (m <= 16 && tiles < 512 && chunks >= 256) {
    // Few rows, long K: 4 row tiles × one x tile, K split over 4 workgroups.
    spec = {
      ...base,
      rowTiles: 4,
      warps: 8,
      batch: m,
      unroll: 1,
      prefetch: true,
      sharedX: false,
      dequant: "fma",
      splitK: 4,
    };
  } else if (m <= 16) {
    const wide = tiles >= 512;
    spec = {
      ...base,
      rowTiles: wide ? 4 : 2,
      warps: wide ? 8 : 16,
      batch: wide ? 16 : Math.ceil(m / 2),
      unroll: wide ? 1 : 2,
      prefetch: wide,
      sharedX: false,
      dequant: "fma",
    };
  } else {
    spec = {
      ...base,
      rowTiles: 4,
      warps: 8,
      batch: Math.ceil(m / Math.ceil(m / 16)),
      unroll: 1,
      prefetch: false,
      sharedX: false,
      dequant: "fma",
    };
  }
  // Keep to the weight (row tiles, steps per group) and the device.
  let { rowTiles, warps } = spec;
  while (rowTiles > 1 && rowTiles > tiles) rowTiles /= 2;
  const unroll = fitUnroll(spec.unroll, groupChunks);
  warps = Math.min(warps, 32, invocations / PACK_TILE);
  while (warps > 1 && warps * spec.split > chunks / unroll) warps /= 2;
  spec = { ...spec, rowTiles, warps, unroll };
  if (spec.sharedX && qmatmulWorkgroupBytes(spec) > workgroupBytes) {
    // "half" and "dot4" read the staged copy: without it, the per-code dequantizations.
    const staged = spec.dequant === "half" || spec.dequant === "dot4";
    spec = {
      ...spec,
      sharedX: false,
      ...(staged ? { dequant: exact ? "exact" : "fma", batchedStage: false } : {}),
    };
  }
  while (spec.warps > 1 && qmatmulWorkgroupBytes(spec) > workgroupBytes) {
    spec = { ...spec, warps: spec.warps / 2 };
  }
  return spec;
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
  /** f32 scratch of at least M·Kp values, needed when {@linkcode qmatmulNeedsGather}. */
  readonly scratch?: GPUBuffer;
  /**
   * f32 scratch of at least splitK·M·N values for the partial sums of a
   * split-K specialization (else a buffer cached per device is used).
   */
  readonly partials?: GPUBuffer;
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
 * The specialization {@linkcode encodeQmatmul} runs: the default with the
 * variant's overrides, `unroll` lowered to the largest of 4, 2, 1 that
 * divides the chunks per group.
 *
 * @param gpu The GPU (its limits).
 * @param packed The packed weight.
 * @param m Rows of x.
 * @param variant Overrides.
 * @returns The specialization.
 */
export function qmatmulResolvedSpec(
  gpu: Gpu,
  packed: PackedWeight,
  m: number,
  variant: QmatmulVariant = {},
): QmatmulSpec {
  const base = qmatmulSpec(packed, m, {
    workgroupBytes: gpu.limits.maxComputeWorkgroupStorageSize,
    invocations: gpu.limits.maxComputeInvocationsPerWorkgroup,
  });
  const spec: QmatmulSpec = { ...base, ...variant };
  const resolved = { ...spec, unroll: fitUnroll(spec.unroll, spec.groupChunks) };
  checkQmatmulSpec(resolved);
  if (resolved.dequant === "exact" && !qmatmulExactZeros(packed)) {
    throw new RangeError(
      'Cannot encode qmatmul with dequant "exact": the zero points are not all integers in [−2^bits, 2^bits]',
    );
  }
  const wgsl = (globalThis.navigator as { gpu?: { wgslLanguageFeatures?: ReadonlySet<string> } })
    ?.gpu?.wgslLanguageFeatures;
  if (resolved.dequant === "dot4" && wgsl && !wgsl.has("packed_4x8_integer_dot_product")) {
    throw new RangeError(
      'Cannot encode qmatmul with dequant "dot4": WGSL\'s packed_4x8_integer_dot_product is not available',
    );
  }
  const wgBytes = qmatmulWorkgroupBytes(resolved);
  const threads = qmatmulInvocations(resolved);
  if (
    wgBytes > gpu.limits.maxComputeWorkgroupStorageSize ||
    threads > gpu.limits.maxComputeInvocationsPerWorkgroup
  ) {
    throw new RangeError(
      `Cannot encode qmatmul: ${
        JSON.stringify(resolved)
      } needs ${wgBytes} bytes of workgroup memory and ${threads} invocations, beyond the device's limits`,
    );
  }
  return resolved;
}

/**
 * Records y = x·Ŵᵀ into a batch (the gather pass first when needed).
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
  if (ops.x.size < xBytes || ops.y.size < m * N * 4) {
    throw new RangeError(
      `Cannot encode qmatmul: x (${ops.x.size} bytes) or y (${ops.y.size} bytes) is smaller than [${m}, ${K}] ${input} or [${m}, ${N}] f32`,
    );
  }
  const gpu = batch.gpu;
  const spec = qmatmulResolvedSpec(gpu, packed, m, variant);
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
  const d = qmatmulDispatch(gpu, w, x, ops.y, m, spec, partials);
  batch.dispatch(d.pipeline, [...d.resources, batch.uniform(d.uniform)], d.groups);
  if (d.reduce) {
    const r = d.reduce;
    batch.dispatch(r.pipeline, [...r.resources, batch.uniform(r.uniform)], r.groups);
  }
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
  return {
    pipeline,
    resources,
    uniform: [{ u32: m }, { u32: packed.shape[0] }, { u32: packed.paddedRows }, {
      f32: packed.zero,
    }],
    groups: [
      Math.ceil(packed.paddedRows / PACK_TILE / spec.rowTiles) * spec.split,
      Math.ceil(m / spec.batch) * sk,
    ],
    ...(sk > 1 ? { reduce: splitReduceDispatch(gpu, y, partials!, m * packed.shape[0], sk) } : {}),
  };
}

/** The second pass of a split-K product: y = Σ over the slices of the partials, in order. */
function splitReduceDispatch(
  gpu: Gpu,
  y: GPUBuffer,
  partials: GPUBuffer,
  count: number,
  splitK: number,
): Omit<QmatmulDispatch, "reduce"> {
  const pipeline = cachedPipeline(
    gpu,
    `qmatmul-split-reduce:${splitK}`,
    () => qmatmulSplitReduceWgsl(splitK),
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
}

function xShape(x: Tensor, k: number): number {
  if (x?.dtype !== "f32" && x?.dtype !== "f16") {
    throw new TypeError(
      `Cannot multiply as 'x' must be an f32 or f16 tensor: its dtype is ${String(x?.dtype)}`,
    );
  }
  const [m, kk] = x.shape.length === 1 ? [1, x.shape[0]] : x.shape;
  if (x.shape.length > 2 || kk !== k) {
    throw new RangeError(`Cannot multiply as 'x' must be [M, ${k}] or [${k}]: it is [${x.shape}]`);
  }
  return m!;
}

/**
 * y = x·Ŵᵀ for a packed low-bit weight, dequantized on the fly.
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
 * @param options Backend and kernel variant.
 * @returns y, f32 [M, N].
 */
export async function qmatmul(
  x: Tensor<"f32"> | Tensor<"f16">,
  packed: PackedWeight | GpuPackedWeight,
  options: QmatmulOptions = {},
): Promise<Tensor<"f32">> {
  const { backend = "auto", variant = {} } = options;
  const resident = "words" in packed && "packed" in packed ? packed : null;
  const p = resident ? resident.packed : packed as PackedWeight;
  if (p?.kind !== "packed" || p.format !== "rowtile32") {
    throw new TypeError("Cannot multiply as 'packed' is not a \"rowtile32\" packed weight");
  }
  const [N, K] = p.shape;
  const m = xShape(x, K);
  const gpu = await resolveBackend(backend, "qmatmul");
  if (gpu === null) return qmatmulReference(x, p);
  const w = resident ?? uploadPackedWeight(gpu, p);
  const input = x.dtype;
  const xb = uploadBuffer(gpu, x.data, "qmatmul-x");
  const y = storageBuffer(gpu, m * N * 4, "qmatmul-y");
  const scratch = qmatmulNeedsGather(p, input)
    ? storageBuffer(gpu, m * p.paddedCols * 4, "qmatmul-xp")
    : undefined;
  try {
    const batch = new GpuBatch(gpu);
    encodeQmatmul(
      batch,
      w,
      scratch ? { x: xb, input, m, y, scratch } : { x: xb, input, m, y },
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

/**
 * CPU reference of the kernel, the executable specification of the packed
 * layout: y[m, n] = Σ_j Ŵ(n, j)·x[m, colIdx[j]] in float64, decoding the
 * chunks, tiles, groups and column map as the module docs of
 * `quantizers/pack.ts` describe.
 *
 * @param x Activations, f32 or f16 [M, K] (or [K]).
 * @param p The packed weight.
 * @returns y, f32 [M, N].
 */
export function qmatmulReference(x: Tensor<"f32"> | Tensor<"f16">, p: PackedWeight): Tensor<"f32"> {
  const [N, K] = p.shape;
  const M = xShape(x, K);
  const { bits, groupStride: Gp, paddedRows: Np, paddedCols: Kp } = p;
  const C = Kp / PACK_TILE;
  const src = p.colIdx ?? Int32Array.from({ length: Kp }, (_, j) => j);
  const w = new Float64Array(Kp);
  const y = new Float32Array(M * N);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const o = packedChunkOffset(n, c, C, bits);
      const codes = unpackBits(p.words.subarray(o, o + bits), bits, PACK_TILE);
      const g = Math.floor((c * PACK_TILE) / Gp);
      const s = p.scales[g * Np + n]!, z = p.zeros ? p.zeros[g * Np + n]! : p.zero;
      for (let i = 0; i < PACK_TILE; i++) w[c * PACK_TILE + i] = s * (codes[i]! - z);
    }
    for (let m = 0; m < M; m++) {
      let acc = 0;
      for (let j = 0; j < Kp; j++) {
        const k = src[j]!;
        if (k >= 0) acc += w[j]! * x.data[m * K + k]!;
      }
      y[m * N + n] = acc;
    }
  }
  return { dtype: "f32", shape: [M, N], data: y };
}

/**
 * Dense-dequantize reference: y = x·dequantize(q)ᵀ in float64, from the
 * unpacked quantized weight (independent of the packed layout).
 *
 * @param x Activations, f32 or f16 [M, K] (or [K]).
 * @param q The quantized weight.
 * @returns y, f32 [M, N].
 */
export function qmatmulDenseReference(
  x: Tensor<"f32"> | Tensor<"f16">,
  q: QuantizedWeight,
): Tensor<"f32"> {
  const [N, K] = q.shape;
  const M = xShape(x, K);
  const w = dequantize(q).data;
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += w[n * K + k]! * x.data[m * K + k]!;
      y[m * N + n] = acc;
    }
  }
  return { dtype: "f32", shape: [M, N], data: y };
}
