/**
 * The elementwise and per-row WebGPU kernels of the Llama forward pass (the
 * matrix products go through `kernels/gemm_kernel.ts`): embedding gather,
 * RMSNorm, rotary embeddings (after the q/k/v biases and the per-head q/k
 * RMSNorm, in the same dispatch), causal grouped-query attention, SwiGLU, and the
 * per-row negative log-likelihood. Activations are row-major f32 [rows, width];
 * `rows` is a batch of sequences of `T` tokens each, so row r is position
 * r mod T of sequence ⌊r / T⌋. Their CPU references are the functions of
 * `forward.ts` (`llamaEmbed`, `rmsNorm`, `causalAttention`, ...), which the
 * tests compare against through the whole forward pass. Web-standard only.
 *
 * @module
 */

import { cachedPipeline, foldGroups, type GpuBatch } from "../kernels/backend.ts";

/** Threads per workgroup of the per-row kernels (reductions assume a power of two). */
const WG = 64;
/** Threads per workgroup of the elementwise kernels. */
export const EW = 256;

/** A linear index over folded 2-D workgroup counts (see `foldGroups`). */
export const FLAT = "let i = gid.x + gid.y * nw.x * " + EW + "u;";
/** The workgroup index over folded 2-D counts. */
export const WG_FLAT = "let wgi = wg.x + wg.y * nw.x;";

/**
 * A tree reduction of `red` (`width` values, a power of two) into red[0],
 * for code inside `main`.
 *
 * @param op The combining operation.
 * @param width Threads of the workgroup. @default 64
 * @returns WGSL statements.
 */
export function reduce(op: "max" | "sum", width = WG): string {
  const combine = op === "max"
    ? "red[lid] = max(red[lid], red[lid + st]);"
    : "red[lid] = red[lid] + red[lid + st];";
  return `  workgroupBarrier();
  for (var st = ${width / 2}u; st > 0u; st = st >> 1u) {
    if (lid < st) { ${combine} }
    workgroupBarrier();
  }`;
}

/**
 * The cached pipeline of an elementwise kernel and its folded workgroup counts for n threads.
 *
 * @param batch The batch.
 * @param key Pipeline cache key.
 * @param code WGSL source.
 * @param n Threads (elements).
 * @returns The pipeline and the workgroup counts.
 */
export function elementwise(batch: GpuBatch, key: string, code: () => string, n: number) {
  const pipeline = cachedPipeline(batch.gpu, key, code);
  return { pipeline, groups: foldGroups(batch.gpu, Math.ceil(n / EW)) };
}

/** x[r, :] = E[tok[r], :] for r < rows. */
export function embedWgsl(): string {
  return `struct P { n: u32, dim: u32 }
@group(0) @binding(0) var<storage, read_write> X: array<f32>;
@group(0) @binding(1) var<storage, read> E: array<f32>;
@group(0) @binding(2) var<storage, read> tok: array<u32>;
@group(0) @binding(3) var<uniform> p: P;
@compute @workgroup_size(${EW})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  ${FLAT}
  if (i >= p.n) { return; }
  X[i] = E[tok[i / p.dim] * p.dim + i % p.dim];
}
`;
}

/**
 * Records the embedding gather.
 *
 * @param batch The batch.
 * @param x Output [rows, dim].
 * @param embedding Token embedding [vocab, dim].
 * @param tokens Token ids (u32) [rows].
 * @param rows Rows.
 * @param dim Width.
 */
export function encodeEmbed(
  batch: GpuBatch,
  x: GPUBuffer,
  embedding: GPUBuffer,
  tokens: GPUBuffer,
  rows: number,
  dim: number,
): void {
  const { pipeline, groups } = elementwise(batch, "llama:embed", embedWgsl, rows * dim);
  batch.dispatch(pipeline, [
    x,
    embedding,
    tokens,
    batch.uniform([{ u32: rows * dim }, {
      u32: dim,
    }]),
  ], groups);
}

