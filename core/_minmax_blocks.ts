/**
 * Library-internal: deterministic min–max (asymmetric) block quantization of a
 * float32 vector to `bits`-bit codes, packed in the bit layout of `packBits`
 * (quantizers/bitpack.ts). This is the quantizer MicroAdam applies to its
 * error-feedback buffer: per block,
 * u = (Δ − δ)/(2^b − 1), code = round((x − δ)/u), x̂ = δ + u·code.
 * Web-standard only.
 *
 * @see Modoranu et al., "MicroAdam", Algorithm 1 (Q and Q⁻¹).
 * @module
 */

import { packedWords } from "./bitpack.ts";

/** A vector quantized block-wise to `bits` bits with per-block [min, max]. */
export interface MinMaxBlocks {
  /** Element count of the quantized vector. */
  readonly length: number;
  /** Bits per code. */
  readonly bits: number;
  /** Elements per block (the last may be shorter). */
  readonly blockSize: number;
  /** The codes, packed little-endian into 32-bit words. */
  readonly codes: Uint32Array;
  /** Per-block minimum δ. */
  readonly lo: Float32Array;
  /** Per-block maximum Δ. */
  readonly hi: Float32Array;
}

/** Throws unless `bits` and `blockSize` are usable. */
export function checkMinMaxOptions(bits: number, blockSize: number, what: string): void {
  if (!Number.isInteger(bits) || bits < 1 || bits > 16) {
    throw new RangeError(
      `Cannot ${what} as 'bits' must be an integer in [1, 16]: current value is ${bits}`,
    );
  }
  if (!Number.isSafeInteger(blockSize) || blockSize < 1) {
    throw new RangeError(
      `Cannot ${what} as 'blockSize' must be a positive integer: current value is ${blockSize}`,
    );
  }
}

/**
 * Quantizes `x` block-wise (round to nearest).
 *
 * @param x The vector.
 * @param bits Bits per code.
 * @param blockSize Elements per block.
 * @returns The packed codes and block ranges.
 */
export function quantizeMinMaxBlocks(
  x: ArrayLike<number>,
  bits: number,
  blockSize: number,
): MinMaxBlocks {
  checkMinMaxOptions(bits, blockSize, "quantize blocks");
  const n = x.length;
  const nb = Math.ceil(n / blockSize);
  const lo = new Float32Array(nb), hi = new Float32Array(nb);
  // The codes go straight into the little-endian bit stream of packBits.
  const codes = new Uint32Array(packedWords(n, bits));
  const top = (1 << bits) - 1;
  for (let b = 0; b < nb; b++) {
    const s = b * blockSize, e = Math.min(n, s + blockSize);
    let mn = Infinity, mx = -Infinity;
    for (let i = s; i < e; i++) {
      const v = x[i]!;
      if (v < mn) mn = v;
      if (v > mx) mx = v;
    }
    // Store the range in float32 first, so that decoding uses the same δ, u.
    lo[b] = mn;
    hi[b] = mx;
    const d = lo[b]!, u = (hi[b]! - d) / top;
    if (!(u > 0)) continue; // constant block: every code 0 decodes to δ
    const inv = 1 / u;
    for (let i = s; i < e; i++) {
      const c = Math.min(top, Math.max(0, Math.round((x[i]! - d) * inv)));
      const bit = i * bits, w = bit >>> 5, off = bit & 31;
      codes[w] = (codes[w]! | (c << off)) >>> 0;
      if (off + bits > 32) codes[w + 1] = (codes[w + 1]! | (c >>> (32 - off))) >>> 0;
    }
  }
  return { length: n, bits, blockSize, codes, lo, hi };
}

/**
 * Decodes {@linkcode quantizeMinMaxBlocks}' output.
 *
 * @param q The quantized vector.
 * @returns x̂ = δ + u·code, block by block.
 */
export function dequantizeMinMaxBlocks(q: MinMaxBlocks): Float32Array {
  const { length: n, bits, blockSize, codes } = q;
  if (codes.length < packedWords(n, bits)) {
    throw new RangeError(`Cannot decode ${n} ${bits}-bit codes from ${codes.length} words`);
  }
  const out = new Float32Array(n);
  const top = (1 << bits) - 1;
  for (let b = 0; b * blockSize < n; b++) {
    const s = b * blockSize, e = Math.min(n, s + blockSize);
    const d = q.lo[b]!, u = (q.hi[b]! - d) / top;
    for (let i = s; i < e; i++) {
      // Read code i from the bit stream (it may straddle two words).
      const bit = i * bits, w = bit >>> 5, off = bit & 31;
      let c = codes[w]! >>> off;
      if (off + bits > 32) c |= codes[w + 1]! << (32 - off);
      out[i] = u > 0 ? d + u * (c & top) : d;
    }
  }
  return out;
}
