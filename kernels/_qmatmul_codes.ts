/**
 * Code extraction shared by the qmatmul WGSL generators (`qmatmul_wgsl.ts`,
 * `_qmatmul_tiled.ts`). Private: not re-exported.
 *
 * @module
 */

/**
 * WGSL expression of code `i` of a chunk (words `w0…w{b−1}`) as the f32
 * 1 + q/2^b: the code's bits moved to mantissa bits [23−b, 23).
 */
export function codeAsFloat(bits: number, i: number, word: (j: number) => string): string {
  const s = i * bits, j = s >>> 5, off = s & 31, target = 23 - bits;
  let moved: string;
  if (off + bits <= 32) {
    const shift = target - off;
    moved = shift > 0
      ? `(${word(j)} << ${shift}u)`
      : shift < 0
      ? `(${word(j)} >> ${-shift}u)`
      : word(j);
  } else {
    moved = `(((${word(j)} >> ${off}u) | (${word(j + 1)} << ${32 - off}u)) << ${target}u)`;
  }
  const mask = (((1 << bits) - 1) << target) >>> 0;
  return `bitcast<f32>((${moved} & ${mask}u) | 0x3f800000u)`;
}

/**
 * Bit offsets per "exact" accumulator: codes are read at offsets
 * p ∈ {0, b, …, (A−1)·b} (p + b ≤ 16), A = 16/b (4 for 3 bits).
 */
export function exactSpan(bits: number): number {
  return bits === 3 ? 12 : 16;
}

/**
 * WGSL expression of code `i` of a chunk as f = 1 + q·2^(p−23), with the
 * index a of its accumulator (p = a·b).
 */
export function codeInPlace(
  bits: number,
  i: number,
  word: (j: number) => string,
): { expr: string; acc: number } {
  const span = exactSpan(bits);
  const s = i * bits, j = s >>> 5, off = s & 31;
  const mask = (1 << bits) - 1;
  if (off + bits > 32) {
    const moved = `((${word(j)} >> ${off}u) | (${word(j + 1)} << ${32 - off}u))`;
    return { expr: `bitcast<f32>((${moved} & ${mask}u) | 0x3f800000u)`, acc: 0 };
  }
  // Offset of the first code that starts in word j.
  const base = (Math.ceil((32 * j) / bits) * bits) - 32 * j;
  const p = (off - base) % span, shift = off - p;
  const src = shift === 0 ? word(j) : `(${word(j)} >> ${shift}u)`;
  return {
    expr: `bitcast<f32>((${src} & ${(mask << p) >>> 0}u) | 0x3f800000u)`,
    acc: p / bits,
  };
}

/**
 * The masks of one word for the "half" dequantization, b ∈ {2, 4, 8}: per
 * mask the right shift of the word, the offset p of its codes in each half,
 * and the index k (within the word) of the code in the low half (the high
 * half holds code k + 16/b). Codes at offsets o < 16 are read in increasing
 * order; the shift moves on to o where o − shift + b would pass 11 (the f16
 * value of a half is q·2^(p−24) only while q·2^p < 2^11).
 */
export function halfMasks(bits: number): { shift: number; p: number; k: number }[] {
  const out: { shift: number; p: number; k: number }[] = [];
  let shift = 0;
  for (let o = 0; o < 16; o += bits) {
    if (o - shift + bits > 11) shift = o;
    out.push({ shift, p: o - shift, k: o / bits });
  }
  return out;
}
