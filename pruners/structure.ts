/**
 * Sparsity structures as values, their validation, and one top-k mask
 * function per structure that works with any score. Web-standard only.
 *
 * Masks are `Uint8Array`s [rows, cols], row-major, with **1 where the weight
 * is kept** and 0 where it is pruned. Every mask function prunes the
 * lowest-scoring weights, exactly the requested count, breaking ties by
 * position (the earlier element is pruned first), so the same scores always
 * give the same mask.
 *
 * @module
 */

import { kthSmallestInPlace } from "../core/_select.ts";

/**
 * Unstructured sparsity: prune a fraction `sparsity` of the weights, chosen
 * within each output row (`scope: "row"`) or over the whole layer
 * (`scope: "layer"`).
 */
export interface UnstructuredSparsity {
  /** Discriminant. */
  readonly kind: "unstructured";
  /** Fraction of weights to prune, in [0, 1). */
  readonly sparsity: number;
  /**
   * Where the count is exact: per output row or over the whole layer. Each
   * pruner documents its default (the one its paper uses).
   */
  readonly scope?: "row" | "layer";
}

/** N:M semi-structured sparsity: keep `n` of every `m` consecutive input columns, in each row. */
export interface NMSparsity {
  /** Discriminant. */
  readonly kind: "nm";
  /** Weights kept per group. */
  readonly n: number;
  /** Group length along the input dimension. */
  readonly m: number;
}

/** A sparsity pattern, as a plain value: `{ kind: "nm", n: 2, m: 4 }`. */
export type SparsityStructure = UnstructuredSparsity | NMSparsity;

/**
 * Number of weights pruned out of `total` at a given sparsity: ⌊sparsity·total⌋,
 * with products within 1e-9 of an integer rounded to it (so 0.29·100 prunes 29).
 *
 * @param sparsity Fraction in [0, 1).
 * @param total Number of candidates.
 * @returns The count to prune.
 */
export function prunedCount(sparsity: number, total: number): number {
  const x = sparsity * total;
  const r = Math.round(x);
  return Math.abs(x - r) <= 1e-9 * Math.max(1, total) ? r : Math.floor(x);
}

/**
 * Checks a structure against a layer with `cols` input columns and returns it
 * frozen with defaults resolved.
 *
 * @param structure The structure to check.
 * @param cols Input columns of the layer (N:M groups must tile them).
 * @param caller Verb for error messages, e.g. `"prune"`.
 * @returns The structure itself.
 * @throws {TypeError} when it is not a known structure value.
 * @throws {RangeError} when sparsity is outside [0, 1), n ≥ m, n < 1, or m does not divide `cols`.
 */
export function validateStructure(
  structure: SparsityStructure,
  cols: number,
  caller = "prune",
): SparsityStructure {
  if (structure === null || typeof structure !== "object") {
    throw new TypeError(
      `Cannot ${caller} as 'structure' must be an object such as { kind: "nm", n: 2, m: 4 }: current value is ${
        String(structure)
      }`,
    );
  }
  if (structure.kind === "unstructured") {
    const { sparsity, scope } = structure;
    if (typeof sparsity !== "number" || !(sparsity >= 0 && sparsity < 1)) {
      throw new RangeError(
        `Cannot ${caller} as 'structure.sparsity' must be a number in [0, 1): current value is ${
          String(sparsity)
        }`,
      );
    }
    if (scope !== undefined && scope !== "row" && scope !== "layer") {
      throw new RangeError(
        `Cannot ${caller} as 'structure.scope' must be "row" or "layer": current value is ${
          String(scope)
        }`,
      );
    }
    return structure;
  }
  if (structure.kind === "nm") {
    const { n, m } = structure;
    if (!Number.isSafeInteger(m) || m < 2) {
      throw new RangeError(
        `Cannot ${caller} as 'structure.m' must be an integer ≥ 2: current value is ${String(m)}`,
      );
    }
    if (!Number.isSafeInteger(n) || n < 1 || n >= m) {
      throw new RangeError(
        `Cannot ${caller} as 'structure.n' must be an integer in [1, m) = [1, ${m}): current value is ${
          String(n)
        }`,
      );
    }
    if (cols % m !== 0) {
      throw new RangeError(
        `Cannot ${caller} with ${n}:${m} sparsity as 'structure.m' (${m}) must divide the ${cols} input columns: ` +
          `pad the layer's columns to a multiple of ${m} or prune it unstructured`,
      );
    }
    return structure;
  }
  throw new TypeError(
    `Cannot ${caller} as 'structure.kind' must be "unstructured" or "nm": current value is ${
      String((structure as { kind?: unknown }).kind)
    }`,
  );
}

/**
 * Number of weights a structure prunes in a [rows, cols] layer (exact for
 * every structure and scope).
 *
 * @param structure A valid structure (see {@linkcode validateStructure}).
 * @param rows Output rows.
 * @param cols Input columns.
 * @param defaultScope Scope used when an unstructured structure names none.
 * @returns The pruned count.
 */
export function structurePrunedCount(
  structure: SparsityStructure,
  rows: number,
  cols: number,
  defaultScope: "row" | "layer" = "row",
): number {
  if (structure.kind === "nm") return rows * (cols / structure.m) * (structure.m - structure.n);
  const scope = structure.scope ?? defaultScope;
  return scope === "row"
    ? rows * prunedCount(structure.sparsity, cols)
    : prunedCount(structure.sparsity, rows * cols);
}

