/**
 * Library-internal: attention of new queries against the KV cache of one
 * layer on WebGPU (the kernel that also writes their keys and values into
 * the cache), for token generation. The position of the first new row is
 * read from the GPU's position counter (see `_gpu_decode.ts`). Web-standard only.
 *
 * @module
 */

import { cachedPipeline, foldGroups, type GpuBatch } from "../kernels/backend.ts";
import { tree, WG, WG_FLAT } from "./_gpu_decode.ts";

/** The attention kernel's split of a head's vectors over its threads. */
function headSplit(hdv: number): { groups: number; lanes: number; perThread: number } {
  const lanes = Math.min(hdv, WG);
  return { groups: Math.max(1, Math.floor(WG / hdv)), lanes, perThread: Math.ceil(hdv / lanes) };
}

/** Specialization of {@linkcode cachedAttentionWgsl}. */
export interface CachedAttentionSpec {
  /** Head width. */
  readonly hd: number;
  /** Values per load: 4 (vec4, for head widths that are multiples of 4) or 1. */
  readonly width: 1 | 4;
  /**
   * One new row (a decode step): every query head writes the new key and
   * value of its key/value head into the cache (the same values from each
   * head of a group), so every key and value is then read from the cache,
   * without the branch between the cache and the new rows that keeps the
   * loads of the general kernel from being issued together. Needs the new
   * row's position inside the cache (the decode session checks it).
   */
  readonly single: boolean;
  /**
   * With `single` and `width` 4: the q/k/v row holds the queries and keys
   * before the rotary embedding, which the kernel applies itself (the
   * interleaved pairs of `encodeRope`, turned by the (cos, sin) pairs of row
   * pos of the rotary table) to the queries it stages and the keys it writes.
   */
  readonly rope: boolean;
}

/**
 * Attention of `rows` new queries against the cache, which it extends: query
 * t (row t of the q/k/v buffer, at position pos + t) of head h attends to
 * positions [0, pos + t] of its key/value head h / group, those before pos
 * read from the cache, the new ones from the q/k/v rows; the first query head
 * of each key/value head writes the new keys and values into the cache (rows
 * past its capacity are dropped). With `single` (one new row), every query
 * head writes them and then reads them back from the cache. One workgroup per (t, h): keys in tiles of
 * 128, one thread per key for the scores, a running (online) softmax over the
 * tiles, and the weighted value rows summed by (group of threads, vector of
 * the head; four keys at a time), groups added at the end. With `width` 4 every load is a vec4
 * (the q/k/v rows, the cache and the output then hold whole vec4s: widths
 * and offsets are multiples of 4). Reference: `causalAttention` of
 * `forward.ts` over the whole sequence, rows pos… of its output.
 *
 * @param spec Head width and load width.
 * @returns WGSL source.
 */
