/**
 * The Optimal Brain Surgeon column loop on the GPU, one block of columns at
 * a time, all encoded into one submission:
 *
 * - the in-block kernel: one thread per output row (rows are independent
 *   inside a block) keeps the row's block in workgroup memory, fits the grids
 *   of groups that start in the block (on the block-start weights, as the CPU
 *   path does), and runs the column loop: decide q (grid rounding, pruning,
 *   both, or SpQR's grid and outliers, mirroring the deciders of
 *   `hessian/obs.ts`), record the scaled error e = (w − q)/U_jj, and update
 *   the rest of the block, w −= e·U[j, ·]. It decides a segment [j0, j1) of
 *   the block (the whole block but for SpQR, whose groups are fitted and
 *   their statistics quantized across rows between segments by
 *   `kernels/obs_spqr_kernel.ts`);
 * - for unstructured pruning, the block's mask threshold: scores w²/U_jj²,
 *   a 4-pass radix select of the k-th smallest over all rows of the block,
 *   and a scan that breaks ties in row-major order (exactly k pruned);
 * - the lazy update W[:, i2:] −= Err·U[block, i2:] through the gemm kernel.
 *
 * Web-standard only.
 *
 * @see Frantar et al., "GPTQ" (2023), Algorithm 1; Frantar & Alistarh,
 * "SparseGPT" (2023), Algorithm 1.
 *
 * @module
 */

import { cachedPipeline, foldGroups, type GpuBatch } from "./backend.ts";
import {
  encodeSpqrGroup,
  encodeSpqrThreshold,
  type ObsSpqrBuffers,
  type ObsSpqrShape,
  type ObsSpqrSpec,
  spqrDecisionWgsl,
  spqrWgslHelpers,
} from "./obs_spqr_kernel.ts";

/** Specialization of the in-block kernel ({@linkcode obsBlockWgsl}). */
export interface ObsBlockSpec {
  /** Rows per workgroup (one thread each). */
  readonly rowsPerGroup: number;
  /** Block size: the widest block and the row stride of Err and scores. */
  readonly blockSize: number;
  /** Grid decision, if any. */
  readonly grid: null | {
    /** Largest code, 2^bits − 1. */
    readonly maxq: number;
    /** Symmetric grid. */
    readonly symmetric: boolean;
    /** MSE clipping search when fitting. */
    readonly mse: boolean;
    /** Columns per group fitted at block start, or 0 when the grids are given. */
    readonly fitGroupSize: number;
  };
  /** Pruning decision, if any. */
  readonly prune: null | { readonly kind: "unstructured" } | {
    readonly kind: "nm";
    /** Kept per group. */
    readonly n: number;
    /** Group length. */
    readonly m: number;
  };
  /**
   * SpQR's decision (`kernels/obs_spqr_kernel.ts`; excludes `grid` and
   * `prune`): each block runs in segments that start at the groups' first
   * columns, each group fitted and its statistics quantized in between.
   */
  readonly spqr?: ObsSpqrSpec;
}

/** Codes packed per u32 word (4 up to 8 bits, else 2). */
export function codesPerWord(maxq: number): 4 | 2 {
  return maxq <= 255 ? 4 : 2;
}

/**
 * Binding order of the in-block kernel (binding i is the i-th name).
 *
 * @param spec The specialization.
 * @returns Buffer names: W, U, err, loss, [codes, scales, zeros, gIdx], [shrink], [mask],
 *   [spqrState], [scores, allow, state], params.
 */
export function obsBlockBindings(spec: ObsBlockSpec): string[] {
  const names = ["W", "U", "err", "loss"];
  if (spec.grid || spec.spqr) names.push("codes", "scales", "zeros", "gIdx");
  if (spec.grid && spec.grid.mse && spec.grid.fitGroupSize > 0) names.push("shrink");
  if (spec.prune || spec.spqr?.outliers) names.push("mask");
  if (spec.spqr?.outliers) names.push("spqrState");
  if (spec.prune?.kind === "unstructured") names.push("scores", "allow", "state");
  names.push("params");
  return names;
}

