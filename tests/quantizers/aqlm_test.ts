import assert from "node:assert/strict";
import { lusolve, matrix } from "mathjs";
import { aqlm, dequantizeAqlm } from "../../quantizers/aqlm.ts";
import {
  beamSearch,
  KMEANS_CHECK,
  objectiveOf,
  type Problem,
  residualKmeans,
  updateCodebooks,
  visitOrder,
} from "../../quantizers/_aqlm_search.ts";
import { hessian } from "../../hessian/hessian.ts";
import { unpackBits } from "../../core/bitpack.ts";
import { prng, randn } from "../../core/prng.ts";
import { type Tensor, tensor } from "../../core/tensor.ts";
import { gptq } from "../../quantizers/gptq.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { layerError } from "../../hessian/layer_error.ts";
import { assertClose } from "../_helpers.ts";
import { correlatedInputs } from "./_correlated.ts";

function smallLayer(rows: number, cols: number, seed: number) {
  const g = prng(seed);
  const w = tensor("f64", [rows, cols], randn(rows * cols, g));
  const h = hessian(
    correlatedInputs(4 * cols, cols, seed + 1, { rank: 6, outliers: cols >> 4, outlierScale: 6 }),
  );
  return { w, h };
}

Deno.test("aqlm() never increases the output error from one round to the next", async () => {
  const { w, h } = smallLayer(32, 64, 1);
  for (const [codebooks, codebookBits] of [[1, 6], [2, 4]] as const) {
    const q = await aqlm(w, h, {
      codebooks,
      codebookBits,
      groupSize: 8,
      iterations: 4,
      relativeTolerance: 0,
      beamSize: 2,
    });
    assert.equal(q.objective.length, 5);
    for (let i = 1; i < q.objective.length; i++) {
      assert.ok(
        q.objective[i]! <= q.objective[i - 1]! * (1 + 1e-12),
        `round ${i}: ${q.objective[i]} > ${q.objective[i - 1]}`,
      );
    }
    assert.ok(q.objective.at(-1)! < q.objective[0]!, "the rounds improve on the k-means start");
  }
});

Deno.test("aqlm()'s beam search finds the brute-force optimum when the beam holds every configuration", () => {
  const g = prng(3);
  const rows = 2, cols = 4, gs = 2, K = 4, M = 1;
  const W = randn(rows * cols, g);
  const X = randn(16 * cols, g);
  const H = hessian(tensor("f64", [16, cols], X)).xtx;
  const p: Problem = { rows, cols, g: gs, G: cols / gs, M, K, W, H };
  const codebooks = randn(M * K * gs, g);
  const scales = Float64Array.from([0.7, 1.3]);
  // Brute force: rows are independent, so minimize each row over its K^G configurations.
  let best = 0;
  for (let r = 0; r < rows; r++) {
    let rowBest = Infinity;
    for (let a = 0; a < K; a++) {
      for (let b = 0; b < K; b++) {
        const trial = new Int32Array(rows * p.G * M);
        trial[r * 2] = a;
        trial[r * 2 + 1] = b;
        rowBest = Math.min(rowBest, rowObjective(p, codebooks, trial, scales, r));
      }
    }
    best += rowBest;
  }
  for (const order of [Int32Array.of(0, 1), Int32Array.of(1, 0)]) {
    const codes = new Int32Array(rows * p.G * M); // all zero to start
    beamSearch(p, codebooks, codes, scales, K * K, order, () => {});
    assertClose(objectiveOf(p, codebooks, codes, scales), best, { rtol: 1e-10, atol: 1e-12 });
  }
});

/** Objective contribution of one row. */
function rowObjective(
  p: Problem,
  codebooks: Float64Array,
  codes: Int32Array,
  scales: Float64Array,
  row: number,
): number {
  const keep = (r: number) => (r === row ? 1 : 0);
  const W = p.W.map((v, i) => v * keep(Math.floor(i / p.cols)));
  const s = scales.map((v, r) => v * keep(r));
  return objectiveOf({ ...p, W }, codebooks, codes, s);
}

