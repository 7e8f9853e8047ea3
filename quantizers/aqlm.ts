/**
 * Additive multi-codebook quantization (AQLM): each group of `groupSize`
 * consecutive input columns of a row is `scale[row] · Σ_m C_m[code_m]`, the sum
 * of one code vector from each of M codebooks of 2^B vectors. Input-adaptive:
 * codes and codebooks minimize the output error ‖(W − Ŵ)X‖²_F through XᵀX.
 * Web-standard only.
 *
 * Algorithm (alternating, every step non-increasing in the objective):
 * 1. scales: the RMS of each row; codebooks by residual k-means on the
 *    normalized groups (codebook 1 on the groups, codebook 2 on what is left…),
 *    each run until its centers stop moving (checked every 10 Lloyd steps) or
 *    for at most `kmeansIterations` steps; optionally (`sequentialInit`) codes
 *    re-assigned group by group in input order with Optimal Brain Surgeon
 *    compensation of the later columns (as GPTQ does with scalars); then the
 *    fit of step 2 (k-means matched the weights, not the outputs);
 * 2. per round: beam search over each row's codes, one (group, codebook) code
 *    at a time, scored in output space, visiting the groups in a fresh seeded
 *    random order each round (and each group's codebooks in a random order);
 *    then the fit: the least-squares optimum of all codebooks given the codes
 *    (conjugate gradients on the normal equations, started from the current
 *    codebooks, so it can only lower the objective), then the least-squares
 *    optimal scale of each row;
 * 3. rounds stop after the first one that lowers the objective by less than
 *    `relativeTolerance` of the best before it, or after `iterations` rounds.
 *
 * The k-means convergence check, the fit before the first search, the
 * shuffled visiting order and the stopping rule follow the reference
 * implementation (`AQEngine.quantize`, github.com/Vahe1994/AQLM), whose
 * codebooks and scales are fitted by Adam steps instead of least squares.
 *
 * @see Egiazarian et al., "Extreme Compression of Large Language Models via
 * Additive Quantization" (2024), Section 3 (beam search, codebook update).
 *
 * @module
 */

import { dims2, type Tensor } from "../core/tensor.ts";
import { asFloat64 } from "../core/convert.ts";
import { prng } from "../core/prng.ts";
import type { Hessian } from "../hessian/hessian.ts";
import { packBits, unpackBits } from "../core/bitpack.ts";
import type { CompressionStats } from "./quantized_weight.ts";
import {
  beamSearch,
  objectiveOf,
  outputEnergy,
  type Problem,
  residualKmeans,
  sequentialAssign,
  updateCodebooks,
  updateScales,
  visitOrder,
} from "./_aqlm_search.ts";

/** An AQLM-quantized weight: plain and serializable. */
export interface AqlmWeight {
  /** Discriminant for `dequantize()`. */
  readonly kind: "aqlm";
  /** [rows, cols]. */
  readonly shape: readonly [number, number];
  /** Input columns per group (divides cols). */
  readonly groupSize: number;
  /** Number of codebooks M. */
  readonly numCodebooks: number;
  /** Bits per code B (each codebook has 2^B vectors). */
  readonly codebookBits: number;
  /** Codes packed at B bits each (see `packBits`), in [rows, groups, M] order. */
  readonly codes: Uint32Array;
  /** Code vectors, [M, 2^B, groupSize]. */
  readonly codebooks: Float32Array;
  /** Scale per output row, [rows]. */
  readonly scales: Float32Array;
  /** Bits per weight: codes alone, and with f16 codebooks and scales amortized. */
  readonly bitsPerWeight: { readonly codes: number; readonly total: number };
  /**
   * Relative output error ‖(W − Ŵ)X‖² / ‖WX‖² after initialization and after
   * each round run (so its length is the number of rounds plus one).
   */
  readonly objective: readonly number[];
  /** What the method measured. */
  readonly stats: CompressionStats;
}

