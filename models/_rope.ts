/**
 * Rotary-embedding tables shared by the CPU and WebGPU forward passes, with
 * the frequency schemes of Hugging Face's `rope_type` (default, linear,
 * llama3). Web-standard only.
 *
 * @module
 */

import type { RopeScaling } from "./model.ts";

/** cos and sin of the rotary angles, each [positions, headDim/2]. */
export interface RopeTables {
  /** cos(p·fᵢ) at [p·headDim/2 + i]. */
  readonly cos: Float64Array;
  /** sin(p·fᵢ) at [p·headDim/2 + i]. */
  readonly sin: Float64Array;
}

const f = Math.fround;

/**
 * The rotary frequencies fᵢ, i < headDim/2, in float32 arithmetic as
 * transformers computes `inv_freq`: fᵢ = 1/θ^(2i/headDim), then the scheme's
 * adjustment (see {@linkcode RopeScaling}).
 *
 * @param headDim Head width (even).
 * @param theta Rotary base θ.
 * @param scaling The frequency scheme.
 * @returns The frequencies (float32 values).
 */
export function ropeFrequencies(
  headDim: number,
  theta: number,
  scaling: RopeScaling = { type: "default" },
): Float64Array {
  const half = headDim / 2;
  const freqs = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    freqs[i] = f(1 / f(Math.pow(theta, f((2 * i) / headDim))));
  }
  if (scaling.type === "linear") {
    for (let i = 0; i < half; i++) freqs[i] = f(freqs[i]! / scaling.factor);
  } else if (scaling.type === "llama3") {
    const { factor, lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositions: orig } = scaling;
    const lowFreqWavelen = orig / lo, highFreqWavelen = orig / hi;
    for (let i = 0; i < half; i++) {
      const fi = freqs[i]!;
      const wavelen = f((2 * Math.PI) / fi);
      if (wavelen < highFreqWavelen) continue;
      if (wavelen > lowFreqWavelen) {
        freqs[i] = f(fi / factor);
        continue;
      }
      const smooth = f((f(orig / wavelen) - lo) / (hi - lo));
      freqs[i] = f(f(f(1 - smooth) * f(fi / factor)) + f(smooth * fi));
    }
  }
  return freqs;
}

/**
 * cos and sin of the angle p·fᵢ of position p and frequency fᵢ
 * ({@linkcode ropeFrequencies}), for positions [0, positions).
 *
 * @param headDim Head width (even).
 * @param theta Rotary base θ.
 * @param positions Number of positions.
 * @param scaling The frequency scheme.
 * @returns The tables, in float64.
 */
export function ropeTables(
  headDim: number,
  theta: number,
  positions: number,
  scaling: RopeScaling = { type: "default" },
): RopeTables {
  const half = headDim / 2;
  const freqs = ropeFrequencies(headDim, theta, scaling);
  const cos = new Float64Array(positions * half), sin = new Float64Array(positions * half);
  for (let i = 0; i < half; i++) {
    const freq = freqs[i]!;
    for (let p = 0; p < positions; p++) {
      const ang = p * freq;
      cos[p * half + i] = Math.cos(ang);
      sin[p * half + i] = Math.sin(ang);
    }
  }
  return { cos, sin };
}