export function cachedAttentionWgsl(spec: CachedAttentionSpec): string {
  const { hd, width: W, single, rope } = spec;
  if (rope && (!single || W !== 4)) {
    throw new RangeError(
      "Cannot fuse the rotary embedding into attention of several rows or scalars",
    );
  }
  // Vector i of a query or key row, rotated by the (cos, sin) pairs of table row p0 when the
  // kernel rotates.
  const turn = (e: string) => rope ? `turn(${e}, CS[p0 * HDV + i])` : e;
  const T = W === 4 ? "vec4<f32>" : "f32";
  const HDV = hd / W;
  const { groups: G, lanes: LN, perThread: DPT } = headSplit(HDV);
  // Element offsets to vector indices (exact: every offset is a multiple of W).
  const v = (e: string) => W === 4 ? `(${e}) / 4u` : e;
  const dotv = W === 4 ? "dot(a, b)" : "a * b";
  const finish = G === 1
    ? `  if (busy) {
    for (var j = 0u; j < ${DPT}u; j++) {
      let d = d0 + j * ${LN}u;
      if (d < HDV) { O[${v("oo")} + d] = acc[j] * inv; }
    }
  }`
    : `  accs[lid] = acc[0];
  workgroupBarrier();
  if (lid < HDV) {
    var a = ${T}(0.0);
    for (var gg = 0u; gg < ${G}u; gg++) { a = a + accs[gg * HDV + lid]; }
    O[${v("oo")} + lid] = a * inv;
  }`;
  return `struct P { rows: u32, nHeads: u32, group: u32, kvDim: u32, ld: u32, od: u32, scale: f32,
  kOff: u32, vOff: u32, cap: u32 }
@group(0) @binding(0) var<storage, read_write> O: array<${T}>;
@group(0) @binding(1) var<storage, read> QKV: array<${T}>;
@group(0) @binding(2) var<storage, read_write> Kc: array<${T}>;
@group(0) @binding(3) var<storage, read_write> Vc: array<${T}>;
@group(0) @binding(4) var<storage, read> pos: array<u32>;
@group(0) @binding(5) var<uniform> p: P;
const HD = ${hd}u;
const HDV = ${HDV}u;
var<workgroup> qs: array<${T}, ${HDV}>;
var<workgroup> red: array<f32, ${WG}>;
var<workgroup> pr: array<f32, ${WG}>;
${G > 1 ? `var<workgroup> accs: array<${T}, ${WG}>;` : ""}
fn dotv(a: ${T}, b: ${T}) -> f32 { return ${dotv}; }
${
    rope
      ? `@group(0) @binding(6) var<storage, read> CS: array<vec4<f32>>;
/** Two interleaved pairs (x, y) turned by their (cos, sin) pairs. */
fn turn(v: vec4<f32>, cs: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(v.x * cs.x - v.y * cs.y, v.x * cs.y + v.y * cs.x,
                   v.z * cs.z - v.w * cs.w, v.z * cs.w + v.w * cs.z);
}`
      : ""
  }
/** Vector c of the key (or value) row of position s: the cache before p0, else the new rows. */
fn kv(s: u32, p0: u32, c: u32, value: bool) -> ${T} {
  if (${single ? "true" : "s < p0"}) {
    if (value) { return Vc[${v("s * p.kvDim")} + c]; }
    return Kc[${v("s * p.kvDim")} + c];
  }
  return QKV[${v("(s - p0) * p.ld + select(p.kOff, p.vOff, value)")} + c];
}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  ${WG_FLAT}
  if (wgi >= p.rows * p.nHeads) { return; }
  let t = wgi / p.nHeads;
  let h = wgi % p.nHeads;
  let kb = ${v("(h / p.group) * HD")};
  let p0 = pos[0];
  let L = p0 + t + 1u;
  for (var i = lid; i < HDV; i += ${WG}u) {
    qs[i] = ${turn(`QKV[${v("t * p.ld + h * HD")} + i]`)} * p.scale;
  }
  if (${single ? "" : "h % p.group == 0u && "}p0 + t < p.cap) {
    for (var i = lid; i < HDV; i += ${WG}u) {
      Kc[${v("(p0 + t) * p.kvDim")} + kb + i] = ${turn(`QKV[${v("t * p.ld + p.kOff")} + kb + i]`)};
      Vc[${v("(p0 + t) * p.kvDim")} + kb + i] = QKV[${v("t * p.ld + p.vOff")} + kb + i];
    }
  }
  ${single ? "storageBarrier();" : ""}
  workgroupBarrier();
  let g = lid / ${LN}u;
  let d0 = lid % ${LN}u;
  let busy = lid < ${G * LN}u;
  var acc: array<${T}, ${DPT}>;
  var m = -3.0e38;
  var lp = 0.0;
  for (var s0 = 0u; s0 < L; s0 += ${WG}u) {
    let s = s0 + lid;
    var sc = -3.0e38;
    if (s < L) {
      var d = 0.0;
      for (var i = 0u; i < HDV; i++) { d = d + dotv(qs[i], kv(s, p0, kb + i, false)); }
      sc = d;
    }
    red[lid] = sc;
${tree("max")}
    let mNew = max(m, red[0]);
    let c = exp(m - mNew);
    var e = 0.0;
    if (s < L) { e = exp(sc - mNew); }
    lp = lp * c + e;
    pr[lid] = e;
    workgroupBarrier();
    if (busy) {
      let n = min(${WG}u, L - s0);
      for (var j = 0u; j < ${DPT}u; j++) {
        let d = d0 + j * ${LN}u;
        if (d < HDV) {
          // Four independent sums, so that four value loads are in flight at once.
          var a0 = acc[j] * c;
          var a1 = ${T}(0.0);
          var a2 = ${T}(0.0);
          var a3 = ${T}(0.0);
          var i = g;
          for (; i + ${3 * G}u < n; i += ${4 * G}u) {
            let v0 = kv(s0 + i, p0, kb + d, true);
            let v1 = kv(s0 + i + ${G}u, p0, kb + d, true);
            let v2 = kv(s0 + i + ${2 * G}u, p0, kb + d, true);
            let v3 = kv(s0 + i + ${3 * G}u, p0, kb + d, true);
            a0 = fma(${T}(pr[i]), v0, a0);
            a1 = fma(${T}(pr[i + ${G}u]), v1, a1);
            a2 = fma(${T}(pr[i + ${2 * G}u]), v2, a2);
            a3 = fma(${T}(pr[i + ${3 * G}u]), v3, a3);
          }
          for (; i < n; i += ${G}u) { a0 = fma(${T}(pr[i]), kv(s0 + i, p0, kb + d, true), a0); }
          acc[j] = (a0 + a1) + (a2 + a3);
        }
      }
    }
    m = mNew;
    workgroupBarrier();
  }
  red[lid] = lp;
${tree("sum")}
  let inv = 1.0 / red[0];
  let oo = t * p.od + h * HD;
${finish}
}
`;
}

