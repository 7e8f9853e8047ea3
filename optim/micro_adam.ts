/**
 * MicroAdam: Adam whose state is a sliding window of the last m top-k
 * gradients plus a 4-bit error-feedback buffer, instead of dense moments.
 * Web-standard only.
 *
 * Each step (Algorithm 1 of the paper), with t the step number:
 * 1. a ← g + Q⁻¹(e), (I, V) ← Top-k(|a|), e ← Q(a − scatter(I, V)): the
 *    error feedback of {@linkcode errorFeedback} with a top-k compressor and
 *    its error buffer quantized to `errorQuantization.bits` bits per entry
 *    with a float32 [min, max] per block;
 * 2. (I, V) overwrite the oldest of the m window slots;
 * 3. the moments are recomputed from the window (no dense moment is stored):
 *    m̂ = c1·Σ_r β1^r·V_r, v̂ = c2·Σ_r β2^r·V_r², where r is the age of a slot
 *    (0 for this step's), the sums run over the min(t, m) filled slots, each
 *    scattered at its indices, and c1 = (1−β1)/(1−β1^t), c2 = (1−β2)/(1−β2^t)
 *    (see {@linkcode microAdamCorrections});
 * 4. with weight decay λ (`weightDecay`, 0 by default) every parameter is
 *    first multiplied by 1 − lr·λ, as the reference implementation does;
 *    then the update is −lr·m̂/(√v̂ + ε) (zero outside the window's indices).
 *
 * The window keeps values in bfloat16, as the paper does; their rounding error
 * is not fed back (the error buffer holds only what top-k dropped).
 *
 * Top-k runs per block of at most 65,536 entries so that indices are stored
 * as uint16, block-local, and values as bfloat16: 4 bytes per kept entry. A
 * block of len entries keeps k = ⌈density·len⌉ (see {@linkcode densityToK}),
 * the reference implementation's rule: 21 of a 2,048-entry tensor at 1%. With
 * the paper's defaults (k = 1% of the entries, m = 10) and 4-bit error in
 * blocks of 64, the state is about 0.5 + 0.125 + 0.4 ≈ 1 byte per parameter,
 * against Adam's 8 (see {@linkcode stateBytesPerParam}).
 *
 * Against the reference (ISTA-DASLab-Optimizers' `micro_adam.py` and its CUDA
 * kernels): fed the same gradients, the updates equal those of a TypeScript
 * port of it (tests/optim/_micro_adam_reference.ts) entry by entry within
 * 1e-5 relative at every step (measured: 2e-7 of the largest update), over 300
 * steps of a 2,372-parameter MLP in four tensors, with and without weight
 * decay, in one or several top-k blocks, and on least squares
 * (tests/optim/micro_adam_reference_test.ts). The reference computes in the
 * parameters' dtype (bf16 in practice) and rounds each update to bf16; this
 * implementation and the port compute in float32.
 *
 * Large learning rates. The window holds at most m = 10 gradients, but c1 and
 * c2 correct for all t steps, so the step multiplier c1/√c2 keeps growing:
 * 0.976 at t = 100, 3.083 at t = 3,000 (towards (1 − β1)/√(1 − β2) ≈ 3.16).
 * For a constant gradient the step is then 6.4·lr per entry where Adam's is
 * lr. At lr 1e-2 the loss rises after about 300 steps, for the reference as
 * for this implementation; `windowBiasCorrection: true` corrects over
 * min(t, m) steps instead (multiplier 0.484 for t ≥ 10, the window's moments
 * becoming weighted means) and keeps it down. Full-batch losses at lr 1e-2
 * (`deno run tests/optim/micro_adam_convergence.ts`, seeded):
 *
 * | problem                   | optimizer                | 100    | 300    | 1,000   | 3,000  |
 * | ------------------------- | ------------------------ | ------ | ------ | ------- | ------ |
 * | least squares, 256 params | reference (port)         | 0.854  | 0.389  | 0.916   | 1.75   |
 * | (loss 2.98 at step 0)     | microAdam                | 0.854  | 0.389  | 0.916   | 1.79   |
 * |                           | … `windowBiasCorrection` | 1.08   | 0.157  | 0.0426  | 0.0461 |
 * |                           | Adam                     | 0.0045 | 0.0044 | 0.0044  | 0.0044 |
 * | MLP 32-64-4, 2,372 params | reference (port)         | 0.0669 | 0.0502 | 0.112   | 0.249  |
 * | (loss 0.600 at step 0)    | microAdam                | 0.0669 | 0.0502 | 0.112   | 0.224  |
 * |                           | … `windowBiasCorrection` | 0.0783 | 0.0146 | 0.0051  | 0.0042 |
 * |                           | Adam                     | 0.0026 | 1.2e-5 | 1.5e-14 | 3.5e-5 |
 *
 * (Each run feeds back its own parameters, so once the loss rises, rounding
 * differences between the reference port's and ours compound: 2% and 10%
 * apart at step 3,000; they agree to 3 digits up to step 1,000.) The option
 * is off by default, so that the default stays the paper's algorithm.
 *
 * @see Modoranu et al., "MicroAdam: Accurate Adaptive Optimization with Low
 *   Space Overhead and Provable Convergence" (NeurIPS 2024), Algorithm 1 and
 *   the ASC (adaptive statistics computation) procedure.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { microAdam } from "./micro_adam.ts";
 * import { stateBytesPerParam } from "../core/transform.ts";
 * const params = { w: new Float32Array(10_000) };
 * const opt = microAdam({ learningRate: 1e-3 });
 * const [u, state] = opt.update({ w: params.w.map((_, i) => Math.sin(i)) }, opt.init(params));
 * assert(u.w!.filter((x) => x !== 0).length === 100); // k = 1%
 * assert(stateBytesPerParam(state, params) < 1.1);
 * ```
 *
 * @module
 */