/** y = x / sqrt(mean(x²) + eps) · w, one workgroup per row. */
export function rmsNormWgsl(): string {
  return `struct P { rows: u32, dim: u32, eps: f32 }
@group(0) @binding(0) var<storage, read_write> Y: array<f32>;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> W: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  ${WG_FLAT}
  if (wgi >= p.rows) { return; }
  let o = wgi * p.dim;
  var s = 0.0;
  for (var i = lid; i < p.dim; i += ${WG}u) { let v = X[o + i]; s = fma(v, v, s); }
  red[lid] = s;
${reduce("sum")}
  let inv = 1.0 / sqrt(red[0] / f32(p.dim) + p.eps);
  for (var i = lid; i < p.dim; i += ${WG}u) { Y[o + i] = X[o + i] * inv * W[i]; }
}
`;
}

/**
 * Records an RMSNorm of every row.
 *
 * @param batch The batch.
 * @param y Output [rows, dim] (a different buffer from `x`).
 * @param x Input [rows, dim].
 * @param weight Scale [dim].
 * @param rows Rows.
 * @param dim Width.
 * @param eps Epsilon.
 */
export function encodeRmsNorm(
  batch: GpuBatch,
  y: GPUBuffer,
  x: GPUBuffer,
  weight: GPUBuffer,
  rows: number,
  dim: number,
  eps: number,
): void {
  const pipeline = cachedPipeline(batch.gpu, "llama:rmsnorm", rmsNormWgsl);
  const u = batch.uniform([{ u32: rows }, { u32: dim }, { f32: eps }]);
  batch.dispatch(pipeline, [y, x, weight, u], foldGroups(batch.gpu, rows));
}

/** Specialization of {@linkcode ropeWgsl}. */
export interface RopeSpec {
  /** Adds a bias to each column before the rotation. */
  readonly bias: boolean;
  /** RMSNorm of the heads in a range before the rotation (one workgroup per row and head). */
  readonly norm: boolean;
}

/** The pair (a, b) at column offset o turned by the (cos, sin) pair cs, written back. */
const ROTATE = `  Q[o] = a * cs.x - b * cs.y;
  Q[o + 1u] = a * cs.y + b * cs.x;`;

/**
 * Rotary embedding in place on the heads of `hd` columns of rows with
 * leading dimension `ld`: interleaved pairs (2j, 2j+1) of a head turn by the
 * angle of position r mod T and frequency index j, read from a
 * [positions, hd/2] table of (cos, sin). With `bias`, a bias B[c] is first
 * added to every column c < width, and the columns past the rotated ones get
 * only the bias (the values of a q/k/v row). With `norm`, the heads in
 * [normFrom, normTo) are first scaled to unit RMS (with eps) and by a weight
 * [2, hd]: its first row for heads before `split` (queries), its second for
 * the others (keys); this variant runs one workgroup per row and head, the
 * others one thread per pair.
 *
 * @param spec Whether a bias is added and heads are normalized.
 * @returns WGSL source.
 */
