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
import { reduce } from "./_gpu_kernels.ts";

/** The rotary table's binding and the turn of two interleaved pairs, for kernels that rotate. */
const ROPE_WGSL = `@group(0) @binding(6) var<storage, read> CS: array<vec4<f32>>;
/** Two interleaved pairs (x, y) turned by their (cos, sin) pairs. */
fn turn(v: vec4<f32>, cs: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(v.x * cs.x - v.y * cs.y, v.x * cs.y + v.y * cs.x,
                   v.z * cs.z - v.w * cs.w, v.z * cs.w + v.w * cs.z);
}`;

/**
 * The one-row kernels' inputs (vec4 loads: the q/k/v row, the cache, the
 * position) and their dot-product step.
 */
const ROW_INPUTS_WGSL = `@group(0) @binding(1) var<storage, read> QKV: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> Kc: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> Vc: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> pos: array<u32>;
/** c + a·b. */
fn fma4(a: vec4<f32>, b: vec4<f32>, c: f32) -> f32 {
  return fma(a.x, b.x, fma(a.y, b.y, fma(a.z, b.z, fma(a.w, b.w, c))));
}`;

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
${rope ? ROPE_WGSL : ""}
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

/** Threads of {@linkcode rowAttentionWgsl}'s workgroup, and keys per tile. */
const ROW_WG = 256;

/** Widest head (in vec4s) {@linkcode rowAttentionWgsl} takes; wider heads take the general kernel. */
const ROW_MAX_HDV = 32;

/** Vec4 loads one thread issues before it uses them (registers bound the batch). */
const ROW_BATCH = 16;

/** Whether {@linkcode rowAttentionWgsl} takes a head width: hd/4 a power of two up to 32. */
export function rowAttentionFits(hd: number): boolean {
  const v = hd / 4;
  return Number.isInteger(v) && v >= 1 && v <= ROW_MAX_HDV && (v & (v - 1)) === 0;
}

/**
 * WGSL statements that add the dot product of a query with the key row at
 * vector index `base` into four partial sums d0…d3: the row's vec4 loads
 * in batches of {@linkcode ROW_BATCH}, each issued before its products.
 *
 * @param hdv Vec4s of a head.
 * @param query The query's vec4 i as WGSL (i a constant).
 * @param indent Leading spaces.
 * @returns The statements, one a line.
 */
function keyScore(hdv: number, query: (i: number) => string, indent: string): string[] {
  const out: string[] = [];
  for (let b0 = 0; b0 < hdv; b0 += ROW_BATCH) {
    const n = Math.min(ROW_BATCH, hdv - b0);
    out.push(`${indent}{`);
    for (let i = 0; i < n; i++) out.push(`${indent}let k${i} = Kc[base + ${b0 + i}u];`);
    for (let i = 0; i < n; i++) {
      const d = `d${(b0 + i) % 4}`;
      out.push(`${indent}${d} = fma4(${query(b0 + i)}, k${i}, ${d});`);
    }
    out.push(`${indent}}`);
  }
  return out;
}

/**
 * Attention of one new row (a decode step) against the cache, one workgroup
 * of 256 threads per query head, in tiles of 256 keys: a thread scores one
 * key of the tile (its key row's vec4 loads all issued before the dot
 * products use them), a tree takes the tile's maximum, then groups of
 * hd/4 lanes (one value vec4 a lane) sum the weighted value rows of their
 * share of the tile's keys, the loads again issued first, with the running
 * (online) softmax's rescaling between tiles; each group also sums its
 * keys' weights, so the normalizer needs no second tree. The new row's key
 * and value come from the q/k/v row (staged in workgroup memory, rotated
 * with `rope`), and every query head writes them into the cache at pos
 * without reading them back from it, so no workgroup waits on that write.
 * Reference: `causalAttention` of `forward.ts`, row pos of its output.
 *
 * @param hd Head width (4 times a power of two, at most 4·32).
 * @param rope The q/k/v row holds the queries and keys before the rotary
 *   embedding, which the kernel applies (row pos of the table).
 * @returns WGSL source.
 */
