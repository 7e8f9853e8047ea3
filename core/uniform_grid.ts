/**
 * Uniform-grid arithmetic, the ground floor that both the quantizers
 * (`quantizers/grid.ts`: RTN, public fitting) and the Optimal Brain Surgeon
 * solver's per-column decisions (`hessian/`: GPTQ) build on: the grid
 * options, their validation, fitting one grid to a run of values, and the
 * code of a value.
 *
 * Arithmetic follows the reference GPTQ implementation in float32: every
 * intermediate the reference stores in a float32 tensor is rounded with
 * `Math.fround`, so codes agree with it bit for bit on the same inputs.
 * Web-standard only.
 *
 * The public grid API is `./quantizers` (`fitGrid`, `gridQuantize`,
 * `GridOptions`, ...); this module is what lies beneath it.
 *
 * @see Frantar et al., "GPTQ" (2023), reference `Quantizer.find_params`.
 *
 * @module
 */

/** How to fit a uniform grid. */
export interface GridOptions {
  /** Bits per code, an integer in [1, 16] (16 is a near-lossless check). */
  bits: number;
  /** Symmetric grid (zero point fixed at 2^(bits−1)). @default false */
  symmetric?: boolean;
  /**
   * Input columns per group; −1 for one grid per output row (per channel).
   * When it does not divide the columns, the last group is shorter.
   * @default -1
   */
  groupSize?: number;
  /** One grid for the whole tensor (only with `groupSize` −1). @default false */
  perTensor?: boolean;
  /**
   * Search the clipping range: shrink it by 1% steps up to 80% and keep the
   * scale with the least Σ|q − w|^2.4, as GPTQ's `mse` option does.
   * @default false
   */
  mse?: boolean;
}

/** Shrink steps of the MSE clipping search (the reference's `grid`). */
export const MSE_GRID = 100;
/** Largest shrink tried, as a fraction of the range (the reference's `maxshrink`). */
export const MSE_MAX_SHRINK = 0.8;
/** Exponent of the clipping error (the reference's `norm`). */
export const MSE_NORM = 2.4;

const f = Math.fround;

/**
 * Rounds to the nearest integer, ties to even (as `torch.round` and IEEE 754
 * `roundTiesToEven`; `Math.round` rounds ties toward +∞).
 *
 * @param x A number.
 * @returns The nearest integer, ties to even.
 */
export function roundHalfEven(x: number): number {
  let r = Math.round(x);
  if (r - x === 0.5 && r % 2 !== 0) r -= 1;
  return r;
}

/**
 * Code of `x` on the grid (scale, zero): clamp(round(x / scale) + zero, 0, maxq).
 *
 * @param x Value.
 * @param scale Grid step (float32 value).
 * @param zero Zero point in code units (an integer).
 * @param maxq Largest code, 2^bits − 1.
 * @returns The code.
 */
export function codeOf(x: number, scale: number, zero: number, maxq: number): number {
  const c = roundHalfEven(f(x / scale)) + zero;
  return c < 0 ? 0 : c > maxq ? maxq : c;
}

/** Scale and zero point of one grid. */
export interface GridParams {
  /** Step between codes (a float32 value). */
  scale: number;
  /** Zero point in code units (an integer). */
  zero: number;
}

/**
 * Fits one grid to values `x[offset + i·stride]`, i < length, as the
 * reference's `find_params` does for one row: the range [min, max] widened to
 * include 0; symmetric grids use ±max|x| with the zero point at (maxq + 1)/2;
 * an all-zero range becomes [−1, 1]; asymmetric zero points are rounded. With
 * `mse`, the range is shrunk by 1% steps (up to 80%) and the scale with the
 * least Σ|q − x|^2.4 is kept.
 *
 * @param x Values.
 * @param offset First index.
 * @param length Count.
 * @param stride Index step.
 * @param maxq Largest code.
 * @param symmetric Symmetric grid.
 * @param mse Search the clipping range.
 * @returns Scale and zero point.
 */
export function fitParams(
  x: ArrayLike<number>,
  offset: number,
  length: number,
  stride: number,
  maxq: number,
  symmetric: boolean,
  mse: boolean,
): GridParams {
  let xmin = 0, xmax = 0;
  for (let i = 0, p = offset; i < length; i++, p += stride) {
    const v = f(x[p]!);
    if (v < xmin) xmin = v;
    if (v > xmax) xmax = v;
  }
  if (symmetric) {
    xmax = Math.max(-xmin, xmax);
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin === 0 && xmax === 0) {
    xmin = -1;
    xmax = 1;
  }
  let scale = f(f(xmax - xmin) / maxq);
  const symZero = (maxq + 1) / 2;
  let zero = symmetric ? symZero : roundHalfEven(f(-xmin / scale)) + 0; // + 0: no −0
  if (!mse) return { scale, zero };
  let best = Infinity;
  const steps = Math.floor(MSE_MAX_SHRINK * MSE_GRID);
  for (let s = 0; s < steps; s++) {
    const p = f(1 - s / MSE_GRID);
    const lo = f(p * xmin), hi = f(p * xmax);
    const scale1 = f(f(hi - lo) / maxq);
    const zero1 = symmetric ? symZero : roundHalfEven(f(-lo / scale1)) + 0;
    let err = 0;
    for (let i = 0, q = offset; i < length; i++, q += stride) {
      const v = f(x[q]!);
      const deq = f(scale1 * (codeOf(v, scale1, zero1, maxq) - zero1));
      err += Math.pow(Math.abs(deq - v), MSE_NORM);
    }
    if (err < best) {
      best = err;
      scale = scale1;
      zero = zero1;
    }
  }
  return { scale, zero };
}

