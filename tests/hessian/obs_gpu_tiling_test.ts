import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { hessian } from "../../hessian/hessian.ts";
import type { ObsDecider, ObsResult } from "../../hessian/obs.ts";
import { prepareObs } from "../../hessian/_obs_host.ts";
import { type ObsGpuProblem, obsSolveGpu } from "../../hessian/obs_gpu.ts";
import { testGpu } from "../kernels/_gpu.ts";

const n = 32;

function problem(
  w: Float32Array,
  rows: number,
  xtx: Float64Array,
  decider: ObsDecider,
  actOrder: boolean,
  maxBindingBytes?: number,
): ObsGpuProblem {
  const p = prepareObs(tensor("f32", [rows, n], w), xtx, rows, n, actOrder, undefined);
  return {
    rows,
    n,
    w: p.w,
    xtx,
    diag: p.diag,
    meanDiag: p.meanDiag,
    dampRatio: 0.01,
    maxDampingRetries: 2,
    decider,
    blockSize: 8,
    perm: p.perm,
    original: p.original,
    cleaned: p.cleaned,
    deadColumns: p.deadColumns,
    t0: performance.now(),
    maxBindingBytes,
  };
}

function same(tiled: ObsResult, whole: ObsResult, what: string): void {
  assert.deepEqual(tiled.weight.data, whole.weight.data, `${what}: weights`);
  assert.deepEqual(tiled.pruned, whole.pruned, `${what}: mask`);
  assert.deepEqual(tiled.codes, whole.codes, `${what}: codes`);
  assert.deepEqual(tiled.scales, whole.scales, `${what}: scales`);
  assert.deepEqual(tiled.zeros, whole.zeros, `${what}: zeros`);
  assert.equal(tiled.stats.obsLoss, whole.stats.obsLoss, `${what}: loss`);
  assert.deepEqual(tiled.outliers, whole.outliers, `${what}: outliers`);
  assert.deepEqual(tiled.statistics, whole.statistics, `${what}: statistics`);
}

/** SpQR 3-bit with the paper's 3-bit statistics: groups of 12 span blocks of 8. */
const SPQR: ObsDecider = {
  kind: "spqr",
  bits: 3,
  groupSize: 12,
  scaleBits: 3,
  zeroBits: 3,
  statisticGroupSize: 16,
  outlierThreshold: 0.2,
};

Deno.test("the GPU OBS solve in tiles of rows (a small binding limit) gives the untiled result", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(21);
  const x = tensor("f32", [96, n], Float32Array.from({ length: 96 * n }, () => rng.normal()));
  const { xtx } = hessian(x);
  const rows = 100; // tiles of 32, 32, 32 and 4 rows under a binding limit of n·n·4 bytes
  const w = Float32Array.from({ length: rows * n }, () => rng.normal());
  // Every row the same: equal scores in every tile, so the tie allowance
  // of the unstructured selection has to carry from tile to tile.
  const repeated = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) repeated.set(w.subarray(0, n), r * n);
  const cases: { name: string; w: Float32Array; decider: ObsDecider; actOrder: boolean }[] = [
    {
      name: "SparseGPT 50%",
      w,
      decider: { kind: "prune", structure: { kind: "unstructured", sparsity: 0.5 } },
      actOrder: false,
    },
    {
      name: "SparseGPT 37% with ties across tiles",
      w: repeated,
      decider: { kind: "prune", structure: { kind: "unstructured", sparsity: 0.37 } },
      actOrder: false,
    },
    {
      name: "GPTQ 4-bit groups of 16, act-order",
      w,
      decider: { kind: "grid", grid: { bits: 4, groupSize: 16 } },
      actOrder: true,
    },
    {
      name: "joint 2:4 + 3-bit per channel",
      w,
      decider: {
        kind: "prune+grid",
        structure: { kind: "nm", n: 2, m: 4 },
        grid: { bits: 3 },
      },
      actOrder: false,
    },
    // Tiles of 32 rows hold two runs of 16 statistics each (the last tile 4 rows, one short run).
    { name: "SpQR 3-bit groups of 12, act-order", w, decider: SPQR, actOrder: true },
  ];
  for (const c of cases) {
    const whole = await obsSolveGpu(gpu, problem(c.w, rows, xtx, c.decider, c.actOrder));
    const tiled = await obsSolveGpu(
      gpu,
      problem(c.w, rows, xtx, c.decider, c.actOrder, n * n * 4),
    );
    same(tiled, whole, c.name);
    if (c.decider.kind === "spqr") {
      const o = tiled.outliers!.reduce((a, b) => a + b, 0);
      assert(o > 0 && o < rows * n / 10, `${c.name}: ${o} outliers`);
    }
    if (c.decider.kind === "prune" && c.decider.structure.kind === "unstructured") {
      // Exactly ⌊sparsity·rows·width⌋ pruned per block of 8 columns.
      const k = Math.floor(c.decider.structure.sparsity * rows * 8);
      for (let b = 0; b < n; b += 8) {
        let count = 0;
        for (let r = 0; r < rows; r++) {
          for (let j = b; j < b + 8; j++) count += tiled.pruned![r * n + j]!;
        }
        assert.equal(count, k, `${c.name}: block ${b / 8}`);
      }
    }
  }
});

Deno.test("the GPU OBS solve names the limit and the size when the factor U exceeds one binding", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(22);
  const x = tensor("f32", [64, n], Float32Array.from({ length: 64 * n }, () => rng.normal()));
  const w = Float32Array.from({ length: 4 * n }, () => rng.normal());
  const decider: ObsDecider = { kind: "grid", grid: { bits: 4 } };
  await assert.rejects(
    () => obsSolveGpu(gpu, problem(w, 4, hessian(x).xtx, decider, false, n * n * 4 - 4)),
    (e: unknown) =>
      e instanceof RangeError && /U \[32, 32\] takes 4096 bytes/.test(e.message) &&
      /maxStorageBufferBindingSize\) of 4092 bytes/.test(e.message),
  );
});

Deno.test("the GPU SpQR solve refuses tiles of rows smaller than one run of the second level", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(23);
  const x = tensor("f32", [64, n], Float32Array.from({ length: 64 * n }, () => rng.normal()));
  const w = Float32Array.from({ length: 100 * n }, () => rng.normal());
  // Tiles of 32 rows, runs of 48.
  const decider: ObsDecider = { ...SPQR, statisticGroupSize: 48 } as ObsDecider;
  await assert.rejects(
    () => obsSolveGpu(gpu, problem(w, 100, hessian(x).xtx, decider, false, n * n * 4)),
    (e: unknown) =>
      e instanceof RangeError &&
      /'statisticGroupSize' \(48\) rows of W \[100, 32\]/.test(e.message),
  );
});
