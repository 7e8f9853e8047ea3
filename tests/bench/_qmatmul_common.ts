/**
 * Shared pieces of the qmatmul benchmark and sweep: random packed weights
 * built directly in the layout, weight copies rotating through more memory
 * than the L2 cache holds, and per-call GPU timing of many calls in one
 * submission.
 *
 * @module
 */

import { type Gpu, GpuBatch, storageBuffer } from "../../kernels/backend.ts";
import { type GpuPackedWeight, uploadPackedWeight } from "../../kernels/qmatmul_kernel.ts";
import type { PackedWeight } from "../../quantizers/pack.ts";
import { prng } from "../../core/prng.ts";
import { median } from "./_bench.ts";

/**
 * A random packed weight built directly (any word is a valid chunk), f16
 * scales and integer zero points per group.
 *
 * @param n Rows.
 * @param k Columns (a multiple of 32 and of the group size).
 * @param bits Bits per code.
 * @param groupSize Group size.
 * @param seed Seed.
 * @returns The packed weight.
 */
export function randomPacked(
  n: number,
  k: number,
  bits: number,
  groupSize: number,
  seed: number,
): PackedWeight {
  const rng = prng(seed);
  const groups = Math.ceil(k / groupSize), np = Math.ceil(n / 32) * 32;
  const words = new Uint32Array((np / 32) * (k / 32) * 32 * bits);
  for (let i = 0; i < words.length; i++) words[i] = rng.nextU32();
  const scales = Float16Array.from({ length: groups * np }, () => 0.001 + 0.01 * rng.uniform());
  const zeros = Float16Array.from({ length: groups * np }, () => rng.int(1 << bits));
  return {
    kind: "packed",
    format: "rowtile32",
    shape: [n, k],
    bits,
    groupSize,
    symmetric: false,
    groups,
    groupStride: groupSize,
    paddedRows: np,
    paddedCols: k,
    colIdx: null,
    words,
    scaleType: "f16",
    scales,
    zeros,
    zero: 0,
  };
}

/**
 * `copies` buffers holding the bytes of `src` (src itself first).
 *
 * @param gpu The GPU.
 * @param src The buffer to copy.
 * @param copies How many.
 * @returns The buffers.
 */
export async function replicate(gpu: Gpu, src: GPUBuffer, copies: number): Promise<GPUBuffer[]> {
  const out = [src];
  const batch = new GpuBatch(gpu);
  for (let i = 1; i < copies; i++) {
    const dst = storageBuffer(gpu, src.size, "copy");
    batch.copyAtEnd(src, 0, dst, 0, src.size);
    out.push(dst);
  }
  await batch.submit();
  return out;
}

/**
 * Resident copies of a packed weight, enough of them to span `rotateBytes`
 * (plus one), so consecutive calls cannot be served from the L2 cache.
 *
 * @param gpu The GPU.
 * @param p The packed weight.
 * @param rotateBytes Bytes the copies span at least.
 * @returns The copies.
 */
export async function residentCopies(
  gpu: Gpu,
  p: PackedWeight,
  rotateBytes: number,
): Promise<GpuPackedWeight[]> {
  const first = uploadPackedWeight(gpu, p);
  const copies = Math.max(2, Math.ceil(rotateBytes / packedBytes(p)) + 1);
  const words = await replicate(gpu, first.words, copies);
  const scales = await replicate(gpu, first.scales, copies);
  const zeros = first.zeros ? await replicate(gpu, first.zeros, copies) : null;
  return words.map((w, i) => ({
    packed: p,
    words: w,
    scales: scales[i]!,
    zeros: zeros ? zeros[i]! : null,
    colIdx: null,
  }));
}

/**
 * Frees resident copies.
 *
 * @param copies The copies.
 */
export function destroyCopies(copies: GpuPackedWeight[]): void {
  for (const c of copies) {
    c.words.destroy();
    c.scales.destroy();
    c.zeros?.destroy();
  }
}

/**
 * Bytes a call reads of a packed weight: code words, scales, zero points.
 *
 * @param p The packed weight.
 * @returns Bytes.
 */
export function packedBytes(p: PackedWeight): number {
  return p.words.byteLength + p.scales.byteLength + (p.zeros?.byteLength ?? 0);
}

/**
 * Per-call GPU and wall seconds. Two submissions of `unit` calls estimate the
 * cost; submissions of the same calls then run for `warmup` seconds of wall
 * time untimed (an idle H100 drops its clocks to 345 MHz and takes a while to
 * ramp up again after pipeline compiles); then `rounds` submissions, each of `passes` compute passes (timed
 * apart) of whole multiples of `unit` calls worth about `target`/`passes`
 * seconds of GPU time each. GPU time: the fastest pass (the GPU machine is shared: stretches of
 * seconds run several times slower, and the fastest of many short passes is
 * the figure that repeats); wall time: the median submission's, per call.
 *
 * @param gpu The GPU.
 * @param unit Calls per cycle (the number of weight copies).
 * @param record Records call i into a batch.
 * @param target GPU seconds per timed submission.
 * @param rounds Timed submissions.
 * @param passes Timed passes per submission (at most 16).
 * @param warmup Untimed wall seconds before the timed submissions.
 * @returns Seconds per call.
 */
export async function timeCalls(
  gpu: Gpu,
  unit: number,
  record: (batch: GpuBatch, i: number) => void,
  target = 0.025,
  rounds = 3,
  passes = 12,
  warmup = 0.3,
): Promise<{ gpu: number; wall: number }> {
  const run = async (calls: number, count: number) => {
    const t0 = performance.now();
    const batch = new GpuBatch(gpu);
    for (let p = 0; p < count; p++) {
      for (let i = 0; i < calls; i++) record(batch, p * calls + i);
      batch.phase(`pass ${p}`);
    }
    const { phases } = await batch.submit();
    return {
      gpu: Math.min(...Object.values(phases)) / calls,
      wall: (performance.now() - t0) / 1e3 / (calls * count),
    };
  };
  await run(unit, 1);
  const estimate = await run(unit, 1);
  const calls = unit *
    Math.max(
      1,
      Math.min(Math.floor(400 / unit), Math.round(target / passes / estimate.gpu / unit)),
    );
  const until = performance.now() + warmup * 1e3;
  while (performance.now() < until) await run(calls, passes);
  const g: number[] = [], w: number[] = [];
  for (let rep = 0; rep < rounds; rep++) {
    const t = await run(calls, passes);
    g.push(t.gpu);
    w.push(t.wall);
  }
  return { gpu: Math.min(...g), wall: median(w) };
}
