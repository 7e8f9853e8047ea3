/**
 * Tokens per second of greedy generation at batch 1 on WebGPU: writes a
 * random-weight bf16 folder at Llama-3.2-1B (or 8B) shapes (or reuses one),
 * then generates from a random prompt with (a) dense f16 weights and (b) the
 * block linears RTN-quantized to 4 bits in groups of 128 (embedding and
 * classifier f16), each after a warm-up run and `--repeats` times (tokens/s
 * the median), at one step in flight and at
 * `--in-flight` steps (and with `--per-submission` steps in one submission), and once
 * more with timestamp queries for the GPU time
 * of each phase of a step; each configuration also reports the dispatches
 * of one step (in all and per phase), the GPU µs per dispatch, and the
 * tokens per second between read-backs (`steadyTokensPerSecond`, which the
 * latency of the first and last read-backs does not bias; "speedupSteady").
 *
 * Before that (unless `--no-kernels`) it times the one-row products of
 * every block linear and the classifier at the shapes of `--kernel-shapes`
 * (default: the run's shape; e.g. `1b,8b`), all in this process: the
 * forward pass's GEMM (`encodeLinear`) and the decode GEMV in f32 (where the
 * weight fits one binding), the f16 GEMV, and `qmatmul` at 4 bits g128 with
 * its few-row default (`qmatmulFewRowSpec`, key "qmatmul-w4g128") beside the
 * previous default (`qmatmulSweptFewRowSpec`, "qmatmul-w4g128-swept"), and
 * with `--neighbours` variants around the few-row default (with `--sweep` a grid of
 * warps, sub-teams, row tiles and prefetching instead), with the RMSNorm prologue
 * (default, few-row, few-row with one step a sub-team, previous default; SwiGLU
 * too on gate-up), and one-row attention at positions 16, 144 and 528 with
 * the one-row kernel the decode step runs ("row"), the general kernel
 * ("tiles") and the split kernel at 32, 16 and 8 splits. Weights rotate
 * through copies spanning more than the L2 cache (a decode step reads each
 * weight once); each figure is the fastest of many short passes after
 * `--warmup` seconds of untimed calls (`timeCalls` of
 * tests/bench/_qmatmul_common.ts). `--kernel-rows=1,2,4` times those batch
 * sizes too; `--kernels-only` stops after the kernels, `--no-linears` times
 * attention alone. Prints one JSON
 * object on stdout (progress on stderr).
 *
 *     deno task bench:generate [--shape=1b|8b|tiny] [--tokens=128[,512]] [--prompt=16] [--layers=N]
 *       [--in-flight=64] [--per-submission=8] [--runs=1x1,64x8] [--repeats=3] [--dir=DIR]
 *       [--no-kernels]
 *       [--kernels-only] [--no-linears]
 *       [--kernel-shapes=1b,8b]
 *       [--kernel-rows=1] [--neighbours | --sweep] [--warmup=0.3]
 *
 * Uses the file system.
 *
 * @module
 */

