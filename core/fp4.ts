/**
 * The FP4 element format E2M1 of the OCP Microscaling Formats (MX)
 * Specification v1.0, §5.3.3: 1 sign, 2 exponent (bias 1) and 1 mantissa
 * bit, no infinities and no NaN. Codes are the low 4 bits of a number,
 * `S.EE.M`; the positive codes 0–7 stand for 0, 0.5, 1, 1.5, 2, 3, 4, 6 and
 * bit 3 is the sign. Web-standard only.
 *
 * Encoding rounds to nearest, ties to even (the code with mantissa bit 0),
 * saturating magnitudes above 6 to ±6; negative values that round to zero
 * keep their sign (code 8, −0).
 *
 * @module
 */

/** Largest magnitude of E2M1 (`S.11.1`). */
export const FP4_E2M1_MAX = 6;

function decodeFormula(code: number): number {
  const sign = code & 8 ? -1 : 1;
  const exp = (code >> 1) & 3, man = code & 1;
  // exponent 0: subnormal m·2^(1 − bias − 1); otherwise (1 + m/2)·2^(exp − bias)
  return sign * (exp === 0 ? man * 0.5 : (1 + man / 2) * 2 ** (exp - 1));
}

/** Decoded value of each of the 16 codes. */
const TABLE: Float32Array = Float32Array.from({ length: 16 }, (_, c) => decodeFormula(c));

/**
 * Decodes one E2M1 code.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeE2M1 } from "./fp4.ts";
 * assert(decodeE2M1(0b0111) === 6 && decodeE2M1(0b1011) === -1.5);
 * ```
 * @param code The code (only the low 4 bits are used).
 * @returns Its value.
 */
export function decodeE2M1(code: number): number {
  return TABLE[code & 15]!;
}

/**
 * Encodes a number as E2M1: round to nearest, ties to even, ±6 beyond ±6.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeE2M1, encodeE2M1 } from "./fp4.ts";
 * assert(decodeE2M1(encodeE2M1(2.5)) === 2); // tie between 2 and 3: the even code
 * assert(decodeE2M1(encodeE2M1(-100)) === -6);
 * ```
 * @param x The value.
 * @returns The 4-bit code.
 * @throws {RangeError} for NaN (E2M1 has no NaN code).
 */
export function encodeE2M1(x: number): number {
  if (x !== x) throw new RangeError(`Cannot encode E2M1 as 'x' is NaN`);
  const sign = x < 0 || (x === 0 && 1 / x < 0) ? 8 : 0;
  const a = Math.abs(x);
  // The positive values increase with the code: find the first code whose
  // value is not below a, then pick the nearer of it and the one before
  // (ties to the even code).
  let c = 0;
  while (c < 7 && TABLE[c]! < a) c++;
  if (c > 0) {
    const lo = TABLE[c - 1]!, hi = TABLE[c]!;
    const dLo = a - lo, dHi = hi - a;
    if (dLo < dHi || (dLo === dHi && ((c - 1) & 1) === 0)) c--;
  }
  return sign | c;
}
