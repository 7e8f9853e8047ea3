import assert from "node:assert/strict";
import { lusolve } from "mathjs";
import {
  applyUpdates,
  chain,
  type GradientTransform,
  type Params,
  stateless,
} from "../../core/transform.ts";
import { errorFeedback } from "../../core/error_feedback.ts";
import { topKCompress, topKCompressor } from "../../pruners/topk_compressor.ts";
import { sgd } from "../../optim/sgd.ts";
import { prng } from "../../core/prng.ts";

// Least squares f(x) = ‖Ax − b‖²/(2n) with noisy b, minibatch gradients.
const n = 300, d = 100, steps = 10_000, batch = 8;
const rng = prng(1);
const A = Float64Array.from({ length: n * d }, () => rng.normal()); // [n, d]
const b = new Float64Array(n);
{
  const xTrue = Float64Array.from({ length: d }, () => rng.normal());
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += A[i * d + j]! * xTrue[j]!;
    b[i] = s + 0.5 * rng.normal();
  }
}

function loss(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < n; i++) {
    let r = -b[i]!;
    for (let j = 0; j < d; j++) r += A[i * d + j]! * x[j]!;
    s += r * r;
  }
  return s / (2 * n);
}

function train(t: GradientTransform<never>): Float32Array {
  const tr = t as unknown as GradientTransform;
  const r = prng(2); // the same minibatches for every optimizer
  let params: Params = { x: new Float32Array(d) };
  let state = tr.init(params);
  for (let k = 0; k < steps; k++) {
    const g = new Float32Array(d), x = params.x!;
    for (let q = 0; q < batch; q++) {
      const i = r.int(n);
      let res = -b[i]!;
      for (let j = 0; j < d; j++) res += A[i * d + j]! * x[j]!;
      for (let j = 0; j < d; j++) g[j]! += (res * A[i * d + j]!) / batch;
    }
    const [u, next] = tr.update({ x: g }, state, params);
    params = applyUpdates(params, u);
    state = next;
  }
  return params.x!;
}

Deno.test("SGD with error-feedback top-1% reaches the least-squares optimum as plain SGD does; without EF it does not", () => {
  // Oracle: the normal equations AᵀA x = Aᵀb, solved by mathjs.
  const AtA = Array.from({ length: d }, (_, p) =>
    Array.from({ length: d }, (_, q) => {
      let s = 0;
      for (let i = 0; i < n; i++) s += A[i * d + p]! * A[i * d + q]!;
      return s;
    }));
  const Atb = Array.from({ length: d }, (_, p) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += A[i * d + p]! * b[i]!;
    return s;
  });
  const xStar = (lusolve(AtA, Atb) as number[][]).map((row) => row[0]!);
  const fStar = loss(xStar);
  const dist = (x: ArrayLike<number>, y: ArrayLike<number>) =>
    Math.sqrt(Array.from(x).reduce((s, v, i) => s + (v - y[i]!) ** 2, 0));
  const norm = dist(xStar, new Float64Array(d));

  const learningRate = (count: number) => 0.05 / (1 + count / (steps / 20));
  const plain = train(sgd({ learningRate }) as never);
  const ef = train(
    chain(errorFeedback(topKCompressor({ density: 0.01 })), sgd({ learningRate })) as never,
  );
  const noEf = train(
    chain(
      stateless((g) => ({ x: topKCompress(g.x!, { density: 0.01 }) })),
      sgd({ learningRate }),
    ) as never,
  );
  const gap = (x: Float32Array) => loss(x) - fStar;
  // Both reach x* to ~1% of its norm, and each other's point.
  assert.ok(dist(plain, xStar) < 0.01 * norm, `plain SGD: ${dist(plain, xStar)} from x*`);
  assert.ok(dist(ef, xStar) < 0.01 * norm, `EF top-1%: ${dist(ef, xStar)} from x*`);
  assert.ok(gap(ef) < 1.5 * gap(plain) + 1e-4, `gaps: EF ${gap(ef)}, plain ${gap(plain)}`);
  // Without error feedback, the biased compressor stalls far from x*.
  assert.ok(gap(noEf) > 10 * gap(ef), `gaps: no EF ${gap(noEf)}, EF ${gap(ef)}`);
  assert.ok(dist(noEf, xStar) > 5 * dist(ef, xStar));
});