import {
  acquireGpu,
  bindingLimit,
  type Gpu,
  type GpuBatch,
  storageBuffer,
  uploadBuffer,
  writeBuffer,
} from "../../kernels/backend.ts";
import { encodeQmatmul, type QmatmulOperands } from "../../kernels/qmatmul_kernel.ts";
import {
  qmatmulDeviceLimits,
  qmatmulFewRowSpec,
  qmatmulResolvedSpec,
  qmatmulSweptFewRowSpec,
  type QmatmulVariant,
} from "../../kernels/qmatmul_default_spec.ts";
import type { QmatmulSpec } from "../../kernels/qmatmul_spec.ts";
import { encodeLinear } from "../../models/_gpu_block.ts";
import {
  type CachedAttentionKernel,
  encodeCachedAttention,
  splitAttentionScratchBytes,
  splitAttentionSplits,
} from "../../models/_gpu_cached_attention.ts";
import { encodeGemv, gemvRowLength, uploadGemvWeight } from "../../models/_gpu_gemv.ts";
import { loadModel } from "../../models/causal_lm.ts";
import { type DecodeAttention, decodeSession, type GenerateResult } from "../../models/generate.ts";
import { DECODE_ATTENTIONS } from "../../models/_gpu_decoder.ts";
import type { BlockLinears } from "../../models/linear_weight.ts";
import { LLAMA_LINEARS, type LlamaModel } from "../../models/model.ts";
import type { QuantizedWeight } from "../../quantizers/quantized_weight.ts";
import { rtn } from "../../quantizers/rtn.ts";
import { prng } from "../../core/prng.ts";
import { LLAMA_SHAPES, type LlamaShape, writeRandomLlama } from "../models/_random_checkpoint.ts";
import {
  destroyCopies,
  packedBytes,
  randomPacked,
  replicate,
  residentCopies,
  timeCalls,
} from "./_qmatmul_common.ts";

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
/** `--tokens=512,128`: new tokens a run, each count timed in the same sessions (run keys gain `@N`). */
const tokenCounts = (flag("tokens") ?? "128").split(",").map(Number);
if (!tokenCounts.every((t) => Number.isInteger(t) && t >= 1)) {
  throw new RangeError(`--tokens must list positive integers: current value is ${flag("tokens")}`);
}
const tokens = Math.max(...tokenCounts), promptLen = Number(flag("prompt") ?? 16);
const inFlight = Number(flag("in-flight") ?? 64);
/** Timed runs of each configuration; tokens/s figures are their median. */
const repeats = Number(flag("repeats") ?? 3);
if (!Number.isInteger(repeats) || repeats < 1) {
  throw new RangeError(`--repeats must be a positive integer: current value is ${flag("repeats")}`);
}
/** Steps per submission to time besides 1 (`--per-submission=4,8`; `inFlight` at least as many). */
const perSubmission = (flag("per-submission") ?? "8").split(",").filter((v) => v !== "").map(
  Number,
).filter((n) => n > 1);
/** `--runs=64x8,256x8`: the (steps in flight)×(steps a submission) runs instead of the defaults'. */
const runs = flag("runs")?.split(",").map((r) => {
  const [d, p] = r.split("x").map(Number);
  if (!Number.isInteger(d) || !Number.isInteger(p) || d! < p! || p! < 1) {
    throw new RangeError(`--runs must list DEPTHxPER with DEPTH ≥ PER ≥ 1: one is ${r}`);
  }
  return [d!, p!];
});
const dir = flag("dir") ?? `/tmp/llmc-bench-${shapeName}-${shape.layers}`;
const kernelShapes = (flag("kernel-shapes") ?? shapeName).split(",");
for (const k of kernelShapes) {
  if (!SHAPES[k]) throw new RangeError(`--kernel-shapes must list 1b, 8b or tiny: one is ${k}`);
}
const kernelRows = (flag("kernel-rows") ?? "1").split(",").map(Number);
if (!kernelRows.every((m) => Number.isInteger(m) && m >= 1)) {
  throw new RangeError(`--kernel-rows must list positive integers: current value is ${kernelRows}`);
}
const warmup = Number(flag("warmup") ?? 0.3);
if (!(warmup >= 0)) {
  throw new RangeError(`--warmup must be seconds ≥ 0: current value is ${warmup}`);
}
const timeNeighbours = Deno.args.includes("--neighbours");
/** Time a grid of qmatmul variants (warps × split × rowTiles × prefetch) instead of the neighbours. */
const timeSweep = Deno.args.includes("--sweep");
const kernelsOnly = Deno.args.includes("--kernels-only");
/** Time the attention kernels only, not the products. */
const noLinears = Deno.args.includes("--no-linears");
/** `--attention=split,row,tiles`: the decode step's attention kernels, each timed with both folders. */
const attentions = (flag("attention") ?? "row").split(",") as DecodeAttention[];
for (const a of attentions) {
  if (!DECODE_ATTENTIONS.includes(a)) {
    throw new RangeError(`--attention must list split, row or tiles: one is ${a}`);
  }
}
// Weight copies span more than the H100's 50 MB of L2 (two copies for the tiny shape, which
// only checks the script on a software adapter).
const rotateBytes = kernelShapes.every((k) => k === "tiny") ? 0 : 200 << 20;
const log = (s: string) => console.error(`[${(performance.now() / 1000).toFixed(1)} s] ${s}`);

