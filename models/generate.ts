/**
 * Greedy generation. On WebGPU a {@linkcode decodeSession} uploads the
 * weights once (dense linears in f32 or f16, quantized ones packed for the
 * low-bit kernels) and keeps a KV cache on the GPU: the prompt runs in one
 * submission, then each new token in one submission of all blocks, the
 * classifier and the argmax, reading back only the token's id (see
 * `_gpu_decoder.ts`), running the layers' activation quantization, online
 * Hadamard before w2, query/key Hadamard and KV cache quantization as the
 * WebGPU forward pass does (the cache holds the quantized keys and values:
 * their groups are one head of one token, so each token's equal the whole
 * sequence's). On the CPU the same calls recompute the forward pass of
 * `forward.ts` over the whole prefix for each token: the reference the GPU
 * path is tested against. Web-standard only.
 *
 * @module
 */

import { modelBackend } from "./_model_backend.ts";
import type { Backend } from "../kernels/backend.ts";
import {
  DECODE_ATTENTIONS,
  type DecodeAttention,
  GpuDecoder,
  type SustainedTimes,
} from "./_gpu_decoder.ts";
export type { DecodeAttention, SustainedTimes };
import { storedPackedLinears } from "./_gpu_packed_block.ts";
import { checkTokenIds, checkWindow, llamaForward } from "./forward.ts";
import { type BlockLinears, denseLinear, linearShape } from "./linear_weight.ts";
import { WEBGPU_LAYER_QUANT } from "./_gpu_layer_quant.ts";
import { LLAMA_LINEARS, llamaLinearShapes, withLayerWeights } from "./model.ts";
import type { LlamaLinear, LlamaModel } from "./model.ts";

/** Options of {@linkcode decodeSession}. */
export interface DecodeSessionOptions {
  /**
   * Where to run: `"webgpu"` on any adapter (throws without one), `"auto"` on
   * a hardware adapter and else on the CPU, `"cpu"` on the CPU.
   * @default "auto"
   */
  backend?: Backend;
  /**
   * Storage of the dense weights on the GPU (block linears, embedding,
   * classifier): `"f16"` halves the bytes each token reads (values rounded to
   * nearest; bf16 checkpoints convert exactly within f16's range). Ignored on
   * the CPU.
   * @default "f32"
   */
  weights?: "f32" | "f16";
  /**
   * The decode step's attention kernel on WebGPU: "row" runs one workgroup
   * of 256 threads per query head over all positions, its loads issued in
   * batches; "tiles" one of 128 (the kernel prompts use); "split" spreads
   * each key/value head's positions over many workgroups and merges their
   * partial softmax sums in a second pass. Equal within float32 rounding.
   * Falls back to "tiles" for head widths the others do not take. On an
   * H100 at 1B shapes "row" took 5.9 / 12.3 / 27.6 µs a layer at positions
   * 16 / 144 / 528 against 7.9 / 20.7 / 70.8 for "tiles" and 14.3 / 32.4 /
   * 30.8 for "split" over 32 workgroups (`deno task bench:generate
   * --kernels-only --no-linears` times all three).
   * @default "row"
   */
  attention?: DecodeAttention;
  /**
   * Positions the KV cache holds: prompt and generated tokens of one run
   * together.
   * @default min(config.seqLen, 4096)
   */
  maxTokens?: number;
  /**
   * Per block, linears that replace the model's own (quantized ones run
   * through the packed low-bit kernels), in the forward pass's row order
   * (see `linear_weight.ts`).
   * @default the quantized linears of a loaded GPTQ or compressed-tensors
   *   checkpoint, kept packed (none for a dense model)
   */
  linears?: readonly BlockLinears[];
}

/** Options of {@linkcode DecodeSession.generate}. */
export interface GenerateOptions {
  /** Tokens to generate (the prompt excluded). @default 32 */
  maxNewTokens?: number;
  /** Token ids that end the generation (the stop token is the last one returned). @default [] */
  stop?: readonly number[];
  /** Called with each generated id, in order, as it arrives. */
  onToken?: (id: number, index: number) => void;
  /**
   * Called with the logits [vocab] each token was chosen from (read back every
   * step, one step in flight: for tests, slow).
   */
  onLogits?: (logits: Float32Array, index: number) => void;
  /**
   * Decode steps encoded or submitted before the first of them is read back
   * (WebGPU), at least `stepsPerSubmission` (and two submissions, so that
   * one is encoded while the GPU runs the other): a read-back's promise
   * resolves about 10 ms after its map in Deno, so deeper queues keep the
   * host from waiting for it. A stop token found late discards the steps
   * queued behind it.
   * @default 64
   */
  inFlight?: number;
  /**
   * Decode steps recorded into one submission (WebGPU): their tokens come
   * back together, and the host submits and maps once for all of them.
   * @default 8
   */
  stepsPerSubmission?: number;
  /**
   * Time each decode step's phases with timestamp queries (WebGPU with
   * `timestamp-query`; one step in flight, so the throughput is lower).
   * @default false
   */
  profile?: boolean;
  /**
   * Bracket each submission of decode steps with timestamp queries (WebGPU
   * with `timestamp-query`, not with `profile` or `onLogits`): reports
   * {@linkcode GenerateResult.sustained}, the GPU time of steps as they run
   * queued. @default false
   */
  trace?: boolean;
}