const f = (x: number): string => Number.isInteger(x) ? `${x}.0` : `${x}`;

/**
 * WGSL of the in-block column loop for one specialization.
 *
 * @param spec The specialization.
 * @returns WGSL source.
 */
export function obsBlockWgsl(spec: ObsBlockSpec): string {
  const R = spec.rowsPerGroup, BS = spec.blockSize;
  const names = obsBlockBindings(spec);
  const type: Record<string, string> = {
    W: "var<storage, read_write> W: array<f32>",
    U: "var<storage, read> U: array<f32>",
    err: "var<storage, read_write> Err: array<f32>",
    loss: "var<storage, read_write> lossBuf: array<f32>",
    codes: "var<storage, read_write> codes: array<u32>",
    scales: "var<storage, read_write> scales: array<f32>",
    zeros: "var<storage, read_write> zeros: array<f32>",
    gIdx: "var<storage, read> gIdx: array<u32>",
    shrink: "var<storage, read> shrink: array<f32>",
    mask: "var<storage, read_write> maskBits: array<u32>",
    scores: "var<storage, read> scoreBuf: array<u32>",
    allow: "var<storage, read> allowBuf: array<u32>",
    state: "var<storage, read> selState: array<u32>",
    spqrState: "var<storage, read_write> spqrState: array<atomic<u32>>",
    params: "var<uniform> prm: Params",
  };
  const decls = names.map((name, i) => `@group(0) @binding(${i}) ${type[name]};`).join("\n");
  const g = spec.grid, pr = spec.prune, sp = spec.spqr ?? null;
  const cpw = g ? codesPerWord(g.maxq) : 4;
  const hasCodes = g !== null || sp !== null, hasMask = pr !== null || sp?.outliers === true;
  const fit = g && g.fitGroupSize > 0
    ? `
fn quantError(x: f32, s: f32, z: f32) -> f32 {
  let c = clamp(round(x / s) + z, 0.0, ${f(g.maxq)});
  return abs(s * (c - z) - x);
}
fn fitGroup(row: u32, start: u32, len: u32) -> vec2<f32> {
  var xmin = 0.0; var xmax = 0.0;
  for (var i = 0u; i < len; i++) {
    let v = W[row + start + i];
    xmin = min(xmin, v); xmax = max(xmax, v);
  }
  ${g.symmetric ? "xmax = max(-xmin, xmax); if (xmin < 0.0) { xmin = -xmax; }" : ""}
  if (xmin == 0.0 && xmax == 0.0) { xmin = -1.0; xmax = 1.0; }
  var scale = (xmax - xmin) / ${f(g.maxq)};
  var zero = ${g.symmetric ? f((g.maxq + 1) / 2) : "round(-xmin / scale) + 0.0"};
  ${
      g.mse
        ? `var best = 3.4e38;
  for (var s = 0u; s < arrayLength(&shrink); s++) {
    let p = shrink[s];
    let lo = p * xmin; let hi = p * xmax;
    let scale1 = (hi - lo) / ${f(g.maxq)};
    let zero1 = ${g.symmetric ? f((g.maxq + 1) / 2) : "round(-lo / scale1) + 0.0"};
    var err = 0.0;
    for (var i = 0u; i < len; i++) { err += pow(quantError(W[row + start + i], scale1, zero1), 2.4); }
    if (err < best) { best = err; scale = scale1; zero = zero1; }
  }`
        : ""
    }
  return vec2<f32>(scale, zero);
}
`
    : "";
  const score = `fn score(v: f32, d: f32) -> f32 { return (v * v) / (d * d); }`;
  return `
struct Params {
  rows: u32, n: u32, i1: u32, width: u32, groups: u32, kPrune: u32, j0: u32, j1: u32,
  row0: u32, rowsAll: u32, pad0: u32, pad1: u32
}
${decls}
var<workgroup> blk: array<f32, ${BS * R}>;
${score}
${fit}
${sp ? spqrWgslHelpers(sp.maxq) : ""}
@compute @workgroup_size(${R})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let r = (wg.x + wg.y * nwg.x) * ${R}u + t;
  if (r >= prm.rows) { return; }
  let n = prm.n; let i1 = prm.i1; let width = prm.width;
  let wrow = r * n;
  // Columns [j0, j1) of the block are decided (one segment: the whole block,
  // except for SpQR), and [j0, width) updated.
  let j0 = prm.j0; let j1 = prm.j1;
  for (var k = j0; k < width; k++) { blk[k * ${R}u + t] = W[wrow + i1 + k]; }
${
    g && g.fitGroupSize > 0
      ? `  // Groups that start in this block, fitted on the block-start weights.
  for (var gi = (i1 + ${
        g.fitGroupSize - 1
      }u) / ${g.fitGroupSize}u; gi * ${g.fitGroupSize}u < i1 + width; gi++) {
    let start = gi * ${g.fitGroupSize}u;
    let sz = fitGroup(wrow, start, min(n, start + ${g.fitGroupSize}u) - start);
    scales[r * prm.groups + gi] = sz.x;
    zeros[r * prm.groups + gi] = sz.y;
  }`
      : ""
  }
${pr?.kind === "unstructured" ? "  var allow = allowBuf[r]; let T = selState[256];" : ""}
${pr?.kind === "nm" ? "  var nmMask = 0u;" : ""}
${sp?.outliers ? "  let spqrThr = bitcast<f32>(atomicLoad(&spqrState[0]));" : ""}
  var loss = 0.0;
  var codeWord = 0u;
  var maskWord = 0u;
  let codeRow = r * ((n + ${cpw - 1}u) / ${cpw}u);
  let maskRow = r * ((n + 31u) / 32u);
  for (var j = j0; j < j1; j++) {
    let pos = i1 + j;
    let w = blk[j * ${R}u + t];
    let d = U[pos * n + pos];
    var q = w;
    var pruned = false;
${
    pr?.kind === "unstructured"
      ? `    if (prm.kPrune != 0u) {
      let sb = scoreBuf[r * ${BS}u + j];
      if (sb < T) { pruned = true; } else if (sb == T && allow > 0u) { pruned = true; allow -= 1u; }
    }`
      : ""
  }
${
    pr?.kind === "nm"
      ? `    if (pos % ${pr.m}u == 0u) {
      // Drop the ${pr.m - pr.n} smallest scores of the group (ties: lower column first).
      nmMask = 0u;
      for (var a = 0u; a < ${pr.m}u; a++) {
        let sa = score(blk[(j + a) * ${R}u + t], U[(pos + a) * (n + 1u)]);
        var rank = 0u;
        for (var b = 0u; b < ${pr.m}u; b++) {
          let sb = score(blk[(j + b) * ${R}u + t], U[(pos + b) * (n + 1u)]);
          if (sb < sa || (sb == sa && b < a)) { rank += 1u; }
        }
        if (rank < ${pr.m - pr.n}u) { nmMask |= 1u << a; }
      }
    }
    pruned = ((nmMask >> (pos % ${pr.m}u)) & 1u) != 0u;`
      : ""
  }
${
    sp ? spqrDecisionWgsl(sp) : g
      ? `    let gk = gIdx[pos];
    let s = scales[r * prm.groups + gk];
    let z = zeros[r * prm.groups + gk];
    var c = z;
    if (pruned) { q = 0.0; } else {
      c = clamp(round(w / s) + z, 0.0, ${f(g.maxq)});
      q = s * (c - z);
    }`
      : "    if (pruned) { q = 0.0; }"
  }
${
    hasCodes
      ? `    let cw = codeRow + pos / ${cpw}u;
    if (pos % ${cpw}u == 0u) { codeWord = 0u; } else if (j == j0) { codeWord = codes[cw]; }
    codeWord |= u32(c) << ((pos % ${cpw}u) * ${32 / cpw}u);
    if (pos % ${cpw}u == ${cpw - 1}u || j + 1u == j1) { codes[cw] = codeWord; }`
      : ""
  }
${
    hasMask
      ? `    let mw = maskRow + pos / 32u;
    if (pos % 32u == 0u) { maskWord = 0u; } else if (j == j0) { maskWord = maskBits[mw]; }
    if (pruned) { maskWord |= 1u << (pos % 32u); }
    if (pos % 32u == 31u || j + 1u == j1) { maskBits[mw] = maskWord; }`
      : ""
  }
    let e = (w - q) / d;
    loss = fma(e, e, loss);
    Err[r * ${BS}u + j] = e;
    blk[j * ${R}u + t] = q;
    let urow = pos * n + i1;
    for (var k = j + 1u; k < width; k++) {
      blk[k * ${R}u + t] = fma(-e, U[urow + k], blk[k * ${R}u + t]);
    }
  }
  for (var k = j0; k < width; k++) { W[wrow + i1 + k] = blk[k * ${R}u + t]; }
  lossBuf[r] = lossBuf[r] + loss;
}
`;
}

