/**
 * The Llama forward pass on WebGPU: a session uploads the weights once, and
 * each call runs a whole forward pass (embedding, RMSNorm, the fused q/k/v and
 * gate/up projections and the other linears through the register-blocked f32
 * matrix product of `kernels/gemm_kernel.ts`, q/k/v biases, per-head q/k
 * RMSNorm and rotary embeddings on interleaved pairs (with the configuration's
 * frequency scaling) in one dispatch, causal grouped-query attention, SwiGLU,
 * the classifier) in one submission with one read-back. The head width may
 * differ from dim / nHeads; a sequence longer than the sliding window is
 * refused, as on the CPU. Perplexity batches several windows into one
 * pass and reads back only the per-token negative log-likelihoods. With
 * `backend: "cpu"` (or `"auto"` without a hardware adapter) the same calls
 * run the CPU forward pass of `forward.ts`, so callers need no second code
 * path. Web-standard only (`navigator.gpu`; Deno needs `--unstable-webgpu`).
 *
 * @module
 */

import {
  type Backend,
  type Gpu,
  GpuBatch,
  resolveBackend,
  storageBuffer,
  uploadBuffer,
  writeBuffer,
} from "../kernels/backend.ts";
import { encodeGemm, gemmSpec } from "../kernels/gemm_kernel.ts";
import { asFloat32 } from "../core/convert.ts";
import {
  encodeAttention,
  encodeEmbed,
  encodeNll,
  encodeRmsNorm,
  encodeRope,
  encodeSwiglu,
} from "./_gpu_kernels.ts";
import { checkTokenIds, checkWindow, llamaForward } from "./forward.ts";
import { ropeTables } from "./_rope.ts";
import { llamaDims } from "./model.ts";
import type { LlamaConfig, LlamaLayer, LlamaModel, RopeScaling } from "./model.ts";
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

