import assert from "node:assert/strict";
import { cubicSparsity } from "../../pruners/schedule.ts";
import { assertThrowsWith } from "./_util.ts";

Deno.test("cubicSparsity() follows s_f + (s_i − s_f)(1 − t/T)³ between its ends and is flat outside", () => {
  const opts = { initialSparsity: 0.1, finalSparsity: 0.9, startStep: 100, endStep: 1100 };
  assert.equal(cubicSparsity(0, opts), 0.1);
  assert.equal(cubicSparsity(100, opts), 0.1);
  assert.equal(cubicSparsity(1100, opts), 0.9);
  assert.equal(cubicSparsity(5000, opts), 0.9);
  for (const t of [150, 350, 600, 1099]) {
    const frac = (t - 100) / 1000;
    const expected = 0.9 + (0.1 - 0.9) * (1 - frac) ** 3;
    assert.ok(Math.abs(cubicSparsity(t, opts) - expected) < 1e-12);
  }
  let last = 0;
  for (let t = 0; t <= 1200; t += 7) {
    const s = cubicSparsity(t, opts);
    assert.ok(s >= last);
    last = s;
  }
});

Deno.test("cubicSparsity() changes only on the frequency grid", () => {
  const opts = { finalSparsity: 0.5, endStep: 100, frequency: 10 };
  assert.equal(cubicSparsity(13, opts), cubicSparsity(10, opts));
  assert.equal(cubicSparsity(19, opts), cubicSparsity(10, opts));
  assert.ok(cubicSparsity(20, opts) > cubicSparsity(19, opts));
  assert.ok(Math.abs(cubicSparsity(19, opts) - 0.5 * (1 - 0.9 ** 3)) < 1e-12);
});

Deno.test("cubicSparsity() rejects sparsities outside [0, 1), an empty range and a bad frequency", () => {
  assertThrowsWith(
    () => cubicSparsity(1, { finalSparsity: 1, endStep: 10 }),
    RangeError,
    "'finalSparsity'",
  );
  assertThrowsWith(
    () => cubicSparsity(1, { initialSparsity: -0.1, finalSparsity: 0.5, endStep: 10 }),
    RangeError,
    "'initialSparsity'",
  );
  assertThrowsWith(
    () => cubicSparsity(1, { finalSparsity: 0.5, startStep: 10, endStep: 10 }),
    RangeError,
    "'endStep'",
  );
  assertThrowsWith(
    () => cubicSparsity(1, { finalSparsity: 0.5, endStep: 10, frequency: 0 }),
    RangeError,
    "'frequency'",
  );
  assertThrowsWith(
    () => cubicSparsity(NaN, { finalSparsity: 0.5, endStep: 10 }),
    TypeError,
    "'step'",
  );
});