/**
 * WGSL of the unstructured-mask selection kernels, by entry: `scores`
 * (w²/U_jj² bits of the block), `init`, `hist` (one radix digit), `scan`
 * (pick the digit of the k-th smallest), `ties` (per-row count of scores
 * equal to the threshold) and `allow` (row-major allowance of ties).
 * Bindings: 0 = W, 1 = U, 2 = scores, 3 = hist/state (u32: 256 bins, then
 * prefix, remaining rank, count below), 4 = allow [rows], 5 = parameters.
 *
 * @param entry Which kernel.
 * @param blockSize Row stride of the score buffer.
 * @returns WGSL source.
 */
export function obsSelectWgsl(
  entry: "scores" | "init" | "hist" | "scan" | "ties" | "allow",
  blockSize: number,
): string {
  const BS = blockSize;
  const head = `
struct Params { rows: u32, n: u32, i1: u32, width: u32, k: u32, shift: u32, highMask: u32, pad: u32 }
@group(0) @binding(0) var<uniform> prm: Params;
`;
  switch (entry) {
    case "scores":
      return `${head}
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read> U: array<f32>;
@group(0) @binding(3) var<storage, read_write> scoreBuf: array<u32>;
fn score(v: f32, d: f32) -> f32 { return (v * v) / (d * d); }
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * 256u;
  if (e >= prm.rows * prm.width) { return; }
  let r = e / prm.width; let j = e % prm.width;
  let pos = prm.i1 + j;
  scoreBuf[r * ${BS}u + j] = bitcast<u32>(score(W[r * prm.n + pos], U[pos * (prm.n + 1u)]));
}
`;
    case "init":
      return `${head}
@group(0) @binding(1) var<storage, read_write> sel: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  sel[t] = 0u;
  if (t == 0u) { sel[256] = 0u; sel[257] = prm.k - 1u; sel[258] = 0u; sel[259] = 0u; }
}
`;
    case "hist":
      return `${head}
@group(0) @binding(1) var<storage, read> scoreBuf: array<u32>;
@group(0) @binding(2) var<storage, read_write> sel: array<atomic<u32>>;
var<workgroup> local: array<atomic<u32>, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  atomicStore(&local[t], 0u);
  workgroupBarrier();
  let prefix = atomicLoad(&sel[256]);
  let total = prm.rows * prm.width;
  for (var e = wg.x * 256u + t; e < total; e += nwg.x * 256u) {
    let bits = scoreBuf[(e / prm.width) * ${BS}u + e % prm.width];
    if ((bits & prm.highMask) == (prefix & prm.highMask)) {
      atomicAdd(&local[(bits >> prm.shift) & 255u], 1u);
    }
  }
  workgroupBarrier();
  let c = atomicLoad(&local[t]);
  if (c != 0u) { atomicAdd(&sel[t], c); }
}
`;
    case "scan":
      return `${head}
@group(0) @binding(1) var<storage, read_write> sel: array<u32>;
@compute @workgroup_size(1)
fn main() {
  var cum = 0u;
  let krem = sel[257];
  for (var b = 0u; b < 256u; b++) {
    let h = sel[b];
    if (cum + h > krem) {
      sel[256] = sel[256] | (b << prm.shift);
      sel[257] = krem - cum;
      sel[258] = sel[258] + cum;
      break;
    }
    cum += h;
  }
  for (var b = 0u; b < 256u; b++) { sel[b] = 0u; }
}
`;
    case "ties":
      return `${head}
@group(0) @binding(1) var<storage, read> scoreBuf: array<u32>;
@group(0) @binding(2) var<storage, read> sel: array<u32>;
@group(0) @binding(3) var<storage, read_write> allowBuf: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = gid.x + gid.y * nwg.x * 64u;
  if (r >= prm.rows) { return; }
  let T = sel[256];
  var c = 0u;
  for (var j = 0u; j < prm.width; j++) { c += select(0u, 1u, scoreBuf[r * ${BS}u + j] == T); }
  allowBuf[r] = c;
}
`;
    case "allow":
      return `${head}
@group(0) @binding(1) var<storage, read_write> sel: array<u32>;
@group(0) @binding(2) var<storage, read_write> allowBuf: array<u32>;
var<workgroup> part: array<u32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  let chunk = (prm.rows + 255u) / 256u;
  let r0 = min(prm.rows, t * chunk); let r1 = min(prm.rows, r0 + chunk);
  var s = 0u;
  for (var r = r0; r < r1; r++) { s += allowBuf[r]; }
  part[t] = s;
  workgroupBarrier();
  if (t == 0u) {
    var acc = 0u;
    for (var i = 0u; i < 256u; i++) { let v = part[i]; part[i] = acc; acc += v; }
  }
  workgroupBarrier();
  // Ties to prune: the rank of the threshold among equal scores, plus one,
  // less the ties of the row tiles before this one (sel[259]).
  let before = sel[259];
  var left = i32(sel[257] + 1u) - i32(before) - i32(part[t]);
  for (var r = r0; r < r1; r++) {
    let c = i32(allowBuf[r]);
    allowBuf[r] = u32(clamp(left, 0, c));
    left -= c;
  }
  workgroupBarrier();
  if (t == 255u) { sel[259] = before + part[255] + s; }
}
`;
  }
}

