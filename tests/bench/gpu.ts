/**
 * GPU benchmark (`deno task bench:gpu`): the solver kernels on WebGPU, timed
 * with timestamp queries (GPU time) and wall clocks, against PyTorch
 * baselines measured in the same call (tests/bench/gpu_baselines.py, when
 * `python3` with torch and CUDA exists). Prints one table.
 *
 * Arguments: section names to run (default all): hessian gptq sparsegpt fwht;
 * `--small` runs tiny sizes (for the software adapter).
 *
 * Uses the Deno namespace (subprocess, arguments).
 *
 * @module
 */

import { type Gpu, GpuBatch, storageBuffer, uploadBuffer } from "../../kernels/backend.ts";
import { encodeHessian, xtxGpu } from "../../kernels/hessian_kernel.ts";
import {
  butterflySpec,
  encodeButterfly,
  encodeFwht,
  prepareFwht,
} from "../../kernels/fwht_kernel.ts";
import { fwhtPlan } from "../../core/fwht.ts";
import type { Hessian } from "../../hessian/hessian.ts";
import { layerError } from "../../hessian/layer_error.ts";
import { gptq } from "../../quantizers/gptq.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { sparsegpt } from "../../pruners/sparsegpt.ts";
import { type Tensor, tensor } from "../../core/tensor.ts";
import { benchGpu, encodeBenchCopy, median, pythonBaselines, randnF32 } from "./_bench.ts";
import { pagingOptions } from "../../kernels/_paged_arrays.ts";

const args = Deno.args.filter((a) => !a.startsWith("--"));
const small = Deno.args.includes("--small");
const sections = args.length > 0
  ? new Set(args)
  : new Set(["hessian", "gptq", "sparsegpt", "fwht"]);

interface Row {
  what: string;
  ours: string;
  baseline: string;
  ratio: string;
  goal: string;
}
const rows_: Row[] = [];
/** Rows are printed as they come (a partial run still reports) and as one table at the end. */
function report(row: Row): void {
  rows_.push(row);
  console.log(`row: ${row.what} | ${row.ours} | ${row.baseline} | ${row.ratio}`);
}

function baselines(): Promise<Record<string, number | string> | null> {
  return small ? Promise.resolve(null) : pythonBaselines("gpu_baselines.py");
}

async function timeBatches(
  gpu: Gpu,
  reps: number,
  record: (batch: GpuBatch) => void,
): Promise<{ gpu: number; wall: number }> {
  const gpuTimes: number[] = [], wallTimes: number[] = [];
  for (let r = 0; r < reps + 1; r++) {
    const t0 = performance.now();
    const batch = new GpuBatch(gpu);
    record(batch);
    const { gpuSeconds } = await batch.submit();
    const wall = (performance.now() - t0) / 1e3;
    if (r > 0) { // the first one compiles pipelines
      gpuTimes.push(gpuSeconds);
      wallTimes.push(wall);
    }
  }
  return { gpu: median(gpuTimes), wall: median(wallTimes) };
}

