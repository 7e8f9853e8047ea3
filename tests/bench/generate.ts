/**
 * Tokens per second of greedy generation at batch 1 on WebGPU: writes a
 * random-weight bf16 folder at Llama-3.2-1B (or 8B) shapes (or reuses one),
 * then generates from a random prompt with (a) dense f16 weights and (b) the
 * block linears RTN-quantized to 4 bits in groups of 128 (embedding and
 * classifier f16), each after a warm-up run, at one step in flight and at
 * `--in-flight` steps, and once more with timestamp queries for the GPU time
 * of each phase of a step. Before that (unless `--no-kernels`) it times the
 * one-row products of every block linear and the classifier: the forward
 * pass's GEMM (`encodeLinear`), the decode GEMV in f32 and f16, and
 * `qmatmul` at 4 bits g128. Prints one JSON object on stdout (progress on
 * stderr).
 *
 *     deno task bench:generate [--shape=1b|8b|tiny] [--tokens=128] [--prompt=16] [--layers=N]
 *       [--in-flight=8] [--dir=DIR] [--no-kernels]
 *
 * Uses the file system.
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
import {
  destroyPackedWeight,
  encodeQmatmul,
  uploadPackedWeight,
} from "../../kernels/qmatmul_kernel.ts";
import { encodeLinear } from "../../models/_gpu_block.ts";
import { encodeGemv, uploadGemvWeight } from "../../models/_gpu_gemv.ts";
import { loadModel } from "../../models/causal_lm.ts";
import { decodeSession, type GenerateResult } from "../../models/generate.ts";
import type { BlockLinears } from "../../models/linear_weight.ts";
import { LLAMA_LINEARS, type LlamaModel } from "../../models/model.ts";
import { packWeights } from "../../quantizers/pack.ts";
import type { QuantizedWeight } from "../../quantizers/quantized_weight.ts";
import { rtn } from "../../quantizers/rtn.ts";
import { prng } from "../../core/prng.ts";
import { LLAMA_SHAPES, type LlamaShape, writeRandomLlama } from "../models/_random_checkpoint.ts";
import { median } from "./_bench.ts";

function flag(name: string): string | undefined {
  return Deno.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}

/** The shapes, and a tiny one to check the script itself on a software adapter. */
const SHAPES: Record<string, LlamaShape> = {
  ...LLAMA_SHAPES,
  tiny: {
    hidden: 256,
    inter: 512,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    headDim: 64,
    vocab: 1024,
    tied: true,
  },
};
const shapeName = flag("shape") ?? "1b";
const base = SHAPES[shapeName];
if (!base) throw new RangeError(`--shape must be 1b, 8b or tiny: current value is ${shapeName}`);
const shape: LlamaShape = { ...base, layers: Number(flag("layers") ?? base.layers) };
const tokens = Number(flag("tokens") ?? 128), promptLen = Number(flag("prompt") ?? 16);
const inFlight = Number(flag("in-flight") ?? 8);
const dir = flag("dir") ?? `/tmp/llmc-bench-${shapeName}-${shape.layers}`;
const log = (s: string) => console.error(`[${(performance.now() / 1000).toFixed(1)} s] ${s}`);

// The adapter goes to stderr with the progress: stdout holds only the JSON.
const acquired = await acquireGpu();
if (acquired === null) {
  console.error("no WebGPU adapter: nothing to benchmark");
  Deno.exit(0);
}
const gpu: Gpu = acquired;
log(`adapter: ${gpu.description}; f16 ${gpu.f16}; timestamps ${gpu.timestamps}`);

/** GPU (else wall) seconds of one dispatch group, the median of 5 batches of `reps`. */
async function timeKernel(record: (batch: GpuBatch) => void, reps = 20): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 6; i++) {
    const batch = new GpuBatch(gpu);
    for (let r = 0; r < reps; r++) record(batch);
    const t0 = performance.now();
    const { gpuSeconds } = await batch.submit();
    const wall = (performance.now() - t0) / 1000;
    if (i > 0) times.push((Number.isNaN(gpuSeconds) ? wall : gpuSeconds) / reps);
  }
  return median(times);
}

/** Values in ±0.05 (a cheap fill: the kernels' speed does not depend on them). */
function filled(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 0.1;
  }
  return out;
}