export function ropeWgsl(spec: RopeSpec = { bias: false, norm: false }): string {
  const { bias, norm } = spec;
  const biasBinding = bias ? "@group(0) @binding(2) var<storage, read> B: array<f32>;\n" : "";
  const next = bias ? 3 : 2;
  if (!norm) {
    return `struct P { n: u32, pairs: u32, ld: u32, T: u32, hd: u32${bias ? ", rot: u32" : ""} }
@group(0) @binding(0) var<storage, read_write> Q: array<f32>;
@group(0) @binding(1) var<storage, read> CS: array<vec2<f32>>;
${biasBinding}@group(0) @binding(${next}) var<uniform> p: P;
@compute @workgroup_size(${EW})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  ${FLAT}
  if (i >= p.n) { return; }
  let r = i / p.pairs;
  let j = (i % p.pairs) * 2u;
${
      bias
        ? `  let o = r * p.ld + j;
  let a = Q[o] + B[j];
  let b = Q[o + 1u] + B[j + 1u];
  if (j >= p.rot) {
    Q[o] = a;
    Q[o + 1u] = b;
    return;
  }
  let cs = CS[(r % p.T) * (p.hd / 2u) + (j % p.hd) / 2u];
`
        : `  let cs = CS[(r % p.T) * (p.hd / 2u) + (j % p.hd) / 2u];
  let o = r * p.ld + j;
  let a = Q[o];
  let b = Q[o + 1u];
`
    }${ROTATE}
}
`;
  }
  const add = (c: string) => bias ? ` + B[${c}]` : "";
  return `struct P { rows: u32, heads: u32, ld: u32, T: u32, hd: u32, rotHeads: u32,
  normFrom: u32, normTo: u32, split: u32, eps: f32 }
@group(0) @binding(0) var<storage, read_write> Q: array<f32>;
@group(0) @binding(1) var<storage, read> CS: array<vec2<f32>>;
${biasBinding}@group(0) @binding(${next}) var<storage, read> W: array<f32>;
@group(0) @binding(${next + 1}) var<uniform> p: P;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  ${WG_FLAT}
  if (wgi >= p.rows * p.heads) { return; }
  let r = wgi / p.heads;
  let h = wgi % p.heads;
  let c0 = h * p.hd;
  let o0 = r * p.ld + c0;
  let normed = h >= p.normFrom && h < p.normTo;
  var inv = 1.0;
  if (normed) {
    var s = 0.0;
    for (var i = lid; i < p.hd; i += ${WG}u) { let v = Q[o0 + i]${
    add("c0 + i")
  }; s = fma(v, v, s); }
    red[lid] = s;
${reduce("sum").replace(/^/gm, "  ")}
    inv = 1.0 / sqrt(red[0] / f32(p.hd) + p.eps);
  }
  let w0 = select(p.hd, 0u, h < p.split);
  let half = p.hd / 2u;
  for (var k = lid; k < half; k += ${WG}u) {
    let j = 2u * k;
    let o = o0 + j;
    var a = Q[o]${add("c0 + j")};
    var b = Q[o + 1u]${add("c0 + j + 1u")};
    if (normed) {
      a = a * inv * W[w0 + j];
      b = b * inv * W[w0 + j + 1u];
    }
    if (h < p.rotHeads) {
      let cs = CS[(r % p.T) * half + k];
    ${ROTATE.replaceAll("\n", "\n    ")}
    } else {
      Q[o] = a;
      Q[o + 1u] = b;
    }
  }
}
`;
}

/** The optional steps of {@linkcode encodeRope} before the rotation. */
export interface RopePrologue {
  /** Bias [width] added to columns [0, width) first; columns past the rotated ones get only it. */
  readonly bias?: { readonly buffer: GPUBuffer; readonly width: number };
  /**
   * RMSNorm (with eps) of the heads in [from, to), scaled by row 0 of the
   * weight [2, hd] for heads before `split` and by row 1 for the others.
   */
  readonly norm?: {
    readonly weight: GPUBuffer;
    readonly from: number;
    readonly to: number;
    readonly split: number;
    readonly eps: number;
  };
}

/**
 * Records the rotary embedding of the first `width` columns of each row,
 * after an optional bias and per-head RMSNorm.
 *
 * @param batch The batch.
 * @param q Rows [rows, ld], rotated in place.
 * @param table (cos, sin) pairs [positions ≥ T, hd/2].
 * @param shape Rows, sequence length, rotated width, leading dimension, head width.
 * @param prologue Bias and head norm applied first.
 */
