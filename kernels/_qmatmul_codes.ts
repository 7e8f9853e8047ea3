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
