/**
 * E8M0, the scale format of the OCP Microscaling Formats (MX) Specification
 * v1.0, §5.4.1: an unsigned 8-bit biased exponent (bias 127) standing for
 * 2^(code − 127), code 255 being NaN; no sign, no zero. Web-standard only.
 *
 * @module
 */

/** The E8M0 NaN code. */
export const E8M0_NAN = 255;

/**
 * Decodes an E8M0 scale.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeE8M0 } from "./e8m0.ts";
 * assert(decodeE8M0(127) === 1 && decodeE8M0(125) === 0.25);
 * ```
 * @param code The code (only the low 8 bits are used).
 * @returns 2^(code − 127), or NaN for 255.
 */
export function decodeE8M0(code: number): number {
  const c = code & 0xff;
  return c === E8M0_NAN ? NaN : 2 ** (c - 127);
}

/**
 * ⌊log₂ x⌋ for a positive finite x, exactly (Math.log2 may round across a
 * power of two).
 *
 * @param x A positive finite number.
 * @returns The exponent of x's leading bit.
 */
export function floorLog2(x: number): number {
  let e = Math.floor(Math.log2(x));
  if (2 ** e > x) e--;
  else if (2 ** (e + 1) <= x) e++;
  return e;
}

/**
 * Encodes a power-of-two exponent as E8M0, clamped to the representable
 * exponents [−127, 127].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeE8M0 } from "./e8m0.ts";
 * assert(encodeE8M0(0) === 127 && encodeE8M0(-300) === 0);
 * ```
 * @param exponent An integer exponent e (the scale is 2^e).
 * @returns The code e + 127, clamped to [0, 254].
 * @throws {RangeError} if `exponent` is not an integer.
 */
export function encodeE8M0(exponent: number): number {
  if (!Number.isInteger(exponent)) {
    throw new RangeError(
      `Cannot encode E8M0 as 'exponent' must be an integer: current value is ${exponent}`,
    );
  }
  return Math.min(254, Math.max(0, exponent + 127));
}
