import assert from "node:assert/strict";
import { microAdam, microAdamCorrections } from "../../optim/micro_adam.ts";
import { adam } from "../../optim/adam.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../../core/convert.ts";
import { applyUpdates, type Params, stateBytesPerParam } from "../../core/transform.ts";
import { prng } from "../../core/prng.ts";
import { assertClose } from "../_helpers.ts";

const bf16 = (x: Float32Array) => x.map((v) => bf16BitsToF32(f32ToBf16Bits(v)));

function gradients(steps: number, n: number, seed: number): Float32Array[] {
  const rng = prng(seed);
  return Array.from({ length: steps }, () => Float32Array.from({ length: n }, () => rng.normal()));
}

Deno.test("microAdam with density 1 and a window covering every step is Adam on bf16 gradients", () => {
  const steps = 12, n = 40;
  const gs = gradients(steps, n, 1);
  const ma = microAdam({ learningRate: 0.01, density: 1, windowSize: steps });
  const ad = adam({ learningRate: 0.01 });
  let sm = ma.init({ w: gs[0]! }), sa = ad.init({ w: gs[0]! });
  for (const g of gs) {
    const [um, nm] = ma.update({ w: g }, sm);
    const [ua, na] = ad.update({ w: bf16(g) }, sa);
    assertClose(um.w!, ua.w!, { rtol: 1e-4, atol: 1e-7 });
    sm = nm;
    sa = na;
  }
});

Deno.test("microAdam's moments come from the last m gradients only (the sliding window)", () => {
  const steps = 9, n = 7, m = 3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, lr = 0.1;
  const gs = gradients(steps, n, 2).map(bf16);
  const opt = microAdam({ learningRate: lr, density: 1, windowSize: m, beta1, beta2, eps });
  let s = opt.init({ w: gs[0]! });
  gs.forEach((g, k) => {
    const t = k + 1;
    const [u, next] = opt.update({ w: g }, s);
    // Oracle: the window sums of the paper's ASC procedure, over ages r < min(t, m).
    const expected = Array.from({ length: n }, (_, i) => {
      let mh = 0, vh = 0;
      for (let r = 0; r < Math.min(t, m); r++) {
        const v = gs[k - r]![i]!;
        mh += beta1 ** r * v;
        vh += beta2 ** r * v * v;
      }
      mh *= (1 - beta1) / (1 - beta1 ** t);
      vh *= (1 - beta2) / (1 - beta2 ** t);
      return (-lr * mh) / (Math.sqrt(vh) + eps);
    });
    assertClose(u.w!, expected, { rtol: 1e-4, atol: 1e-7 });
    s = next;
  });
});

Deno.test("microAdam's first step moves exactly the top 1% entries by −lr·sign(g)", () => {
  const n = 5000;
  const [g] = gradients(1, n, 3);
  const opt = microAdam({ learningRate: 0.5 });
  const [u] = opt.update({ w: g! }, opt.init({ w: g! }));
  const moved = Array.from(u.w!.keys()).filter((i) => u.w![i] !== 0);
  const top = Array.from(g!.keys()).sort((a, b) => Math.abs(g![b]!) - Math.abs(g![a]!)).slice(
    0,
    50,
  );
  assert.deepStrictEqual(moved, top.sort((a, b) => a - b));
  for (const i of moved) assertClose(u.w![i]!, -0.5 * Math.sign(g![i]!), { rtol: 1e-6 });
});

Deno.test("microAdam holds about 1 byte of state per parameter, under a quarter of Adam's 8", () => {
  const params: Params = { a: new Float32Array(30_000), b: new Float32Array(130) };
  const opt = microAdam({ learningRate: 1e-3 });
  let s = opt.init(params);
  const rng = prng(4);
  for (let k = 0; k < 12; k++) {
    const g = { a: params.a!.map(() => rng.normal()), b: params.b!.map(() => rng.normal()) };
    const [u, next] = opt.update(g, s);
    // At most m·k entries move: 10 slots of 1% (and of 1 entry for `b`).
    assert.ok(u.a!.filter((x) => x !== 0).length <= 10 * 300);
    s = next;
  }
  const micro = stateBytesPerParam(s, params);
  const adamBytes = stateBytesPerParam(adam({ learningRate: 1 }).init(params), params);
  assert.ok(micro < 1.1 && micro > 0.9, `${micro} bytes/param`);
  assert.ok(micro <= adamBytes / 4);
  assert.throws(
    () => microAdam({ learningRate: 1, topKBlockSize: 70_000 }),
    (e: Error) => e instanceof RangeError && e.message.includes("'topKBlockSize'"),
  );
});

Deno.test("microAdam keeps ⌈density·len⌉ entries per top-k block, the reference's k (21 of 2,048, not 20)", () => {
  const rng = prng(5);
  const g = {
    w: Float32Array.from({ length: 2048 }, () => rng.normal()),
    b: Float32Array.from({ length: 4 }, () => rng.normal()),
  };
  const moved = (u: Float32Array, s: number, e: number) =>
    u.subarray(s, e).filter((x) => x !== 0).length;
  const whole = microAdam({ learningRate: 0.1 });
  const [u, s] = whole.update(g, whole.init(g));
  assert.equal(moved(u.w!, 0, 2048), 21);
  assert.equal(moved(u.b!, 0, 4), 1);
  assert.equal(s.window.w!.indices.length, 10 * 21);
  // Blocks of 600: 6, 6, 6 and ⌈2.48⌉ = 3 in the last, shorter block.
  const blocked = microAdam({ learningRate: 0.1, topKBlockSize: 600 });
  const [ub] = blocked.update(g, blocked.init(g));
  assert.deepStrictEqual([0, 1, 2, 3].map((b) => moved(ub.w!, b * 600, (b + 1) * 600)), [
    6,
    6,
    6,
    3,
  ]);
});

