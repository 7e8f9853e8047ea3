/**
 * Library-internal: the built-in deciders of the OBS solver (grid, prune,
 * prune+grid, float-grid, custom; spqr in `_obs_spqr.ts`), compiled for one solve. Positions are in processing
 * order. Web-standard only.
 *
 * @module
 */

import {
  codeOf,
  fitParams,
  type GridOptions,
  type ResolvedGrid,
  resolveGrid,
} from "../core/uniform_grid.ts";
import type { ObsDecider, ObsPruneStructure } from "./obs.ts";
import { kthSmallestInPlace } from "../core/_select.ts";
import { spqrDecider, type SpqrState } from "./_obs_spqr.ts";
import {
  absMax,
  e2m1Code,
  e2m1Value,
  e4m3Code,
  e4m3Value,
  fp8Scale,
  type MxFormat,
  mxLayout,
  mxScaleCode,
  mxScaleValue,
  mxTensorScale,
  type ScaledFloatFormat,
} from "../core/scaled_float.ts";

/**
 * A decider compiled for one solve. Positions are in processing order; the
 * current block is stored transposed, [width, rows], starting at column i1.
 */
export interface ColumnDecider {
  /**
   * Whether `decide` must see whole columns (a custom decider); otherwise rows
   * are independent within a block and the solver may process them in chunks.
   */
  readonly wholeColumns: boolean;
  /** Called once per block, before any decision in it. */
  beginBlock(i1: number, i2: number, block: Float32Array): void;
  /**
   * New values q[r], r0 ≤ r < r1, of the column at `pos`, whose current values
   * are block[(pos − i1)·rows + r].
   */
  decide(
    pos: number,
    i1: number,
    block: Float32Array,
    r0: number,
    r1: number,
    q: Float32Array,
  ): void;
}

export interface SolveContext {
  rows: number;
  n: number;
  /** Working weights in processing order [rows, n]; block-start state during a block. */
  w: Float32Array;
  /** Weights before dead-column zeroing, original order [rows, n]. */
  original: Float32Array;
  /** Weights after dead-column zeroing, original order [rows, n]. */
  cleaned: Float32Array;
  perm: Int32Array;
  /** Upper Cholesky factor of H⁻¹ in processing order [n, n] (float32, as the reference). */
  u: Float32Array;
}

export function fail(message: string): never {
  throw new RangeError(`Cannot run the OBS solver as ${message}`);
}

interface GridState {
  g: ResolvedGrid;
  codes: Uint8Array | Uint16Array;
  scales: Float32Array;
  zeros: Float32Array;
  gIdx: Int32Array; // processing order until unpermuted
  groups: number;
  beginBlock(i1: number, i2: number): void;
}

/** Grids fitted before the column loop, shared by the CPU and GPU solvers. */
export interface InitialGrids {
  g: ResolvedGrid;
  /** Columns per group (n when per channel). */
  gs: number;
  groups: number;
  /** [rows, groups]; dynamic groups are still to be fitted (see `fitInto`). */
  scales: Float32Array;
  zeros: Float32Array;
  /** Group of each position in processing order. */
  gIdx: Int32Array;
  /** Whether groups are fitted when the loop reaches them (on the updated weights). */
  dynamic: boolean;
  /** Fits group k of every row on columns [start, start + len) of `src` [rows, n]. */
  fitInto(src: Float32Array, start: number, len: number, k: number): void;
}

/**
 * Resolves a grid decider and fits what is known before the loop: per-channel
 * grids (on the weights as given, before dead columns are zeroed, as the
 * reference) and static groups (on the cleaned weights, original order).
 *
 * @param rows Rows of W.
 * @param n Columns of W.
 * @param original Weights before dead-column zeroing [rows, n].
 * @param cleaned Weights after it [rows, n].
 * @param perm Processing order.
 * @param options The grid.
 * @param staticGroups Fit group grids before the loop.
 * @returns The grids and the group layout.
 */
export function initialGrids(
  rows: number,
  n: number,
  original: Float32Array,
  cleaned: Float32Array,
  perm: Int32Array,
  options: GridOptions,
  staticGroups: boolean,
): InitialGrids {
  const g = resolveGrid(options, "run the OBS solver");
  if (staticGroups && g.groupSize === -1) {
    fail(`'staticGroups' needs groups: 'groupSize' is -1`);
  }
  const gs = g.groupSize > 0 ? g.groupSize : n;
  const groups = g.groupSize > 0 ? Math.max(1, Math.ceil(n / gs)) : 1;
  const scales = new Float32Array(rows * groups), zeros = new Float32Array(rows * groups);
  const gIdx = new Int32Array(n);
  const fitInto = (src: Float32Array, start: number, len: number, k: number): void => {
    for (let r = 0; r < rows; r++) {
      const p = fitParams(src, r * n + start, len, 1, g.maxq, g.symmetric, g.mse);
      scales[r * groups + k] = p.scale;
      zeros[r * groups + k] = p.zero;
    }
  };
  if (g.groupSize === -1) {
    if (g.perTensor) {
      const p = fitParams(original, 0, rows * n, 1, g.maxq, g.symmetric, g.mse);
      scales.fill(p.scale);
      zeros.fill(p.zero);
    } else fitInto(original, 0, n, 0);
  } else if (staticGroups) {
    for (let k = 0; k < groups; k++) {
      fitInto(cleaned, k * gs, Math.min(n, k * gs + gs) - k * gs, k);
    }
    for (let pos = 0; pos < n; pos++) gIdx[pos] = Math.floor(perm[pos]! / gs);
  } else {
    for (let pos = 0; pos < n; pos++) gIdx[pos] = Math.floor(pos / gs);
  }
  const dynamic = g.groupSize !== -1 && !staticGroups;
  return { g, gs, groups, scales, zeros, gIdx, dynamic, fitInto };
}

