import assert from "node:assert/strict";
import { type Tensor, tensor } from "../../core/tensor.ts";
import { type Hessian, hessian } from "../../hessian/hessian.ts";
import { layerError } from "../../hessian/layer_error.ts";
import { obsSolve } from "../../hessian/obs.ts";
import { spqr, type SpqrOptions } from "../../quantizers/spqr.ts";
import type { SpqrWeight } from "../../quantizers/spqr_weight.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { correlatedInputs, randomWeight } from "./_correlated.ts";
import { SPQR_DEFAULT_DECIDER } from "./_spqr_defaults.ts";
import { testGpu } from "../kernels/_gpu.ts";
import { assertClose } from "../_helpers.ts";

const rows = 64, cols = 96;

function problem(seed: number): { w: Tensor<"f32">; h: Hessian } {
  return {
    w: randomWeight(rows, cols, seed),
    h: hessian(correlatedInputs(4 * cols, cols, seed + 1)),
  };
}

/** 1 where a weight is an outlier [rows, cols]. */
function outlierMask(q: SpqrWeight): Uint8Array {
  const [r, c] = q.shape;
  const m = new Uint8Array(r * c);
  for (let i = 0; i < r; i++) {
    for (let e = q.outliers.rowStart[i]!; e < q.outliers.rowStart[i + 1]!; e++) {
      m[i * c + q.outliers.columns[e]!] = 1;
    }
  }
  return m;
}

/** How the GPU's result compares with the CPU's. */
function compare(
  w: Tensor<"f32">,
  h: Hessian,
  cpu: SpqrWeight,
  gpu: SpqrWeight,
): { codes: number; outliers: number; error: number; threshold: number } {
  let codes = 0, outliers = 0;
  const oc = outlierMask(cpu), og = outlierMask(gpu);
  for (let i = 0; i < rows * cols; i++) {
    if (cpu.codes[i] === gpu.codes[i]) codes++;
    if (oc[i] === og[i]) outliers++;
  }
  const ec = layerError(w, dequantize(cpu), h), eg = layerError(w, dequantize(gpu), h);
  const tc = cpu.stats.outlierThreshold, tg = gpu.stats.outlierThreshold;
  return {
    codes: codes / (rows * cols),
    outliers: outliers / (rows * cols),
    error: Math.abs(eg - ec) / ec,
    threshold: tc === tg ? 0 : Math.abs(tg - tc) / tc,
  };
}

Deno.test('spqr() and the OBS solver\'s spqr decider take backend "webgpu" (no longer refused)', async () => {
  if (!await testGpu()) return;
  const w = randomWeight(16, 32, 5), h = hessian(correlatedInputs(128, 32, 6));
  const q = await spqr(w, h, { backend: "webgpu" });
  assert.equal(q.kind, "spqr");
  assert.equal(q.codes.length, 16 * 32);
  const res = await obsSolve(w, h, {
    decider: SPQR_DEFAULT_DECIDER,
    backend: "webgpu",
  });
  // The GPU path reports GPU seconds (the CPU path has none).
  assert(res.stats.gpuSeconds !== undefined && res.statistics !== undefined);
});

Deno.test("spqr() on the GPU gives the CPU's codes, outliers and layer error on 12 random correlated layers", async () => {
  if (!await testGpu()) return;
  // Float32 on the GPU (its factor U, the screening's sums) against float64
  // on the CPU: a rare near-tie of a code falls the other way, and since the
  // second level couples the 16 rows of a run, one flip can move the later
  // groups of its run (one layer of these 12: 96.6% of codes, 2.0% error;
  // 10 layers identical on the software adapter).
  const seeds = Array.from({ length: 12 }, (_, i) => i + 1);
  let codes = 0, outliers = 0, errorSum = 0, within1 = 0;
  for (const seed of seeds) {
    const { w, h } = problem(seed);
    const cpu = await spqr(w, h, { backend: "cpu" });
    const gpu = await spqr(w, h, { backend: "webgpu" });
    assert.equal(gpu.kind, "spqr");
    assert.deepEqual(gpu.perm, cpu.perm, `seed ${seed}: act-order`);
    const c = compare(w, h, cpu, gpu);
    assert(c.codes >= 0.96, `seed ${seed}: ${c.codes} of the codes agree`);
    assert(c.outliers >= 0.995, `seed ${seed}: ${c.outliers} of the outlier positions agree`);
    assert(c.error <= 0.025, `seed ${seed}: layer errors differ by ${c.error}`);
    assert(c.threshold <= 1e-5, `seed ${seed}: thresholds differ by ${c.threshold}`);
    const count = (q: SpqrWeight) => q.stats.outliers;
    assert(Math.abs(count(gpu) - count(cpu)) <= 0.02 * count(cpu), `seed ${seed}: outlier counts`);
    codes += c.codes / seeds.length;
    outliers += c.outliers / seeds.length;
    errorSum += c.error / seeds.length;
    if (c.error <= 0.01) within1++;
  }
  assert(codes >= 0.995, `${codes} of all codes agree`);
  assert(outliers >= 0.999, `${outliers} of all outlier positions agree`);
  assert(errorSum <= 0.005, `the layer errors differ by ${errorSum} on average`);
  assert(within1 >= 10, `${within1} of 12 layer errors agree within 1%`);
});

