/**
 * The Llama forward pass on WebGPU: a session uploads the weights once, and
 * each call runs a whole forward pass (embedding, RMSNorm, the fused q/k/v and
 * gate/up projections and the other linears through the register-blocked f32
 * matrix product of `kernels/gemm_kernel.ts`, or, for the GPTQ and
 * compressed-tensors pack-quantized linears a loaded checkpoint keeps packed,
 * through the low-bit `qmatmul` of `kernels/qmatmul_kernel.ts` on weights
 * that stay packed on the GPU (`_gpu_packed_block.ts`), q/k/v biases, per-head q/k
 * RMSNorm and rotary embeddings on interleaved pairs (with the configuration's
 * frequency scaling) in one dispatch, causal grouped-query attention, SwiGLU,
 * the classifier) in one submission with one read-back. A layer's activation
 * quantization (`actQuant`: int8, int4, FP8, MXFP4 and NVFP4 inputs, per
 * token or static, QUIK's kept columns) fake-quantizes each product's input
 * in place first (`_gpu_act_quant.ts`, the CPU's values exactly), and its
 * online Hadamard multiplies w2's input by the dense rotation first (one
 * GEMM; n² floats per distinct rotation). After the rotary embedding, a
 * layer's query/key Hadamard (`qkHadamard`) multiplies every query and key
 * head by its rotation and its KV cache quantization (`kvQuant`)
 * fake-quantizes the keys and values, one group per head of a token
 * (`_gpu_attention_inputs.ts`, the CPU's grid values exactly). The head width may
 * differ from dim / nHeads; a sequence longer than the sliding window is
 * refused, as on the CPU. Perplexity batches several windows into one
 * pass and reads back only the per-token negative log-likelihoods. With
 * `backend: "cpu"` (or `"auto"` without a hardware adapter) the same calls
 * run the CPU forward pass of `forward.ts`, so callers need no second code
 * path. Web-standard only (`navigator.gpu`; Deno needs `--unstable-webgpu`).
 *
 * @module
 */

import { modelBackend } from "./_model_backend.ts";
import {
  type Backend,
  type Gpu,
  GpuBatch,
  storageBuffer,
  uploadBuffer,
  writeBuffer,
} from "../kernels/backend.ts";
import { asFloat32 } from "../core/convert.ts";
import { encodeEmbed, encodeNll, encodeRmsNorm } from "./_gpu_kernels.ts";
import { checkTokenIds, checkWindow, llamaForward } from "./forward.ts";
import {
  checkLayerExtras,
  denseProducts,
  encodeBlockWith,
  encodeLinear,
  type LayerBuffers,
  layerBuffers,
  ropeTable,
  uploadBlock,
} from "./_gpu_block.ts";
import { allocateScratch, type LinearScratch } from "./_decode_linears.ts";
import {
  destroyPackedBlock,
  packedBlockLinearBytes,
  packedBlockScratch,
  type PackedLayerBuffers,
  packedLinearCount,
  packedProducts,
  uploadPackedBlock,
} from "./_gpu_packed_block.ts";
import { withActQuantProducts } from "./_gpu_act_quant.ts";
import {
  attentionInputsHook,
  checkLayerQuant,
  type GpuLayerQuant,
  layerQuantBuffers,
  uploadLayerQuant,
  WEBGPU_LAYER_QUANT,
} from "./_gpu_layer_quant.ts";
import { cpuOnlyFeature, LLAMA_LINEARS, llamaDims } from "./model.ts";
import type { LlamaModel } from "./model.ts";
import { perplexity, planWindows } from "./perplexity.ts";
import type { PerplexityOptions, PerplexityResult } from "./perplexity.ts";

/** Options of {@linkcode llamaSession} and {@linkcode llamaForwardGpu}. */
export interface LlamaSessionOptions {
  /**
   * Where the forward pass runs: `"webgpu"` on any adapter (throws without
   * one), `"auto"` on a hardware adapter and else on the CPU, `"cpu"` on the CPU.
   * @default "auto"
   */
  backend?: Backend;
}

