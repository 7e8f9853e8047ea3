import assert from "node:assert/strict";
import { type Tensor, tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { cholesky, choleskyInverse } from "../../core/linalg.ts";
import { type Hessian, hessian } from "../../hessian/hessian.ts";
import { layerError } from "../../hessian/layer_error.ts";
import { obsSolve } from "../../hessian/obs.ts";
import { spqr } from "../../quantizers/spqr.ts";
import { decodeSpqrStatistic, spqrBitsPerWeight } from "../../quantizers/spqr_weight.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { correlatedInputs, randomWeight } from "./_correlated.ts";
import { SPQR_DEFAULT_DECIDER } from "./_spqr_defaults.ts";
import { assertClose } from "../_helpers.ts";
import { testGpu } from "../kernels/_gpu.ts";

function problem(rows: number, cols: number, seed: number): { w: Tensor<"f32">; h: Hessian } {
  return {
    w: randomWeight(rows, cols, seed),
    h: hessian(correlatedInputs(4 * cols, cols, seed + 1)),
  };
}

/**
 * An independent, unblocked SpQR without outliers in float64: act-order, U the
 * upper Cholesky factor of the damped H⁻¹, and for each column in order: at a
 * group's first column, each row's min–max grid of the group's current
 * weights (zero point not rounded; an empty range is [−1, 1]), its scales and
 * zero points rounded onto `sbits`-bit grids over the float16 range of each
 * run of `sg` rows; then q = grid(w) and W[:, j > i] −= (w − q)/U_ii · U[i, j].
 */
function bruteForce(
  w: Tensor<"f32">,
  h: Hessian,
  bits: number,
  gs: number,
  sbits: number,
  sg: number,
  damp = 0.01,
): Float64Array {
  const [rows, n] = w.shape as [number, number];
  const order = Array.from({ length: n }, (_, i) => i)
    .sort((a, b) => h.xtx[b * n + b]! - h.xtx[a * n + a]! || a - b);
  let mean = 0;
  for (let i = 0; i < n; i++) mean += h.xtx[i * n + i]! / n;
  const hp = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) hp[i * n + j] = h.xtx[order[i]! * n + order[j]!]!;
    hp[i * n + i] = hp[i * n + i]! + damp * mean;
  }
  const inv = choleskyInverse(tensor("f64", [n, n], hp));
  const u = cholesky(inv, { upper: true }).data as Float64Array;
  const W = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < n; i++) W[r * n + i] = w.data[r * n + order[i]!]!;
  }
  const maxq = 2 ** bits - 1, smax = 2 ** sbits - 1;
  const scale = new Float64Array(rows), zero = new Float64Array(rows);
  const onRuns = (v: Float64Array): void => {
    for (let r0 = 0; r0 < rows; r0 += sg) {
      const run = v.subarray(r0, Math.min(rows, r0 + sg));
      const lo = Math.f16round(Math.min(...run)), hi = Math.f16round(Math.max(...run));
      const step = (hi - lo) / smax;
      for (let i = 0; i < run.length; i++) {
        const c = step > 0 ? Math.min(smax, Math.max(0, Math.round((run[i]! - lo) / step))) : 0;
        run[i] = lo + c * step;
      }
    }
  };
  const out = new Float64Array(rows * n);
  for (let i = 0; i < n; i++) {
    if (i % gs === 0) {
      for (let r = 0; r < rows; r++) {
        let lo = Infinity, hi = -Infinity;
        for (let t = i; t < Math.min(n, i + gs); t++) {
          lo = Math.min(lo, W[r * n + t]!);
          hi = Math.max(hi, W[r * n + t]!);
        }
        if (lo === hi) [lo, hi] = [-1, 1];
        scale[r] = (hi - lo) / maxq;
        zero[r] = -lo / scale[r]!;
      }
      onRuns(scale);
      onRuns(zero);
    }
    for (let r = 0; r < rows; r++) {
      const x = W[r * n + i]!;
      const c = Math.min(maxq, Math.max(0, Math.round(x / scale[r]! + zero[r]!)));
      const q = scale[r]! * (c - zero[r]!);
      const e = (x - q) / u[i * n + i]!;
      out[r * n + order[i]!] = q;
      for (let j = i + 1; j < n; j++) W[r * n + j] = W[r * n + j]! - e * u[i * n + j]!;
    }
  }
  return out;
}