/** Options of {@linkcode aqlm}. */
export interface AqlmOptions {
  /** Number of codebooks M. @default 1 */
  codebooks?: number;
  /** Bits per code B, 1–16 (2^B vectors per codebook). @default 8 */
  codebookBits?: number;
  /** Input columns per group; must divide the columns. @default 8 */
  groupSize?: number;
  /** Candidates kept by the beam search. @default 4 */
  beamSize?: number;
  /**
   * Most rounds of beam search and codebook update; `relativeTolerance`
   * usually stops the rounds first (5–7 rounds on llama5M's layers).
   * @default 100
   */
  iterations?: number;
  /**
   * Stop after the first round that lowers the relative output error by less
   * than this fraction of the best error before it (the round's error is above
   * (1 − relativeTolerance) × best); the reference's `--relative_mse_tolerance`.
   * 0 runs all `iterations` rounds (unless the error reaches 0). In [0, 1).
   * @default 0.01
   */
  relativeTolerance?: number;
  /**
   * Most Lloyd steps of each codebook's k-means; it stops earlier at a check
   * (steps 1, 11, 21, …) where no center coordinate moved by more than
   * 1e-8 + 1e-6·|center|.
   * @default 100
   */
  kmeansIterations?: number;
  /** Conjugate-gradient steps of each codebook update. @default 30 */
  codebookSteps?: number;
  /**
   * Re-assign the k-means codes group by group with OBS error compensation
   * (see `sequentialAssign`) before the first round. A lower start, but on
   * llama5M's layers a higher error once the rounds have converged.
   * @default false
   */
  sequentialInit?: boolean;
  /** Damping of that sequential pass, as a fraction of the mean Hessian diagonal. @default 0.01 */
  dampRatio?: number;
  /**
   * Visit the groups, and each group's codebooks, in a seeded random order
   * that changes every round; false visits them in their natural order.
   * @default true
   */
  shuffle?: boolean;
  /** Seed of every random choice. @default 0 */
  seed?: number;
  /** Called after each row of each round and after each phase. */
  onProgress?: (progress: { round: number; phase: string; done: number; total: number }) => void;
}

function checkInt(name: string, value: number, lo: number, hi: number): void {
  if (!Number.isInteger(value) || value < lo || value > hi) {
    throw new RangeError(
      `Cannot run AQLM as '${name}' must be an integer in [${lo}, ${hi}]: current value is ${value}`,
    );
  }
}

/**
 * Quantizes a weight with additive codebooks, minimizing the output error.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { aqlm } from "./aqlm.ts";
 * import { dequantize } from "./dequantize.ts";
 * import { hessian } from "../hessian/hessian.ts";
 * import { prng, randn } from "../core/prng.ts";
 * import { tensor } from "../core/tensor.ts";
 * const g = prng(1);
 * const w = tensor("f64", [16, 32], randn(512, g));
 * const h = hessian(tensor("f64", [64, 32], randn(2048, g)));
 * const q = await aqlm(w, h, { codebooks: 1, codebookBits: 4, groupSize: 8, iterations: 2 });
 * assert(q.objective.at(-1)! <= q.objective[0]!);
 * assert(dequantize(q).shape[1] === 32);
 * ```
 * @param weight The weight [rows, cols] (out × in).
 * @param hessian Mean of x·xᵀ over calibration inputs, [cols, cols].
 * @param options Codebook shape, search and iteration settings.
 * @returns Codes, codebooks, scales, bits per weight and the per-round objective.
 */