async function benchHessian(gpu: Gpu, base: Record<string, number | string> | null): Promise<void> {
  const [tokens, cols] = small ? [256, 128] : [8192, 4096];
  const x = uploadBuffer(gpu, randnF32(tokens * cols, 1));
  const out = storageBuffer(gpu, cols * cols * 4);
  const flops = 2 * tokens * cols * cols;
  const t = await timeBatches(
    gpu,
    5,
    (b) => encodeHessian(b, x, tokens, cols, out, { inputs: "f32" }, 0),
  );
  const ours = flops / t.gpu / 1e9;
  const theirs = base ? Number(base.xtx_gflops) : NaN;
  report({
    what: `Hessian XᵀX [${tokens}, ${cols}] f32 (GFLOP/s, 2·t·c²)`,
    ours: `${ours.toFixed(0)} (GPU ${(t.gpu * 1e3).toFixed(2)} ms, wall ${
      (t.wall * 1e3).toFixed(1)
    } ms)`,
    baseline: base ? `${theirs.toFixed(0)} (torch X.T@X, TF32 off)` : "n/a",
    ratio: base ? `${((100 * ours) / theirs).toFixed(0)}%` : "n/a",
    goal: "≥ 25%",
  });
  if (gpu.f16) {
    const xh = uploadBuffer(gpu, Float16Array.from(randnF32(tokens * cols, 2)));
    const th = await timeBatches(
      gpu,
      5,
      (b) => encodeHessian(b, xh, tokens, cols, out, { inputs: "f16" }, 0),
    );
    const oursH = flops / th.gpu / 1e9;
    report({
      what: `Hessian XᵀX [${tokens}, ${cols}] f16 in, f32 acc (GFLOP/s)`,
      ours: `${oursH.toFixed(0)} (GPU ${(th.gpu * 1e3).toFixed(2)} ms)`,
      baseline: base ? `${theirs.toFixed(0)} (torch f32)` : "n/a",
      ratio: base ? `${((100 * oursH) / theirs).toFixed(0)}%` : "n/a",
      goal: "",
    });
    xh.destroy();
  }
  x.destroy();
  out.destroy();
}

const hessians = new Map<string, Hessian>();

async function layerHessian(gpu: Gpu, cols: number, seed: number): Promise<Hessian> {
  const key = `${cols}:${seed}`;
  const cached = hessians.get(key);
  if (cached) return cached;
  const tokens = small ? 2 * cols : 4096;
  // Correlated inputs: x = z + 0.5·(shifted z), with a few outlier channels.
  const z = randnF32(tokens * cols, seed);
  const x = new Float32Array(tokens * cols);
  for (let t = 0; t < tokens; t++) {
    for (let j = 0; j < cols; j++) {
      const v = z[t * cols + j]! + 0.5 * z[t * cols + ((j + 1) % cols)]!;
      x[t * cols + j] = j % 97 === 5 ? 8 * v : v;
    }
  }
  const { xtx } = await xtxGpu(gpu, tensor("f32", [tokens, cols], x));
  for (let i = 0; i < xtx.length; i++) xtx[i] = xtx[i]! / tokens;
  const h = { cols, count: tokens, xtx };
  hessians.set(key, h);
  return h;
}

const REFERENCE: Record<string, number[]> = {
  gptq: [0.88, 1.06, 2.77],
  sparsegpt: [0.62, 0.67, 1.69],
};

/** One layer through the public API: the new weights and the stats. */
async function solve(
  which: "gptq" | "sparsegpt",
  weight: Tensor<"f32">,
  h: Hessian,
  backend: "cpu" | "webgpu",
): Promise<{ approx: () => Tensor<"f32">; stats: Record<string, number | undefined> }> {
  if (which === "gptq") {
    const q = await gptq(weight, h, { bits: 4, groupSize: 128, backend });
    return { approx: () => dequantize(q), stats: q.stats };
  }
  const p = await sparsegpt(weight, h, {
    structure: { kind: "unstructured", sparsity: 0.5 },
    backend,
  });
  return { approx: () => p.weight as Tensor<"f32">, stats: p.stats };
}

