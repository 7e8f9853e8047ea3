/**
 * Library-internal: greedy decoding of a Llama-style model on WebGPU with a
 * KV cache. The weights are uploaded once; the cache holds [maxTokens, kvDim]
 * keys and values per layer; the position counter and the last chosen token
 * stay on the GPU. The prompt runs in one submission (every block over all
 * its rows, filling the cache, then the head on its last row), and each
 * further token in one submission of a recorded program (`_gpu_program.ts`):
 * every block, final norm, classifier, then the argmax, which writes the
 * token into the token buffer and into a history by position, advances the
 * position, and gathers the token's embedding row as the next step's input.
 * Only the 4 bytes of each token come back, and since the GPU feeds itself,
 * up to `inFlight` steps are on their way before the first of them is read
 * (a stop token found late only discards the steps already queued).
 * `stepsPerSubmission` steps share one command buffer and one compute pass,
 * their tokens copied out of the history together.
 *
 * The order of the host's work follows from how Deno maps a buffer:
 * `mapAsync` blocks the thread until the GPU has run everything submitted
 * (a waiting device poll), and its promise resolves about 10 ms later. So
 * each submission's read-backs are mapped only once the next submission is
 * encoded, which then goes in as soon as the map returns: the GPU idles for
 * a submit, not for the encoding of a submission (which, mapped at once,
 * left it idle about 0.25 ms a step at 1B shapes). Web-standard only.
 *
 * @module
 */

import { asFloat32 } from "../core/convert.ts";
import {
  bindingLimit,
  type Gpu,
  storageBuffer,
  uploadBuffer,
  writeBuffer,
} from "../kernels/backend.ts";
import { encodeEmbed, encodeRope } from "./_gpu_kernels.ts";
import { checkLayerExtras, concatRows, encodeLinear, ropeTable } from "./_gpu_block.ts";
import { type BlockActQuant, encodeActQuant } from "./_gpu_act_quant.ts";
import {
  attentionInputsHook,
  checkLayerQuant,
  type GpuLayerQuant,
  layerQuantBuffers,
  uploadLayerQuant,
} from "./_gpu_layer_quant.ts";
import {
  argmaxScratchBytes,
  encodeAddRmsNorm,
  encodeArgmax,
  encodeEmbedF16,
  encodeRopeRows,
  encodeSliceCopy,
} from "./_gpu_decode.ts";
import {
  allocateScratch,
  destroyLinear,
  encodeGateUp,
  encodeLinearGroup,
  type GpuLinear,
  type LinearScratch,
  linearScratchBytes,
  linearTakesNorm,
  uploadLinear,
} from "./_decode_linears.ts";
import type { QmatmulNorm } from "../kernels/qmatmul_kernel.ts";
import {
  attentionRotates,
  type CachedAttentionKernel,
  encodeCachedAttention,
  rowAttentionFits,
  splitAttentionFits,
  splitAttentionScratchBytes,
  splitAttentionSplits,
} from "./_gpu_cached_attention.ts";
import { encodeGemv, gemvRowLength, toF16, uploadGemvWeight } from "./_gpu_gemv.ts";
import { type GpuProgram, ProgramRecorder } from "./_gpu_program.ts";
import type { BlockLinears } from "./linear_weight.ts";
import { llamaDims } from "./model.ts";
import type { LlamaLinear, LlamaModel } from "./model.ts";

/** What the decoder keeps of one block. */
interface DecodeLayer {
  readonly attnNorm: GPUBuffer;
  readonly ffnNorm: GPUBuffer;
  readonly qkv: GpuLinear;
  readonly o: GpuLinear;
  readonly up: GpuLinear;
  readonly down: GpuLinear;
  readonly bqkv: GPUBuffer | null;
  readonly qkNorm: { weight: GPUBuffer; from: number; to: number } | null;
  /** Keys and values [maxTokens, kvDim]. */
  readonly cache: { readonly k: GPUBuffer; readonly v: GPUBuffer };
  /** Activation quantization, online Hadamard, query/key rotation, KV cache quantization. */
  readonly quant: GpuLayerQuant;
}

/** Activations of `rows` rows. */
interface Rows {
  readonly rows: number;
  readonly x: GPUBuffer;
  readonly h: GPUBuffer;
  readonly qkv: GPUBuffer;
  readonly att: GPUBuffer;
  readonly u: GPUBuffer;
  readonly g: GPUBuffer;
  /** (cos, sin) rows of the current positions [rows, hd]. */
  readonly rope: GPUBuffer;
  readonly scratch: LinearScratch;
}

/** Options of {@linkcode GpuDecoder}. */
export interface GpuDecoderOptions {
  readonly weights: "f32" | "f16";
  readonly maxTokens: number;
  readonly linears: readonly BlockLinears[];
  /** The decode step's attention kernel (see `DecodeSessionOptions.attention`). */
  readonly attention: DecodeAttention;
}