function gridState(ctx: SolveContext, options: GridOptions, staticGroups: boolean): GridState {
  const { rows, n } = ctx;
  const { g, gs, groups, scales, zeros, gIdx, dynamic, fitInto } = initialGrids(
    rows,
    n,
    ctx.original,
    ctx.cleaned,
    ctx.perm,
    options,
    staticGroups,
  );
  const codes = g.bits <= 8 ? new Uint8Array(rows * n) : new Uint16Array(rows * n);
  return {
    g,
    codes,
    scales,
    zeros,
    gIdx,
    groups,
    beginBlock(i1, i2) {
      // Dynamic groups: fitted when the loop reaches their first column, on
      // W as the lazy updates left it (the state at the start of the block).
      if (!dynamic) return;
      for (let k = Math.ceil(i1 / gs); k * gs < i2; k++) {
        fitInto(ctx.w, k * gs, Math.min(n, k * gs + gs) - k * gs, k);
      }
    },
  };
}

/** What a "float-grid" decider decided: codes and scales (see `ObsResult`). */
export interface FloatGridState {
  /** Codes [rows, n], processing order until unpermuted. */
  codes: Uint8Array;
  /** Float32 multiplier per row and block [rows, blocks] (FP8: [rows] or [1]). */
  scales: Float32Array;
  /** MX block scale codes [rows, blocks]. */
  scaleCodes?: Uint8Array;
  /** MX tensor scale. */
  tensorScale?: number;
}

function floatGridDecider(
  ctx: SolveContext,
  format: ScaledFloatFormat,
  granularity: unknown,
  staticGroups: unknown,
): { decider: ColumnDecider; float: FloatGridState } {
  const { rows, n, perm } = ctx;
  if (typeof staticGroups !== "boolean") {
    throw new TypeError(
      `Cannot run the OBS solver as 'staticGroups' must be a boolean: current value is ${staticGroups}`,
    );
  }
  if (format !== "fp8" && format !== "mxfp4" && format !== "nvfp4") {
    throw new TypeError(
      `Cannot run the OBS solver as 'format' must be "mxfp4", "nvfp4" or "fp8": current value is ${
        String(format)
      }`,
    );
  }
  const codes = new Uint8Array(rows * n);
  if (format === "fp8") {
    if (granularity !== "channel" && granularity !== "tensor") {
      throw new TypeError(
        `Cannot run the OBS solver as 'granularity' must be "channel" or "tensor": current value is ${
          String(granularity)
        }`,
      );
    }
    // Scales of the weights as given (as per-channel grids), never refitted.
    const scales = granularity === "channel"
      ? Float32Array.from({ length: rows }, (_, r) => fp8Scale(absMax(ctx.original, r * n, n)))
      : Float32Array.of(fp8Scale(absMax(ctx.original, 0, rows * n)));
    const perRow = granularity === "channel";
    return {
      float: { codes, scales },
      decider: {
        wholeColumns: false,
        beginBlock() {},
        decide(pos, i1, block, r0, r1, q) {
          const o = (pos - i1) * rows;
          for (let r = r0; r < r1; r++) {
            const s = scales[perRow ? r : 0]!;
            const c = e4m3Code(block[o + r]!, s);
            codes[r * n + pos] = c;
            q[r] = e4m3Value(c, s);
          }
        },
      },
    };
  }
  if (granularity !== undefined) {
    fail(`'granularity' applies to "fp8" only: current format is ${String(format)}`);
  }
  const f: MxFormat = format;
  const { blockSize: bs } = mxLayout(f, "run the OBS solver");
  const blocks = Math.ceil(n / bs);
  const tensorScale = mxTensorScale(f, absMax(ctx.original, 0, rows * n));
  const scaleCodes = new Uint8Array(rows * blocks), scales = new Float32Array(rows * blocks);
  // Fits block k of every row on columns [k·bs, …) of src [rows, n] (original order).
  const fit = (src: Float32Array, k: number): void => {
    const c0 = k * bs, len = Math.min(n, c0 + bs) - c0;
    for (let r = 0; r < rows; r++) {
      const sc = mxScaleCode(f, absMax(src, r * n + c0, len), tensorScale);
      scaleCodes[r * blocks + k] = sc;
      scales[r * blocks + k] = mxScaleValue(f, sc, tensorScale);
    }
  };
  let identity = true;
  for (let i = 0; i < n && identity; i++) identity = perm[i] === i;
  if (staticGroups) {
    for (let k = 0; k < blocks; k++) fit(ctx.cleaned, k);
  } else if (!identity) {
    fail(`the ${f} blocks are runs of original columns: a permuted order needs 'staticGroups'`);
  }
  return {
    float: { codes, scales, scaleCodes, tensorScale },
    decider: {
      wholeColumns: false,
      beginBlock(i1, i2) {
        // Dynamic blocks: fitted when the loop reaches their first column, on
        // W as the lazy updates left it (processing order is the original one).
        if (staticGroups) return;
        for (let k = Math.ceil(i1 / bs); k * bs < i2; k++) fit(ctx.w, k);
      },
      decide(pos, i1, block, r0, r1, q) {
        const o = (pos - i1) * rows, k = Math.floor(perm[pos]! / bs);
        for (let r = r0; r < r1; r++) {
          const m = scales[r * blocks + k]!;
          const c = e2m1Code(block[o + r]!, m);
          codes[r * n + pos] = c;
          q[r] = e2m1Value(c, m);
        }
      },
    },
  };
}

