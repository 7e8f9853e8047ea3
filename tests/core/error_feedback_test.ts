import assert from "node:assert/strict";
import {
  type CompressFn,
  errorFeedback,
  feedbackError,
  type StatefulCompressor,
} from "../../core/error_feedback.ts";
import { type GradientTransform, type Params, stateBytesPerParam } from "../../core/transform.ts";
import { prng } from "../../core/prng.ts";
import { randomKCompressor, topKCompressor } from "../../pruners/topk_compressor.ts";
import { qsgdCompressor } from "../../quantizers/qsgd.ts";
import { lowRankCompressor } from "../../quantizers/low_rank.ts";
import { adam } from "../../optim/adam.ts";
import { microAdam } from "../../optim/micro_adam.ts";
import { assertClose } from "../_helpers.ts";

const ROWS = 12, COLS = 20;

function grads(seed: number): Params {
  const rng = prng(seed);
  const v = (n: number) =>
    Float32Array.from({ length: n }, () => rng.normal() * (1 + rng.uniform()));
  return { w: v(ROWS * COLS), b: v(13) };
}

const compressors: [string, CompressFn | StatefulCompressor<unknown>][] = [
  ["top-k", topKCompressor({ density: 0.02 })],
  ["random-k", randomKCompressor({ k: 3, seed: 5 })],
  ["QSGD", qsgdCompressor({ bits: 2, blockSize: 16, seed: 5 })],
  ["PowerSGD", lowRankCompressor({ rank: 2, shapes: { w: [ROWS, COLS] }, seed: 5 })],
];

for (const [label, c] of compressors) {
  Deno.test(`errorFeedback(${label}) is exact bookkeeping: Σ sent + final error = Σ gradients`, () => {
    const ef = errorFeedback(c);
    let state = ef.init(grads(0));
    const sumG: Record<string, Float64Array> = {}, sumSent: Record<string, Float64Array> = {};
    for (let step = 0; step < 40; step++) {
      const g = grads(step + 1);
      const copy = structuredClone(g);
      const [sent, next] = ef.update(g, state);
      assert.deepStrictEqual(g, copy, "the gradients are not mutated");
      for (const name of Object.keys(g)) {
        sumG[name] ??= new Float64Array(g[name]!.length);
        sumSent[name] ??= new Float64Array(g[name]!.length);
        g[name]!.forEach((x, i) => sumG[name]![i]! += x);
        sent[name]!.forEach((x, i) => sumSent[name]![i]! += x);
      }
      state = next;
    }
    for (const name of Object.keys(sumG)) {
      const e = feedbackError(state, name);
      const total = sumSent[name]!.map((x, i) => x + e[i]!);
      assertClose(total, sumG[name]!, { atol: 1e-4, rtol: 1e-5, message: `${label} ${name}` });
    }
  });
}

/** Path → constructor and length of every leaf of a state, to compare structures. */
function signature(v: unknown, path = ""): string[] {
  if (ArrayBuffer.isView(v)) {
    return [`${path}: ${v.constructor.name}[${(v as Float32Array).length}]`];
  }
  if (v !== null && typeof v === "object") {
    return Object.entries(v).flatMap(([k, x]) => signature(x, `${path}.${k}`));
  }
  return [`${path}: ${typeof v}`];
}

const transforms: [string, () => GradientTransform<never>][] = [
  ["errorFeedback(top-k)", () => errorFeedback(topKCompressor({ k: 2 })) as never],
  [
    "errorFeedback(top-k) with a 4-bit error",
    () =>
      errorFeedback(topKCompressor({ k: 2 }), {
        errorQuantization: { bits: 4, blockSize: 8 },
      }) as never,
  ],
  [
    "errorFeedback(PowerSGD)",
    () => errorFeedback(lowRankCompressor({ rank: 2, shapes: { w: [ROWS, COLS] } })) as never,
  ],
  ["adam", () => adam({ learningRate: 1e-3 }) as never],
  ["microAdam", () => microAdam({ learningRate: 1e-3, windowSize: 3 }) as never],
];

