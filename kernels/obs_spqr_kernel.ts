/**
 * The kernels of SpQR's decider in the GPU OBS loop (`kernels/obs_kernel.ts`
 * runs the loop; this file owns what SpQR adds to it):
 *
 * - the outlier threshold: τ times the mean over columns of the column's
 *   variance (computed by the host on the weights as given) divided by
 *   [U]_jj², with U the factor the GPU just computed (one workgroup);
 * - the first-level fit of one group, one thread per output row: the
 *   reference's leave-one-out screening of likely outliers, then the min–max
 *   grid of the group's current (already updated) weights;
 * - the second level of one group, one thread per run of
 *   `statisticGroupSize` rows: the run's [min, max] rounded to float16, each
 *   scale (and zero point) quantized on the grid between them and replaced
 *   by the value its code decodes to;
 * - the WGSL of the per-weight decision used by the in-block kernel: round
 *   onto the group's decoded grid, or keep the weight in float16 when its OBS
 *   error exceeds the threshold.
 *
 * The CPU reference of each part is `core/_bilevel_grid.ts` (grids, codes,
 * the second level) and the "spqr" decider of the CPU solver; the arithmetic
 * that the stored form depends on is exact here: the second level's step
 * (hi − lo)/maxq is divided in integer arithmetic (correctly rounded, as the
 * host's `statisticValue`), float16 rounding is done on the bits (ties to
 * even, as `Math.f16round`), and lo + code·step is kept from being fused into
 * one fma (WGSL rounds each +, − and × correctly), so that the host decodes
 * the stored statistics to the very values the loop used. Web-standard only.
 *
 * @see Dettmers et al., "SpQR" (2023), Algorithm 1 and §4.1–4.2.
 *
 * @module
 */

import { cachedPipeline, foldGroups, type GpuBatch } from "./backend.ts";

/** The SpQR part of the in-block kernel's specialization. */
export interface ObsSpqrSpec {
  /** Largest first-level code, 2^bits − 1 (at most 255). */
  readonly maxq: number;
  /** Columns per first-level group. */
  readonly groupSize: number;
  /** Whether outliers are possible (a finite threshold): screening and the outlier test. */
  readonly outliers: boolean;
  /** Fit on all of a group's weights, without the leave-one-out screening. */
  readonly simplified: boolean;
}

const lit = (x: number): string => Number.isInteger(x) ? `${x}.0` : `${x}`;

/**
 * WGSL helpers shared by the SpQR kernels: the min–max grid, codes and
 * values on it, exact division by a small integer, float16 rounding.
 *
 * @param maxq Largest first-level code.
 * @returns WGSL source (functions only).
 */
export function spqrWgslHelpers(maxq: number): string {
  return `
const SPQR_EPS: f32 = 1e-9;
fn spqrInf() -> f32 { return bitcast<f32>(0x7f800000u); }
// d / m correctly rounded (ties to even) for finite d >= 0 and an integer m in [1, 255],
// in integer arithmetic: the device's division need not be correctly rounded.
fn spqrDiv(d: f32, m: u32) -> f32 {
  let b = bitcast<u32>(d);
  var e = i32(b >> 23u);
  if (d <= 0.0 || m == 1u || e >= 255) { return d / f32(m); }
  var mant = b & 0x7fffffu;
  if (e == 0) { e = 1; } else { mant = mant | 0x800000u; }
  let lz = countLeadingZeros(mant) - 8u;
  mant = mant << lz;
  e = e - i32(lz);
  // d = mant·2^(e − 150) with mant in [2^23, 2^24); d/m = (num/m)·2^(e − 158).
  let num = mant << 8u;
  let q = num / m;
  let rem = num % m;
  let s = (31u - countLeadingZeros(q)) - 23u;
  var sig = q >> s;
  var up = false;
  if (s == 0u) {
    up = 2u * rem > m || (2u * rem == m && (sig & 1u) == 1u);
  } else {
    let dropped = q & ((1u << s) - 1u);
    let half = 1u << (s - 1u);
    up = dropped > half || (dropped == half && (rem != 0u || (sig & 1u) == 1u));
  }
  var ex = e + i32(s) - 8;
  if (up) { sig = sig + 1u; }
  if (sig == 0x1000000u) { sig = sig >> 1u; ex = ex + 1; }
  if (ex <= 0) { return d / f32(m); }
  return bitcast<f32>((u32(ex) << 23u) | (sig & 0x7fffffu));
}
// Math.f16round: the nearest float16 value (ties to even), ±∞ beyond its range.
fn spqrF16(x: f32) -> f32 {
  let b = bitcast<u32>(x);
  let a = b & 0x7fffffffu;
  if (a >= 0x7f800000u) { return x; }
  let e = i32(a >> 23u) - 127;
  if (e >= 16) { return bitcast<f32>((b & 0x80000000u) | 0x7f800000u); }
  let qe = max(e, -14) - 10;
  let r = round(bitcast<f32>(a) * ldexp(1.0, -qe)) * ldexp(1.0, qe);
  if (r > 65504.0) { return bitcast<f32>((b & 0x80000000u) | 0x7f800000u); }
  return bitcast<f32>((b & 0x80000000u) | bitcast<u32>(r));
}
// The reference's find_params without widening: step (hi − lo)/maxq, zero −lo/step.
fn spqrGrid(lo0: f32, hi0: f32) -> vec2<f32> {
  var lo = lo0; var hi = hi0;
  if (lo == hi) { lo = -1.0; hi = 1.0; }
  let scale = spqrDiv(hi - lo, ${maxq}u);
  return vec2<f32>(scale, -lo / scale);
}
fn spqrCode(x: f32, g: vec2<f32>) -> f32 {
  return clamp(round(x / max(g.x, SPQR_EPS) + g.y), 0.0, ${lit(maxq)});
}
fn spqrValue(c: f32, g: vec2<f32>) -> f32 { return g.x * (c - g.y); }
fn spqrTerm(x: f32, d: f32, g: vec2<f32>) -> f32 {
  let t = (spqrValue(spqrCode(x, g), g) - x) / d;
  return t * t;
}
`;
}