Deno.test("spqr() with τ = ∞ keeps no outliers and equals an unblocked float64 GPTQ over the same bilevel grids", async () => {
  const { w, h } = problem(24, 40, 3);
  const q = await spqr(w, h, {
    bits: 3,
    groupSize: 8,
    scaleBits: 3,
    zeroBits: 3,
    statisticGroupSize: 8,
    outlierThreshold: Infinity,
    blockSize: 16, // groups cross no block edge; blocks only change rounding
    backend: "cpu", // the float64 factor (the GPU's is float32: spqr_webgpu_test.ts)
  });
  assert.equal(q.stats.outliers, 0);
  assert.equal(q.outliers.values.length, 0);
  const ref = bruteForce(w, h, 3, 8, 3, 8);
  // float32 against float64: a rounding tie may flip one code; none did on this seed.
  assertClose(dequantize(q).data, ref, { atol: 2e-5, rtol: 1e-3 });
});

Deno.test("spqr() with τ = 0 keeps (nearly) every weight as a float16 outlier and leaves ~no error", async () => {
  const { w, h } = problem(16, 32, 5);
  const q = await spqr(w, h, { outlierThreshold: 0 });
  assert(q.stats.outlierFraction > 0.9, `outliers ${q.stats.outlierFraction}`);
  const err = layerError(w, dequantize(q), h);
  assert(err < 1e-6, `layer error ${err}`);
  assert(q.stats.bitsPerWeight > 32 * 0.9);
});

Deno.test("spqr()'s scales and zero points decode to points of their 3-bit grids over float16 ranges", async () => {
  const { w, h } = problem(40, 48, 7); // 40 rows: runs of 16, 16 and 8
  const q = await spqr(w, h, { bits: 3, groupSize: 16 });
  const [rows] = q.shape;
  for (const s of [q.scales, q.zeros]) {
    const groups = s.codes.length / rows, runs = Math.ceil(rows / 16);
    assert.equal(s.lo.length, groups * runs);
    const values = decodeSpqrStatistic(s, rows, 16);
    for (let r = 0; r < rows; r++) {
      for (let k = 0; k < groups; k++) {
        const lo = s.lo[k * runs + Math.floor(r / 16)]!, hi = s.hi[k * runs + Math.floor(r / 16)]!;
        assert.equal(Math.f16round(lo), lo);
        assert.equal(Math.f16round(hi), hi);
        assert(s.codes[r * groups + k]! <= 7);
        const t = hi > lo ? (values[r * groups + k]! - lo) / ((hi - lo) / 7) : 0;
        assert(Math.abs(t - Math.round(t)) < 1e-3, `not on the grid: ${t}`);
      }
    }
    // Each run's smallest and largest codes reach the ends of the grid.
    for (let k = 0; k < groups; k++) {
      let min = 8, max = -1;
      for (let r = 0; r < 16; r++) {
        min = Math.min(min, s.codes[r * groups + k]!);
        max = Math.max(max, s.codes[r * groups + k]!);
      }
      assert(min === 0 && max === 7, `run of group ${k}: codes ${min}..${max}`);
    }
  }
  // The decoded scales are the grid steps that rebuild the non-outlier weights.
  const scales = decodeSpqrStatistic(q.scales, rows, 16);
  const zeros = decodeSpqrStatistic(q.zeros, rows, 16);
  const deq = dequantize(q).data, cols = q.shape[1], groups = scales.length / rows;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const g = r * groups + q.gIdx[c]!;
      const v = Math.fround(scales[g]! * Math.fround(q.codes[r * cols + c]! - zeros[g]!));
      const isOutlier = q.outliers.columns
        .subarray(q.outliers.rowStart[r]!, q.outliers.rowStart[r + 1]!).includes(c);
      if (!isOutlier) assert.equal(deq[r * cols + c], v);
    }
  }
});