export function encodeRope(
  batch: GpuBatch,
  q: GPUBuffer,
  table: GPUBuffer,
  shape: { rows: number; T: number; width: number; ld: number; hd: number },
  prologue: RopePrologue = {},
): void {
  const { rows, T, width, ld, hd } = shape;
  const { bias, norm } = prologue;
  const spec: RopeSpec = { bias: bias !== undefined, norm: norm !== undefined };
  const total = bias ? Math.max(bias.width, width) : width;
  if (width % hd !== 0 || total % hd !== 0 || total > ld) {
    throw new RangeError(
      `Cannot rotate ${width} columns (${total} with the bias) of rows of ${ld} in heads of ${hd}`,
    );
  }
  const key = `llama:rope${spec.bias ? ":bias" : ""}${spec.norm ? ":norm" : ""}`;
  const pipeline = cachedPipeline(batch.gpu, key, () => ropeWgsl(spec));
  const extra = [...(bias ? [bias.buffer] : []), ...(norm ? [norm.weight] : [])];
  if (!norm) {
    const n = (rows * total) / 2;
    const u = batch.uniform([
      { u32: n },
      { u32: total / 2 },
      { u32: ld },
      { u32: T },
      { u32: hd },
      ...(bias ? [{ u32: width }] : []),
    ]);
    batch.dispatch(pipeline, [q, table, ...extra, u], foldGroups(batch.gpu, Math.ceil(n / EW)));
    return;
  }
  const heads = total / hd;
  const u = batch.uniform([
    { u32: rows },
    { u32: heads },
    { u32: ld },
    { u32: T },
    { u32: hd },
    { u32: width / hd },
    { u32: norm.from },
    { u32: norm.to },
    { u32: norm.split },
    { f32: norm.eps },
  ]);
  batch.dispatch(pipeline, [q, table, ...extra, u], foldGroups(batch.gpu, rows * heads));
}

/** Specialization of {@linkcode attentionWgsl}. */
export interface AttentionSpec {
  /** Head width. */
  readonly hd: number;
  /** Keys per tile staged in workgroup memory. */
  readonly kt: number;
}

/** Query positions per workgroup of the attention kernel (one thread each). */
const QB = 64;

/**
 * The bindings, workgroup tiles and indices both attention kernels share:
 * sequence `base`, query head `h`, its key/value head `kvh`, the block's
 * first query position `first`, this thread's `t` (clamped: `tq`) and the
 * block's last position `last`.
 */
function attentionPrologue(hd: number, kt: number, tile: "f32" | "vec4f", tileLen: number): string {
  return `struct P { T: u32, nSeq: u32, nHeads: u32, group: u32, dim: u32, ld: u32,
  kOff: u32, vOff: u32, scale: f32, nQB: u32 }
@group(0) @binding(0) var<storage, read_write> O: array<f32>;
@group(0) @binding(1) var<storage, read> QKV: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
const HD = ${hd}u;
const KT = ${kt}u;
var<workgroup> Ks: array<${tile}, ${tileLen}>;
var<workgroup> Vs: array<${tile}, ${tileLen}>;
@compute @workgroup_size(${QB})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  ${WG_FLAT}
  if (wgi >= p.nSeq * p.nHeads * p.nQB) { return; }
  let qb = wgi % p.nQB;
  let h = (wgi / p.nQB) % p.nHeads;
  let base = (wgi / (p.nQB * p.nHeads)) * p.T;
  let kvh = h / p.group;
  let first = qb * ${QB}u;
  let t = first + lid;
  let tq = min(t, p.T - 1u);
  let last = min(first + ${QB - 1}u, p.T - 1u);`;
}

/**
 * Causal grouped-query attention, one workgroup per (sequence, query head,
 * block of 64 query positions), one thread per query: key and value rows of
 * the head's key/value head are staged tile by tile in workgroup memory, and
 * each thread keeps a running (online) softmax: its maximum score m, the sum l
 * of exp(score − m), and the exp-weighted sum of value rows, rescaled when m grows.
 *
 * @param spec Head width and key tile.
 * @returns WGSL source.
 */