// The adapter goes to stderr with the progress: stdout holds only the JSON.
const acquired = await acquireGpu();
if (acquired === null) {
  console.error("no WebGPU adapter: nothing to benchmark");
  Deno.exit(0);
}
const gpu: Gpu = acquired;
log(`adapter: ${gpu.description}; f16 ${gpu.f16}; timestamps ${gpu.timestamps}`);

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

const normWeights = new Map<number, GPUBuffer>();
/** A norm weight of k values (cached per width). */
function normWeight(k: number): GPUBuffer {
  let b = normWeights.get(k);
  if (!b) normWeights.set(k, b = uploadBuffer(gpu, filled(k, k), "norm"));
  return b;
}

/** Records call i of a timing. */
type Recorder = (batch: GpuBatch, i: number) => void;

/** A weight buffer and copies of it, spanning more than the L2 cache (the buffer is kept). */
function rotated(buffer: GPUBuffer): Promise<GPUBuffer[]> {
  return replicate(gpu, buffer, Math.max(2, Math.ceil(rotateBytes / buffer.size) + 1));
}

/** What one kernel took: GPU µs per call and the weight bytes it read per second. */
interface KernelTime {
  us: number;
  gbps: number;
}

/** One linear's kernels at one batch size, and the qmatmul specializations timed. */
interface LinearTimes {
  n: number;
  k: number;
  rows: number;
  times: KernelTimes;
  /** The qmatmul specializations: the few-row default and the previous default (not for the classifier). */
  specs?: { fewRow: QmatmulSpec; swept: QmatmulSpec };
  /** The few-row default's speedup over the previous default, and over the f16 GEMV. */
  fewRowVsSwept?: number;
  fewRowVsF16?: number;
}

/**
 * Neighbours of the few-row default for `--neighbours`: the other sub-team
 * splits, twice and half the teams, the other step length, no prefetch,
 * K split over 4 workgroups (a second pass), and the previous default with
 * its workgroups split in two.
 */
function neighbours(d: QmatmulSpec, swept: QmatmulSpec): Record<string, QmatmulVariant> {
  const out: Record<string, QmatmulVariant> = {};
  for (const split of [1, 2, 4]) if (split !== d.split) out[`split ${split}`] = { split };
  if (d.warps < 32) out[`warps ${d.warps * 2}`] = { warps: d.warps * 2 };
  if (d.warps > 1) out[`warps ${d.warps / 2}`] = { warps: d.warps / 2 };
  const unroll = d.unroll === 4 ? 2 : 4;
  if (d.groupChunks % unroll === 0) out[`unroll ${unroll}`] = { unroll };
  out["no prefetch"] = { prefetch: false };
  out["split 1, splitK 4"] = { split: 1, splitK: 4 };
  out["swept, split 2"] = { ...swept, split: 2 };
  return out;
}

/** Timings by key, or why a kernel failed. */
type KernelTimes = Record<string, KernelTime | { error: string }>;

/**
 * Times `calls` recorded calls (`timeCalls`, after `--warmup` seconds) into
 * times[key], with the bandwidth of `bytes` a call, or records the error.
 */
async function timeKernel(
  times: KernelTimes,
  key: string,
  bytes: number,
  calls: number,
  rec: Recorder,
): Promise<void> {
  try {
    const t = await timeCalls(gpu, calls, rec, undefined, undefined, undefined, warmup);
    times[key] = { us: t.gpu * 1e6, gbps: bytes / t.gpu / 1e9 };
  } catch (e) {
    times[key] = { error: (e as Error).message };
  }
}