export async function aqlm(
  weight: Tensor,
  hessian: Hessian,
  options: AqlmOptions = {},
): Promise<AqlmWeight> {
  const {
    codebooks: M = 1,
    codebookBits: B = 8,
    groupSize: g = 8,
    beamSize = 4,
    iterations = 100,
    relativeTolerance = 0.01,
    kmeansIterations = 100,
    codebookSteps = 30,
    seed = 0,
    sequentialInit = false,
    dampRatio = 0.01,
    shuffle = true,
    onProgress,
  } = options;
  checkInt("codebooks", M, 1, 64);
  checkInt("codebookBits", B, 1, 16);
  checkInt("groupSize", g, 1, 1 << 16);
  checkInt("beamSize", beamSize, 1, 1024);
  checkInt("iterations", iterations, 0, 10_000);
  checkInt("kmeansIterations", kmeansIterations, 0, 10_000);
  checkInt("codebookSteps", codebookSteps, 0, 100_000);
  if (!(relativeTolerance >= 0 && relativeTolerance < 1)) {
    throw new RangeError(
      `Cannot run AQLM as 'relativeTolerance' must be a number in [0, 1): current value is ${relativeTolerance}`,
    );
  }
  if (typeof shuffle !== "boolean") {
    throw new TypeError(
      `Cannot run AQLM as 'shuffle' must be a boolean: current value is ${String(shuffle)}`,
    );
  }
  if (!(dampRatio > 0 && dampRatio < 1e3)) {
    throw new RangeError(
      `Cannot run AQLM as 'dampRatio' must be a positive number: current value is ${dampRatio}`,
    );
  }
  const [rows, cols] = dims2(weight, "weight");
  if (hessian?.xtx?.length !== cols * cols || hessian.cols !== cols) {
    throw new RangeError(
      `Cannot run AQLM as 'hessian' must be [${cols}, ${cols}] for a weight of ${cols} columns: it has ${hessian?.cols} columns`,
    );
  }
  if (cols % g !== 0) {
    throw new RangeError(
      `Cannot run AQLM as 'groupSize' must divide the ${cols} columns: current value is ${g}`,
    );
  }
  const W = Float64Array.from(asFloat64(weight));
  for (let i = 0; i < W.length; i++) {
    if (!Number.isFinite(W[i]!)) {
      throw new RangeError(`Cannot run AQLM as 'weight' must be finite: element ${i} is ${W[i]}`);
    }
  }
  const start = performance.now();
  const p: Problem = { rows, cols, g, G: cols / g, M, K: 2 ** B, W, H: hessian.xtx };
  const rng = prng(seed);

  // 1. Initialization: row scales and residual k-means.
  const scales = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += W[r * cols + c]! ** 2;
    scales[r] = Math.sqrt(s / cols) || 1;
  }
  const { codebooks, codes } = residualKmeans(p, scales, kmeansIterations, rng);
  if (sequentialInit) sequentialAssign(p, codebooks, scales, codes, dampRatio);
  // Least-squares codebooks, then scales, for the current codes (never raises the objective).
  const fit = (): void => {
    const before = objectiveOf(p, codebooks, codes, scales);
    const updated = updateCodebooks(p, codebooks, codes, scales, codebookSteps);
    if (objectiveOf(p, updated, codes, scales) <= before) codebooks.set(updated);
    updateScales(p, codebooks, codes, scales);
  };
  // k-means fits the weights, not the outputs: refit in output space before the
  // first search (the reference likewise runs its codebook steps first).
  fit();
  onProgress?.({ round: 0, phase: "init", done: 1, total: 1 });

  const reference = outputEnergy(p);
  const objective = [objectiveOf(p, codebooks, codes, scales) / reference];
  let best = objective[0]!;
  for (let round = 1; round <= iterations; round++) {
    beamSearch(
      p,
      codebooks,
      codes,
      scales,
      beamSize,
      visitOrder(p.G, M, shuffle ? rng : null),
      (done) => onProgress?.({ round, phase: "codes", done, total: rows }),
    );
    fit();
    const now = objectiveOf(p, codebooks, codes, scales) / reference;
    objective.push(now);
    onProgress?.({ round, phase: "codebooks", done: 1, total: 1 });
    await Promise.resolve(); // let callers' progress rendering run between rounds
    // Stop once a round improved by less than the tolerance (or nothing is left to improve).
    if (now > (1 - relativeTolerance) * best || now === 0) break;
    best = Math.min(best, now);
  }

  const weights = rows * cols;
  const codeBits = (M * B) / g;
  const overhead = (M * p.K * g * 16 + rows * 16) / weights; // f16 codebooks and scales
  return {
    kind: "aqlm",
    shape: [rows, cols],
    groupSize: g,
    numCodebooks: M,
    codebookBits: B,
    codes: packBits(codes, B),
    codebooks: Float32Array.from(codebooks),
    scales: Float32Array.from(scales),
    bitsPerWeight: { codes: codeBits, total: codeBits + overhead },
    objective,
    stats: { seconds: (performance.now() - start) / 1000 },
  };
}

/**
 * Dense f32 reconstruction of an AQLM weight.
 *
 * @param q The AQLM result.
 * @returns Ŵ as Float32Array [rows, cols].
 */
export function dequantizeAqlm(q: AqlmWeight): Float32Array {
  const [rows, cols] = q.shape;
  const { groupSize: g, numCodebooks: M, codebookBits: B } = q;
  const K = 2 ** B, G = cols / g;
  if (!Number.isInteger(G) || q.codebooks.length !== M * K * g || q.scales.length !== rows) {
    throw new RangeError(
      `Cannot dequantize AQLM: codebooks (${q.codebooks.length}) must be ${M}×${K}×${g} and scales ${rows} long`,
    );
  }
  const codes = unpackBits(q.codes, B, rows * G * M);
  const out = new Float32Array(rows * cols);
  const acc = new Float64Array(g);
  for (let r = 0; r < rows; r++) {
    const s = q.scales[r]!;
    for (let j = 0; j < G; j++) {
      acc.fill(0);
      for (let m = 0; m < M; m++) {
        const cb = (m * K + codes[(r * G + j) * M + m]!) * g;
        for (let a = 0; a < g; a++) acc[a] = acc[a]! + q.codebooks[cb + a]!;
      }
      for (let a = 0; a < g; a++) out[r * cols + j * g + a] = s * acc[a]!;
    }
  }
  return out;
}