export function attentionWgsl(spec: AttentionSpec): string {
  const { hd, kt } = spec;
  return `${attentionPrologue(hd, kt, "f32", kt * hd)}
  var q: array<f32, ${hd}>;
  var acc: array<f32, ${hd}>;
  let qo = (base + tq) * p.ld + h * HD;
  for (var i = 0u; i < HD; i++) { q[i] = QKV[qo + i] * p.scale; acc[i] = 0.0; }
  var m = -3.0e38;
  var l = 0.0;
  for (var s0 = 0u; s0 <= last; s0 += KT) {
    for (var e = lid; e < KT * HD; e += ${QB}u) {
      let s = s0 + e / HD;
      if (s <= last) {
        let r = (base + s) * p.ld + kvh * HD + e % HD;
        Ks[e] = QKV[r + p.kOff];
        Vs[e] = QKV[r + p.vOff];
      }
    }
    workgroupBarrier();
    let send = min(s0 + KT, tq + 1u);
    for (var s = s0; s < send; s++) {
      let o = (s - s0) * HD;
      var d = 0.0;
      for (var i = 0u; i < HD; i++) { d = fma(q[i], Ks[o + i], d); }
      if (d > m) {
        let c = exp(m - d);
        l = l * c;
        for (var i = 0u; i < HD; i++) { acc[i] = acc[i] * c; }
        m = d;
      }
      let w = exp(d - m);
      l = l + w;
      for (var i = 0u; i < HD; i++) { acc[i] = fma(w, Vs[o + i], acc[i]); }
    }
    workgroupBarrier();
  }
  if (t < p.T) {
    let oo = (base + t) * p.dim + h * HD;
    let inv = 1.0 / l;
    for (var i = 0u; i < HD; i++) { O[oo + i] = acc[i] * inv; }
  }
}
`;
}

/**
 * The same attention with registers instead of loops (for head widths that
 * are multiples of 4, up to 128): each thread keeps its query and its
 * running sum as vec4s in named registers (the code is unrolled over the
 * head width and the key tile), and handles a tile of keys at once: all its
 * scores, their maximum, one rescale of the running sum, then the weighted
 * value rows. Keys and values are staged as vec4s; tiles entirely below the
 * causal diagonal of the whole workgroup skip the mask.
 *
 * @param spec Head width (a multiple of 4) and key tile.
 * @returns WGSL source.
 */
export function attentionTiledWgsl(spec: AttentionSpec): string {
  const { hd, kt } = spec;
  const V = hd / 4;
  const lines: string[] = [];
  const regs = Array.from({ length: V }, (_, i) => i);
  const keys = Array.from({ length: kt }, (_, j) => j);
  const decl = regs.map((i) =>
    `  let q${i} = vec4f(QKV[qo + ${4 * i}u], QKV[qo + ${4 * i + 1}u], QKV[qo + ${
      4 * i + 2
    }u], QKV[qo + ${4 * i + 3}u]) * p.scale;\n  var a${i} = vec4f(0.0);`
  ).join("\n");
  const score = (j: number) =>
    `    var sc${j} = ${regs.map((i) => `dot(q${i}, Ks[${j * V + i}u])`).join(" + ")};`;
  lines.push(...keys.map(score));
  const body = lines.join("\n");
  const masks = keys.map((j) => `      if (s0 + ${j}u > tq) { sc${j} = -3.0e38; }`).join("\n");
  const maxOf = keys.map((j) => `sc${j}`).reduce((acc, v) => `max(${acc}, ${v})`);
  const weights = keys.map((j) => `    let e${j} = exp(sc${j} - mNew);`).join("\n");
  const sum = keys.map((j) => `e${j}`).join(" + ");
  const accum = regs.map((i) =>
    `    a${i} = a${i} * c + ${keys.map((j) => `e${j} * Vs[${j * V + i}u]`).join(" + ")};`
  ).join("\n");
  const store = regs.map((i) =>
    `    let o${i} = a${i} * inv;
    O[oo + ${4 * i}u] = o${i}.x; O[oo + ${4 * i + 1}u] = o${i}.y;
    O[oo + ${4 * i + 2}u] = o${i}.z; O[oo + ${4 * i + 3}u] = o${i}.w;`
  ).join("\n");
  return `${attentionPrologue(hd, kt, "vec4f", kt * V)}
  let qo = (base + tq) * p.ld + h * HD;
${decl}
  var m = -3.0e38;
  var l = 0.0;
  for (var s0 = 0u; s0 <= last; s0 += KT) {
    for (var e = lid; e < KT * ${V}u; e += ${QB}u) {
      let s = min(s0 + e / ${V}u, p.T - 1u);
      let r = (base + s) * p.ld + kvh * HD + (e % ${V}u) * 4u;
      Ks[e] = vec4f(QKV[r + p.kOff], QKV[r + p.kOff + 1u], QKV[r + p.kOff + 2u], QKV[r + p.kOff + 3u]);
      Vs[e] = vec4f(QKV[r + p.vOff], QKV[r + p.vOff + 1u], QKV[r + p.vOff + 2u], QKV[r + p.vOff + 3u]);
    }
    workgroupBarrier();
    if (s0 <= tq) {
${body}
      if (s0 + KT - 1u > first) {
${masks}
      }
      let mNew = max(m, ${maxOf});
      let c = exp(m - mNew);
${weights}
      l = l * c + ${sum};
${accum}
      m = mNew;
    }
    workgroupBarrier();
  }
  if (t < p.T) {
    let oo = (base + t) * p.dim + h * HD;
    let inv = 1.0 / l;
${store}
  }
}
`;
}

