/**
 * The layer-wise pipeline's calibration passes for Llama-style models on
 * WebGPU ({@linkcode llamaCalibrationRunner}, a `CalibrationRunner`): the
 * residual stream of every calibration token stays on the GPU, in chunks of
 * whole sequences; one block's weights at a time are uploaded (re-uploaded
 * only where the pipeline replaced a linear); the inputs of a group of
 * linears are computed chunk by chunk and their Hessian XᵀX accumulated on
 * the GPU in float32 (one submission and one read-back per group); a
 * finished block moves the residual stream on, in place. Only the Hessians
 * come back to the host.
 *
 * What later groups need is kept rather than recomputed: the attention
 * output of every token once q, k and v are final (the input of o), and the
 * residual after attention once o is final (whose norm is the input of gate
 * and up); so attention runs once per block, and each linear about twice
 * (the reference recomputes the whole block for every group). That costs
 * two more activations of every calibration token on the GPU ([tokens,
 * nHeads·headDim] and [tokens, dim] f32). Web-standard only.
 *
 * @module
 */

import { numel, type Tensor } from "../core/tensor.ts";
import { nextTask } from "../core/_next_task.ts";
import { type Gpu, GpuBatch, storageBuffer, writeBuffer } from "../kernels/backend.ts";
import { bindingLimit } from "../kernels/gpu_buffers.ts";
import { encodeHessian, encodeHessianFinish } from "../kernels/hessian_kernel.ts";
import { type DeviceHessian, wrapDeviceHessian } from "../hessian/device_hessian.ts";
import { encodeActQuant, withActQuantProducts } from "./_gpu_act_quant.ts";
import {
  attentionInputsHook,
  checkLayerQuant,
  layerQuantBuffers,
  uploadLayerQuant,
  WEBGPU_LAYER_QUANT,
} from "./_gpu_layer_quant.ts";
import { cpuOnlyFeature } from "./model.ts";
import type { CalibrationRunner } from "../pipeline/model.ts";
import {
  attachDeviceCopy,
  deviceCopyOf,
  releaseDeviceCopy,
  takeDeviceCopy,
} from "../kernels/device_copies.ts";
import {
  checkLayerExtras,
  denseProducts,
  encodeBlockWith,
  encodeLinear,
  type LayerBuffers,
  layerBuffers,
  ropeTable,
  uploadBlock,
  uploadBlockVectors,
  vectorBuffers,
} from "./_gpu_block.ts";
import { encodeCopy, encodeRmsNorm, encodeSwiglu } from "./_gpu_kernels.ts";
import { checkWindow, llamaEmbed } from "./forward.ts";
import { layerVectors, LLAMA_LINEARS, llamaDims } from "./model.ts";
import type { LlamaConfig, LlamaLayer, LlamaLinear, LlamaModel } from "./model.ts";
import { readLinearAhead, type WidenRows } from "./hf.ts";
import { type DenseWorker, denseWorker } from "./_dense_on_worker.ts";

/** Bytes of a block linear written to the GPU at a time by the read-ahead. */
const UPLOAD_PIECE = 64 << 20;

/** Options of {@linkcode llamaCalibrationRunner}. */
export interface GpuCalibrationOptions {
  /**
   * Tokens per chunk (whole sequences; at least one sequence): the scratch
   * activations are sized for one chunk, the MLP's [chunk, 2·hidden] the largest.
   * @default 8192
   */
  chunkTokens?: number;
  /**
   * Keep the SwiGLU output of every calibration token from the down
   * projection's Hessian pass for the block's propagation (gate and up are
   * final by then), so that propagation skips the gate/up product: one more
   * [tokens, hidden] f32 on the GPU.
   * @default true
   */
  cacheMlp?: boolean;
  /**
   * From a block's first pass on, read the next block's linears from the
   * model while the GPU works (a checkpoint read from disk by block is read
   * asynchronously and widened on a worker thread; see `readLinearAhead`)
   * and upload them, so that neither waits for the other: one more block of
   * weights on the GPU. Used when the pipeline then passes those same
   * tensors.
   * @default true
   */
  prefetch?: boolean;
}

/**
 * Where in the block each linear's input is ready: after the attention norm
 * (q, k, v), the attention (o), the MLP norm (gate, up), the SwiGLU (down).
 */
type InputPoint = "qkv" | "o" | "gateUp" | "down";

const F32 = { inputs: "f32" } as const;

/** Each linear's input point. */
const STOP_OF: Readonly<Record<LlamaLinear, InputPoint>> = {
  wq: "qkv",
  wk: "qkv",
  wv: "qkv",
  wo: "o",
  w1: "gateUp",
  w3: "gateUp",
  w2: "down",
};

