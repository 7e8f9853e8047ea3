/**
 * Shared pieces of the WebGPU benchmark scripts: the median, the GPU to run
 * on (the script exits when there is none), and the PyTorch baselines that a
 * Python script beside them measures in the same call. Uses the Deno
 * namespace (subprocess, exit).
 *
 * @module
 */

import { acquireGpu, type Gpu } from "../../kernels/backend.ts";

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