/**
 * Records causal attention over the q, k, v column blocks of one buffer, for
 * `rows / T` sequences of T positions each.
 *
 * @param batch The batch.
 * @param out Output [rows, nHeads·hd].
 * @param qkv Rows [rows, ld]: queries at column 0, keys at `kOff`, values at `vOff`.
 * @param shape Sizes and placement.
 */
export function encodeAttention(
  batch: GpuBatch,
  out: GPUBuffer,
  qkv: GPUBuffer,
  shape: {
    rows: number;
    T: number;
    nHeads: number;
    nKvHeads: number;
    hd: number;
    ld: number;
    kOff: number;
    vOff: number;
  },
): void {
  const { rows, T, nHeads, nKvHeads, hd, ld, kOff, vOff } = shape;
  if (rows % T !== 0) {
    throw new RangeError(`Cannot run attention: ${rows} rows are not sequences of ${T}`);
  }
  // Head widths that are multiples of 4 take the register version, with key tiles of
  // 16 (two tiles of 16·hd floats: 16 KiB at hd 128); others the loop version, whose two
  // tiles of kt·hd floats stay within 8 KiB of workgroup memory.
  const tiled = hd % 4 === 0 && hd <= 128;
  const spec: AttentionSpec = tiled
    ? { hd, kt: 16 }
    : { hd, kt: Math.max(1, Math.min(64, Math.floor(1024 / hd))) };
  const pipeline = cachedPipeline(
    batch.gpu,
    `llama:attention${tiled ? "-tiled" : ""}:${hd}:${spec.kt}`,
    () => tiled ? attentionTiledWgsl(spec) : attentionWgsl(spec),
  );
  const nQB = Math.ceil(T / QB), nSeq = rows / T;
  const u = batch.uniform([
    { u32: T },
    { u32: nSeq },
    { u32: nHeads },
    { u32: nHeads / nKvHeads },
    { u32: nHeads * hd },
    { u32: ld },
    { u32: kOff },
    { u32: vOff },
    { f32: 1 / Math.sqrt(hd) },
    { u32: nQB },
  ]);
  batch.dispatch(pipeline, [out, qkv, u], foldGroups(batch.gpu, nSeq * nHeads * nQB));
}

/**
 * g[r, i] = silu(gate_i) · up_i for u [rows, 2H]: gate and up columns in
 * alternating blocks of B (gate column i at (i / B)·2B + i mod B, its up
 * column B later); B = H is the plain layout (all gates, then all ups).
 */
export function swigluWgsl(): string {
  return `struct P { n: u32, H: u32, B: u32 }
@group(0) @binding(0) var<storage, read_write> G: array<f32>;
@group(0) @binding(1) var<storage, read> U: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(${EW})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  ${FLAT}
  if (i >= p.n) { return; }
  let r = i / p.H;
  let c = i % p.H;
  let o = r * 2u * p.H + (c / p.B) * 2u * p.B + c % p.B;
  let z = U[o];
  G[i] = z / (1.0 + exp(-z)) * U[o + p.B];
}
`;
}