/** What {@linkcode DecodeSession.generate} returns. */
export interface GenerateResult {
  /** Generated ids (the prompt excluded), ending with the stop token when one came. */
  tokens: number[];
  /** Why it ended: a stop token, or `maxNewTokens`. */
  finishReason: "stop" | "length";
  /** Prompt tokens. */
  promptTokens: number;
  /**
   * Seconds until the first generated token was done (the prompt's pass; on
   * WebGPU in Deno, when the GPU had run it: the token reaches `onToken`
   * about 10 ms later, when the read-back's promise resolves).
   */
  prefillSeconds: number;
  /** Seconds from the first generated token to the last (done, as `prefillSeconds`). */
  decodeSeconds: number;
  /** Tokens after the first per second of `decodeSeconds` (NaN with fewer than 2 tokens). */
  tokensPerSecond: number;
  /**
   * On WebGPU: tokens per second from the read-back that brought the first
   * quarter of the tokens to the last read-back, so that the latency of a
   * read-back (paid once at each end of `decodeSeconds`) cancels: the rate
   * once steps are queued (NaN with fewer than two read-backs after the
   * first token's).
   */
  steadyTokensPerSecond?: number;
  /**
   * On WebGPU: the compute dispatches of one decode step (one token: every
   * block, the final norm, the classifier and the argmax, whose last pass
   * also advances the position and gathers the next step's embedding row).
   */
  stepDispatches?: number;
  /** On WebGPU: mean host seconds spent encoding and submitting one decode step. */
  hostStepSeconds?: number;
  /**
   * With `profile` on WebGPU (steps alternate between the two recordings):
   * mean GPU seconds of a decode step as it runs (one compute pass; NaN when
   * a single step ran), of a step recorded as one pass per phase, and of each phase
   * ("qkv", "attention", "o", "gate-up", "down" summed over the blocks, "head"),
   * and the dispatches of each phase in one step.
   */
  gpu?: {
    stepSeconds: number;
    phasedStepSeconds: number;
    phases: Record<string, number>;
    phaseDispatches: Record<string, number>;
  };
  /**
   * With `trace` on WebGPU: GPU seconds per decode step inside the step
   * submissions (from each submission's first timestamp to its last, summed,
   * over the steps), and the share of the time from the first submission's
   * start to the last one's end that the GPU spent inside them (below 1: the
   * GPU waited for the host), and the longest wait between two submissions.
   */
  sustained?: SustainedTimes;
}

/** A model ready to generate from, its weights uploaded once. */
export interface DecodeSession {
  /** Where the passes run. */
  readonly backend: "cpu" | "webgpu";
  /** The model. */
  readonly model: LlamaModel;
  /** Positions the cache holds (prompt and new tokens of one call). */
  readonly maxTokens: number;
  /**
   * Greedy continuation of a prompt.
   *
   * @param prompt Token ids (at least one).
   * @param options Count, stop tokens, callbacks.
   * @returns The generated ids and timings.
   * @throws {RangeError} (as a rejection) for an empty prompt, an id outside the
   *   vocabulary, or prompt + new tokens beyond the cache or the model's context.
   */
  generate(prompt: ArrayLike<number>, options?: GenerateOptions): Promise<GenerateResult>;
  /** Frees the GPU memory; the session must not be used afterwards. */
  dispose(): void;
}

function positiveInteger(name: string, v: unknown, what: string): number {
  if (!(typeof v === "number" && Number.isInteger(v) && v >= 1)) {
    throw new RangeError(
      `Cannot ${what} as '${name}' must be a positive integer: current value is ${String(v)}`,
    );
  }
  return v;
}

function checkLinears(model: LlamaModel, linears: readonly BlockLinears[]): void {
  if (!Array.isArray(linears) || linears.length > model.layers.length) {
    throw new RangeError(
      `Cannot generate as 'linears' must be an array of at most ${model.layers.length} blocks`,
    );
  }
  // From the configuration: reading a lazily loaded layer's linear would widen its block.
  const shapes = llamaLinearShapes(model.config);
  linears.forEach((block, i) => {
    for (const name of Object.keys(block ?? {}) as LlamaLinear[]) {
      if (!LLAMA_LINEARS.includes(name)) {
        throw new RangeError(`Cannot generate: 'linears'[${i}] has an unknown linear '${name}'`);
      }
      const want = shapes[name];
      const got = linearShape(block[name]!);
      if (got[0] !== want[0] || got[1] !== want[1]) {
        throw new RangeError(
          `Cannot generate: 'linears'[${i}].${name} is [${got}], the model's is [${want}]`,
        );
      }
    }
  });
}