export function rowAttentionWgsl(hd: number, rope: boolean): string {
  if (!rowAttentionFits(hd)) {
    throw new RangeError(
      `Cannot build one-row attention for head width ${hd}: 4 times a power of two up to ${
        4 * ROW_MAX_HDV
      }`,
    );
  }
  const HDV = hd / 4;
  const T = ROW_WG, G = T / HDV, KPG = T / G;
  const turn = (e: string, i: string) => rope ? `turn(${e}, CS[p0 * HDV + ${i}])` : e;
  // The score of key row `base` (not the new row).
  const score = keyScore(HDV, (i) => `qs[${i}]`, "      ");
  // The weighted values of the group's keys j0 … j0 + n − 1 of the tile (clamped rows; the
  // weights beyond the sequence are 0).
  const values: string[] = [];
  for (let j0 = 0; j0 < KPG; j0 += ROW_BATCH) {
    const n = Math.min(ROW_BATCH, KPG - j0);
    values.push("    {");
    for (let j = 0; j < n; j++) {
      values.push(`    let r${j} = s0 + min(g + ${(j0 + j) * G}u, last);`);
      values.push(
        `    var v${j}: vec4<f32>;\n    if (r${j} == p0) { v${j} = vn[d]; } else { v${j} = Vc[r${j} * KVV + kb + d]; }`,
      );
    }
    for (let j = 0; j < n; j++) {
      values.push(`    let w${j} = pr[g + ${(j0 + j) * G}u];`);
      values.push(`    acc = fma(vec4<f32>(w${j}), v${j}, acc);`);
      values.push(`    wsum = wsum + w${j};`);
    }
    values.push("    }");
  }
  return `struct P { rows: u32, nHeads: u32, group: u32, kvDim: u32, ld: u32, od: u32, scale: f32,
  kOff: u32, vOff: u32, cap: u32 }
@group(0) @binding(0) var<storage, read_write> O: array<vec4<f32>>;
${ROW_INPUTS_WGSL}
@group(0) @binding(5) var<uniform> p: P;
const HDV = ${HDV}u;
var<workgroup> qs: array<vec4<f32>, ${HDV}>;
var<workgroup> kn: array<vec4<f32>, ${HDV}>;
var<workgroup> vn: array<vec4<f32>, ${HDV}>;
var<workgroup> red: array<f32, ${T}>;
var<workgroup> pr: array<f32, ${T}>;
var<workgroup> accs: array<vec4<f32>, ${G * HDV}>;
var<workgroup> wsums: array<f32, ${G}>;
${rope ? ROPE_WGSL : ""}
@compute @workgroup_size(${T})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  ${WG_FLAT}
  if (wgi >= p.nHeads) { return; }
  let h = wgi;
  let KVV = p.kvDim / 4u;
  let kb = (h / p.group) * HDV;
  let p0 = pos[0];
  let L = p0 + 1u;
  if (lid < HDV) {
    let i = lid;
    qs[i] = ${turn("QKV[h * HDV + i]", "i")} * p.scale;
    let k = ${turn("QKV[p.kOff / 4u + kb + i]", "i")};
    let v = QKV[p.vOff / 4u + kb + i];
    kn[i] = k;
    vn[i] = v;
    if (p0 < p.cap) {
      Kc[p0 * KVV + kb + i] = k;
      Vc[p0 * KVV + kb + i] = v;
    }
  }
  workgroupBarrier();
  let g = lid / HDV;
  let d = lid % HDV;
  var acc = vec4<f32>(0.0);
  var wsum = 0.0;
  var m = -3.0e38;
  for (var s0 = 0u; s0 < L; s0 += ${T}u) {
    let s = s0 + lid;
    var sc = -3.0e38;
    if (s < L) {
      var d0 = 0.0;
      var d1 = 0.0;
      var d2 = 0.0;
      var d3 = 0.0;
      if (s == p0) {
        for (var i = 0u; i < HDV; i++) { d0 = fma4(qs[i], kn[i], d0); }
      } else {
        let base = s * KVV + kb;
${score.join("\n")}
      }
      sc = (d0 + d1) + (d2 + d3);
    }
    red[lid] = sc;
${reduce("max", T)}
    let mNew = max(m, red[0]);
    let c = exp(m - mNew);
    pr[lid] = select(0.0, exp(sc - mNew), s < L);
    workgroupBarrier();
    let last = min(${T}u, L - s0) - 1u;
    acc = acc * c;
    wsum = wsum * c;
${values.join("\n")}
    m = mNew;
    workgroupBarrier();
  }
  accs[lid] = acc;
  if (d == 0u) { wsums[g] = wsum; }
  workgroupBarrier();
  if (lid < HDV) {
    var a = vec4<f32>(0.0);
    var l = 0.0;
    for (var gg = 0u; gg < ${G}u; gg++) {
      a = a + accs[gg * HDV + lid];
      l = l + wsums[gg];
    }
    O[h * HDV + lid] = a / l;
  }
}
`;
}