/**
 * Records the SwiGLU gate.
 *
 * @param batch The batch.
 * @param g Output [rows, H].
 * @param u Gate and up projections side by side [rows, 2H].
 * @param rows Rows.
 * @param H Hidden width.
 * @param block Gate and up columns alternate in blocks of this many (a
 *   divisor of H; H: all gates, then all ups).
 */
export function encodeSwiglu(
  batch: GpuBatch,
  g: GPUBuffer,
  u: GPUBuffer,
  rows: number,
  H: number,
  block: number = H,
): void {
  if (!Number.isInteger(block) || block < 1 || H % block !== 0) {
    throw new RangeError(`Cannot run SwiGLU over blocks of ${block}: not a divisor of ${H}`);
  }
  const { pipeline, groups } = elementwise(batch, "llama:swiglu", swigluWgsl, rows * H);
  const u32s = [{ u32: rows * H }, { u32: H }, { u32: block }];
  batch.dispatch(pipeline, [g, u, batch.uniform(u32s)], groups);
}

/**
 * Negative log-likelihood of each row's target under softmax(logits row):
 * log Σ exp(l) − l[target]; rows whose target is negative get 0.
 */
export function nllWgsl(): string {
  return `struct P { rows: u32, V: u32 }
@group(0) @binding(0) var<storage, read_write> NLL: array<f32>;
@group(0) @binding(1) var<storage, read> L: array<f32>;
@group(0) @binding(2) var<storage, read> tgt: array<i32>;
@group(0) @binding(3) var<uniform> p: P;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  ${WG_FLAT}
  if (wgi >= p.rows) { return; }
  let o = wgi * p.V;
  var mx = -3.0e38;
  for (var i = lid; i < p.V; i += ${WG}u) { mx = max(mx, L[o + i]); }
  red[lid] = mx;
${reduce("max")}
  let m = red[0];
  workgroupBarrier();
  var s = 0.0;
  for (var i = lid; i < p.V; i += ${WG}u) { s += exp(L[o + i] - m); }
  red[lid] = s;
${reduce("sum")}
  if (lid == 0u) {
    let tg = tgt[wgi];
    if (tg < 0) { NLL[wgi] = 0.0; } else { NLL[wgi] = log(red[0]) + m - L[o + u32(tg)]; }
  }
}
`;
}

/**
 * Records the per-row negative log-likelihood.
 *
 * @param batch The batch.
 * @param nll Output [rows].
 * @param logits Logits [rows, V].
 * @param targets Target ids (i32, negative = not scored) [rows].
 * @param rows Rows.
 * @param V Vocabulary size.
 */
export function encodeNll(
  batch: GpuBatch,
  nll: GPUBuffer,
  logits: GPUBuffer,
  targets: GPUBuffer,
  rows: number,
  V: number,
): void {
  const pipeline = cachedPipeline(batch.gpu, "llama:nll", nllWgsl);
  const u = batch.uniform([{ u32: rows }, { u32: V }]);
  batch.dispatch(pipeline, [nll, logits, targets, u], foldGroups(batch.gpu, rows));
}

/** Y[i] = X[i] for i < n. */
export function copyWgsl(): string {
  return `struct P { n: u32 }
@group(0) @binding(0) var<storage, read_write> Y: array<f32>;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(${EW})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  ${FLAT}
  if (i >= p.n) { return; }
  Y[i] = X[i];
}
`;
}

/**
 * Records a copy of `n` f32 values inside the compute pass (a buffer copy
 * would end it).
 *
 * @param batch The batch.
 * @param y Destination.
 * @param x Source (another buffer).
 * @param n Values.
 */
export function encodeCopy(batch: GpuBatch, y: GPUBuffer, x: GPUBuffer, n: number): void {
  const { pipeline, groups } = elementwise(batch, "llama:copy", copyWgsl, n);
  batch.dispatch(pipeline, [y, x, batch.uniform([{ u32: n }])], groups);
}
