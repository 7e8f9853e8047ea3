/**
 * The whole compression run at real shapes: writes a random-weight bf16
 * folder at Llama-3.2-1B or Llama-3.1-8B shapes (or reuses one), then times
 * load → calibration forwards and Hessians → solves → propagation → write,
 * with random calibration tokens (128 × 2048 by default) and GPTQ 4-bit g128,
 * and reports seconds per phase, host peak RSS and the calibration runner's
 * GPU peak. The output folder is streamed (models/hf_stream.ts): each block is
 * written while the GPU works on the next, and `write` is what remains after
 * the pipeline.
 *
 *     deno task bench:pipeline [--shape=1b|8b] [--layers=N] [--samples=128] [--len=2048]
 *       [--dir=DIR] [--keep] [--no-write] [--dtype=f32|bf16|f16] [--backend=auto|webgpu|cpu]
 *       [--read=auto|memory|disk] [--no-prefetch]
 *       [--json] [--verbose]
 *
 * `--layers` keeps the first N blocks (a quicker run; per-block figures
 * scale). `--dtype` is the output's block linears (float32 by default, as
 * `deno task compress --format dense` writes them). Uses the file system; reads /proc (Linux).
 *
 * @module
 */

import { prng } from "../../core/prng.ts";
import type { Backend } from "../../kernels/backend.ts";
import { loadModel } from "../../models/causal_lm.ts";
import { openHfStreamWriter } from "../../models/hf_stream.ts";
import type { CompressedLinear } from "../../pipeline/compress_linear.ts";
import { compressModel } from "../../pipeline/compress_model.ts";
import { LLAMA_SHAPES, writeRandomLlama } from "../models/_random_checkpoint.ts";

function flag(name: string): string | undefined {
  return Deno.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}

function hwm(): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(Deno.readTextFileSync("/proc/self/status"));
  return m ? Number(m[1]) * 1024 : NaN;
}

const shapeName = (flag("shape") ?? "1b") as "1b" | "8b";
const base = LLAMA_SHAPES[shapeName];
if (!base) throw new RangeError(`--shape must be 1b or 8b: current value is ${flag("shape")}`);
const shape = { ...base, layers: Number(flag("layers") ?? base.layers) };
const samples = Number(flag("samples") ?? 128), len = Number(flag("len") ?? 2048);
const backend = (flag("backend") ?? "auto") as Backend;
const dir = flag("dir") ?? `/tmp/llmc-bench-${shapeName}-${shape.layers}`;
const log = (s: string) => console.error(`[${(performance.now() / 1000).toFixed(1)} s] ${s}`);

const t = { write: 0, load: 0, compress: 0, save: 0 };
let t0 = performance.now();
let bytes = 0;
try {
  await Deno.stat(`${dir}/config.json`);
  log(`reusing ${dir}`);
} catch {
  bytes = await writeRandomLlama(dir, shape);
  log(`wrote ${(bytes / 1e9).toFixed(2)} GB to ${dir}`);
}
t.write = (performance.now() - t0) / 1000;
const rssBefore = hwm();

t0 = performance.now();
const read = (flag("read") ?? "auto") as "auto" | "memory" | "disk";
const prefetch = !Deno.args.includes("--no-prefetch");
const lm = await loadModel(dir, { read });
t.load = (performance.now() - t0) / 1000;
log(`loaded in ${t.load.toFixed(1)} s`);

const rng = prng(0);
const calibration = Array.from(
  { length: samples },
  () => Array.from({ length: len }, () => rng.int(lm.config.vocabSize)),
);
// Where the solve phase goes: the solvers' own seconds (by their phases) and
// the rest of each linear's compression (dequantization, the layer error).
const solve: Record<string, number> = { linear: 0, solver: 0 };
function addSolveStats(m: CompressedLinear): void {
  const stats = (m.quantized as { stats?: Record<string, unknown> } | undefined)?.stats;
  if (!stats) return;
  for (const [k, v] of Object.entries(stats)) {
    if (typeof v === "number" && k.endsWith("Seconds") && Number.isFinite(v)) {
      solve[k] = (solve[k] ?? 0) + v;
    }
  }
  solve.solver! += typeof stats.seconds === "number" ? stats.seconds : 0;
}
// The output is streamed: each finished block is written to its shard while
// the GPU works on the next one, and the pipeline keeps no finished block.
const writeOut = !Deno.args.includes("--no-write");
const outDir = `${dir}-out`;
await Deno.remove(outDir, { recursive: true }).catch(() => {});
const dtype = (flag("dtype") ?? "f32") as "f32" | "bf16" | "f16";
const writer = writeOut ? await openHfStreamWriter(lm.model, outDir, { dtype }) : null;
const pending: Promise<void>[] = [];
t0 = performance.now();
let last = 0;
const result = await compressModel(lm, calibration, {
  stages: [{ kind: "gptq", bits: 4, groupSize: 128 }],
  overrides: [{ match: "output", stages: [] }],
}, {
  backend,
  keepModules: false,
  prefetch,
  onBlockDone: (b, modules) => {
    for (const m of modules) addSolveStats(m);
    if (writer === null || b >= lm.blocks.length) return;
    const weights = Object.fromEntries(
      modules.map((m) => [m.name.slice(m.name.lastIndexOf(".") + 1), m.weight]),
    );
    pending.push(writer.writeBlock(b, weights));
  },
  onProgress: (p) => {
    const now = performance.now();
    if (p.phase === "done" || now - last > 5000 || Deno.args.includes("--verbose")) {
      last = now;
      const eta = p.fraction > 0 ? ((now - t0) / 1000) * (1 - p.fraction) / p.fraction : NaN;
      log(`block ${p.block + 1}/${p.blocks} ${p.phase} ${p.module ?? ""} ETA ${eta.toFixed(0)} s`);
    }
  },
});
t.compress = (performance.now() - t0) / 1000;

if (writer !== null) {
  // What is left after the pipeline: the blocks still being written, the last shard.
  t0 = performance.now();
  await Promise.all(pending);
  await writer.finish(result.modules.get("output")?.weight ?? lm.model.classifier);
  t.save = (performance.now() - t0) / 1000;
  await Deno.remove(outDir, { recursive: true });
}
const layerErrors = [...result.summaries.values()].map((m) => m.layerError);
for (const m of result.summaries.values()) solve.linear! += m.seconds;
const report = {
  shape: shapeName,
  layers: shape.layers,
  calibration: { samples, len },
  output: writeOut ? dtype : null,
  read,
  prefetch,
  seconds: {
    load: t.load,
    calibration: result.phases.calibration,
    compress: result.phases.compress,
    propagate: result.phases.propagate,
    pipeline: t.compress,
    write: t.save,
    total: t.load + t.compress + t.save,
  },
  solve,
  meanLayerError: layerErrors.reduce((a, b) => a + b, 0) / layerErrors.length,
  device: result.device,
  hostPeakBytes: hwm(),
  hostPeakBeforeLoadBytes: rssBefore,
};
if (Deno.args.includes("--json")) console.log(JSON.stringify(report));
else console.log(report);
if (!Deno.args.includes("--keep") && flag("dir") === undefined) {
  await Deno.remove(dir, { recursive: true });
}
