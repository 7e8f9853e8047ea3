import assert from "node:assert/strict";
import { gptq } from "../../quantizers/gptq.ts";
import { sparsegpt } from "../../pruners/sparsegpt.ts";
import { type ObsDecider, obsSolve } from "../../hessian/obs.ts";
import type { Hessian } from "../../hessian/hessian.ts";
import { tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { relError, testGpu } from "./_gpu.ts";

const rows = 48, n = 96;

/** Correlated inputs (low rank plus noise, a few outlier channels) and their Hessian. */
function problem(seed: number): { w: Float32Array; h: Hessian } {
  const rng = prng(seed);
  const tokens = 256, rank = 8;
  const basis = Float64Array.from({ length: rank * n }, () => rng.normal());
  const x = new Float64Array(tokens * n);
  for (let t = 0; t < tokens; t++) {
    const z = Array.from({ length: rank }, () => rng.normal());
    for (let j = 0; j < n; j++) {
      let v = 0.3 * rng.normal();
      for (let k = 0; k < rank; k++) v += z[k]! * basis[k * n + j]!;
      x[t * n + j] = j % 17 === 3 ? 6 * v : v;
    }
  }
  const xtx = new Float64Array(n * n);
  for (let t = 0; t < tokens; t++) {
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        xtx[i * n + j] = xtx[i * n + j]! + x[t * n + i]! * x[t * n + j]! / tokens;
      }
    }
  }
  const w = Float32Array.from({ length: rows * n }, () => rng.normal());
  return { w, h: { cols: n, count: tokens, xtx } };
}

const cases: { name: string; decider: ObsDecider; blockSize: number; actOrder?: boolean }[] = [
  {
    name: "GPTQ 4-bit groups of 16 fitted in the loop",
    decider: { kind: "grid", grid: { bits: 4, groupSize: 16 } },
    blockSize: 32,
  },
  {
    name: "GPTQ 3-bit symmetric per channel",
    decider: { kind: "grid", grid: { bits: 3, symmetric: true } },
    blockSize: 32,
  },
  {
    name: "GPTQ 2-bit groups of 48 with the MSE search",
    decider: { kind: "grid", grid: { bits: 2, groupSize: 48, mse: true } },
    blockSize: 32,
  },
  {
    name: "GPTQ 4-bit act-order with a dead input column",
    decider: { kind: "grid", grid: { bits: 4, groupSize: 32 } },
    blockSize: 32,
    actOrder: true,
  },
  {
    name: "SparseGPT 50% unstructured",
    decider: { kind: "prune", structure: { kind: "unstructured", sparsity: 0.5 } },
    blockSize: 32,
  },
  {
    name: "SparseGPT 2:4",
    decider: { kind: "prune", structure: { kind: "nm", n: 2, m: 4 } },
    blockSize: 32,
  },
  {
    name: "joint 4:8 + 4-bit groups of 32",
    decider: {
      kind: "prune+grid",
      structure: { kind: "nm", n: 4, m: 8 },
      grid: { bits: 4, groupSize: 32 },
    },
    blockSize: 32,
  },
];

for (const c of cases) {
  Deno.test(`GPU OBS loop gives the CPU solver's result: ${c.name}`, async () => {
    const gpu = await testGpu();
    if (!gpu) return;
    const { w, h } = problem(7);
    if (c.actOrder) { for (let j = 0; j < n; j++) h.xtx[j * n + 40] = h.xtx[40 * n + j] = 0; }
    const opts = { decider: c.decider, blockSize: c.blockSize, actOrder: c.actOrder ?? false };
    const weight = tensor("f32", [rows, n], w);
    const cpu = await obsSolve(weight, h, { ...opts, backend: "cpu" });
    const res = await obsSolve(weight, h, { ...opts, backend: "webgpu" });
    assert.equal(res.stats.deadColumns, cpu.stats.deadColumns);
    assert.deepEqual(res.perm, cpu.perm);
    // Weights and loss to float32 tolerance (U is float32 on the GPU).
    const err = relError(res.weight.data, cpu.weight.data);
    assert.ok(err < 2e-3, `weights: relative error ${err}`);
    assert.ok(
      Math.abs(res.stats.obsLoss - cpu.stats.obsLoss) <= 2e-3 * cpu.stats.obsLoss,
      `loss ${res.stats.obsLoss} vs ${cpu.stats.obsLoss}`,
    );
    if (cpu.codes) {
      let same = 0;
      for (let i = 0; i < cpu.codes.length; i++) if (res.codes![i] === cpu.codes[i]) same++;
      assert.ok(
        same >= 0.995 * cpu.codes.length,
        `codes: ${cpu.codes.length - same} differ (near-ties)`,
      );
      assert.ok(relError(res.scales!, cpu.scales!) < 1e-3, "scales");
      assert.deepEqual(res.gIdx, cpu.gIdx);
    }
    if (cpu.pruned) {
      let same = 0, count = 0, countCpu = 0;
      for (let i = 0; i < cpu.pruned.length; i++) {
        if (res.pruned![i] === cpu.pruned[i]) same++;
        count += res.pruned![i]!;
        countCpu += cpu.pruned[i]!;
        if (res.pruned![i]) assert.equal(res.weight.data[i], 0);
      }
      assert.equal(count, countCpu, "exactly the same number of weights pruned");
      assert.ok(same >= 0.995 * cpu.pruned.length, `masks: ${cpu.pruned.length - same} differ`);
      // The keep-mask, unpacked directly or computed from the pruned one.
      assert.equal(res.prunedCount, count);
      const complement = res.pruned!.map((b) => 1 - b);
      assert.deepEqual(res.kept, complement);
      const keep = await obsSolve(weight, h, { ...opts, backend: "webgpu", mask: "kept" });
      assert.equal(keep.prunedCount, count);
      assert.deepEqual(keep.kept, complement);
      assert.deepEqual(keep.pruned, res.pruned);
    }
  });
}

