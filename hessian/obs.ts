/**
 * The one Optimal Brain Surgeon column solver that GPTQ, SparseGPT and joint
 * sparse + quantized compression share. A *decider* chooses the new values of
 * each column; the solver propagates the error to the columns not yet visited
 * through the upper Cholesky factor of H⁻¹, with lazy batch updates.
 *
 * Built-in deciders are plain values (`{ kind: "grid", ... }`,
 * `{ kind: "prune", ... }`, `{ kind: "prune+grid", ... }`) so that a GPU
 * backend can run the same decision in a kernel; `{ kind: "custom" }` takes a
 * JavaScript callback (CPU only). Web-standard only.
 *
 * @see Frantar et al., "GPTQ" (2023), Algorithm 1; Frantar & Alistarh,
 * "SparseGPT" (2023), Algorithm 1.
 *
 * @module
 */

import { dims2, type Tensor, tensor } from "../core/tensor.ts";
import { asFloat32 } from "../core/convert.ts";
import { CholeskyError } from "../core/_dense.ts";
import type { CompressionStats } from "../quantizers/quantized_weight.ts";
import type { GridOptions } from "../quantizers/grid.ts";
import { codeOf, fitParams, type ResolvedGrid, resolveGrid } from "../quantizers/_grid_fit.ts";
import type { Hessian } from "./hessian.ts";
import { lazyBatchUpdate, upperCholeskyOfInverse } from "./_obs_kernels.ts";

/**
 * Which weights a pruning decider removes.
 * - `unstructured`: in each block of `blockSize` columns, exactly
 *   ⌊sparsity · rows · width⌋ weights with the smallest w²/[U]_jj² over all
 *   rows of the block (so per-row sparsity varies while each block's total is exact).
 * - `nm`: keep `n` of every `m` consecutive columns in each row: at the first
 *   column of each group of m, the m − n smallest scores of the group (on the
 *   already-updated weights) are removed. `m` must divide the columns.
 */
export type ObsPruneStructure =
  | { readonly kind: "unstructured"; readonly sparsity: number }
  | { readonly kind: "nm"; readonly n: number; readonly m: number };

/** What the custom decider is told about the column it decides. */
export interface ObsColumnInfo {
  /** Position in the processing order. */
  readonly position: number;
  /** Index of the column in the original weight. */
  readonly column: number;
  /** [U]_jj, the diagonal of the upper Cholesky factor of H⁻¹ at this position. */
  readonly hinvDiag: number;
}

/** The per-column decision of the OBS loop, as a value. */
export type ObsDecider =
  | {
    /** GPTQ: round each column onto a uniform grid fitted per output row. */
    readonly kind: "grid";
    readonly grid: GridOptions;
    /**
     * Fit the group grids on the original weights before the loop, in the
     * original column order (only with groups). Otherwise each group's grid
     * is fitted when the loop reaches its first column, on the weights as the
     * lazy updates left them, in processing order.
     * @default false
     */
    readonly staticGroups?: boolean;
  }
  | {
    /** SparseGPT: set the weights chosen by `structure` to zero. */
    readonly kind: "prune";
    readonly structure: ObsPruneStructure;
  }
  | {
    /** Joint: pruned weights become exactly 0, the others land on the grid. */
    readonly kind: "prune+grid";
    readonly structure: ObsPruneStructure;
    readonly grid: GridOptions;
    /** As for `grid`. @default false */
    readonly staticGroups?: boolean;
  }
  | {
    /** Any JavaScript decision (CPU only). */
    readonly kind: "custom";
    /**
     * New values of one column.
     * @param column The column's current (already updated) values [rows]; a copy.
     * @param info Where the column is.
     * @returns The new values [rows].
     */
    readonly decide: (column: Float32Array, info: ObsColumnInfo) => ArrayLike<number>;
  };

