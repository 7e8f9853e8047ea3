import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import { prng, randn } from "../../core/prng.ts";
import { fitGrid, gridDequantize, gridQuantize } from "../../quantizers/grid.ts";
import { roundHalfEven } from "../../core/uniform_grid.ts";

function randomWeight(rows: number, cols: number, seed: number) {
  return tensor("f32", [rows, cols], Float32Array.from(randn(rows * cols, prng(seed))));
}

/**
 * The code whose grid value is nearest to w, by trying all codes. Distances are
 * measured in steps from the float32 ratio w/scale (the reference divides in
 * float32); ties go to an even c − zero, as round(w/scale) does.
 */
function nearestCode(w: number, scale: number, zero: number, maxq: number): number {
  const ratio = Math.fround(w / scale);
  let best = 0, bestErr = Infinity;
  for (let c = 0; c <= maxq; c++) {
    const err = Math.abs(ratio - (c - zero));
    if (err < bestErr || (err === bestErr && (c - zero) % 2 === 0)) {
      best = c;
      bestErr = err;
    }
  }
  return best;
}

Deno.test("roundHalfEven() rounds ties to the even integer and everything else to the nearest", () => {
  for (let k = -10; k <= 10; k++) {
    const r = roundHalfEven(k + 0.5);
    assert.ok(r === k || r === k + 1);
    assert.equal(Math.abs(r % 2), 0, `${k + 0.5} → ${r}`);
  }
  const g = prng(1);
  for (let i = 0; i < 1000; i++) {
    const v = (g.uniform() - 0.5) * 100;
    assert.equal(roundHalfEven(v), Math.round(v));
  }
  assert.equal(roundHalfEven(-0.4), -0);
});

Deno.test("gridQuantize() picks the nearest grid point (brute force) for 1 to 8 bits", () => {
  const w = randomWeight(6, 40, 2);
  for (const bits of [1, 2, 3, 4, 8]) {
    for (const symmetric of [false, true]) {
      const grid = fitGrid(w, { bits, symmetric, groupSize: 16 });
      const codes = gridQuantize(w, grid);
      const maxq = 2 ** bits - 1;
      for (let r = 0; r < 6; r++) {
        for (let c = 0; c < 40; c++) {
          const k = r * 3 + grid.gIdx[c]!;
          const want = nearestCode(w.data[r * 40 + c]!, grid.scales[k]!, grid.zeros[k]!, maxq);
          assert.equal(codes[r * 40 + c], want, `bits ${bits} sym ${symmetric} [${r}, ${c}]`);
        }
      }
    }
  }
});

Deno.test("min/max grids span the range widened to 0, hold 0 exactly and reach both ends", () => {
  const w = tensor("f32", [3, 4], new Float32Array([0.5, 1, 2, 3, -1, -2, -4, -3, -1, 0.25, 2, 3]));
  const grid = fitGrid(w, { bits: 3 });
  const back = gridDequantize(gridQuantize(w, grid), grid).data;
  // row 0 is all positive: the range is [0, 3]
  assert.equal(grid.scales[0], Math.fround(3 / 7));
  assert.equal(grid.zeros[0], 0);
  assert.ok(Math.abs(back[3]! - 3) < 1e-6);
  // row 1 is all negative: [−4, 0], zero point 7
  assert.equal(grid.zeros[1], 7);
  assert.ok(Math.abs(back[6]! + 4) < 1e-6);
  for (let r = 0; r < 3; r++) {
    const zeroValue = grid.scales[r]! * (grid.zeros[r]! - grid.zeros[r]!);
    assert.equal(zeroValue, 0);
    assert.ok(Number.isInteger(grid.zeros[r]!));
  }
  // every value is within half a step
  for (let i = 0; i < 12; i++) {
    assert.ok(Math.abs(back[i]! - w.data[i]!) <= grid.scales[Math.floor(i / 4)]! / 2 + 1e-7);
  }
});

Deno.test("symmetric grids put the zero point at 2^(bits−1) and the scale at 2·max|w|/(2^bits − 1)", () => {
  const w = tensor("f32", [2, 3], new Float32Array([0.5, -2, 1, 0.1, 0.2, 0.3]));
  const grid = fitGrid(w, { bits: 4, symmetric: true });
  assert.deepEqual(Array.from(grid.zeros), [8, 8]);
  assert.equal(grid.scales[0], Math.fround(4 / 15));
  // an all-positive row keeps xmin = 0, as the reference does
  assert.equal(grid.scales[1], Math.fround(Math.fround(0.3) / 15));
});