/**
 * WGSL of the per-weight decision in the in-block kernel: it reads `w`, `d`,
 * `r`, `pos` and (with outliers) `spqrThr`, the threshold, and sets `q`, `c`
 * (the code) and `pruned` (here: outlier).
 * Needs the bindings codes, scales, zeros, gIdx, mask and spqrState.
 *
 * @param spec The SpQR specialization.
 * @returns WGSL statements.
 */
export function spqrDecisionWgsl(spec: ObsSpqrSpec): string {
  return `    let gk = gIdx[pos];
    let grid = vec2<f32>(scales[r * prm.groups + gk], zeros[r * prm.groups + gk]);
    var c = spqrCode(w, grid);
    q = spqrValue(c, grid);
${
    spec.outliers
      ? `    let eq = (w - q) / d;
    if (eq * eq > spqrThr) {
      // An outlier: kept in float16, stored with the code of 0.
      pruned = true;
      q = spqrF16(w);
      // The first overflow in processing order (exact while rows·n < 2^32).
      if (abs(q) > 65504.0) { atomicMin(&spqrState[1], pos * prm.rowsAll + prm.row0 + r); }
      c = clamp(round(grid.y), 0.0, ${lit(spec.maxq)});
    }`
      : ""
  }`;
}

/**
 * WGSL of the first-level fit of one group (one thread per row). Bindings:
 * 0 = W, 1 = U, 2 = scales, 3 = zeros, 4 = spqrState, 5 = parameters.
 *
 * @param spec The SpQR specialization.
 * @returns WGSL source.
 */
export function spqrFitWgsl(spec: ObsSpqrSpec): string {
  const screen = spec.outliers && !spec.simplified;
  return `
struct Params { rows: u32, n: u32, pos: u32, len: u32, groups: u32, k: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read> W: array<f32>;
@group(0) @binding(1) var<storage, read> U: array<f32>;
@group(0) @binding(2) var<storage, read_write> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> zeros: array<f32>;
@group(0) @binding(4) var<storage, read> spqrState: array<u32>;
@group(0) @binding(5) var<uniform> prm: Params;
${spqrWgslHelpers(spec.maxq)}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = gid.x + gid.y * nwg.x * 64u;
  if (r >= prm.rows) { return; }
  let n = prm.n; let len = prm.len; let row = r * n + prm.pos;
  var lo = spqrInf(); var hi = -spqrInf();
${
    screen
      ? `  let thr = bitcast<f32>(spqrState[0]);
  // The smallest and largest two, so that each leave-one-out range is O(1).
  var min1 = spqrInf(); var min2 = spqrInf(); var max1 = -spqrInf(); var max2 = -spqrInf();
  var iMin = 0xffffffffu; var iMax = 0xffffffffu;
  for (var t = 0u; t < len; t++) {
    let x = W[row + t];
    if (x < min1) { min2 = min1; min1 = x; iMin = t; } else if (x < min2) { min2 = x; }
    if (x > max1) { max2 = max1; max1 = x; iMax = t; } else if (x > max2) { max2 = x; }
  }
  let g0 = spqrGrid(min1, max1);
  let gMin = spqrGrid(min2, select(max1, max2, iMin == iMax));
  let gMax = spqrGrid(select(min1, min2, iMax == iMin), max2);
  var base = 0.0; var looMin = 0.0; var looMax = 0.0;
  for (var t = 0u; t < len; t++) {
    let x = W[row + t]; let d = U[(prm.pos + t) * (n + 1u)];
    base += spqrTerm(x, d, g0);
    if (t != iMin) { looMin += spqrTerm(x, d, gMin); }
    if (t != iMax) { looMax += spqrTerm(x, d, gMax); }
  }
  // Likely outliers (their removal lowers the group's error by more than the
  // threshold) take the mean of the others in the fit.
  var sum = 0.0; var count = 0u;
  for (var sweep = 0u; sweep < 2u; sweep++) {
    let mean = sum / f32(max(count, 1u));
    for (var t = 0u; t < len; t++) {
      let x = W[row + t];
      var gain = base;
      if (len > 1u) {
        if (t == iMin) { gain = base - looMin; } else if (t == iMax) { gain = base - looMax; }
        else { gain = spqrTerm(x, U[(prm.pos + t) * (n + 1u)], g0); }
      }
      let likely = gain > thr;
      if (sweep == 0u) {
        if (!likely) { sum += x; count += 1u; }
      } else {
        let v = select(x, mean, likely);
        lo = min(lo, v); hi = max(hi, v);
      }
    }
  }`
      : `  for (var t = 0u; t < len; t++) { let x = W[row + t]; lo = min(lo, x); hi = max(hi, x); }`
  }
  let g = spqrGrid(lo, hi);
  scales[r * prm.groups + prm.k] = g.x;
  zeros[r * prm.groups + prm.k] = g.y;
}
`;
}