/**
 * The decode step's attention: "split", the key range split over workgroups
 * and merged in a second pass (`splitAttentionWgsl`), "row", one workgroup
 * per query head with loads issued in batches (`rowAttentionWgsl`), or
 * "tiles", one workgroup per query head (`cachedAttentionWgsl`, which
 * prompts use).
 */
export type DecodeAttention = typeof DECODE_ATTENTIONS[number];

/** The values of {@linkcode DecodeAttention}. */
export const DECODE_ATTENTIONS = ["split", "row", "tiles"] as const;

/**
 * Tokens per second between read-backs: from the first read-back that
 * brought at least a quarter of the tokens (and not the prompt's token
 * alone) to the last one, so that a read-back's latency, paid at both ends,
 * cancels; NaN with fewer than two such read-backs.
 *
 * @param arrivals Tokens held after each read-back, and its time (ms).
 * @returns The rate.
 */
function steadyRate(arrivals: readonly { n: number; t: number }[]): number {
  const last = arrivals[arrivals.length - 1];
  if (last === undefined) return NaN;
  const ref = arrivals.find((a) => a.n >= Math.max(2, last.n / 4));
  if (ref === undefined || ref === last || last.t <= ref.t) return NaN;
  return (last.n - ref.n) / ((last.t - ref.t) / 1000);
}

/** One greedy run. */
export interface DecodeRun {
  readonly maxNewTokens: number;
  readonly stop: ReadonlySet<number>;
  readonly inFlight: number;
  /** Decode steps recorded into one command buffer (one submission, one read-back). */
  readonly stepsPerSubmission: number;
  readonly profile: boolean;
  /** Brackets each submission of steps with timestamps (see `GenerateResult.sustained`). */
  readonly trace?: boolean;
  readonly onToken?: (id: number, index: number) => void;
  readonly onLogits?: (logits: Float32Array, index: number) => void;
}

/** What a run measured. */
export interface DecodeRunResult {
  readonly tokens: number[];
  readonly stopped: boolean;
  readonly prefillSeconds: number;
  readonly decodeSeconds: number;
  /** See `GenerateResult.steadyTokensPerSecond`. */
  readonly steadyTokensPerSecond: number;
  /** Compute dispatches of one decode step. */
  readonly stepDispatches: number;
  /** Host seconds per decode step spent encoding and submitting it. */
  readonly hostStepSeconds: number;
  readonly gpu?: {
    /**
     * GPU seconds of a step recorded as one compute pass (as it runs
     * unprofiled; NaN when a single step ran, timed per phase).
     */
    readonly stepSeconds: number;
    /** GPU seconds of a step recorded as one pass per phase (the phases' sum and gaps). */
    readonly phasedStepSeconds: number;
    readonly phases: Record<string, number>;
    readonly phaseDispatches: Record<string, number>;
  };
  /** See `GenerateResult.sustained`. */
  readonly sustained?: SustainedTimes;
}

/** What a traced run measured of steps as they ran queued (`GenerateResult.sustained`). */
export interface SustainedTimes {
  /** GPU seconds a step inside the step submissions. */
  readonly gpuStepSeconds: number;
  /** The GPU's busy share from the first submission's start to the last one's end. */
  readonly gpuUtilization: number;
  /** The longest GPU idle between two submissions. */
  readonly longestIdleSeconds: number;
}

const MAP_READ = 0x1, COPY_DST = 0x8, QUERY_RESOLVE = 0x200, COPY_SRC = 0x4;

/** A read-back slot of one submission. */
interface Slot {
  /** Its place among the slots (its timestamps' indices). */
  readonly index: number;
  readonly token: GPUBuffer;
  readonly logits: GPUBuffer | null;
  readonly times: GPUBuffer | null;
  /** The submission's first and last timestamps (traced runs). */
  readonly span: GPUBuffer | null;
}

/**
 * Refuses, before anything is uploaded, a model whose largest buffers (the
 * classifier, the embedding, gate and up together, one layer's cache) one
 * storage binding cannot hold.
 */
function checkBindings(gpu: Gpu, model: LlamaModel, options: GpuDecoderOptions): void {
  const { dim, hiddenDim: H, vocabSize: V } = model.config;
  const { kvDim } = llamaDims(model.config);
  const bytes = options.weights === "f16" ? 2 : 4;
  const limit = bindingLimit(gpu);
  const sizes: [string, number][] = [
    ["the classifier", V * gemvRowLength(dim) * bytes],
    ["gate and up", 2 * H * gemvRowLength(dim) * bytes],
    ["one layer's KV cache", options.maxTokens * kvDim * 4],
  ];
  for (const [what, size] of sizes) {
    if (size > limit) {
      throw new RangeError(
        `Cannot open a decode session: ${what} would take ${size} bytes, more than one storage ` +
          `binding holds on this device (${limit})${
            options.weights === "f32" && what !== "one layer's KV cache"
              ? `; try weights "f16"`
              : ""
          }`,
      );
    }
  }
}

