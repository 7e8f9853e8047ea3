import assert from "node:assert/strict";
import { decodeE8M0, E8M0_NAN, encodeE8M0, floorLog2 } from "../../core/e8m0.ts";

Deno.test("decodeE8M0 is 2^(code − 127) on all 255 finite codes and NaN on 255", () => {
  for (let c = 0; c < 255; c++) {
    // 2^(c − 127) by repeated doubling/halving from 1, independently of `**`
    let v = 1;
    for (let e = 0; e < Math.abs(c - 127); e++) v = c >= 127 ? v * 2 : v / 2;
    assert.equal(decodeE8M0(c), v, `code ${c}`);
  }
  assert.ok(Number.isNaN(decodeE8M0(E8M0_NAN)));
});

Deno.test("encodeE8M0 inverts decodeE8M0 and clamps to [2^−127, 2^127]", () => {
  for (let c = 0; c < 255; c++) assert.equal(encodeE8M0(floorLog2(decodeE8M0(c))), c);
  assert.equal(encodeE8M0(200), 254);
  assert.equal(encodeE8M0(-200), 0);
  assert.throws(() => encodeE8M0(0.5), /'exponent' must be an integer/);
});

Deno.test("floorLog2 is exact at and beside every power of two", () => {
  for (let e = -149; e < 128; e++) {
    const p = 2 ** e;
    assert.equal(floorLog2(p), e);
    if (e > -149) assert.equal(floorLog2(p * (1 - 2 ** -53)), e - 1);
    assert.equal(floorLog2(p * (1 + 2 ** -52)), e);
  }
  assert.equal(floorLog2(5), 2);
  assert.equal(floorLog2(0.1), -4);
});
