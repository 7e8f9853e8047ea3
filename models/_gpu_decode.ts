/**
 * Library-internal: the WebGPU kernels of token generation with a KV cache,
 * besides the matrix-vector product (`_gpu_gemv.ts`) and the kernels the
 * whole-sequence forward pass shares (`_gpu_kernels.ts`): attention of new
 * queries against the cache, the cache write, the rotary rows of the current
 * positions, the argmax that feeds the next step, copies into column slices,
 * the position counter, and the gather of an f16 embedding.
 *
 * The current position lives on the GPU (`pos`, one u32): the kernels read
 * it, and a one-thread kernel advances it at the end of each step, so a
 * step's commands are the same every time and can be replayed
 * (`_gpu_program.ts`) without writing anything from the host. Each kernel's
 * CPU reference is stated in its docs; the tests compare a whole decode
 * against the CPU forward pass of `forward.ts`. Web-standard only.
 *
 * @module
 */

import { cachedPipeline, foldGroups, type GpuBatch } from "../kernels/backend.ts";

/** Threads per workgroup of the elementwise kernels. */
const EW = 256;
/** Threads per workgroup of the attention and argmax kernels (a power of two). */
const WG = 128;

const FLAT = `let i = gid.x + gid.y * nw.x * ${EW}u;`;
const WG_FLAT = "let wgi = wg.x + wg.y * nw.x;";

function tree(op: "max" | "sum"): string {
  const combine = op === "max"
    ? "red[lid] = max(red[lid], red[lid + st]);"
    : "red[lid] = red[lid] + red[lid + st];";
  return `  workgroupBarrier();
  for (var st = ${WG / 2}u; st > 0u; st = st >> 1u) {
    if (lid < st) { ${combine} }
    workgroupBarrier();
  }`;
}

function elementwise(batch: GpuBatch, key: string, code: () => string, n: number) {
  const pipeline = cachedPipeline(batch.gpu, key, code);
  return { pipeline, groups: foldGroups(batch.gpu, Math.ceil(n / EW)) };
}

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
}

/**
 * Attention of `rows` new queries against the cache, which it extends: query
 * t (row t of the q/k/v buffer, at position pos + t) of head h attends to
 * positions [0, pos + t] of its key/value head h / group, those before pos
 * read from the cache, the new ones from the q/k/v rows; the first query head
 * of each key/value head writes the new keys and values into the cache (rows
 * past its capacity are dropped). One workgroup per (t, h): keys in tiles of
 * 128, one thread per key for the scores, a running (online) softmax over the
 * tiles, and the weighted value rows summed by (group of threads, vector of
 * the head), groups added at the end. With `width` 4 every load is a vec4
 * (the q/k/v rows, the cache and the output then hold whole vec4s: widths
 * and offsets are multiples of 4). Reference: `causalAttention` of
 * `forward.ts` over the whole sequence, rows pos… of its output.
 *
 * @param spec Head width and load width.
 * @returns WGSL source.
 */