/**
 * GPU buffers of one block-wise solve, or of one tile of rows of it (the
 * row-indexed buffers hold the tile's rows; U, gIdx, shrink and the
 * selection state are shared by all tiles).
 */
export interface ObsBuffers {
  /** W [rows, n] in processing order (updated in place to the decisions). */
  readonly W: GPUBuffer;
  /** U [n, n], upper Cholesky factor of H⁻¹. */
  readonly U: GPUBuffer;
  /** Err [rows, blockSize]. */
  readonly err: GPUBuffer;
  /** Per-row loss Σ e² [rows]. */
  readonly loss: GPUBuffer;
  /** Packed codes [rows, ⌈n / codesPerWord⌉] u32 (grid). */
  readonly codes?: GPUBuffer;
  /** [rows, groups] (grid). */
  readonly scales?: GPUBuffer;
  /** [rows, groups] (grid). */
  readonly zeros?: GPUBuffer;
  /** Group of each position [n] u32 (grid). */
  readonly gIdx?: GPUBuffer;
  /** Shrink factors of the MSE search [80] (grid; one unused value otherwise). */
  readonly shrink?: GPUBuffer;
  /** Packed prune bits [rows, ⌈n / 32⌉] u32 (prune). */
  readonly mask?: GPUBuffer;
  /** Score bits [rows, blockSize] u32 (unstructured). */
  readonly scores?: GPUBuffer;
  /** Tie allowance [rows] u32 (unstructured). */
  readonly allow?: GPUBuffer;
  /** Histogram and selection state [{@linkcode OBS_SELECT_STATE_WORDS}] u32 (unstructured). */
  readonly state?: GPUBuffer;
  /** Per-column variance [n] f32 (SpQR with outliers). */
  readonly spqrVar?: GPUBuffer;
  /** Threshold and overflow words [2] u32 (SpQR). */
  readonly spqrState?: GPUBuffer;
  /** Second-level ranges (SpQR). */
  readonly statRanges?: GPUBuffer;
  /** Second-level codes of the tile's rows (SpQR). */
  readonly statCodes?: GPUBuffer;
}

