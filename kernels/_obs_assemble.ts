/**
 * Library-internal: the host-side assembly of `obsSolve`'s result from what
 * the GPU path (obs_gpu.ts) reads back: new weights or codes in the original
 * column order, the pruning mask, the loss. Timed by
 * `tests/hessian/obs_host_bench.ts`. Web-standard only.
 *
 * @module
 */

import { tensor } from "../core/tensor.ts";
import type { ObsResult } from "../hessian/obs.ts";
import type { ObsGpuProblem } from "./obs_gpu.ts";

/** What the GPU submission read back, in the order obs_gpu.ts requests it. */
export interface ObsGpuOutput {
  /** status, loss [rows], then codes, scales, zeros (grid) or W (no grid), then the mask words (prune). */
  data: ArrayBuffer[];
  /** GPU seconds of the whole submission. */
  gpuSeconds: number;
  /** GPU seconds per named phase. */
  phases: Record<string, number>;
}

/** How the GPU path was configured. */
export interface ObsAssembleOptions {
  /** The decider has a grid (codes come back, not W). */
  hasGrid: boolean;
  /** Codes per 32-bit word. */
  cpw: number;
  /** Groups per row. */
  groups: number;
  /** Group of each position [n]. */
  gIdx: Uint32Array;
  /** Damping used. */
  damping: number;
  /** The decider prunes (a mask comes back). */
  structure: boolean;
}

/**
 * Builds `obsSolve`'s result, columns in the original order, from the read-back buffers.
 *
 * @param p The problem.
 * @param perm The processing order (identity included) [n].
 * @param out The read-back buffers.
 * @param o The configuration.
 * @returns The result (stats without the host phase timings).
 */
export function assembleObsResult(
  p: ObsGpuProblem,
  perm: Int32Array,
  out: ObsGpuOutput,
  o: ObsAssembleOptions,
): ObsResult {
  const { rows, n } = p;
  const identity = p.perm === null;
  const lossRows = new Float32Array(out.data[1]!);
  let obsLoss = 0;
  for (let r = 0; r < rows; r++) obsLoss += lossRows[r]!;
  let weight: Float32Array | null = null;
  let codes: Uint8Array | Uint16Array | null = null;
  let scales: Float32Array | null = null, zeros: Float32Array | null = null;
  let next = 2;
  if (o.hasGrid) {
    const words = new Uint32Array(out.data[next++]!);
    scales = new Float32Array(out.data[next++]!);
    zeros = new Float32Array(out.data[next++]!);
    const bitsPer = 32 / o.cpw, mask = 2 ** bitsPer - 1, cpw = o.cpw;
    if (identity && n % cpw === 0) {
      // Rows pack into whole words: the little-endian words are the codes.
      codes = cpw === 4 ? new Uint8Array(words.buffer) : new Uint16Array(words.buffer);
    } else {
      codes = cpw === 4 ? new Uint8Array(rows * n) : new Uint16Array(rows * n);
      const stride = Math.ceil(n / cpw);
      for (let r = 0; r < rows; r++) {
        const wr = r * stride, row = r * n;
        for (let i = 0; i < n; i++) {
          const c = (words[wr + ((i / cpw) | 0)]! >>> ((i % cpw) * bitsPer)) & mask;
          codes[row + (identity ? i : perm[i]!)] = c;
        }
      }
    }
  } else {
    const w = new Float32Array(out.data[next++]!);
    if (identity) weight = w;
    else {
      weight = new Float32Array(rows * n);
      for (let r = 0; r < rows; r++) {
        for (let i = 0; i < n; i++) weight[r * n + perm[i]!] = w[r * n + i]!;
      }
    }
  }
  // The grid's weights are the dequantized codes, built on first access
  // (gptq() never reads them).
  const gIdxOrig = new Int32Array(n);
  for (let i = 0; i < n; i++) gIdxOrig[perm[i]!] = o.gIdx[i]!;
  const dequantized = (): Float32Array => {
    const out = new Float32Array(rows * n), groups = o.groups;
    for (let r = 0; r < rows; r++) {
      const row = r * n, gr = r * groups;
      for (let c = 0; c < n; c++) {
        const k = gr + gIdxOrig[c]!;
        out[row + c] = scales![k]! * (codes![row + c]! - zeros![k]!);
      }
    }
    return out;
  };
  p.onProgress?.(n, n);
  let weightTensor: ObsResult["weight"] | null = weight === null
    ? null
    : tensor("f32", [rows, n], weight);
  const result: ObsResult = {
    get weight(): ObsResult["weight"] {
      if (weightTensor === null) weightTensor = tensor("f32", [rows, n], dequantized());
      return weightTensor;
    },
    stats: {
      obsLoss,
      damping: o.damping,
      deadColumns: p.deadColumns,
      seconds: (performance.now() - p.t0) / 1000,
      choleskySeconds: out.phases.factor ?? NaN,
      loopSeconds: out.phases.rest ?? NaN,
      updateSeconds: NaN,
      gpuSeconds: out.gpuSeconds,
    },
  };
  if (p.perm) result.perm = p.perm;
  if (codes !== null) {
    result.codes = codes;
    result.scales = scales!;
    result.zeros = zeros!;
    result.gIdx = gIdxOrig;
  }
  if (o.structure) {
    const words = new Uint32Array(out.data[next++]!);
    const stride = Math.ceil(n / 32);
    const pruned = new Uint8Array(rows * n);
    for (let r = 0; r < rows; r++) {
      const wr = r * stride, row = r * n;
      for (let i = 0; i < n; i++) {
        pruned[row + (identity ? i : perm[i]!)] = (words[wr + (i >> 5)]! >>> (i & 31)) & 1;
      }
    }
    result.pruned = pruned;
  }
  return result;
}