/**
 * WGSL of the second level of one group (one thread per run of rows).
 * Bindings: 0 = scales, 1 = zeros, 2 = statCodes (u32: scale codes
 * [rows, groups], then zero-point codes), 3 = ranges (f32: scaleLo, scaleHi,
 * zeroLo, zeroHi, each [groups, rowGroups]), 4 = parameters.
 *
 * @returns WGSL source.
 */
export function spqrStatisticsWgsl(): string {
  const run = (name: string, maxq: string, codeOff: string, rangeOff: string): string => `
  {
    var mn = spqrInf(); var mx = -spqrInf();
    for (var i = r0; i < r1; i++) { let v = ${name}[i * prm.groups + prm.k]; mn = min(mn, v); mx = max(mx, v); }
    let lo = spqrF16(mn);
    let hi = max(spqrF16(mx), lo);
    let step = spqrDiv(hi - lo, ${maxq});
    for (var i = r0; i < r1; i++) {
      let at = i * prm.groups + prm.k;
      var c = 0.0;
      if (step > 0.0) { c = clamp(round((${name}[at] - lo) / step), 0.0, f32(${maxq})); }
      statCodes[${codeOff} + at] = u32(c);
      // lo + c·step, the product rounded first (never one fma), as the host decodes it.
      ${name}[at] = lo + max(c * step, -3.4028234663852886e38);
    }
    ranges[${rangeOff} + prm.k * prm.rowGroups + run] = lo;
    ranges[${rangeOff} + prm.groups * prm.rowGroups + prm.k * prm.rowGroups + run] = hi;
  }`;
  return `
struct Params {
  rows: u32, groups: u32, k: u32, sgs: u32, rowGroups: u32, run0: u32, scaleMaxq: u32, zeroMaxq: u32
}
@group(0) @binding(0) var<storage, read_write> scales: array<f32>;
@group(0) @binding(1) var<storage, read_write> zeros: array<f32>;
@group(0) @binding(2) var<storage, read_write> statCodes: array<u32>;
@group(0) @binding(3) var<storage, read_write> ranges: array<f32>;
@group(0) @binding(4) var<uniform> prm: Params;
${spqrWgslHelpers(1)}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let b = gid.x;
  let r0 = b * prm.sgs;
  if (r0 >= prm.rows) { return; }
  let r1 = min(prm.rows, r0 + prm.sgs);
  let run = prm.run0 + b;
${run("scales", "prm.scaleMaxq", "0u", "0u")}
${run("zeros", "prm.zeroMaxq", "prm.rows * prm.groups", "2u * prm.groups * prm.rowGroups")}
}
`;
}

/**
 * WGSL of the outlier threshold τ·(1/n)·Σ_j var_j/[U]_jj² (one workgroup of
 * 256). Bindings: 0 = U, 1 = var [n] (f32), 2 = spqrState (word 0 receives
 * the threshold's bits), 3 = parameters { n, tau }.
 *
 * @returns WGSL source.
 */