Deno.test("aqlm()'s codebook update reaches the least-squares optimum (checked with mathjs)", () => {
  const g = prng(4);
  const rows = 6, cols = 4, gs = 2, K = 2, M = 2;
  const W = randn(rows * cols, g);
  const H = hessian(tensor("f64", [20, cols], randn(20 * cols, g))).xtx;
  const p: Problem = { rows, cols, g: gs, G: cols / gs, M, K, W, H };
  const codes = new Int32Array(rows * p.G * M).map(() => g.int(K));
  const scales = Float64Array.from({ length: rows }, () => 0.5 + g.uniform());
  const start = randn(M * K * gs, g);
  const solved = updateCodebooks(p, start, codes, scales, 200);
  // Independent: the design matrix D maps θ to vec(Ŵ); minimize (w − Dθ)ᵀ(I ⊗ H)(w − Dθ).
  const n = M * K * gs;
  const D: number[][] = Array.from({ length: rows * cols }, () => new Array(n).fill(0));
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < p.G; j++) {
      for (let m = 0; m < M; m++) {
        const k = codes[(r * p.G + j) * M + m]!;
        for (let a = 0; a < gs; a++) {
          const row = D[r * cols + j * gs + a]!;
          row[(m * K + k) * gs + a] = row[(m * K + k) * gs + a]! + scales[r]!;
        }
      }
    }
  }
  const N: number[][] = Array.from({ length: n }, () => new Array(n).fill(0));
  const b: number[] = new Array(n).fill(0);
  for (let r = 0; r < rows; r++) {
    for (let c1 = 0; c1 < cols; c1++) {
      for (let c2 = 0; c2 < cols; c2++) {
        const hv = H[c1 * cols + c2]!;
        const d1 = D[r * cols + c1]!, d2 = D[r * cols + c2]!;
        for (let i = 0; i < n; i++) {
          if (d1[i] === 0) continue;
          b[i] = b[i]! + d1[i]! * hv * W[r * cols + c2]!;
          const Ni = N[i]!;
          for (let k = 0; k < n; k++) Ni[k] = Ni[k]! + d1[i]! * hv * d2[k]!;
        }
      }
    }
  }
  const expected = (lusolve(matrix(N), b).valueOf() as number[][]).map((row) => row[0]!);
  const fSolved = objectiveOf(p, solved, codes, scales);
  const fExpected = objectiveOf(p, Float64Array.from(expected), codes, scales);
  assertClose(fSolved, fExpected, { rtol: 1e-8 });
  assert.ok(fSolved <= objectiveOf(p, start, codes, scales));
});

Deno.test("aqlm() gives bit-identical results for the same seed and reports bits per weight", async () => {
  const { w, h } = smallLayer(16, 32, 5);
  // Defaults otherwise: shuffled visiting order, k-means to convergence, tolerance stop.
  const options = { codebooks: 2, codebookBits: 4, groupSize: 8, seed: 9 };
  const a = await aqlm(w, h, options);
  const b = await aqlm(w, h, options);
  const c = await aqlm(w, h, { ...options, seed: 10 });
  assert.ok(a.objective.length > 2, `${a.objective.length - 1} rounds`);
  assert.deepEqual(a.objective, b.objective);
  assert.deepEqual(a.codes, b.codes);
  assert.deepEqual(a.codebooks, b.codebooks);
  assert.deepEqual(a.scales, b.scales);
  assert.notDeepEqual(a.codes, c.codes, "another seed gives another result");
  assert.equal(a.bitsPerWeight.codes, 1); // 2 codebooks × 4 bits / 8 columns
  // codebooks 2·16·8 f16 values and 16 f16 scales over 16·32 weights
  assertClose(a.bitsPerWeight.total, 1 + (2 * 16 * 8 * 16 + 16 * 16) / (16 * 32));
});

