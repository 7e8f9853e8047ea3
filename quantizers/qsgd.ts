/**
 * QSGD-style stochastic quantization with per-block scales, for gradients
 * (unbiased, so usable with or without error feedback) and weights.
 * Web-standard only.
 *
 * With `bits` = b, each entry is a sign and a level ℓ ∈ {0, …, s}, s = 2^(b−1) − 1.
 * Per block of `blockSize` entries, the scale is its largest |x| (`norm: "max"`)
 * or its L2 norm (`norm: "l2"`, the original QSGD). An entry with r = |x|/scale·s
 * gets level ⌊r⌋ + 1 with probability r − ⌊r⌋, else ⌊r⌋, so E[x̂] = x.
 *
 * Synchronous like the other gradient compressors: it runs inside
 * optax-style transforms.
 *
 * @see Alistarh et al., "QSGD: Communication-Efficient SGD via Gradient
 *   Quantization and Encoding" (2017), Section 3.1 (the quantizer Q_s).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { qsgdCompress } from "./qsgd.ts";
 * const x = new Float32Array([0.5, -1, 0.25, 0]);
 * const y = qsgdCompress(x, { bits: 3, blockSize: 4, seed: 1 });
 * assert(y[1] === -1 && y[3] === 0); // the block maximum and zeros are exact
 * ```
 *
 * @module
 */

import { type Prng, resolvePrng } from "../core/prng.ts";
import { mixSeed } from "../core/_mix_seed.ts";
import type { CompressContext, CompressFn } from "../core/error_feedback.ts";

/** Options of {@linkcode qsgdQuantize}. */
export interface QsgdOptions {
  /** Bits per entry including the sign, 2–8. @default 4 */
  bits?: number;
  /** Entries per scale. @default 128 */
  blockSize?: number;
  /** The per-block scale: largest magnitude or L2 norm. @default "max" */
  norm?: "max" | "l2";
  /** Seed of the stochastic rounding. @default 0 */
  seed?: number;
  /** A generator to draw from instead of `seed`. */
  prng?: Prng;
}

/** A QSGD-quantized vector. */
export interface QsgdCode {
  /** Element count. */
  readonly length: number;
  /** Bits per entry including the sign. */
  readonly bits: number;
  /** Entries per scale. */
  readonly blockSize: number;
  /** Signed levels in [−s, s], s = 2^(bits−1) − 1. */
  readonly levels: Int8Array;
  /** Per-block scale (x̂ = scale·level/s). */
  readonly scales: Float32Array;
}

/**
 * Quantizes a vector stochastically.
 *
 * @param x The vector.
 * @param options Bits, block size, norm and seed.
 * @returns Signed levels and per-block scales.
 */
export function qsgdQuantize(x: ArrayLike<number>, options: QsgdOptions = {}): QsgdCode {
  const { bits = 4, blockSize = 128, norm = "max" } = options;
  if (!Number.isInteger(bits) || bits < 2 || bits > 8) {
    throw new RangeError(
      `Cannot quantize with QSGD as 'bits' must be an integer in [2, 8]: current value is ${bits}`,
    );
  }
  if (!Number.isSafeInteger(blockSize) || blockSize < 1) {
    throw new RangeError(
      `Cannot quantize with QSGD as 'blockSize' must be a positive integer: ` +
        `current value is ${blockSize}`,
    );
  }
  if (norm !== "max" && norm !== "l2") {
    throw new TypeError(
      `Cannot quantize with QSGD as 'norm' must be "max" or "l2": current value is ${norm}`,
    );
  }
  const rng = resolvePrng(options);
  const n = x.length, s = (1 << (bits - 1)) - 1;
  const nb = Math.ceil(n / blockSize);
  const levels = new Int8Array(n), scales = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    const lo = b * blockSize, hi = Math.min(n, lo + blockSize);
    let m = 0;
    for (let i = lo; i < hi; i++) {
      const v = Math.abs(x[i]!);
      m = norm === "max" ? Math.max(m, v) : m + v * v;
    }
    scales[b] = norm === "max" ? m : Math.sqrt(m);
    const scale = scales[b]!; // rounded to float32, as decoding will see it
    if (!(scale > 0)) continue;
    for (let i = lo; i < hi; i++) {
      const v = x[i]!;
      const r = Math.min(s, (Math.abs(v) / scale) * s);
      const f = Math.floor(r);
      const l = f + (rng.uniform() < r - f ? 1 : 0);
      levels[i] = v < 0 ? -l : l;
    }
  }
  return { length: n, bits, blockSize, levels, scales };
}

/**
 * Decodes a QSGD code.
 *
 * @param code The code.
 * @returns x̂ = scale·level/s, a fresh float32 array.
 */
export function qsgdDequantize(code: QsgdCode): Float32Array {
  const s = (1 << (code.bits - 1)) - 1;
  const out = new Float32Array(code.length);
  for (let i = 0; i < code.length; i++) {
    out[i] = (code.scales[Math.floor(i / code.blockSize)]! * code.levels[i]!) / s;
  }
  return out;
}

/**
 * Quantizes and decodes: C(x) for error feedback or a fake-quantized weight.
 *
 * @param x The vector.
 * @param options Bits, block size, norm and seed.
 * @returns x̂, a fresh float32 array with E[x̂] = x.
 */
export function qsgdCompress(x: ArrayLike<number>, options: QsgdOptions = {}): Float32Array {
  return qsgdDequantize(qsgdQuantize(x, options));
}

/**
 * QSGD as a compressor for {@linkcode errorFeedback}: each step and tensor
 * rounds with its own seed, derived from `seed`, the step and the name.
 *
 * @param options Bits, block size, norm and seed.
 * @returns A {@linkcode CompressFn}.
 */
export function qsgdCompressor(options: Omit<QsgdOptions, "prng"> = {}): CompressFn {
  qsgdQuantize([], options); // validate now, not at the first step
  const seed = options.seed ?? 0;
  return (x: Float32Array, context: CompressContext) =>
    qsgdCompress(x, { ...options, seed: mixSeed(seed, context.step, context.name) });
}
