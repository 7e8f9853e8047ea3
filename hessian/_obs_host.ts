/**
 * Library-internal: the host-side preparation of an OBS solve (the copies of
 * W, the finiteness checks, dead columns and the processing order), shared by
 * the CPU and GPU paths of `obsSolve` and timed by
 * `tests/hessian/obs_host_bench.ts`. Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { asFloat32 } from "../core/convert.ts";
import { firstNonFinite } from "../core/_finite.ts";
import { fail } from "./_obs_deciders.ts";
import type { ObsResult } from "./obs.ts";

/**
 * The checked inputs of an OBS solve. `original`, `cleaned` and `w` may share
 * storage with each other and with the weight's own data (no dead columns, no
 * permutation, float32 weights): they are read only; a solver that updates W
 * in place copies it first.
 */
export interface PreparedObs {
  /** Weights as given, original order [rows, n]. */
  readonly original: Float32Array;
  /** Weights with dead columns zeroed, original order [rows, n]. */
  readonly cleaned: Float32Array;
  /** Weights in processing order, dead columns zeroed [rows, n]. */
  readonly w: Float32Array;
  /** The Hessian's diagonal with dead entries set to 1, original order [n]. */
  readonly diag: Float64Array;
  /** Columns whose Hessian diagonal is zero. */
  readonly deadColumns: number;
  /** Processing order, or null for the identity. */
  readonly perm: Int32Array | null;
  /** Mean of `diag` (the damping unit). */
  readonly meanDiag: number;
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
 * Throws unless W and H are finite (the scan `prepareObs` runs unless told
 * to defer it: the GPU path runs it while the GPU works).
 *
 * @param original The weights [rows, n] as float32.
 * @param xtx The Hessian [n, n].
 * @throws {RangeError} naming the first non-finite element.
 */
export function checkObsFinite(original: Float32Array, xtx: Float64Array): void {
  const badW = firstNonFinite(original);
  if (badW >= 0) fail(`'weight' must be finite: element ${badW} is ${original[badW]}`);
  const badH = firstNonFinite(xtx);
  if (badH >= 0) fail(`the Hessian must be finite: element ${badH} is ${xtx[badH]}`);
}

/**
 * Checks W and H finite (unless `deferFiniteCheck`), zeroes the weights of
 * dead inputs (zero Hessian diagonal, whose weights are irrelevant to the
 * output), resolves the processing order and lays out the working weights,
 * copying W only where its values change (dead columns, a permutation, a
 * dtype other than float32).
 *
 * @param weight The weight [rows, n] (shapes already checked).
 * @param xtx The Hessian [n, n], or `{ diag }` (its diagonal [n]) when the
 *   matrix is on a device (then the caller checks finiteness: the scan is skipped).
 * @param rows Rows of W.
 * @param n Columns of W.
 * @param actOrder Decreasing-diagonal order.
 * @param userPerm Explicit order, or undefined.
 * @param deferFiniteCheck Skip the finiteness scan: the caller runs
 *   {@linkcode checkObsFinite} itself before it uses any result.
 * @returns The prepared inputs.
 * @throws {RangeError} on non-finite values or an invalid `perm`.
 */
export function prepareObs(
  weight: Tensor,
  xtx: Float64Array | { readonly diag: Float64Array },
  rows: number,
  n: number,
  actOrder: boolean,
  userPerm: ArrayLike<number> | undefined,
  deferFiniteCheck = false,
): PreparedObs {
  // The caller's float32 storage itself (read only), else a converted copy.
  const original = asFloat32(weight); // [rows, n]
  const full = xtx instanceof Float64Array ? xtx : null;
  if (!deferFiniteCheck && full !== null) checkObsFinite(original, full);

  const diag = new Float64Array(n);
  let deadColumns = 0;
  for (let j = 0; j < n; j++) {
    diag[j] = full !== null ? full[j * n + j]! : (xtx as { diag: Float64Array }).diag[j]!;
    if (diag[j] === 0) deadColumns++;
  }
  // Dead inputs: their weights are irrelevant to the output, set to 0 (in a copy).
  let cleaned = original;
  if (deadColumns > 0) {
    cleaned = original.slice();
    for (let j = 0; j < n; j++) {
      if (diag[j] !== 0) continue;
      diag[j] = 1;
      for (let r = 0; r < rows; r++) cleaned[r * n + j] = 0;
    }
  }
  const perm = resolvePerm(n, diag, actOrder, userPerm);

  // Working weights in processing order [rows, n].
  let w = cleaned;
  if (perm) {
    w = new Float32Array(rows * n);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < n; i++) w[r * n + i] = cleaned[r * n + perm[i]!]!;
    }
  }
  let meanDiag = 0;
  for (let j = 0; j < n; j++) meanDiag += diag[j]!;
  meanDiag = n > 0 ? meanDiag / n : 1;
  return { original, cleaned, w, diag, deadColumns, perm, meanDiag };
}

/**
 * The complement of a 0/1 mask (1 − b per byte), in a fresh array.
 *
 * @param mask 0/1 bytes.
 * @returns 1 where `mask` is 0, 0 where it is 1.
 */
export function complementMask(mask: Uint8Array): Uint8Array {
  const out = new Uint8Array(mask.length);
  let i = 0;
  if (mask.byteOffset % 4 === 0) {
    // Four bytes at a time: 1 − b is b XOR 1 for b in {0, 1}.
    const src = new Uint32Array(mask.buffer, mask.byteOffset, mask.length >>> 2);
    const dst = new Uint32Array(out.buffer, 0, src.length);
    for (let j = 0; j < src.length; j++) dst[j] = src[j]! ^ 0x01010101;
    i = src.length * 4;
  }
  for (; i < mask.length; i++) out[i] = mask[i]! ^ 1;
  return out;
}

/**
 * The number of ones in a 0/1 mask.
 *
 * @param mask 0/1 bytes.
 * @returns How many are 1.
 */
export function countOnes(mask: Uint8Array): number {
  let count = 0, i = 0;
  if (mask.byteOffset % 4 === 0) {
    // The top byte of x·0x01010101 is the sum of x's four bytes (at most 4: no carry).
    const words = new Uint32Array(mask.buffer, mask.byteOffset, mask.length >>> 2);
    for (let j = 0; j < words.length; j++) count += Math.imul(words[j]!, 0x01010101) >>> 24;
    i = words.length * 4;
  }
  for (; i < mask.length; i++) count += mask[i]!;
  return count;
}

/**
 * Sets a prune decider's masks on a result: the one the solver produced as
 * a value, the complement as a getter computed on first access (each a fresh
 * array of the result's own), and `prunedCount`.
 *
 * @param result The result.
 * @param mask The solver's mask [rows, cols], original order.
 * @param kept Whether `mask` is the keep-mask (else the pruned one).
 * @param prunedCount The number of pruned weights.
 */
export function setObsMasks(
  result: ObsResult,
  mask: Uint8Array,
  kept: boolean,
  prunedCount: number,
): void {
  let other: Uint8Array | null = null;
  const lazy = (): Uint8Array => other ??= complementMask(mask);
  Object.defineProperty(result, kept ? "kept" : "pruned", {
    value: mask,
    enumerable: true,
    writable: true,
    configurable: true,
  });
  Object.defineProperty(result, kept ? "pruned" : "kept", {
    get: lazy,
    enumerable: true,
    configurable: true,
  });
  result.prunedCount = prunedCount;
}
