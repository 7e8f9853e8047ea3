/**
 * Library-internal: the queries, keys and values as attention reads them, on
 * WebGPU, in place in a block's q/k/v rows [rows, qDim + 2·kvDim] after the
 * rotary embedding: every query and key head times the layer's `qkHadamard`
 * (one workgroup per head of a token), then the keys and values
 * fake-quantized by its `kvQuant` (one workgroup per group, a head of a
 * token). The CPU reference is `attentionInputs` of `forward.ts` (the grids:
 * `fakeQuantizeKvCache` of `quantizers/kv_cache_quant.ts`), whose quantized
 * values the kernels reproduce exactly on the same inputs (see
 * {@linkcode kvQuantWgsl}). The whole-sequence forward pass and the decode
 * session run it before attention, so the decode session's cache holds the
 * quantized keys and values. Web-standard only.
 *
 * @module
 */

import {
  cachedPipeline,
  foldGroups,
  type Gpu,
  type GpuBatch,
  uploadBuffer,
} from "../kernels/backend.ts";
import { checkKvCacheQuant, type KvCacheQuant } from "../quantizers/kv_cache_quant.ts";
import { actQuantWgsl, DIVISION } from "./_gpu_act_quant.ts";
import { reduce, WG_FLAT } from "./_gpu_kernels.ts";
import { onlineRotation } from "./_online_hadamard.ts";
import { type LlamaConfig, llamaDims, type LlamaLayer } from "./model.ts";

/** Threads per workgroup (one workgroup per head of a token). */
const WG = 64;

/**
 * WGSL of the query/key rotation: each head x [n] of a row becomes x·Q (Q
 * [n, n] row-major, the layer's `onlineRotation(qkHadamard).dense()`), the
 * head copied to workgroup memory first; sums in float32.
 *
 * @param n The head width.
 * @returns WGSL source.
 */
export function qkRotationWgsl(n: number): string {
  return `struct P { rows: u32, heads: u32, ld: u32 }
@group(0) @binding(0) var<storage, read_write> X: array<f32>;
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
var<workgroup> v: array<f32, ${n}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  ${WG_FLAT}
  if (wgi >= p.rows * p.heads) { return; }
  let o = (wgi / p.heads) * p.ld + (wgi % p.heads) * ${n}u;
  for (var i = lid; i < ${n}u; i += ${WG}u) { v[i] = X[o + i]; }
  workgroupBarrier();
  for (var j = lid; j < ${n}u; j += ${WG}u) {
    var s = 0.0;
    for (var i = 0u; i < ${n}u; i++) { s += v[i] * Q[i * ${n}u + j]; }
    X[o + j] = s;
  }
}
`;
}

/**
 * WGSL of the asymmetric KV cache grid (int8: M = 255, int4: M = 15), one
 * workgroup per group. The CPU computes, in float64 rounded to float32 where
 * it says fl32: lo = fl32(c·min(min x, 0)), hi = fl32(c·max(max x, 0)),
 * s = fl32((hi − lo)/M), z = round(fl32(−lo/s)), q = clamp(round(fl32(x/s)) + z,
 * 0, M), x̂ = fl32(s·(q − z)). The kernel rounds each the same way:
 *
 * - c·|lo| rounds twice, to float64 then to float32 (c = clipRatio is a
 *   float64): `clip` multiplies the 24-bit significand by c's 53-bit one in
 *   32-bit limbs and rounds the 77-bit product to 53 bits, then to 24, ties
 *   to even both times.
 * - hi − lo rounds to float64 (`span`: exact up to an exponent gap of 29,
 *   else the smaller operand rounded to the larger's float64 grid), then
 *   `over` divides that 53-bit integer by M by long division and rounds the
 *   quotient once to float32, which equals the CPU's quotient rounded to
 *   float64 and then to float32: the exact quotient has at most 50 integer
 *   bits and a periodic fraction of period 4 (M = 15) or 8 (M = 255), so
 *   the float64 rounding can never land on a float32 midpoint it was not on.
 * - −lo/s and x/s are quotients of float32 values (`quo` of
 *   `_gpu_act_quant.ts`), whose double rounding is innocuous; q·s is a
 *   correctly rounded product. Only a device that flushes subnormal floats
 *   can differ (groups whose range is below about 2⁻¹²²).
 *
 * @param M The largest code (255 or 15).
 * @returns WGSL source.
 */
