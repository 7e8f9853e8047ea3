import assert from "node:assert/strict";
import { cachedPipeline, GpuBatch, storageBuffer, uploadBuffer } from "../../kernels/backend.ts";
import { encodeSpqrGroup, spqrWgslHelpers } from "../../kernels/obs_spqr_kernel.ts";
import { minMaxGrid, quantizeStatistics } from "../../core/_bilevel_grid.ts";
import { prng } from "../../core/prng.ts";
import { testGpu } from "./_gpu.ts";

/** Runs `expr` (of `x: f32` and `m: u32`) over pairs (x[i], m[i]) on the GPU. */
async function mapOnGpu(
  expr: string,
  x: Float32Array,
  m: Uint32Array,
): Promise<Float32Array | null> {
  const gpu = await testGpu();
  if (!gpu) return null;
  const code = `
@group(0) @binding(0) var<storage, read> xs: array<f32>;
@group(0) @binding(1) var<storage, read> ms: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
${spqrWgslHelpers(7)}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= arrayLength(&out)) { return; }
  let x = xs[i]; let m = ms[i];
  out[i] = ${expr};
}`;
  const pipeline = cachedPipeline(gpu, `test-spqr-helpers:${expr}`, () => code);
  const xb = uploadBuffer(gpu, x), mb = uploadBuffer(gpu, m), ob = storageBuffer(gpu, x.byteLength);
  const batch = new GpuBatch(gpu);
  batch.dispatch(pipeline, [xb, mb, ob], [Math.ceil(x.length / 64)]);
  const { data } = await batch.submit([ob]);
  for (const b of [xb, mb, ob]) b.destroy();
  return new Float32Array(data[0]!);
}

Deno.test("spqrDiv() divides by an integer in [1, 255] correctly rounded, as Math.fround(d / m)", async () => {
  const rng = prng(3);
  const count = 20_000;
  const x = new Float32Array(count), m = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    m[i] = 1 + Math.floor(rng.uniform() * 255);
    // Wide exponents, exact multiples (ties need m even: q·m/2^k) and float16 differences.
    const kind = i % 4;
    x[i] = kind === 0
      ? Math.exp(rng.normal() * 20)
      : kind === 1
      ? Math.fround(Math.floor(rng.uniform() * 2 ** 24) * m[i]! * 2 ** -30)
      : kind === 2
      ? Math.fround((2 * Math.floor(rng.uniform() * 2 ** 23) + 1) * 2 ** -24 * m[i]! / 2)
      : Math.f16round(rng.uniform() * 8) - Math.f16round(rng.uniform());
    if (!(x[i]! >= 0)) x[i] = -x[i]!;
  }
  x[0] = 0;
  const got = await mapOnGpu("spqrDiv(x, m)", x, m);
  if (!got) return;
  let wrong = 0, first = -1;
  for (let i = 0; i < count; i++) {
    if (!Object.is(got[i], Math.fround(x[i]! / m[i]!))) {
      wrong++;
      if (first < 0) first = i;
    }
  }
  assert.equal(wrong, 0, `first: ${x[first]} / ${m[first]} gave ${got[first]}`);
});

Deno.test("spqrF16() rounds to float16 as Math.f16round, ties to even and overflow to ±∞", async () => {
  const rng = prng(5);
  const count = 20_000;
  const x = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const kind = i % 4;
    const sign = rng.uniform() < 0.5 ? -1 : 1;
    x[i] = kind === 0
      ? sign * Math.exp(rng.normal() * 6)
      // Exactly halfway between two float16 values, normal and subnormal.
      : kind === 1
      ? sign * (Math.floor(rng.uniform() * 2048) + 0.5) * 2 ** (Math.floor(rng.uniform() * 30) - 24)
      : kind === 2
      ? sign * (65504 + rng.uniform() * 40)
      : sign * rng.uniform() * 2 ** -20;
  }
  const got = await mapOnGpu("spqrF16(x)", x, new Uint32Array(count));
  if (!got) return;
  let wrong = 0, first = -1;
  for (let i = 0; i < count; i++) {
    if (!Object.is(got[i], Math.f16round(x[i]!))) {
      wrong++;
      if (first < 0) first = i;
    }
  }
  assert.equal(wrong, 0, `first: ${x[first]} gave ${got[first]}, not ${Math.f16round(x[first]!)}`);
});