export function spqrThresholdWgsl(): string {
  return `
struct Params { n: u32, tau: f32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read> U: array<f32>;
@group(0) @binding(1) var<storage, read> colVar: array<f32>;
@group(0) @binding(2) var<storage, read_write> spqrState: array<u32>;
@group(0) @binding(3) var<uniform> prm: Params;
var<workgroup> part: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  var s = 0.0;
  for (var j = t; j < prm.n; j += 256u) { let d = U[j * (prm.n + 1u)]; s += colVar[j] / (d * d); }
  part[t] = s;
  workgroupBarrier();
  for (var h = 128u; h > 0u; h = h >> 1u) {
    if (t < h) { part[t] = part[t] + part[t + h]; }
    workgroupBarrier();
  }
  if (t == 0u) { spqrState[0] = bitcast<u32>(prm.tau * (part[0] / f32(prm.n))); }
}
`;
}

/** Buffers of SpQR's decider, for one tile of rows (the shared ones are the same in all tiles). */
export interface ObsSpqrBuffers {
  /** Per-column variance over the rows [n] f32, processing order (shared). */
  readonly spqrVar: GPUBuffer;
  /** [threshold bits, first float16 overflow as pos·rows + row] u32 (shared). */
  readonly spqrState: GPUBuffer;
  /** Second-level ranges [4, groups, rowGroups] f32 (shared). */
  readonly statRanges: GPUBuffer;
  /** Second-level codes [2, rows, groups] u32 (the tile's rows). */
  readonly statCodes: GPUBuffer;
}

/** SpQR's sizes and options in one solve. */
export interface ObsSpqrShape {
  /** τ; the threshold kernel runs only where `outliers` is set in the spec. */
  readonly tau: number;
  /** Rows per second-level run (every tile but the last holds whole runs). */
  readonly statisticGroupSize: number;
  /** 2^scaleBits − 1. */
  readonly scaleMaxq: number;
  /** 2^zeroBits − 1. */
  readonly zeroMaxq: number;
}

/**
 * Records the outlier threshold's kernel (once, before the loop).
 *
 * @param batch The batch.
 * @param bufs U and SpQR's shared buffers.
 * @param n Columns.
 * @param tau τ.
 */
export function encodeSpqrThreshold(
  batch: GpuBatch,
  bufs: { U: GPUBuffer } & ObsSpqrBuffers,
  n: number,
  tau: number,
): void {
  const pipeline = cachedPipeline(batch.gpu, "obs-spqr-threshold", spqrThresholdWgsl);
  const params = batch.uniform([{ u32: n }, { f32: tau }, { u32: 0 }, { u32: 0 }]);
  batch.dispatch(pipeline, [bufs.U, bufs.spqrVar, bufs.spqrState, params], [1]);
}

/**
 * Records the fit and the second level of group k (positions [pos, pos +
 * len)) for one tile of rows, on W as the loop left it.
 *
 * @param batch The batch.
 * @param spec The SpQR specialization.
 * @param shape SpQR's sizes.
 * @param bufs The tile's buffers.
 * @param g The group: tile rows, first run of the tile, columns, groups and runs.
 */
export function encodeSpqrGroup(
  batch: GpuBatch,
  spec: ObsSpqrSpec,
  shape: ObsSpqrShape,
  bufs: { W: GPUBuffer; U: GPUBuffer; scales: GPUBuffer; zeros: GPUBuffer } & ObsSpqrBuffers,
  g: {
    rows: number;
    run0: number;
    n: number;
    pos: number;
    len: number;
    k: number;
    groups: number;
    rowGroups: number;
  },
): void {
  const gpu = batch.gpu;
  const fit = cachedPipeline(
    gpu,
    `obs-spqr-fit:${JSON.stringify(spec)}`,
    () => spqrFitWgsl(spec),
    { dynamicUniforms: true },
  );
  const stats = cachedPipeline(gpu, "obs-spqr-statistics", spqrStatisticsWgsl, {
    dynamicUniforms: true,
  });
  const fitParams = batch.uniform([
    { u32: g.rows },
    { u32: g.n },
    { u32: g.pos },
    { u32: g.len },
    { u32: g.groups },
    { u32: g.k },
    { u32: 0 },
    { u32: 0 },
  ]);
  batch.dispatch(
    fit,
    [bufs.W, bufs.U, bufs.scales, bufs.zeros, bufs.spqrState, fitParams],
    foldGroups(gpu, Math.ceil(g.rows / 64)),
  );
  const sgs = shape.statisticGroupSize;
  const statParams = batch.uniform([
    { u32: g.rows },
    { u32: g.groups },
    { u32: g.k },
    { u32: sgs },
    { u32: g.rowGroups },
    { u32: g.run0 },
    { u32: shape.scaleMaxq },
    { u32: shape.zeroMaxq },
  ]);
  batch.dispatch(
    stats,
    [bufs.scales, bufs.zeros, bufs.statCodes, bufs.statRanges, statParams],
    [Math.ceil(Math.ceil(g.rows / sgs) / 64)],
  );
}
