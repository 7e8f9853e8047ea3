/**
 * Library-internal: one transformer block of the Llama-style forward pass on
 * WebGPU, shared by the whole-model session (`forward_gpu.ts`) and the
 * calibration runner of the pipeline (`calibration_gpu.ts`): the block's
 * weights on the GPU, its dispatches (optionally stopping once the attention
 * output is ready), and the linear products. Web-standard only.
 *
 * @module
 */

import {
  type Gpu,
  type GpuBatch,
  storageBuffer,
  uploadBuffer,
  writeBuffer,
} from "../kernels/backend.ts";
import { encodeGemm, gemmSpec } from "../kernels/gemm_kernel.ts";
import { encodeGemmTiled } from "../kernels/gemm_tiled_kernel.ts";
import { gemmTiledSpec } from "../kernels/gemm_tiled_wgsl.ts";
import { encodeAttention, encodeRmsNorm, encodeRope, encodeSwiglu } from "./_gpu_kernels.ts";
import { ropeTables } from "./_rope.ts";
import { llamaDims } from "./model.ts";
import type { LlamaConfig, LlamaLayer, LlamaLinear, RopeScaling } from "./model.ts";

/** (cos, sin) of position p and frequency i at [p·hd/2 + i], float64 rounded once. */
export function ropeTable(
  hd: number,
  theta: number,
  positions: number,
  scaling: RopeScaling | undefined,
): Float32Array {
  const { cos, sin } = ropeTables(hd, theta, positions, scaling);
  const cs = new Float32Array(cos.length * 2);
  for (let k = 0; k < cos.length; k++) {
    cs[2 * k] = cos[k]!;
    cs[2 * k + 1] = sin[k]!;
  }
  return cs;
}

/** A block's norms, biases and head norms on the GPU. */
export interface BlockVectors {
  attnNorm: GPUBuffer;
  ffnNorm: GPUBuffer;
  /** q, k and v biases side by side [qDim + 2·kvDim] (zeros for a missing one), or null. */
  bqkv: GPUBuffer | null;
  /** qNorm, then kNorm [2, hd], and the heads of a q/k row they scale, or null without either. */
  qkNorm: { weight: GPUBuffer; from: number; to: number } | null;
}

/** A block's weights on the GPU, its linears dense float32. */
export interface LayerBuffers extends BlockVectors {
  wqkv: GPUBuffer; // [qDim + 2·kvDim, dim]
  wo: GPUBuffer; // [dim, qDim]
  w13: GPUBuffer; // [2·hidden, dim]: gate rows, then up rows
  w2: GPUBuffer; // [dim, hidden]
}

/** Every buffer of a block's vectors. */
export function vectorBuffers(l: BlockVectors): GPUBuffer[] {
  const { attnNorm, ffnNorm, bqkv, qkNorm } = l;
  return [attnNorm, ffnNorm, ...(bqkv ? [bqkv] : []), ...(qkNorm ? [qkNorm.weight] : [])];
}

/** Every buffer of a block (to destroy them). */
export function layerBuffers(l: LayerBuffers): GPUBuffer[] {
  return [l.wqkv, l.wo, l.w13, l.w2, ...vectorBuffers(l)];
}

/**
 * Checks the lengths of a layer's optional bias and head-norm vectors (the
 * forward passes use those present, as the CPU one does).
 */
export function checkLayerExtras(config: LlamaConfig, layer: LlamaLayer, i: number): void {
  const { headDim, qDim, kvDim } = llamaDims(config);
  const expected = [
    ["bq", layer.bq, qDim],
    ["bk", layer.bk, kvDim],
    ["bv", layer.bv, kvDim],
    ["qNorm", layer.qNorm, headDim],
    ["kNorm", layer.kNorm, headDim],
  ] as const;
  for (const [name, v, n] of expected) {
    if (v !== undefined && v.length !== n) {
      throw new RangeError(
        `Cannot upload layer ${i}: '${name}' must have ${n} values: current length is ${v.length}`,
      );
    }
  }
}

