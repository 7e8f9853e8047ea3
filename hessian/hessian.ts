/**
 * Layer Hessians: the running mean of x·xᵀ over calibration tokens.
 *
 * For a linear layer y = W·x with inputs x ∈ ℝ^cols, the layer-wise
 * reconstruction loss ‖(W − Ŵ)X‖²_F has Hessian 2·XᵀX with respect to each
 * row of W. We store the mean `xtx = XᵀX / count` instead, **without GPTQ's
 * factor 2**: a positive scale of H changes neither GPTQ's nor SparseGPT's
 * result (damping is relative to the mean diagonal), and the mean makes the
 * values independent of how the tokens were batched.
 *
 * Damping and dead columns belong to the solver (`obsSolve`), not to the
 * Hessian, so one Hessian serves many compressions. Web-standard only.
 *
 * @see Frantar et al., "GPTQ: Accurate Post-Training Quantization for
 * Generative Pre-trained Transformers" (2023), Section 3.
 *
 * @module
 */

import { dims2, type Tensor, tensor } from "../core/tensor.ts";
import { asFloat32, asFloat64 } from "../core/convert.ts";
import { type Backend, bindingLimit, resolveBackend } from "../kernels/backend.ts";
import { xtxGpu } from "../kernels/hessian_kernel.ts";
import { gramRaw } from "../core/_dense.ts";
import { checkFiniteInputs } from "./_finite_inputs.ts";

/** The mean of x·xᵀ over `count` calibration tokens (no factor 2). */
export interface Hessian {
  /** Input features (the layer's columns). */
  readonly cols: number;
  /** Tokens accumulated so far. */
  readonly count: number;
  /** Running mean of x·xᵀ, row-major [cols, cols], symmetric. */
  readonly xtx: Float64Array;
}

function inputsOf(x: Tensor, what: string): { tokens: number; cols: number; data: Float64Array } {
  if (x === null || typeof x !== "object" || !("shape" in x)) {
    throw new TypeError(`Cannot accumulate a Hessian as '${what}' must be a Tensor`);
  }
  const [tokens, cols] = dims2(x, what);
  const data = asFloat64(x);
  checkFiniteInputs(data, what);
  return { tokens, cols, data };
}

/**
 * The Hessian (mean of x·xᵀ) of calibration inputs.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hessian } from "./hessian.ts";
 * import { tensor } from "../core/tensor.ts";
 * const h = hessian(tensor("f32", [2, 2], new Float32Array([1, 2, 3, 4])));
 * assert(h.count === 2 && h.xtx[0] === 5); // (1·1 + 3·3) / 2
 * ```
 *
 * @param x Inputs [tokens, cols] (any float dtype); batch and sequence axes flattened.
 * @returns The Hessian over those tokens.
 * @throws {RangeError} if `x` is not 2-D or holds NaN/±∞.
 */
export function hessian(x: Tensor): Hessian {
  const { tokens, cols, data } = inputsOf(x, "x");
  const xtx = gramRaw(data, tokens, cols); // [cols, cols]
  if (tokens > 0) {
    const inv = 1 / tokens;
    for (let i = 0; i < xtx.length; i++) xtx[i] = xtx[i]! * inv;
  }
  return { cols, count: tokens, xtx };
}

/**
 * The Hessian continued with more calibration tokens (a fresh object; `h` is
 * not modified). The result equals `hessian()` of all tokens at once, up to
 * rounding (about 1e-15 relative).
 *
 * @param h The Hessian so far.
 * @param x More inputs [tokens, h.cols].
 * @returns The running mean over `h.count + tokens` tokens.
 * @throws {RangeError} if the column counts differ or `x` holds NaN/±∞.
 */
export function addInputs(h: Hessian, x: Tensor): Hessian {
  const { tokens, cols, data } = inputsOf(x, "x");
  if (cols !== h.cols) {
    throw new RangeError(
      `Cannot add inputs with ${cols} columns to a Hessian of ${h.cols} columns ('x' shape [${x.shape}])`,
    );
  }
  const total = h.count + tokens;
  const gram = gramRaw(data, tokens, cols);
  const xtx = new Float64Array(cols * cols);
  if (total > 0) {
    const a = h.count / total, b = 1 / total;
    for (let i = 0; i < xtx.length; i++) xtx[i] = a * h.xtx[i]! + b * gram[i]!;
  }
  return { cols, count: total, xtx };
}