async function benchSolver(gpu: Gpu, which: "gptq" | "sparsegpt"): Promise<void> {
  // `--paging=thread`: result pages mapped on this thread while the GPU works
  // (the default maps them on a worker thread).
  const paging = Deno.args.includes("--paging=thread") ? "thread" : "worker";
  pagingOptions.worker = paging === "worker";
  const label = paging === "worker" ? "" : ", pages mapped on this thread";
  // Same layer error as the CPU path, on a layer the CPU solves quickly.
  {
    const [rows, cols] = small ? [64, 256] : [1024, 1024];
    const h = await layerHessian(gpu, cols, 11);
    const weight = tensor("f32", [rows, cols], randnF32(rows * cols, 12));
    const cpu = await solve(which, weight, h, "cpu");
    const ours = await solve(which, weight, h, "webgpu");
    const eCpu = layerError(weight, cpu.approx(), h), eGpu = layerError(weight, ours.approx(), h);
    report({
      what: `${which} ${rows}×${cols}: layer error, WebGPU vs CPU path`,
      ours: eGpu.toExponential(5),
      baseline: `${eCpu.toExponential(5)} (CPU ${Number(cpu.stats.seconds).toFixed(2)} s)`,
      ratio: (eGpu / eCpu).toFixed(5),
      goal: "≈ 1",
    });
  }
  const shapes: [number, number][] = small
    ? [[64, 256], [128, 256], [64, 512]]
    : [[4096, 4096], [11008, 4096], [4096, 11008]];
  for (let s = 0; s < shapes.length; s++) {
    const [rows, cols] = shapes[s]!;
    const h = await layerHessian(gpu, cols, 100 + s);
    const weight = tensor("f32", [rows, cols], randnF32(rows * cols, 200 + s));
    await solve(which, weight, h, "webgpu"); // compiles the pipelines
    const runs: { wall: number; stats: Record<string, number | undefined> }[] = [];
    for (let rep = 0; rep < 3; rep++) {
      const t0 = performance.now();
      const { stats } = await solve(which, weight, h, "webgpu");
      runs.push({ wall: (performance.now() - t0) / 1e3, stats });
    }
    runs.sort((a, b) => a.wall - b.wall);
    const { wall, stats: st } = runs[1]!;
    const gpuS = median(runs.map((r) => Number(r.stats.gpuSeconds)));
    const f = (k: string) => Number(st[k]).toFixed(3);
    console.log(
      `${which} ${rows}×${cols}: median wall ${wall.toFixed(3)} s = setup ${
        f("setupSeconds")
      } + diag ${f("reverseSeconds")} + H upload ${f("uploadSeconds")} + factor encode ${
        f("factorEncodeSeconds")
      } + W upload ${f("wUploadSeconds")} + loop encode ${f("encodeSeconds")} + submit ${
        f("submitSeconds")
      } + wait ${f("waitSeconds")} (read-back copies ${f("readSeconds")}; GPU ${
        gpuS.toFixed(3)
      }: factor ${f("choleskySeconds")}, loop ${f("loopSeconds")}) + assemble ${
        f("assembleSeconds")
      } + wrapper ${(wall - Number(st.seconds)).toFixed(3)}`,
    );
    const ref = REFERENCE[which]![s]!;
    report({
      what: `${which} ${which === "gptq" ? "4-bit g128" : "50%"} ${rows}×${cols} (s${label})`,
      ours: `GPU ${gpuS.toFixed(3)}, wall ${wall.toFixed(3)}`,
      baseline: `${ref} (reference PyTorch, H100)`,
      ratio: `${(ref / gpuS).toFixed(1)}× (wall ${(ref / wall).toFixed(1)}×)`,
      goal: "≥ 2×",
    });
  }
}