/** Options of {@linkcode obsSolve}. */
export interface ObsOptions {
  /** The per-column decision. */
  decider: ObsDecider;
  /** Columns per lazy batch update (N:M rounds it down to a multiple of m). @default 128 */
  blockSize?: number;
  /** Damping added to the diagonal, as a fraction of its mean. @default 0.01 */
  dampRatio?: number;
  /** Process columns by decreasing Hessian diagonal (act-order). @default false */
  actOrder?: boolean;
  /** Explicit processing order (a permutation of the columns); excludes `actOrder`. */
  perm?: ArrayLike<number>;
  /** Times the damping is multiplied by 10 when Cholesky fails before giving up. @default 6 */
  maxDampingRetries?: number;
  /** Called after each block with the columns done and the total. */
  onProgress?: (done: number, total: number) => void;
}

/** Statistics of an OBS solve. */
export interface ObsStats extends CompressionStats {
  /**
   * Σ (w − q)²/[U]_jj² over all decisions: the output error ‖(W − Ŵ)X‖²/count
   * under the damped Hessian (equal to the reference GPTQ's reported error,
   * whose Hessian carries the factor 2 and whose loss the factor 1/2).
   */
  obsLoss: number;
  /** Absolute damping added to the diagonal (after retries). */
  damping: number;
  /** Columns whose Hessian diagonal was zero (weights set to 0). */
  deadColumns: number;
  /** Total wall-clock seconds. */
  seconds: number;
  /** Seconds in the factorization of H⁻¹ (including retries). */
  choleskySeconds: number;
  /** Seconds in the column loop inside blocks (decisions and in-block updates). */
  loopSeconds: number;
  /** Seconds in the lazy batch updates between blocks. */
  updateSeconds: number;
}

/** What {@linkcode obsSolve} returns; columns in the original order. */
export interface ObsResult {
  /** The new weights [rows, cols]. */
  weight: Tensor<"f32">;
  /** Processing order, when not the identity (act-order or `perm`). */
  perm?: Int32Array;
  /** Grid codes [rows, cols] (grid deciders). */
  codes?: Uint8Array | Uint16Array;
  /** Grid step per row and group [rows, groups] (grid deciders). */
  scales?: Float32Array;
  /** Grid zero point per row and group [rows, groups] (grid deciders). */
  zeros?: Float32Array;
  /** Group of each column [cols] (grid deciders). */
  gIdx?: Int32Array;
  /** 1 where the weight was pruned to 0, [rows, cols] (prune deciders). */
  pruned?: Uint8Array;
  /** Loss, damping, dead columns and timings. */
  stats: ObsStats;
}

/** A decider compiled for one solve. Positions are in processing order. */
interface ColumnDecider {
  beginBlock(i1: number, i2: number, block: Float32Array): void;
  /** New values q [rows] of the column at `pos` (a row of `block`, which starts at column i1). */
  decide(pos: number, column: Float32Array, q: Float32Array, i1: number, block: Float32Array): void;
}

interface SolveContext {
  rows: number;
  n: number;
  /** Working weights in processing order [rows, n]; block-start state during a block. */
  w: Float32Array;
  /** Weights before dead-column zeroing, original order [rows, n]. */
  original: Float32Array;
  /** Weights after dead-column zeroing, original order [rows, n]. */
  cleaned: Float32Array;
  perm: Int32Array;
  u: Float64Array;
}

function fail(message: string): never {
  throw new RangeError(`Cannot run the OBS solver as ${message}`);
}

interface GridState {
  g: ResolvedGrid;
  codes: Uint8Array | Uint16Array;
  scales: Float32Array;
  zeros: Float32Array;
  gIdx: Int32Array; // processing order until unpermuted
  curScale: Float32Array; // [rows]
  curZero: Float32Array; // [rows]
  beginBlock(i1: number, i2: number): void;
  at(pos: number): void;
}