Deno.test("a group's fit and second level give minMaxGrid() and quantizeStatistics()'s codes, ranges and values", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const rng = prng(8);
  // Runs of 5 rows (the last one of 2); group k = 1 of 3 is columns [0, 4) of W.
  const rows = 17, n = 4, groups = 3, sgs = 5, k = 1, rowGroups = Math.ceil(rows / sgs);
  const w = Float32Array.from({ length: rows * n }, () => 0.05 * rng.normal());
  for (let r = 11; r < 15; r++) w.copyWithin(r * n, 10 * n, 11 * n); // a constant run
  w.copyWithin(3 * n, 4 * n, 5 * n); // a repeated value inside a run
  const bufs = {
    W: uploadBuffer(gpu, w),
    U: uploadBuffer(gpu, Float32Array.from({ length: n * n }, (_, i) => i % (n + 1) === 0 ? 1 : 0)),
    scales: storageBuffer(gpu, rows * groups * 4),
    zeros: storageBuffer(gpu, rows * groups * 4),
    spqrVar: storageBuffer(gpu, n * 4),
    spqrState: uploadBuffer(gpu, Uint32Array.of(0x7f800000, 0xffffffff)),
    statRanges: storageBuffer(gpu, 4 * groups * rowGroups * 4),
    statCodes: storageBuffer(gpu, 2 * rows * groups * 4),
  };
  const batch = new GpuBatch(gpu);
  const spec = { maxq: 7, groupSize: n, outliers: false, simplified: false };
  const shape = { tau: Infinity, statisticGroupSize: sgs, scaleMaxq: 7, zeroMaxq: 15 };
  encodeSpqrGroup(batch, spec, shape, bufs, {
    rows,
    run0: 0,
    n,
    pos: 0,
    len: n,
    k,
    groups,
    rowGroups,
  });
  const { data } = await batch.submit([bufs.scales, bufs.zeros, bufs.statCodes, bufs.statRanges]);
  for (const b of Object.values(bufs)) b.destroy();
  const gs = new Float32Array(data[0]!), gz = new Float32Array(data[1]!);
  const codes = new Uint32Array(data[2]!), ranges = new Float32Array(data[3]!);
  // The CPU reference: each row's min–max grid, then the runs' second level.
  const cpuS = new Float32Array(rows * groups), cpuZ = new Float32Array(rows * groups);
  for (let r = 0; r < rows; r++) {
    const row = Array.from(w.subarray(r * n, r * n + n));
    const g = minMaxGrid(Math.min(...row), Math.max(...row), 7);
    cpuS[r * groups + k] = g.scale;
    cpuZ[r * groups + k] = g.zero;
  }
  const sc = new Uint8Array(rows * groups), zc = new Uint8Array(rows * groups);
  for (let b = 0; b < rowGroups; b++) {
    const start = b * sgs * groups + k, len = Math.min(sgs, rows - b * sgs);
    const s = quantizeStatistics(cpuS, start, groups, len, 3, sc);
    const z = quantizeStatistics(cpuZ, start, groups, len, 4, zc);
    assert.deepEqual(
      [0, 1, 2, 3].map((q) => ranges[q * groups * rowGroups + k * rowGroups + b]),
      [s.lo, s.hi, z.lo, z.hi],
      `run ${b}`,
    );
  }
  assert.equal(ranges[2 * rowGroups + 2], ranges[groups * rowGroups + 2 * rowGroups + 2]); // constant run: lo = hi
  for (let r = 0; r < rows; r++) {
    const at = r * groups + k;
    assert.equal(codes[at], sc[at], `scale code of row ${r}`);
    assert.equal(codes[rows * groups + at], zc[at], `zero code of row ${r}`);
    assert(Object.is(gs[at], cpuS[at]) && Object.is(gz[at], cpuZ[at]), `decoded row ${r}`);
    // The other groups are untouched.
    assert.equal(gs[r * groups], 0);
  }
});