Deno.test("an all-zero row gets the range [−1, 1] and quantizes to exact zeros", () => {
  const w = tensor("f32", [1, 4], new Float32Array(4));
  const grid = fitGrid(w, { bits: 4 });
  assert.equal(grid.scales[0], Math.fround(2 / 15));
  assert.deepEqual(Array.from(gridDequantize(gridQuantize(w, grid), grid).data), [0, 0, 0, 0]);
});

Deno.test("groups that do not divide the columns end with a shorter group fitted on its own columns", () => {
  const w = randomWeight(2, 10, 3);
  const data = w.data.slice();
  for (let c = 8; c < 10; c++) data[c] = data[c]! * 100; // only the last group of row 0 is large
  const grid = fitGrid(tensor("f32", [2, 10], data), { bits: 4, groupSize: 4 });
  assert.deepEqual(Array.from(grid.gIdx), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]);
  assert.equal(grid.scales.length, 6);
  const base = fitGrid(w, { bits: 4, groupSize: 4 });
  assert.deepEqual(grid.scales.slice(0, 2), base.scales.slice(0, 2));
  assert.ok(grid.scales[2]! > 50 * base.scales[2]!);
});

Deno.test("per-tensor grids share one scale and zero point across rows", () => {
  const grid = fitGrid(randomWeight(5, 7, 4), { bits: 3, perTensor: true });
  assert.ok(grid.scales.every((s) => s === grid.scales[0]));
  assert.ok(grid.zeros.every((z) => z === grid.zeros[0]));
});

Deno.test("the MSE clipping search never increases Σ|q − w|^2.4 and clips outliers", () => {
  const w = randomWeight(8, 64, 5);
  w.data[5] = 12; // an outlier in row 0
  const lossOf = (mse: boolean) => {
    const grid = fitGrid(w, { bits: 3, mse });
    const back = gridDequantize(gridQuantize(w, grid), grid).data;
    const perRow = new Float64Array(8);
    for (let i = 0; i < back.length; i++) {
      perRow[Math.floor(i / 64)]! += Math.abs(back[i]! - w.data[i]!) ** 2.4;
    }
    return { perRow, grid };
  };
  const plain = lossOf(false), searched = lossOf(true);
  for (let r = 0; r < 8; r++) assert.ok(searched.perRow[r]! <= plain.perRow[r]! * (1 + 1e-6));
  assert.ok(searched.grid.scales[0]! < 0.9 * plain.grid.scales[0]!);
});

Deno.test("gridQuantize() of dequantized codes returns the same codes", () => {
  const w = randomWeight(4, 33, 6);
  for (const bits of [2, 5, 16]) {
    const grid = fitGrid(w, { bits, groupSize: 8 });
    const codes = gridQuantize(w, grid);
    assert.deepEqual(gridQuantize(gridDequantize(codes, grid), grid), codes);
    assert.ok(bits <= 8 ? codes instanceof Uint8Array : codes instanceof Uint16Array);
  }
});

Deno.test("fitGrid() rejects bad bits, group sizes and non-finite weights, naming the option", () => {
  const w = randomWeight(2, 4, 7);
  assert.throws(
    () => fitGrid(w, { bits: 0 }),
    /'bits' must be an integer in \[1, 16\]: current value is 0/,
  );
  assert.throws(() => fitGrid(w, { bits: 17 }), /'bits'/);
  assert.throws(() => fitGrid(w, { bits: 2.5 }), /'bits'/);
  assert.throws(() => fitGrid(w, { bits: 4, groupSize: 0 }), /'groupSize'/);
  assert.throws(() => fitGrid(w, { bits: 4, groupSize: -2 }), /'groupSize'/);
  assert.throws(() => fitGrid(w, { bits: 4, groupSize: 2, perTensor: true }), /'perTensor'/);
  // deno-lint-ignore no-explicit-any
  assert.throws(() => fitGrid(w, { bits: 4, symmetric: "yes" as any }), TypeError);
  const bad = w.data.slice();
  bad[1] = Infinity;
  assert.throws(() => fitGrid(tensor("f32", [2, 4], bad), { bits: 4 }), /'weight' must be finite/);
  assert.throws(() => gridQuantize(randomWeight(2, 5, 8), fitGrid(w, { bits: 4 })), /shape/);
});