/**
 * Words of the selection state: 256 histogram bins, the threshold's bits,
 * its remaining rank, the count below it, and the ties allowed in earlier
 * row tiles.
 */
export const OBS_SELECT_STATE_WORDS = 260;

/** One tile of rows of W: its row count and buffers. */
export interface ObsTile {
  /** Rows in this tile. */
  readonly rows: number;
  /** Its buffers (row-indexed ones hold these rows only). */
  readonly bufs: ObsBuffers;
}

/** The sizes of one block-wise solve. */
export interface ObsShape {
  /** Rows of W (all tiles). */
  readonly rows: number;
  /** Columns of W (order of U). */
  readonly n: number;
  /** Groups per row of the grid (1 without a grid). */
  readonly groups: number;
  /** Unstructured sparsity (0 otherwise). */
  readonly sparsity: number;
  /** SpQR's sizes (with `spec.spqr`). */
  readonly spqr?: ObsSpqrShape;
}

/**
 * Records the whole column loop (every block, its decisions and lazy
 * updates) into a batch. W may come in tiles of rows (each within the
 * binding limit): rows are independent in the loop except for the
 * unstructured selection, whose histogram, threshold and tie allowance span
 * all tiles in order, and SpQR's second level, whose runs of rows must not
 * straddle two tiles. With SpQR, the outlier threshold is computed first,
 * and each block runs in segments split at the groups' first columns: before
 * a segment that starts a group, every tile fits the group's grids on W as
 * the loop left it and quantizes their statistics.
 *
 * @param batch The batch.
 * @param spec The in-block specialization.
 * @param tiles The tiles of rows, in row order (their rows sum to `shape.rows`).
 * @param shape Sizes.
 * @param lazyUpdate Records W[:, i2:] −= Err·U[i1:i2, i2:] (the gemm) for one tile.
 */