interface PruneState {
  pruned: Uint8Array; // [rows, n], processing order until unpermuted
  beginBlock(i1: number, i2: number, block: Float32Array): void;
  /** N:M: chooses the group's pruned weights for rows [r0, r1) at its first column. */
  at(pos: number, i1: number, block: Float32Array, r0: number, r1: number): void;
}

/** Validates a prune structure for n columns (shared with the GPU path). */
export function checkStructure(structure: ObsPruneStructure, n: number): void {
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
        // the k-th smallest in linear time (a full sort dominated 50% pruning)
        const threshold = kthSmallestInPlace(scores.slice(), k - 1);
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
    at(pos, i1, block, r0, r1) {
      if (pos % m !== 0 || drop === 0) return;
      for (let r = r0; r < r1; r++) {
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

export function compileDecider(
  ctx: SolveContext,
  decider: ObsDecider,
): {
  decider: ColumnDecider;
  grid?: GridState;
  prune?: PruneState;
  float?: FloatGridState;
  spqr?: SpqrState;
} {
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
          wholeColumns: false,
          beginBlock: (i1, i2) => grid.beginBlock(i1, i2),
          decide(pos, i1, block, r0, r1, q) {
            const { scales, zeros, codes, groups } = grid;
            const k = grid.gIdx[pos]!, o = (pos - i1) * rows;
            for (let r = r0; r < r1; r++) {
              const s = scales[r * groups + k]!, z = zeros[r * groups + k]!;
              const c = codeOf(block[o + r]!, s, z, maxq);
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
          wholeColumns: false,
          beginBlock: (i1, i2, block) => prune.beginBlock(i1, i2, block),
          decide(pos, i1, block, r0, r1, q) {
            prune.at(pos, i1, block, r0, r1);
            const o = (pos - i1) * rows;
            for (let r = r0; r < r1; r++) q[r] = prune.pruned[r * n + pos] ? 0 : block[o + r]!;
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
          wholeColumns: false,
          beginBlock(i1, i2, block) {
            grid.beginBlock(i1, i2);
            prune.beginBlock(i1, i2, block);
          },
          decide(pos, i1, block, r0, r1, q) {
            prune.at(pos, i1, block, r0, r1);
            const { scales, zeros, codes, groups } = grid;
            const k = grid.gIdx[pos]!, o = (pos - i1) * rows;
            for (let r = r0; r < r1; r++) {
              const s = scales[r * groups + k]!, z = zeros[r * groups + k]!;
              if (prune.pruned[r * n + pos]) {
                // 0 is on every grid: the range always includes it and the
                // zero point is an integer.
                codes[r * n + pos] = z;
                q[r] = 0;
              } else {
                const c = codeOf(block[o + r]!, s, z, maxq);
                codes[r * n + pos] = c;
                q[r] = s * (c - z);
              }
            }
          },
        },
      };
    }
    case "float-grid": {
      const granularity = decider.format === "fp8"
        ? decider.granularity ?? "channel"
        : decider.granularity;
      return floatGridDecider(ctx, decider.format, granularity, decider.staticGroups ?? false);
    }
    case "spqr":
      return spqrDecider(ctx, decider);
    case "custom": {
      if (typeof decider.decide !== "function") {
        throw new TypeError(`Cannot run the OBS solver as 'decider.decide' must be a function`);
      }
      const fn = decider.decide;
      return {
        decider: {
          wholeColumns: true,
          beginBlock() {},
          decide(pos, i1, block, _r0, _r1, q) {
            const o = (pos - i1) * rows;
            const out = fn(block.slice(o, o + rows), {
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
        `Cannot run the OBS solver as 'decider.kind' must be "grid", "float-grid", "prune", "prune+grid", "spqr" or "custom": current value is ${
          (decider as { kind: unknown }).kind
        }`,
      );
  }
}