function gridState(ctx: SolveContext, options: GridOptions, staticGroups: boolean): GridState {
  const g = resolveGrid(options, "run the OBS solver");
  const { rows, n } = ctx;
  if (staticGroups && g.groupSize === -1) {
    fail(`'staticGroups' needs groups: 'groupSize' is -1`);
  }
  const gs = g.groupSize > 0 ? g.groupSize : n;
  const groups = g.groupSize > 0 ? Math.max(1, Math.ceil(n / gs)) : 1;
  const scales = new Float32Array(rows * groups), zeros = new Float32Array(rows * groups);
  const gIdx = new Int32Array(n);
  const codes = g.bits <= 8 ? new Uint8Array(rows * n) : new Uint16Array(rows * n);
  const curScale = new Float32Array(rows), curZero = new Float32Array(rows);
  const fitInto = (src: Float32Array, start: number, len: number, k: number): void => {
    for (let r = 0; r < rows; r++) {
      const p = fitParams(src, r * n + start, len, 1, g.maxq, g.symmetric, g.mse);
      scales[r * groups + k] = p.scale;
      zeros[r * groups + k] = p.zero;
    }
  };
  if (g.groupSize === -1) {
    // As the reference: the row grids are fitted on the weights as given,
    // before dead columns are zeroed.
    if (g.perTensor) {
      const p = fitParams(ctx.original, 0, rows * n, 1, g.maxq, g.symmetric, g.mse);
      scales.fill(p.scale);
      zeros.fill(p.zero);
    } else fitInto(ctx.original, 0, n, 0);
    curScale.set(scales);
    curZero.set(zeros);
  } else if (staticGroups) {
    for (let k = 0; k < groups; k++) {
      fitInto(ctx.cleaned, k * gs, Math.min(n, k * gs + gs) - k * gs, k);
    }
    for (let pos = 0; pos < n; pos++) gIdx[pos] = Math.floor(ctx.perm[pos]! / gs);
  } else {
    for (let pos = 0; pos < n; pos++) gIdx[pos] = Math.floor(pos / gs);
  }
  let current = -1;
  return {
    g,
    codes,
    scales,
    zeros,
    gIdx,
    curScale,
    curZero,
    beginBlock(i1, i2) {
      // Dynamic groups: fitted when the loop reaches their first column, on
      // W as the lazy updates left it (the state at the start of the block).
      if (g.groupSize === -1 || staticGroups) return;
      for (let k = Math.ceil(i1 / gs); k * gs < i2; k++) {
        fitInto(ctx.w, k * gs, Math.min(n, k * gs + gs) - k * gs, k);
      }
    },
    at(pos) {
      const k = gIdx[pos]!;
      if (k === current || g.groupSize === -1) return;
      current = k;
      for (let r = 0; r < rows; r++) {
        curScale[r] = scales[r * groups + k]!;
        curZero[r] = zeros[r * groups + k]!;
      }
    },
  };
}

interface PruneState {
  pruned: Uint8Array; // [rows, n], processing order until unpermuted
  beginBlock(i1: number, i2: number, block: Float32Array): void;
  at(pos: number, i1: number, block: Float32Array): void;
}

function checkStructure(structure: ObsPruneStructure, n: number): void {
  if (structure === null || typeof structure !== "object") {
    throw new TypeError(
      `Cannot run the OBS solver as 'structure' must be an object: current value is ${structure}`,
    );
  }
  if (structure.kind === "unstructured") {
    const s = structure.sparsity;
    if (typeof s !== "number" || !(s >= 0 && s < 1)) {
      fail(`'sparsity' must be in [0, 1): current value is ${s}`);
    }
  } else if (structure.kind === "nm") {
    const { n: keep, m } = structure;
    if (!Number.isInteger(m) || m < 1) {
      fail(`'m' must be a positive integer: current value is ${m}`);
    }
    if (!Number.isInteger(keep) || keep < 0 || keep >= m) {
      fail(`'n' must be an integer in [0, m): current value is ${keep} (m = ${m})`);
    }
    if (n % m !== 0) fail(`'m' (${m}) must divide the columns (${n})`);
  } else {
    throw new TypeError(
      `Cannot run the OBS solver as 'structure.kind' must be "unstructured" or "nm": current value is ${
        (structure as { kind: unknown }).kind
      }`,
    );
  }
}

