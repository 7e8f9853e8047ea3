/**
 * SmoothQuant's migration of activation outliers into the weights, folded
 * into a Llama model without changing its function: for the linears that
 * read one input X, per input channel j,
 * s_j = max|X_j|^α / max|W_j|^(1−α) (W_j the column j of every linear that
 * reads X), the input is divided by s and the columns multiplied by it.
 * Where the input is an RMSNorm output (wq, wk, wv after the attention norm;
 * w1, w3 after the MLP norm), 1/s folds into the norm's weight. With
 * `outputs` (the default), wo's input (the attention output, linear in v)
 * folds 1/s into wv's rows and bias, one s per key/value channel shared by
 * the query heads of its group, and w2's input (silu(w1·g)·(w3·g), linear in
 * w3·g) folds it into w3's rows, as SmoothQuant does for OPT's out
 * projections. Web-standard only.
 *
 * @see G. Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training
 * Quantization for Large Language Models" (ICML 2023), §4, Eq. 4.
 * @module
 */

import { type Tensor, tensor } from "../core/tensor.ts";
import type { LinearInputStats } from "./linear_input_stats.ts";
import { llamaDims, type LlamaLayer, type LlamaModel } from "./model.ts";

/** Options of {@linkcode smoothQuant}. */
export interface SmoothQuantOptions {
  /** Migration strength α in [0, 1]: 0 leaves the activations, 1 moves all of their range. @default 0.5 */
  alpha?: number;
  /** Also smooth wo (folded into wv) and w2 (folded into w3). @default true */
  outputs?: boolean;
}

/** Smallest magnitude a channel maximum is taken as (SmoothQuant's clamp). */
const FLOOR = 1e-5;

/** Largest |W[r, j]| over the rows of every weight, per column. */
function columnAbsMax(weights: readonly Tensor<"f32">[], cols: number): Float64Array {
  const m = new Float64Array(cols);
  for (const w of weights) {
    for (let i = 0; i < w.data.length; i++) {
      const j = i % cols, v = Math.abs(w.data[i]!);
      if (v > m[j]!) m[j] = v;
    }
  }
  return m;
}

/** s_j = max(xMax_j, floor)^α / max(wMax_j, floor)^(1−α). */
function strengths(xMax: ArrayLike<number>, wMax: ArrayLike<number>, alpha: number): Float64Array {
  return Float64Array.from(
    { length: wMax.length },
    (_, j) => Math.max(xMax[j]!, FLOOR) ** alpha / Math.max(wMax[j]!, FLOOR) ** (1 - alpha),
  );
}

/** W·diag(s): columns scaled. */
function scaleColumns(w: Tensor<"f32">, s: ArrayLike<number>): Tensor<"f32"> {
  const cols = w.shape[1]!;
  return tensor("f32", w.shape, w.data.map((v, i) => v * s[i % cols]!));
}

/** diag(1/s)·W: rows divided. */
function divideRows(w: Tensor<"f32">, s: ArrayLike<number>): Tensor<"f32"> {
  const cols = w.shape[1]!;
  return tensor("f32", w.shape, w.data.map((v, i) => v / s[Math.floor(i / cols)]!));
}

/**
 * The smoothed model (norms, wq/wk/wv/w1/w3 columns, and with `outputs` wv
 * and w3 rows, the v bias, wo and w2 columns changed; logits unchanged up to
 * float rounding).
 *
 * @example
 * ```ts ignore
 * const smooth = smoothQuant(model, linearInputStats(model, calibration), { alpha: 0.5 });
 * ```
 * @param model The model (not modified).
 * @param stats The input statistics of its linears (`linearInputStats` on this model).
 * @param options α and whether to smooth wo and w2.
 * @returns The smoothed model.
 * @throws {RangeError} for α outside [0, 1] or statistics that do not fit the model.
 */
export function smoothQuant(
  model: LlamaModel,
  stats: ReadonlyMap<string, LinearInputStats>,
  options: SmoothQuantOptions = {},
): LlamaModel {
  const { alpha = 0.5, outputs = true } = options;
  if (!(typeof alpha === "number" && alpha >= 0 && alpha <= 1)) {
    throw new RangeError(
      `Cannot smooth as 'alpha' must be a number in [0, 1]: current value is ${alpha}`,
    );
  }
  if (typeof outputs !== "boolean") {
    throw new TypeError(
      `Cannot smooth as 'outputs' must be a boolean: current value is ${outputs}`,
    );
  }
  const { config } = model;
  const { headDim: hd, qDim } = llamaDims(config);
  const group = config.nHeads / config.nKvHeads;
  const layers = model.layers.map((layer, i): LlamaLayer => {
    const xMax = (n: string, width: number) => {
      const s = stats.get(`layers.${i}.${n}`);
      if (!s || s.channelAbsMax.length !== width) {
        throw new RangeError(
          `Cannot smooth as the statistics lack layers.${i}.${n} (or do not match its width ${width})`,
        );
      }
      return s.channelAbsMax;
    };
    const { dim, hiddenDim } = config;
    const sa = strengths(xMax("wq", dim), columnAbsMax([layer.wq, layer.wk, layer.wv], dim), alpha);
    const sf = strengths(xMax("w1", dim), columnAbsMax([layer.w1, layer.w3], dim), alpha);
    let out: LlamaLayer = {
      ...layer,
      attnNorm: layer.attnNorm.map((g, j) => g / sa[j]!),
      wq: scaleColumns(layer.wq, sa),
      wk: scaleColumns(layer.wk, sa),
      wv: scaleColumns(layer.wv, sa),
      ffnNorm: layer.ffnNorm.map((g, j) => g / sf[j]!),
      w1: scaleColumns(layer.w1, sf),
      w3: scaleColumns(layer.w3, sf),
    };
    if (!outputs) return out;
    // wo: one s per key/value channel, from the maxima over the query heads that read it.
    const xo = xMax("wo", qDim), wo = columnAbsMax([layer.wo], qDim);
    const kvx = new Float64Array(config.nKvHeads * hd), kvw = new Float64Array(kvx.length);
    const kvOf = (c: number) => Math.floor(Math.floor(c / hd) / group) * hd + (c % hd);
    for (let c = 0; c < qDim; c++) {
      const k = kvOf(c);
      kvx[k] = Math.max(kvx[k]!, xo[c]!);
      kvw[k] = Math.max(kvw[k]!, wo[c]!);
    }
    const sv = strengths(kvx, kvw, alpha);
    const sd = strengths(xMax("w2", hiddenDim), columnAbsMax([layer.w2], hiddenDim), alpha);
    out = {
      ...out,
      wv: divideRows(out.wv, sv),
      ...(layer.bv ? { bv: layer.bv.map((b, k) => b / sv[k]!) } : {}),
      wo: scaleColumns(layer.wo, Float64Array.from({ length: qDim }, (_, c) => sv[kvOf(c)]!)),
      w3: divideRows(out.w3, sd),
      w2: scaleColumns(layer.w2, sd),
    };
    return out;
  });
  return { ...model, layers };
}