interface Chunk {
  /** Tokens per sequence. */
  readonly T: number;
  /** Rows (sequences · T). */
  readonly rows: number;
  /** Residual stream [rows, dim]. */
  readonly x: GPUBuffer;
  /** Attention output [rows, qDim], valid while `attFor` holds. */
  readonly att: GPUBuffer;
  /** Residual after attention [rows, dim], valid while `resFor` holds. */
  readonly res: GPUBuffer;
  /** SwiGLU output [rows, hidden] (with `cacheMlp`), valid while `gFor` holds. */
  readonly g: GPUBuffer | null;
}

/** The block and weights a cached activation was computed with. */
interface CacheKey {
  readonly block: number;
  readonly weights: readonly Tensor<"f32">[];
}

function sameKey(key: CacheKey | null, block: number, weights: readonly Tensor<"f32">[]): boolean {
  return key !== null && key.block === block && key.weights.every((w, i) => w === weights[i]);
}

/** A weight for every linear of a block. */
type LinearWeights = Readonly<Record<LlamaLinear, Tensor<"f32">>>;

/** The block's weights on the GPU and the host tensors they were uploaded from. */
interface UploadedBlock {
  readonly index: number;
  readonly from: LinearWeights;
  readonly buffers: LayerBuffers;
}

/** Chunks of whole sequences of one length, each within `chunkTokens` tokens (or one sequence). */
function chunkPlan(
  seqs: readonly (readonly number[])[],
  chunkTokens: number,
): { T: number; seqs: (readonly number[])[] }[] {
  const byLength = new Map<number, (readonly number[])[]>();
  for (const s of seqs) {
    const group = byLength.get(s.length);
    if (group) group.push(s);
    else byLength.set(s.length, [s]);
  }
  const plan: { T: number; seqs: (readonly number[])[] }[] = [];
  for (const [T, group] of byLength) {
    const per = Math.max(1, Math.floor(chunkTokens / T));
    for (let i = 0; i < group.length; i += per) plan.push({ T, seqs: group.slice(i, i + per) });
  }
  return plan;
}

/** The GPU memory a calibration run needs (an estimate of its peak), in bytes. */
export interface CalibrationMemory {
  /** Calibration tokens. */
  readonly tokens: number;
  /**
   * What is kept for every calibration token: the residual stream, the
   * attention output, the residual after attention, and with `cacheMlp` the
   * SwiGLU output (f32).
   */
  readonly activations: number;
  /** Of which the SwiGLU outputs (`cacheMlp`). */
  readonly mlpCache: number;
  /** One chunk's scratch activations and the rotary table. */
  readonly scratch: number;
  /**
   * The largest transient need: one block's linears (f32), the largest
   * Hessian, and the GPU solve of the largest linear (the factor's buffers,
   * W and its codes, the layer error's products).
   */
  readonly transient: number;
  /** The sum. */
  readonly total: number;
}

/**
 * Estimates the GPU memory of a calibration run with
 * {@linkcode llamaCalibrationRunner} and the GPU solvers, before starting it.
 *
 * @param config The model's configuration.
 * @param sequences The calibration sequences.
 * @param options Chunk size and MLP cache, as for the runner.
 * @returns Bytes by part.
 */
export function calibrationMemory(
  config: LlamaConfig,
  sequences: readonly (readonly number[])[],
  options: GpuCalibrationOptions = {},
): CalibrationMemory {
  const { chunkTokens = 8192, cacheMlp = true, prefetch = true } = options;
  const seqs = sequences.filter((s) => s.length > 0);
  const { dim, hiddenDim: H } = config;
  const { qDim, kvDim, headDim } = llamaDims(config);
  const tokens = seqs.reduce((n, s) => n + s.length, 0);
  const plan = chunkPlan(seqs, chunkTokens);
  const maxRows = Math.max(0, ...plan.map((c) => c.T * c.seqs.length));
  const maxT = Math.max(0, ...seqs.map((s) => s.length));
  const mlpCache = cacheMlp ? tokens * H * 4 : 0;
  const activations = tokens * (2 * dim + qDim) * 4 + mlpCache;
  const scratch = maxRows * (dim + qDim + 2 * kvDim + 2 * H + (cacheMlp ? 0 : H)) * 4 +
    maxT * headDim * 4;
  // One block's linears in f32 (two while the next one is prefetched).
  const weights = (prefetch ? 2 : 1) * 4 * dim * (2 * qDim + 2 * kvDim + 3 * H);
  // Groups of linears as [rows, cols, linears]: the group's linears are
  // solved together, each holding H's factor and its inverse (2·cols²) and
  // about five [rows, cols] arrays of its linear (W, codes, the layer
  // error's [D; W] and its product; W stays as the new weight until the next
  // pass copies it), beside the group's Hessian (cols²).
  const groups: [number, number, number][] = [
    [qDim + 2 * kvDim, dim, 3],
    [dim, qDim, 1],
    [2 * H, dim, 2],
    [dim, H, 1],
  ];
  const solve = Math.max(...groups.map(([r, c, k]) => 4 * ((1 + 2 * k) * c * c + 5 * r * c)));
  const transient = weights + solve;
  return {
    tokens,
    activations,
    mlpCache,
    scratch,
    transient,
    total: activations + scratch + transient,
  };
}