/** "key 12.3 µs, key failed (…)" for a log line. */
function describeTimes(times: KernelTimes): string {
  return Object.entries(times).map(([key, v]) =>
    `${key} ${"us" in v ? `${v.us.toFixed(1)} µs` : `failed (${v.error})`}`
  ).join(", ");
}

/**
 * One-row (or `--kernel-rows`) products of every block linear and the
 * classifier at each of `--kernel-shapes`: the forward pass's GEMM and the
 * decode GEMV in f32 (where the weight fits one binding), the f16 GEMV, and
 * qmatmul at 4 bits g128 with the few-row default, the previous default
 * ({@linkcode qmatmulSweptFewRowSpec}) and, with `--neighbours`, variants
 * around the few-row default. Weights rotate through copies spanning more
 * than the L2 cache (as one decode step reads each weight once), and each
 * figure is the fastest of many short passes after a warm-up
 * (`timeCalls`), all in this process.
 */
async function kernels(): Promise<Record<string, Record<string, LinearTimes>>> {
  const out: Record<string, Record<string, LinearTimes>> = {};
  for (const name of kernelShapes) {
    const s = SHAPES[name]!;
    const d = s.hidden, q = s.heads * s.headDim, kv = s.kvHeads * s.headDim;
    const linears: Record<string, [number, number]> = {
      qkv: [q + 2 * kv, d],
      o: [d, q],
      "gate-up": [2 * s.inter, d],
      down: [d, s.inter],
      classifier: [s.vocab, d],
    };
    const rows: Record<string, LinearTimes> = {};
    for (const [linear, [n, k]] of noLinears ? [] : Object.entries(linears)) {
      const w = filled(n * k, n + k);
      const kp = gemvRowLength(k);
      const f32 = 4 * n * kp <= bindingLimit(gpu);
      const w32 = f32 ? await rotated(uploadGemvWeight(gpu, w, n, k, "f32", "w32")) : [];
      const w16 = await rotated(uploadGemvWeight(gpu, w, n, k, "f16", "w16"));
      const packed = linear === "classifier" ? null : randomPacked(n, k, 4, 128, n + k);
      const copies = packed ? await residentCopies(gpu, packed, rotateBytes) : [];
      for (const m of kernelRows) {
        const x = uploadBuffer(gpu, filled(m * k, 7), "x"), y = storageBuffer(gpu, m * n * 4, "y");
        const times: KernelTimes = {};
        const time = (key: string, bytes: number, calls: number, rec: Recorder) =>
          timeKernel(times, key, bytes, calls, rec);
        const shape = { rows: m, n, k };
        if (f32) {
          await time(
            "gemm-f32",
            4 * n * k,
            w32.length,
            (b, i) => encodeLinear(b, y, x, w32[i % w32.length]!, m, n, k, false),
          );
          await time(
            "gemv-f32",
            4 * n * k,
            w32.length,
            (b, i) =>
              encodeGemv(b, { y, x, w: w32[i % w32.length]! }, shape, {
                weights: "f32",
                accumulate: false,
              }),
          );
        }
        await time(
          "gemv-f16",
          2 * n * k,
          w16.length,
          (b, i) =>
            encodeGemv(b, { y, x, w: w16[i % w16.length]! }, shape, {
              weights: "f16",
              accumulate: false,
            }),
        );
        // With the RMSNorm prologue the decode step uses before qkv, gate-up and the classifier.
        const norm = { weight: normWeight(k), eps: 1e-5 };
        await time(
          "gemv-f16+norm",
          2 * n * k,
          w16.length,
          (b, i) =>
            encodeGemv(b, { y, x, w: w16[i % w16.length]!, norm }, shape, {
              weights: "f16",
              accumulate: false,
            }),
        );
        if (packed) {
          const bytes = packedBytes(packed);
          const fewRow = qmatmulResolvedSpec(gpu, packed, m);
          const swept = qmatmulSweptFewRowSpec(packed, m, qmatmulDeviceLimits(gpu));
          const variants: Record<string, QmatmulVariant> = {
            "qmatmul-w4g128": {},
            "qmatmul-w4g128-swept": swept,
          };
          if (timeSweep) {
            for (const warps of [2, 4, 8, 16, 32]) {
              for (const split of [1, 2, 4]) {
                for (const rowTiles of [1, 2]) {
                  for (const prefetch of [true, false]) {
                    variants[
                      `qmatmul-w4g128 w${warps} s${split} r${rowTiles}${prefetch ? "" : " np"}`
                    ] = { warps, split, rowTiles, prefetch };
                  }
                }
              }
            }
          } else if (timeNeighbours) {
            for (const [key, v] of Object.entries(neighbours(fewRow, swept))) {
              variants[`qmatmul-w4g128 ${key}`] = v;
            }
          }
          // qmatmul over the rotating copies, with the variant and the operands' extras.
          const product = (
            key: string,
            variant: QmatmulVariant,
            extra: Partial<Pick<QmatmulOperands, "norm" | "swiglu">> = {},
          ) =>
            time(
              key,
              bytes,
              copies.length,
              (b, i) =>
                encodeQmatmul(
                  b,
                  copies[i % copies.length]!,
                  { x, input: "f32", m, y, ...extra },
                  variant,
                ),
            );
          for (const [key, variant] of Object.entries(variants)) await product(key, variant);
          // The norm as the step runs it (default), and with each of the batch-1 specs: the
          // few-row one reads x from global memory, the swept one stages it; both sum the
          // squares in a prologue.
          const fewRowSpec = qmatmulFewRowSpec(packed, m, qmatmulDeviceLimits(gpu));
          // The few-row spec with its teams doubled while every sub-team keeps a step (one step
          // each at 1B's q/k/v and gate-up): all weight loads go out before the norm prologue.
          const oneStep = { ...fewRowSpec };
          const steps = oneStep.chunks / oneStep.unroll;
          while (
            oneStep.warps < 32 && oneStep.warps * 2 * oneStep.split <= steps &&
            oneStep.warps * 64 <= gpu.limits.maxComputeInvocationsPerWorkgroup
          ) oneStep.warps *= 2;
          const normVariants: Record<string, QmatmulVariant> = {
            "qmatmul-w4g128+norm": {},
            "qmatmul-w4g128+norm fewRow": fewRowSpec,
            [`qmatmul-w4g128+norm fewRow warps ${oneStep.warps}`]: oneStep,
            "qmatmul-w4g128+norm swept": swept,
          };
          for (const [key, variant] of Object.entries(normVariants)) {
            await product(key, variant, { norm });
            // gate-up as the step runs it: the SwiGLU epilogue too.
            if (linear === "gate-up") {
              await product(`${key}+swiglu`, variant, { norm, swiglu: true });
            }
          }
          const us = (key: string) => {
            const t = times[key];
            return t && "us" in t ? t.us : NaN;
          };
          rows[m === 1 ? linear : `${linear} M=${m}`] = {
            n,
            k,
            rows: m,
            times,
            specs: { fewRow, swept },
            fewRowVsSwept: us("qmatmul-w4g128-swept") / us("qmatmul-w4g128"),
            fewRowVsF16: us("gemv-f16") / us("qmatmul-w4g128"),
          };
        } else {
          rows[m === 1 ? linear : `${linear} M=${m}`] = { n, k, rows: m, times };
        }
        x.destroy();
        y.destroy();
        log(`${name} ${linear} [${n}, ${k}] M=${m}: ${describeTimes(times)}`);
      }
      for (const b of [...w32, ...w16]) b.destroy();
      destroyCopies(copies);
    }
    // One-row attention (rotating q and k itself, as the step runs it) at several positions:
    // the one-row kernel the step uses ("row") beside the general kernel ("tiles") and the split
    // kernel, over 16 layers' caches. Key "attention@P": n = query width, k = keys (P + 1).
    const qDim = s.heads * s.headDim, kvDim = s.kvHeads * s.headDim, ld = qDim + 2 * kvDim;
    const cap = 1024;
    const qkv = uploadBuffer(gpu, filled(ld, 3), "attention-qkv");
    const att = storageBuffer(gpu, qDim * 4, "attention-out");
    const caches = Array.from({ length: 16 }, (_, i) => ({
      k: uploadBuffer(gpu, filled(cap * kvDim, 11 + i), "k-cache"),
      v: uploadBuffer(gpu, filled(cap * kvDim, 31 + i), "v-cache"),
    }));
    const table = uploadBuffer(gpu, filled(cap * s.headDim, 5), "rope-table");
    const pos = storageBuffer(gpu, 4, "pos");
    const shape = { rows: 1, nHeads: s.heads, nKvHeads: s.kvHeads, hd: s.headDim, ld, cap };
    // The split kernel with its default splits and fewer (each with its scratch).
    const splitCounts = [...new Set([splitAttentionSplits(shape), 16, 8])];
    const parts = splitCounts.map((n) =>
      storageBuffer(gpu, splitAttentionScratchBytes(shape, n), "attention-splits")
    );
    for (const p of [16, 144, 528]) {
      writeBuffer(gpu, pos, 0, Uint32Array.of(p));
      const times: KernelTimes = {};
      const kernels: Record<string, CachedAttentionKernel> = { tiles: "tiles", row: "row" };
      splitCounts.forEach((n, i) => kernels[`split ${n}`] = { scratch: parts[i]!, splits: n });
      for (const [key, kernel] of Object.entries(kernels)) {
        await timeKernel(
          times,
          `attention-${key}`,
          (p + 1) * kvDim * 8,
          caches.length,
          (b, i) =>
            encodeCachedAttention(
              b,
              att,
              qkv,
              caches[i % caches.length]!,
              pos,
              shape,
              table,
              kernel,
            ),
        );
      }
      rows[`attention@${p}`] = { n: qDim, k: p + 1, rows: 1, times };
      log(`${name} attention at position ${p}: ${describeTimes(times)}`);
    }
    for (const b of [qkv, att, table, pos, ...parts, ...caches.flatMap((c) => [c.k, c.v])]) {
      b.destroy();
    }
    out[name] = rows;
  }
  return out;
}

