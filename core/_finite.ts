/**
 * Library-internal: a fast finiteness scan of float storage. It ORs an
 * integer test of the exponent field over chunks of the raw bits (no
 * conversion, no copy, no branch per element) and locates the first
 * non-finite element only in a chunk that has one. Web-standard only.
 *
 * @module
 */

/** Whether the platform stores the low half of a float64 first. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Elements per chunk: the early exit comes within one chunk of a bad value. */
const CHUNK = 1 << 14;

function locate(a: Float32Array | Float64Array, start: number, end: number): number {
  for (let i = start; i < end; i++) if (!Number.isFinite(a[i]!)) return i;
  return -1;
}

/**
 * The index of the first NaN or ±Infinity in `a`, or −1 when all are finite.
 *
 * An element is non-finite exactly when its exponent field is all ones; with
 * e = bits & expMask, e + expLsb reaches the sign bit (2³¹, a negative int32)
 * only then, so one OR over a chunk tells whether the chunk has one.
 *
 * @param a Float values (not mutated).
 * @returns The first non-finite index, or −1.
 */
export function firstNonFinite(a: Float32Array | Float64Array): number {
  const len = a.length;
  if (a instanceof Float64Array) {
    // The high 32 bits of each float64 hold its sign and exponent.
    const bits = new Int32Array(a.buffer, a.byteOffset, 2 * len);
    const hi = LITTLE_ENDIAN ? 1 : 0;
    for (let s = 0; s < len; s += CHUNK) {
      const e = Math.min(len, s + CHUNK);
      let acc = 0;
      for (let i = 2 * s + hi; i < 2 * e; i += 2) acc |= (bits[i]! & 0x7ff00000) + 0x00100000;
      if (acc < 0) return locate(a, s, e);
    }
    return -1;
  }
  const bits = new Int32Array(a.buffer, a.byteOffset, len);
  for (let s = 0; s < len; s += CHUNK) {
    const e = Math.min(len, s + CHUNK);
    let acc = 0;
    for (let i = s; i < e; i++) acc |= (bits[i]! & 0x7f800000) + 0x00800000;
    if (acc < 0) return locate(a, s, e);
  }
  return -1;
}

/**
 * The index of the first non-finite value among raw 16-bit float bits
 * (float16 or bfloat16), or −1; the same exponent test as
 * {@linkcode firstNonFinite}, with the sign bit of 16 bits.
 *
 * @param bits Raw bits (a `Uint16Array` view of float16 or bfloat16 storage).
 * @param exponentMask 0x7c00 for float16, 0x7f80 for bfloat16.
 * @returns The first non-finite index, or −1.
 */
export function firstNonFinite16(bits: Uint16Array, exponentMask: 0x7c00 | 0x7f80): number {
  const len = bits.length, lsb = exponentMask & -exponentMask;
  for (let s = 0; s < len; s += CHUNK) {
    const e = Math.min(len, s + CHUNK);
    let acc = 0;
    for (let i = s; i < e; i++) acc |= (bits[i]! & exponentMask) + lsb;
    if (acc & 0x8000) {
      for (let i = s; i < e; i++) if ((bits[i]! & exponentMask) === exponentMask) return i;
    }
  }
  return -1;
}