export function kvQuantWgsl(M: 255 | 15): string {
  return `struct P { rows: u32, width: u32, per: u32, ld: u32, off: u32, ch: u32, cl: u32, ce: i32 }
@group(0) @binding(0) var<storage, read_write> X: array<f32>;
@group(0) @binding(1) var<uniform> p: P;
var<workgroup> red: array<vec2f, ${WG}>;
${DIVISION}
// a·b as (high, low) 32-bit words.
fn mul32(a: u32, b: u32) -> vec2u {
  let al = a & 0xffffu;
  let ah = a >> 16u;
  let bl = b & 0xffffu;
  let bh = b >> 16u;
  let ll = al * bl;
  let lh = al * bh;
  let mid = lh + ah * bl;
  let cm = select(0u, 0x10000u, mid < lh);
  let lo = ll + (mid << 16u);
  return vec2u(ah * bh + (mid >> 16u) + cm + select(0u, 1u, lo < ll), lo);
}

// fl32(fl64(a·c)) for a ≥ 0, c = (ch·2^32 + cl)·2^ce with ch in [2^20, 2^21).
fn clip(a: f32) -> f32 {
  if (a == 0.0) { return 0.0; }
  let A = sig(a);
  let x = mul32(A.m, p.cl);
  let y = mul32(A.m, p.ch);
  // P = A.m·C in [2^75, 2^77) as three words.
  let p0 = x.y;
  let p1 = x.x + y.y;
  let p2 = y.x + select(0u, 1u, p1 < x.x);
  let s1 = 96u - countLeadingZeros(p2) - 53u;
  var r0 = (p0 >> s1) | (p1 << (32u - s1));
  var r1 = (p1 >> s1) | (p2 << (32u - s1));
  let d1 = p0 & ((1u << s1) - 1u);
  let h1 = 1u << (s1 - 1u);
  if (d1 > h1 || (d1 == h1 && (r0 & 1u) == 1u)) {
    r0 = r0 + 1u;
    if (r0 == 0u) { r1 = r1 + 1u; }
  }
  // R = r1·2^32 + r0 in [2^52, 2^53]: round to 24 bits.
  let s2 = select(29u, 30u, r1 >= 0x200000u);
  var k = (r1 << (32u - s2)) | (r0 >> s2);
  let d2 = r0 & ((1u << s2) - 1u);
  let h2 = 1u << (s2 - 1u);
  if (d2 > h2 || (d2 == h2 && (k & 1u) == 1u)) { k = k + 1u; }
  return ldexp(f32(k), i32(s1 + s2) + A.e - 23 + p.ce);
}

// fl32(fl64(a + b) / ${M}) for a, b ≥ 0, not both 0.
fn span(a: f32, b: f32) -> f32 {
  var B = sig(min(a, b));
  let A = sig(max(a, b));
  if (min(a, b) == 0.0) { B = Sig(0u, A.e); }
  let d = u32(A.e - B.e);
  let sh = select(0u, d - 29u, d > 29u);
  // the smaller significand on the float64 grid of the sum (ties to even)
  var rs = 0u;
  if (sh == 0u) { rs = B.m; } else if (sh < 32u) {
    rs = B.m >> sh;
    let rem = B.m & ((1u << sh) - 1u);
    let half = 1u << (sh - 1u);
    if (rem > half || (rem == half && (rs & 1u) == 1u)) { rs = rs + 1u; }
  }
  // N = A.m·2^(d − sh) + rs < 2^53, in units of 2^(B.e + sh − 23)
  let t = d - sh;
  var nh = select(0u, A.m >> (32u - t), t > 0u);
  var nl = A.m << t;
  nl = nl + rs;
  if (nl < rs) { nh = nh + 1u; }
  return over(nh, nl, B.e + i32(sh));
}

// fl32(N·2^(e − 23) / ${M}) for 2^23 ≤ N = nh·2^32 + nl < 2^53: long division, rounded once.
fn over(nh: u32, nl: u32, e: i32) -> f32 {
  var r = 0u;
  var k = 0u;
  var cnt = 0u;
  var pos = 0;
  var sticky = false;
  for (var b = 52; b > -28; b--) {
    var bit = 0u;
    if (b >= 32) { bit = (nh >> u32(b - 32)) & 1u; } else if (b >= 0) { bit = (nl >> u32(b)) & 1u; }
    r = 2u * r + bit;
    var qb = 0u;
    if (r >= ${M}u) { r = r - ${M}u; qb = 1u; }
    if (cnt < 25u) {
      if (cnt > 0u || qb == 1u) { k = 2u * k + qb; cnt = cnt + 1u; pos = b; }
    } else if (qb == 1u) { sticky = true; }
  }
  sticky = sticky || r != 0u;
  var m = k >> 1u;
  if ((k & 1u) == 1u && (sticky || (m & 1u) == 1u)) { m = m + 1u; }
  return ldexp(f32(m), pos + 1 + e - 23);
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  ${WG_FLAT}
  if (wgi >= p.rows) { return; }
  let o = (wgi / p.per) * p.ld + p.off + (wgi % p.per) * p.width;
  var m = vec2f(0.0);
  for (var i = lid; i < p.width; i += ${WG}u) {
    let x = X[o + i];
    m = max(m, vec2f(-x, x));
  }
  red[lid] = m;
${reduce("max", WG)}
  var nlo = clip(red[0].x);
  var hi = clip(red[0].y);
  if (nlo == 0.0 && hi == 0.0) {
    nlo = 1.0;
    hi = 1.0;
  }
  let s = span(hi, nlo);
  let z = round(quo(nlo, s, 23u, -126));
  for (var i = lid; i < p.width; i += ${WG}u) {
    let q = clamp(round(quo(X[o + i], s, 23u, -126)) + z, 0.0, ${M}.0);
    X[o + i] = s * (q - z);
  }
}
`;
}