import { bf16BitsToF32, f32ToBf16Bits } from "../core/convert.ts";
import {
  errorFeedback,
  type ErrorFeedbackState,
  type ErrorQuantization,
} from "../core/error_feedback.ts";
import {
  type GradientTransform,
  learningRateAt,
  type Params,
  type TransformState,
} from "../core/transform.ts";
import { densityToK, topKCompressor } from "../pruners/topk_compressor.ts";
import type { AdamOptions } from "./adam.ts";
import { checkAdamHyper } from "./_adam_hyper.ts";
import { checkSameNames } from "../core/_names.ts";

/** Options of {@linkcode microAdam}: Adam's (learning rate, β1, β2, ε, same defaults) and the compression. */
export interface MicroAdamOptions extends AdamOptions {
  /** Fraction of entries kept per step by top-k: ⌈density·len⌉ per block. @default 0.01 */
  density?: number;
  /** Window size m: how many sparse gradients are kept. @default 10 */
  windowSize?: number;
  /** Top-k block size, at most 65,536 (indices are stored as uint16). @default 65536 */
  topKBlockSize?: number;
  /** Quantization of the error buffer. @default { bits: 4, blockSize: 64 } */
  errorQuantization?: ErrorQuantization;
  /**
   * Decoupled weight decay λ, as the reference's `weight_decay`: every step
   * first multiplies all parameters by 1 − lr·λ, then takes the MicroAdam step,
   * so the update is −lr·λ·p − lr·m̂/(√v̂ + ε). A positive value needs the
   * parameters as `update`'s third argument.
   * @default 0
   */
  weightDecay?: number;
  /**
   * Bias-correct over the min(t, m) steps that the window holds instead of
   * all t steps: c1 = (1 − β1)/(1 − β1^min(t, m)), c2 likewise (see
   * {@linkcode microAdamCorrections}). Off by default, which is the paper's
   * algorithm and the reference's; the module docs show what it changes.
   * @default false
   */
  windowBiasCorrection?: boolean;
}

/** Options of {@linkcode microAdamCorrections}: those of {@linkcode microAdam} that set them. */
export type MicroAdamCorrectionOptions = Pick<
  MicroAdamOptions,
  "beta1" | "beta2" | "windowSize" | "windowBiasCorrection"
>;

/** The bias corrections of one MicroAdam step. */
export interface MicroAdamCorrections {
  /** Of the first moment: (1 − β1)/(1 − β1^s). */
  readonly c1: number;
  /** Of the second moment: (1 − β2)/(1 − β2^s). */
  readonly c2: number;
}

/** The window of one tensor: m slots of K kept entries each. */
export interface MicroAdamWindow {
  /** Block-local indices, [m, K] (a slot's entries, block after block). */
  readonly indices: Uint16Array;
  /** Values as bfloat16 bits, [m, K]. */
  readonly values: Uint16Array;
}