/** (cos, sin) of position p and frequency i at [p·hd/2 + i], float64 rounded once. */
function ropeTable(
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

interface LayerBuffers {
  attnNorm: GPUBuffer;
  wqkv: GPUBuffer; // [qDim + 2·kvDim, dim]
  wo: GPUBuffer; // [dim, qDim]
  ffnNorm: GPUBuffer;
  w13: GPUBuffer; // [2·hidden, dim]: gate rows, then up rows
  w2: GPUBuffer; // [dim, hidden]
  /** q, k and v biases side by side [qDim + 2·kvDim] (zeros for a missing one), or null. */
  bqkv: GPUBuffer | null;
  /** qNorm, then kNorm [2, hd], and the heads of a q/k row they scale, or null without either. */
  qkNorm: { weight: GPUBuffer; from: number; to: number } | null;
}

function layerBuffers(l: LayerBuffers): GPUBuffer[] {
  const { attnNorm, wqkv, wo, ffnNorm, w13, w2, bqkv, qkNorm } = l;
  return [
    attnNorm,
    wqkv,
    wo,
    ffnNorm,
    w13,
    w2,
    ...(bqkv ? [bqkv] : []),
    ...(qkNorm ? [qkNorm.weight] : []),
  ];
}

/**
 * Checks the lengths of a layer's optional bias and head-norm vectors (the
 * forward passes use those present, as the CPU one does).
 */
function checkLayerExtras(config: LlamaConfig, layer: LlamaLayer, i: number): void {
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

function concatRows(...parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

class GpuLlamaSession implements LlamaSession {
  readonly backend = "webgpu" as const;
  readonly model: LlamaModel;
  gpuSeconds = NaN;
  readonly #gpu: Gpu;
  readonly #embedding: GPUBuffer;
  readonly #classifier: GPUBuffer;
  readonly #finalNorm: GPUBuffer;
  readonly #layers: LayerBuffers[];
  #rope: { buffer: GPUBuffer; positions: number } | null = null;
  #acts: Activations | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;

  constructor(gpu: Gpu, model: LlamaModel) {
    model.layers.forEach((l, i) => checkLayerExtras(model.config, l, i));
    this.#gpu = gpu;
    this.model = model;
    const up = (data: Float32Array, label: string) => uploadBuffer(gpu, data, label);
    this.#embedding = up(asFloat32(model.tokenEmbedding), "llama:embedding");
    this.#classifier = model.classifier === model.tokenEmbedding
      ? this.#embedding
      : up(asFloat32(model.classifier), "llama:classifier");
    this.#finalNorm = up(model.finalNorm, "llama:finalNorm");
    const { config } = model;
    const { headDim: hd, qDim, kvDim } = llamaDims(config);
    const zeros = (n: number) => new Float32Array(n);
    this.#layers = model.layers.map((l, i) => {
      const anyBias = l.bq !== undefined || l.bk !== undefined || l.bv !== undefined;
      const bias = anyBias
        ? concatRows(l.bq ?? zeros(qDim), l.bk ?? zeros(kvDim), l.bv ?? zeros(kvDim))
        : null;
      // Heads [0, nHeads) of a q/k row are queries, the next nKvHeads keys.
      const qkNorm = l.qNorm === undefined && l.kNorm === undefined ? null : {
        weight: up(concatRows(l.qNorm ?? zeros(hd), l.kNorm ?? zeros(hd)), `llama:${i}:qkNorm`),
        from: l.qNorm !== undefined ? 0 : config.nHeads,
        to: config.nHeads + (l.kNorm !== undefined ? config.nKvHeads : 0),
      };
      return {
        attnNorm: up(l.attnNorm, `llama:${i}:attnNorm`),
        wqkv: up(concatRows(l.wq.data, l.wk.data, l.wv.data), `llama:${i}:wqkv`),
        wo: up(l.wo.data, `llama:${i}:wo`),
        ffnNorm: up(l.ffnNorm, `llama:${i}:ffnNorm`),
        w13: up(concatRows(l.w1.data, l.w3.data), `llama:${i}:w13`),
        w2: up(l.w2.data, `llama:${i}:w2`),
        bqkv: bias === null ? null : up(bias, `llama:${i}:bqkv`),
        qkNorm,
      };
    });
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

  /** Records the forward pass of `rows` = B·T tokens into logits. */
  #encode(batch: GpuBatch, acts: Activations, rows: number, T: number): void {
    const { config } = this.model;
    const { dim, hiddenDim: H, vocabSize: V, normEps, nHeads, nKvHeads } = config;
    const { headDim: hd, qDim, kvDim } = llamaDims(config);
    const qkvW = qDim + 2 * kvDim;
    const rope = this.#ropeFor(T);
    const linear = (
      out: GPUBuffer,
      x: GPUBuffer,
      w: GPUBuffer,
      n: number,
      k: number,
      accumulate: boolean,
    ) => {
      const wide = !this.#gpu.software && Math.ceil(rows / 128) * Math.ceil(n / 128) >= 256;
      const spec = gemmSpec({ transB: true, accumulate, tile: wide ? "large" : "small" });
      encodeGemm(batch, spec, { c: out, a: x, b: w }, {
        m: rows,
        n,
        k,
        lda: k,
        ldb: k,
        ldc: n,
        alpha: 1,
        beta: 1,
      });
    };
    encodeEmbed(batch, acts.x, this.#embedding, acts.tokens, rows, dim);
    for (const l of this.#layers) {
      encodeRmsNorm(batch, acts.h, acts.x, l.attnNorm, rows, dim, normEps);
      linear(acts.qkv, acts.h, l.wqkv, qkvW, dim, false);
      // The biases and q/k head norms run in the rotation's dispatch.
      encodeRope(batch, acts.qkv, rope, { rows, T, width: qDim + kvDim, ld: qkvW, hd }, {
        ...(l.bqkv ? { bias: { buffer: l.bqkv, width: qkvW } } : {}),
        ...(l.qkNorm ? { norm: { ...l.qkNorm, split: nHeads, eps: normEps } } : {}),
      });
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
      linear(acts.x, acts.att, l.wo, dim, qDim, true);
      encodeRmsNorm(batch, acts.h, acts.x, l.ffnNorm, rows, dim, normEps);
      linear(acts.u, acts.h, l.w13, 2 * H, dim, false);
      encodeSwiglu(batch, acts.g, acts.u, rows, H);
      linear(acts.x, acts.g, l.w2, dim, H, true);
    }
    encodeRmsNorm(batch, acts.h, acts.x, this.#finalNorm, rows, dim, normEps);
    linear(acts.logits, acts.h, this.#classifier, V, dim, false);
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
    for (const l of this.#layers) for (const b of layerBuffers(l)) buffers.add(b);
    if (this.#rope) buffers.add(this.#rope.buffer);
    if (this.#acts) {
      for (const b of Object.values(this.#acts)) if (typeof b !== "number") buffers.add(b);
    }
    // Buffers of a pass still in flight are freed once it has finished.
    this.#queue.then(() => {
      for (const b of buffers) b.destroy();
    });
  }
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
  const gpu = await resolveBackend(backend, "the Llama forward pass");
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