function gib(bytes: number): string {
  return (bytes / 2 ** 30).toFixed(1);
}

/** The advice of a run that does not fit. */
function fitAdvice(need: CalibrationMemory): string {
  return `lower the calibration tokens (--calib-samples or --calib-len; the activations take ` +
    `${gib(need.activations)} GiB for ${need.tokens} tokens)` +
    (need.mlpCache > 0
      ? `, or keep fewer activations (cacheMlp: false saves ${gib(need.mlpCache)} GiB)`
      : "") +
    `, or calibrate on the CPU (--backend cpu)`;
}

/** Options of {@linkcode openLlamaCalibrationRunner}. */
export interface OpenCalibrationOptions extends GpuCalibrationOptions {
  /**
   * GPU memory the run may use, in bytes (WebGPU does not report a device's
   * memory): a run whose estimate ({@linkcode calibrationMemory}) exceeds it
   * is refused before anything is allocated. Without it, the run's memory is
   * allocated up front and an allocation failure is reported then.
   */
  memoryBudget?: number;
}

/**
 * {@linkcode llamaCalibrationRunner}, checked to fit the device before the
 * run starts: the estimate is compared with `memoryBudget` when given; then
 * the runner's activations and a probe of the largest transient need are
 * allocated under an out-of-memory error scope (and the probe freed), so a
 * run that does not fit fails here, naming what to lower, not midway.
 *
 * @param gpu The GPU.
 * @param model The model.
 * @param sequences The calibration sequences.
 * @param options Chunk size, MLP cache, memory budget.
 * @returns The runner.
 * @throws {RangeError} when the run does not fit (or as the runner).
 */
export async function openLlamaCalibrationRunner(
  gpu: Gpu,
  model: LlamaModel,
  sequences: readonly (readonly number[])[],
  options: OpenCalibrationOptions = {},
): Promise<CalibrationRunner> {
  const { memoryBudget, ...runnerOptions } = options;
  const need = calibrationMemory(model.config, sequences, runnerOptions);
  if (memoryBudget !== undefined) {
    if (!(typeof memoryBudget === "number" && memoryBudget > 0)) {
      throw new RangeError(
        `Cannot calibrate on the GPU as 'memoryBudget' must be a positive number of bytes: current value is ${memoryBudget}`,
      );
    }
    if (need.total > memoryBudget) {
      throw new RangeError(
        `Cannot calibrate on the GPU: the run needs about ${gib(need.total)} GiB of GPU memory, ` +
          `over the budget of ${gib(memoryBudget)} GiB; ${fitAdvice(need)}`,
      );
    }
  }
  gpu.device.pushErrorScope("out-of-memory");
  let runner: CalibrationRunner | null = null;
  const probes: GPUBuffer[] = [];
  let thrown: unknown = null;
  try {
    runner = llamaCalibrationRunner(gpu, model, sequences, runnerOptions);
    const most = Math.min(gpu.limits.maxBufferSize, bindingLimit(gpu));
    for (let left = need.transient; left > 0; left -= most) {
      probes.push(storageBuffer(gpu, Math.min(left, most), "calib:probe"));
    }
  } catch (e) {
    thrown = e;
  }
  const error = await gpu.device.popErrorScope();
  for (const b of probes) b.destroy();
  if (thrown !== null || error !== null) {
    runner?.dispose();
    if (thrown !== null) throw thrown;
    throw new RangeError(
      `Cannot calibrate on the GPU: the run needs about ${gib(need.total)} GiB of GPU memory ` +
        `and the device could not allocate it (${error!.message}); ${fitAdvice(need)}`,
    );
  }
  return runner!;
}

/**
 * A `CalibrationRunner` on WebGPU for a Llama-style model. A layer's
 * activation settings run as in the CPU forward pass: each product's input
 * fake-quantized (`actQuant`), w2's after the online Hadamard, the
 * query/key Hadamard and the KV cache quantization before attention; the
 * Hessians are of the inputs before quantization (w2's after the Hadamard),
 * what the CPU pass hands its hook.
 *
 * @param gpu The GPU.
 * @param model The model (its block norms, biases and head are read from it;
 *   the linears come from the pipeline with each call).
 * @param sequences The calibration token sequences.
 * @param options Chunk size.
 * @returns The runner (dispose it to free GPU memory).
 * @throws {RangeError} for an empty calibration, a token outside the
 *   vocabulary, a sequence longer than the sliding window, or a chunk whose
 *   activations exceed one storage binding.
 * @throws {TypeError} for activation settings the WebGPU passes do not run (different ones on
 *   linears that share a product), naming them.
 */