/** What one configuration measured. */
interface Measured {
  /** Median over the `--repeats` runs, per run key. */
  tokensPerSecond: Record<string, number>;
  /** Every timed run's tokens/s, in order, per run key. */
  tokensPerSecondRuns: Record<string, number[]>;
  /** Tokens per second between read-backs (`steadyTokensPerSecond`), per depth. */
  steadyTokensPerSecond: Record<string, number>;
  prefillSeconds: number;
  uploadSeconds: number;
  stepDispatches?: number;
  /** Host ms a step spent encoding and submitting it, per depth. */
  hostStepMs: Record<string, number>;
  /** GPU ms of a step as one compute pass (as it runs). */
  gpuStepMs?: number;
  /** GPU ms of a step recorded as one pass per phase. */
  gpuPhasedStepMs?: number;
  gpuPhasesMs?: Record<string, number>;
  phaseDispatches?: Record<string, number>;
  /** GPU µs of a step per dispatch. */
  gpuUsPerDispatch?: number;
  /**
   * Each run of more than one step in flight once more, traced (`trace`): GPU
   * ms a step inside the submissions as they run queued, the GPU's busy
   * share, the longest idle, and its tokens/s.
   */
  sustained?: Record<string, {
    gpuStepMs: number;
    gpuUtilization: number;
    longestIdleMs: number;
    tokensPerSecond: number;
  }>;
}