/** State of {@linkcode microAdam}. */
export interface MicroAdamState extends TransformState {
  /** The quantized error feedback (its own count equals this one). */
  readonly feedback: ErrorFeedbackState<never>;
  /** The sliding window, per parameter name. */
  readonly window: Readonly<Record<string, MicroAdamWindow>>;
}

/** Kept entries per top-k block of a tensor of n entries: ⌈density·len⌉ each. */
function blockKs(n: number, blockSize: number, density: number): number[] {
  const ks: number[] = [];
  for (let s = 0; s < n; s += blockSize) ks.push(densityToK(Math.min(blockSize, n - s), density));
  return ks;
}

/**
 * The bias corrections of MicroAdam's step t (1 at the first step): with s = t
 * (the paper's, the default) or s = min(t, m) (`windowBiasCorrection`),
 * c1 = (1 − β1)/(1 − β1^s) and c2 = (1 − β2)/(1 − β2^s). The update is
 * −lr·c1·Σ_r β1^r·V_r / (√(c2·Σ_r β2^r·V_r²) + ε) over the window's min(t, m)
 * slots, so c1/√c2 multiplies the step: with the defaults it is 0.98 at
 * t = 100 and 3.08 at t = 3,000 (it tends to (1 − β1)/√(1 − β2) ≈ 3.16), and
 * 0.48 for every t ≥ m with the window's corrections.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { microAdamCorrections } from "./micro_adam.ts";
 * const { c1, c2 } = microAdamCorrections(3000);
 * assert(Math.abs(c1 / Math.sqrt(c2) - 3.08) < 0.005);
 * ```
 *
 * @param t The step number, a positive integer.
 * @param options β1, β2, the window size m and `windowBiasCorrection`
 *   (defaults as in {@linkcode microAdam}).
 * @returns c1 and c2.
 */
export function microAdamCorrections(
  t: number,
  options: MicroAdamCorrectionOptions = {},
): MicroAdamCorrections {
  const { beta1 = 0.9, beta2 = 0.999, windowSize = 10, windowBiasCorrection = false } = options;
  if (!Number.isSafeInteger(t) || t < 1) {
    throw new RangeError(
      `Cannot correct MicroAdam's moments as 't' must be a positive integer: current value is ${t}`,
    );
  }
  checkAdamHyper(beta1, beta2, 0, "MicroAdam");
  checkWindowSize(windowSize);
  if (typeof windowBiasCorrection !== "boolean") {
    throw new TypeError(
      `Cannot build MicroAdam as 'windowBiasCorrection' must be a boolean: ` +
        `current value is ${windowBiasCorrection}`,
    );
  }
  const s = windowBiasCorrection ? Math.min(t, windowSize) : t;
  return { c1: (1 - beta1) / (1 - beta1 ** s), c2: (1 - beta2) / (1 - beta2 ** s) };
}

function checkWindowSize(windowSize: number): void {
  if (!Number.isSafeInteger(windowSize) || windowSize < 1) {
    throw new RangeError(
      `Cannot build MicroAdam as 'windowSize' must be a positive integer: ` +
        `current value is ${windowSize}`,
    );
  }
}

/**
 * The MicroAdam optimizer.
 *
 * @param options Learning rate, Adam's β1, β2, ε, the compression (density,
 *   window size, top-k block size, error quantization), weight decay and the
 *   bias-correction variant.
 * @returns A transform whose state is the window and the quantized error; its
 *   `update` takes the parameters as third argument when `weightDecay` > 0.
 */