/** A model ready to run: on the GPU, its weights uploaded once. */
export interface LlamaSession {
  /** Where the passes run. */
  readonly backend: "cpu" | "webgpu";
  /** The model (its weights were copied at creation; later changes are not seen). */
  readonly model: LlamaModel;
  /** GPU seconds of the last pass (NaN on the CPU or without timestamp queries). */
  readonly gpuSeconds: number;
  /**
   * The block linears on the GPU: how many run packed through `qmatmul`
   * (a loaded GPTQ or pack-quantized checkpoint's), how many through the
   * dense float32 GEMM, and the bytes all of them take (all 0 on the CPU).
   */
  readonly linears: SessionLinears;
  /**
   * Logits of every position of one sequence (positions start at 0).
   *
   * @param tokens Token ids.
   * @returns Logits [T, vocab], row-major.
   * @throws {RangeError} (as a rejection) for an id outside the vocabulary or a sequence
   * longer than the sliding window.
   */
  forward(tokens: ArrayLike<number>): Promise<Float32Array>;
  /**
   * Summed negative log-likelihood of `targets[i][t]` after `inputs[i][0..t]`,
   * all sequences in one pass (shorter ones padded at the end, which the causal
   * mask keeps from affecting the scored positions).
   *
   * @param inputs Token sequences, each from position 0.
   * @param targets The next token at each position of each sequence.
   * @returns The NLL sum in nats and the number of scored tokens.
   * @throws {RangeError} (as a rejection) for mismatched sequences or ones longer than the
   * sliding window.
   */
  nll(
    inputs: readonly ArrayLike<number>[],
    targets: readonly ArrayLike<number>[],
  ): Promise<{ nll: number; tokens: number }>;
  /** Frees the GPU buffers; the session must not be used afterwards. */
  dispose(): void;
}

/** What a session holds of the block linears ({@linkcode LlamaSession.linears}). */
export interface SessionLinears {
  /** Linears running packed through `qmatmul`. */
  readonly packed: number;
  /** Linears running dense (float32). */
  readonly dense: number;
  /** Bytes of all the block linears on the GPU. */
  readonly bytes: number;
}

function checkTokens(tokens: ArrayLike<number>, vocabSize: number, what: string): void {
  if (tokens.length < 1) throw new RangeError(`Cannot run ${what} on an empty token sequence`);
  checkTokenIds(tokens, vocabSize);
}

function checkPairs(
  inputs: readonly ArrayLike<number>[],
  targets: readonly ArrayLike<number>[],
  vocabSize: number,
): void {
  if (inputs.length !== targets.length || inputs.length === 0) {
    throw new RangeError(
      `Cannot score: ${inputs.length} input sequences and ${targets.length} target sequences`,
    );
  }
  inputs.forEach((input, i) => {
    checkTokens(input, vocabSize, "the forward pass");
    if (targets[i]!.length !== input.length) {
      throw new RangeError(
        `Cannot score sequence ${i}: ${input.length} inputs but ${targets[i]!.length} targets`,
      );
    }
    checkTokens(targets[i]!, vocabSize, "scoring");
  });
}

/** log Σ exp(row) − row[target], in float64. */
function rowNll(logits: Float32Array, offset: number, V: number, target: number): number {
  let max = -Infinity;
  for (let v = 0; v < V; v++) if (logits[offset + v]! > max) max = logits[offset + v]!;
  let sum = 0;
  for (let v = 0; v < V; v++) sum += Math.exp(logits[offset + v]! - max);
  return Math.log(sum) + max - logits[offset + target]!;
}

function cpuSession(model: LlamaModel): LlamaSession {
  const V = model.config.vocabSize;
  return {
    backend: "cpu",
    model,
    gpuSeconds: NaN,
    linears: { packed: 0, dense: 0, bytes: 0 },
    forward(tokens) {
      return Promise.resolve(llamaForward(model, tokens));
    },
    nll(inputs, targets) {
      checkPairs(inputs, targets, V);
      let nll = 0, tokens = 0;
      inputs.forEach((input, i) => {
        const logits = llamaForward(model, input);
        for (let t = 0; t < input.length; t++) nll += rowNll(logits, t * V, V, targets[i]![t]!);
        tokens += input.length;
      });
      return Promise.resolve({ nll, tokens });
    },
    dispose() {},
  };
}

