/**
 * The layer-wise pipeline's calibration passes for Llama-style models on
 * WebGPU ({@linkcode llamaCalibrationRunner}, a `CalibrationRunner`): the
 * residual stream of every calibration token stays on the GPU, in chunks of
 * whole sequences; one block's weights at a time are uploaded (re-uploaded
 * only where the pipeline replaced a linear); the inputs of a group of
 * linears are recomputed chunk by chunk and their Hessian XᵀX accumulated on
 * the GPU in float32 (one submission and one read-back per group); a
 * finished block moves the residual stream on, in place. Only the Hessians
 * come back to the host. Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { type Gpu, GpuBatch, storageBuffer, writeBuffer } from "../kernels/backend.ts";
import { bindingLimit } from "../kernels/gpu_buffers.ts";
import { encodeHessian } from "../kernels/hessian_kernel.ts";
import type { Hessian } from "../hessian/hessian.ts";
import type { CalibrationRunner } from "../pipeline/model.ts";
import {
  type BlockActivations,
  type BlockStop,
  checkLayerExtras,
  encodeBlock,
  type LayerBuffers,
  layerBuffers,
  ropeTable,
  uploadBlock,
} from "./_gpu_block.ts";
import { encodeCopy, encodeRmsNorm } from "./_gpu_kernels.ts";
import { checkWindow, llamaEmbed } from "./forward.ts";
import { LLAMA_LINEARS, llamaDims } from "./model.ts";
import type { LlamaLayer, LlamaLinear, LlamaModel } from "./model.ts";

/** Options of {@linkcode llamaCalibrationRunner}. */
export interface GpuCalibrationOptions {
  /**
   * Tokens per chunk (whole sequences; at least one sequence): the scratch
   * activations are sized for one chunk, the MLP's [chunk, 2·hidden] the largest.
   * @default 8192
   */
  chunkTokens?: number;
}

/** Where each linear's input is ready in the block, and its width. */
const STOP_OF: Readonly<Record<LlamaLinear, Exclude<BlockStop, "out">>> = {
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
}

/** The block's weights on the GPU and the host tensors they were uploaded from. */
interface UploadedBlock {
  readonly index: number;
  readonly from: Readonly<Record<LlamaLinear, Tensor<"f32">>>;
  readonly buffers: LayerBuffers;
}

/**
 * A `CalibrationRunner` on WebGPU for a Llama-style model.
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
 */
