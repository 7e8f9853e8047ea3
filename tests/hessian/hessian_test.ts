import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import { prng, randn } from "../../core/prng.ts";
import { addInputs, hessian, hessianFromGram } from "../../hessian/hessian.ts";
import { assertClose } from "../_helpers.ts";

function randomInputs(tokens: number, cols: number, seed: number) {
  return tensor("f64", [tokens, cols], randn(tokens * cols, prng(seed)));
}

function rowsOf(x: { data: Float64Array }, cols: number, start: number, end: number) {
  return tensor("f64", [end - start, cols], x.data.slice(start * cols, end * cols));
}

Deno.test("hessian() is the mean of x·xᵀ over tokens, computed entry by entry", () => {
  const x = randomInputs(7, 5, 1);
  const h = hessian(x);
  assert.equal(h.cols, 5);
  assert.equal(h.count, 7);
  const expected = new Float64Array(25);
  for (let i = 0; i < 5; i++) {
    for (let j = 0; j < 5; j++) {
      let s = 0;
      for (let t = 0; t < 7; t++) s += x.data[t * 5 + i]! * x.data[t * 5 + j]!;
      expected[i * 5 + j] = s / 7;
    }
  }
  assertClose(h.xtx, expected, { atol: 1e-14, rtol: 1e-13 });
});

Deno.test("addInputs() gives the same Hessian to 1e-12 however the tokens are batched", () => {
  const cols = 12, tokens = 100;
  const x = randomInputs(tokens, cols, 2);
  const all = hessian(x);
  for (const cuts of [[1, 2, 50], [33, 66], [10, 20, 30, 40, 50, 60, 70, 80, 90, 99]]) {
    const bounds = [0, ...cuts, tokens];
    let h = hessian(rowsOf(x, cols, 0, bounds[1]!));
    for (let b = 1; b + 1 < bounds.length; b++) {
      h = addInputs(h, rowsOf(x, cols, bounds[b]!, bounds[b + 1]!));
    }
    assert.equal(h.count, tokens);
    assertClose(h.xtx, all.xtx, { atol: 1e-12, rtol: 1e-12 });
  }
});

Deno.test("addInputs() does not modify the Hessian it continues", () => {
  const h = hessian(randomInputs(5, 3, 3));
  const before = h.xtx.slice();
  addInputs(h, randomInputs(4, 3, 4));
  assert.deepEqual(h.xtx, before);
  assert.equal(h.count, 5);
});

Deno.test("hessianFromGram() divides XᵀX by the token count", () => {
  const x = randomInputs(9, 4, 5);
  const h = hessian(x);
  const gram = h.xtx.map((v) => v * 9);
  assertClose(hessianFromGram(gram, 9).xtx, h.xtx, { atol: 1e-14, rtol: 1e-13 });
  assertClose(hessianFromGram(tensor("f64", [4, 4], gram), 9).xtx, h.xtx, {
    atol: 1e-14,
    rtol: 1e-13,
  });
});

Deno.test("the Hessian functions reject bad shapes, counts and non-finite inputs", () => {
  assert.throws(() => hessian(tensor("f32", [6], new Float32Array(6))), RangeError);
  const bad = new Float32Array(6);
  bad[4] = NaN;
  assert.throws(() => hessian(tensor("f32", [2, 3], bad)), /'x' must be finite/);
  bad[4] = Infinity;
  assert.throws(() => hessian(tensor("f32", [2, 3], bad)), /'x' must be finite/);
  const h = hessian(randomInputs(3, 3, 6));
  assert.throws(() => addInputs(h, randomInputs(3, 4, 7)), /4 columns to a Hessian of 3/);
  assert.throws(() => hessianFromGram(new Float64Array(5), 1), /must be square/);
  assert.throws(() => hessianFromGram(new Float64Array(4), 0), /'count'/);
  assert.throws(() => hessianFromGram(new Float64Array([1, NaN, 0, 1]), 1), /finite/);
  // deno-lint-ignore no-explicit-any
  assert.throws(() => hessian(null as any), TypeError);
});