/** A layer's query/key rotation and KV cache quantization on the GPU. */
export interface GpuAttentionInputs {
  /** Q [hd, hd] of the layer's `qkHadamard` (shared by layers with the same one), or null. */
  readonly rotation: GPUBuffer | null;
  /** The layer's KV cache quantization (checked), or null. */
  readonly kvQuant: KvCacheQuant | null;
}

/**
 * Checks a layer's `qkHadamard` and `kvQuant` as the CPU forward pass does.
 *
 * @param config The configuration.
 * @param layer The layer.
 * @param i Its index, for the message.
 * @throws {RangeError} for a rotation whose order is not the head width, or a bad `kvQuant`.
 */
export function checkAttentionInputs(
  config: LlamaConfig,
  layer: Pick<LlamaLayer, "qkHadamard" | "kvQuant">,
  i: number,
): void {
  const { headDim } = llamaDims(config);
  if (layer.qkHadamard && layer.qkHadamard.n !== headDim) {
    throw new RangeError(
      `Cannot upload layer ${i}: 'qkHadamard.n' must be the head width ${headDim}: ` +
        `current value is ${layer.qkHadamard.n}`,
    );
  }
  if (layer.kvQuant) {
    const { asymmetric = false, clipRatio = 1 } = checkKvCacheQuant(layer.kvQuant);
    if (asymmetric && !(clipRatio >= 2 ** -1022)) {
      throw new RangeError(
        `Cannot upload layer ${i}: 'kvQuant.clipRatio' must be a normal float64 on WebGPU: ` +
          `current value is ${clipRatio}`,
      );
    }
  }
}

/**
 * Uploads the layers' query/key rotations (one buffer per distinct one).
 *
 * @param gpu The GPU.
 * @param layers The layers (checked by {@linkcode checkAttentionInputs}).
 * @param label Buffer label prefix.
 * @returns One plan per layer.
 */
export function uploadAttentionInputs(
  gpu: Gpu,
  layers: readonly Pick<LlamaLayer, "qkHadamard" | "kvQuant">[],
  label: string,
): GpuAttentionInputs[] {
  const rotations = new Map<string, GPUBuffer>();
  return layers.map((l) => {
    let rotation: GPUBuffer | null = null;
    if (l.qkHadamard) {
      const key = `${l.qkHadamard.n}/${l.qkHadamard.seed}`;
      rotation = rotations.get(key) ?? null;
      if (rotation === null) {
        const q = Float32Array.from(onlineRotation(l.qkHadamard).dense());
        rotations.set(key, rotation = uploadBuffer(gpu, q, `${label}:qk-hadamard:${key}`));
      }
    }
    return { rotation, kvQuant: l.kvQuant ?? null };
  });
}

