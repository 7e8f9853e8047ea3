/**
 * Error feedback: the transform that wraps any compressor C and keeps what it
 * dropped. Web-standard only.
 *
 * With error e (zero at first), a step on gradients g sends C(g + e) and keeps
 * e ← g + e − C(g + e), so that after T steps
 * Σ sent + e_T = Σ g exactly (up to float rounding): nothing is lost, only
 * delayed. With `errorQuantization`, the stored error is itself quantized
 * block-wise (min–max, `bits` bits with a float32 range per block) as MicroAdam
 * does, which makes the saving real at the price of that bookkeeping no longer
 * being exact.
 *
 * A compressor is either a function `(x, context) => C(x)` (top-k, random-k,
 * QSGD: see {@linkcode CompressFn}) or a {@linkcode StatefulCompressor} whose
 * state (PowerSGD's warm start) lives, explicitly, inside this transform's
 * state. Compressors return the decompressed approximation C(x) as a fresh
 * float32 array of the same length.
 *
 * @see Karimireddy et al., "Error Feedback Fixes SignSGD and other Gradient
 *   Compression Schemes" (2019), Algorithm 2 (EF-SGD).
 * @see Modoranu et al., "MicroAdam" (2024), Algorithm 1 (quantized error).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { errorFeedback } from "./error_feedback.ts";
 * // Keep the largest entry only (the pruners' `topKCompress` with k = 1).
 * const keepLargest = (x: Float32Array): Float32Array => {
 *   let j = 0;
 *   x.forEach((v, i) => (j = Math.abs(v) > Math.abs(x[j]!) ? i : j));
 *   const out = new Float32Array(x.length);
 *   out[j] = x[j]!;
 *   return out;
 * };
 * const ef = errorFeedback(keepLargest);
 * const params = { w: new Float32Array(3) };
 * const [sent, state] = ef.update({ w: new Float32Array([3, 1, 2]) }, ef.init(params));
 * assert(sent.w!.join() === "3,0,0");
 * assert(state.error.w instanceof Float32Array && state.error.w.join() === "0,1,2");
 * ```
 *
 * @module
 */

import type { GradientTransform, Params, TransformState } from "./transform.ts";
import {
  checkMinMaxOptions,
  dequantizeMinMaxBlocks,
  type MinMaxBlocks,
  quantizeMinMaxBlocks,
} from "./_minmax_blocks.ts";
import { checkSameNames } from "./_names.ts";

export type { MinMaxBlocks } from "./_minmax_blocks.ts";

/** What a compressor is told about the tensor it compresses. */
export interface CompressContext {
  /** The tensor's parameter name. */
  readonly name: string;
  /** The step number (the transform's `count` before this update). */
  readonly step: number;
}

/** A stateless compressor: returns C(x), a fresh array the length of `x`. */
export type CompressFn = (x: Float32Array, context: CompressContext) => Float32Array;

/** A compressor with explicit per-tensor state (e.g. PowerSGD's warm start). */
export interface StatefulCompressor<S> {
  /**
   * Builds the state for one tensor.
   *
   * @param x A tensor of the right length (the zero gradient).
   * @param name Its parameter name.
   * @returns The initial state.
   */
  init(x: Float32Array, name: string): S;
  /**
   * Compresses one tensor.
   *
   * @param x The tensor.
   * @param state Its state.
   * @param context Name and step.
   * @returns C(x) and the next state.
   */
  compress(x: Float32Array, state: S, context: CompressContext): [Float32Array, S];
}

/** How the error buffer is quantized (MicroAdam: 4 bits). */
export interface ErrorQuantization {
  /** Bits per entry, 1–16. */
  readonly bits: number;
  /** Entries sharing one [min, max] range. */
  readonly blockSize: number;
}

/** Options of {@linkcode errorFeedback}. */
export interface ErrorFeedbackOptions {
  /**
   * Quantize the stored error block-wise (min–max, round to nearest), e.g.
   * `{ bits: 4, blockSize: 64 }`; omit to keep it in float32 (exact).
   * @default undefined
   */
  errorQuantization?: ErrorQuantization;
}

/** The stored error of one tensor: float32, or quantized blocks. */
export type ErrorBuffer = Float32Array | MinMaxBlocks;