/** Threads of the split kernels' workgroups. */
const SPLIT_WG = 128;

/** Keys a split workgroup scores at once (a tile; a split longer than that loops). */
const SPLIT_TILE = 32;

/** Fewest keys a split takes: shorter contexts use fewer splits. */
const SPLIT_MIN_KEYS = 16;

/** Most splits of the key range (the merge pass holds a weight per split). */
const SPLIT_MAX = 1024;

/** Split workgroups {@linkcode splitAttentionSplits} aims at across the key/value heads. */
const SPLIT_WORKGROUPS = 256;

/** Query vec4s of one key/value head's group that the split kernel stages (8 KB). */
const SPLIT_MAX_QUERY = 512;

/**
 * Whether the split kernels take a head width and a query group: hd/4 a
 * power of two up to 128 (one thread per value vec4 and key group), the
 * group's queries at most 512 vec4s (workgroup memory).
 */
export function splitAttentionFits(hd: number, group: number): boolean {
  const v = hd / 4;
  return Number.isInteger(v) && v >= 1 && v <= SPLIT_WG && (v & (v - 1)) === 0 &&
    Number.isInteger(group) && group >= 1 && group * v <= SPLIT_MAX_QUERY;
}

/**
 * The splits of the key range that {@linkcode encodeCachedAttention}'s split
 * kernel takes by default: about 256 workgroups over the key/value heads,
 * and no more splits than tiles of 16 positions in the cache.
 *
 * @param shape The attention's sizes.
 * @returns Splits (at least 1).
 */
export function splitAttentionSplits(
  shape: Pick<CachedAttentionShape, "nKvHeads" | "cap">,
): number {
  return Math.max(
    1,
    Math.min(Math.floor(SPLIT_WORKGROUPS / shape.nKvHeads), Math.ceil(shape.cap / 16)),
  );
}

/**
 * Bytes of the scratch the split kernel writes its partial sums into: per
 * query head and split, the unnormalized weighted value row and the
 * (maximum, normalizer) pair.
 *
 * @param shape The attention's sizes.
 * @param splits Splits of the key range.
 * @returns Bytes.
 */
export function splitAttentionScratchBytes(
  shape: Pick<CachedAttentionShape, "nHeads" | "hd">,
  splits: number,
): number {
  return shape.nHeads * splits * (shape.hd / 4 + 1) * 16;
}

/**
 * Attention of one new row (a decode step) against the cache, its key range
 * split over workgroups (the first pass of the split kernel; see
 * {@linkcode splitCombineWgsl} for the second): workgroup (key/value head,
 * split) takes the `group` query heads that share the key/value head over
 * the split's positions [s·c, min(L, (s + 1)·c)), c = max(16, ⌈L / splits⌉), L =
 * pos + 1 (splits past L return at once), so that each key and value row is
 * read by one workgroup for all its query heads, and long contexts spread
 * over many workgroups.
 * Per tile of 32 keys: one thread per (query head, key) scores it (the key
 * row's loads issued before the dot products), one thread per query head
 * takes the tile's maximum, the weights replace the scores, then one thread
 * per (value vec4, key group) sums its keys' weighted value rows for every
 * query head (the loads issued first), with the running (online) softmax's
 * rescaling between tiles. The partial rows (unnormalized) and each head's
 * (maximum, normalizer) go to the scratch. The new row's key and value come
 * from the q/k/v row (rotated with `rope`), and the workgroup whose split
 * holds pos writes them into the cache at pos.
 *
 * @param hd Head width (4 times a power of two, at most 512).
 * @param group Query heads per key/value head (group · hd at most 2048).
 * @param rope The q/k/v row holds the queries and keys before the rotary
 *   embedding, which the kernel applies (row pos of the table).
 * @returns WGSL source.
 */
