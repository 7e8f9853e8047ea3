/**
 * Library-internal: the small WebGPU kernels of token generation with a KV
 * cache, besides the matrix-vector product (`_gpu_gemv.ts`), the attention
 * against the cache (`_gpu_cached_attention.ts`) and the kernels the
 * whole-sequence forward pass shares (`_gpu_kernels.ts`): the rotary rows of
 * the current positions, the argmax that feeds the next step (and advances
 * the position counter), copies into column slices, the gather of an f16
 * embedding, and a residual add fused into the RMSNorm that follows it.
 *
 * The current position lives on the GPU (`pos`, one u32): the kernels read
 * it, and the argmax's last pass advances it at the end of each step, so a
 * step's commands are the same every time and can be replayed
 * (`_gpu_program.ts`) without writing anything from the host. Each kernel's
 * CPU reference is stated in its docs; the tests compare a whole decode
 * against the CPU forward pass of `forward.ts`. Web-standard only.
 *
 * @module
 */

import { cachedPipeline, foldGroups, type GpuBatch } from "../kernels/backend.ts";
import { elementwise, EW, FLAT, reduce, WG_FLAT } from "./_gpu_kernels.ts";

export { WG_FLAT };

/** Threads per workgroup of the per-row, argmax and attention kernels (a power of two). */
export const WG = 128;