Deno.test("gptq() and sparsegpt() accept backend and agree across backends", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const { w, h } = problem(9);
  const weight = tensor("f32", [rows, n], w);
  const qc = await gptq(weight, h, { bits: 4, groupSize: 32, backend: "cpu" });
  const qg = await gptq(weight, h, { bits: 4, groupSize: 32, backend: "webgpu" });
  let same = 0;
  for (let i = 0; i < qc.codes.length; i++) if (qc.codes[i] === qg.codes[i]) same++;
  assert.ok(same >= 0.995 * qc.codes.length, `${qc.codes.length - same} codes differ`);
  const pc = await sparsegpt(weight, h, { structure: { kind: "nm", n: 2, m: 4 }, backend: "cpu" });
  const pg = await sparsegpt(weight, h, {
    structure: { kind: "nm", n: 2, m: 4 },
    backend: "webgpu",
  });
  assert.ok(relError(pg.weight.data, pc.weight.data) < 2e-3);
  await assert.rejects(
    () => gptq(weight, h, { bits: 4, backend: "metal" as "cpu" }),
    RangeError,
  );
});

Deno.test("the GPU path rejects a non-finite value found only in the upper triangle of H, as the CPU path does", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const { w, h } = problem(11);
  const weight = tensor("f32", [rows, n], w);
  const decider: ObsDecider = { kind: "grid", grid: { bits: 4, groupSize: 32 } };
  const error = async (xtx: Float64Array, backend: "cpu" | "webgpu") => {
    try {
      await obsSolve(weight, { ...h, xtx }, { decider, backend, blockSize: 32 });
    } catch (e) {
      return e;
    }
    return null;
  };
  // The solve reads only the lower triangle; the upper one (row < column) holds the bad value.
  for (const [i, j, value] of [[4, 9, NaN], [0, n - 1, -Infinity], [n - 2, n - 1, Infinity]]) {
    const xtx = h.xtx.slice();
    xtx[i! * n + j!] = value!;
    const cpu = await error(xtx, "cpu");
    assert.ok(cpu instanceof RangeError, String(cpu));
    assert.equal(
      cpu.message,
      `Cannot run the OBS solver as the Hessian must be finite: element ${i! * n + j!} is ${value}`,
    );
    const webgpu = await error(xtx, "webgpu");
    assert.ok(webgpu instanceof RangeError, String(webgpu));
    assert.equal(webgpu.message, cpu.message);
  }
  // A NaN in W as well: both name W first.
  const xtx = h.xtx.slice();
  xtx[4 * n + 9] = NaN;
  const nanW = w.slice();
  nanW[3 * n + 5] = NaN;
  for (const backend of ["cpu", "webgpu"] as const) {
    await assert.rejects(
      () => obsSolve(tensor("f32", [rows, n], nanW), { ...h, xtx }, { decider, backend }),
      (e: unknown) =>
        e instanceof RangeError && /'weight' must be finite: element 293 /.test(e.message),
    );
  }
});

Deno.test("the GPU path rejects non-finite inputs with the CPU path's errors", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const { w, h } = problem(10);
  const decider: ObsDecider = { kind: "prune", structure: { kind: "nm", n: 2, m: 4 } };
  const message = async (weight: Float32Array, hess: Hessian, backend: "cpu" | "webgpu") => {
    try {
      await obsSolve(tensor("f32", [rows, n], weight), hess, { decider, backend });
    } catch (e) {
      assert.ok(e instanceof RangeError, String(e));
      return e.message;
    }
    return "no error";
  };
  // NaN in W; infinity in H (both triangles); NaN in W in a dead column.
  const nanW = w.slice();
  nanW[5 * n + 7] = NaN;
  const infH = h.xtx.slice();
  infH[9 * n + 4] = infH[4 * n + 9] = Infinity;
  const dead = h.xtx.slice();
  for (let k = 0; k < n; k++) dead[3 * n + k] = dead[k * n + 3] = 0;
  const nanDeadW = w.slice();
  nanDeadW[2 * n + 3] = NaN;
  const inputs: [Float32Array, Hessian][] = [
    [nanW, h],
    [w, { ...h, xtx: infH }],
    [nanDeadW, { ...h, xtx: dead }],
  ];
  for (const [weight, hess] of inputs) {
    const cpu = await message(weight, hess, "cpu");
    assert.match(cpu, /must be finite/);
    assert.equal(await message(weight, hess, "webgpu"), cpu);
  }
  // Finite in float64 but beyond the float32 range of the GPU path.
  const huge = h.xtx.slice();
  huge[9 * n + 4] = huge[4 * n + 9] = 1e39;
  assert.match(await message(w, { ...h, xtx: huge }, "webgpu"), /beyond the float32 range/);
  // sparsegpt() keeps its own TypeError for non-finite weights on either backend.
  for (const backend of ["cpu", "webgpu"] as const) {
    await assert.rejects(
      () =>
        sparsegpt(tensor("f32", [rows, n], nanW), h, {
          structure: { kind: "nm", n: 2, m: 4 },
          backend,
        }),
      (e: unknown) => e instanceof TypeError && /holds NaN at \[5, 7\]/.test(String(e)),
    );
  }
});