export function splitAttentionWgsl(hd: number, group: number, rope: boolean): string {
  if (!splitAttentionFits(hd, group)) {
    throw new RangeError(
      `Cannot build split attention for head width ${hd} and ${group} query heads per ` +
        `key/value head: 4 times a power of two up to ${4 * SPLIT_WG}, the group's width ` +
        `at most ${4 * SPLIT_MAX_QUERY}`,
    );
  }
  const HDV = hd / 4, G = group, T = SPLIT_WG, TK = SPLIT_TILE;
  const KG = Math.min(T / HDV, TK), KPG = TK / KG;
  const turn = (e: string, i: string) => rope ? `turn(${e}, CS[p0 * HDV + ${i}])` : e;
  // The score of key row `base` (not the new row) for the query at qs[qb].
  const score = keyScore(HDV, (i) => `qs[qb + ${i}u]`, "        ");
  // The group's keys kg, kg + KG, … of the tile: the value loads (rows clamped into the tile;
  // weights past its end are 0), then every head's weighted sum.
  const values: string[] = [];
  for (let j = 0; j < KPG; j++) {
    values.push(`      let r${j} = t0 + min(kg + ${j * KG}u, n - 1u);`);
    values.push(
      `      var v${j}: vec4<f32>;\n      if (r${j} == p0) { v${j} = vn[d]; } else { v${j} = Vc[r${j} * KVV + kb + d]; }`,
    );
  }
  values.push(`      for (var h = 0u; h < G; h++) {`);
  values.push(`        var a = acc[h] * ct[h];`);
  values.push(`        var l = wsum[h] * ct[h];`);
  for (let j = 0; j < KPG; j++) {
    values.push(`        let w${j} = sc[h * TK + kg + ${j * KG}u];`);
    values.push(`        a = fma(vec4<f32>(w${j}), v${j}, a);`);
    values.push(`        l = l + w${j};`);
  }
  values.push(`        acc[h] = a;`);
  values.push(`        wsum[h] = l;`);
  values.push(`      }`);
  return `struct P { nHeads: u32, kvDim: u32, scale: f32, kOff: u32, vOff: u32, cap: u32,
  splits: u32, nKv: u32 }
@group(0) @binding(0) var<storage, read_write> part: array<vec4<f32>>;
${ROW_INPUTS_WGSL}
@group(0) @binding(5) var<uniform> p: P;
const HDV = ${HDV}u;
const G = ${G}u;
const TK = ${TK}u;
const KG = ${KG}u;
var<workgroup> qs: array<vec4<f32>, ${G * HDV}>;
var<workgroup> kn: array<vec4<f32>, ${HDV}>;
var<workgroup> vn: array<vec4<f32>, ${HDV}>;
var<workgroup> sc: array<f32, ${G * TK}>;
var<workgroup> mt: array<f32, ${G}>;
var<workgroup> ct: array<f32, ${G}>;
var<workgroup> red: array<vec4<f32>, ${T}>;
var<workgroup> reds: array<f32, ${T}>;
${rope ? ROPE_WGSL : ""}
@compute @workgroup_size(${T})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  ${WG_FLAT}
  if (wgi >= p.nKv * p.splits) { return; }
  let kh = wgi / p.splits;
  let sp = wgi % p.splits;
  let KVV = p.kvDim / 4u;
  let kb = kh * HDV;
  let p0 = pos[0];
  let L = p0 + 1u;
  let c = max(${SPLIT_MIN_KEYS}u, (L + p.splits - 1u) / p.splits);
  let begin = sp * c;
  // A split past the last key has nothing to add (the merge reads the splits that hold keys).
  if (begin >= L) { return; }
  let end = min(begin + c, L);
  for (var i = lid; i < G * HDV; i += ${T}u) {
    let e = i % HDV;
    qs[i] = ${turn("QKV[(kh * G) * HDV + i]", "e")} * p.scale;
  }
  if (lid < HDV) {
    let i = lid;
    let k = ${turn("QKV[p.kOff / 4u + kb + i]", "i")};
    let v = QKV[p.vOff / 4u + kb + i];
    kn[i] = k;
    vn[i] = v;
    if (begin <= p0 && p0 < end && p0 < p.cap) {
      Kc[p0 * KVV + kb + i] = k;
      Vc[p0 * KVV + kb + i] = v;
    }
  }
  workgroupBarrier();
  let d = lid % HDV;
  let kg = lid / HDV;
  let busy = kg < KG;
  var acc: array<vec4<f32>, ${G}>;
  var wsum: array<f32, ${G}>;
  var m: array<f32, ${G}>;
  for (var h = 0u; h < G; h++) { m[h] = -3.0e38; }
  for (var t0 = begin; t0 < end; t0 += TK) {
    let n = min(TK, end - t0);
    // Scores of (query head, key).
    for (var it = lid; it < G * TK; it += ${T}u) {
      let j = it % TK;
      let qb = (it / TK) * HDV;
      var s = -3.0e38;
      if (j < n) {
        let row = t0 + j;
        var d0 = 0.0;
        var d1 = 0.0;
        var d2 = 0.0;
        var d3 = 0.0;
        if (row == p0) {
          for (var i = 0u; i < HDV; i++) { d0 = fma4(qs[qb + i], kn[i], d0); }
        } else {
          let base = row * KVV + kb;
${score.join("\n")}
        }
        s = (d0 + d1) + (d2 + d3);
      }
      sc[it] = s;
    }
    workgroupBarrier();
    // Each head's running maximum and the rescaling of what came before.
    if (lid < G) {
      var mx = m[lid];
      for (var j = 0u; j < TK; j++) { mx = max(mx, sc[lid * TK + j]); }
      mt[lid] = mx;
      ct[lid] = exp(m[lid] - mx);
    }
    workgroupBarrier();
    for (var it = lid; it < G * TK; it += ${T}u) {
      sc[it] = select(0.0, exp(sc[it] - mt[it / TK]), it % TK < n);
    }
    workgroupBarrier();
    if (busy) {
${values.join("\n")}
    }
    for (var h = 0u; h < G; h++) { m[h] = mt[h]; }
    workgroupBarrier();
  }
  // The key groups' sums, head by head, into the scratch: rows, then (maximum, normalizer).
  for (var h = 0u; h < G; h++) {
    red[lid] = acc[h];
    reds[lid] = wsum[h];
    workgroupBarrier();
    let hq = kh * G + h;
    if (lid < HDV) {
      var a = vec4<f32>(0.0);
      for (var g = 0u; g < KG; g++) { a = a + red[g * HDV + lid]; }
      part[(hq * p.splits + sp) * HDV + lid] = a;
    }
    if (lid == 0u) {
      var l = 0.0;
      for (var g = 0u; g < KG; g++) { l = l + reds[g * HDV]; }
      part[p.nHeads * p.splits * HDV + hq * p.splits + sp] = vec4<f32>(m[h], l, 0.0, 0.0);
    }
    workgroupBarrier();
  }
}
`;
}