Deno.test("dequantizeAqlm() reproduces the reconstruction the objective was computed on", async () => {
  const { w, h } = smallLayer(16, 32, 6);
  const q = await aqlm(w, h, { codebooks: 1, codebookBits: 5, groupSize: 4, iterations: 2 });
  const d = dequantizeAqlm(q);
  // relative error of the dequantized matrix equals the last reported objective
  const W = w.data as Float64Array;
  const R = new Float64Array(W.length).map((_, i) => W[i]! - d[i]!);
  let num = 0, den = 0;
  for (let r = 0; r < 16; r++) {
    for (let i = 0; i < 32; i++) {
      for (let j = 0; j < 32; j++) {
        num += R[r * 32 + i]! * h.xtx[i * 32 + j]! * R[r * 32 + j]!;
        den += W[r * 32 + i]! * h.xtx[i * 32 + j]! * W[r * 32 + j]!;
      }
    }
  }
  assertClose(num / den, q.objective.at(-1)!, { rtol: 1e-4 });
});

Deno.test("aqlm() refuses bad codebook shapes with errors naming the option", async () => {
  const { w, h } = smallLayer(4, 16, 7);
  await assert.rejects(
    () => aqlm(w, h, { codebookBits: 0 }),
    /'codebookBits' must be an integer in \[1, 16\]/,
  );
  await assert.rejects(() => aqlm(w, h, { codebookBits: 17 }), /'codebookBits'/);
  await assert.rejects(() => aqlm(w, h, { codebooks: 0 }), /'codebooks' must be an integer/);
  await assert.rejects(
    () => aqlm(w, h, { groupSize: 5 }),
    /'groupSize' must divide the 16 columns/,
  );
  const bad = tensor("f64", [4, 8], new Float64Array(32));
  await assert.rejects(() => aqlm(bad, h), /'hessian' must be \[8, 8\]/);
});

Deno.test("aqlm() refuses bad round, tolerance, k-means and order options with errors naming the option", async () => {
  const { w, h } = smallLayer(4, 16, 7);
  for (const relativeTolerance of [-0.1, 1, 2, NaN, Infinity]) {
    await assert.rejects(
      () => aqlm(w, h, { relativeTolerance }),
      (e: Error) =>
        e instanceof RangeError &&
        e.message.includes(
          `'relativeTolerance' must be a number in [0, 1): current value is ${relativeTolerance}`,
        ),
    );
  }
  await assert.rejects(
    () => aqlm(w, h, { iterations: -1 }),
    /'iterations' must be an integer in \[0, 10000\]: current value is -1/,
  );
  await assert.rejects(() => aqlm(w, h, { iterations: 2.5 }), /'iterations'/);
  await assert.rejects(
    () => aqlm(w, h, { kmeansIterations: 1.5 }),
    /'kmeansIterations' must be an integer/,
  );
  await assert.rejects(
    () => aqlm(w, h, { shuffle: "yes" as unknown as boolean }),
    (e: Error) =>
      e instanceof TypeError && /'shuffle' must be a boolean: current value is yes/.test(e.message),
  );
});

Deno.test("aqlm() stops after the first round that improves by less than relativeTolerance and never runs more than iterations rounds", async () => {
  const { w, h } = smallLayer(32, 64, 11);
  const base = { codebooks: 2, codebookBits: 4, groupSize: 8, beamSize: 2, seed: 3 };
  for (const relativeTolerance of [0.001, 0.01, 0.05]) {
    const q = await aqlm(w, h, { ...base, relativeTolerance, iterations: 40 });
    const f = q.objective, rounds = f.length - 1;
    assert.ok(rounds >= 1 && rounds <= 40, `${rounds} rounds`);
    // every round but the last improved by at least the tolerance…
    for (let r = 1; r < rounds; r++) {
      assert.ok(
        f[r]! <= (1 - relativeTolerance) * f[r - 1]!,
        `tol ${relativeTolerance}, round ${r}`,
      );
    }
    // …and the last one did not, unless the maximum stopped the loop.
    if (rounds < 40) assert.ok(f[rounds]! > (1 - relativeTolerance) * f[rounds - 1]!);
  }
  // A tolerance no round can meet stops after one round; tolerance 0 runs the maximum.
  assert.equal((await aqlm(w, h, { ...base, relativeTolerance: 0.999 })).objective.length, 2);
  assert.equal(
    (await aqlm(w, h, { ...base, relativeTolerance: 0, iterations: 6 })).objective.length,
    7,
  );
  // The maximum wins over a tolerance that would go on, and 0 rounds is the initialization.
  const capped = await aqlm(w, h, { ...base, relativeTolerance: 1e-9, iterations: 2 });
  assert.equal(capped.objective.length, 3);
  assert.equal((await aqlm(w, h, { ...base, iterations: 0 })).objective.length, 1);
  // The default stops by tolerance on this layer, well before the default maximum.
  const byDefault = await aqlm(w, h, base);
  assert.ok(byDefault.objective.length > 2 && byDefault.objective.length < 20);
});

