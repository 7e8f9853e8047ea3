/**
 * Library-internal: the host-side assembly of `obsSolve`'s result from what
 * the GPU path (obs_gpu.ts) reads back: new weights or codes in the original
 * column order, the pruning mask, the loss. Timed by
 * `tests/hessian/obs_host_bench.ts`. Web-standard only.
 *
 * @module
 */

import { tensor } from "../core/tensor.ts";
import { dequantizeGrid } from "../core/uniform_grid.ts";
import type { ObsResult } from "./obs.ts";
import { setObsMasks } from "./_obs_host.ts";
import type { ObsGpuProblem } from "./obs_gpu.ts";

/**
 * The 0/1 bytes of each byte value's 8 bits (bit k → byte k), as two words
 * each in the platform's byte order: EXPAND[2b] holds bits 0–3, EXPAND[2b + 1] bits 4–7.
 */
const EXPAND = ((): Uint32Array => {
  const bytes = new Uint8Array(256 * 8);
  for (let b = 0; b < 256; b++) for (let k = 0; k < 8; k++) bytes[b * 8 + k] = (b >>> k) & 1;
  return new Uint32Array(bytes.buffer);
})();

/**
 * The bit mask the GPU wrote (bit i & 31 of word i >> 5 of each row's
 * ⌈n/32⌉ words, in processing order) as one byte per weight, original order.
 *
 * @param words Mask words [rows, ⌈n/32⌉].
 * @param rows Rows.
 * @param n Columns.
 * @param perm Processing order, or null for the identity.
 * @param out Where to write (zero-filled) [rows, n], or undefined for a fresh array.
 * @param complement Write 1 − bit (the keep-mask of a pruned-mask).
 * @returns 0/1 per weight [rows, n].
 */
function unpackMask(
  words: Uint32Array,
  rows: number,
  n: number,
  perm: Int32Array | null,
  out: Uint8Array = new Uint8Array(rows * n),
  complement = false,
): Uint8Array {
  const stride = Math.ceil(n / 32);
  if (perm === null && n % 32 === 0) {
    // Rows are whole words: word i fills output bytes 32i..32i+31, eight
    // aligned 4-byte writes through the table (zero words are already done).
    const out32 = new Uint32Array(out.buffer);
    const flip = complement ? 0xffffffff : 0;
    for (let i = 0; i < words.length; i++) {
      const x = (words[i]! ^ flip) >>> 0;
      if (x === 0) continue;
      const o = i * 8;
      let b = (x & 255) * 2;
      out32[o] = EXPAND[b]!;
      out32[o + 1] = EXPAND[b + 1]!;
      b = ((x >>> 8) & 255) * 2;
      out32[o + 2] = EXPAND[b]!;
      out32[o + 3] = EXPAND[b + 1]!;
      b = ((x >>> 16) & 255) * 2;
      out32[o + 4] = EXPAND[b]!;
      out32[o + 5] = EXPAND[b + 1]!;
      b = (x >>> 24) * 2;
      out32[o + 6] = EXPAND[b]!;
      out32[o + 7] = EXPAND[b + 1]!;
    }
    return out;
  }
  const flip = complement ? 0xffffffff : 0;
  for (let r = 0; r < rows; r++) {
    const wr = r * stride, row = r * n;
    for (let wi = 0; wi < stride; wi++) {
      const x = words[wr + wi]! ^ flip, c0 = wi * 32, c1 = Math.min(n, c0 + 32);
      if (perm === null) { for (let i = c0; i < c1; i++) out[row + i] = (x >>> (i - c0)) & 1; }
      else for (let i = c0; i < c1; i++) out[row + perm[i]!] = (x >>> (i - c0)) & 1;
    }
  }
  return out;
}

/**
 * The number of set bits among each row's first n bits of a bit mask [rows, ⌈n/32⌉].
 *
 * @param words Mask words.
 * @param rows Rows.
 * @param n Columns.
 * @returns The count.
 */
function countMaskBits(words: Uint32Array, rows: number, n: number): number {
  const stride = Math.ceil(n / 32), tail = n % 32;
  const last = tail === 0 ? 0xffffffff : (2 ** tail - 1) >>> 0;
  let count = 0;
  for (let r = 0; r < rows; r++) {
    const w0 = r * stride;
    for (let wi = 0; wi < stride; wi++) {
      let x = words[w0 + wi]!;
      if (wi === stride - 1) x &= last;
      x -= (x >>> 1) & 0x55555555;
      x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
      count += Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
    }
  }
  return count;
}

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
  /** A zero-filled array [rows, n] to unpack the mask into (else a fresh one). */
  maskOut?: Uint8Array;
  /**
   * Unpack the keep-mask (`kept`, with `pruned` computed on first access)
   * rather than the pruned one (`pruned`, with `kept` on first access).
   * @default false
   */
  keepMask?: boolean;
  /** A zero-filled array [rows, n] for the weights in the original order, when permuted. */
  weightOut?: Float32Array;
  /**
   * SpQR's results (with `hasGrid`: its codes, decoded scales and zero points
   * come as a grid's): the loop's Ŵ, which carries the float16 outliers.
   */
  spqr?: {
    /** The new weights in processing order [rows, n]. */
    weight: Float32Array;
    /** Outlier bits [rows, ⌈n/32⌉], processing order. */
    outlierWords: Uint32Array;
    /** Codes of the first-level steps [rows, groups]. */
    scaleCodes: Uint8Array;
    /** Codes of the first-level zero points [rows, groups]. */
    zeroCodes: Uint8Array;
    /** scaleLo, scaleHi, zeroLo, zeroHi, each [groups, rowGroups]. */
    ranges: Float32Array;
    /** The absolute outlier threshold (∞: none). */
    threshold: number;
  };
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
  }
  if (o.spqr || !o.hasGrid) {
    const w = o.spqr?.weight ?? new Float32Array(out.data[next++]!);
    if (identity) weight = w;
    else {
      weight = o.weightOut ?? new Float32Array(rows * n);
      for (let r = 0; r < rows; r++) {
        for (let i = 0; i < n; i++) weight[r * n + perm[i]!] = w[r * n + i]!;
      }
    }
  }
  // The grid's weights are the dequantized codes, built on first access
  // (gptq() never reads them).
  const gIdxOrig = new Int32Array(n);
  for (let i = 0; i < n; i++) gIdxOrig[perm[i]!] = o.gIdx[i]!;
  const dequantized = (): Float32Array =>
    dequantizeGrid(codes!, scales!, zeros!, gIdxOrig, rows, n);
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
  if (o.spqr) {
    const s = o.spqr, q = s.ranges.length / 4;
    result.outliers = unpackMask(s.outlierWords, rows, n, identity ? null : perm);
    result.statistics = {
      scaleCodes: s.scaleCodes,
      zeroCodes: s.zeroCodes,
      scaleLo: s.ranges.slice(0, q),
      scaleHi: s.ranges.slice(q, 2 * q),
      zeroLo: s.ranges.slice(2 * q, 3 * q),
      zeroHi: s.ranges.slice(3 * q),
      outlierThreshold: s.threshold,
    };
  }
  if (o.structure) {
    const words = new Uint32Array(out.data[next++]!), keep = o.keepMask ?? false;
    const mask = unpackMask(words, rows, n, identity ? null : perm, o.maskOut, keep);
    setObsMasks(result, mask, keep, countMaskBits(words, rows, n));
  }
  return result;
}