export function cachedAttentionWgsl(spec: CachedAttentionSpec): string {
  const { hd, width: W } = spec;
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
/** Vector c of the key (or value) row of position s: the cache before p0, else the new rows. */
fn kv(s: u32, p0: u32, c: u32, value: bool) -> ${T} {
  if (s < p0) {
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
  for (var i = lid; i < HDV; i += ${WG}u) { qs[i] = QKV[${v("t * p.ld + h * HD")} + i] * p.scale; }
  if (h % p.group == 0u && p0 + t < p.cap) {
    for (var i = lid; i < HDV; i += ${WG}u) {
      Kc[${v("(p0 + t) * p.kvDim")} + kb + i] = QKV[${v("t * p.ld + p.kOff")} + kb + i];
      Vc[${v("(p0 + t) * p.kvDim")} + kb + i] = QKV[${v("t * p.ld + p.vOff")} + kb + i];
    }
  }
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
          var a = acc[j] * c;
          for (var i = g; i < n; i += ${G}u) { a = fma(${T}(pr[i]), kv(s0 + i, p0, kb + d, true), a); }
          acc[j] = a;
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

/**
 * Records attention of new queries against the KV cache of one layer, and
 * the cache write of their keys and values.
 *
 * @param batch The batch.
 * @param out Output [rows, nHeads·hd].
 * @param qkv q/k/v rows [rows, ld] (rotated queries and keys).
 * @param cache The layer's keys and values [cap, nKvHeads·hd] each.
 * @param pos The position counter (u32 [1]): row t is at position pos + t.
 * @param shape Sizes.
 */
export function encodeCachedAttention(
  batch: GpuBatch,
  out: GPUBuffer,
  qkv: GPUBuffer,
  cache: { readonly k: GPUBuffer; readonly v: GPUBuffer },
  pos: GPUBuffer,
  shape: CachedAttentionShape,
): void {
  const { rows, nHeads, nKvHeads, hd, ld, cap } = shape;
  const spec: CachedAttentionSpec = { hd, width: hd % 4 === 0 && hd <= 4 * WG ? 4 : 1 };
  const pipeline = cachedPipeline(
    batch.gpu,
    `decode:attention:${hd}:${spec.width}`,
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
    [out, qkv, cache.k, cache.v, pos, u],
    foldGroups(batch.gpu, rows * nHeads),
  );
}

/** out[i] = table[pos·w + i] for i < n (the rotary rows of positions pos, pos + 1, …). */
export function ropeRowsWgsl(): string {
  return `struct P { n: u32, w: u32, len: u32 }
@group(0) @binding(0) var<storage, read_write> R: array<f32>;
@group(0) @binding(1) var<storage, read> CS: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
@group(0) @binding(3) var<uniform> p: P;
@compute @workgroup_size(${EW})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  ${FLAT}
  if (i >= p.n) { return; }
  let s = pos[0] * p.w + i;
  R[i] = select(0.0, CS[s], s < p.len);
}
`;
}

/**
 * Records the copy of the rotary (cos, sin) rows of positions
 * [pos, pos + rows) out of the table, as `encodeRope` reads them for rows
 * that form one sequence of `rows` tokens.
 *
 * @param batch The batch.
 * @param out Rows [rows, hd] ((cos, sin) pairs).
 * @param table The table [positions, hd] (`ropeTable`).
 * @param pos The position counter.
 * @param shape Rows, head width, and the table's positions.
 */
export function encodeRopeRows(
  batch: GpuBatch,
  out: GPUBuffer,
  table: GPUBuffer,
  pos: GPUBuffer,
  shape: { rows: number; hd: number; positions: number },
): void {
  const { rows, hd, positions } = shape;
  const n = rows * hd;
  const { pipeline, groups } = elementwise(batch, "decode:rope-rows", ropeRowsWgsl, n);
  const u = batch.uniform([{ u32: n }, { u32: hd }, { u32: positions * hd }]);
  batch.dispatch(pipeline, [out, table, pos, u], groups);
}

/**
 * Y[yOff + r·ldy + c] (+)= X[xOff + r·ldx + c] for r < rows, c < w: a copy
 * (or sum) of a block of columns into a slice of wider rows.
 *
 * @param add Add instead of copying.
 * @returns WGSL source.
 */
export function sliceCopyWgsl(add: boolean): string {
  return `struct P { n: u32, w: u32, ldx: u32, xOff: u32, ldy: u32, yOff: u32 }
@group(0) @binding(0) var<storage, read_write> Y: array<f32>;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(${EW})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  ${FLAT}
  if (i >= p.n) { return; }
  let r = i / p.w;
  let c = i % p.w;
  let o = p.yOff + r * p.ldy + c;
  let v = X[p.xOff + r * p.ldx + c];
  Y[o] = ${add ? "Y[o] + v" : "v"};
}
`;
}

/** Placement of {@linkcode encodeSliceCopy}, in elements. */
export interface SliceCopyShape {
  readonly rows: number;
  readonly w: number;
  readonly ldx: number;
  readonly xOff: number;
  readonly ldy: number;
  readonly yOff: number;
}

/**
 * Records a copy (or sum) of a block of columns into a slice of other rows.
 *
 * @param batch The batch.
 * @param y Destination (a different buffer from `x`).
 * @param x Source.
 * @param shape Placement.
 * @param add Add to the destination instead of overwriting it.
 */
export function encodeSliceCopy(
  batch: GpuBatch,
  y: GPUBuffer,
  x: GPUBuffer,
  shape: SliceCopyShape,
  add: boolean,
): void {
  const { rows, w, ldx, xOff, ldy, yOff } = shape;
  const n = rows * w;
  const key = `decode:slice-${add ? "add" : "copy"}`;
  const { pipeline, groups } = elementwise(batch, key, () => sliceCopyWgsl(add), n);
  const u = batch.uniform([
    { u32: n },
    { u32: w },
    { u32: ldx },
    { u32: xOff },
    { u32: ldy },
    { u32: yOff },
  ]);
  batch.dispatch(pipeline, [y, x, u], groups);
}

/** pos[0] += n (one thread). */
export function advanceWgsl(): string {
  return `struct P { n: u32 }
@group(0) @binding(0) var<storage, read_write> pos: array<u32>;
@group(0) @binding(1) var<uniform> p: P;
@compute @workgroup_size(1)
fn main() { pos[0] = pos[0] + p.n; }
`;
}

/**
 * Records pos += n.
 *
 * @param batch The batch.
 * @param pos The position counter.
 * @param n Positions to advance.
 */
export function encodeAdvance(batch: GpuBatch, pos: GPUBuffer, n: number): void {
  const pipeline = cachedPipeline(batch.gpu, "decode:advance", advanceWgsl);
  batch.dispatch(pipeline, [pos, batch.uniform([{ u32: n }])], [1]);
}

/** x[i] = E[tok[i / dim]·dim + i mod dim] for an f16 embedding stored as pairs in u32 words. */
export function embedF16Wgsl(): string {
  return `struct P { n: u32, dim: u32 }
@group(0) @binding(0) var<storage, read_write> X: array<f32>;
@group(0) @binding(1) var<storage, read> E: array<u32>;
@group(0) @binding(2) var<storage, read> tok: array<u32>;
@group(0) @binding(3) var<uniform> p: P;
@compute @workgroup_size(${EW})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  ${FLAT}
  if (i >= p.n) { return; }
  let e = tok[i / p.dim] * p.dim + i % p.dim;
  let pair = unpack2x16float(E[e / 2u]);
  X[i] = select(pair.x, pair.y, e % 2u == 1u);
}
`;
}

/**
 * Records the gather of f16 embedding rows (reference: `llamaEmbed` of the
 * f16-rounded embedding).
 *
 * @param batch The batch.
 * @param x Output [rows, dim].
 * @param embedding f16 embedding [vocab, dim].
 * @param tokens Token ids (u32) [rows].
 * @param rows Rows.
 * @param dim Width.
 */
export function encodeEmbedF16(
  batch: GpuBatch,
  x: GPUBuffer,
  embedding: GPUBuffer,
  tokens: GPUBuffer,
  rows: number,
  dim: number,
): void {
  const n = rows * dim;
  const { pipeline, groups } = elementwise(batch, "decode:embed-f16", embedF16Wgsl, n);
  batch.dispatch(
    pipeline,
    [x, embedding, tokens, batch.uniform([{ u32: n }, { u32: dim }])],
    groups,
  );
}

/** Partial maxima per workgroup for {@linkcode encodeArgmax} (at most WG of them). */
function argmaxParts(n: number): number {
  return Math.max(1, Math.min(WG, Math.ceil(n / (WG * 8))));
}

/**
 * The first index of the largest value (NaN never wins), in two passes:
 * `final` false, each of `parts` workgroups reduces a strided share of L to
 * one (value, index) pair; `final` true, one workgroup reduces the pairs
 * and writes the index to `tok[0]`. Reference: the first i with
 * L[i] = max(L), as the CPU's greedy choice.
 *
 * @param final The second pass.
 * @returns WGSL source.
 */
export function argmaxWgsl(final: boolean): string {
  const io = final
    ? `@group(0) @binding(0) var<storage, read_write> tok: array<u32>;
@group(0) @binding(1) var<storage, read> PV: array<f32>;
@group(0) @binding(2) var<storage, read> PI: array<u32>;
@group(0) @binding(3) var<uniform> p: P;`
    : `@group(0) @binding(0) var<storage, read_write> PV: array<f32>;
@group(0) @binding(1) var<storage, read_write> PI: array<u32>;
@group(0) @binding(2) var<storage, read> L: array<f32>;
@group(0) @binding(3) var<uniform> p: P;`;
  const scan = final
    ? `  for (var i = lid; i < p.parts; i += ${WG}u) { take(PV[i], PI[i]); }`
    : `  for (var i = wg.x * ${WG}u + lid; i < p.n; i += p.parts * ${WG}u) { take(L[i], i); }`;
  const write = final
    ? "if (lid == 0u) { tok[0] = select(ri[0], 0u, ri[0] == 0xffffffffu); }"
    : "if (lid == 0u) { PV[wg.x] = rv[0]; PI[wg.x] = ri[0]; }";
  return `struct P { n: u32, parts: u32 }
${io}
var<workgroup> rv: array<f32, ${WG}>;
var<workgroup> ri: array<u32, ${WG}>;
var<private> bv: f32 = -3.4028235e38;
var<private> bi: u32 = 0xffffffffu;
fn take(v: f32, i: u32) {
  if (v > bv || (v == bv && i < bi)) { bv = v; bi = i; }
}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
${scan}
  rv[lid] = bv;
  ri[lid] = bi;
  workgroupBarrier();
  for (var st = ${WG / 2}u; st > 0u; st = st >> 1u) {
    if (lid < st) {
      let v = rv[lid + st];
      let i = ri[lid + st];
      if (v > rv[lid] || (v == rv[lid] && i < ri[lid])) { rv[lid] = v; ri[lid] = i; }
    }
    workgroupBarrier();
  }
  ${write}
}
`;
}

/** The scratch {@linkcode encodeArgmax} needs for n values: bytes of its value and index buffers. */
export function argmaxScratchBytes(n: number): number {
  return argmaxParts(n) * 4;
}

/**
 * Records tok[0] = the first index of the largest of n values.
 *
 * @param batch The batch.
 * @param tok Output (u32 [1]).
 * @param values Values (f32 [n]).
 * @param n Count.
 * @param scratch Partial values and indices ({@linkcode argmaxScratchBytes} bytes each).
 */
export function encodeArgmax(
  batch: GpuBatch,
  tok: GPUBuffer,
  values: GPUBuffer,
  n: number,
  scratch: { readonly values: GPUBuffer; readonly indices: GPUBuffer },
): void {
  const parts = argmaxParts(n);
  const u = batch.uniform([{ u32: n }, { u32: parts }]);
  const first = cachedPipeline(batch.gpu, "decode:argmax", () => argmaxWgsl(false));
  batch.dispatch(first, [scratch.values, scratch.indices, values, u], [parts]);
  const second = cachedPipeline(batch.gpu, "decode:argmax-final", () => argmaxWgsl(true));
  batch.dispatch(second, [tok, scratch.values, scratch.indices, u], [1]);
}

/**
 * x += d, then y = x / sqrt(mean(x²) + eps) · w, one workgroup per row: a
 * residual add that a quantized product left pending, fused into the
 * RMSNorm that reads the sum next. Reference: the sum, then `rmsNorm` of
 * `forward.ts`.
 */
export function addRmsNormWgsl(): string {
  return `struct P { rows: u32, dim: u32, eps: f32 }
@group(0) @binding(0) var<storage, read_write> Y: array<f32>;
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read> D: array<f32>;
@group(0) @binding(3) var<storage, read> W: array<f32>;
@group(0) @binding(4) var<uniform> p: P;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  ${WG_FLAT}
  if (wgi >= p.rows) { return; }
  let o = wgi * p.dim;
  var s = 0.0;
  for (var i = lid; i < p.dim; i += ${WG}u) {
    let v = X[o + i] + D[o + i];
    X[o + i] = v;
    s = fma(v, v, s);
  }
  red[lid] = s;
${tree("sum")}
  let inv = 1.0 / sqrt(red[0] / f32(p.dim) + p.eps);
  for (var i = lid; i < p.dim; i += ${WG}u) { Y[o + i] = X[o + i] * inv * W[i]; }
}
`;
}

/**
 * Records x += d and the RMSNorm of the sum, for every row.
 *
 * @param batch The batch.
 * @param y Output [rows, dim].
 * @param x Residual stream [rows, dim], updated in place.
 * @param d The pending addend [rows, dim].
 * @param weight Scale [dim].
 * @param shape Rows, width and epsilon.
 */
export function encodeAddRmsNorm(
  batch: GpuBatch,
  y: GPUBuffer,
  x: GPUBuffer,
  d: GPUBuffer,
  weight: GPUBuffer,
  shape: { rows: number; dim: number; eps: number },
): void {
  const { rows, dim, eps } = shape;
  const pipeline = cachedPipeline(batch.gpu, "decode:add-rmsnorm", addRmsNormWgsl);
  const u = batch.uniform([{ u32: rows }, { u32: dim }, { f32: eps }]);
  batch.dispatch(pipeline, [y, x, d, weight, u], foldGroups(batch.gpu, rows));
}