for (const [label, make] of transforms) {
  Deno.test(`${label} keeps its state's shapes and dtypes across steps and is deterministic`, () => {
    const t = make() as unknown as GradientTransform;
    const t2 = make() as unknown as GradientTransform;
    let s = t.init(grads(0)), s2 = t2.init(grads(0));
    const sig = signature(s);
    for (let step = 0; step < 6; step++) {
      const [u, next] = t.update(grads(step + 1), s);
      const [u2, next2] = t2.update(grads(step + 1), s2);
      assert.deepStrictEqual(signature(next), sig);
      assert.deepStrictEqual(u, u2);
      assert.equal(next.count, step + 1);
      s = next;
      s2 = next2;
    }
  });
}

Deno.test("seeded compressors give the same updates for the same seed and others for another", () => {
  const run = (c: CompressFn) => {
    const ef = errorFeedback(c);
    let s = ef.init(grads(0));
    const out: Params[] = [];
    for (let step = 0; step < 3; step++) {
      const [u, n] = ef.update(grads(step + 1), s);
      out.push(u);
      s = n;
    }
    return out;
  };
  for (
    const make of [
      (seed: number) => randomKCompressor({ k: 4, seed }),
      (seed: number) => qsgdCompressor({ seed }),
    ]
  ) {
    assert.deepStrictEqual(run(make(9)), run(make(9)));
    assert.notDeepStrictEqual(run(make(9)), run(make(10)));
    // Steps draw fresh choices from one seed.
    const [u0, u1] = run(make(9));
    assert.notDeepStrictEqual(u0!.w, u1!.w);
  }
});

Deno.test("the 4-bit error buffer holds the error to half a quantization step and ~0.6 bytes/param", () => {
  const bits = 4, blockSize = 32;
  const exact = errorFeedback(topKCompressor({ density: 0.1 }));
  const quant = errorFeedback(topKCompressor({ density: 0.1 }), {
    errorQuantization: { bits, blockSize },
  });
  const g = grads(3);
  const [, se] = exact.update(g, exact.init(g));
  const [, sq] = quant.update(g, quant.init(g));
  for (const name of Object.keys(g)) {
    const e = feedbackError(se, name), q = feedbackError(sq, name);
    for (let s = 0; s < e.length; s += blockSize) {
      const block = e.subarray(s, s + blockSize);
      const step = (Math.max(...block) - Math.min(...block)) / (2 ** bits - 1);
      assertClose(q.subarray(s, s + blockSize), block, { atol: step / 2 + 1e-6, rtol: 0 });
    }
  }
  const perParam = stateBytesPerParam(sq, g);
  assert.ok(perParam < 0.5 + 8 / blockSize + 0.1, `${perParam} bytes/param`);
  assert.equal(stateBytesPerParam(se, g), 4);
  assert.throws(
    () => errorFeedback(topKCompressor(), { errorQuantization: { bits: 0, blockSize: 8 } }),
    (e: Error) => e instanceof RangeError && e.message.includes("'bits'"),
  );
});

Deno.test("transforms refuse gradients that do not name exactly their parameters", () => {
  const params = { w: new Float32Array(4), b: new Float32Array(2) };
  for (
    const t of [
      errorFeedback(topKCompressor()),
      adam({ learningRate: 1 }),
      microAdam({ learningRate: 1 }),
    ]
  ) {
    const tr = t as unknown as GradientTransform;
    const s = tr.init(params);
    assert.throws(
      () => tr.update({ w: new Float32Array(4) }, s),
      (e: Error) => e instanceof TypeError && e.message.includes("missing 'b'"),
    );
    assert.throws(
      () => tr.update({ ...params, z: new Float32Array(1) }, s),
      (e: Error) => e instanceof TypeError && e.message.includes("unknown 'z'"),
    );
  }
});