function pruneState(ctx: SolveContext, structure: ObsPruneStructure): PruneState {
  const { rows, n, u } = ctx;
  const pruned = new Uint8Array(rows * n);
  if (structure.kind === "unstructured") {
    const sparsity = structure.sparsity;
    return {
      pruned,
      beginBlock(i1, i2, block) {
        // block is [width, rows] (transposed): score = w² / U_jj².
        const width = i2 - i1, total = width * rows;
        const k = Math.floor(sparsity * total);
        if (k === 0) return;
        const scores = new Float64Array(total);
        for (let i = 0; i < width; i++) {
          const d = u[(i1 + i) * n + i1 + i]!, dd = d * d;
          for (let r = 0; r < rows; r++) {
            const v = block[i * rows + r]!;
            scores[i * rows + r] = (v * v) / dd;
          }
        }
        const sorted = scores.slice().sort();
        const threshold = sorted[k - 1]!;
        let below = 0;
        for (let t = 0; t < total; t++) if (scores[t]! < threshold) below++;
        let ties = k - below; // prune ties at the threshold in row-major order
        for (let r = 0; r < rows; r++) {
          for (let i = 0; i < width; i++) {
            const s = scores[i * rows + r]!;
            if (s < threshold || (s === threshold && ties-- > 0)) pruned[r * n + i1 + i] = 1;
          }
        }
      },
      at() {},
    };
  }
  const { n: keep, m } = structure;
  const drop = m - keep;
  const idx = new Int32Array(m);
  const sc = new Float64Array(m);
  return {
    pruned,
    beginBlock() {},
    at(pos, i1, block) {
      if (pos % m !== 0 || drop === 0) return;
      for (let r = 0; r < rows; r++) {
        for (let t = 0; t < m; t++) {
          const d = u[(pos + t) * n + pos + t]!;
          const v = block[(pos - i1 + t) * rows + r]!;
          sc[t] = (v * v) / (d * d);
          idx[t] = t;
        }
        // Partial selection of the `drop` smallest (ties: lower column first).
        for (let a = 0; a < drop; a++) {
          let best = a;
          for (let b = a + 1; b < m; b++) {
            const x = sc[idx[b]!]!, y = sc[idx[best]!]!;
            if (x < y || (x === y && idx[b]! < idx[best]!)) best = b;
          }
          const tmp = idx[a]!;
          idx[a] = idx[best]!;
          idx[best] = tmp;
          pruned[r * n + pos + idx[a]!] = 1;
        }
      }
    },
  };
}

function compileDecider(
  ctx: SolveContext,
  decider: ObsDecider,
): { decider: ColumnDecider; grid?: GridState; prune?: PruneState } {
  const { rows, n } = ctx;
  if (decider === null || typeof decider !== "object") {
    throw new TypeError(
      `Cannot run the OBS solver as 'decider' must be an object: current value is ${decider}`,
    );
  }
  switch (decider.kind) {
    case "grid": {
      const grid = gridState(ctx, decider.grid, decider.staticGroups ?? false);
      const { maxq } = grid.g;
      return {
        grid,
        decider: {
          beginBlock: (i1, i2) => grid.beginBlock(i1, i2),
          decide(pos, column, q) {
            grid.at(pos);
            const { curScale, curZero, codes } = grid;
            for (let r = 0; r < rows; r++) {
              const s = curScale[r]!, z = curZero[r]!;
              const c = codeOf(column[r]!, s, z, maxq);
              codes[r * n + pos] = c;
              q[r] = s * (c - z);
            }
          },
        },
      };
    }
    case "prune": {
      checkStructure(decider.structure, n);
      const prune = pruneState(ctx, decider.structure);
      return {
        prune,
        decider: {
          beginBlock: (i1, i2, block) => prune.beginBlock(i1, i2, block),
          decide(pos, column, q, i1, block) {
            prune.at(pos, i1, block);
            for (let r = 0; r < rows; r++) q[r] = prune.pruned[r * n + pos] ? 0 : column[r]!;
          },
        },
      };
    }
    case "prune+grid": {
      checkStructure(decider.structure, n);
      const prune = pruneState(ctx, decider.structure);
      const grid = gridState(ctx, decider.grid, decider.staticGroups ?? false);
      const { maxq } = grid.g;
      return {
        prune,
        grid,
        decider: {
          beginBlock(i1, i2, block) {
            grid.beginBlock(i1, i2);
            prune.beginBlock(i1, i2, block);
          },
          decide(pos, column, q, i1, block) {
            grid.at(pos);
            prune.at(pos, i1, block);
            const { curScale, curZero, codes } = grid;
            for (let r = 0; r < rows; r++) {
              const s = curScale[r]!, z = curZero[r]!;
              if (prune.pruned[r * n + pos]) {
                // 0 is on every grid: the range always includes it and the
                // zero point is an integer.
                codes[r * n + pos] = z;
                q[r] = 0;
              } else {
                const c = codeOf(column[r]!, s, z, maxq);
                codes[r * n + pos] = c;
                q[r] = s * (c - z);
              }
            }
          },
        },
      };
    }
    case "custom": {
      if (typeof decider.decide !== "function") {
        throw new TypeError(`Cannot run the OBS solver as 'decider.decide' must be a function`);
      }
      const fn = decider.decide;
      return {
        decider: {
          beginBlock() {},
          decide(pos, column, q) {
            const out = fn(column.slice(), {
              position: pos,
              column: ctx.perm[pos]!,
              hinvDiag: ctx.u[pos * n + pos]!,
            });
            if (!out || out.length !== rows) {
              throw new RangeError(
                `Cannot run the OBS solver as the custom decider returned ${out?.length} values for a column of ${rows}`,
              );
            }
            for (let r = 0; r < rows; r++) {
              const v = out[r]!;
              if (!Number.isFinite(v)) {
                throw new RangeError(
                  `Cannot run the OBS solver as the custom decider returned ${v} at row ${r}, position ${pos}`,
                );
              }
              q[r] = v;
            }
          },
        },
      };
    }
    default:
      throw new TypeError(
        `Cannot run the OBS solver as 'decider.kind' must be "grid", "prune", "prune+grid" or "custom": current value is ${
          (decider as { kind: unknown }).kind
        }`,
      );
  }
}