/**
 * The second pass of the split kernel: one workgroup per query head merges
 * the splits' partial rows of {@linkcode splitAttentionWgsl} (each scaled by
 * exp(its maximum − the largest), over the normalizers scaled alike) into
 * the head's output row. Its threads load the splits' (maximum, normalizer)
 * pairs at once, then groups of hd/4 lanes (one vec4 a lane) sum their
 * share of the splits' rows, every load issued before it is used, and the
 * groups' sums are added in workgroup memory.
 *
 * @param hd Head width (4 times a power of two, at most 512).
 * @param splits Splits of the key range (at most 1024).
 * @returns WGSL source.
 */
export function splitCombineWgsl(hd: number, splits: number): string {
  const HDV = hd / 4, T = SPLIT_WG, S = splits;
  const GR = Math.max(1, Math.min(T / HDV, S)), PER = Math.ceil(S / GR);
  const rows: string[] = [];
  for (let j = 0; j < PER; j++) {
    rows.push(`  let s${j} = g + ${j * GR}u;`);
    rows.push(
      `  var r${j} = vec4<f32>(0.0);\n  if (s${j} < ns) { r${j} = part[(wgi * S + s${j}) * HDV + d]; }`,
    );
  }
  for (let j = 0; j < PER; j++) {
    rows.push(`  if (s${j} < ns) { a = fma(vec4<f32>(ws[s${j}]), r${j}, a); }`);
  }
  return `struct P { nHeads: u32, kvDim: u32, scale: f32, kOff: u32, vOff: u32, cap: u32,
  splits: u32, nKv: u32 }
@group(0) @binding(0) var<storage, read_write> O: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> part: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
@group(0) @binding(3) var<uniform> p: P;
const HDV = ${HDV}u;
const S = ${S}u;
const GR = ${GR}u;
var<workgroup> ws: array<f32, ${S}>;
var<workgroup> ls: array<f32, ${S}>;
var<workgroup> red: array<vec4<f32>, ${GR * HDV}>;
var<workgroup> norm: f32;
@compute @workgroup_size(${T})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  ${WG_FLAT}
  if (wgi >= p.nHeads) { return; }
  let L = pos[0] + 1u;
  let c = max(${SPLIT_MIN_KEYS}u, (L + S - 1u) / S);
  // Splits that hold keys.
  let ns = (L + c - 1u) / c;
  let ml = p.nHeads * S * HDV + wgi * S;
  for (var s = lid; s < ns; s += ${T}u) {
    let e = part[ml + s];
    ws[s] = e.x;
    ls[s] = e.y;
  }
  workgroupBarrier();
  if (lid == 0u) {
    var mx = -3.0e38;
    for (var s = 0u; s < ns; s++) { mx = max(mx, ws[s]); }
    var l = 0.0;
    for (var s = 0u; s < ns; s++) {
      let w = exp(ws[s] - mx);
      ws[s] = w;
      l = fma(w, ls[s], l);
    }
    norm = l;
  }
  workgroupBarrier();
  let d = lid % HDV;
  let g = lid / HDV;
  var a = vec4<f32>(0.0);
  if (g < GR) {
${rows.join("\n")}
    red[lid] = a;
  }
  workgroupBarrier();
  if (lid < HDV) {
    var o = vec4<f32>(0.0);
    for (var gg = 0u; gg < GR; gg++) { o = o + red[gg * HDV + lid]; }
    O[wgi * HDV + lid] = o / norm;
  }
}
`;
}

