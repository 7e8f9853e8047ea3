import assert from "node:assert/strict";
import {
  codeOnGrid,
  minMaxGrid,
  quantizeStatistics,
  statisticValue,
  valueOnGrid,
} from "../../core/_bilevel_grid.ts";

Deno.test("minMaxGrid() spans [min, max] with an unrounded zero point and maps both ends to the end codes", () => {
  const [lo, hi] = [Math.fround(-0.3), Math.fround(0.9)];
  const g = minMaxGrid(lo, hi, 7);
  assert.equal(codeOnGrid(lo, g.scale, g.zero, 7), 0);
  assert.equal(codeOnGrid(hi, g.scale, g.zero, 7), 7);
  assert(Math.abs(valueOnGrid(0, g.scale, g.zero) - lo) < 1e-7);
  assert(Math.abs(valueOnGrid(7, g.scale, g.zero) - hi) < 1e-7);
  assert.notEqual(g.zero, Math.round(g.zero)); // not rounded, unlike GPTQ's grid
  // An empty range falls back to [−1, 1], as the reference.
  assert.deepEqual(minMaxGrid(0.25, 0.25, 3), minMaxGrid(-1, 1, 3));
});

Deno.test("quantizeStatistics() rounds a strided run onto the grid of its float16 range, a constant run to itself", () => {
  // Run of every other value: 0.010, 0.012, ..., 0.024 (8 values).
  const values = Float32Array.from({ length: 16 }, (_, i) => (i % 2 === 0 ? 0.01 + 0.001 * i : 99));
  const codes = new Uint8Array(16);
  const { lo, hi } = quantizeStatistics(values, 0, 2, 8, 3, codes);
  assert.equal(lo, Math.f16round(0.01));
  assert.equal(hi, Math.f16round(0.024));
  for (let i = 0; i < 16; i += 2) {
    assert.equal(values[i], statisticValue(codes[i]!, lo, hi, 7));
    assert(Math.abs(values[i]! - (0.01 + 0.001 * i)) <= (hi - lo) / 14 + 1e-5);
  }
  for (let i = 1; i < 16; i += 2) assert.equal(values[i], 99); // other runs untouched
  const flat = new Float32Array([0.5, 0.5, 0.5]);
  const c = new Uint8Array(3);
  assert.deepEqual(quantizeStatistics(flat, 0, 1, 3, 3, c), { lo: 0.5, hi: 0.5 });
  assert.deepEqual(Array.from(flat), [0.5, 0.5, 0.5]);
});
