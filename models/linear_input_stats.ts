/**
 * Statistics of the inputs of every block linear over a calibration set,
 * from one CPU forward pass per sequence: per input column the largest
 * magnitude and the sum of squares, and the largest magnitude overall. They
 * calibrate static activation scales, SmoothQuant's migration strengths and
 * QUIK's outlier columns. Web-standard only.
 *
 * @module
 */

import { llamaBlockForward, llamaEmbed } from "./forward.ts";
import type { LlamaLinear, LlamaModel } from "./model.ts";

/** The statistics of one linear's inputs. */
export interface LinearInputStats {
  /** max |x_j| over the calibration tokens, per input column [in]. */
  readonly channelAbsMax: Float32Array;
  /** Σ x_j² over the calibration tokens, per input column [in]. */
  readonly channelSumSq: Float64Array;
  /** max |x| over every column and token. */
  readonly absMax: number;
  /** Calibration tokens seen. */
  readonly tokens: number;
}

/**
 * The input statistics of every block linear (`layers.{i}.{linear}`), the
 * inputs as the model's forward pass delivers them (before any activation
 * quantization of the linear itself; quantization the model applies
 * elsewhere shapes them as it does at evaluation).
 *
 * @param model The model.
 * @param calibration Token sequences.
 * @returns Statistics by module name.
 * @throws {RangeError} for an empty calibration set.
 */
export function linearInputStats(
  model: LlamaModel,
  calibration: readonly (readonly number[])[],
): Map<string, LinearInputStats> {
  const seqs = calibration.filter((s) => s.length > 0);
  if (seqs.length === 0) {
    throw new RangeError(
      `Cannot collect input statistics as 'calibration' must hold a non-empty sequence`,
    );
  }
  const acc = new Map<string, { max: Float32Array; sq: Float64Array; tokens: number }>();
  for (const seq of seqs) {
    let x = llamaEmbed(model, seq);
    for (const [i, layer] of model.layers.entries()) {
      x = llamaBlockForward(model.config, layer, x, seq.length, (name: LlamaLinear, input, T) => {
        const n = input.length / T, key = `layers.${i}.${name}`;
        let a = acc.get(key);
        if (!a) acc.set(key, a = { max: new Float32Array(n), sq: new Float64Array(n), tokens: 0 });
        for (let t = 0; t < T; t++) {
          for (let j = 0; j < n; j++) {
            const v = input[t * n + j]!;
            const m = Math.abs(v);
            if (m > a.max[j]!) a.max[j] = m;
            a.sq[j] = a.sq[j]! + v * v;
          }
        }
        a.tokens += T;
      });
    }
  }
  const out = new Map<string, LinearInputStats>();
  for (const [k, a] of acc) {
    out.set(k, {
      channelAbsMax: a.max,
      channelSumSq: a.sq,
      absMax: a.max.reduce((m, v) => Math.max(m, v), 0),
      tokens: a.tokens,
    });
  }
  return out;
}