/** State of {@linkcode errorFeedback}. */
export interface ErrorFeedbackState<S = unknown> extends TransformState {
  /** The error e, per parameter name. */
  readonly error: Readonly<Record<string, ErrorBuffer>>;
  /** The compressor's state per parameter name (empty for a {@linkcode CompressFn}). */
  readonly compressor: Readonly<Record<string, S>>;
}

/**
 * Wraps a compressor into an error-feedback transform.
 *
 * @param compressor A {@linkcode CompressFn} or a {@linkcode StatefulCompressor}.
 * @param options Error-buffer quantization.
 * @returns A transform whose updates are the compressed, error-corrected gradients.
 */
export function errorFeedback<S = never>(
  compressor: CompressFn | StatefulCompressor<S>,
  options: ErrorFeedbackOptions = {},
): GradientTransform<ErrorFeedbackState<S>> {
  const { errorQuantization } = options;
  if (errorQuantization !== undefined) {
    checkMinMaxOptions(
      errorQuantization.bits,
      errorQuantization.blockSize,
      "quantize the error buffer",
    );
  }
  const stateful = typeof compressor === "function" ? null : compressor;
  const store = (a: Float32Array): ErrorBuffer =>
    errorQuantization === undefined
      ? a
      : quantizeMinMaxBlocks(a, errorQuantization.bits, errorQuantization.blockSize);
  const load = (e: ErrorBuffer): Float32Array =>
    e instanceof Float32Array ? e : dequantizeMinMaxBlocks(e);

  return {
    init(params: Params): ErrorFeedbackState<S> {
      const error: Record<string, ErrorBuffer> = {};
      const cs: Record<string, S> = {};
      for (const [name, p] of Object.entries(params)) {
        error[name] = store(new Float32Array(p.length));
        if (stateful) cs[name] = stateful.init(new Float32Array(p.length), name);
      }
      return { count: 0, error, compressor: cs };
    },
    update(grads: Params, state: ErrorFeedbackState<S>): [Params, ErrorFeedbackState<S>] {
      checkSameNames(grads, state.error, "error feedback");
      const sent: Record<string, Float32Array> = {};
      const error: Record<string, ErrorBuffer> = {};
      const cs: Record<string, S> = {};
      for (const [name, g] of Object.entries(grads)) {
        const prev = state.error[name];
        if (prev === undefined) {
          throw new TypeError(`Cannot apply error feedback: no state for parameter '${name}'`);
        }
        const e = load(prev);
        if (e.length !== g.length) {
          throw new RangeError(
            `Cannot apply error feedback: gradient '${name}' has ${g.length} elements but ` +
              `its error has ${e.length}`,
          );
        }
        const a = new Float32Array(g.length); // g + e
        for (let i = 0; i < a.length; i++) a[i] = g[i]! + e[i]!;
        const context = { name, step: state.count };
        let c: Float32Array;
        if (stateful) {
          const [ci, si] = stateful.compress(a, state.compressor[name] as S, context);
          c = ci;
          cs[name] = si;
        } else {
          c = (compressor as CompressFn)(a, context);
        }
        if (c.length !== a.length) {
          throw new RangeError(
            `Cannot apply error feedback: the compressor returned ${c.length} elements ` +
              `for '${name}' of ${a.length}`,
          );
        }
        const next = new Float32Array(a.length); // g + e − C(g + e), rounded once
        for (let i = 0; i < a.length; i++) next[i] = a[i]! - c[i]!;
        sent[name] = c;
        error[name] = store(next);
      }
      return [sent, { count: state.count + 1, error, compressor: cs }];
    },
  };
}

/**
 * The error currently held for one tensor, decoded to float32.
 *
 * @param state An {@linkcode errorFeedback} state.
 * @param name A parameter name.
 * @returns The error e (dequantized when the buffer is quantized).
 */
export function feedbackError(state: ErrorFeedbackState<unknown>, name: string): Float32Array {
  const e = state.error[name];
  if (e === undefined) throw new TypeError(`No error-feedback state for parameter '${name}'`);
  return e instanceof Float32Array ? e.slice() : dequantizeMinMaxBlocks(e);
}
