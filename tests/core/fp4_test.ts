import assert from "node:assert/strict";
import { decodeE2M1, encodeE2M1, FP4_E2M1_MAX } from "../../core/fp4.ts";

// The OCP MX spec's E2M1 table (§5.3.3), written out: codes S.EE.M.
const POSITIVE = [0, 0.5, 1, 1.5, 2, 3, 4, 6];
const REF = [...POSITIVE, ...POSITIVE.map((v) => -v)];

Deno.test("decodeE2M1 agrees with the spec's table on all 16 codes", () => {
  for (let c = 0; c < 16; c++) assert.ok(Object.is(decodeE2M1(c), REF[c]), `code ${c}`);
  assert.ok(Object.is(decodeE2M1(8), -0));
  assert.equal(FP4_E2M1_MAX, 6);
});

Deno.test("every E2M1 code decodes and re-encodes to itself", () => {
  for (let c = 0; c < 16; c++) assert.equal(encodeE2M1(decodeE2M1(c)), c);
});

Deno.test("encodeE2M1 picks the nearest value, ties to the even code", () => {
  // Brute force over a fine sweep: the nearest table value, ties to the code with mantissa 0.
  for (let x = -7; x <= 7; x += 1 / 64) {
    const a = Math.abs(x);
    let best = 0;
    for (let c = 1; c < 8; c++) {
      const d = Math.abs(POSITIVE[c]! - a), db = Math.abs(POSITIVE[best]! - a);
      if (d < db || (d === db && c % 2 === 0)) best = c;
    }
    const want = (x < 0 ? 8 : 0) | best;
    assert.equal(encodeE2M1(x), want, `x = ${x}`);
  }
  // every midpoint by hand
  const ties: [number, number][] = [[0.25, 0], [0.75, 1], [1.25, 1], [1.75, 2], [2.5, 2], [
    3.5,
    4,
  ], [5, 4]];
  for (const [x, v] of ties) assert.equal(decodeE2M1(encodeE2M1(x)), v, `tie ${x}`);
});

Deno.test("encodeE2M1 saturates beyond ±6, keeps the sign of zero and refuses NaN", () => {
  assert.equal(encodeE2M1(1e30), 7);
  assert.equal(encodeE2M1(-Infinity), 15);
  assert.equal(encodeE2M1(-0), 8);
  assert.equal(encodeE2M1(-0.1), 8);
  assert.throws(() => encodeE2M1(NaN), RangeError);
});