Deno.test("spqr()'s bits per weight are the closed form b + (sb + zb)/g + 64/(g·g₂) + 32·outliers/(rows·cols) + 16/rows", async () => {
  const { w, h } = problem(32, 64, 11);
  const q = await spqr(w, h, { bits: 3, groupSize: 16, statisticGroupSize: 16 });
  const count = q.outliers.values.length;
  assert(count > 0 && count === q.stats.outliers);
  const expected = 3 + 6 / 16 + 64 / (16 * 16) + (32 * count) / (32 * 64) + 16 / 32;
  assertClose(q.stats.bitsPerWeight, expected, { rtol: 1e-12 });
  // Without act-order there is no order to store; a short last group and run count whole.
  assert.equal(
    spqrBitsPerWeight({
      rows: 20,
      cols: 24,
      bits: 4,
      groupSize: 16,
      scaleBits: 2,
      zeroBits: 3,
      statisticGroupSize: 16,
      outliers: 3,
      permuted: false,
    }),
    (20 * 24 * 4 + 20 * 2 * 5 + 2 * 2 * 64 + 3 * 32) / (20 * 24),
  );
});

Deno.test("spqr() keeps planted large weights as outliers, stored in CSR at their original columns", async () => {
  const { w, h } = problem(32, 48, 13);
  const data = Float32Array.from(w.data);
  const planted = [[3, 5], [10, 40], [20, 0], [31, 47]] as const;
  for (const [r, c] of planted) data[r * 48 + c] = 0.5; // 25 σ
  const wp = tensor("f32", [32, 48], data);
  const q = await spqr(wp, h);
  const deq = dequantize(q).data;
  for (const [r, c] of planted) {
    const { rowStart, columns, values } = q.outliers;
    const cs = Array.from(columns.subarray(rowStart[r]!, rowStart[r + 1]!));
    assert(cs.includes(c), `(${r}, ${c}) not an outlier: row ${r} keeps ${cs}`);
    // The kept value is the weight as the loop's updates left it, in float16.
    const v = values[rowStart[r]! + cs.indexOf(c)]!;
    assert(Math.abs(v - 0.5) < 0.05 && Math.f16round(v) === v, `kept ${v}`);
    assert.equal(deq[r * 48 + c], v);
  }
  for (let r = 0; r < 32; r++) {
    const cs = q.outliers.columns.subarray(q.outliers.rowStart[r]!, q.outliers.rowStart[r + 1]!);
    for (let i = 1; i < cs.length; i++) assert(cs[i - 1]! < cs[i]!);
  }
  const none = await spqr(wp, h, { outlierThreshold: Infinity });
  assert(layerError(wp, dequantize(q), h) < layerError(wp, dequantize(none), h));
});

Deno.test("spqr()'s stored form dequantizes to exactly the weights the OBS loop produced", async () => {
  const { w, h } = problem(24, 40, 17);
  const options = SPQR_DEFAULT_DECIDER;
  const solved = await obsSolve(w, h, { decider: options, actOrder: true, backend: "cpu" });
  const q = await spqr(w, h, { backend: "cpu" });
  assert.deepEqual(dequantize(q).data, solved.weight.data);
  assert.deepEqual(q.codes, solved.codes);
});

Deno.test("spqr() is deterministic and undoes its act-order permutation", async () => {
  const { w, h } = problem(16, 32, 19);
  const a = await spqr(w, h), b = await spqr(w, h);
  assert.deepEqual(dequantize(a).data, dequantize(b).data);
  assert.deepEqual(a.outliers, b.outliers);
  assert(a.perm !== undefined);
  for (let pos = 0; pos < 32; pos++) assert.equal(a.gIdx[a.perm[pos]!], Math.floor(pos / 16));
  // Relabel the inputs: the same layer, so the same result with its columns relabelled.
  const n = 32, p = Array.from({ length: n }, (_, i) => (i * 7) % n); // new column i = old p[i]
  const wp = tensor(
    "f32",
    [16, n],
    Float32Array.from({ length: 16 * n }, (_, k) => {
      const r = Math.floor(k / n), c = k % n;
      return w.data[r * n + p[c]!]!;
    }),
  );
  const xtx = Float64Array.from({ length: n * n }, (_, k) => {
    const i = Math.floor(k / n), j = k % n;
    return h.xtx[p[i]! * n + p[j]!]!;
  });
  const c = await spqr(wp, { cols: n, count: h.count, xtx });
  const da = dequantize(a).data, dc = dequantize(c).data;
  for (let r = 0; r < 16; r++) {
    for (let i = 0; i < n; i++) assert.equal(dc[r * n + i], da[r * n + p[i]!]);
  }
});