Deno.test("spqr() on the GPU follows the CPU with its options: screening off, no outliers, groups across blocks, other widths", async () => {
  if (!await testGpu()) return;
  const { w, h } = problem(2);
  const variants: SpqrOptions[] = [
    { simplifiedOutliers: true },
    { outlierThreshold: Infinity },
    // Groups of 12 span blocks of 40; runs of 10 rows leave a short last run.
    { actOrder: false, blockSize: 40, groupSize: 12, statisticGroupSize: 10 },
    { bits: 4, scaleBits: 2, zeroBits: 5, outlierThreshold: 0.5 },
    { bits: 2, groupSize: 32, statisticGroupSize: 64, outlierThreshold: 0.1 },
  ];
  for (const options of variants) {
    const what = JSON.stringify(options);
    const cpu = await spqr(w, h, { ...options, backend: "cpu" });
    const gpu = await spqr(w, h, { ...options, backend: "webgpu" });
    const c = compare(w, h, cpu, gpu);
    assert(c.codes >= 0.99, `${what}: ${c.codes} of the codes agree`);
    assert(c.outliers >= 0.995, `${what}: ${c.outliers} of the outlier positions agree`);
    assert(c.error <= 0.01, `${what}: layer errors differ by ${c.error}`);
    // The same count of bits, but for the outliers each side keeps.
    const extra = 32 * (gpu.stats.outliers - cpu.stats.outliers) / (rows * cols);
    assertClose(gpu.stats.bitsPerWeight, cpu.stats.bitsPerWeight + extra, { atol: 1e-12 });
    if (options.outlierThreshold === Infinity) {
      assert.equal(gpu.stats.outliers, 0, what);
      assert.equal(gpu.stats.outlierThreshold, Infinity, what);
    }
    if (options.actOrder === false) assert.equal(gpu.perm, undefined, what);
  }
});

Deno.test("spqr() on the GPU treats dead input columns as the CPU does (zeroed before the loop and in the typical error)", async () => {
  if (!await testGpu()) return;
  const { w, h } = problem(3);
  // Inputs 5 and 40 never fire: their weights are zeroed before the loop, and
  // the typical error sees zeros there.
  const xtx = Float64Array.from(h.xtx);
  for (const dead of [5, 40]) {
    for (let j = 0; j < cols; j++) xtx[dead * cols + j] = xtx[j * cols + dead] = 0;
  }
  const hd = { ...h, xtx };
  const cpu = await spqr(w, hd, { backend: "cpu" });
  const gpu = await spqr(w, hd, { backend: "webgpu" });
  assert.equal(gpu.stats.deadColumns, 2);
  const c = compare(w, hd, cpu, gpu);
  assert(c.codes >= 0.99 && c.outliers >= 0.995, JSON.stringify(c));
  assert(c.threshold <= 1e-5, `thresholds differ by ${c.threshold}`);
  // A dead weight (0 on entry) lands on its grid's point nearest 0, as on the CPU.
  const dg = dequantize(gpu).data, dc = dequantize(cpu).data;
  for (let r = 0; r < rows; r++) {
    for (const dead of [5, 40]) assert.equal(dg[r * cols + dead], dc[r * cols + dead]);
  }
});

Deno.test("spqr()'s GPU stored form dequantizes bit for bit to the GPU loop's Ŵ", async () => {
  if (!await testGpu()) return;
  const { w, h } = problem(1);
  const decider = SPQR_DEFAULT_DECIDER;
  const q = await spqr(w, h, { backend: "webgpu" });
  const loop = await obsSolve(w, h, { decider, actOrder: true, backend: "webgpu" });
  // The same solve: the loop's own codes and outliers.
  assert.deepEqual(q.codes, loop.codes);
  assert.deepEqual(outlierMask(q), loop.outliers);
  assert(q.stats.outliers > 0);
  const dq = dequantize(q).data as Float32Array, wh = loop.weight.data;
  let differ = 0;
  for (let i = 0; i < dq.length; i++) if (!Object.is(dq[i], wh[i])) differ++;
  assert.equal(differ, 0, `${differ} weights differ`);
  // Outliers are float16 values; the rest are points of their decoded grids.
  for (const v of q.outliers.values) assert.equal(v, Math.f16round(v));
});

Deno.test("spqr() with backend webgpu refuses bad input with the CPU path's errors", async () => {
  if (!await testGpu()) return;
  const w = randomWeight(8, 16, 29), h = hessian(correlatedInputs(64, 16, 30));
  const webgpu = { backend: "webgpu" } as const;
  await assert.rejects(
    () => spqr(w, hessian(correlatedInputs(32, 12, 1)), webgpu),
    /Hessian has 12 columns/,
  );
  const bad = Float32Array.from(w.data);
  bad[5] = NaN;
  await assert.rejects(
    () => spqr(tensor("f32", [8, 16], bad), h, webgpu),
    /'weight' must be finite: element 5 is NaN/,
  );
  for (
    const [options, message] of [
      [{ bits: 0 }, /'bits' must be an integer in \[1, 8\]: current value is 0/],
      [{ statisticGroupSize: 0 }, /'statisticGroupSize'/],
      [{ outlierThreshold: -1 }, /'outlierThreshold' must be a number >= 0/],
    ] as const
  ) {
    await assert.rejects(() => spqr(w, h, { ...options, ...webgpu }), (e: Error) => {
      assert(e instanceof RangeError && message.test(e.message), e.message);
      return true;
    });
  }
  const huge = Float32Array.from(w.data);
  // Off any grid of row 3 and beyond float16's range: an outlier that cannot be stored.
  [huge[3 * 16 + 7], huge[3 * 16 + 8], huge[3 * 16 + 9]] = [1e6, -1e6, 3.3e5];
  await assert.rejects(
    () => spqr(tensor("f32", [8, 16], huge), h, { outlierThreshold: 0, ...webgpu }),
    (e: Error) =>
      e instanceof RangeError &&
      /the outlier at row 3, column (7|8|9) does not fit in float16/.test(e.message),
  );
});
