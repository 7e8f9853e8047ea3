import assert from "node:assert/strict";
import {
  applyUpdates,
  chain,
  identity,
  learningRateAt,
  type Params,
  scaleBy,
  scaleByLearningRate,
  stateBytes,
  stateBytesPerParam,
  stateless,
} from "../../core/transform.ts";
import { adam } from "../../optim/adam.ts";
import { errorFeedback } from "../../core/error_feedback.ts";
import { topKCompressor } from "../../pruners/topk_compressor.ts";
import { prng } from "../../core/prng.ts";
import { assertClose } from "../_helpers.ts";

function randomParams(seed: number): Params {
  const rng = prng(seed);
  const v = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
  return { w: v(300), b: v(7) };
}

Deno.test("chain(a, b) gives the same updates and states as applying a then b by hand", () => {
  const a = errorFeedback(topKCompressor({ density: 0.05 }));
  const b = adam({ learningRate: 0.01 });
  const c = chain(a, b);
  const params = randomParams(1);
  let sc = c.init(params);
  let sa = a.init(params), sb = b.init(params);
  for (let step = 0; step < 5; step++) {
    const g = randomParams(100 + step);
    const [uc, nc] = c.update(g, sc, params);
    const [ua, na] = a.update(g, sa, params);
    const [ub, nb] = b.update(ua, sb, params);
    for (const name of Object.keys(params)) assert.deepStrictEqual(uc[name], ub[name]);
    assert.deepStrictEqual(nc.inner[0], na);
    assert.deepStrictEqual(nc.inner[1], nb);
    assert.deepStrictEqual(nc.count, step + 1);
    sc = nc;
    sa = na;
    sb = nb;
  }
});

Deno.test("identity() passes gradients through and stateless() applies its function", () => {
  const g = randomParams(2);
  const id = identity();
  const [u, s] = id.update(g, id.init(g));
  assert.deepStrictEqual(u, g);
  assert.deepStrictEqual(s.count, 1);
  const neg = stateless((grads) => ({ w: grads.w!.map((x) => -x) }));
  const [u2] = neg.update(g, neg.init(g));
  assert.deepStrictEqual(u2.w, g.w!.map((x) => -x));
});

Deno.test("applyUpdates adds updates without mutating its arguments and checks names and sizes", () => {
  const p = { w: new Float32Array([1, 2]) }, u = { w: new Float32Array([0.5, -1]) };
  const out = applyUpdates(p, u);
  assert.deepStrictEqual(Array.from(out.w!), [1.5, 1]);
  assert.deepStrictEqual(Array.from(p.w), [1, 2]);
  assert.throws(
    () => applyUpdates(p, {}),
    (e: Error) => e instanceof TypeError && e.message.includes("'w'"),
  );
  assert.throws(
    () => applyUpdates(p, { w: new Float32Array(3) }),
    (e: Error) => e instanceof RangeError && e.message.includes("3"),
  );
});

Deno.test("scaleBy and scaleByLearningRate multiply by the factor and follow a schedule", () => {
  const g = { w: new Float32Array([2, -4]) };
  const [u] = scaleBy(0.5).update(g, { count: 0 });
  assert.deepStrictEqual(Array.from(u.w!), [1, -2]);
  const t = scaleByLearningRate((count) => 1 / (count + 1));
  let s = t.init(g);
  for (let k = 0; k < 3; k++) {
    const [uk, sk] = t.update(g, s);
    assertClose(uk.w!, [-2 / (k + 1), 4 / (k + 1)], { atol: 1e-6 });
    s = sk;
  }
  assert.throws(
    () => scaleBy(NaN),
    (e: Error) => e instanceof RangeError && e.message.includes("'factor'"),
  );
  assert.throws(
    () => learningRateAt(-1, 0),
    (e: Error) => e instanceof RangeError && e.message.includes("'learningRate'"),
  );
});

Deno.test("stateBytes counts every typed array in a state once", () => {
  const shared = new Float32Array(10);
  assert.deepStrictEqual(
    stateBytes({ count: 3, a: shared, b: [shared, new Uint8Array(5)], c: { d: 1 } }),
    45,
  );
  const params = { w: new Float32Array(100) };
  assert.deepStrictEqual(stateBytesPerParam(adam({ learningRate: 1 }).init(params), params), 8);
});
