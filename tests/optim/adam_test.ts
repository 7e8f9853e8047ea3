import assert from "node:assert/strict";
import { adam } from "../../optim/adam.ts";
import { stateBytesPerParam } from "../../core/transform.ts";
import { prng } from "../../core/prng.ts";
import { assertClose } from "../_helpers.ts";

Deno.test("adam's first update is −lr·g/(|g| + ε), as its bias correction implies", () => {
  const g = new Float32Array([3, -0.5, 1e-3, 0]);
  const opt = adam({ learningRate: 0.1, eps: 1e-8 });
  const [u] = opt.update({ w: g }, opt.init({ w: g }));
  assertClose(u.w!, Array.from(g, (x) => (-0.1 * x) / (Math.abs(x) + 1e-8)), { rtol: 1e-6 });
});

Deno.test("adam follows Kingma and Ba's Algorithm 1 step by step, with a schedule", () => {
  const rng = prng(3);
  const beta1 = 0.8, beta2 = 0.99, eps = 1e-6, lr = (t: number) => 0.01 / (1 + t);
  const opt = adam({ learningRate: lr, beta1, beta2, eps });
  const n = 5;
  let state = opt.init({ w: new Float32Array(n) });
  const m = new Float64Array(n), v = new Float64Array(n);
  for (let t = 1; t <= 20; t++) {
    const g = Float32Array.from({ length: n }, () => rng.normal());
    const [u, next] = opt.update({ w: g }, state);
    const expected = Array.from(g, (gi, i) => {
      m[i] = beta1 * m[i]! + (1 - beta1) * gi;
      v[i] = beta2 * v[i]! + (1 - beta2) * gi * gi;
      const mh = m[i]! / (1 - beta1 ** t), vh = v[i]! / (1 - beta2 ** t);
      return (-lr(t - 1) * mh) / (Math.sqrt(vh) + eps);
    });
    assertClose(u.w!, expected, { rtol: 1e-4, atol: 1e-7 });
    state = next;
  }
  assert.equal(state.count, 20);
});

Deno.test("adam holds 8 bytes of state per parameter and validates its options", () => {
  const params = { a: new Float32Array(10), b: new Float32Array(6) };
  assert.equal(stateBytesPerParam(adam({ learningRate: 1 }).init(params), params), 8);
  for (
    const [key, o] of [["beta1", { beta1: 1 }], ["beta2", { beta2: -0.1 }], ["eps", { eps: NaN }], [
      "learningRate",
      { learningRate: -1 },
    ]] as const
  ) {
    assert.throws(
      () => adam({ learningRate: 1, ...o }),
      (e: Error) => e instanceof RangeError && e.message.includes(`'${key}'`),
    );
  }
});