/** The median of the values that are not NaN (the mean of the middle two for an even count; NaN for none). */
function median(values: readonly number[]): number {
  const v = values.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  const h = Math.floor(v.length / 2);
  if (v.length === 0) return NaN;
  return v.length % 2 === 1 ? v[h]! : (v[h - 1]! + v[h]!) / 2;
}

async function measure(
  model: LlamaModel,
  prompt: number[],
  linears: BlockLinears[],
  attention: DecodeAttention,
): Promise<Measured> {
  const t0 = performance.now();
  const session = await decodeSession(model, {
    backend: "webgpu",
    weights: "f16",
    maxTokens: prompt.length + tokens,
    linears,
    attention,
  });
  const uploadSeconds = (performance.now() - t0) / 1000;
  try {
    // Steps in flight, and steps per submission.
    const depths = runs ??
      [[1, 1], [inFlight, 1], ...perSubmission.map((n) => [Math.max(inFlight, n), n])];
    // Warm-up: every run once, untimed (the first full run after the upload came out slow,
    // dense and 4-bit alike: 480 tokens/s against 700 in the next, H100).
    for (const [depth, per] of depths) {
      await session.generate(prompt, {
        maxNewTokens: Math.min(tokens, 64),
        inFlight: depth!,
        stepsPerSubmission: per!,
      });
    }
    const tokensPerSecond: Record<string, number> = {};
    const tokensPerSecondRuns: Record<string, number[]> = {};
    const steadyTokensPerSecond: Record<string, number> = {};
    const hostStepMs: Record<string, number> = {};
    const sustained: NonNullable<Measured["sustained"]> = {};
    let last: GenerateResult | null = null;
    for (const count of tokenCounts) {
      for (const [depth, per] of depths) {
        const run = { maxNewTokens: count, inFlight: depth!, stepsPerSubmission: per! };
        const key = `inFlight${depth}${per! > 1 ? `x${per}` : ""}${
          tokenCounts.length > 1 ? `@${count}` : ""
        }`;
        // The median of several runs: one run can lose tens of ms to the host (a pause of the
        // garbage collector after the upload, say) where the GPU then idles.
        const timedRuns: GenerateResult[] = [];
        for (let r = 0; r < repeats; r++) timedRuns.push(await session.generate(prompt, run));
        last = timedRuns[timedRuns.length - 1]!;
        tokensPerSecondRuns[key] = timedRuns.map((t) => t.tokensPerSecond);
        tokensPerSecond[key] = median(tokensPerSecondRuns[key]!);
        steadyTokensPerSecond[key] = median(timedRuns.map((t) => t.steadyTokensPerSecond ?? NaN));
        hostStepMs[key] = median(timedRuns.map((t) => (t.hostStepSeconds ?? NaN) * 1e3));
        log(
          `  ${count} tokens, in flight ${depth}, ${per} a submission: ${
            tokensPerSecond[key]!.toFixed(1)
          } tokens/s, median of ${repeats} (${
            tokensPerSecondRuns[key]!.map((v) => v.toFixed(1)).join(", ")
          }; ${steadyTokensPerSecond[key]!.toFixed(1)} between read-backs), host ${
            hostStepMs[key]!.toFixed(3)
          } ms a step to encode and submit`,
        );
        // The same run traced (a second run: the timestamps add two empty passes a submission).
        if (depth! < 2) continue;
        const traced = await session.generate(prompt, { ...run, trace: true });
        if (!traced.sustained) continue;
        const t = sustained[key] = {
          gpuStepMs: traced.sustained.gpuStepSeconds * 1e3,
          gpuUtilization: traced.sustained.gpuUtilization,
          longestIdleMs: traced.sustained.longestIdleSeconds * 1e3,
          tokensPerSecond: traced.tokensPerSecond,
        };
        log(
          `    traced: GPU ${t.gpuStepMs.toFixed(3)} ms a step queued, busy ${
            (100 * t.gpuUtilization).toFixed(1)
          }% of the time, longest idle ${t.longestIdleMs.toFixed(2)} ms (${
            t.tokensPerSecond.toFixed(1)
          } tokens/s)`,
        );
      }
    }
    const profiled = await session.generate(prompt, {
      maxNewTokens: Math.min(tokens, 32),
      profile: true,
    });
    const ms = (s: number) => s * 1e3;
    const dispatches = profiled.stepDispatches;
    if (dispatches !== undefined) log(`  ${dispatches} dispatches per step`);
    if (profiled.gpu) {
      log(
        `  GPU ${ms(profiled.gpu.stepSeconds).toFixed(3)} ms a step (one pass), ${
          ms(profiled.gpu.phasedStepSeconds).toFixed(3)
        } ms in one pass per phase`,
      );
    }
    return {
      tokensPerSecond,
      tokensPerSecondRuns,
      steadyTokensPerSecond,
      hostStepMs,
      prefillSeconds: last!.prefillSeconds,
      uploadSeconds,
      ...(dispatches === undefined ? {} : { stepDispatches: dispatches }),
      ...(Object.keys(sustained).length > 0 ? { sustained } : {}),
      ...(profiled.gpu
        ? {
          gpuStepMs: ms(profiled.gpu.stepSeconds),
          gpuPhasedStepMs: ms(profiled.gpu.phasedStepSeconds),
          gpuPhasesMs: Object.fromEntries(
            Object.entries(profiled.gpu.phases).map(([k, v]) => [k, ms(v)]),
          ),
          phaseDispatches: profiled.gpu.phaseDispatches,
          ...(dispatches
            ? { gpuUsPerDispatch: (profiled.gpu.stepSeconds * 1e6) / dispatches }
            : {}),
        }
        : {}),
    };
  } finally {
    session.dispose();
  }
}