interface Activations {
  rows: number;
  tokens: GPUBuffer; // u32 [rows]
  targets: GPUBuffer; // i32 [rows]
  x: GPUBuffer; // [rows, dim] residual stream
  h: GPUBuffer; // [rows, dim] normalized
  qkv: GPUBuffer; // [rows, qDim + 2·kvDim]
  att: GPUBuffer; // [rows, qDim]
  u: GPUBuffer; // [rows, 2·hidden]
  g: GPUBuffer; // [rows, hidden]
  logits: GPUBuffer; // [rows, vocab]
  nll: GPUBuffer; // [rows]
}

/** A block on the GPU: dense float32 linears, or some kept packed. */
type SessionBlock =
  | { readonly kind: "dense"; readonly buffers: LayerBuffers }
  | { readonly kind: "packed"; readonly buffers: PackedLayerBuffers };

class GpuLlamaSession implements LlamaSession {
  readonly backend = "webgpu" as const;
  readonly model: LlamaModel;
  gpuSeconds = NaN;
  readonly linears: SessionLinears;
  readonly #gpu: Gpu;
  readonly #embedding: GPUBuffer;
  readonly #classifier: GPUBuffer;
  readonly #finalNorm: GPUBuffer;
  readonly #layers: SessionBlock[];
  /**
   * Each layer's activation quantizations, online Hadamard Qᵀ [hidden, hidden]
   * (shared by layers with the same one), query/key rotation and KV cache quantization.
   */
  readonly #quant: GpuLayerQuant[];
  #rope: { buffer: GPUBuffer; positions: number } | null = null;
  #acts: Activations | null = null;
  /** Scratch of the packed blocks' products (null until a pass needs it; see `#scratchFor`). */
  #scratch: LinearScratch | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;