function checkScores(scores: ArrayLike<number>, rows: number, cols: number, what: string): void {
  if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows < 0 || cols < 0) {
    throw new RangeError(`Cannot build a ${what} mask of shape [${rows}, ${cols}]`);
  }
  if (scores.length !== rows * cols) {
    throw new RangeError(
      `Cannot build a ${what} mask as 'scores' has ${scores.length} elements, not ${rows}·${cols}`,
    );
  }
  for (let i = 0; i < scores.length; i++) {
    if (Number.isNaN(scores[i])) {
      throw new TypeError(
        `Cannot build a ${what} mask as 'scores' holds NaN at [${Math.floor(i / cols)}, ${
          i % cols
        }]`,
      );
    }
  }
}

/**
 * Clears `mask[start + i·stride]` for the `k` smallest of `len` strided scores
 * (ties: lower position first). `mask` must hold 1 at those positions.
 */
function pruneSmallest(
  scores: ArrayLike<number>,
  start: number,
  len: number,
  stride: number,
  k: number,
  mask: Uint8Array,
): void {
  if (k <= 0) return;
  if (k >= len) {
    for (let i = 0; i < len; i++) mask[start + i * stride] = 0;
    return;
  }
  const scratch = new Float64Array(len);
  for (let i = 0; i < len; i++) scratch[i] = scores[start + i * stride]!;
  const threshold = kthSmallestInPlace(scratch, k - 1);
  let below = 0;
  for (let i = 0; i < len; i++) if (scratch[i]! < threshold) below++;
  let tiesToPrune = k - below;
  for (let i = 0; i < len; i++) {
    const p = start + i * stride;
    const s = scores[p]!;
    if (s < threshold) mask[p] = 0;
    else if (s === threshold && tiesToPrune > 0) {
      mask[p] = 0;
      tiesToPrune--;
    }
  }
}

/**
 * Keep-mask of unstructured sparsity: prunes the ⌊sparsity·count⌋ lowest
 * scores of each row (`scope: "row"`) or of the whole layer (`"layer"`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { unstructuredMask } from "./structure.ts";
 * const mask = unstructuredMask([3, 1, 2, 4], [2, 2], { sparsity: 0.5, scope: "layer" });
 * assert(mask.join() === "1,0,0,1");
 * ```
 * @param scores Any scores [rows, cols] (higher = more important); NaN is rejected.
 * @param shape `[rows, cols]`.
 * @param options `sparsity` in [0, 1) and `scope` (default `"row"`).
 * @returns Keep-mask [rows, cols] (1 = kept).
 */
export function unstructuredMask(
  scores: ArrayLike<number>,
  shape: readonly [number, number],
  options: { sparsity: number; scope?: "row" | "layer" },
): Uint8Array {
  const [rows, cols] = shape;
  const { sparsity, scope = "row" } = options;
  validateStructure({ kind: "unstructured", sparsity, scope }, cols, "build a mask");
  checkScores(scores, rows, cols, "unstructured");
  const mask = new Uint8Array(rows * cols).fill(1);
  if (scope === "layer") {
    pruneSmallest(scores, 0, rows * cols, 1, prunedCount(sparsity, rows * cols), mask);
  } else {
    const k = prunedCount(sparsity, cols);
    for (let r = 0; r < rows; r++) pruneSmallest(scores, r * cols, cols, 1, k, mask);
  }
  return mask;
}

/**
 * Keep-mask of N:M sparsity: in each row, keeps the `n` highest scores of
 * every group of `m` consecutive columns.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { nmMask } from "./structure.ts";
 * const mask = nmMask([4, 1, 3, 2], [1, 4], { n: 2, m: 4 });
 * assert(mask.join() === "1,0,1,0");
 * ```
 * @param scores Any scores [rows, cols]; NaN is rejected.
 * @param shape `[rows, cols]`; `m` must divide `cols`.
 * @param options `n` kept of every `m`.
 * @returns Keep-mask [rows, cols] (1 = kept).
 */
export function nmMask(
  scores: ArrayLike<number>,
  shape: readonly [number, number],
  options: { n: number; m: number },
): Uint8Array {
  const [rows, cols] = shape;
  const { n, m } = options;
  validateStructure({ kind: "nm", n, m }, cols, "build a mask");
  checkScores(scores, rows, cols, "N:M");
  const mask = new Uint8Array(rows * cols).fill(1);
  const drop = m - n;
  for (let g = 0; g < rows * cols; g += m) {
    // selection of the `drop` smallest of m (m is small): repeated minimum
    for (let t = 0; t < drop; t++) {
      let best = -1;
      for (let i = g; i < g + m; i++) {
        if (mask[i] === 1 && (best < 0 || scores[i]! < scores[best]!)) best = i;
      }
      mask[best] = 0;
    }
  }
  return mask;
}

/**
 * Keep-mask of any structure from any scores (dispatches to
 * {@linkcode unstructuredMask} or {@linkcode nmMask}).
 *
 * @param scores Scores [rows, cols] (higher = more important).
 * @param shape `[rows, cols]`.
 * @param structure The structure.
 * @param defaultScope Scope for unstructured structures that name none.
 * @returns Keep-mask [rows, cols] (1 = kept).
 */
export function structureMask(
  scores: ArrayLike<number>,
  shape: readonly [number, number],
  structure: SparsityStructure,
  defaultScope: "row" | "layer" = "row",
): Uint8Array {
  validateStructure(structure, shape[1], "build a mask");
  if (structure.kind === "nm") return nmMask(scores, shape, structure);
  return unstructuredMask(scores, shape, {
    sparsity: structure.sparsity,
    scope: structure.scope ?? defaultScope,
  });
}