/** A tree reduction of `red` (WG values) into red[0], for code inside `main`. */
export function tree(op: "max" | "sum"): string {
  return reduce(op, WG);
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

/** Element e of an f16 embedding E stored as pairs in u32 words, as WGSL (`f16At(e)`). */
const F16_AT = `fn f16At(e: u32) -> f32 {
  let pair = unpack2x16float(E[e / 2u]);
  return select(pair.x, pair.y, e % 2u == 1u);
}`;

/** x[i] = E[tok[i / dim]·dim + i mod dim] for an f16 embedding stored as pairs in u32 words. */
export function embedF16Wgsl(): string {
  return `struct P { n: u32, dim: u32 }
@group(0) @binding(0) var<storage, read_write> X: array<f32>;
@group(0) @binding(1) var<storage, read> E: array<u32>;
@group(0) @binding(2) var<storage, read> tok: array<u32>;
@group(0) @binding(3) var<uniform> p: P;
${F16_AT}
@compute @workgroup_size(${EW})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  ${FLAT}
  if (i >= p.n) { return; }
  X[i] = f16At(tok[i / p.dim] * p.dim + i % p.dim);
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
 * and writes the index to `tok[0]`, and with `advance` adds `p.adv` to the
 * position counter `pos[0]` (the last kernel of a decode step, so that
 * every kernel before it read the step's position). Reference: the first i
 * with L[i] = max(L), as the CPU's greedy choice.
 *
 * @param final The second pass.
 * @param then What the second pass also does (see {@linkcode ArgmaxThen}).
 * @returns WGSL source.
 */
export function argmaxWgsl(final: boolean, then: ArgmaxThen = {}): string {
  const { advance = false, history = false, embed } = then;
  if ((history && !advance) || (embed !== undefined && !history)) {
    throw new RangeError(
      "Cannot keep an argmax history without advancing the position, or embed without a history",
    );
  }
  const io = final
    ? `@group(0) @binding(0) var<storage, read_write> tok: array<u32>;
@group(0) @binding(1) var<storage, read> PV: array<f32>;
@group(0) @binding(2) var<storage, read> PI: array<u32>;
@group(0) @binding(3) var<uniform> p: P;${
      advance ? "\n@group(0) @binding(4) var<storage, read_write> pos: array<u32>;" : ""
    }${history ? "\n@group(0) @binding(5) var<storage, read_write> hist: array<u32>;" : ""}${
      embed
        ? `\n@group(0) @binding(6) var<storage, read_write> X: array<f32>;
@group(0) @binding(7) var<storage, read> E: array<${embed === "f16" ? "u32" : "f32"}>;${
          embed === "f16" ? `\n${F16_AT}` : ""
        }`
        : ""
    }`
    : `@group(0) @binding(0) var<storage, read_write> PV: array<f32>;
@group(0) @binding(1) var<storage, read_write> PI: array<u32>;
@group(0) @binding(2) var<storage, read> L: array<f32>;
@group(0) @binding(3) var<uniform> p: P;`;
  const scan = final
    ? `  for (var i = lid; i < p.parts; i += ${WG}u) { take(PV[i], PI[i]); }`
    : `  for (var i = wg.x * ${WG}u + lid; i < p.n; i += p.parts * ${WG}u) { take(L[i], i); }`;
  // Every thread reads the winner after the tree's last barrier; the embedding row is theirs.
  const row = embed === "f16" ? "X[i] = f16At(id * p.dim + i);" : "X[i] = E[id * p.dim + i];";
  const write = final
    ? `let id = select(ri[0], 0u, ri[0] == 0xffffffffu);
  if (lid == 0u) {
    tok[0] = id;${advance ? "\n    let at = pos[0] + p.adv;\n    pos[0] = at;" : ""}${
      history ? "\n    if (at - 1u < arrayLength(&hist)) { hist[at - 1u] = id; }" : ""
    }
  }${
      embed
        ? `
  for (var i = lid; i < p.dim; i += ${WG}u) {
    ${row}
  }`
        : ""
    }`
    : "if (lid == 0u) { PV[wg.x] = rv[0]; PI[wg.x] = ri[0]; }";
  return `struct P { n: u32, parts: u32, adv: u32, dim: u32 }
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

/** What the argmax's second pass does besides writing tok[0] ({@linkcode argmaxWgsl}). */
export interface ArgmaxThen {
  /** pos[0] += p.adv (the last kernel of a decode step). */
  readonly advance?: boolean;
  /** hist[new pos − 1] = the index, within its length (needs `advance`). */
  readonly history?: boolean;
  /**
   * X[i] = E[index·dim + i] for i < dim: the next step's input row, from an
   * f16 (pairs in u32 words) or f32 embedding (needs `history`).
   */
  readonly embed?: "f16" | "f32";
}

/** The scratch {@linkcode encodeArgmax} needs for n values: bytes of its value and index buffers. */
export function argmaxScratchBytes(n: number): number {
  return argmaxParts(n) * 4;
}

/**
 * Records tok[0] = the first index of the largest of n values (and, with
 * `advance`, pos[0] += advance.n after it; with `advance.history` also
 * history[new pos − 1] = the index: the token that follows position
 * new pos − 1, so a run's tokens gather in one buffer by position; with
 * `advance.embed` x = the token's embedding row, the next step's input).
 *
 * @param batch The batch.
 * @param tok Output (u32 [1]).
 * @param values Values (f32 [n]).
 * @param n Count.
 * @param scratch Partial values and indices ({@linkcode argmaxScratchBytes} bytes each).
 * @param advance The position counter, the positions to advance it by, the
 *   history (u32 [positions]; an index past its end is not written), and
 *   the embedding row to gather for the token (needs the history).
 */
export function encodeArgmax(
  batch: GpuBatch,
  tok: GPUBuffer,
  values: GPUBuffer,
  n: number,
  scratch: { readonly values: GPUBuffer; readonly indices: GPUBuffer },
  advance?: {
    readonly pos: GPUBuffer;
    readonly n: number;
    readonly history?: GPUBuffer;
    readonly embed?: ArgmaxEmbed;
  },
): void {
  const parts = argmaxParts(n);
  const embed = advance?.embed;
  if (embed !== undefined && advance?.history === undefined) {
    throw new RangeError("Cannot embed the argmax's token without a history");
  }
  const u = batch.uniform([
    { u32: n },
    { u32: parts },
    { u32: advance?.n ?? 0 },
    { u32: embed?.dim ?? 0 },
  ]);
  const first = cachedPipeline(batch.gpu, "decode:argmax", () => argmaxWgsl(false));
  batch.dispatch(first, [scratch.values, scratch.indices, values, u], [parts]);
  const then: ArgmaxThen = {
    advance: advance !== undefined,
    history: advance?.history !== undefined,
    ...(embed ? { embed: embed.dtype } : {}),
  };
  const second = cachedPipeline(
    batch.gpu,
    `decode:argmax-final:${JSON.stringify(then)}`,
    () => argmaxWgsl(true, then),
  );
  const resources = [
    tok,
    scratch.values,
    scratch.indices,
    u,
    ...(advance ? [advance.pos] : []),
    ...(advance?.history ? [advance.history] : []),
    ...(embed ? [embed.x, embed.table] : []),
  ];
  batch.dispatch(second, resources, [1]);
}

/** The embedding row the argmax's second pass writes ({@linkcode ArgmaxThen.embed}). */
export interface ArgmaxEmbed {
  /** Output row (f32 [dim]). */
  readonly x: GPUBuffer;
  /** The embedding [vocab, dim]. */
  readonly table: GPUBuffer;
  /** Its storage. */
  readonly dtype: "f16" | "f32";
  /** Row width. */
  readonly dim: number;
}

/** Threads per workgroup of {@linkcode addRmsNormWgsl}. */
const NORM_WG = 256;

/**
 * (x += d, then) y = x / sqrt(mean(x²) + eps) · w, one workgroup of 256
 * threads per row: the RMSNorm of a decode step's row, with the residual add
 * a quantized product left pending fused into it. Specialized on the width,
 * so each thread loads its ⌈dim/256⌉ values at once and keeps them in
 * registers for the output (a row of a decode step is a single workgroup's
 * work, so its latency is the step's). Reference: the sum, then `rmsNorm` of
 * `forward.ts`.
 *
 * @param dim Row width.
 * @param add Add a pending addend D into X first.
 * @returns WGSL source.
 */
export function addRmsNormWgsl(dim: number, add: boolean): string {
  const per = Math.ceil(dim / NORM_WG);
  return `struct P { rows: u32, eps: f32 }
@group(0) @binding(0) var<storage, read_write> Y: array<f32>;
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read> W: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${add ? "@group(0) @binding(4) var<storage, read> D: array<f32>;" : ""}
const DIM = ${dim}u;
const PER = ${per}u;
var<workgroup> red: array<f32, ${NORM_WG}>;
@compute @workgroup_size(${NORM_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  ${WG_FLAT}
  if (wgi >= p.rows) { return; }
  let o = wgi * DIM;
  var v: array<f32, PER>;
  var s = 0.0;
  for (var j = 0u; j < PER; j++) {
    let i = lid + j * ${NORM_WG}u;
    if (i < DIM) {
      ${add ? "let a = X[o + i] + D[o + i];\n      X[o + i] = a;" : "let a = X[o + i];"}
      v[j] = a;
      s = fma(a, a, s);
    }
  }
  red[lid] = s;
${reduce("sum", NORM_WG)}
  let inv = 1.0 / sqrt(red[0] / f32(DIM) + p.eps);
  for (var j = 0u; j < PER; j++) {
    let i = lid + j * ${NORM_WG}u;
    if (i < DIM) { Y[o + i] = v[j] * inv * W[i]; }
  }
}
`;
}

/**
 * Records (x += d, then) the RMSNorm of every row of x into y.
 *
 * @param batch The batch.
 * @param y Output [rows, dim].
 * @param x Residual stream [rows, dim], updated in place when `d` is given.
 * @param d The pending addend [rows, dim], or null (a plain RMSNorm).
 * @param weight Scale [dim].
 * @param shape Rows, width and epsilon.
 */
export function encodeAddRmsNorm(
  batch: GpuBatch,
  y: GPUBuffer,
  x: GPUBuffer,
  d: GPUBuffer | null,
  weight: GPUBuffer,
  shape: { rows: number; dim: number; eps: number },
): void {
  const { rows, dim, eps } = shape;
  const add = d !== null;
  const pipeline = cachedPipeline(
    batch.gpu,
    `decode:${add ? "add-" : ""}rmsnorm:${dim}`,
    () => addRmsNormWgsl(dim, add),
  );
  const u = batch.uniform([{ u32: rows }, { f32: eps }]);
  const bindings = [y, x, weight, u, ...(add ? [d] : [])];
  batch.dispatch(pipeline, bindings, foldGroups(batch.gpu, rows));
}