Deno.test("spqr() with act-order off keeps the identity order and stores none", async () => {
  const { w, h } = problem(16, 32, 23);
  const q = await spqr(w, h, { actOrder: false });
  assert.equal(q.perm, undefined);
  assert.deepEqual(Array.from(q.gIdx), Array.from({ length: 32 }, (_, c) => Math.floor(c / 16)));
  assert(layerError(w, dequantize(q), h) < 0.05);
});

Deno.test("spqr() refuses a bad Hessian, non-finite values and bad options, naming each", async () => {
  const { w, h } = problem(8, 16, 29);
  await assert.rejects(
    () => spqr(w, hessian(correlatedInputs(32, 12, 1))),
    /Hessian has 12 columns/,
  );
  const bad = Float32Array.from(w.data);
  bad[5] = NaN;
  await assert.rejects(() => spqr(tensor("f32", [8, 16], bad), h), /'weight' must be finite/);
  const hx = Float64Array.from(h.xtx);
  hx[3] = Infinity;
  await assert.rejects(() => spqr(w, { ...h, xtx: hx }), /Hessian must be finite/);
  for (
    const [options, message] of [
      [{ bits: 0 }, /'bits' must be an integer in \[1, 8\]: current value is 0/],
      [{ bits: 9 }, /'bits'/],
      [{ groupSize: 0 }, /'groupSize'/],
      [{ groupSize: 2.5 }, /'groupSize'/],
      [{ scaleBits: 9 }, /'scaleBits'/],
      [{ zeroBits: 0 }, /'zeroBits'/],
      [{ statisticGroupSize: -1 }, /'statisticGroupSize'/],
      [{ outlierThreshold: -1 }, /'outlierThreshold' must be a number >= 0/],
      [{ outlierThreshold: NaN }, /'outlierThreshold'/],
      [{ dampRatio: -1 }, /'dampRatio'/],
    ] as const
  ) {
    await assert.rejects(() => spqr(w, h, options), (e: Error) => {
      assert(e instanceof RangeError && message.test(e.message), e.message);
      return true;
    });
  }
  await assert.rejects(
    () => spqr(w, h, { simplifiedOutliers: 1 as unknown as boolean }),
    TypeError,
  );
  const huge = Float32Array.from(w.data);
  // Off any grid of row 3 and beyond float16's range: an outlier that cannot be stored.
  [huge[3 * 16 + 7], huge[3 * 16 + 8], huge[3 * 16 + 9]] = [1e6, -1e6, 3.3e5];
  await assert.rejects(
    () => spqr(tensor("f32", [8, 16], huge), h, { outlierThreshold: 0 }),
    /the outlier at row 3, column \d+ \(.+\) does not fit in float16/,
  );
  await assert.rejects(
    () =>
      obsSolve(w, h, {
        decider: { ...SPQR_DEFAULT_DECIDER, statisticGroupSize: 0 },
        backend: "cpu",
      }),
    /'statisticGroupSize' must be an integer/,
  );
});

/** ((q − v)/d)² summed over a row's values on the min–max grid of `fit` (−1 skips none). */
function rowError(v: number[], fit: number[], d: number, bits: number, skip: number): number {
  let lo = Math.min(...fit), hi = Math.max(...fit);
  if (lo === hi) [lo, hi] = [-1, 1];
  const maxq = 2 ** bits - 1, s = (hi - lo) / maxq, z = -lo / s;
  let e = 0;
  v.forEach((x, k) => {
    if (k === skip) return;
    const c = Math.min(maxq, Math.max(0, Math.round(x / s + z)));
    e += ((s * (c - z) - x) / d) ** 2;
  });
  return e;
}