Deno.test("visitOrder() lists every code once, group by group, in a seeded order that changes from round to round", () => {
  const G = 12, M = 3;
  const natural = visitOrder(G, M, null);
  assert.deepEqual(natural, Int32Array.from({ length: G * M }, (_, i) => i));
  const rng = prng(5);
  const first = visitOrder(G, M, rng), second = visitOrder(G, M, rng);
  for (const order of [first, second]) {
    assert.deepEqual([...order].sort((a, b) => a - b), [...natural], "a permutation of all codes");
    for (let i = 0; i < G; i++) {
      // the M codebooks of one group are visited together
      const group = Math.floor(order[i * M]! / M);
      for (let m = 1; m < M; m++) assert.equal(Math.floor(order[i * M + m]! / M), group);
    }
  }
  assert.notDeepEqual(first, natural);
  assert.notDeepEqual(first, second);
  // codebooks are reshuffled per group, not once per round
  const bookOrders = new Set<string>();
  for (let i = 0; i < G; i++) {
    bookOrders.add([...first.subarray(i * M, i * M + M)].map((x) => x % M).join());
  }
  assert.ok(bookOrders.size > 1);
  assert.deepEqual(visitOrder(G, M, prng(5)), first, "the same seed gives the same order");
});

Deno.test("aqlm()'s beam search follows the visiting order: another order gives other codes, never worse than the start", () => {
  const g = prng(12);
  const rows = 8, cols = 64, gs = 8, K = 16, M = 2;
  const W = randn(rows * cols, g);
  const H = hessian(correlatedInputs(4 * cols, cols, 13, { rank: 6, outliers: 4 })).xtx;
  const p: Problem = { rows, cols, g: gs, G: cols / gs, M, K, W, H };
  const codebooks = randn(M * K * gs, g).map((v) => 0.5 * v);
  const scales = new Float64Array(rows).fill(1);
  const start = new Int32Array(rows * p.G * M).map(() => g.int(K));
  const before = objectiveOf(p, codebooks, start, scales);
  const results = [visitOrder(p.G, M, null), visitOrder(p.G, M, prng(1))].map((order) => {
    const codes = Int32Array.from(start);
    beamSearch(p, codebooks, codes, scales, 1, order, () => {});
    const f = objectiveOf(p, codebooks, codes, scales);
    assert.ok(f <= before, `${f} > ${before}`);
    return codes;
  });
  assert.notDeepEqual(results[0], results[1]);
});

Deno.test("aqlm() with a shuffled visiting order keeps rounds non-increasing and dequantizes to the reported error", async () => {
  const { w, h } = smallLayer(24, 64, 12);
  const options = { codebooks: 2, codebookBits: 4, groupSize: 8, iterations: 3 };
  const shuffled = await aqlm(w, h, { ...options, relativeTolerance: 0 });
  const natural = await aqlm(w, h, { ...options, relativeTolerance: 0, shuffle: false });
  // Same start: the shuffle draws from the generator after the k-means.
  assert.equal(shuffled.objective[0], natural.objective[0]);
  for (const q of [shuffled, natural]) {
    assert.equal(q.objective.length, 4);
    for (let i = 1; i < q.objective.length; i++) {
      assert.ok(q.objective[i]! <= q.objective[i - 1]! * (1 + 1e-12));
    }
    const err = layerError(w, tensor("f32", [24, 64], dequantizeAqlm(q)), h);
    assertClose(err, q.objective.at(-1)!, { rtol: 1e-4 });
  }
});