/**
 * A Hessian from an accumulated Gram matrix XᵀX (sum, not mean) over `count` tokens.
 *
 * @param xtx XᵀX, row-major [cols, cols] (a Float64Array or a square Tensor); copied.
 * @param count Tokens it sums over (≥ 1).
 * @returns The Hessian with `xtx / count`.
 * @throws {RangeError} if `xtx` is not square, not finite, or `count` is not a positive integer.
 */
export function hessianFromGram(xtx: Float64Array | Tensor, count: number): Hessian {
  let data: Float64Array, cols: number;
  if (xtx instanceof Float64Array) {
    cols = Math.round(Math.sqrt(xtx.length));
    if (cols * cols !== xtx.length) {
      throw new RangeError(
        `Cannot make a Hessian as 'xtx' must be square: ${xtx.length} elements is not a square`,
      );
    }
    data = xtx;
  } else {
    const [r, c] = dims2(xtx, "xtx");
    if (r !== c) {
      throw new RangeError(`Cannot make a Hessian as 'xtx' must be square: shape is [${r}, ${c}]`);
    }
    cols = c;
    data = asFloat64(xtx);
  }
  if (!Number.isSafeInteger(count) || count < 1) {
    throw new RangeError(
      `Cannot make a Hessian as 'count' must be a positive integer: current value is ${count}`,
    );
  }
  checkFiniteInputs(data, "xtx");
  const out = new Float64Array(cols * cols);
  const inv = 1 / count;
  for (let i = 0; i < out.length; i++) out[i] = data[i]! * inv;
  return { cols, count, xtx: out };
}

/** Options of {@linkcode accumulateHessian}. */
export interface AccumulateOptions {
  /** A Hessian to continue (as `addInputs`); absent: start fresh (as `hessian`). */
  previous?: Hessian;
  /**
   * Where XᵀX is computed: "auto" (WebGPU on a hardware adapter, else the
   * CPU), "cpu", or "webgpu" (any adapter). On the GPU the sum is accumulated
   * in float32 from f32 (or f16) inputs; other dtypes are converted to f32.
   * @default "auto"
   */
  backend?: Backend;
}

/**
 * `hessian(x)` or `addInputs(previous, x)` on a chosen backend (async, so
 * that the GPU can compute XᵀX).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { accumulateHessian } from "./hessian.ts";
 * import { tensor } from "../core/tensor.ts";
 * const h = await accumulateHessian(tensor("f32", [2, 2], new Float32Array([1, 2, 3, 4])), {
 *   backend: "cpu",
 * });
 * assert(h.count === 2 && h.xtx[0] === 5);
 * ```
 *
 * @param x Inputs [tokens, cols].
 * @param options Previous Hessian and backend.
 * @returns The running mean of x·xᵀ.
 * @throws {RangeError} on shape mismatches or NaN/±∞ inputs.
 */
export async function accumulateHessian(
  x: Tensor,
  options: AccumulateOptions = {},
): Promise<Hessian> {
  const { previous, backend = "auto" } = options;
  let gpu = await resolveBackend(backend, "accumulate a Hessian");
  const [tokens, cols] = dims2(x, "x");
  // "auto" runs on the CPU what one storage binding of this device cannot hold.
  if (gpu !== null && backend === "auto" && cols * cols * 4 > bindingLimit(gpu)) gpu = null;
  if (gpu === null) return previous ? addInputs(previous, x) : hessian(x);
  if (previous && previous.cols !== cols) {
    throw new RangeError(
      `Cannot add inputs with ${cols} columns to a Hessian of ${previous.cols} columns ('x' shape [${x.shape}])`,
    );
  }
  const input = x.dtype === "f32" || (x.dtype === "f16" && gpu.f16)
    ? x
    : tensor("f32", [tokens, cols], asFloat32(x));
  checkFiniteInputs(input.data as ArrayLike<number>, "x");
  const { xtx: gram } = await xtxGpu(gpu, input);
  const prevCount = previous?.count ?? 0, total = prevCount + tokens;
  const xtx = new Float64Array(cols * cols);
  if (total > 0) {
    const a = prevCount / total, b = 1 / total;
    for (let i = 0; i < xtx.length; i++) xtx[i] = a * (previous?.xtx[i] ?? 0) + b * gram[i]!;
  }
  return { cols, count: total, xtx };
}
