/**
 * Rotary-embedding tables shared by the CPU and WebGPU forward passes.
 * Web-standard only.
 *
 * @module
 */

/** cos and sin of the rotary angles, each [positions, headDim/2]. */
export interface RopeTables {
  /** cos(p·fᵢ) at [p·headDim/2 + i]. */
  readonly cos: Float64Array;
  /** sin(p·fᵢ) at [p·headDim/2 + i]. */
  readonly sin: Float64Array;
}

/**
 * cos and sin of the angle p·fᵢ of position p and frequency fᵢ = θ^(−2i/headDim),
 * i < headDim/2, for positions [0, positions).
 *
 * @param headDim Head width (even).
 * @param theta Rotary base θ.
 * @param positions Number of positions.
 * @returns The tables, in float64.
 */
export function ropeTables(headDim: number, theta: number, positions: number): RopeTables {
  const half = headDim / 2;
  const cos = new Float64Array(positions * half), sin = new Float64Array(positions * half);
  for (let i = 0; i < half; i++) {
    // float32 frequencies, as the reference implementations compute them
    const freq = Math.fround(1 / Math.pow(theta, (2 * i) / headDim));
    for (let p = 0; p < positions; p++) {
      const ang = p * freq;
      cos[p * half + i] = Math.cos(ang);
      sin[p * half + i] = Math.sin(ang);
    }
  }
  return { cos, sin };
}