Deno.test("aqlm() refits the k-means codebooks and scales in output space before the first round", async () => {
  const { w, h } = smallLayer(32, 64, 14);
  const q = await aqlm(w, h, {
    codebooks: 2,
    codebookBits: 4,
    groupSize: 8,
    iterations: 0,
    seed: 4,
  });
  // The same k-means start, by hand: RMS row scales, then residual k-means with the seed's generator.
  const W = w.data as Float64Array;
  const p: Problem = { rows: 32, cols: 64, g: 8, G: 8, M: 2, K: 16, W, H: h.xtx };
  const scales = new Float64Array(32).map((_, r) =>
    Math.sqrt(W.subarray(r * 64, r * 64 + 64).reduce((a, v) => a + v * v, 0) / 64)
  );
  const km = residualKmeans(p, scales, 100, prng(4));
  const energy = objectiveOf(p, new Float64Array(2 * 16 * 8), km.codes, scales);
  const kmeansError = objectiveOf(p, km.codebooks, km.codes, scales) / energy;
  assert.deepEqual([...unpackBits(q.codes, 4, km.codes.length)], [...km.codes], "no search ran");
  assert.ok(q.objective[0]! < 0.9 * kmeansError, `${q.objective[0]} vs k-means ${kmeansError}`);
});

Deno.test("residualKmeans() stops at a check where no center moved, and more allowed steps change nothing", () => {
  // Normalized groups near 6 well-separated points: Lloyd converges within a few steps.
  const g = prng(8);
  const rows = 40, cols = 16, gs = 4, K = 8;
  const centers = randn(6 * gs, g).map((v) => 10 * v);
  const W = new Float64Array(rows * cols);
  for (let i = 0; i < (rows * cols) / gs; i++) {
    const c = g.int(6);
    for (let a = 0; a < gs; a++) W[i * gs + a] = centers[c * gs + a]! + 0.01 * g.normal();
  }
  const p: Problem = {
    rows,
    cols,
    g: gs,
    G: cols / gs,
    M: 2,
    K,
    W,
    H: new Float64Array(cols * cols),
  };
  const scales = new Float64Array(rows).fill(1);
  const run = (iterations: number) => residualKmeans(p, scales, iterations, prng(1));
  const converged = run(1000);
  for (const steps of converged.lloydSteps) {
    assert.ok(steps < 1000, `${steps} steps`);
    assert.equal((steps - 1) % KMEANS_CHECK.every, 0, "stops only at a check");
  }
  const more = run(5000);
  assert.deepEqual(more.codebooks, converged.codebooks);
  assert.deepEqual(more.codes, converged.codes);
  // A smaller maximum is obeyed.
  assert.deepEqual(run(2).lloydSteps, [2, 2]);
});

Deno.test("aqlm() at 2 bits per weight beats GPTQ at 2 bits by more than 2× and matches GPTQ at 3 bits", async () => {
  const rows = 256, cols = 256;
  const g = prng(21);
  const w = tensor("f64", [rows, cols], randn(rows * cols, g));
  const h = hessian(
    correlatedInputs(4 * cols, cols, 22, { rank: 6, outliers: cols >> 4, outlierScale: 6 }),
  );
  const err = (approx: Tensor) => layerError(w, approx, h);
  const gptq2 = err(dequantize(await gptq(w, h, { bits: 2 })));
  const gptq3 = err(dequantize(await gptq(w, h, { bits: 3 })));
  // 1 codebook of 256 vectors over groups of 4: 2 bits of codes per weight, 2.31 with the
  // f16 codebook and scales amortized (GPTQ per channel: 2.125 and 3.125).
  const q = await aqlm(w, h, {
    codebooks: 1,
    codebookBits: 8,
    groupSize: 4,
    iterations: 1,
    beamSize: 2,
  });
  assert.equal(q.bitsPerWeight.codes, 2);
  assert.ok(q.bitsPerWeight.total < 2.35, `total bits ${q.bitsPerWeight.total}`);
  const mine = err(dequantize(q));
  assert.ok(mine < gptq2 / 2, `AQLM ${mine} vs GPTQ 2-bit ${gptq2}`);
  assert.ok(mine <= gptq3, `AQLM ${mine} vs GPTQ 3-bit ${gptq3}`);
});
