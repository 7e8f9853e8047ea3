/**
 * Bit packing: a sequence of b-bit codes as a little-endian bit stream in
 * 32-bit words. Code `i` occupies stream bits `[i·b, (i+1)·b)`; stream bit `s`
 * is bit `s mod 32` of word `⌊s/32⌋`. A code may straddle two words (b = 3,
 * 5, 6, 7). This is the layout GPTQ checkpoints use along their packed axis,
 * for every bit width (for 3 bits, 32 codes fill exactly 3 words).
 * Web-standard only.
 *
 * @module
 */

function checkBits(bits: number, what: string): void {
  if (!Number.isInteger(bits) || bits < 1 || bits > 16) {
    throw new RangeError(
      `Cannot ${what} as 'bits' must be an integer in [1, 16]: current value is ${bits}`,
    );
  }
}

/**
 * Words needed for `count` codes of `bits` bits.
 *
 * @param count Number of codes.
 * @param bits Bits per code.
 * @returns ⌈count·bits/32⌉.
 */
export function packedWords(count: number, bits: number): number {
  return Math.ceil((count * bits) / 32);
}

/**
 * Packs codes into a little-endian bit stream of 32-bit words.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { packBits, unpackBits } from "./bitpack.ts";
 * const words = packBits([1, 2, 3, 4, 5], 3);
 * assert(unpackBits(words, 3, 5).join() === "1,2,3,4,5");
 * ```
 * @param codes Codes in [0, 2^bits).
 * @param bits Bits per code, 1–16.
 * @returns ⌈n·bits/32⌉ words.
 */
export function packBits(codes: ArrayLike<number>, bits: number): Uint32Array {
  checkBits(bits, "pack codes");
  return packBitsInto(codes, bits, new Uint32Array(packedWords(codes.length, bits)), 0);
}

/**
 * Packs codes as {@linkcode packBits} does, into `out` from word `offset` on
 * (the ⌈n·bits/32⌉ words there are overwritten), without allocating.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { packBitsInto, unpackBits } from "./bitpack.ts";
 * const out = new Uint32Array(4).fill(7);
 * packBitsInto([1, 2, 3], 4, out, 2);
 * assert(out[0] === 7 && unpackBits(out.subarray(2), 4, 3).join() === "1,2,3");
 * ```
 * @param codes Codes in [0, 2^bits).
 * @param bits Bits per code, 1–16.
 * @param out The words to write.
 * @param offset The first word written.
 * @returns `out`.
 */
export function packBitsInto(
  codes: ArrayLike<number>,
  bits: number,
  out: Uint32Array,
  offset: number,
): Uint32Array {
  checkBits(bits, "pack codes");
  const n = codes.length;
  const end = offset + packedWords(n, bits);
  if (!(Number.isInteger(offset) && offset >= 0 && end <= out.length)) {
    throw new RangeError(
      `Cannot pack ${n} ${bits}-bit codes into words [${offset}, ${end}) of ${out.length}`,
    );
  }
  out.fill(0, offset, end);
  const max = (1 << bits) - 1;
  for (let i = 0; i < n; i++) {
    const c = codes[i]!;
    if (!(c >= 0 && c <= max && Number.isInteger(c))) {
      throw new RangeError(`Cannot pack code ${c} at index ${i} into ${bits} bits`);
    }
    const s = i * bits;
    const w = offset + (s >>> 5), o = s & 31;
    out[w] = (out[w]! | (c << o)) >>> 0;
    if (o + bits > 32) out[w + 1] = (out[w + 1]! | (c >>> (32 - o))) >>> 0;
  }
  return out;
}

/**
 * Unpacks `count` codes from a little-endian bit stream.
 *
 * @param words The packed words.
 * @param bits Bits per code, 1–16.
 * @param count Number of codes to read.
 * @returns The codes.
 */
export function unpackBits(words: Uint32Array, bits: number, count: number): Uint16Array {
  checkBits(bits, "unpack codes");
  if (words.length < packedWords(count, bits)) {
    throw new RangeError(
      `Cannot unpack ${count} ${bits}-bit codes from ${words.length} words ` +
        `(need ${packedWords(count, bits)})`,
    );
  }
  const out = new Uint16Array(count);
  const mask = (1 << bits) - 1;
  for (let i = 0; i < count; i++) {
    const s = i * bits;
    const w = s >>> 5, o = s & 31;
    let v = words[w]! >>> o;
    if (o + bits > 32) v |= words[w + 1]! << (32 - o);
    out[i] = v & mask;
  }
  return out;
}