/** Sizes of {@linkcode encodeCachedAttention}. */
export interface CachedAttentionShape {
  /** New queries (rows of the q/k/v buffer). */
  readonly rows: number;
  /** Query heads. */
  readonly nHeads: number;
  /** Key/value heads. */
  readonly nKvHeads: number;
  /** Head width. */
  readonly hd: number;
  /** Leading dimension of the q/k/v rows (queries at column 0, keys at nHeads·hd, then values). */
  readonly ld: number;
  /** Positions the cache holds. */
  readonly cap: number;
}

/** Whether {@linkcode encodeCachedAttention} can apply the rotary embedding itself. */
export function attentionRotates(rows: number, hd: number): boolean {
  return rows === 1 && hd % 4 === 0 && hd <= 4 * WG;
}

/**
 * Records attention of new queries against the KV cache of one layer, and
 * the cache write of their keys and values.
 *
 * @param batch The batch.
 * @param out Output [rows, nHeads·hd].
 * @param qkv q/k/v rows [rows, ld] (rotated queries and keys, or unrotated
 *   ones with `rope`).
 * @param cache The layer's keys and values [cap, nKvHeads·hd] each.
 * @param pos The position counter (u32 [1]): row t is at position pos + t.
 * @param shape Sizes.
 * @param rope The rotary table [cap, hd] of (cos, sin) pairs (`ropeTable`),
 *   for the kernel to rotate the query and key of the new row itself with
 *   row pos of it (one row only: see {@linkcode attentionRotates}).
 */
export function encodeCachedAttention(
  batch: GpuBatch,
  out: GPUBuffer,
  qkv: GPUBuffer,
  cache: { readonly k: GPUBuffer; readonly v: GPUBuffer },
  pos: GPUBuffer,
  shape: CachedAttentionShape,
  rope?: GPUBuffer,
): void {
  const { rows, nHeads, nKvHeads, hd, ld, cap } = shape;
  if (rope !== undefined && !attentionRotates(rows, hd)) {
    throw new RangeError(
      `Cannot rotate inside attention for ${rows} rows of head width ${hd}: one row, a width ` +
        `that is a multiple of 4 up to ${4 * WG}`,
    );
  }
  const spec: CachedAttentionSpec = {
    hd,
    width: hd % 4 === 0 && hd <= 4 * WG ? 4 : 1,
    single: rows === 1,
    rope: rope !== undefined,
  };
  const pipeline = cachedPipeline(
    batch.gpu,
    `decode:attention:${hd}:${spec.width}:${spec.single ? "single" : "rows"}${
      spec.rope ? ":rope" : ""
    }`,
    () => cachedAttentionWgsl(spec),
  );
  const u = batch.uniform([
    { u32: rows },
    { u32: nHeads },
    { u32: nHeads / nKvHeads },
    { u32: nKvHeads * hd },
    { u32: ld },
    { u32: nHeads * hd },
    { f32: 1 / Math.sqrt(hd) },
    { u32: nHeads * hd },
    { u32: (nHeads + nKvHeads) * hd },
    { u32: cap },
  ]);
  batch.dispatch(
    pipeline,
    [out, qkv, cache.k, cache.v, pos, u, ...(rope ? [rope] : [])],
    foldGroups(batch.gpu, rows * nHeads),
  );
}