/** Follows spqr()'s screening and outlier test by hand on one group of uncoupled inputs. */
async function followReference(backend: "cpu" | "webgpu"): Promise<void> {
  // H = I: U = I/√(1 + damp), so no error moves between columns and each row
  // of the one group can be followed by hand.
  const rows = 8, n = 16, bits = 3, damp = 0.01, tau = 0.2;
  const g = prng(31);
  const w = Array.from(
    { length: rows },
    (_, r) => Array.from({ length: n }, (_, c) => (c === r ? 0.3 : 0) + 0.02 * g.normal()),
  );
  const xtx = new Float64Array(n * n);
  for (let i = 0; i < n; i++) xtx[i * n + i] = 1;
  const q = await spqr(tensor("f32", [rows, n], Float32Array.from(w.flat())), {
    cols: n,
    count: 1,
    xtx,
  }, {
    bits,
    groupSize: n,
    statisticGroupSize: rows,
    outlierThreshold: tau,
    dampRatio: damp,
    backend, // followed in float64 below
  });
  const d = 1 / Math.sqrt(1 + damp);
  let typical = 0;
  for (let c = 0; c < n; c++) {
    const col = w.map((row) => Math.fround(row[c]!));
    const mean = col.reduce((a, b) => a + b, 0) / rows;
    typical += col.reduce((a, b) => a + (b - mean) ** 2, 0) / (rows - 1) / (d * d) / n;
  }
  const threshold = tau * typical;
  assertClose(q.stats.outlierThreshold, threshold, { rtol: 1e-5 });
  // Screening: a weight is set aside when leaving it out of the fit lowers the error by more.
  const scales: number[] = [], zeros: number[] = [];
  for (const row of w) {
    const v = row.map(Math.fround);
    const base = rowError(v, v, d, bits, -1);
    const likely = v.map((_, j) =>
      base - rowError(v, v.filter((_, k) => k !== j), d, bits, j) > threshold
    );
    const kept = v.filter((_, k) => !likely[k]);
    const mean = kept.reduce((a, b) => a + b, 0) / Math.max(kept.length, 1);
    const fit = v.map((x, k) => (likely[k] ? mean : x));
    let lo = Math.min(...fit), hi = Math.max(...fit);
    if (lo === hi) [lo, hi] = [-1, 1];
    scales.push((hi - lo) / (2 ** bits - 1));
    zeros.push(-lo / scales.at(-1)!);
  }
  // The statistics the quantizer fitted, before their second level, round to the decoded ones.
  const decodedScales = decodeSpqrStatistic(q.scales, rows, rows);
  const decodedZeros = decodeSpqrStatistic(q.zeros, rows, rows);
  const step = (a: number[]) => (Math.max(...a) - Math.min(...a)) / 7;
  for (let r = 0; r < rows; r++) {
    assert(Math.abs(decodedScales[r]! - scales[r]!) <= step(scales) / 2 + 1e-3 * scales[r]!);
    assert(Math.abs(decodedZeros[r]! - zeros[r]!) <= step(zeros) / 2 + 1e-3 * Math.abs(zeros[r]!));
  }
  // Outliers: exactly the weights whose error on the decoded grid exceeds the threshold.
  const deq = dequantize(q).data;
  for (let r = 0; r < rows; r++) {
    const s = decodedScales[r]!, z = decodedZeros[r]!;
    const cs = Array.from(
      q.outliers.columns.subarray(q.outliers.rowStart[r]!, q.outliers.rowStart[r + 1]!),
    );
    for (let c = 0; c < n; c++) {
      const x = Math.fround(w[r]![c]!);
      const code = Math.min(7, Math.max(0, Math.round(x / s + z)));
      const e = ((x - s * (code - z)) / d) ** 2;
      assert.equal(
        cs.includes(c),
        e > threshold,
        `(${r}, ${c}): error ${e}, threshold ${threshold}`,
      );
      assertClose(deq[r * n + c]!, cs.includes(c) ? Math.f16round(x) : s * (code - z), {
        atol: 1e-6,
      });
    }
    assert(cs.includes(r), `the planted weight (${r}, ${r}) is an outlier`);
  }
}

Deno.test("spqr()'s leave-one-out screening and outlier test follow the reference on one group with uncoupled inputs", async () => {
  await followReference("cpu");
});

Deno.test("spqr()'s screening and outlier test follow the reference on the GPU too", async () => {
  if (await testGpu()) await followReference("webgpu");
});
