/**
 * Shared pieces of the WebGPU benchmark scripts: the median, the GPU to run
 * on (the script exits when there is none), and the PyTorch baselines that a
 * Python script beside them measures in the same call. Uses the Deno
 * namespace (subprocess, exit).
 *
 * @module
 */

import {
  acquireGpu,
  cachedPipeline,
  foldGroups,
  type Gpu,
  GpuBatch,
} from "../../kernels/backend.ts";
import { prng } from "../../core/prng.ts";

/**
 * The median (the upper one for an even count).
 *
 * @param xs Values (not modified).
 * @returns The median.
 */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/**
 * The GPU to benchmark, its adapter printed; exits the process (status 0)
 * when there is no WebGPU adapter.
 *
 * @returns The GPU.
 */
export async function benchGpu(): Promise<Gpu> {
  const gpu = await acquireGpu();
  if (gpu === null) {
    console.log("no WebGPU adapter: nothing to benchmark");
    Deno.exit(0);
  }
  console.log(`adapter: ${gpu.description}; f16 ${gpu.f16}; timestamps ${gpu.timestamps}`);
  return gpu;
}

/**
 * Runs `python3 <script> ...args` (a script in tests/bench) and parses the
 * last line of its output as JSON.
 *
 * @param script File name of the script in tests/bench.
 * @param args Its arguments.
 * @returns The parsed object, or null when the script fails (the reason printed).
 */
export async function pythonBaselines<T>(script: string, args: string[] = []): Promise<T | null> {
  try {
    const here = new URL(`./${script}`, import.meta.url).pathname;
    const out = await new Deno.Command("python3", { args: [here, ...args], stderr: "inherit" })
      .output();
    if (!out.success) return null;
    return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
  } catch (e) {
    console.error(`no PyTorch baselines: ${e}`);
    return null;
  }
}

/**
 * Standard normal f32 values from a seeded generator.
 *
 * @param n How many.
 * @param seed Seed.
 * @returns The values.
 */
export function randnF32(n: number, seed: number): Float32Array {
  const rng = prng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal();
  return out;
}

/**
 * Median GPU seconds per recorded unit: `reps` submissions of `per` units
 * each, after one submission that compiles the pipelines (not counted).
 *
 * @param gpu The GPU.
 * @param record Records one unit of work into a batch.
 * @param per Units per submission.
 * @param reps Timed submissions.
 * @returns Seconds per unit.
 */
export async function gpuSecondsPerUnit(
  gpu: Gpu,
  record: (batch: GpuBatch) => void,
  per = 10,
  reps = 5,
): Promise<number> {
  const times: number[] = [];
  for (let r = 0; r <= reps; r++) {
    const batch = new GpuBatch(gpu);
    for (let i = 0; i < per; i++) record(batch);
    const { gpuSeconds } = await batch.submit();
    if (r > 0) times.push(gpuSeconds / per);
  }
  return median(times);
}

/**
 * Records a plain WGSL copy of `count` f32 values (a multiple of 4) from
 * `src` to `dst`: the same-run bandwidth check of the benchmarks.
 *
 * @param batch The batch.
 * @param src Source buffer.
 * @param dst Destination buffer.
 * @param count Values to copy.
 */
export function encodeBenchCopy(
  batch: GpuBatch,
  src: GPUBuffer,
  dst: GPUBuffer,
  count: number,
): void {
  const pipe = cachedPipeline(batch.gpu, "bench-copy", () => `
@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> b: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let i = g.x + g.y * nw.x * 256u;
  if (i < arrayLength(&a)) { b[i] = a[i]; }
}`);
  batch.dispatch(pipe, [src, dst], foldGroups(batch.gpu, Math.ceil(count / 4 / 256)));
}