export function microAdam(options: MicroAdamOptions): GradientTransform<MicroAdamState> {
  const {
    learningRate,
    beta1 = 0.9,
    beta2 = 0.999,
    eps = 1e-8,
    density = 0.01,
    windowSize = 10,
    topKBlockSize = 65536,
    errorQuantization = { bits: 4, blockSize: 64 },
    weightDecay = 0,
    windowBiasCorrection = false,
  } = options;
  checkAdamHyper(beta1, beta2, eps, "MicroAdam");
  if (typeof learningRate === "number") learningRateAt(learningRate, 0);
  if (!(density > 0 && density <= 1)) {
    throw new RangeError(
      `Cannot build MicroAdam as 'density' must be in (0, 1]: current value is ${density}`,
    );
  }
  const corrections = { beta1, beta2, windowSize, windowBiasCorrection };
  microAdamCorrections(1, corrections); // validates them now, not at the first step
  if (!(weightDecay >= 0 && Number.isFinite(weightDecay))) {
    throw new RangeError(
      `Cannot build MicroAdam as 'weightDecay' must be finite and non-negative: ` +
        `current value is ${weightDecay}`,
    );
  }
  if (!Number.isSafeInteger(topKBlockSize) || topKBlockSize < 1 || topKBlockSize > 65536) {
    throw new RangeError(
      `Cannot build MicroAdam as 'topKBlockSize' must be an integer in [1, 65536]: ` +
        `current value is ${topKBlockSize}`,
    );
  }
  const ef = errorFeedback(topKCompressor({ density, blockSize: topKBlockSize }), {
    errorQuantization,
  });
  const m = windowSize;

  return {
    init(params: Params): MicroAdamState {
      const window: Record<string, MicroAdamWindow> = {};
      for (const [name, p] of Object.entries(params)) {
        const K = blockKs(p.length, topKBlockSize, density).reduce((a, b) => a + b, 0);
        window[name] = { indices: new Uint16Array(m * K), values: new Uint16Array(m * K) };
      }
      return { count: 0, feedback: ef.init(params), window };
    },
    update(grads: Params, state: MicroAdamState, params?: Params): [Params, MicroAdamState] {
      checkSameNames(grads, state.window, "MicroAdam");
      if (weightDecay > 0 && params === undefined) {
        throw new TypeError(
          `Cannot step MicroAdam with 'weightDecay' ${weightDecay} without the parameters: ` +
            `pass them as update's third argument`,
        );
      }
      const t = state.count + 1;
      const lr = learningRateAt(learningRate, state.count);
      const [sent, feedback] = ef.update(grads, state.feedback);
      const slot = (t - 1) % m, filled = Math.min(t, m);
      const { c1, c2 } = microAdamCorrections(t, corrections);
      const updates: Record<string, Float32Array> = {};
      const window: Record<string, MicroAdamWindow> = {};
      for (const [name, c] of Object.entries(sent)) {
        const w0 = state.window[name]!;
        const n = c.length;
        const ks = blockKs(n, topKBlockSize, density);
        const K = w0.indices.length / m;
        const indices = w0.indices.slice(), values = w0.values.slice();
        // 2. The kept entries are the non-zeros of C(a), at most k per block;
        // a block with fewer (a zero among its top-k) is padded with (0, 0).
        let o = slot * K;
        ks.forEach((k, b) => {
          const s = b * topKBlockSize, e = Math.min(n, s + topKBlockSize);
          let kept = 0;
          for (let i = s; i < e && kept < k; i++) {
            if (c[i] === 0) continue;
            indices[o + kept] = i - s;
            values[o + kept] = f32ToBf16Bits(c[i]!);
            kept++;
          }
          for (; kept < k; kept++) {
            indices[o + kept] = 0;
            values[o + kept] = 0;
          }
          o += k;
        });
        // 3. Moments from the window (ASC), ages 0 … filled − 1.
        const mh = new Float32Array(n), vh = new Float32Array(n);
        for (let r = 0; r < filled; r++) {
          const row = ((slot - r + m) % m) * K;
          const w1 = beta1 ** r, w2 = beta2 ** r;
          let q = row;
          ks.forEach((k, b) => {
            const s = b * topKBlockSize;
            for (let j = 0; j < k; j++, q++) {
              const v = bf16BitsToF32(values[q]!);
              const i = s + indices[q]!;
              mh[i]! += w1 * v;
              vh[i]! += w2 * v * v;
            }
          });
        }
        // 4. The step, after the decoupled decay p ← p·(1 − lr·λ) of every entry.
        const p = weightDecay > 0 ? params![name] : undefined;
        if (weightDecay > 0 && p?.length !== n) {
          throw new RangeError(
            `Cannot step MicroAdam's weight decay: parameter '${name}' has ` +
              `${p?.length ?? "no"} elements, its gradient ${n}`,
          );
        }
        const u = new Float32Array(n);
        const decay = lr * weightDecay;
        for (let i = 0; i < n; i++) {
          const step = vh[i] === 0 ? 0 : (-lr * c1 * mh[i]!) / (Math.sqrt(c2 * vh[i]!) + eps);
          u[i] = p === undefined ? step : step - decay * p[i]!;
        }
        updates[name] = u;
        window[name] = { indices, values };
      }
      return [updates, { count: t, feedback, window }];
    },
  };
}