function resolvePerm(
  n: number,
  diag: Float64Array,
  actOrder: boolean,
  perm: ArrayLike<number> | undefined,
): Int32Array | null {
  if (perm !== undefined) {
    if (actOrder) fail(`'perm' and 'actOrder' exclude each other`);
    if (perm === null || typeof perm !== "object" || perm.length !== n) {
      fail(`'perm' must be a permutation of ${n} columns: its length is ${perm?.length}`);
    }
    const seen = new Uint8Array(n);
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const c = perm[i]!;
      if (!Number.isInteger(c) || c < 0 || c >= n || seen[c]) {
        fail(`'perm' must be a permutation of ${n} columns: element ${i} is ${c}`);
      }
      seen[c] = 1;
      out[i] = c;
    }
    return out;
  }
  if (!actOrder) return null;
  // Decreasing diagonal; ties keep the original order (a stable sort).
  const order = Array.from({ length: n }, (_, i) => i);
  order.sort((a, b) => diag[b]! - diag[a]! || a - b);
  return Int32Array.from(order);
}

/**
 * The Optimal Brain Surgeon column loop (GPTQ / SparseGPT Algorithm 1) with a
 * pluggable decision.
 *
 * Steps: dead inputs (zero Hessian diagonal) get diagonal 1 and weights 0;
 * columns are optionally permuted (act-order: decreasing diagonal); H is
 * damped by `dampRatio` × its mean diagonal (×10 per retry while Cholesky
 * fails); U = upper Cholesky factor of H⁻¹. Then, block by block, each
 * column's new values q are decided, the error (w − q)/U_jj is propagated to
 * the rest of the block immediately and to later blocks in one batch
 * (W[:, i2:] −= Err·U[block, i2:]). Arithmetic on W is float32 (as the
 * reference), the factorization float64.
 *
 * @example
 * ```ts
 * import { obsSolve } from "./obs.ts";
 * import { hessian } from "./hessian.ts";
 * import { tensor } from "../core/tensor.ts";
 * const x = tensor("f32", [8, 4], Float32Array.from({ length: 32 }, (_, i) => Math.sin(i)));
 * const w = tensor("f32", [2, 4], new Float32Array([0.3, -0.2, 0.9, 0.1, -0.5, 0.4, 0.05, 0.7]));
 * const res = await obsSolve(w, hessian(x), { decider: { kind: "grid", grid: { bits: 2 } } });
 * console.assert(res.codes!.length === 8 && res.stats.obsLoss >= 0);
 * ```
 *
 * @param weight The layer weight [rows, cols] = [out, in], any float dtype.
 * @param hessian The layer's Hessian over its inputs (cols × cols).
 * @param options Decider, block size, damping, column order, progress.
 * @returns New weights, the decisions (codes / mask) and statistics.
 * @throws {RangeError} on shape mismatches, invalid options, non-finite values.
 * @throws {CholeskyError} if H stays indefinite after all damping retries.
 */