/**
 * The split kernel of {@linkcode encodeCachedAttention}: its scratch (at
 * least {@linkcode splitAttentionScratchBytes} for `splits`) and the splits
 * of the key range.
 */
export interface SplitAttention {
  readonly scratch: GPUBuffer;
  readonly splits: number;
}

/**
 * Which kernel {@linkcode encodeCachedAttention} records: "tiles", the
 * general one ({@linkcode cachedAttentionWgsl}), "row",
 * {@linkcode rowAttentionWgsl} (one row), or the split kernel's two passes
 * ({@linkcode splitAttentionWgsl}, {@linkcode splitCombineWgsl}; one row),
 * given its scratch and splits ({@linkcode SplitAttention}). All equal
 * within float32 rounding.
 */
export type CachedAttentionKernel = "tiles" | "row" | SplitAttention;

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
 * @param kernel The kernel ({@linkcode CachedAttentionKernel}).
 * @throws {RangeError} for "row" with several rows or a head width it does not take.
 */
export function encodeCachedAttention(
  batch: GpuBatch,
  out: GPUBuffer,
  qkv: GPUBuffer,
  cache: { readonly k: GPUBuffer; readonly v: GPUBuffer },
  pos: GPUBuffer,
  shape: CachedAttentionShape,
  rope?: GPUBuffer,
  kernel: CachedAttentionKernel = "tiles",
): void {
  const { rows, nHeads, nKvHeads, hd, ld, cap } = shape;
  const split = typeof kernel === "object" && kernel !== null ? kernel : null;
  if (kernel !== "tiles" && kernel !== "row" && split === null) {
    throw new RangeError(
      `Cannot encode cached attention as 'kernel' must be "tiles", "row" or a split kernel's ` +
        `scratch and splits: current value is ${String(kernel)}`,
    );
  }
  if (kernel === "row" && (rows !== 1 || !rowAttentionFits(hd))) {
    throw new RangeError(
      `Cannot encode one-row attention for ${rows} rows of head width ${hd}: one row, a width of 4 times a power of two up to ${
        4 * ROW_MAX_HDV
      }`,
    );
  }
  if (rope !== undefined && !attentionRotates(rows, hd)) {
    throw new RangeError(
      `Cannot rotate inside attention for ${rows} rows of head width ${hd}: one row, a width ` +
        `that is a multiple of 4 up to ${4 * WG}`,
    );
  }
  if (split !== null) {
    encodeSplitAttention(batch, out, qkv, cache, pos, shape, split, rope);
    return;
  }
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
  const resources = [out, qkv, cache.k, cache.v, pos, u, ...(rope ? [rope] : [])];
  if (kernel === "row") {
    const row = cachedPipeline(
      batch.gpu,
      `decode:attention-row:${hd}${rope ? ":rope" : ""}`,
      () => rowAttentionWgsl(hd, rope !== undefined),
    );
    batch.dispatch(row, resources, foldGroups(batch.gpu, nHeads));
    return;
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
  batch.dispatch(pipeline, resources, foldGroups(batch.gpu, rows * nHeads));
}

/** The split kernel's two passes (see {@linkcode encodeCachedAttention}). */
function encodeSplitAttention(
  batch: GpuBatch,
  out: GPUBuffer,
  qkv: GPUBuffer,
  cache: { readonly k: GPUBuffer; readonly v: GPUBuffer },
  pos: GPUBuffer,
  shape: CachedAttentionShape,
  split: SplitAttention,
  rope: GPUBuffer | undefined,
): void {
  const { rows, nHeads, nKvHeads, hd, ld, cap } = shape;
  const group = nHeads / nKvHeads;
  const { scratch, splits } = split;
  if (rows !== 1 || !splitAttentionFits(hd, group)) {
    throw new RangeError(
      `Cannot encode split attention for ${rows} rows of head width ${hd} with ${group} query ` +
        `heads per key/value head: one row, a width of 4 times a power of two up to ${
          4 * SPLIT_WG
        }, the group's width at most ${4 * SPLIT_MAX_QUERY}`,
    );
  }
  if (ld !== nHeads * hd + 2 * nKvHeads * hd) {
    throw new RangeError(
      `Cannot encode split attention: the q/k/v row is ${ld} wide, not the queries, keys and ` +
        `values' ${nHeads * hd + 2 * nKvHeads * hd}`,
    );
  }
  if (!(Number.isInteger(splits) && splits >= 1 && splits <= SPLIT_MAX)) {
    throw new RangeError(
      `Cannot encode split attention as 'splits' must be an integer in [1, ${SPLIT_MAX}]: ` +
        `current value is ${String(splits)}`,
    );
  }
  const need = splitAttentionScratchBytes(shape, splits);
  if (scratch.size < need) {
    throw new RangeError(
      `Cannot encode split attention over ${splits} splits: its scratch holds ${scratch.size} ` +
        `bytes, it needs ${need}`,
    );
  }
  const u = batch.uniform([
    { u32: nHeads },
    { u32: nKvHeads * hd },
    { f32: 1 / Math.sqrt(hd) },
    { u32: nHeads * hd },
    { u32: (nHeads + nKvHeads) * hd },
    { u32: cap },
    { u32: splits },
    { u32: nKvHeads },
  ]);
  const first = cachedPipeline(
    batch.gpu,
    `decode:attention-split:${hd}:${group}${rope ? ":rope" : ""}`,
    () => splitAttentionWgsl(hd, group, rope !== undefined),
  );
  batch.dispatch(
    first,
    [scratch, qkv, cache.k, cache.v, pos, u, ...(rope ? [rope] : [])],
    foldGroups(batch.gpu, nKvHeads * splits),
  );
  const combine = cachedPipeline(
    batch.gpu,
    `decode:attention-combine:${hd}:${splits}`,
    () => splitCombineWgsl(hd, splits),
  );
  batch.dispatch(combine, [out, scratch, pos, u], foldGroups(batch.gpu, nHeads));
}