/** One-row products of every linear shape: µs and weight GB/s per kernel. */
async function kernels(): Promise<Record<string, Record<string, { us: number; gbps: number }>>> {
  const d = shape.hidden, q = shape.heads * shape.headDim, kv = shape.kvHeads * shape.headDim;
  const shapes: Record<string, [number, number]> = {
    qkv: [q + 2 * kv, d],
    o: [d, q],
    "gate-up": [2 * shape.inter, d],
    down: [d, shape.inter],
    classifier: [shape.vocab, d],
  };
  const out: Record<string, Record<string, { us: number; gbps: number }>> = {};
  for (const [name, [n, k]] of Object.entries(shapes)) {
    const w = filled(n * k, n + k);
    const x = uploadBuffer(gpu, filled(k, 7), "x"), y = storageBuffer(gpu, n * 4, "y");
    const row: Record<string, { us: number; gbps: number }> = {};
    const put = (key: string, seconds: number, bytes: number) =>
      row[key] = { us: seconds * 1e6, gbps: bytes / seconds / 1e9 };
    const wf32 = uploadBuffer(gpu, w, "w32");
    put(
      "gemm-f32",
      await timeKernel((b) => encodeLinear(b, y, x, wf32, 1, n, k, false)),
      4 * n * k,
    );
    put(
      "gemv-f32",
      await timeKernel((b) =>
        encodeGemv(b, { y, x, w: wf32 }, { rows: 1, n, k }, { weights: "f32", accumulate: false })
      ),
      4 * n * k,
    );
    wf32.destroy();
    const wf16 = uploadGemvWeight(gpu, w, n, k, "f16", "w16");
    put(
      "gemv-f16",
      await timeKernel((b) =>
        encodeGemv(b, { y, x, w: wf16 }, { rows: 1, n, k }, { weights: "f16", accumulate: false })
      ),
      2 * n * k,
    );
    wf16.destroy();
    if (name !== "classifier") {
      const groups = k / 128, rng = prng(n);
      const qw: QuantizedWeight = {
        kind: "uniform",
        shape: [n, k],
        bits: 4,
        groupSize: 128,
        symmetric: false,
        codes: Uint8Array.from({ length: n * k }, () => rng.int(16)),
        scales: filled(n * groups, 3).map((v) => Math.abs(v) + 0.01),
        zeros: new Float32Array(n * groups).fill(8),
        gIdx: Int32Array.from({ length: k }, (_, c) => Math.floor(c / 128)),
        stats: { seconds: 0 },
      };
      const packed = uploadPackedWeight(gpu, packWeights(qw));
      const bytes = packed.words.size + packed.scales.size;
      put(
        "qmatmul-w4g128",
        await timeKernel((b) => encodeQmatmul(b, packed, { x, input: "f32", m: 1, y })),
        bytes,
      );
      destroyPackedWeight(packed);
    }
    x.destroy();
    y.destroy();
    out[name] = row;
    log(
      `${name} [${n}, ${k}]: ${
        Object.entries(row).map(([k, v]) => `${k} ${v.us.toFixed(1)} µs`).join(", ")
      }`,
    );
  }
  return out;
}

/** What one configuration measured. */
interface Measured {
  tokensPerSecond: Record<string, number>;
  prefillSeconds: number;
  uploadSeconds: number;
  gpuStepMs?: number;
  gpuPhasesMs?: Record<string, number>;
}

async function measure(
  model: LlamaModel,
  prompt: number[],
  linears: BlockLinears[],
): Promise<Measured> {
  const t0 = performance.now();
  const session = await decodeSession(model, {
    backend: "webgpu",
    weights: "f16",
    maxTokens: prompt.length + tokens,
    linears,
  });
  const uploadSeconds = (performance.now() - t0) / 1000;
  try {
    await session.generate(prompt, { maxNewTokens: Math.min(tokens, 16), inFlight }); // warm-up
    const tokensPerSecond: Record<string, number> = {};
    let last: GenerateResult | null = null;
    for (const depth of [...new Set([1, inFlight])]) {
      last = await session.generate(prompt, { maxNewTokens: tokens, inFlight: depth });
      tokensPerSecond[`inFlight${depth}`] = last.tokensPerSecond;
      log(`  in flight ${depth}: ${last.tokensPerSecond.toFixed(1)} tokens/s`);
    }
    const profiled = await session.generate(prompt, {
      maxNewTokens: Math.min(tokens, 32),
      profile: true,
    });
    const ms = (s: number) => s * 1e3;
    return {
      tokensPerSecond,
      prefillSeconds: last!.prefillSeconds,
      uploadSeconds,
      ...(profiled.gpu
        ? {
          gpuStepMs: ms(profiled.gpu.stepSeconds),
          gpuPhasesMs: Object.fromEntries(
            Object.entries(profiled.gpu.phases).map(([k, v]) => [k, ms(v)]),
          ),
        }
        : {}),
    };
  } finally {
    session.dispose();
  }
}

const kernelTimes = Deno.args.includes("--no-kernels") ? null : await kernels();

try {
  await Deno.stat(`${dir}/config.json`);
  log(`reusing ${dir}`);
} catch {
  const bytes = await writeRandomLlama(dir, shape);
  log(`wrote ${(bytes / 1e9).toFixed(2)} GB to ${dir}`);
}
const lm = await loadModel(dir);
const rng = prng(1);
const prompt = Array.from({ length: promptLen }, () => rng.int(lm.config.vocabSize));

log("dense f16");
const dense = await measure(lm.model, prompt, []);

log("RTN 4-bit g128");
const t0 = performance.now();
const linears: BlockLinears[] = [];
for (const layer of lm.model.layers) {
  const block: Record<string, QuantizedWeight> = {};
  for (const name of LLAMA_LINEARS) {
    block[name] = await rtn(layer[name], { bits: 4, groupSize: 128 });
  }
  linears.push(block);
}
const quantizeSeconds = (performance.now() - t0) / 1000;
log(`  quantized in ${quantizeSeconds.toFixed(1)} s`);
const w4 = await measure(lm.model, prompt, linears);

const best = (m: Measured) => Math.max(...Object.values(m.tokensPerSecond));
console.log(JSON.stringify(
  {
    adapter: gpu.description,
    shape: shapeName,
    layers: shape.layers,
    promptTokens: promptLen,
    newTokens: tokens,
    inFlight,
    denseF16: dense,
    w4g128: { ...w4, quantizeSeconds },
    speedup: best(w4) / best(dense),
    ...(kernelTimes ? { kernels: kernelTimes } : {}),
  },
  null,
  2,
));