async function benchFwht(gpu: Gpu, base: Record<string, number | string> | null): Promise<void> {
  const shapes: [number, number][] = small
    ? [[64, 1024], [64, 1376]]
    : [[4096, 4096], [4096, 11008], [4096, 14336], [4096, 16384]]; // the last two: rows split into passes
  for (const [rows, n] of shapes) {
    const prepared = prepareFwht(gpu, n);
    const x = uploadBuffer(gpu, randnF32(rows * n, 9));
    const scratch = storageBuffer(gpu, rows * n * 4);
    // Warm-up (PyTorch's timing loop runs right behind its other work): ~1 s of copies of
    // the same bytes right before timing, so that the GPU is out of its idle state even when
    // this section runs alone (on the H100, without it or after idle gaps the same kernels
    // measured 1.2-2x slower).
    for (let r = 0; r < (small ? 1 : 10); r++) {
      const b = new GpuBatch(gpu);
      for (let i = 0; i < 200; i++) encodeBenchCopy(b, x, scratch, rows * n);
      await b.submit();
    }
    // 10 back-to-back transforms per submission (orthonormal, so values stay
    // bounded), as PyTorch's timing loop keeps the GPU busy.
    const reps = 10;
    const t = await timeBatches(gpu, 5, (b) => {
      let cur = x, other = scratch;
      for (let r = 0; r < reps; r++) {
        const res = encodeFwht(b, prepared, cur, other, rows, true);
        if (res !== cur) [cur, other] = [other, cur];
      }
    });
    const perTransform = t.gpu / reps;
    const gbs = (2 * rows * n * 4) / perTransform / 1e9;
    const copyT = await timeBatches(gpu, 5, (b) => {
      for (let r = 0; r < reps; r++) encodeBenchCopy(b, x, scratch, rows * n);
    });
    const ownCopy = (2 * rows * n * 4) / (copyT.gpu / reps) / 1e9;
    const copy = base ? Number(base[`copy_${rows}x${n}_gbs`]) : NaN;
    report({
      what: `Hadamard [${rows}, ${n}] f32 (effective GB/s)`,
      ours: `${gbs.toFixed(0)} (GPU ${(perTransform * 1e3).toFixed(3)} ms; WGSL copy ${
        ownCopy.toFixed(0)
      })`,
      baseline: base ? `${copy.toFixed(0)} (torch copy)` : "n/a",
      ratio: base ? `${((100 * gbs) / copy).toFixed(0)}%` : "n/a",
      goal: n === 4096 || n === 11008 ? "≥ 40%" : "", // the sizes; the others split rows
    });
    const plan = fwhtPlan(n);
    if (plan.dense.length > 0 && n === 11008) {
      // The butterfly pass alone (the rest is the dense factors' pass).
      const spec = butterflySpec(gpu, n, plan.pow2);
      const tb = await timeBatches(gpu, 5, (b) => {
        let cur = x, other = scratch;
        for (let r = 0; r < reps; r++) {
          // Scaled by 1/√pow2 (orthonormal) so that the repeats keep the data bounded.
          const res = encodeButterfly(b, spec, cur, rows, 1 / Math.sqrt(plan.pow2), other);
          if (res !== cur) [cur, other] = [other, cur];
        }
      });
      const gbsB = (2 * rows * n * 4) / (tb.gpu / reps) / 1e9;
      report({
        what: `  its butterfly pass (${plan.pow2}-point, ${spec.kind} kernel)`,
        ours: `${gbsB.toFixed(0)} (GPU ${(tb.gpu / reps * 1e3).toFixed(3)} ms)`,
        baseline: base ? `${copy.toFixed(0)} (torch copy)` : "n/a",
        ratio: base ? `${((100 * gbsB) / copy).toFixed(0)}%` : "n/a",
        goal: "",
      });
    }
    x.destroy();
    scratch.destroy();
  }
}

const gpu = await benchGpu();
console.log(
  `limits: maxStorageBufferBindingSize ${gpu.limits.maxStorageBufferBindingSize}, ` +
    `maxComputeWorkgroupStorageSize ${gpu.limits.maxComputeWorkgroupStorageSize}`,
);
const base = await baselines();
if (base) console.log(`PyTorch baselines: ${JSON.stringify(base)}`);
if (sections.has("hessian")) await benchHessian(gpu, base);
if (sections.has("fwht")) await benchFwht(gpu, base);
if (sections.has("gptq")) await benchSolver(gpu, "gptq");
if (sections.has("sparsegpt")) await benchSolver(gpu, "sparsegpt");

const headers: Row = {
  what: "benchmark",
  ours: "ours",
  baseline: "baseline",
  ratio: "ratio",
  goal: "goal",
};
const widths = (Object.keys(headers) as (keyof Row)[]).map((k) =>
  Math.max(headers[k].length, ...rows_.map((r) => r[k].length))
);
const line = (r: Row) =>
  "| " + (Object.keys(headers) as (keyof Row)[]).map((k, i) =>
    r[k].padEnd(widths[i]!)
  ).join(" | ") + " |";
console.log(line(headers));
console.log("|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|");
for (const r of rows_) console.log(line(r));