/** Options of a uniform grid, validated and with defaults applied. */
export interface ResolvedGrid {
  bits: number;
  maxq: number;
  symmetric: boolean;
  /** −1 for one group per row. */
  groupSize: number;
  perTensor: boolean;
  mse: boolean;
}

/**
 * Validates grid options ({@linkcode GridOptions}) and applies defaults.
 *
 * @param options The user's options.
 * @param what The operation, for error messages ("quantize").
 * @returns The resolved grid.
 */
export function resolveGrid(
  options: {
    bits: number;
    symmetric?: boolean | undefined;
    groupSize?: number | undefined;
    perTensor?: boolean | undefined;
    mse?: boolean | undefined;
  },
  what = "quantize",
): ResolvedGrid {
  if (options === null || typeof options !== "object") {
    throw new TypeError(
      `Cannot ${what} as the grid options must be an object: current value is ${options}`,
    );
  }
  const { bits, symmetric = false, groupSize = -1, perTensor = false, mse = false } = options;
  if (!Number.isInteger(bits) || bits < 1 || bits > 16) {
    throw new RangeError(
      `Cannot ${what} as 'bits' must be an integer in [1, 16]: current value is ${bits}`,
    );
  }
  if (!Number.isInteger(groupSize) || (groupSize < 1 && groupSize !== -1)) {
    throw new RangeError(
      `Cannot ${what} as 'groupSize' must be -1 (per channel) or an integer >= 1: current value is ${groupSize}`,
    );
  }
  for (const [name, v] of [["symmetric", symmetric], ["perTensor", perTensor], ["mse", mse]]) {
    if (typeof v !== "boolean") {
      throw new TypeError(`Cannot ${what} as '${name}' must be a boolean: current value is ${v}`);
    }
  }
  if (perTensor && groupSize !== -1) {
    throw new RangeError(
      `Cannot ${what} as 'perTensor' excludes groups: 'groupSize' is ${groupSize}`,
    );
  }
  return { bits, maxq: 2 ** bits - 1, symmetric, groupSize, perTensor, mse };
}

/**
 * Ŵ[r, c] = scales[r, g]·(codes[r, c] − zeros[r, g]) with g = gIdx[c], for
 * every row: the dequantization of a grid with a group per column. Columns
 * are walked in runs of one group (contiguous groups make a handful of
 * runs), so each value costs one multiply-subtract; each product is the
 * float32 rounding of the exact one, as `Math.fround(s·(q − z))`.
 *
 * @param codes Codes [rows, cols].
 * @param scales Steps [rows, groups].
 * @param zeros Zero points [rows, groups].
 * @param gIdx Group of each column [cols].
 * @param rows Rows.
 * @param cols Columns.
 * @param out Where to write Ŵ (every element is written), instead of a new array.
 * @returns Ŵ [rows, cols] (`out` when given).
 * @throws {RangeError} when `codes` or `out` do not hold rows·cols values, or `gIdx` cols.
 */
export function dequantizeGrid(
  codes: ArrayLike<number>,
  scales: ArrayLike<number>,
  zeros: ArrayLike<number>,
  gIdx: ArrayLike<number>,
  rows: number,
  cols: number,
  out: Float32Array = new Float32Array(rows * cols),
): Float32Array {
  if (codes.length !== rows * cols || gIdx.length !== cols) {
    throw new RangeError(
      `Cannot dequantize as 'codes' (${codes.length}) or 'gIdx' (${gIdx.length}) do not match the shape [${rows},${cols}]`,
    );
  }
  if (out.length !== rows * cols) {
    throw new RangeError(
      `Cannot dequantize into 'out' of ${out.length} values: the grid has ${rows}×${cols}`,
    );
  }
  const groups = rows > 0 ? scales.length / rows : 0;
  // Runs of columns in one group: [start, end) with the group.
  const starts: number[] = [];
  for (let c = 0; c < cols; c++) if (c === 0 || gIdx[c] !== gIdx[c - 1]) starts.push(c);
  starts.push(cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols, g0 = r * groups;
    for (let k = 0; k + 1 < starts.length; k++) {
      const a = starts[k]!, g = g0 + gIdx[a]!;
      const s = scales[g]!, z = zeros[g]!;
      for (let i = o + a, end = o + starts[k + 1]!; i < end; i++) out[i] = s * (codes[i]! - z);
    }
  }
  return out;
}
