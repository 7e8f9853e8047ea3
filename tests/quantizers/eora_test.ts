import assert from "node:assert/strict";
import { eigs, pinv } from "mathjs";
import { type Tensor, tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { hessian, hessianFromGram } from "../../hessian/hessian.ts";
import { eora } from "../../quantizers/eora.ts";
import { lowRankSvd } from "../../quantizers/low_rank_svd.ts";
import { addLowRank } from "../../quantizers/low_rank_factors.ts";
import { rtn } from "../../quantizers/rtn.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { correlatedInputs } from "./_correlated.ts";
import { assertClose } from "../_helpers.ts";

function randomTensor(rows: number, cols: number, seed: number, scale = 1): Tensor<"f32"> {
  const g = prng(seed);
  return tensor(
    "f32",
    [rows, cols],
    Float32Array.from({ length: rows * cols }, () => scale * g.normal()),
  );
}

/** Ŵ = 3-bit RTN of W: a realistic, full-rank compression error. */
async function compressed(w: Tensor<"f32">): Promise<Tensor<"f32">> {
  return dequantize(await rtn(w, { bits: 3 }));
}

/** E = W − Ŵ − B·A [rows, cols] in float64 (from the returned tensors). */
function residualOf(
  w: Tensor,
  approx: Tensor,
  f: { a: Tensor<"f32">; b: Tensor<"f32"> },
): number[][] {
  const [rows, cols] = w.shape as [number, number];
  const r = f.a.shape[0]!;
  return Array.from({ length: rows }, (_, i) =>
    Array.from({ length: cols }, (_, j) => {
      let ba = 0;
      for (let k = 0; k < r; k++) ba += f.b.data[i * r + k]! * f.a.data[k * cols + j]!;
      return Number(w.data[i * cols + j]) - Number(approx.data[i * cols + j]) - ba;
    }));
}

/** ‖E·Xᵀ‖²_F / tokens, straight from the inputs X [tokens, cols] (no Hessian). */
function lossOnInputs(e: number[][], x: Tensor): number {
  const [tokens, cols] = x.shape as [number, number];
  let s = 0;
  for (const row of e) {
    for (let t = 0; t < tokens; t++) {
      let y = 0;
      for (let j = 0; j < cols; j++) y += row[j]! * Number(x.data[t * cols + j]);
      s += y * y;
    }
  }
  return s / tokens;
}

/**
 * The squared singular values of ΔW·Xᵀ/√tokens, descending, by mathjs: the
 * eigenvalues of (ΔW·Xᵀ)(ΔW·Xᵀ)ᵀ/tokens [rows, rows]. Eckart–Young: the best
 * rank-r B·A leaves the sum of those past the r-th.
 */
function oracleSquaredSingularValues(w: Tensor, approx: Tensor, x: Tensor): number[] {
  const [rows, cols] = w.shape as [number, number];
  const [tokens] = x.shape as [number];
  const dx: number[][] = Array.from(
    { length: rows },
    (_, i) =>
      Array.from({ length: tokens }, (_, t) => {
        let s = 0;
        for (let j = 0; j < cols; j++) {
          s += (Number(w.data[i * cols + j]) - Number(approx.data[i * cols + j])) *
            Number(x.data[t * cols + j]);
        }
        return s;
      }),
  );
  const g = dx.map((a) => dx.map((b) => a.reduce((s, v, t) => s + v * b[t]!, 0) / tokens));
  return (eigs(g).values as number[]).map((v) => Math.max(0, v)).sort((p, q) => q - p);
}

const sumFrom = (v: number[], k: number) => v.slice(k).reduce((s, x) => s + x, 0);

Deno.test("eora() leaves exactly the discarded squared singular values as its error on full-rank Hessians", async () => {
  for (const [rows, cols, seed] of [[12, 20, 1], [24, 10, 2]] as const) {
    const x = randomTensor(200, cols, 10 + seed);
    const w = randomTensor(rows, cols, seed);
    const approx = await compressed(w);
    const h = hessian(x);
    const sq = oracleSquaredSingularValues(w, approx, x);
    const total = sumFrom(sq, 0);
    for (const rank of [1, 3, Math.min(rows, cols) - 1]) {
      const f = await eora(w, approx, h, { rank, dtype: "f32" });
      const oracle = sumFrom(sq, rank);
      assertClose(f.stats.discarded, oracle, { atol: 1e-10 * total, rtol: 1e-8 });
      assertClose(f.stats.errorBefore, total, { atol: 0, rtol: 1e-9 });
      // The returned (float32) factors, scored on the inputs themselves.
      const measured = lossOnInputs(residualOf(w, approx, f), x);
      assertClose(measured, oracle, { atol: 1e-6 * total, message: `rank ${rank}` });
      assertClose(f.stats.error, measured, { atol: 1e-9 * total, rtol: 1e-9 });
      assert.equal(f.stats.effectiveRank, rank);
      assert.equal(f.stats.zeroEigenvalues, 0);
    }
  }
});

Deno.test("eora() is never worse than the truncated SVD of ΔW at the same rank", async () => {
  const ratios: number[] = [];
  for (let seed = 0; seed < 5; seed++) {
    const x = correlatedInputs(256, 32, 100 + seed);
    const w = randomTensor(24, 32, 200 + seed);
    const approx = await compressed(w);
    const h = hessian(x);
    for (const rank of [1, 4, 8, 16]) {
      const e = await eora(w, approx, h, { rank, dtype: "f32" });
      const s = await lowRankSvd(w, approx, { rank, dtype: "f32" });
      const le = lossOnInputs(residualOf(w, approx, e), x);
      const ls = lossOnInputs(residualOf(w, approx, s), x);
      assert.ok(le <= ls * (1 + 1e-6), `seed ${seed} rank ${rank}: eora ${le} > svd ${ls}`);
      ratios.push(le / ls);
    }
  }
  // On correlated inputs with outlier channels the eigenspace matters a lot.
  const mean = ratios.reduce((s, v) => s + v, 0) / ratios.length;
  assert.ok(mean < 0.7, `mean eora/svd loss ratio ${mean}`);
});

Deno.test("eora() is not beaten by alternating least squares from random starts on a tiny layer", async () => {
  const rows = 3, cols = 4, rank = 1;
  const x = correlatedInputs(16, cols, 7, { rank: 2, outliers: 1 });
  const w = randomTensor(rows, cols, 8);
  const approx = randomTensor(rows, cols, 9, 0.1);
  for (let i = 0; i < approx.data.length; i++) approx.data[i]! += w.data[i]!;
  const f = await eora(w, approx, hessian(x), { rank, dtype: "f32" });
  const best = lossOnInputs(residualOf(w, approx, f), x);
  const d = Array.from({ length: rows * cols }, (_, i) => w.data[i]! - approx.data[i]!);
  const hx = hessian(x).xtx;
  const lossOf = (b: number[], a: number[]) => {
    let s = 0;
    for (let i = 0; i < rows; i++) {
      const e = Array.from({ length: cols }, (_, j) => d[i * cols + j]! - b[i]! * a[j]!);
      for (let p = 0; p < cols; p++) {
        for (let q = 0; q < cols; q++) s += e[p]! * hx[p * cols + q]! * e[q]!;
      }
    }
    return s;
  };
  const g = prng(11);
  let als = Infinity;
  for (let start = 0; start < 30; start++) {
    let a = Array.from({ length: cols }, () => g.normal());
    let b = new Array<number>(rows).fill(0);
    for (let it = 0; it < 300; it++) {
      // B ← ΔW·H·aᵀ / (a·H·aᵀ); A ← bᵀ·ΔW / (bᵀb) (the exact minimizers of each half).
      const ha = Array.from(
        { length: cols },
        (_, p) => a.reduce((s, v, q) => s + hx[p * cols + q]! * v, 0),
      );
      const aha = a.reduce((s, v, p) => s + v * ha[p]!, 0);
      b = Array.from(
        { length: rows },
        (_, i) => ha.reduce((s, v, p) => s + d[i * cols + p]! * v, 0) / aha,
      );
      const bb = b.reduce((s, v) => s + v * v, 0);
      a = Array.from(
        { length: cols },
        (_, j) => b.reduce((s, v, i) => s + v * d[i * cols + j]!, 0) / bb,
      );
    }
    als = Math.min(als, lossOf(b, a));
  }
  assert.ok(als >= best * (1 - 1e-5), `ALS ${als} beat eora ${best}`);
  assertClose(best, als, { rtol: 1e-5, atol: 0 });
});

Deno.test("eora() at rank min(rows, cols) recovers W exactly on a full-rank Hessian", async () => {
  for (const [rows, cols] of [[6, 10], [10, 6]] as const) {
    const x = randomTensor(64, cols, rows);
    const w = randomTensor(rows, cols, cols);
    const approx = await compressed(w);
    const f = await eora(w, approx, hessian(x), { rank: Math.min(rows, cols), dtype: "f32" });
    assertClose(addLowRank(approx, f).data, w.data, { atol: 1e-5, rtol: 1e-5 });
    assert.ok(f.stats.error < 1e-10 * f.stats.errorBefore, `${f.stats.error}`);
  }
});

Deno.test("eora() stays finite and optimal on the span of rank-deficient inputs", async () => {
  const rows = 8, cols = 20, tokens = 6; // X has rank 6: 14 eigenvalues are (numerically) zero
  const x = randomTensor(tokens, cols, 31);
  const w = randomTensor(rows, cols, 32);
  const approx = await compressed(w);
  const h = hessian(x);
  const sq = oracleSquaredSingularValues(w, approx, x);
  for (const rank of [2, 4, 7]) {
    const f = await eora(w, approx, h, { rank, dtype: "f32" });
    for (const t of [f.a, f.b]) assert.ok(t.data.every(Number.isFinite));
    assert.equal(f.stats.zeroEigenvalues, cols - tokens);
    const measured = lossOnInputs(residualOf(w, approx, f), x);
    assertClose(measured, sumFrom(sq, rank), {
      atol: 1e-6 * sumFrom(sq, 0),
      message: `rank ${rank}`,
    });
    // ΔW·Xᵀ has rank 6: rank 7 removes it all, and the 7th factor row and column are zero.
    if (rank === 7) {
      assert.equal(f.stats.effectiveRank, 6);
      for (let i = 0; i < rows; i++) assert.equal(f.b.data[i * rank + 6], 0);
      assert.ok(f.a.data.slice(6 * cols).every((v) => v === 0));
    }
    // Outside the span of the inputs the loss is blind; the correction there
    // is the projection U_r·U_rᵀ·ΔW, closer to ΔW than leaving it out (B·A·Π).
    const p = pinv(
      Array.from({ length: tokens }, (_, t) => Array.from(x.data.slice(t * cols, (t + 1) * cols))),
    ) as number[][]; // X⁺ [cols, tokens]
    const proj = Array.from(
      { length: cols },
      (_, i) =>
        Array.from(
          { length: cols },
          (_, j) => p[i]!.reduce((s, v, t) => s + v * x.data[t * cols + j]!, 0),
        ),
    ); // Π = X⁺X
    const e = residualOf(w, approx, f);
    const d = residualOf(w, approx, {
      a: tensor("f32", [1, cols], new Float32Array(cols)),
      b: tensor("f32", [rows, 1], new Float32Array(rows)),
    });
    let full = 0, spanOnly = 0;
    for (let i = 0; i < rows; i++) {
      const ba = d[i]!.map((v, j) => v - e[i]![j]!);
      const baPi = ba.map((_, j) => ba.reduce((s, v, k) => s + v * proj[k]![j]!, 0));
      for (let j = 0; j < cols; j++) {
        full += e[i]![j]! ** 2;
        spanOnly += (d[i]![j]! - baPi[j]!) ** 2;
      }
    }
    assert.ok(full <= spanOnly * (1 + 1e-9), `${full} > ${spanOnly}`);
  }
});

Deno.test("eora() treats eigenvalues under the relative floor as zero directions and keeps A bounded", async () => {
  const rows = 6, cols = 10;
  const x = randomTensor(80, cols, 41);
  for (let t = 0; t < 80; t++) x.data[t * cols + 3]! *= 1e-7; // λ ≈ 1e-14·λ_max: under 1e-10
  const w = randomTensor(rows, cols, 42);
  const approx = await compressed(w);
  const f = await eora(w, approx, hessian(x), { rank: 3, dtype: "f32" });
  assert.equal(f.stats.zeroEigenvalues, 1);
  // A = U_rᵀ·ΔW: no entry exceeds the norm of ΔW's column (no 1/√λ blow-up).
  const d = residualOf(w, approx, {
    a: tensor("f32", [1, cols], new Float32Array(cols)),
    b: tensor("f32", [rows, 1], new Float32Array(rows)),
  });
  for (let j = 0; j < cols; j++) {
    const norm = Math.sqrt(d.reduce((s, row) => s + row[j]! ** 2, 0));
    for (let k = 0; k < 3; k++) assert.ok(Math.abs(f.a.data[k * cols + j]!) <= norm * (1 + 1e-5));
  }
  // With the floor at 0 the direction counts again (it is positive), and the result barely moves.
  const g = await eora(w, approx, hessian(x), { rank: 3, dtype: "f32", eigenFloor: 0 });
  assert.equal(g.stats.zeroEigenvalues, 0);
  assertClose(g.stats.error, f.stats.error, { rtol: 1e-6, atol: 0 });
  // An all-zero Hessian excites nothing: no correction at all.
  const zero = await eora(w, approx, hessianFromGram(new Float64Array(cols * cols), 1), {
    rank: 2,
  });
  assert.equal(zero.stats.effectiveRank, 0);
  assert.ok([...zero.a.data, ...zero.b.data].every((v) => v === 0));
});

Deno.test("eora() stores float16 or quantized factors and counts their bits", async () => {
  const rows = 16, cols = 48, rank = 4;
  const x = correlatedInputs(128, cols, 51);
  const w = randomTensor(rows, cols, 52);
  const approx = await compressed(w);
  const h = hessian(x);
  const half = await eora(w, approx, h, { rank });
  assert.equal(half.bits, 16 * rank * (rows + cols));
  assertClose(half.bitsPerWeight, half.bits / (rows * cols), { atol: 1e-12 });
  for (const t of [half.a, half.b]) assert.ok(t.data.every((v) => Math.f16round(v) === v));
  assert.equal(half.quantized, undefined);

  const q = await eora(w, approx, h, { rank, quantize: { bits: 4, groupSize: 16 } });
  // Codes at 4 bits; per group an f16 scale and a 4-bit zero point: B one group
  // per row (4 entries), A three groups per row (48 entries).
  const groups = rows * 1 + rank * 3;
  assert.equal(q.bits, 4 * rank * (rows + cols) + groups * 20);
  assert.deepEqual(q.quantized!.b.shape, [rows, rank]);
  assert.deepEqual(q.quantized!.a.shape, [rank, cols]);
  assert.deepEqual(Array.from(dequantize(q.quantized!.a).data), Array.from(q.a.data));
  assert.deepEqual(Array.from(dequantize(q.quantized!.b).data), Array.from(q.b.data));
  // Rounding costs a little, quantizing more; both stay far below no correction.
  const exact = await eora(w, approx, h, { rank, dtype: "f32" });
  assert.ok(exact.stats.error <= half.stats.error * (1 + 1e-9));
  assert.ok(half.stats.error <= q.stats.error);
  assert.ok(
    q.stats.error < 0.75 * q.stats.errorBefore,
    `${q.stats.error} / ${q.stats.errorBefore}`,
  );
});

Deno.test("eora() names the argument or option that is wrong", async () => {
  const w = randomTensor(4, 6, 61), approx = randomTensor(4, 6, 62);
  const h = hessian(randomTensor(20, 6, 63));
  const cases: [() => Promise<unknown>, RegExp][] = [
    [
      () => eora(w, approx, h, { rank: 5 }),
      /'rank' must be an integer in \[1, min\(rows, cols\) = 4\].*current value is 5/,
    ],
    [() => eora(w, approx, h, { rank: 0 }), /'rank'.*current value is 0/],
    [() => eora(w, approx, h, { rank: 1.5 }), /'rank'.*current value is 1.5/],
    [
      () => eora(w, approx, hessian(randomTensor(20, 5, 1)), { rank: 1 }),
      /'hessian' must be \[6, 6\] for a \[4, 6\] weight: it is \[5, 5\]/,
    ],
    [
      () => eora(w, randomTensor(4, 5, 1), h, { rank: 1 }),
      /'approx' \[4,5\] must have the shape of 'weight' \[4,6\]/,
    ],
    [
      () => eora(w, approx, h, { rank: 1, eigenFloor: 1 }),
      /'eigenFloor' must be a number in \[0, 1\): current value is 1/,
    ],
    [
      () => eora(w, approx, h, { rank: 1, dtype: "f8" as never }),
      /'dtype' must be "f16" or "f32": current value is f8/,
    ],
    [
      () => eora(w, approx, h, { rank: 1, quantize: { bits: 0 } }),
      /with 'quantize' as 'bits' must be an integer in \[1, 16\]: current value is 0/,
    ],
    [() => eora(w, approx, null as never, { rank: 1 }), /'hessian' must be a Hessian/],
    [() => eora({} as never, approx, h, { rank: 1 }), /'weight' is not a tensor/],
  ];
  for (const [call, message] of cases) await assert.rejects(call, message);
  const nan = (t: Tensor<"f32">, i: number) => {
    const c = tensor("f32", t.shape, Float32Array.from(t.data));
    c.data[i] = NaN;
    return c;
  };
  await assert.rejects(
    () => eora(nan(w, 3), approx, h, { rank: 1 }),
    /'weight' must be finite: element 3 is NaN/,
  );
  await assert.rejects(
    () => eora(w, nan(approx, 5), h, { rank: 1 }),
    /'approx' must be finite: element 5 is NaN/,
  );
  const badH = { ...h, xtx: Float64Array.from(h.xtx) };
  badH.xtx[7] = Infinity;
  await assert.rejects(
    () => eora(w, approx, badH, { rank: 1 }),
    /'hessian' must be finite: element 7 is Infinity/,
  );
});