  constructor(gpu: Gpu, model: LlamaModel) {
    // Everything is checked before the first upload.
    model.layers.forEach((l, i) => {
      checkLayerExtras(model.config, l, i);
      checkLayerQuant(model.config, l, i);
    });
    this.#gpu = gpu;
    this.model = model;
    const up = (data: Float32Array, label: string) => uploadBuffer(gpu, data, label);
    this.#embedding = up(asFloat32(model.tokenEmbedding), "llama:embedding");
    this.#classifier = model.classifier === model.tokenEmbedding
      ? this.#embedding
      : up(asFloat32(model.classifier), "llama:classifier");
    this.#finalNorm = up(model.finalNorm, "llama:finalNorm");
    // A block with linears kept packed runs them through qmatmul; others upload dense.
    this.#layers = model.layers.map((l, i): SessionBlock =>
      packedLinearCount(l) > 0
        ? { kind: "packed", buffers: uploadPackedBlock(gpu, model.config, l, `llama:${i}`) }
        : { kind: "dense", buffers: uploadBlock(gpu, model.config, l, `llama:${i}`) }
    );
    this.#quant = uploadLayerQuant(gpu, model.config, model.layers, "llama");
    let packed = 0, bytes = 0;
    for (const b of this.#layers) {
      if (b.kind === "packed") {
        packed += b.buffers.packed;
        bytes += packedBlockLinearBytes(b.buffers);
      } else {
        const { wqkv, wo, w13, w2 } = b.buffers;
        bytes += wqkv.size + wo.size + w13.size + w2.size;
      }
    }
    this.linears = { packed, dense: LLAMA_LINEARS.length * model.layers.length - packed, bytes };
  }

  #ropeFor(T: number): GPUBuffer {
    if (this.#rope === null || this.#rope.positions < T) {
      this.#rope?.buffer.destroy();
      const { config } = this.model;
      const positions = Math.max(T, config.seqLen);
      const table = ropeTable(llamaDims(config).headDim, config.ropeTheta, positions, config.rope);
      this.#rope = { buffer: uploadBuffer(this.#gpu, table, "llama:rope"), positions };
    }
    return this.#rope.buffer;
  }

  #activations(rows: number): Activations {
    if (this.#acts !== null && this.#acts.rows >= rows) return this.#acts;
    if (this.#acts !== null) {
      for (const b of Object.values(this.#acts)) if (typeof b !== "number") b.destroy();
    }
    const { dim, hiddenDim, vocabSize } = this.model.config;
    const { qDim, kvDim } = llamaDims(this.model.config);
    const gpu = this.#gpu;
    const f = (width: number, label: string) => storageBuffer(gpu, rows * width * 4, label);
    this.#acts = {
      rows,
      tokens: f(1, "llama:tokens"),
      targets: f(1, "llama:targets"),
      x: f(dim, "llama:x"),
      h: f(dim, "llama:h"),
      qkv: f(qDim + 2 * kvDim, "llama:qkv"),
      att: f(qDim, "llama:att"),
      u: f(2 * hiddenDim, "llama:u"),
      g: f(hiddenDim, "llama:g"),
      logits: f(vocabSize, "llama:logits"),
      nll: f(1, "llama:nll"),
    };
    return this.#acts;
  }

  /**
   * Scratch of the packed blocks' products over `rows` rows (grown when a
   * pass needs more: fewer rows may split K and need more partials).
   */
  #scratchFor(rows: number): LinearScratch | null {
    const needs = this.#layers.flatMap((b) =>
      b.kind === "packed" ? packedBlockScratch(this.#gpu, b.buffers, rows) : []
    );
    if (needs.length === 0) return null;
    const old = this.#scratch;
    if (old !== null) {
      const keys = Object.keys(old) as (keyof LinearScratch)[];
      if (keys.every((k) => needs.every((n) => n[k] <= old[k].size))) return old;
      for (const b of Object.values(old)) b.destroy();
      needs.push({
        y: old.y.size,
        delta: old.delta.size,
        gather: old.gather.size,
        partials: old.partials.size,
      });
    }
    this.#scratch = allocateScratch(this.#gpu, needs, "llama:linears");
    return this.#scratch;
  }

  /** Records the forward pass of `rows` = B·T tokens into logits. */
  #encode(batch: GpuBatch, acts: Activations, rows: number, T: number): void {
    const { config } = this.model;
    const { dim, vocabSize: V, normEps } = config;
    const rope = this.#ropeFor(T);
    const scratch = this.#scratchFor(rows);
    encodeEmbed(batch, acts.x, this.#embedding, acts.tokens, rows, dim);
    for (const [i, { kind, buffers }] of this.#layers.entries()) {
      const quant = this.#quant[i]!, qt = quant.hadamard;
      const products = withActQuantProducts(
        kind === "dense" ? denseProducts(config, buffers) : packedProducts(buffers, scratch!),
        quant.actQuant,
        // u (gate and up, [rows, 2·hidden]) is free once SwiGLU has read it.
        qt === null ? null : { qt, n: config.hiddenDim, scratch: acts.u },
      );
      const inputs = attentionInputsHook(config, quant);
      encodeBlockWith(batch, config, rope, buffers, products, acts, rows, T, "out", inputs);
    }
    encodeRmsNorm(batch, acts.h, acts.x, this.#finalNorm, rows, dim, normEps);
    encodeLinear(batch, acts.logits, acts.h, this.#classifier, rows, V, dim, false);
  }

  /** Runs B sequences of T tokens (row-major ids) and reads back logits or NLLs. */
  #run(ids: Uint32Array, T: number, targets: Int32Array | null): Promise<Float32Array> {
    const next = this.#queue.then(async () => {
      if (this.#disposed) throw new Error("Cannot run a disposed Llama session");
      const rows = ids.length;
      const acts = this.#activations(rows);
      writeBuffer(this.#gpu, acts.tokens, 0, ids);
      const batch = new GpuBatch(this.#gpu);
      this.#encode(batch, acts, rows, T);
      const V = this.model.config.vocabSize;
      let read = { buffer: acts.logits, offset: 0, size: rows * V * 4 };
      if (targets !== null) {
        writeBuffer(this.#gpu, acts.targets, 0, targets);
        encodeNll(batch, acts.nll, acts.logits, acts.targets, rows, V);
        read = { buffer: acts.nll, offset: 0, size: rows * 4 };
      }
      const { data, gpuSeconds } = await batch.submit([read]);
      this.gpuSeconds = gpuSeconds;
      return new Float32Array(data[0]!);
    });
    this.#queue = next.catch(() => {});
    return next;
  }

  forward(tokens: ArrayLike<number>): Promise<Float32Array> {
    try {
      checkTokens(tokens, this.model.config.vocabSize, "the forward pass");
      checkWindow(this.model.config, tokens.length);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#run(Uint32Array.from(tokens), tokens.length, null);
  }

  async nll(
    inputs: readonly ArrayLike<number>[],
    targets: readonly ArrayLike<number>[],
  ): Promise<{ nll: number; tokens: number }> {
    checkPairs(inputs, targets, this.model.config.vocabSize);
    const T = Math.max(...inputs.map((s) => s.length));
    checkWindow(this.model.config, T);
    const ids = new Uint32Array(inputs.length * T);
    const tg = new Int32Array(inputs.length * T).fill(-1);
    let tokens = 0;
    inputs.forEach((input, i) => {
      for (let t = 0; t < input.length; t++) {
        ids[i * T + t] = input[t]!;
        tg[i * T + t] = targets[i]![t]!;
      }
      tokens += input.length;
    });
    const perRow = await this.#run(ids, T, tg);
    let nll = 0;
    for (let r = 0; r < perRow.length; r++) if (tg[r]! >= 0) nll += perRow[r]!;
    return { nll, tokens };
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    const buffers = new Set<GPUBuffer>([this.#embedding, this.#classifier, this.#finalNorm]);
    const packed: PackedLayerBuffers[] = [];
    for (const l of this.#layers) {
      if (l.kind === "packed") packed.push(l.buffers);
      else for (const b of layerBuffers(l.buffers)) buffers.add(b);
    }
    for (const b of layerQuantBuffers(this.#quant)) buffers.add(b);
    if (this.#rope) buffers.add(this.#rope.buffer);
    if (this.#acts) {
      for (const b of Object.values(this.#acts)) if (typeof b !== "number") buffers.add(b);
    }
    if (this.#scratch) { for (const b of Object.values(this.#scratch)) buffers.add(b); }
    // Buffers of a pass still in flight are freed once it has finished.
    this.#queue.then(() => {
      for (const b of buffers) b.destroy();
      for (const l of packed) destroyPackedBlock(l);
    });
  }
}

/** What the WebGPU forward pass runs of the CPU-only features. */
const WEBGPU_FORWARD = WEBGPU_LAYER_QUANT;

/**
 * What in a model the WebGPU forward pass (of {@linkcode llamaSession},
 * `logits` and perplexity) does not run, or null: different activation
 * quantizations of linears that share a product (wq, wk, wv; w1, w3). It
 * runs every other activation quantization, the online Hadamard before w2,
 * the query/key Hadamard and KV cache quantization.
 *
 * @param model The model.
 * @returns A description naming the layer and the field, or null.
 */
export function webgpuForwardFeature(model: LlamaModel): string | null {
  return cpuOnlyFeature(model, WEBGPU_FORWARD);
}

/**
 * A session that runs the forward pass of one model, on WebGPU when the
 * backend resolves to it (weights uploaded once, each pass one submission and
 * one read-back), else on the CPU.
 *
 * @example
 * ```ts ignore
 * import { loadLlama2c } from "./llama2c.ts";
 * import { llamaSession } from "./forward_gpu.ts";
 * const model = await loadLlama2c("stories260K.bin");
 * const session = await llamaSession(model, { backend: "webgpu" });
 * const logits = await session.forward([1, 403, 407]); // [3, 512]
 * session.dispose();
 * ```
 * @param model The model.
 * @param options The backend.
 * @returns The session (dispose it to free GPU memory).
 * @throws {Error} with `backend: "webgpu"` when no adapter exists.
 * @throws {RangeError} on WebGPU for a bias or head-norm vector of the wrong length.
 */
export async function llamaSession(
  model: LlamaModel,
  options: LlamaSessionOptions = {},
): Promise<LlamaSession> {
  const { backend = "auto" } = options;
  const gpu = await modelBackend(model, backend, "the Llama forward pass", WEBGPU_FORWARD);
  return gpu === null ? cpuSession(model) : new GpuLlamaSession(gpu, model);
}

/**
 * Logits of every position of a sequence, on the chosen backend (a one-shot
 * {@linkcode llamaSession}: use a session for repeated passes).
 *
 * @example
 * ```ts ignore
 * const logits = await llamaForwardGpu(model, [1, 403, 407], { backend: "webgpu" });
 * ```
 * @param model The model.
 * @param tokens Token ids.
 * @param options The backend.
 * @returns Logits [T, vocab], row-major.
 */
export async function llamaForwardGpu(
  model: LlamaModel,
  tokens: ArrayLike<number>,
  options: LlamaSessionOptions = {},
): Promise<Float32Array> {
  const session = await llamaSession(model, options);
  try {
    return await session.forward(tokens);
  } finally {
    session.dispose();
  }
}

/** Options of {@linkcode sessionPerplexity}. */
export interface SessionPerplexityOptions extends PerplexityOptions {
  /**
   * Windows per GPU pass. @default as many as fit in 4096 rows (at least 1)
   */
  windowsPerPass?: number;
}

/** Options of {@linkcode perplexityGpu}. */
export interface PerplexityGpuOptions extends SessionPerplexityOptions, LlamaSessionOptions {}

/**
 * Perplexity over non-overlapping windows through a session (the same windows
 * and result as `perplexity()` up to float32 rounding), several windows per
 * GPU pass with only the per-token log-likelihoods read back; on a CPU
 * session it is `perplexity()` itself.
 *
 * @example
 * ```ts ignore
 * const session = await llamaSession(model, { backend: "webgpu" });
 * const wiki = await sessionPerplexity(session, wikiIds, { seqLen: 256 });
 * const stories = await sessionPerplexity(session, storyIds, { seqLen: 256 });
 * session.dispose();
 * ```
 * @param session The session (its model is evaluated).
 * @param stream Token ids.
 * @param options Window length, cap, progress, windows per pass.
 * @returns Perplexity, mean NLL and the count of scored tokens.
 * @throws {RangeError} for invalid options, fewer than 2 tokens, or windows longer than the
 * model's sliding window.
 */
export async function sessionPerplexity(
  session: LlamaSession,
  stream: ArrayLike<number>,
  options: SessionPerplexityOptions = {},
): Promise<PerplexityResult> {
  const plan = planWindows(session.model, stream.length, options);
  checkWindow(session.model.config, Math.min(plan.seqLen, plan.n - 1));
  const { windowsPerPass = Math.max(1, Math.floor(4096 / plan.seqLen)), onProgress } = options;
  if (!(Number.isInteger(windowsPerPass) && windowsPerPass >= 1)) {
    throw new RangeError(
      `Cannot evaluate as 'windowsPerPass' must be a positive integer: current value is ${windowsPerPass}`,
    );
  }
  if (session.backend === "cpu") return perplexity(session.model, stream, options);
  let nll = 0, tokens = 0;
  for (let w0 = 0; w0 < plan.windows; w0 += windowsPerPass) {
    const inputs: number[][] = [], targets: number[][] = [];
    for (let w = w0; w < Math.min(w0 + windowsPerPass, plan.windows); w++) {
      const s = w * plan.seqLen;
      const end = Math.min(s + plan.seqLen, plan.n - 1);
      inputs.push(Array.from({ length: end - s }, (_, i) => stream[s + i]!));
      targets.push(Array.from({ length: end - s }, (_, i) => stream[s + i + 1]!));
    }
    const r = await session.nll(inputs, targets);
    nll += r.nll;
    tokens += r.tokens;
    onProgress?.(tokens, plan.n - 1);
  }
  return { perplexity: Math.exp(nll / tokens), nll: nll / tokens, tokens, windows: plan.windows };
}

/**
 * Perplexity over non-overlapping windows on the chosen backend: a one-shot
 * session (weights uploaded, then freed) around {@linkcode sessionPerplexity}.
 *
 * @example
 * ```ts ignore
 * const { perplexity } = await perplexityGpu(model, ids, { seqLen: 256, backend: "webgpu" });
 * ```
 * @param model The model.
 * @param stream Token ids.
 * @param options Window length, cap, progress, backend, windows per pass.
 * @returns Perplexity, mean NLL and the count of scored tokens.
 * @throws {RangeError} for invalid options, fewer than 2 tokens, or windows longer than the
 * model's sliding window.
 */
export async function perplexityGpu(
  model: LlamaModel,
  stream: ArrayLike<number>,
  options: PerplexityGpuOptions = {},
): Promise<PerplexityResult> {
  // Refuse bad options and windows longer than the model's before touching the GPU.
  const plan = planWindows(model, stream.length, options);
  checkWindow(model.config, Math.min(plan.seqLen, plan.n - 1));
  const session = await llamaSession(model, options);
  try {
    return await sessionPerplexity(session, stream, options);
  } finally {
    session.dispose();
  }
}