export function llamaCalibrationRunner(
  gpu: Gpu,
  model: LlamaModel,
  sequences: readonly (readonly number[])[],
  options: GpuCalibrationOptions = {},
): CalibrationRunner {
  const { chunkTokens = 8192 } = options;
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
  // Chunks of whole sequences of one length, each within chunkTokens (or one sequence).
  const byLength = new Map<number, (readonly number[])[]>();
  for (const s of seqs) byLength.set(s.length, [...(byLength.get(s.length) ?? []), s]);
  const plan: { T: number; seqs: (readonly number[])[] }[] = [];
  for (const [T, group] of byLength) {
    const per = Math.max(1, Math.floor(chunkTokens / T));
    for (let i = 0; i < group.length; i += per) plan.push({ T, seqs: group.slice(i, i + per) });
  }
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
  const chunks: Chunk[] = plan.map(({ T, seqs }, i) => {
    const rows = T * seqs.length;
    const x = buffer(rows * dim * 4, `calib:x${i}`);
    writeBuffer(gpu, x, 0, llamaEmbed(model, seqs.flat()));
    return { T, rows, x };
  });
  const count = chunks.reduce((n, c) => n + c.rows, 0);
  const f = (width: number, label: string) => buffer(maxRows * width * 4, label);
  const scratch = {
    y: f(dim, "calib:y"),
    h: f(dim, "calib:h"),
    qkv: f(qDim + 2 * kvDim, "calib:qkv"),
    att: f(qDim, "calib:att"),
    u: f(2 * H, "calib:u"),
    g: f(H, "calib:g"),
  };
  const rope = writeRope();
  let peak = bytes;
  let uploaded: UploadedBlock | null = null;
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

  /** The block's weights on the GPU, re-uploaded where `weights` replaced a linear. */
  function blockOn(block: number, weights: Readonly<Record<string, Tensor<"f32">>>): LayerBuffers {
    const layer = model.layers[block]!;
    const from = {} as Record<LlamaLinear, Tensor<"f32">>;
    for (const n of LLAMA_LINEARS) {
      const w = weights[n];
      if (!w) throw new RangeError(`Cannot calibrate block ${block}: no weight for '${n}'`);
      from[n] = w;
    }
    const same = uploaded !== null && uploaded.index === block &&
      LLAMA_LINEARS.every((n) => uploaded!.from[n] === from[n]);
    if (same) return uploaded!.buffers;
    if (uploaded !== null) {
      for (const b of layerBuffers(uploaded.buffers)) {
        bytes -= b.size;
        b.destroy();
      }
    }
    const merged: LlamaLayer = { ...smallOf(layer), ...from };
    checkLayerExtras(config, merged, block);
    const buffers = uploadBlock(gpu, config, merged, `calib:${block}`);
    for (const b of layerBuffers(buffers)) bytes += b.size;
    peak = Math.max(peak, bytes);
    uploaded = { index: block, from, buffers };
    return buffers;
  }

  /** The chunk's activations: its own residual, or a scratch copy when the pass would change it. */
  function actsOf(batch: GpuBatch, c: Chunk, stop: BlockStop): BlockActivations {
    if (stop === "gateUp" || stop === "down") {
      encodeCopy(batch, scratch.y, c.x, c.rows * dim);
      return { ...scratch, x: scratch.y };
    }
    return { ...scratch, x: c.x };
  }

  async function readHessian(batch: GpuBatch, out: GPUBuffer, cols: number): Promise<Hessian> {
    const { data } = await batch.submit([out]);
    const lower = new Float32Array(data[0]!);
    const xtx = new Float64Array(cols * cols);
    const inv = 1 / count;
    for (let i = 0; i < cols; i++) {
      for (let j = 0; j <= i; j++) {
        const v = lower[i * cols + j]! * inv;
        xtx[i * cols + j] = v;
        xtx[j * cols + i] = v;
      }
    }
    return { cols, count, xtx };
  }

  async function hessianAt(
    block: number,
    weights: Readonly<Record<string, Tensor<"f32">>>,
    stop: Exclude<BlockStop, "out">,
  ): Promise<Hessian> {
    const lb = blockOn(block, weights);
    const cols = stop === "o" ? qDim : stop === "down" ? H : dim;
    const out = buffer(cols * cols * 4, "calib:xtx");
    peak = Math.max(peak, bytes);
    try {
      const batch = new GpuBatch(gpu);
      chunks.forEach((c, i) => {
        const acts = actsOf(batch, c, stop);
        encodeBlock(batch, config, rope, lb, acts, c.rows, c.T, stop);
        const input = stop === "o" ? acts.att : stop === "down" ? acts.g : acts.h;
        encodeHessian(batch, input, c.rows, cols, out, { inputs: "f32" }, i === 0 ? 0 : 1);
      });
      return await readHessian(batch, out, cols);
    } finally {
      bytes -= out.size;
      out.destroy();
    }
  }

  return {
    device: gpu.description,
    get memory() {
      return { current: bytes, peak };
    },
    async hessians(block, weights, linears) {
      check(block);
      const out = new Map<string, Hessian>();
      const byStop = new Map<Exclude<BlockStop, "out">, Hessian>();
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
      const lb = blockOn(block, weights);
      const batch = new GpuBatch(gpu);
      for (const c of chunks) {
        encodeBlock(batch, config, rope, lb, { ...scratch, x: c.x }, c.rows, c.T);
      }
      await batch.submit([]);
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
          encodeHessian(batch, scratch.h, c.rows, dim, out, { inputs: "f32" }, i === 0 ? 0 : 1);
        });
        return await readHessian(batch, out, dim);
      } finally {
        for (const b of [norm, out]) {
          bytes -= b.size;
          b.destroy();
        }
      }
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      const all = [...chunks.map((c) => c.x), ...Object.values(scratch), rope];
      if (uploaded !== null) all.push(...layerBuffers(uploaded.buffers));
      for (const b of all) b.destroy();
      bytes = 0;
    },
  };
}

/** A layer's norms and biases (not its linears, so a lazy layer is not widened). */
function smallOf(layer: LlamaLayer): Omit<LlamaLayer, LlamaLinear> {
  const { attnNorm, ffnNorm, bq, bk, bv, qNorm, kNorm } = layer;
  return {
    attnNorm,
    ffnNorm,
    ...(bq ? { bq } : {}),
    ...(bk ? { bk } : {}),
    ...(bv ? { bv } : {}),
    ...(qNorm ? { qNorm } : {}),
    ...(kNorm ? { kNorm } : {}),
  };
}