/** Checks a run against the session before anything runs. */
function checkRun(
  model: LlamaModel,
  maxTokens: number,
  prompt: ArrayLike<number>,
  options: GenerateOptions,
): Required<Pick<GenerateOptions, "maxNewTokens" | "inFlight" | "stepsPerSubmission">> {
  const { maxNewTokens = 32, inFlight = 64, stepsPerSubmission = 8 } = options;
  positiveInteger("maxNewTokens", maxNewTokens, "generate");
  positiveInteger("inFlight", inFlight, "generate");
  positiveInteger("stepsPerSubmission", stepsPerSubmission, "generate");
  if (prompt.length < 1) throw new RangeError("Cannot generate from an empty prompt");
  checkTokenIds(prompt, model.config.vocabSize);
  checkTokenIds(options.stop ?? [], model.config.vocabSize);
  const total = prompt.length + maxNewTokens;
  const { seqLen } = model.config;
  if (total > seqLen) {
    throw new RangeError(
      `Cannot generate ${maxNewTokens} tokens after a prompt of ${prompt.length}: ${total} ` +
        `positions exceed the model's context of ${seqLen}`,
    );
  }
  if (total > maxTokens) {
    throw new RangeError(
      `Cannot generate ${maxNewTokens} tokens after a prompt of ${prompt.length}: ${total} ` +
        `positions exceed the session's 'maxTokens' of ${maxTokens}`,
    );
  }
  checkWindow(model.config, total);
  return { maxNewTokens, inFlight, stepsPerSubmission };
}

function result(
  promptTokens: number,
  r: {
    tokens: number[];
    stopped: boolean;
    prefillSeconds: number;
    decodeSeconds: number;
    steadyTokensPerSecond?: number;
    stepDispatches?: number;
    hostStepSeconds?: number;
    gpu?: {
      stepSeconds: number;
      phasedStepSeconds: number;
      phases: Record<string, number>;
      phaseDispatches: Record<string, number>;
    };
    sustained?: SustainedTimes;
  },
): GenerateResult {
  const { tokens, prefillSeconds, decodeSeconds } = r;
  return {
    tokens,
    finishReason: r.stopped ? "stop" : "length",
    promptTokens,
    prefillSeconds,
    decodeSeconds,
    tokensPerSecond: tokens.length > 1 ? (tokens.length - 1) / decodeSeconds : NaN,
    ...(r.steadyTokensPerSecond === undefined
      ? {}
      : { steadyTokensPerSecond: r.steadyTokensPerSecond }),
    ...(r.stepDispatches === undefined ? {} : { stepDispatches: r.stepDispatches }),
    ...(r.hostStepSeconds === undefined ? {} : { hostStepSeconds: r.hostStepSeconds }),
    ...(r.gpu ? { gpu: r.gpu } : {}),
    ...(r.sustained ? { sustained: r.sustained } : {}),
  };
}

function argmax(a: Float32Array, from: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (a[from + i]! > a[from + best]!) best = i;
  return best;
}

/** The CPU reference: the whole forward pass over the prefix for each token. */
function cpuSession(
  model: LlamaModel,
  maxTokens: number,
  linears: readonly BlockLinears[],
): DecodeSession {
  const replace = linears.map((block) =>
    Object.fromEntries(Object.entries(block ?? {}).map(([k, w]) => [k, denseLinear(w)]))
  );
  const m = replace.length > 0 ? withLayerWeights(model, replace) : model;
  const V = model.config.vocabSize;
  return {
    backend: "cpu",
    model,
    maxTokens,
    generate(prompt, options = {}) {
      let maxNewTokens: number;
      try {
        ({ maxNewTokens } = checkRun(model, maxTokens, prompt, options));
      } catch (e) {
        return Promise.reject(e);
      }
      const stop = new Set(options.stop ?? []);
      const ids = Array.from(prompt);
      const tokens: number[] = [];
      const t0 = performance.now();
      let tFirst = t0, stopped = false;
      while (tokens.length < maxNewTokens && !stopped) {
        const logits = llamaForward(m, ids);
        const last = (ids.length - 1) * V;
        const id = argmax(logits, last, V);
        options.onLogits?.(logits.slice(last, last + V), tokens.length);
        tokens.push(id);
        ids.push(id);
        if (tokens.length === 1) tFirst = performance.now();
        options.onToken?.(id, tokens.length - 1);
        stopped = stop.has(id);
      }
      const tEnd = performance.now();
      return Promise.resolve(result(prompt.length, {
        tokens,
        stopped,
        prefillSeconds: (tFirst - t0) / 1000,
        decodeSeconds: (tEnd - tFirst) / 1000,
      }));
    },
    dispose() {},
  };
}