export function llamaCalibrationRunner(
  gpu: Gpu,
  model: LlamaModel,
  sequences: readonly (readonly number[])[],
  options: GpuCalibrationOptions = {},
): CalibrationRunner {
  const { chunkTokens = 8192, cacheMlp = true, prefetch = true } = options;
  if (!(Number.isInteger(chunkTokens) && chunkTokens >= 1)) {
    throw new RangeError(
      `Cannot calibrate on the GPU as 'chunkTokens' must be a positive integer: current value is ${chunkTokens}`,
    );
  }
  const seqs = sequences.filter((s) => s.length > 0);
  if (seqs.length === 0) throw new RangeError("Cannot calibrate without a non-empty sequence");
  const { config } = model;
  const { dim, hiddenDim: H } = config;
  const { qDim, kvDim, headDim } = llamaDims(config);
  const maxT = Math.max(...seqs.map((s) => s.length));
  checkWindow(config, maxT);
  // Activation settings (quantized inputs, online Hadamards, a quantized KV cache) run as in
  // the CPU forward; the Hessians are of the inputs before quantization, as the CPU hook sees.
  const unsupported = cpuOnlyFeature(model, WEBGPU_LAYER_QUANT);
  if (unsupported !== null) {
    throw new TypeError(`Cannot calibrate on the GPU: the model has ${unsupported}`);
  }
  model.layers.forEach((l, i) => checkLayerQuant(config, l, i));
  const plan = chunkPlan(seqs, chunkTokens);
  const maxRows = Math.max(...plan.map((c) => c.T * c.seqs.length));
  const widest = Math.max(2 * H, qDim + 2 * kvDim, dim);
  const limit = bindingLimit(gpu);
  if (maxRows * widest * 4 > limit) {
    throw new RangeError(
      `Cannot calibrate on the GPU: a chunk of ${maxRows} tokens needs [${maxRows}, ${widest}] f32 ` +
        `(${
          maxRows * widest * 4
        } bytes), over the device's storage binding limit of ${limit} bytes; ` +
        `lower 'chunkTokens' (or the calibration length)`,
    );
  }
  let bytes = 0;
  const buffer = (size: number, label: string): GPUBuffer => {
    bytes += size;
    return storageBuffer(gpu, size, label);
  };
  // Everything kept for the whole run is allocated here, so that a run that
  // does not fit fails now (see openLlamaCalibrationRunner), not midway.
  const chunks: Chunk[] = plan.map(({ T, seqs }, i) => {
    const rows = T * seqs.length;
    const x = buffer(rows * dim * 4, `calib:x${i}`);
    writeBuffer(gpu, x, 0, llamaEmbed(model, seqs.flat()));
    return {
      T,
      rows,
      x,
      att: buffer(rows * qDim * 4, `calib:att${i}`),
      res: buffer(rows * dim * 4, `calib:res${i}`),
      g: cacheMlp ? buffer(rows * H * 4, `calib:g${i}`) : null,
    };
  });
  const count = chunks.reduce((n, c) => n + c.rows, 0);
  const f = (width: number, label: string) => buffer(maxRows * width * 4, label);
  // Per-chunk scratch (the attention output, the residual and, with
  // cacheMlp, the SwiGLU output are kept per chunk instead).
  const scratch = {
    h: f(dim, "calib:h"),
    qkv: f(qDim + 2 * kvDim, "calib:qkv"),
    u: f(2 * H, "calib:u"),
    g: cacheMlp ? null : f(H, "calib:g"),
  };
  const rope = writeRope();
  const quant = uploadLayerQuant(gpu, config, model.layers, "calib");
  for (const b of layerQuantBuffers(quant)) bytes += b.size;
  let peak = bytes;
  let uploaded: UploadedBlock | null = null;
  /** The next block's weights, uploaded ahead (see `prefetch`). */
  let next: UploadedBlock | null = null;
  /** The upload of `next` while it is under way. */
  let prefetching: Promise<void> | null = null;
  let attFor: CacheKey | null = null, resFor: CacheKey | null = null;
  let gFor: CacheKey | null = null;
  const timings: Record<string, number> = {};
  let disposed = false;

  function writeRope(): GPUBuffer {
    const table = ropeTable(headDim, config.ropeTheta, maxT, config.rope);
    const b = buffer(table.byteLength, "calib:rope");
    writeBuffer(gpu, b, 0, table);
    return b;
  }

  function check(block: number): void {
    if (disposed) throw new Error("Cannot use a disposed calibration runner");
    if (!(Number.isInteger(block) && block >= 0 && block < model.layers.length)) {
      throw new RangeError(`Cannot calibrate block ${block}: the model has ${model.layers.length}`);
    }
  }

  /** A weight for every linear of the block, by name. */
  function linearsOf(
    block: number,
    weights: Readonly<Record<string, Tensor<"f32">>>,
  ): LinearWeights {
    const from = {} as Record<LlamaLinear, Tensor<"f32">>;
    for (const n of LLAMA_LINEARS) {
      const w = weights[n];
      if (!w) throw new RangeError(`Cannot calibrate block ${block}: no weight for '${n}'`);
      from[n] = w;
    }
    return from;
  }

  /** Where a linear's rows are in the block's buffers (byte offset into its product). */
  function placeOf(name: LlamaLinear, l: LayerBuffers): { buffer: GPUBuffer; offset: number } {
    const row = dim * 4;
    switch (name) {
      case "wq":
        return { buffer: l.wqkv, offset: 0 };
      case "wk":
        return { buffer: l.wqkv, offset: qDim * row };
      case "wv":
        return { buffer: l.wqkv, offset: (qDim + kvDim) * row };
      case "wo":
        return { buffer: l.wo, offset: 0 };
      case "w1":
        return { buffer: l.w13, offset: 0 };
      case "w3":
        return { buffer: l.w13, offset: H * row };
      case "w2":
        return { buffer: l.w2, offset: 0 };
    }
  }

  /** Registers the block's linears as device copies (views into its buffers), for the solvers. */
  function attachViews(u: UploadedBlock): void {
    for (const n of LLAMA_LINEARS) {
      attachDeviceCopy(u.from[n], { gpu, ...placeOf(n, u.buffers), owned: false });
    }
  }

  /** Forgets the block's views (before its buffers change or go). */
  function forgetViews(u: UploadedBlock): void {
    for (const n of LLAMA_LINEARS) {
      const c = deviceCopyOf(u.from[n], gpu);
      if (c !== null && !c.owned && placeOf(n, u.buffers).buffer === c.buffer) {
        releaseDeviceCopy(u.from[n]);
      }
    }
  }

  /**
   * The block's weights on the GPU: uploaded when the block changes, and then
   * only the linears the pipeline replaced, written in place: copied on the
   * GPU where the solver left the new weight there (a device copy, taken and
   * freed), else uploaded. The block's linears are registered as device
   * copies, so that a GPU solver copies W from here instead of uploading it.
   */
  function blockOn(block: number, from: LinearWeights): LayerBuffers {
    const t0 = performance.now();
    if (uploaded === null || uploaded.index !== block) {
      if (uploaded !== null) {
        forgetViews(uploaded);
        release(layerBuffers(uploaded.buffers));
      }
      if (next !== null && next.index === block) {
        // Uploaded ahead: the linears the pipeline passes otherwise are written below.
        uploaded = next;
        timings.blocksPrefetched = (timings.blocksPrefetched ?? 0) + 1;
      } else {
        if (next !== null) release(layerBuffers(next.buffers));
        uploaded = upload(block, from);
      }
      next = null;
      attachViews(uploaded);
    }
    const prev: UploadedBlock = uploaded;
    const changed = LLAMA_LINEARS.filter((n) => prev.from[n] !== from[n]);
    if (changed.length > 0) {
      const encoder = gpu.device.createCommandEncoder();
      const taken: GPUBuffer[] = [];
      for (const n of changed) {
        const old = deviceCopyOf(prev.from[n], gpu);
        if (old !== null && !old.owned) releaseDeviceCopy(prev.from[n]);
        const place = placeOf(n, prev.buffers);
        // By the tensor: a lazily dequantized Ŵ is not filled on the host here.
        const values = from[n];
        const source = takeDeviceCopy(values, gpu);
        if (source !== null) {
          encoder.copyBufferToBuffer(
            source.buffer,
            source.offset,
            place.buffer,
            place.offset,
            numel(values.shape) * 4,
          );
          if (source.owned) taken.push(source.buffer);
          timings.linearsCopied = (timings.linearsCopied ?? 0) + 1;
        } else {
          writeBuffer(gpu, place.buffer, place.offset, values.data);
          timings.linearsUploaded = (timings.linearsUploaded ?? 0) + 1;
        }
        attachDeviceCopy(values, { gpu, ...place, owned: false });
      }
      gpu.device.queue.submit([encoder.finish()]);
      // Freed once the copies (already submitted) are done.
      for (const b of taken) b.destroy();
    }
    uploaded = { index: block, from, buffers: prev.buffers };
    peak = Math.max(peak, bytes);
    timings.upload = (timings.upload ?? 0) + (performance.now() - t0) / 1000;
    return uploaded.buffers;
  }

  /** Uploads a block's weights into fresh buffers. */
  function upload(block: number, from: LinearWeights): UploadedBlock {
    const merged: LlamaLayer = { ...layerVectors(model.layers[block]!), ...from };
    checkLayerExtras(config, merged, block);
    const buffers = uploadBlock(gpu, config, merged, `calib:${block}`);
    for (const b of layerBuffers(buffers)) bytes += b.size;
    peak = Math.max(peak, bytes);
    return { index: block, from, buffers };
  }

  /**
   * Starts reading and uploading the linears the model holds for `block`
   * ahead of their use (see `prefetch`), unless that is under way or done.
   * It runs between the host's other work: one linear at a time (widened
   * from a lazily loaded model, then written to its place), yielding to the
   * event loop in between, so that it fills the host's waits for the GPU.
   * A failure only drops it (the block is then uploaded when used).
   */
  function startPrefetch(block: number): void {
    if (!prefetch || disposed || next !== null || prefetching !== null) return;
    if (block >= model.layers.length) return;
    prefetching = prefetchBlock(block).catch(() => {}).finally(() => {
      prefetching = null;
    });
  }

  async function prefetchBlock(block: number): Promise<void> {
    let t = performance.now(), host = 0;
    const owned: GPUBuffer[] = [];
    try {
      const layer = model.layers[block]!;
      const label = `calib:${block}`;
      const vectors = uploadBlockVectors(gpu, config, layerVectors(layer), label);
      owned.push(...vectorBuffers(vectors));
      const product = (rows: number, cols: number, name: string): GPUBuffer => {
        const b = storageBuffer(gpu, rows * cols * 4, `${label}:${name}`);
        owned.push(b);
        return b;
      };
      const buffers: LayerBuffers = {
        ...vectors,
        wqkv: product(qDim + 2 * kvDim, dim, "wqkv"),
        wo: product(dim, qDim, "wo"),
        w13: product(2 * H, dim, "w13"),
        w2: product(dim, H, "w2"),
      };
      const from = {} as Record<LlamaLinear, Tensor<"f32">>;
      // Each linear is read (and widened) while the previous one is uploaded.
      const read = async (n: LlamaLinear): Promise<Tensor<"f32">> => {
        await nextTask();
        return await readLinearAhead(layer, n, widenRows);
      };
      let reading: Promise<Tensor<"f32">> | null = read(LLAMA_LINEARS[0]);
      try {
        for (const [i, n] of LLAMA_LINEARS.entries()) {
          host += performance.now() - t;
          const w: Tensor<"f32"> = await reading!;
          const after = LLAMA_LINEARS[i + 1];
          reading = after !== undefined ? read(after) : null;
          t = performance.now();
          if (disposed || next !== null) return;
          from[n] = w;
          // In pieces, so that the host's copies leave room for the GPU's continuations.
          const place = placeOf(n, buffers), values = w.data, piece = UPLOAD_PIECE / 4;
          for (let at = 0; at < values.length; at += piece) {
            writeBuffer(gpu, place.buffer, place.offset + at * 4, values.subarray(at, at + piece));
            if (at + piece < values.length) {
              host += performance.now() - t;
              await nextTask();
              t = performance.now();
              if (disposed) return;
            }
          }
        }
      } finally {
        reading?.catch(() => {}); // dropped with the read-ahead
      }
      checkLayerExtras(config, { ...layerVectors(layer), ...from }, block);
      for (const b of owned) bytes += b.size;
      peak = Math.max(peak, bytes);
      next = { index: block, from, buffers };
      owned.length = 0;
    } finally {
      // Freed unless handed over as `next`.
      for (const b of owned) b.destroy();
      host += performance.now() - t;
      timings.prefetch = (timings.prefetch ?? 0) + host / 1000;
    }
  }

  /** Widens a stored linear on a worker thread (started on first use, stopped by `dispose`). */
  let worker: DenseWorker | null = null;
  const widenRows: WidenRows = (weight, rowFrom) => {
    if (disposed) return Promise.reject(new Error("Cannot use a disposed calibration runner"));
    return (worker ??= denseWorker()).widen(weight, rowFrom);
  };

  /**
   * Waits for a prefetch under way before the runner moves to `block`: one
   * that is already on the GPU only has its replaced linears written into
   * its own buffers, which the read-ahead (into buffers of its own) does not
   * touch, so work on it goes on while the next block is read.
   */
  async function settlePrefetch(block: number): Promise<void> {
    if (prefetching !== null && uploaded?.index !== block) await prefetching;
  }

  function release(buffers: readonly GPUBuffer[]): void {
    for (const b of buffers) {
      bytes -= b.size;
      b.destroy();
    }
  }

  /** A persistent per-chunk activation buffer (allocated on first use). */

  /** Records each chunk's attention output with these q, k, v, unless it is cached. */
  function ensureAttention(
    batch: GpuBatch,
    block: number,
    lb: LayerBuffers,
    w: LinearWeights,
  ): void {
    const key = [w.wq, w.wk, w.wv];
    if (sameKey(attFor, block, key)) return;
    const q = quant[block]!;
    const products = withActQuantProducts(denseProducts(config, lb), q.actQuant);
    const inputs = attentionInputsHook(config, q);
    for (const c of chunks) {
      const acts = { ...scratch, x: c.x, att: c.att };
      encodeBlockWith(batch, config, rope, lb, products, acts, c.rows, c.T, "o", inputs);
    }
    attFor = { block, weights: key };
    resFor = null;
  }

  /** Records each chunk's residual after attention with these q, k, v, o, unless it is cached. */
  function ensureResidual(
    batch: GpuBatch,
    block: number,
    lb: LayerBuffers,
    w: LinearWeights,
  ): void {
    ensureAttention(batch, block, lb, w);
    const key = [w.wq, w.wk, w.wv, w.wo];
    if (sameKey(resFor, block, key)) return;
    const aq = quant[block]!.actQuant.o;
    for (const c of chunks) {
      const res = c.res;
      encodeCopy(batch, res, c.x, c.rows * dim);
      // o's input quantized in a copy (q/k/v's scratch): the kept attention output stays float.
      const att = aq ? scratch.qkv : c.att;
      if (aq) {
        encodeCopy(batch, att, c.att, c.rows * qDim);
        encodeActQuant(batch, att, aq, c.rows);
      }
      encodeLinear(batch, res, att, lb.wo, c.rows, dim, qDim, true);
    }
    resFor = { block, weights: key };
    gFor = null;
  }

  /** The weights the SwiGLU output depends on. */
  function mlpKey(w: LinearWeights): Tensor<"f32">[] {
    return [w.wq, w.wk, w.wv, w.wo, w.w1, w.w3];
  }

  /** The buffer that receives a chunk's SwiGLU output (its cache, or the scratch). */
  function gOf(c: Chunk): GPUBuffer {
    return c.g ?? scratch.g!;
  }

  /**
   * Records the MLP input norm (in h) and, unless `upTo` is "gateUp", its
   * SwiGLU (in `gOf(c)`).
   */
  function encodeMlp(
    batch: GpuBatch,
    c: Chunk,
    lb: LayerBuffers,
    upTo: "gateUp" | "down",
    block: number,
  ): void {
    encodeRmsNorm(batch, scratch.h, c.res, lb.ffnNorm, c.rows, dim, config.normEps);
    if (upTo === "gateUp") return;
    const q = quant[block]!;
    if (q.actQuant.gateUp) encodeActQuant(batch, scratch.h, q.actQuant.gateUp, c.rows);
    encodeLinear(batch, scratch.u, scratch.h, lb.w13, c.rows, 2 * H, dim, false);
    encodeSwiglu(batch, gOf(c), scratch.u, c.rows, H);
    if (q.hadamard !== null) {
      // QuaRot's online Hadamard: g·Q = g·(Qᵀ)ᵀ, through u (free once SwiGLU has read it).
      encodeLinear(batch, scratch.u, gOf(c), q.hadamard, c.rows, H, H, false);
      encodeCopy(batch, gOf(c), scratch.u, c.rows * H);
    }
  }

  /** The down projection's input of a chunk for the product: `gOf(c)`, or a quantized copy. */
  function downInput(batch: GpuBatch, c: Chunk, block: number): GPUBuffer {
    const aq = quant[block]!.actQuant.down;
    if (!aq) return gOf(c);
    encodeCopy(batch, scratch.u, gOf(c), c.rows * H);
    encodeActQuant(batch, scratch.u, aq, c.rows);
    return scratch.u;
  }

  /** Device Hessians handed out and not yet released (freed by `dispose`). */
  const live = new Set<DeviceHessian>();

  /**
   * Submits a batch that accumulated XᵀX (lower triangle) into `out`, with the
   * pass that makes it the symmetric mean, and wraps `out` as a device
   * Hessian; only its diagonal comes back. `out` is destroyed on failure.
   */
  async function finishHessian(
    batch: GpuBatch,
    out: GPUBuffer,
    cols: number,
    whileGpuWorks?: () => void,
  ): Promise<{ hessian: DeviceHessian; gpuSeconds: number; phases: Record<string, number> }> {
    const diagBuf = storageBuffer(gpu, cols * 4, "calib:diag");
    try {
      encodeHessianFinish(batch, out, cols, 1 / count, diagBuf);
      const pending = batch.submit([diagBuf]);
      whileGpuWorks?.();
      const result = await pending;
      const diag = Float64Array.from(new Float32Array(result.data[0]!));
      const hessian = wrapDeviceHessian(gpu, out, cols, count, diag, () => {
        bytes -= out.size;
        live.delete(hessian);
      });
      live.add(hessian);
      return { hessian, gpuSeconds: result.gpuSeconds, phases: result.phases };
    } catch (e) {
      bytes -= out.size;
      out.destroy();
      throw e;
    } finally {
      diagBuf.destroy();
    }
  }

  /** Adds a submission's GPU seconds by phase (and its wall seconds) to the timings. */
  function account(
    result: { gpuSeconds: number; phases: Record<string, number> },
    wall: number,
  ): void {
    for (const [name, sec] of Object.entries(result.phases)) {
      timings[`gpu:${name}`] = (timings[`gpu:${name}`] ?? 0) + sec;
    }
    timings.gpu = (timings.gpu ?? 0) + (Number.isNaN(result.gpuSeconds) ? 0 : result.gpuSeconds);
    timings.wall = (timings.wall ?? 0) + wall;
  }

  async function hessianAt(
    block: number,
    weights: Readonly<Record<string, Tensor<"f32">>>,
    stop: InputPoint,
  ): Promise<DeviceHessian> {
    const t0 = performance.now();
    const w = linearsOf(block, weights);
    await settlePrefetch(block);
    const lb = blockOn(block, w);
    const cols = stop === "o" ? qDim : stop === "down" ? H : dim;
    const out = buffer(cols * cols * 4, "calib:xtx");
    peak = Math.max(peak, bytes);
    const batch = new GpuBatch(gpu);
    try {
      if (stop === "o") {
        ensureAttention(batch, block, lb, w);
        batch.phase("attention");
      }
      if (stop === "gateUp" || stop === "down") {
        ensureResidual(batch, block, lb, w);
        batch.phase("residual");
      }
      chunks.forEach((c, i) => {
        let input: GPUBuffer;
        if (stop === "qkv") {
          encodeRmsNorm(batch, scratch.h, c.x, lb.attnNorm, c.rows, dim, config.normEps);
          input = scratch.h;
        } else if (stop === "o") {
          input = c.att;
        } else {
          encodeMlp(batch, c, lb, stop, block);
          input = stop === "down" ? gOf(c) : scratch.h;
        }
        encodeHessian(batch, input, c.rows, cols, out, F32, i === 0 ? 0 : 1);
      });
      batch.phase(stop === "down" ? "mlp+xtx" : "xtx");
      if (stop === "down" && cacheMlp) gFor = { block, weights: mlpKey(w) };
    } catch (e) {
      bytes -= out.size;
      out.destroy();
      throw e;
    }
    // The next block is read and uploaded from the block's first pass on,
    // while the GPU works (the memory check counts two blocks' weights).
    const { hessian, ...result } = await finishHessian(
      batch,
      out,
      cols,
      () => startPrefetch(block + 1),
    );
    account(result, (performance.now() - t0) / 1000);
    return hessian;
  }

  return {
    device: gpu.description,
    get memory() {
      return { current: bytes, peak };
    },
    get timings() {
      return { ...timings };
    },
    async hessians(block, weights, linears) {
      check(block);
      const out = new Map<string, DeviceHessian>();
      const byStop = new Map<InputPoint, DeviceHessian>();
      for (const name of linears) {
        const stop = STOP_OF[name as LlamaLinear];
        if (stop === undefined) {
          throw new RangeError(`Cannot calibrate '${name}': not a linear of a Llama block`);
        }
        let h = byStop.get(stop);
        if (!h) byStop.set(stop, h = await hessianAt(block, weights, stop));
        out.set(name, h);
      }
      return out;
    },
    async propagate(block, weights) {
      check(block);
      const w = linearsOf(block, weights);
      await settlePrefetch(block);
      const lb = blockOn(block, w);
      const t0 = performance.now();
      const batch = new GpuBatch(gpu);
      ensureResidual(batch, block, lb, w);
      batch.phase("residual");
      // The SwiGLU output of the down projection's Hessian pass, when it was
      // computed with these weights; else computed here.
      const cached = sameKey(gFor, block, mlpKey(w));
      for (const c of chunks) {
        if (!cached) encodeMlp(batch, c, lb, "down", block);
        encodeCopy(batch, c.x, c.res, c.rows * dim);
        encodeLinear(batch, c.x, downInput(batch, c, block), lb.w2, c.rows, dim, H, true);
      }
      batch.phase("mlp");
      attFor = resFor = gFor = null;
      const pending = batch.submit([]);
      // The work is queued: the next block is read and uploaded meanwhile
      // (unless the down projection's pass started that).
      startPrefetch(block + 1);
      account(await pending, (performance.now() - t0) / 1000);
    },
    async headHessian() {
      if (disposed) throw new Error("Cannot use a disposed calibration runner");
      const norm = buffer(dim * 4, "calib:finalNorm");
      writeBuffer(gpu, norm, 0, model.finalNorm);
      const out = buffer(dim * dim * 4, "calib:xtx");
      peak = Math.max(peak, bytes);
      try {
        const batch = new GpuBatch(gpu);
        chunks.forEach((c, i) => {
          encodeRmsNorm(batch, scratch.h, c.x, norm, c.rows, dim, config.normEps);
          encodeHessian(batch, scratch.h, c.rows, dim, out, F32, i === 0 ? 0 : 1);
        });
        return (await finishHessian(batch, out, dim)).hessian;
      } finally {
        bytes -= norm.size;
        norm.destroy();
      }
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      worker?.close();
      worker = null;
      for (const h of [...live]) h.release();
      const all = [
        ...chunks.flatMap((c) => [c.x, c.att, c.res, c.g]),
        ...Object.values(scratch),
        rope,
      ]
        .filter((b): b is GPUBuffer => b !== null);
      if (uploaded !== null) {
        forgetViews(uploaded);
        all.push(...layerBuffers(uploaded.buffers));
      }
      if (next !== null) all.push(...layerBuffers(next.buffers));
      for (const b of all) b.destroy();
      for (const b of layerQuantBuffers(quant)) b.destroy();
      bytes = 0;
    },
  };
}
