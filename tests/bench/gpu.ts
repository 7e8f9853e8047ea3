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

import {
  acquireGpu,
  type Gpu,
  GpuBatch,
  storageBuffer,
  uploadBuffer,
} from "../../kernels/backend.ts";
import { encodeHessian } from "../../kernels/hessian_kernel.ts";
import { prng } from "../../core/prng.ts";

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
const rows: Row[] = [];

function randn(n: number, seed: number): Float32Array {
  const rng = prng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal();
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function baselines(): Promise<Record<string, number | string> | null> {
  if (small) return null;
  try {
    const here = new URL("./gpu_baselines.py", import.meta.url).pathname;
    const out = await new Deno.Command("python3", { args: [here], stderr: "inherit" }).output();
    if (!out.success) return null;
    const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop()!;
    return JSON.parse(text);
  } catch (e) {
    console.error(`no PyTorch baselines: ${e}`);
    return null;
  }
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
  const x = uploadBuffer(gpu, randn(tokens * cols, 1));
  const out = storageBuffer(gpu, cols * cols * 4);
  const flops = 2 * tokens * cols * cols;
  const t = await timeBatches(
    gpu,
    5,
    (b) => encodeHessian(b, x, tokens, cols, out, { inputs: "f32" }, 0),
  );
  const ours = flops / t.gpu / 1e9;
  const theirs = base ? Number(base.xtx_gflops) : NaN;
  rows.push({
    what: `Hessian XᵀX [${tokens}, ${cols}] f32 (GFLOP/s, 2·t·c²)`,
    ours: `${ours.toFixed(0)} (GPU ${(t.gpu * 1e3).toFixed(2)} ms, wall ${
      (t.wall * 1e3).toFixed(1)
    } ms)`,
    baseline: base ? `${theirs.toFixed(0)} (torch X.T@X, TF32 off)` : "n/a",
    ratio: base ? `${((100 * ours) / theirs).toFixed(0)}%` : "n/a",
    goal: "≥ 25%",
  });
  if (gpu.f16) {
    const xh = uploadBuffer(gpu, Float16Array.from(randn(tokens * cols, 2)));
    const th = await timeBatches(
      gpu,
      5,
      (b) => encodeHessian(b, xh, tokens, cols, out, { inputs: "f16" }, 0),
    );
    const oursH = flops / th.gpu / 1e9;
    rows.push({
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

const gpu = await acquireGpu();
if (gpu === null) {
  console.log("no WebGPU adapter: nothing to benchmark");
  Deno.exit(0);
}
console.log(`adapter: ${gpu.description}; f16 ${gpu.f16}; timestamps ${gpu.timestamps}`);
console.log(
  `limits: maxStorageBufferBindingSize ${gpu.limits.maxStorageBufferBindingSize}, ` +
    `maxComputeWorkgroupStorageSize ${gpu.limits.maxComputeWorkgroupStorageSize}`,
);
const base = await baselines();
if (base) console.log(`PyTorch baselines: ${JSON.stringify(base)}`);
if (sections.has("hessian")) await benchHessian(gpu, base);

const headers: Row = {
  what: "benchmark",
  ours: "ours",
  baseline: "baseline",
  ratio: "ratio",
  goal: "goal",
};
const widths = (Object.keys(headers) as (keyof Row)[]).map((k) =>
  Math.max(headers[k].length, ...rows.map((r) => r[k].length))
);
const line = (r: Row) =>
  "| " + (Object.keys(headers) as (keyof Row)[]).map((k, i) =>
    r[k].padEnd(widths[i]!)
  ).join(" | ") + " |";
console.log(line(headers));
console.log("|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|");
for (const r of rows) console.log(line(r));