/** The distinct buffers of the plans (to destroy them). */
export function attentionInputBuffers(plans: readonly GpuAttentionInputs[]): GPUBuffer[] {
  return [...new Set(plans.flatMap((p) => (p.rotation ? [p.rotation] : [])))];
}

/** c = C·2^ce for a normal float64 c > 0, C = ch·2^32 + cl its 53-bit significand. */
function float64Significand(c: number): { ch: number; cl: number; ce: number } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, c);
  const hi = view.getUint32(0), lo = view.getUint32(4);
  return { ch: (hi & 0xfffff) | 0x100000, cl: lo, ce: ((hi >>> 20) & 0x7ff) - 1075 };
}

/**
 * Records the fake quantization of groups of `width` values in place:
 * group g starts at ⌊g / per⌋·ld + off + (g mod per)·width.
 *
 * @param batch The batch.
 * @param x The rows, overwritten.
 * @param spec The KV cache quantization (checked).
 * @param shape Groups, group width, groups per row, row stride, first offset.
 */
export function encodeKvQuant(
  batch: GpuBatch,
  x: GPUBuffer,
  spec: KvCacheQuant,
  shape: { groups: number; width: number; per: number; ld: number; off: number },
): void {
  const { groups, width, per, ld, off } = shape;
  const { format, asymmetric = false, clipRatio = 1 } = spec;
  const where = [{ u32: groups }, { u32: width }];
  if (!asymmetric) {
    const kernel = { format, static: false, kept: null, groups: true } as const;
    const pipeline = cachedPipeline(
      batch.gpu,
      `llama:actquant:${format}:false:null:groups`,
      () => actQuantWgsl(kernel),
    );
    const u = batch.uniform([...where, { f32: 0 }, { u32: per }, { u32: ld }, { u32: off }]);
    batch.dispatch(pipeline, [x, u], foldGroups(batch.gpu, groups));
    return;
  }
  const M = format === "int8" ? 255 : 15;
  const pipeline = cachedPipeline(batch.gpu, `llama:kvquant:${M}`, () => kvQuantWgsl(M));
  const { ch, cl, ce } = float64Significand(clipRatio);
  const u = batch.uniform([
    ...where,
    { u32: per },
    { u32: ld },
    { u32: off },
    { u32: ch },
    { u32: cl },
    { i32: ce },
  ]);
  batch.dispatch(pipeline, [x, u], foldGroups(batch.gpu, groups));
}

/**
 * Records, in place in q/k/v rows [rows, qDim + 2·kvDim] after the rotary
 * embedding, what `attentionInputs` computes: query and key heads times
 * the rotation, then the keys and values fake-quantized.
 *
 * @param batch The batch.
 * @param config The configuration.
 * @param qkv The q/k/v rows, overwritten.
 * @param plan The layer's plan.
 * @param rows Rows (tokens).
 */
export function encodeAttentionInputs(
  batch: GpuBatch,
  config: LlamaConfig,
  qkv: GPUBuffer,
  plan: GpuAttentionInputs,
  rows: number,
): void {
  const { nHeads, nKvHeads } = config;
  const { headDim: hd, qDim, kvDim } = llamaDims(config);
  const ld = qDim + 2 * kvDim;
  if (plan.rotation) {
    const heads = nHeads + nKvHeads;
    const pipeline = cachedPipeline(batch.gpu, `llama:qk-rotation:${hd}`, () => qkRotationWgsl(hd));
    const u = batch.uniform([{ u32: rows }, { u32: heads }, { u32: ld }]);
    batch.dispatch(pipeline, [qkv, plan.rotation, u], foldGroups(batch.gpu, rows * heads));
  }
  if (plan.kvQuant) {
    // The key heads, then the value heads, of each row.
    const per = 2 * nKvHeads;
    encodeKvQuant(batch, qkv, plan.kvQuant, { groups: rows * per, width: hd, per, ld, off: qDim });
  }
}