const kernelTimes = Deno.args.includes("--no-kernels") ? null : await kernels();
if (kernelsOnly) {
  console.log(JSON.stringify({ adapter: gpu.description, kernels: kernelTimes }, null, 2));
  Deno.exit(0);
}

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

const best = (m: Measured) => Math.max(...Object.values(m.tokensPerSecond));
const bestSteady = (m: Measured) =>
  Math.max(...Object.values(m.steadyTokensPerSecond).filter((v) => !Number.isNaN(v)));
/** Both folders with one attention kernel, and the 4-bit folder's speedups. */
async function compare(attention: DecodeAttention) {
  log(`dense f16, ${attention} attention`);
  const dense = await measure(lm.model, prompt, [], attention);
  log(`RTN 4-bit g128, ${attention} attention`);
  const w4 = await measure(lm.model, prompt, linears, attention);
  return {
    denseF16: dense,
    w4g128: { ...w4, quantizeSeconds },
    speedup: best(w4) / best(dense),
    speedupSteady: bestSteady(w4) / bestSteady(dense),
    // Per run: 4-bit tokens/s over dense's.
    speedupByRun: Object.fromEntries(
      Object.entries(w4.tokensPerSecond).map((
        [k, v],
      ) => [k, v / (dense.tokensPerSecond[k] ?? NaN)]),
    ),
    // Per traced run: dense GPU ms a step queued over 4-bit's.
    ...(dense.sustained && w4.sustained
      ? {
        speedupGpuSustained: Object.fromEntries(
          Object.entries(w4.sustained).map((
            [k, v],
          ) => [k, (dense.sustained?.[k]?.gpuStepMs ?? NaN) / v.gpuStepMs]),
        ),
      }
      : {}),
  };
}
const [first, ...others] = attentions;
const main = await compare(first!);
const alternatives: Record<string, Awaited<ReturnType<typeof compare>>> = {};
for (const a of others) alternatives[a] = await compare(a);
console.log(JSON.stringify(
  {
    adapter: gpu.description,
    shape: shapeName,
    layers: shape.layers,
    promptTokens: promptLen,
    newTokens: tokenCounts.length > 1 ? tokenCounts : tokens,
    inFlight,
    attention: first,
    ...main,
    ...(others.length > 0 ? { otherAttention: alternatives } : {}),
    ...(kernelTimes ? { kernels: kernelTimes } : {}),
  },
  null,
  2,
));