export function encodeObsLoop(
  batch: GpuBatch,
  spec: ObsBlockSpec,
  tiles: readonly ObsTile[],
  shape: ObsShape,
  lazyUpdate: (i1: number, i2: number, tile: ObsTile) => void,
): void {
  const { rows, n, groups, sparsity } = shape;
  if (tiles.reduce((s, t) => s + t.rows, 0) !== rows) {
    throw new RangeError(`Cannot encode the OBS loop: the tiles' rows do not sum to ${rows}`);
  }
  const bs = spec.blockSize;
  const gpu = batch.gpu;
  const key = `obs-block:${JSON.stringify(spec)}`;
  // Uniforms with dynamic offsets: each kernel's dispatches share one bind
  // group (the unstructured selection records 12 dispatches per block).
  const dynamicUniforms = { dynamicUniforms: true };
  const block = cachedPipeline(gpu, key, () => obsBlockWgsl(spec), dynamicUniforms);
  const sel = (e: Parameters<typeof obsSelectWgsl>[0]) =>
    cachedPipeline(gpu, `obs-select:${e}:${bs}`, () => obsSelectWgsl(e, bs), dynamicUniforms);
  const names = obsBlockBindings(spec);
  const sp = spec.spqr ?? null;
  if (sp !== null && !shape.spqr) {
    throw new TypeError(`Cannot encode the OBS loop: SpQR's sizes ('shape.spqr') are missing`);
  }
  const rowOffsets: number[] = [];
  tiles.reduce((r0, t) => (rowOffsets.push(r0), r0 + t.rows), 0);
  const spqrBufs = (
    t: ObsTile,
  ): { W: GPUBuffer; U: GPUBuffer; scales: GPUBuffer; zeros: GPUBuffer } & ObsSpqrBuffers => {
    const b = t.bufs;
    if (!b.scales || !b.zeros || !b.spqrVar || !b.spqrState || !b.statRanges || !b.statCodes) {
      throw new TypeError(`Cannot encode the OBS loop: a SpQR buffer is missing`);
    }
    const { W, U, scales, zeros, spqrVar, spqrState, statRanges, statCodes } = b;
    return { W, U, scales, zeros, spqrVar, spqrState, statRanges, statCodes };
  };
  if (sp?.outliers) encodeSpqrThreshold(batch, spqrBufs(tiles[0]!), n, shape.spqr!.tau);
  for (let i1 = 0; i1 < n; i1 += bs) {
    const i2 = Math.min(n, i1 + bs), width = i2 - i1;
    const kPrune = spec.prune?.kind === "unstructured" ? Math.floor(sparsity * rows * width) : 0;
    if (kPrune > 0) {
      const p = (tileRows: number, shift: number, highMask: number) =>
        batch.uniform([
          { u32: tileRows },
          { u32: n },
          { u32: i1 },
          { u32: width },
          { u32: kPrune },
          { u32: shift },
          { u32: highMask },
          { u32: 0 },
        ]);
      const base = tiles.map((t) => p(t.rows, 0, 0));
      const state = tiles[0]!.bufs.state!;
      tiles.forEach((t, k) =>
        batch.dispatch(
          sel("scores"),
          [base[k]!, t.bufs.W, t.bufs.U, t.bufs.scores!],
          foldGroups(gpu, Math.ceil(t.rows * width / 256)),
        )
      );
      batch.dispatch(sel("init"), [base[0]!, state], [1]);
      for (let pass = 0; pass < 4; pass++) {
        const shift = 24 - 8 * pass;
        const highMask = pass === 0 ? 0 : (0xffffffff << (shift + 8)) >>> 0;
        for (const t of tiles) {
          const histGroups = Math.min(1024, Math.ceil(t.rows * width / 4096));
          batch.dispatch(
            sel("hist"),
            [p(t.rows, shift, highMask), t.bufs.scores!, state],
            [histGroups],
          );
        }
        batch.dispatch(sel("scan"), [p(rows, shift, highMask), state], [1]);
      }
      tiles.forEach((t, k) =>
        batch.dispatch(
          sel("ties"),
          [base[k]!, t.bufs.scores!, state, t.bufs.allow!],
          foldGroups(gpu, Math.ceil(t.rows / 64)),
        )
      );
      tiles.forEach((t, k) => batch.dispatch(sel("allow"), [base[k]!, state, t.bufs.allow!], [1]));
    }
    // Segments of the block: SpQR's start at its groups' first columns.
    const cuts = [0];
    if (sp !== null) {
      const gs = sp.groupSize;
      for (let pos = Math.ceil((i1 + 1) / gs) * gs; pos < i2; pos += gs) cuts.push(pos - i1);
    }
    cuts.push(width);
    for (let c = 0; c + 1 < cuts.length; c++) {
      const j0 = cuts[c]!, j1 = cuts[c + 1]!, pos = i1 + j0;
      if (sp !== null && pos % sp.groupSize === 0) {
        const sgs = shape.spqr!.statisticGroupSize;
        tiles.forEach((t, k) =>
          encodeSpqrGroup(batch, sp, shape.spqr!, spqrBufs(t), {
            rows: t.rows,
            run0: rowOffsets[k]! / sgs,
            n,
            pos,
            len: Math.min(sp.groupSize, n - pos),
            k: pos / sp.groupSize,
            groups,
            rowGroups: Math.ceil(rows / sgs),
          })
        );
      }
      tiles.forEach((t, k) => {
        const params = batch.uniform([
          { u32: t.rows },
          { u32: n },
          { u32: i1 },
          { u32: width },
          { u32: groups },
          { u32: kPrune },
          { u32: j0 },
          { u32: j1 },
          { u32: rowOffsets[k]! },
          { u32: rows },
          { u32: 0 },
          { u32: 0 },
        ]);
        const resources = names.map((name) => {
          if (name === "params") return params;
          const b = (t.bufs as unknown as Record<string, GPUBuffer | undefined>)[name];
          if (!b) throw new TypeError(`Cannot encode the OBS loop: buffer '${name}' is missing`);
          return b;
        });
        batch.dispatch(block, resources, foldGroups(gpu, Math.ceil(t.rows / spec.rowsPerGroup)));
      });
    }
    if (i2 < n) { for (const t of tiles) lazyUpdate(i1, i2, t); }
  }
}