/** The rows of several matrices, one after the other. */
export function concatRows(...parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Uploads the rows of several matrices, one after the other, into one fresh
 * buffer (each part written in place: no concatenated copy on the host).
 *
 * @param gpu The GPU.
 * @param parts The matrices' values.
 * @param label Debug label.
 * @returns The buffer.
 */
export function uploadRows(gpu: Gpu, parts: readonly Float32Array[], label: string): GPUBuffer {
  const buffer = storageBuffer(gpu, parts.reduce((n, p) => n + p.byteLength, 0), label);
  let offset = 0;
  for (const p of parts) {
    writeBuffer(gpu, buffer, offset, p);
    offset += p.byteLength;
  }
  return buffer;
}

/**
 * Uploads one block's norms, biases and head norms.
 *
 * @param gpu The GPU.
 * @param config The configuration.
 * @param l The block's weights (its linears are not read).
 * @param label Buffer label prefix.
 * @returns The buffers.
 */
export function uploadBlockVectors(
  gpu: Gpu,
  config: LlamaConfig,
  l: Omit<LlamaLayer, LlamaLinear>,
  label: string,
): BlockVectors {
  const { headDim: hd, qDim, kvDim } = llamaDims(config);
  const up = (data: Float32Array, name: string) => uploadBuffer(gpu, data, `${label}:${name}`);
  const zeros = (n: number) => new Float32Array(n);
  const anyBias = l.bq !== undefined || l.bk !== undefined || l.bv !== undefined;
  const bias = anyBias
    ? concatRows(l.bq ?? zeros(qDim), l.bk ?? zeros(kvDim), l.bv ?? zeros(kvDim))
    : null;
  // Heads [0, nHeads) of a q/k row are queries, the next nKvHeads keys.
  const qkNorm = l.qNorm === undefined && l.kNorm === undefined ? null : {
    weight: up(concatRows(l.qNorm ?? zeros(hd), l.kNorm ?? zeros(hd)), "qkNorm"),
    from: l.qNorm !== undefined ? 0 : config.nHeads,
    to: config.nHeads + (l.kNorm !== undefined ? config.nKvHeads : 0),
  };
  return {
    attnNorm: up(l.attnNorm, "attnNorm"),
    ffnNorm: up(l.ffnNorm, "ffnNorm"),
    bqkv: bias === null ? null : up(bias, "bqkv"),
    qkNorm,
  };
}

/**
 * Uploads one block's weights (q, k, v rows concatenated; gate and up rows
 * concatenated).
 *
 * @param gpu The GPU.
 * @param config The configuration.
 * @param l The block's weights.
 * @param label Buffer label prefix.
 * @returns The buffers.
 */
export function uploadBlock(
  gpu: Gpu,
  config: LlamaConfig,
  l: LlamaLayer,
  label: string,
): LayerBuffers {
  return {
    ...uploadBlockVectors(gpu, config, l, label),
    wqkv: uploadRows(gpu, [l.wq.data, l.wk.data, l.wv.data], `${label}:wqkv`),
    wo: uploadBuffer(gpu, l.wo.data, `${label}:wo`),
    w13: uploadRows(gpu, [l.w1.data, l.w3.data], `${label}:w13`),
    w2: uploadBuffer(gpu, l.w2.data, `${label}:w2`),
  };
}

/**
 * Records out (+)= x·Wᵀ for x [rows, k] and W [n, k].
 *
 * @param batch The batch.
 * @param out Output [rows, n].
 * @param x Input [rows, k].
 * @param w Weight [n, k].
 * @param rows Rows of x.
 * @param n Output width.
 * @param k Input width.
 * @param accumulate Add to `out` instead of overwriting it.
 */
export function encodeLinear(
  batch: GpuBatch,
  out: GPUBuffer,
  x: GPUBuffer,
  w: GPUBuffer,
  rows: number,
  n: number,
  k: number,
  accumulate: boolean,
): void {
  const shape = { m: rows, n, k, lda: k, ldb: k, ldc: n, alpha: 1, beta: 1 };
  const wide = !batch.gpu.software && Math.ceil(rows / 128) * Math.ceil(n / 128) >= 256;
  if (wide) {
    // The tiled kernel's fastest forward variant on the H100 (tests/bench/gemm_sweep.ts:
    // 44.9–45.7 TFLOP/s, 1.27–1.31× the large tiles below); other shapes fall back to them.
    encodeGemmTiled(batch, LINEAR_SPEC(accumulate), { c: out, a: x, b: w }, shape, {
      fallback: true,
    });
    return;
  }
  const spec = gemmSpec({ transB: true, accumulate, tile: "small" });
  encodeGemm(batch, spec, { c: out, a: x, b: w }, shape);
}

const LINEAR_SPEC = (accumulate: boolean) =>
  gemmTiledSpec({ transB: true, accumulate, bk: 16, doubleBuffer: false });

/** The activation buffers a block reads and writes. */
export interface BlockActivations {
  /** Residual stream [rows, dim]: read, and updated in place unless the block stops early. */
  readonly x: GPUBuffer;
  /** Normalized [rows, dim] (the input of q/k/v, then of gate/up). */
  readonly h: GPUBuffer;
  /** q, k, v [rows, qDim + 2·kvDim]. */
  readonly qkv: GPUBuffer;
  /** Attention output [rows, qDim] (the input of o). */
  readonly att: GPUBuffer;
  /** Gate and up [rows, 2·hidden]. */
  readonly u: GPUBuffer;
  /** SwiGLU output [rows, hidden] (the input of down); not used when stopping at `"o"`. */
  readonly g: GPUBuffer | null;
}

/**
 * Where {@linkcode encodeBlock} stops: once the attention output is in `att`
 * (`"o"`, the residual `x` untouched), or after the whole block (`"out"`, the
 * new residual in `x`).
 */
export type BlockStop = "o" | "out";

/**
 * The four products of a block: q/k/v (x = h), o (x = the attention output,
 * added to the residual), gate/up (x = h), down (x = the SwiGLU output, added
 * to the residual).
 */
export type BlockProduct = "qkv" | "o" | "gateUp" | "down";

/**
 * Records one product of a block over `rows` rows: out = x·Wᵀ for q/k/v and
 * gate/up, out += x·Wᵀ for o and down.
 */
export type ProductEncoder = (
  batch: GpuBatch,
  product: BlockProduct,
  out: GPUBuffer,
  x: GPUBuffer,
  rows: number,
) => void;

/**
 * The products of a block of dense float32 linears: the GEMM of
 * {@linkcode encodeLinear}.
 *
 * @param config The configuration.
 * @param l The block's weights.
 * @returns The product encoder.
 */
export function denseProducts(config: LlamaConfig, l: LayerBuffers): ProductEncoder {
  const { dim, hiddenDim: H } = config;
  const { qDim, kvDim } = llamaDims(config);
  const shapes = {
    qkv: [l.wqkv, qDim + 2 * kvDim, dim, false],
    o: [l.wo, dim, qDim, true],
    gateUp: [l.w13, 2 * H, dim, false],
    down: [l.w2, dim, H, true],
  } as const;
  return (batch, product, out, x, rows) => {
    const [w, n, k, accumulate] = shapes[product];
    encodeLinear(batch, out, x, w, rows, n, k, accumulate);
  };
}

/**
 * Records one block of dense float32 linears over `rows` = B·T tokens (B
 * sequences of T tokens).
 *
 * @param batch The batch.
 * @param config The configuration.
 * @param rope The rotary table of at least T positions ({@linkcode ropeTable}).
 * @param l The block's weights.
 * @param acts The activations.
 * @param rows Rows.
 * @param T Tokens per sequence.
 * @param stop Where to stop.
 */
export function encodeBlock(
  batch: GpuBatch,
  config: LlamaConfig,
  rope: GPUBuffer,
  l: LayerBuffers,
  acts: BlockActivations,
  rows: number,
  T: number,
  stop: BlockStop = "out",
): void {
  encodeBlockWith(batch, config, rope, l, denseProducts(config, l), acts, rows, T, stop);
}

/**
 * Records one block over `rows` = B·T tokens (B sequences of T tokens), its
 * linear products recorded by `products`.
 *
 * @param batch The batch.
 * @param config The configuration.
 * @param rope The rotary table of at least T positions ({@linkcode ropeTable}).
 * @param l The block's norms, biases and head norms.
 * @param products Records the block's linear products.
 * @param acts The activations.
 * @param rows Rows.
 * @param T Tokens per sequence.
 * @param stop Where to stop.
 * @param attentionInputs Records what the layer does to the q/k/v rows after the rotary
 * embedding, in place, before attention reads them (the query/key rotation and the KV cache
 * quantization of `_gpu_attention_inputs.ts`), or nothing.
 */
export function encodeBlockWith(
  batch: GpuBatch,
  config: LlamaConfig,
  rope: GPUBuffer,
  l: BlockVectors,
  products: ProductEncoder,
  acts: BlockActivations,
  rows: number,
  T: number,
  stop: BlockStop = "out",
  attentionInputs?: (batch: GpuBatch, qkv: GPUBuffer, rows: number) => void,
): void {
  const { dim, hiddenDim: H, normEps, nHeads, nKvHeads } = config;
  const { headDim: hd, qDim, kvDim } = llamaDims(config);
  const qkvW = qDim + 2 * kvDim;
  encodeRmsNorm(batch, acts.h, acts.x, l.attnNorm, rows, dim, normEps);
  products(batch, "qkv", acts.qkv, acts.h, rows);
  // The biases and q/k head norms run in the rotation's dispatch.
  encodeRope(batch, acts.qkv, rope, { rows, T, width: qDim + kvDim, ld: qkvW, hd }, {
    ...(l.bqkv ? { bias: { buffer: l.bqkv, width: qkvW } } : {}),
    ...(l.qkNorm ? { norm: { ...l.qkNorm, split: nHeads, eps: normEps } } : {}),
  });
  attentionInputs?.(batch, acts.qkv, rows);
  encodeAttention(batch, acts.att, acts.qkv, {
    rows,
    T,
    nHeads,
    nKvHeads,
    hd,
    ld: qkvW,
    kOff: qDim,
    vOff: qDim + kvDim,
  });
  if (stop === "o") return;
  if (acts.g === null) {
    throw new TypeError("encodeBlock: the whole block needs a SwiGLU buffer 'g'");
  }
  products(batch, "o", acts.x, acts.att, rows);
  encodeRmsNorm(batch, acts.h, acts.x, l.ffnNorm, rows, dim, normEps);
  products(batch, "gateUp", acts.u, acts.h, rows);
  encodeSwiglu(batch, acts.g, acts.u, rows, H);
  products(batch, "down", acts.x, acts.g, rows);
}