/** The decoder (see the module docs). */
export class GpuDecoder {
  readonly #gpu: Gpu;
  readonly #model: LlamaModel;
  readonly #options: GpuDecoderOptions;
  readonly #layers: DecodeLayer[] = [];
  readonly #embedding: GPUBuffer;
  readonly #classifier: GPUBuffer;
  readonly #finalNorm: GPUBuffer;
  readonly #ropeTable: GPUBuffer;
  readonly #pos: GPUBuffer;
  readonly #token: GPUBuffer;
  /** Every buffer the constructor allocated (not the linears' nor the activations'). */
  readonly #owned: GPUBuffer[];
  /** The token that follows each position ([maxTokens] u32; the argmax writes it). */
  readonly #history: GPUBuffer;
  readonly #logits: GPUBuffer;
  readonly #argmax: { values: GPUBuffer; indices: GPUBuffer };
  /** The step's attention kernel (the split kernel's scratch is among the owned buffers). */
  readonly #attention: CachedAttentionKernel;
  readonly #step: Rows;
  readonly #programs = new Map<string, GpuProgram>();
  #disposed = false;

  constructor(gpu: Gpu, model: LlamaModel, options: GpuDecoderOptions) {
    this.#gpu = gpu;
    this.#model = model;
    this.#options = options;
    const { config } = model;
    const { dim, vocabSize: V } = config;
    const { headDim: hd, kvDim } = llamaDims(config);
    const { weights, maxTokens, linears } = options;
    checkBindings(gpu, model, options);
    // Everything is checked before the first upload.
    model.layers.forEach((l, i) => {
      checkLayerExtras(config, l, i);
      checkLayerQuant(config, l, i);
    });
    const buffers: GPUBuffer[] = [];
    const groups: GpuLinear[] = [];
    const up = (data: ArrayBufferView, label: string) => {
      const b = uploadBuffer(gpu, data, label);
      buffers.push(b);
      return b;
    };
    try {
      const quant = uploadLayerQuant(gpu, config, model.layers, "decode");
      buffers.push(...layerQuantBuffers(quant));
      model.layers.forEach((l, i) => {
        const over = linears[i] ?? {};
        const w = (name: LlamaLinear) => over[name] ?? l[name];
        const label = `decode:${i}`;
        const group = (names: LlamaLinear[], what: string, gateUp = false) => {
          const g = uploadLinear(gpu, names.map(w), weights, `${label}:${what}`, "f16", gateUp);
          groups.push(g);
          return g;
        };
        const zeros = (n: number) => new Float32Array(n);
        const { qDim } = llamaDims(config);
        const anyBias = l.bq !== undefined || l.bk !== undefined || l.bv !== undefined;
        const layer: DecodeLayer = {
          attnNorm: up(l.attnNorm, `${label}:attnNorm`),
          ffnNorm: up(l.ffnNorm, `${label}:ffnNorm`),
          qkv: group(["wq", "wk", "wv"], "qkv"),
          o: group(["wo"], "o"),
          up: group(["w1", "w3"], "gate-up", true),
          down: group(["w2"], "down"),
          bqkv: anyBias
            ? up(
              concatRows(l.bq ?? zeros(qDim), l.bk ?? zeros(kvDim), l.bv ?? zeros(kvDim)),
              `${label}:bqkv`,
            )
            : null,
          qkNorm: l.qNorm === undefined && l.kNorm === undefined ? null : {
            weight: up(concatRows(l.qNorm ?? zeros(hd), l.kNorm ?? zeros(hd)), `${label}:qkNorm`),
            from: l.qNorm !== undefined ? 0 : config.nHeads,
            to: config.nHeads + (l.kNorm !== undefined ? config.nKvHeads : 0),
          },
          cache: {
            k: storageBuffer(gpu, maxTokens * kvDim * 4, `${label}:k-cache`),
            v: storageBuffer(gpu, maxTokens * kvDim * 4, `${label}:v-cache`),
          },
          quant: quant[i]!,
        };
        buffers.push(layer.cache.k, layer.cache.v);
        this.#layers.push(layer);
      });
      const embedding = asFloat32(model.tokenEmbedding);
      // The classifier's rows are padded for the GEMV; a tied one shares the embedding's
      // buffer when no padding is needed (the gather reads rows of dim values).
      const shared = model.classifier === model.tokenEmbedding && gemvRowLength(dim) === dim;
      this.#embedding = up(
        weights === "f16" ? toF16(embedding, "the embedding") : embedding,
        "decode:embedding",
      );
      this.#classifier = shared ? this.#embedding : uploadGemvWeight(
        gpu,
        model.classifier === model.tokenEmbedding ? embedding : asFloat32(model.classifier),
        V,
        dim,
        weights,
        "decode:classifier",
      );
      if (!shared) buffers.push(this.#classifier);
      this.#finalNorm = up(model.finalNorm, "decode:finalNorm");
      this.#ropeTable = up(ropeTable(hd, config.ropeTheta, maxTokens, config.rope), "decode:rope");
      this.#pos = storageBuffer(gpu, 4, "decode:pos");
      this.#token = storageBuffer(gpu, 4, "decode:token");
      this.#history = storageBuffer(gpu, 4 * maxTokens, "decode:history");
      this.#logits = storageBuffer(gpu, V * 4, "decode:logits");
      this.#argmax = {
        values: storageBuffer(gpu, argmaxScratchBytes(V), "decode:argmax-values"),
        indices: storageBuffer(gpu, argmaxScratchBytes(V), "decode:argmax-indices"),
      };
      buffers.push(
        this.#pos,
        this.#token,
        this.#history,
        this.#logits,
        this.#argmax.values,
        this.#argmax.indices,
      );
      const attention = { nHeads: config.nHeads, nKvHeads: config.nKvHeads, hd, cap: maxTokens };
      const group = config.nHeads / config.nKvHeads;
      if (options.attention === "split" && splitAttentionFits(hd, group)) {
        const splits = splitAttentionSplits(attention);
        const scratch = storageBuffer(
          gpu,
          splitAttentionScratchBytes(attention, splits),
          "decode:attention-splits",
        );
        buffers.push(scratch);
        this.#attention = { scratch, splits };
      } else if (options.attention === "row" && rowAttentionFits(hd)) this.#attention = "row";
      else this.#attention = "tiles";
      this.#step = this.#rows(1, "decode:step");
      this.#owned = buffers;
    } catch (e) {
      for (const b of buffers) b.destroy();
      for (const g of groups) destroyLinear(g);
      throw e;
    }
  }

  /** Activation buffers (and linear scratch) for `rows` rows. */
  #rows(rows: number, label: string): Rows {
    const { dim, hiddenDim: H } = this.#model.config;
    const { headDim: hd, qDim, kvDim } = llamaDims(this.#model.config);
    const gpu = this.#gpu;
    const f = (width: number, name: string) =>
      storageBuffer(gpu, rows * width * 4, `${label}:${name}`);
    const needs = this.#layers.flatMap((l) => [
      linearScratchBytes(gpu, l.qkv, rows, false),
      linearScratchBytes(gpu, l.o, rows, true),
      linearScratchBytes(gpu, l.up, rows, false),
      linearScratchBytes(gpu, l.down, rows, true),
    ]);
    return {
      rows,
      x: f(dim, "x"),
      h: f(dim, "h"),
      qkv: f(qDim + 2 * kvDim, "qkv"),
      att: f(qDim, "att"),
      u: f(2 * H, "u"),
      g: f(H, "g"),
      rope: f(hd, "rope"),
      scratch: allocateScratch(gpu, needs, label),
    };
  }

  #destroyRows(a: Rows): void {
    for (const b of [a.x, a.h, a.qkv, a.att, a.u, a.g, a.rope]) b.destroy();
    for (const b of Object.values(a.scratch)) b.destroy();
  }

  /**
   * Records every block over `a.rows` rows at positions pos, pos + 1, ….
   *
   * @returns The addend the last block left for the residual stream, or null.
   */
  #recordBlocks(rec: ProgramRecorder, a: Rows, profile: boolean): GPUBuffer | null {
    const { config } = this.#model;
    const { dim, hiddenDim: H, normEps, nHeads, nKvHeads } = config;
    const { headDim: hd, qDim, kvDim } = llamaDims(config);
    const qkvW = qDim + 2 * kvDim;
    const R = a.rows, s = a.scratch;
    const phase = (name: string) => profile && rec.phase(name);
    // A quantized o or down leaves its output pending for prompts (the next norm adds it to
    // x); at one row it adds it itself, so that the next product can apply the norm.
    let pending: GPUBuffer | null = null;
    const defer = R > 1;
    const norm = (w: GPUBuffer) => {
      encodeAddRmsNorm(rec, a.h, a.x, pending, w, { rows: R, dim, eps: normEps });
      pending = null;
    };
    /**
     * The norm before a product: fused into it (returned) where nothing is pending, the
     * input is not fake-quantized, and the product takes it; else run into a.h.
     */
    const normFor = (
      l: DecodeLayer,
      w: GPUBuffer,
      lin: GpuLinear,
      product: keyof BlockActQuant,
    ): QmatmulNorm | undefined => {
      const gateUp = product === "gateUp";
      if (
        pending === null && !l.quant.actQuant[product] &&
        linearTakesNorm(this.#gpu, lin, R, gateUp)
      ) {
        return { weight: w, eps: normEps };
      }
      norm(w);
      quantize(l, product, a.h);
      return undefined;
    };
    // A plain layer's single row is rotated by the attention kernel itself, from the table.
    const rotates = (l: DecodeLayer) =>
      attentionInputsHook(config, l.quant) === undefined && l.bqkv === null &&
      l.qkNorm === null && attentionRotates(R, hd);
    if (!this.#layers.every(rotates)) {
      encodeRopeRows(rec, a.rope, this.#ropeTable, this.#pos, {
        rows: R,
        hd,
        positions: this.#options.maxTokens,
      });
    }
    // A product's input is fake-quantized in place first (no later kernel reads it).
    const quantize = (l: DecodeLayer, product: keyof BlockActQuant, x: GPUBuffer) => {
      const plan = l.quant.actQuant[product];
      if (plan) encodeActQuant(rec, x, plan, R);
    };
    for (const l of this.#layers) {
      const attnNorm = normFor(l, l.attnNorm, l.qkv, "qkv");
      encodeLinearGroup(rec, l.qkv, attnNorm ? a.x : a.h, a.qkv, R, false, s, true, attnNorm);
      phase("qkv");
      const hook = attentionInputsHook(config, l.quant);
      const fused = rotates(l);
      if (!fused) {
        encodeRope(rec, a.qkv, a.rope, { rows: R, T: R, width: qDim + kvDim, ld: qkvW, hd }, {
          ...(l.bqkv ? { bias: { buffer: l.bqkv, width: qkvW } } : {}),
          ...(l.qkNorm ? { norm: { ...l.qkNorm, split: nHeads, eps: normEps } } : {}),
        });
      }
      // The cache receives the rotated and quantized keys and values of the new rows.
      hook?.(rec, a.qkv, R);
      encodeCachedAttention(
        rec,
        a.att,
        a.qkv,
        l.cache,
        this.#pos,
        { rows: R, nHeads, nKvHeads, hd, ld: qkvW, cap: this.#options.maxTokens },
        fused ? this.#ropeTable : undefined,
        R === 1 ? this.#attention : "tiles",
      );
      phase("attention");
      quantize(l, "o", a.att);
      pending = encodeLinearGroup(rec, l.o, a.att, a.x, R, true, s, defer);
      phase("o");
      const ffnNorm = normFor(l, l.ffnNorm, l.up, "gateUp");
      encodeGateUp(rec, l.up, ffnNorm ? a.x : a.h, a.u, a.g, R, s, ffnNorm);
      phase("gate-up");
      // QuaRot's online Hadamard: g·Q = g·(Qᵀ)ᵀ into u, free once SwiGLU has read it.
      let g = a.g;
      if (l.quant.hadamard !== null) {
        encodeLinear(rec, a.u, a.g, l.quant.hadamard, R, H, H, false);
        g = a.u;
      }
      quantize(l, "down", g);
      pending = encodeLinearGroup(rec, l.down, g, a.x, R, true, s, defer);
      phase("down");
    }
    return pending;
  }

  /**
   * Records the head on the step's row x (plus the pending addend): final
   * norm, classifier, argmax, position + n, and the chosen token's
   * embedding into the step's row x (the next step's input).
   */
  #recordHead(
    rec: ProgramRecorder,
    pending: GPUBuffer | null,
    advance: number,
    profile: boolean,
  ): void {
    const { dim, vocabSize: V, normEps } = this.#model.config;
    const a = this.#step;
    // The final norm stays a kernel of its own: in the classifier's GEMV its prologue (every one
    // of the 16,032 workgroups at a 128,256 vocabulary sums the row's squares) cost more than
    // the dispatch it saves (H100: the head's pass 0.213 ms against 0.200 with the norm apart).
    encodeAddRmsNorm(rec, a.h, a.x, pending, this.#finalNorm, { rows: 1, dim, eps: normEps });
    encodeGemv(rec, { y: this.#logits, x: a.h, w: this.#classifier }, { rows: 1, n: V, k: dim }, {
      weights: this.#options.weights,
      accumulate: false,
    });
    // The argmax also gathers the next step's input row: steps start with the first block.
    encodeArgmax(rec, this.#token, this.#logits, V, this.#argmax, {
      pos: this.#pos,
      n: advance,
      history: this.#history,
      embed: {
        x: this.#step.x,
        table: this.#embedding,
        dtype: this.#options.weights === "f16" ? "f16" : "f32",
        dim,
      },
    });
    if (profile) rec.phase("head");
  }

  #embed(rec: ProgramRecorder, x: GPUBuffer, tokens: GPUBuffer, rows: number): void {
    const { dim } = this.#model.config;
    if (this.#options.weights === "f16") encodeEmbedF16(rec, x, this.#embedding, tokens, rows, dim);
    else encodeEmbed(rec, x, this.#embedding, tokens, rows, dim);
  }

  /** The recorded decode step (profiled: one pass per phase). */
  #stepProgram(profile: boolean): GpuProgram {
    const key = profile ? "step:profile" : "step";
    let p = this.#programs.get(key);
    if (p === undefined) {
      const rec = new ProgramRecorder(this.#gpu);
      // Its input row is the previous head's (the prompt's or the previous step's) embedding.
      const pending = this.#recordBlocks(rec, this.#step, profile);
      this.#recordHead(rec, pending, 1, profile);
      p = rec.finish();
      this.#programs.set(key, p);
    }
    return p;
  }

  /** The prompt's program over its own activations, and the buffers to free after it ran. */
  #prefillProgram(prompt: Uint32Array): { program: GpuProgram; free: () => void } {
    const T = prompt.length;
    const { dim } = this.#model.config;
    const a = T === 1 ? this.#step : this.#rows(T, "decode:prefill");
    const tokens = uploadBuffer(this.#gpu, prompt, "decode:prompt");
    const rec = new ProgramRecorder(this.#gpu);
    this.#embed(rec, a.x, tokens, T);
    const pending = this.#recordBlocks(rec, a, false);
    if (T === 1) this.#recordHead(rec, pending, T, false);
    else {
      // The last row (and its pending addend) goes to the step's row for the head.
      const last = { rows: 1, w: dim, ldx: dim, xOff: (T - 1) * dim, ldy: dim, yOff: 0 };
      encodeSliceCopy(rec, this.#step.x, a.x, last, false);
      if (pending !== null) encodeSliceCopy(rec, this.#step.x, pending, last, true);
      this.#recordHead(rec, null, T, false);
    }
    const program = rec.finish();
    return {
      program,
      free: () => {
        program.dispose();
        tokens.destroy();
        if (a !== this.#step) this.#destroyRows(a);
      },
    };
  }

  /**
   * Greedy decoding of a prompt (already validated: ids in the vocabulary,
   * prompt + new tokens within the cache).
   *
   * @param prompt Token ids.
   * @param run Count, stop tokens, callbacks, depth, profiling.
   * @returns The tokens and timings.
   */
  async run(prompt: Uint32Array, run: DecodeRun): Promise<DecodeRunResult> {
    if (this.#disposed) throw new Error("Cannot generate with a disposed decode session");
    const { maxNewTokens, stop, onToken, onLogits, profile } = run;
    const gpu = this.#gpu, device = gpu.device;
    const V = this.#model.config.vocabSize;
    const timed = profile && gpu.timestamps;
    const single = profile || onLogits !== undefined;
    const per = single ? 1 : Math.min(run.stepsPerSubmission, maxNewTokens);
    // The prompt and a step submission, or two step submissions, at least (one is encoded while
    // the GPU runs the other).
    const depth = single ? 1 : Math.max(2, Math.ceil(Math.min(run.inFlight, maxNewTokens) / per));
    // Profiled, steps alternate between one pass per phase (the phases' times) and the single
    // pass that runs unprofiled (the step's time without the gaps between passes).
    const step = this.#stepProgram(false);
    const phased = timed ? this.#stepProgram(true) : step;
    const passes = phased.passNames;
    const querySet = timed
      ? device.createQuerySet({ type: "timestamp", count: 2 * passes.length })
      : null;
    const resolve = timed
      ? device.createBuffer({ size: 16 * passes.length, usage: QUERY_RESOLVE | COPY_SRC })
      : null;
    // Traced: two timestamps per slot, around its submission's steps (resolved 256 bytes apart).
    const traced = run.trace === true && gpu.timestamps && !single;
    // Slots of read-back buffers: one per submission between its encoding and its tokens'
    // arrival (every slot not free is the ready, a launched or a mapped submission's).
    const slots: Slot[] = Array.from({ length: depth }, (_, index) => ({
      index,
      token: device.createBuffer({
        size: 4 * per,
        usage: MAP_READ | COPY_DST,
        label: "decode:token-read",
      }),
      logits: onLogits
        ? device.createBuffer({
          size: V * 4,
          usage: MAP_READ | COPY_DST,
          label: "decode:logits-read",
        })
        : null,
      times: timed
        ? device.createBuffer({ size: 16 * passes.length, usage: MAP_READ | COPY_DST })
        : null,
      span: traced ? device.createBuffer({ size: 16, usage: MAP_READ | COPY_DST }) : null,
    }));
    const spanQueries = traced
      ? device.createQuerySet({ type: "timestamp", count: 2 * slots.length })
      : null;
    const spanResolve = traced
      ? device.createBuffer({ size: 256 * slots.length, usage: QUERY_RESOLVE | COPY_SRC })
      : null;
    const prefill = this.#prefillProgram(prompt);
    const lost = device.lost.then((info) => {
      throw new Error(`the WebGPU device was lost (${info.reason}): ${info.message}`);
    });
    lost.catch(() => {});
    /** A submission: encoded, then submitted, then its read-backs mapped. */
    interface Submission {
      readonly slot: Slot;
      readonly command: GPUCommandBuffer;
      readonly timed: GpuProgram | null;
      readonly count: number;
      readonly span: boolean;
      /** A submission of decode steps (not the prompt's). */
      readonly step: boolean;
      /** The error scopes around its submit. */
      scopes?: Promise<[GPUError | null, GPUError | null]>;
      /** Its read-backs mapped (after the scopes). */
      done?: Promise<void>;
      /** When its maps were made (`performance.now()`). */
      finished?: number;
      resolved?: boolean;
    }
    const free = [...slots];
    // Traced: GPU nanoseconds inside the step submissions, their steps, the first and last stamp.
    let busy = 0n, busySteps = 0, firstStamp = -1n, lastStamp = -1n, longestGap = 0n;
    let hostSeconds = 0, hostSteps = 0;
    // `count` replays of a program in one command buffer (generated tokens first… first + count
    // − 1), their tokens copied out of the history at the end.
    const encode = (
      program: GpuProgram,
      timedStep: boolean,
      count: number,
      first: number,
    ): Submission => {
      const t = performance.now();
      const slot = free.shift()!, index = slot.index;
      const enc = device.createCommandEncoder();
      const queries = 2 * program.passNames.length;
      const span = slot.span !== null && program !== prefill.program;
      // Empty passes carry the timestamps, so the steps' own passes stay as they run untraced.
      const mark = (end: boolean) => {
        const i = 2 * index + (end ? 1 : 0);
        enc.beginComputePass({
          timestampWrites: end
            ? { querySet: spanQueries!, endOfPassWriteIndex: i }
            : { querySet: spanQueries!, beginningOfPassWriteIndex: i },
        }).end();
      };
      if (span) mark(false);
      program.encode(enc, timedStep ? { querySet: querySet!, first: 0 } : undefined, count);
      // Generated token j follows position prompt.length − 1 + j.
      enc.copyBufferToBuffer(
        this.#history,
        4 * (prompt.length - 1 + first),
        slot.token,
        0,
        4 * count,
      );
      if (span) {
        mark(true);
        enc.resolveQuerySet(spanQueries!, 2 * index, 2, spanResolve!, 256 * index);
        enc.copyBufferToBuffer(spanResolve!, 256 * index, slot.span!, 0, 16);
      }
      if (slot.logits) enc.copyBufferToBuffer(this.#logits, 0, slot.logits, 0, V * 4);
      if (timedStep) {
        enc.resolveQuerySet(querySet!, 0, queries, resolve!, 0);
        enc.copyBufferToBuffer(resolve!, 0, slot.times!, 0, 8 * queries);
      }
      const command = enc.finish();
      const step = program !== prefill.program;
      if (step) {
        hostSeconds += (performance.now() - t) / 1000;
        hostSteps += count;
      }
      return { slot, command, timed: timedStep ? program : null, count, span, step };
    };
    const launch = (s: Submission) => {
      const t = performance.now();
      device.pushErrorScope("out-of-memory");
      device.pushErrorScope("validation");
      device.queue.submit([s.command]);
      const invalid = device.popErrorScope(), oom = device.popErrorScope();
      s.scopes = Promise.all([invalid, oom]);
      if (s.step) hostSeconds += (performance.now() - t) / 1000;
    };
    // Mapping waits (in Deno, blocking the thread) until the GPU has run everything submitted:
    // so it comes after the next submission is encoded, which then goes in at once.
    const map = (s: Submission) => {
      const maps = [
        s.slot.token,
        s.slot.logits,
        s.timed ? s.slot.times : null,
        s.span ? s.slot.span : null,
      ]
        .filter((b): b is GPUBuffer => b !== null)
        .map((b) => b.mapAsync(MAP_READ));
      // In Deno the maps return once the GPU has run this submission: when its tokens were done.
      s.finished = performance.now();
      s.done = (async () => {
        const [v, o] = await s.scopes!;
        if (v) throw new Error(`WebGPU validation failed: ${v.message}`);
        if (o) throw new Error(`WebGPU ran out of memory: ${o.message}`);
        await Promise.race([Promise.all(maps), lost]);
      })();
      s.done.then(() => s.resolved = true, () => s.resolved = true);
    };
    const tokens: number[] = [];
    const phases: Record<string, number> = {};
    let stepSeconds = 0, onePassSteps = 0, phasedSeconds = 0, phasedSteps = 0, stopped = false;
    const t0 = performance.now();
    let tPrefill = t0, tEnd = t0;
    // Tokens held after each read-back, and when the GPU had them done.
    const arrivals: { n: number; t: number }[] = [];
    /** A mapped submission's tokens (and times, logits), its slot freed. */
    const take = (s: Submission) => {
      const { slot, timed: timedProgram, count, span } = s;
      if (span) {
        const [b, e] = new BigUint64Array(slot.span!.getMappedRange(0, 16).slice(0));
        slot.span!.unmap();
        busy += e! - b!;
        busySteps += count;
        if (firstStamp < 0n) firstStamp = b!;
        else if (b! - lastStamp > longestGap) longestGap = b! - lastStamp;
        lastStamp = e!;
      }
      const ids = new Uint32Array(slot.token.getMappedRange(0, 4 * count).slice(0));
      slot.token.unmap();
      if (slot.logits) {
        const logits = new Float32Array(slot.logits.getMappedRange(0, V * 4).slice(0));
        slot.logits.unmap();
        if (!stopped) onLogits?.(logits, tokens.length);
      }
      if (timedProgram !== null && slot.times) {
        const n = timedProgram.passNames.length;
        const t = new BigUint64Array(slot.times.getMappedRange(0, 16 * n).slice(0));
        slot.times.unmap();
        const seconds = Number(t[2 * n - 1]! - t[0]!) / 1e9;
        if (timedProgram === phased) {
          passes.forEach((name, i) => {
            phases[name] = (phases[name] ?? 0) + Number(t[2 * i + 1]! - t[2 * i]!) / 1e9;
          });
          phasedSeconds += seconds;
          phasedSteps++;
        } else {
          stepSeconds += seconds;
          onePassSteps++;
        }
      }
      free.push(slot);
      for (const id of ids) {
        if (stopped) break;
        tokens.push(id);
        if (tokens.length === 1) tPrefill = s.finished!;
        tEnd = s.finished!;
        onToken?.(id, tokens.length - 1);
        if (stop.has(id) || tokens.length >= maxNewTokens) stopped = true;
      }
      arrivals.push({ n: tokens.length, t: tEnd });
    };
    // Encoded, submitted (not yet mapped), mapped (tokens not yet taken): in queue order.
    let ready: Submission | null = null;
    let launched: Submission[] = [];
    const reads: Submission[] = [];
    try {
      writeBuffer(gpu, this.#pos, 0, Uint32Array.of(0));
      ready = encode(prefill.program, false, 1, 0);
      let submitted = 1;
      const more = () => !stopped && submitted < maxNewTokens;
      // Submissions encoded and not yet taken stay within the depth: one a slot.
      const room = () => free.length > 0;
      // The next submission, encoded while the GPU runs the last one (null when none may go).
      const next = (): Submission | null => {
        if (!more() || !room()) return null;
        const count = Math.min(per, maxNewTokens - submitted);
        const s = encode(timed && submitted % 2 === 1 ? phased : step, timed, count, submitted);
        submitted += count;
        return s;
      };
      for (;;) {
        if (ready !== null) {
          launch(ready);
          launched.push(ready);
          ready = null;
        }
        ready = next();
        // Tokens that arrived are taken. A read is waited for (while the GPU runs the submission
        // just launched) only when the queue is full or nothing else can go on: its promise
        // resolves about 10 ms after its map, in Deno.
        while (reads.length > 0) {
          const stuck = ready === null && launched.length === 0;
          const full = ready === null && more() && !room();
          if (!reads[0]!.resolved && !stuck && !full) break;
          const s = reads.shift()!;
          await s.done;
          take(s);
          if (stopped && ready !== null) {
            // Steps past a stop token are not submitted.
            free.push(ready.slot);
            ready = null;
          }
          ready ??= next();
        }
        for (const s of launched) {
          map(s);
          reads.push(s);
        }
        launched = [];
        if (ready === null && reads.length === 0 && !more()) break;
      }
    } finally {
      // Whatever is still queued (after an error) finishes before its buffers go.
      for (const s of launched) map(s);
      const rest = [...reads, ...launched].map((s) => s.done?.catch(() => {}));
      Promise.all(rest).then(() => {
        prefill.free();
        for (const s of slots) for (const b of [s.token, s.logits, s.times, s.span]) b?.destroy();
        querySet?.destroy();
        resolve?.destroy();
        spanQueries?.destroy();
        spanResolve?.destroy();
      });
    }
    for (const k of Object.keys(phases)) phases[k] = phases[k]! / Math.max(1, phasedSteps);
    const phaseDispatches: Record<string, number> = {};
    phased.passDispatches.forEach((n, i) => {
      phaseDispatches[passes[i]!] = (phaseDispatches[passes[i]!] ?? 0) + n;
    });
    return {
      tokens,
      stopped: tokens.length > 0 && stop.has(tokens[tokens.length - 1]!),
      prefillSeconds: (tPrefill - t0) / 1000,
      decodeSeconds: (tEnd - tPrefill) / 1000,
      steadyTokensPerSecond: steadyRate(arrivals),
      stepDispatches: step.dispatches,
      hostStepSeconds: hostSeconds / Math.max(1, hostSteps),
      ...(busySteps > 0 && lastStamp > firstStamp
        ? {
          sustained: {
            gpuStepSeconds: Number(busy) / 1e9 / busySteps,
            gpuUtilization: Number(busy) / Number(lastStamp - firstStamp),
            longestIdleSeconds: Number(longestGap) / 1e9,
          },
        }
        : {}),
      ...(timed && phasedSteps > 0
        ? {
          gpu: {
            stepSeconds: onePassSteps > 0 ? stepSeconds / onePassSteps : NaN,
            phasedStepSeconds: phasedSeconds / phasedSteps,
            phases,
            phaseDispatches,
          },
        }
        : {}),
    };
  }

  /** Frees every GPU buffer (after the work in flight). */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    const buffers = new Set(this.#owned);
    const layers = this.#layers, step = this.#step, programs = [...this.#programs.values()];
    this.#gpu.device.queue.onSubmittedWorkDone().then(() => {
      for (const b of buffers) b.destroy();
      for (const l of layers) for (const g of [l.qkv, l.o, l.up, l.down]) destroyLinear(g);
      this.#destroyRows(step);
      for (const p of programs) p.dispose();
    });
  }
}