/**
 * A session that generates from one model: on WebGPU with its weights and a
 * KV cache on the GPU (see the module docs), else on the CPU.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadModel } from "./causal_lm.ts";
 * import { decodeSession } from "./generate.ts";
 * const lm = await loadModel(new URL("../tests/fixtures/hf/models/llama", import.meta.url).pathname);
 * const session = await decodeSession(lm.model, { backend: "cpu", maxTokens: 16 });
 * const { tokens } = await session.generate([1, 2, 3], { maxNewTokens: 4 });
 * assert.equal(tokens.length, 4);
 * session.dispose();
 * ```
 * @param model The model.
 * @param options Backend, dense weight storage, cache length, replaced linears.
 * @returns The session (dispose it to free GPU memory).
 * @throws {RangeError} for invalid options or replaced linears of the wrong shape.
 * @throws {Error} with `backend: "webgpu"` when no adapter exists.
 */
export async function decodeSession(
  model: LlamaModel,
  options: DecodeSessionOptions = {},
): Promise<DecodeSession> {
  const {
    backend = "auto",
    weights = "f32",
    maxTokens = Math.min(model.config.seqLen, 4096),
    linears: given,
    attention = "row",
  } = options;
  if (!DECODE_ATTENTIONS.includes(attention)) {
    throw new RangeError(
      `Cannot open a decode session as 'attention' must be "split", "row" or "tiles": current value is ${
        String(attention)
      }`,
    );
  }
  if (weights !== "f32" && weights !== "f16") {
    throw new RangeError(
      `Cannot open a decode session as 'weights' must be "f32" or "f16": current value is ${
        String(weights)
      }`,
    );
  }
  positiveInteger("maxTokens", maxTokens, "open a decode session");
  if (given !== undefined) checkLinears(model, given);
  const gpu = await modelBackend(model, backend, "generation", WEBGPU_LAYER_QUANT);
  // The CPU forward pass reads a checkpoint's stored linears itself.
  if (gpu === null) return cpuSession(model, maxTokens, given ?? []);
  // A loaded quantized checkpoint's linears as stored: packed, not widened.
  const linears = given ?? model.layers.map(storedPackedLinears);
  const decoder = new GpuDecoder(gpu, model, { weights, maxTokens, linears, attention });
  let queue: Promise<unknown> = Promise.resolve();
  return {
    backend: "webgpu",
    model,
    maxTokens,
    generate(prompt, options = {}) {
      let checked: { maxNewTokens: number; inFlight: number; stepsPerSubmission: number };
      try {
        checked = checkRun(model, maxTokens, prompt, options);
      } catch (e) {
        return Promise.reject(e);
      }
      const ids = Uint32Array.from(prompt);
      const run = queue.then(() =>
        decoder.run(ids, {
          ...checked,
          stop: new Set(options.stop ?? []),
          profile: options.profile === true,
          trace: options.trace === true,
          ...(options.onToken ? { onToken: options.onToken } : {}),
          ...(options.onLogits ? { onLogits: options.onLogits } : {}),
        })
      ).then((r) => result(ids.length, r));
      queue = run.catch(() => {});
      return run;
    },
    dispose() {
      queue.then(() => decoder.dispose());
    },
  };
}

/**
 * Greedy continuation of a prompt: a one-shot {@linkcode decodeSession}
 * (weights uploaded, then freed) around one `generate`.
 *
 * @example
 * ```ts ignore
 * const { tokens } = await generate(lm.model, tok.encode("Once upon a time"), {
 *   maxNewTokens: 64,
 *   backend: "webgpu",
 *   weights: "f16",
 * });
 * ```
 * @param model The model.
 * @param prompt Token ids.
 * @param options Session and run options (the cache holds exactly prompt + new tokens).
 * @returns The generated ids and timings.
 */
export async function generate(
  model: LlamaModel,
  prompt: ArrayLike<number>,
  options: GenerateOptions & DecodeSessionOptions = {},
): Promise<GenerateResult> {
  const { maxNewTokens = 32 } = options;
  const maxTokens = options.maxTokens ??
    Math.max(1, Math.min(model.config.seqLen, prompt.length + maxNewTokens));
  checkRun(model, maxTokens, prompt, options); // before the weights are uploaded
  const session = await decodeSession(model, { ...options, maxTokens });
  try {
    return await session.generate(prompt, options);
  } finally {
    session.dispose();
  }
}
