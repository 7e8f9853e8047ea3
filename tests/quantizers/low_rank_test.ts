import assert from "node:assert/strict";
import { eigs } from "mathjs";
import { lowRankCompress, lowRankCompressor } from "../../quantizers/low_rank.ts";
import { errorFeedback } from "../../core/error_feedback.ts";
import { prng } from "../../core/prng.ts";
import { assertClose } from "../_helpers.ts";

function randomMatrix(rows: number, cols: number, seed: number): Float32Array {
  const rng = prng(seed);
  return Float32Array.from({ length: rows * cols }, () => rng.normal());
}

function rankR(rows: number, cols: number, r: number, seed: number): Float32Array {
  const a = randomMatrix(rows, r, seed), b = randomMatrix(r, cols, seed + 1);
  const m = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      let s = 0;
      for (let c = 0; c < r; c++) s += a[i * r + c]! * b[c * cols + j]!;
      m[i * cols + j] = s;
    }
  }
  return m;
}

Deno.test("lowRankCompress recovers a rank-r matrix exactly in one step, with P orthonormal", () => {
  const rows = 15, cols = 11, r = 3;
  const m = rankR(rows, cols, r, 1);
  const { approx, p } = lowRankCompress(m, { rows, cols, rank: r, seed: 4 });
  assertClose(approx, m, { atol: 1e-4, rtol: 1e-4 });
  for (let a = 0; a < r; a++) {
    for (let b = 0; b < r; b++) {
      let dot = 0;
      for (let i = 0; i < rows; i++) dot += p[i * r + a]! * p[i * r + b]!;
      assertClose(dot, a === b ? 1 : 0, { atol: 1e-5 });
    }
  }
});

Deno.test("warm-started power iteration reaches the Eckart–Young error of the best rank-r fit", () => {
  const rows = 16, cols = 10, r = 2;
  const m = randomMatrix(rows, cols, 2);
  // Oracle: ‖M − M_r‖² = the sum of the smallest eigenvalues of MᵀM (mathjs).
  const mtm = Array.from({ length: cols }, (_, a) =>
    Array.from({ length: cols }, (_, b) => {
      let s = 0;
      for (let i = 0; i < rows; i++) s += m[i * cols + a]! * m[i * cols + b]!;
      return s;
    }));
  const lambda = (eigs(mtm).values as number[]).slice().sort((a, b) => a - b);
  const best = lambda.slice(0, cols - r).reduce((a, b) => a + b, 0);
  const err = (approx: Float32Array) => approx.reduce((s, v, i) => s + (v - m[i]!) ** 2, 0);
  let q: Float32Array | undefined;
  const errors: number[] = [];
  for (let step = 0; step < 60; step++) {
    const out = lowRankCompress(m, { rows, cols, rank: r, seed: 3, ...(q ? { q } : {}) });
    q = out.q;
    errors.push(err(out.approx));
  }
  assert.ok(errors[0]! > best * (1 + 1e-3), "one cold step is not yet optimal");
  assertClose(errors.at(-1)!, best, { rtol: 1e-4, atol: 1e-6 });
  errors.forEach((e) => assert.ok(e >= best * (1 - 1e-5)));
});

Deno.test("lowRankCompress validates its shape, rank and warm start", () => {
  const m = new Float32Array(6);
  const throwsRange = (fn: () => unknown, text: string) =>
    assert.throws(fn, (e: Error) => e instanceof RangeError && e.message.includes(text));
  throwsRange(() => lowRankCompress(m, { rows: 2, cols: 4, rank: 1 }), "6 elements");
  throwsRange(() => lowRankCompress(m, { rows: 2, cols: 3, rank: 3 }), "'rank'");
  throwsRange(
    () => lowRankCompress(m, { rows: 2, cols: 3, rank: 1, q: new Float32Array(2) }),
    "'q'",
  );
});

Deno.test("lowRankCompressor keeps each matrix's warm start in the error-feedback state, explicitly", () => {
  const rows = 6, cols = 5;
  const ef = errorFeedback(lowRankCompressor({ rank: 2, shapes: { w: [rows, cols] }, seed: 1 }));
  const g = { w: randomMatrix(rows, cols, 7), b: randomMatrix(1, 3, 8) };
  const s0 = ef.init(g);
  assert.equal(s0.compressor.b!.q, null); // not a matrix: sent uncompressed
  assert.equal(s0.compressor.w!.q!.length, cols * 2);
  const [sent, s1] = ef.update(g, s0);
  // The step is lowRankCompress warm-started from the state's Q (error 0 at first).
  const direct = lowRankCompress(g.w, { rows, cols, rank: 2, q: s0.compressor.w!.q! });
  assert.deepStrictEqual(sent.w, direct.approx);
  assert.deepStrictEqual(s1.compressor.w!.q, direct.q);
  assert.deepStrictEqual(sent.b, g.b);
});