Deno.test("microAdam's weightDecay multiplies every parameter by 1 − lr·λ before its step, as the reference does", () => {
  const rng = prng(6);
  const params = { w: Float32Array.from({ length: 500 }, () => rng.normal()) };
  const lr = 0.05, weightDecay = 0.2;
  const plain = microAdam({ learningRate: lr });
  const decayed = microAdam({ learningRate: lr, weightDecay });
  let sp = plain.init(params), sd = decayed.init(params);
  for (let k = 0; k < 15; k++) {
    const g = { w: params.w.map(() => rng.normal()) };
    const [up, np] = plain.update(g, sp);
    const [ud, nd] = decayed.update(g, sd, params);
    // p·(1 − lr·λ) − lr·step, as an additive update: −lr·λ·p − lr·step, on all 500 entries.
    assertClose(ud.w!, up.w!.map((u, i) => u - lr * weightDecay * params.w[i]!), {
      rtol: 1e-6,
      atol: 1e-8,
    });
    sp = np;
    sd = nd;
  }
  // A zero gradient moves nothing but the decay: p ← p·(1 − lr·λ).
  const [u0] = decayed.update({ w: new Float32Array(500) }, decayed.init(params), params);
  assertClose(applyUpdates(params, u0).w!, params.w.map((p) => p * (1 - lr * weightDecay)), {
    rtol: 1e-6,
  });
  assert.throws(
    () => decayed.update({ w: params.w }, decayed.init(params)),
    (e: Error) => e instanceof TypeError && e.message.includes("'weightDecay'"),
  );
  for (const bad of [-0.1, NaN, Infinity]) {
    assert.throws(
      () => microAdam({ learningRate: 1, weightDecay: bad }),
      (e: Error) => e instanceof RangeError && e.message.includes("'weightDecay'"),
    );
  }
});

Deno.test("microAdam's step multiplier c1/√c2 grows with t (0.98 at 100, 3.08 at 3,000) unless windowBiasCorrection", () => {
  const c = (t: number, windowBiasCorrection = false) => {
    const { c1, c2 } = microAdamCorrections(t, { windowBiasCorrection });
    return c1 / Math.sqrt(c2);
  };
  assertClose(c(100), 0.9758, { atol: 1e-4 });
  assertClose(c(3000), 3.0827, { atol: 1e-4 });
  // Over min(t, m): equal to the default up to m = 10, then constant.
  for (const t of [1, 5, 10]) assertClose(c(t, true), c(t), { rtol: 1e-12 });
  for (const t of [11, 100, 3000]) assertClose(c(t, true), c(10), { rtol: 1e-12 });
  assertClose(c(10), 0.4844, { atol: 1e-4 });
  assert.throws(() => microAdamCorrections(0), RangeError);
  assert.throws(
    () => microAdam({ learningRate: 1, windowBiasCorrection: 1 as unknown as boolean }),
    (e: Error) => e instanceof TypeError && e.message.includes("'windowBiasCorrection'"),
  );
});

Deno.test("windowBiasCorrection is off by default: a constant gradient's step grows to 6.4·lr, or stays lr with it", () => {
  // Density 1 keeps every entry and no error: the window holds the last m copies of g.
  const g = { w: new Float32Array([1, -2, 0.5, 3]) }, lr = 0.01;
  const run = (options: { windowBiasCorrection?: boolean }) => {
    const opt = microAdam({ learningRate: lr, density: 1, ...options });
    let s = opt.init(g), u: Params = g;
    for (let t = 1; t <= 3000; t++) [u, s] = opt.update(g, s);
    return u.w!;
  };
  // Default: −lr·sign(g)·(c1/√c2)·Σβ1^r/√(Σβ2^r) over r < 10 = 3.0827·6.5132/3.1552 = 6.36.
  const s1 = (1 - 0.9 ** 10) / 0.1, s2 = (1 - 0.999 ** 10) / 0.001;
  const { c1, c2 } = microAdamCorrections(3000);
  const grown = (c1 * s1) / Math.sqrt(c2 * s2);
  assertClose(grown, 6.36, { atol: 0.01 });
  assertClose(run({}), g.w.map((x) => -lr * Math.sign(x) * grown), { rtol: 1e-5 });
  assertClose(run({ windowBiasCorrection: false }), run({}), { rtol: 0 });
  // Corrected over the window, the moments are weighted means of g and g²: the step is lr.
  assertClose(run({ windowBiasCorrection: true }), g.w.map((x) => -lr * Math.sign(x)), {
    rtol: 1e-5,
  });
});

Deno.test("windowBiasCorrection scales every update by the ratio of the two multipliers (ε = 0)", () => {
  const rng = prng(7);
  const params = { a: new Float32Array(3000), b: new Float32Array(37) };
  const plain = microAdam({ learningRate: 0.1, eps: 0 });
  const windowed = microAdam({ learningRate: 0.1, eps: 0, windowBiasCorrection: true });
  let sp = plain.init(params), sw = windowed.init(params);
  for (let t = 1; t <= 40; t++) {
    const g = { a: params.a.map(() => rng.normal()), b: params.b.map(() => rng.normal()) };
    const [up, np] = plain.update(g, sp);
    const [uw, nw] = windowed.update(g, sw);
    const d = microAdamCorrections(t), w = microAdamCorrections(t, { windowBiasCorrection: true });
    const ratio = w.c1 / Math.sqrt(w.c2) / (d.c1 / Math.sqrt(d.c2));
    for (const name of ["a", "b"]) {
      assertClose(uw[name]!, up[name]!.map((x) => x * ratio), { rtol: 1e-6, atol: 1e-12 });
    }
    sp = np;
    sw = nw;
  }
});