export async function obsSolve(
  weight: Tensor,
  hessian: Hessian,
  options: ObsOptions,
): Promise<ObsResult> {
  await Promise.resolve();
  const t0 = performance.now();
  if (weight === null || typeof weight !== "object" || !("shape" in weight)) {
    throw new TypeError(`Cannot run the OBS solver as 'weight' must be a Tensor`);
  }
  if (options === null || typeof options !== "object") {
    throw new TypeError(`Cannot run the OBS solver as 'options' must be an object`);
  }
  const [rows, n] = dims2(weight, "weight");
  if (hessian === null || typeof hessian !== "object" || !(hessian.xtx instanceof Float64Array)) {
    throw new TypeError(`Cannot run the OBS solver as 'hessian' must be a Hessian`);
  }
  if (hessian.cols !== n || hessian.xtx.length !== n * n) {
    fail(`the Hessian has ${hessian.cols} columns and the weight [${weight.shape}] has ${n}`);
  }
  const {
    decider,
    blockSize = 128,
    dampRatio = 0.01,
    actOrder = false,
    perm: userPerm,
    maxDampingRetries = 6,
    onProgress,
  } = options;
  if (!Number.isInteger(blockSize) || blockSize < 1) {
    fail(`'blockSize' must be a positive integer: current value is ${blockSize}`);
  }
  if (typeof dampRatio !== "number" || !(dampRatio >= 0) || !Number.isFinite(dampRatio)) {
    fail(`'dampRatio' must be a finite number >= 0: current value is ${dampRatio}`);
  }
  if (!Number.isInteger(maxDampingRetries) || maxDampingRetries < 0) {
    fail(`'maxDampingRetries' must be an integer >= 0: current value is ${maxDampingRetries}`);
  }
  if (typeof actOrder !== "boolean") {
    throw new TypeError(
      `Cannot run the OBS solver as 'actOrder' must be a boolean: current value is ${actOrder}`,
    );
  }
  if (onProgress !== undefined && typeof onProgress !== "function") {
    throw new TypeError(`Cannot run the OBS solver as 'onProgress' must be a function`);
  }
  const original = asFloat32(weight).slice(); // [rows, n]
  for (let i = 0; i < original.length; i++) {
    if (!Number.isFinite(original[i]!)) {
      fail(`'weight' must be finite: element ${i} is ${original[i]}`);
    }
  }
  const h = hessian.xtx.slice(); // [n, n]
  for (let i = 0; i < h.length; i++) {
    if (!Number.isFinite(h[i]!)) fail(`the Hessian must be finite: element ${i} is ${h[i]}`);
  }

  // Dead inputs: their weights are irrelevant to the output.
  const cleaned = original.slice();
  let deadColumns = 0;
  for (let j = 0; j < n; j++) {
    if (h[j * n + j] === 0) {
      deadColumns++;
      h[j * n + j] = 1;
      for (let r = 0; r < rows; r++) cleaned[r * n + j] = 0;
    }
  }
  const diag = new Float64Array(n);
  for (let j = 0; j < n; j++) diag[j] = h[j * n + j]!;
  const permOrNull = resolvePerm(n, diag, actOrder, userPerm);
  const perm = permOrNull ?? Int32Array.from({ length: n }, (_, i) => i);

  // Working copies in processing order.
  const w = new Float32Array(rows * n); // [rows, n]
  const hp = new Float64Array(n * n); // [n, n]
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < n; i++) w[r * n + i] = cleaned[r * n + perm[i]!]!;
  }
  for (let i = 0; i < n; i++) {
    const pi = perm[i]! * n;
    for (let j = 0; j < n; j++) hp[i * n + j] = h[pi + perm[j]!]!;
  }

  // Damping and the factor U of H⁻¹, retrying with 10× more damping.
  const tc = performance.now();
  let meanDiag = 0;
  for (let j = 0; j < n; j++) meanDiag += diag[j]!;
  meanDiag = n > 0 ? meanDiag / n : 1;
  let damping = dampRatio * meanDiag;
  let u: Float64Array | null = null;
  for (let attempt = 0; u === null; attempt++) {
    const damped = hp.slice();
    for (let j = 0; j < n; j++) damped[j * n + j] = damped[j * n + j]! + damping;
    try {
      u = upperCholeskyOfInverse(damped, n);
    } catch (e) {
      if (!(e instanceof CholeskyError) || attempt >= maxDampingRetries) throw e;
      damping = damping > 0 ? damping * 10 : 1e-8 * meanDiag;
    }
  }
  const choleskySeconds = (performance.now() - tc) / 1000;

  const ctx: SolveContext = { rows, n, w, original, cleaned, perm, u };
  const compiled = compileDecider(ctx, decider);
  let bs = blockSize;
  if (
    (decider.kind === "prune" || decider.kind === "prune+grid") && decider.structure.kind === "nm"
  ) {
    const m = decider.structure.m;
    bs = Math.max(m, Math.floor(blockSize / m) * m);
  }

  let obsLoss = 0, loopSeconds = 0, updateSeconds = 0;
  const q = new Float32Array(rows);
  for (let i1 = 0; i1 < n; i1 += bs) {
    const i2 = Math.min(n, i1 + bs), width = i2 - i1;
    const tl = performance.now();
    // The block, transposed so that each column is contiguous: [width, rows].
    const block = new Float32Array(width * rows);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < width; i++) block[i * rows + r] = w[r * n + i1 + i]!;
    }
    const err = new Float64Array(rows * width); // [rows, width]
    compiled.decider.beginBlock(i1, i2, block);
    const e = new Float64Array(rows);
    for (let i = 0; i < width; i++) {
      const pos = i1 + i;
      const column = block.subarray(i * rows, (i + 1) * rows);
      compiled.decider.decide(pos, column, q, i1, block);
      const uRow = pos * n;
      const d = u[uRow + pos]!;
      for (let r = 0; r < rows; r++) {
        const diff = column[r]! - q[r]!;
        const ei = diff / d;
        obsLoss += ei * ei;
        e[r] = ei;
        err[r * width + i] = ei;
        column[r] = q[r]!;
      }
      for (let j = i + 1; j < width; j++) {
        const uij = u[uRow + i1 + j]!;
        if (uij === 0) continue;
        const o = j * rows;
        for (let r = 0; r < rows; r++) block[o + r] = block[o + r]! - e[r]! * uij;
      }
    }
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < width; i++) w[r * n + i1 + i] = block[i * rows + r]!;
    }
    const tu = performance.now();
    loopSeconds += (tu - tl) / 1000;
    if (i2 < n) lazyBatchUpdate(w, rows, n, i1, i2, err, u);
    updateSeconds += (performance.now() - tu) / 1000;
    onProgress?.(i2, n);
  }

  // Back to the original column order.
  const out = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < n; i++) out[r * n + perm[i]!] = w[r * n + i]!;
  }
  const result: ObsResult = {
    weight: tensor("f32", [rows, n], out),
    stats: {
      obsLoss,
      damping,
      deadColumns,
      seconds: (performance.now() - t0) / 1000,
      choleskySeconds,
      loopSeconds,
      updateSeconds,
    },
  };
  if (permOrNull) result.perm = permOrNull;
  const unpermute = <A extends Uint8Array | Uint16Array>(src: A): A => {
    if (!permOrNull) return src;
    const dst = new (src.constructor as new (len: number) => A)(src.length);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < n; i++) dst[r * n + perm[i]!] = src[r * n + i]!;
    }
    return dst;
  };
  if (compiled.grid) {
    const g = compiled.grid;
    result.codes = unpermute(g.codes);
    result.scales = g.scales;
    result.zeros = g.zeros;
    const gIdx = new Int32Array(n);
    for (let i = 0; i < n; i++) gIdx[perm[i]!] = g.gIdx[i]!;
    result.gIdx = gIdx;
  }
  if (compiled.prune) result.pruned = unpermute(compiled.prune.pruned);
  return result;
}
