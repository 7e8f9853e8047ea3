/**
 * Library-internal: the matrix-vector product of token generation on
 * WebGPU, y (+)= x·Wᵀ for a few rows of x and a dense weight W [n, k] in f32
 * or f16. At one row the GEMM of `kernels/gemm_kernel.ts` is the wrong
 * shape: its 64×64 or 128×128 output tiles leave 63 of 64 rows of every tile
 * idle and launch only n/64 workgroups (32 for n = 2048), so its weight reads
 * cannot keep a GPU's memory busy. Here a workgroup of 256 threads owns 8
 * weight rows, 32 threads per row stride along k with 16-byte loads (4 f32
 * or 8 f16 weights), four steps' loads issued before their products so that
 * more bytes are in flight, and the 32 partial sums of a row are added in
 * workgroup memory; every row of x is its own slice of workgroups (prefill
 * with f16 weights re-reads W per row: fine for prompts, not for batches).
 *
 * Weights are stored with rows padded to kp = ⌈k/8⌉·8 values (zeros), so
 * every row starts on a 16-byte boundary: f32 as 2 vec4 per step, f16 as the
 * 8 halves of one vec4<u32> (`unpack2x16float`, exact where the device keeps
 * f16 subnormals: `Gpu.f16Subnormals`). Web-standard only.
 *
 * @module
 */

import { cachedPipeline, type Gpu, type GpuBatch, uploadBuffer } from "../kernels/backend.ts";
import type { QmatmulNorm } from "../kernels/qmatmul_kernel.ts";
import { reduce } from "./_gpu_kernels.ts";

/** Weight rows per workgroup. */
const ROWS = 8;
/** Threads per weight row (a power of two). */
const LANES = 32;
/** Steps of 8 weights each thread loads before it uses them. */
const UNROLL = 4;

/** Specialization of {@linkcode gemvWgsl}. */
export interface GemvSpec {
  /** Storage of W. */
  readonly weights: "f32" | "f16";
  /** y += x·Wᵀ instead of y = x·Wᵀ. */
  readonly accumulate: boolean;
  /** k is a multiple of 8 (x read as vec4s; else one guarded load per value). */
  readonly aligned: boolean;
  /**
   * SwiGLU epilogue: W holds gate and up rows interleaved in blocks of
   * {@linkcode GEMV_GATE_BLOCK} ({@linkcode interleaveGateUp}), and output i
   * is silu(gate_i)·up_i (n/2 outputs). Not with `accumulate`. @default false
   */
  readonly swiglu?: boolean;
  /**
   * RMSNorm prologue: each row of x is used as x/sqrt(mean(x²) + eps)·w
   * (w f32 [k] at binding 4, eps in the uniform): the workgroup sums the
   * row's squares first, reads x·w, and scales its sums by the row's
   * 1/sqrt(mean(x²) + eps) (the product is linear in x). @default false
   */
  readonly norm?: boolean;
}

/** Gate (then up) rows per block of a SwiGLU GEMV's weight: half a workgroup's rows. */
export const GEMV_GATE_BLOCK = 4;

/**
 * The row order of a gate-and-up weight [2H, k] (gate rows, then up rows)
 * for a SwiGLU product: blocks of `block` gate rows, each followed by the
 * same up rows, so one workgroup owns both halves of its outputs.
 *
 * @param H Rows of each half (a multiple of `block`).
 * @param block Rows per block.
 * @returns order[r] = the source row of row r.
 */
export function interleaveGateUp(H: number, block: number): Int32Array {
  if (H % block !== 0) {
    throw new RangeError(`Cannot interleave ${H} gate rows in blocks of ${block}`);
  }
  const order = new Int32Array(2 * H);
  for (let r = 0; r < 2 * H; r++) {
    const b = Math.floor(r / (2 * block)), o = r % (2 * block);
    order[r] = o < block ? b * block + o : H + b * block + o - block;
  }
  return order;
}

/** The padded row length of a weight of k columns. */
export function gemvRowLength(k: number): number {
  return Math.ceil(k / 8) * 8;
}

/**
 * WGSL of y[r, yOff + i] (+)= Σ_j x[r, j]·W[i, j] for i < n, one row r of x
 * per workgroup slice z (see the module docs).
 *
 * @param spec Weight storage, accumulation, alignment.
 * @returns WGSL source.
 */
export function gemvWgsl(spec: GemvSpec): string {
  const { weights, accumulate, aligned, swiglu = false, norm = false } = spec;
  if (swiglu && accumulate) throw new RangeError("Cannot accumulate a SwiGLU GEMV");
  const wType = weights === "f16" ? "vec4<u32>" : "vec4<f32>";
  const xDecl = aligned
    ? "@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;"
    : "@group(0) @binding(1) var<storage, read> X: array<f32>;";
  // The 8 weights and x values of step j + u·LANES as two vec4s each, named by u.
  const load = (u: number) => {
    const j = u === 0 ? "j" : `(j + ${u * LANES}u)`;
    const w = weights === "f16"
      ? `let w${u} = W[wrow + ${j}];
      let wa${u} = vec4f(unpack2x16float(w${u}.x), unpack2x16float(w${u}.y));
      let wb${u} = vec4f(unpack2x16float(w${u}.z), unpack2x16float(w${u}.w));`
      : `let wa${u} = W[wrow + 2u * ${j}];
      let wb${u} = W[wrow + 2u * ${j} + 1u];`;
    const nw = (v: string) => norm ? ` * NW[${v}]` : "";
    const x = aligned
      ? `let xa${u} = X[xrow / 4u + 2u * ${j}]${nw(`2u * ${j}`)};
      let xb${u} = X[xrow / 4u + 2u * ${j} + 1u]${nw(`2u * ${j} + 1u`)};`
      : `let c${u} = 8u * ${j};
      let xa${u} = vec4f(xv(xrow, c${u}), xv(xrow, c${u} + 1u), xv(xrow, c${u} + 2u), xv(xrow, c${u} + 3u));
      let xb${u} = vec4f(xv(xrow, c${u} + 4u), xv(xrow, c${u} + 5u), xv(xrow, c${u} + 6u), xv(xrow, c${u} + 7u));`;
    return `${w}
      ${x}`;
  };
  const add = (u: number) => `s = s + dot(wa${u}, xa${u}) + dot(wb${u}, xb${u});`;
  const units = Array.from({ length: UNROLL }, (_, u) => u);
  const xv = aligned ? "" : `
fn xv(row: u32, c: u32) -> f32 {
  if (c < p.k) { return X[row + c]${norm ? " * NW[c]" : ""}; }
  return 0.0;
}`;
  const nwDecl = !norm
    ? ""
    : aligned
    ? "@group(0) @binding(4) var<storage, read> NW: array<vec4<f32>>;"
    : "@group(0) @binding(4) var<storage, read> NW: array<f32>;";
  // The row's 1/sqrt(mean(x²) + eps), in uniform control flow (before the row guard).
  const prologue = !norm ? "" : `  var ns = 0.0;
  for (var c = lid; c < ${aligned ? "p.k / 4u" : "p.k"}; c += ${ROWS * LANES}u) {
    ${aligned ? "let v = X[xrow / 4u + c];" : "let v = X[xrow + c];"}
    ${aligned ? "ns += dot(v, v);" : "ns = fma(v, v, ns);"}
  }
  red[lid] = ns;
${reduce("sum", ROWS * LANES)}
  let inv = 1.0 / sqrt(red[0] / f32(p.k) + p.eps);
  workgroupBarrier();
`;
  const store = accumulate ? "Y[o] = Y[o] + red[lid];" : "Y[o] = red[lid];";
  return `struct P { n: u32, k: u32, steps: u32, ldx: u32, ldy: u32, yOff: u32, eps: f32 }
@group(0) @binding(0) var<storage, read_write> Y: array<f32>;
${xDecl}
@group(0) @binding(2) var<storage, read> W: array<${wType}>;
@group(0) @binding(3) var<uniform> p: P;
${nwDecl}
var<workgroup> red: array<f32, ${ROWS * LANES}>;
${xv}
@compute @workgroup_size(${ROWS * LANES})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  let i = (wg.x + wg.y * nw.x) * ${ROWS}u + lid / ${LANES}u;
  let lane = lid % ${LANES}u;
  let xrow = wg.z * p.ldx;
${prologue}  var s = 0.0;
  if (i < p.n) {
    let wrow = i * p.steps${weights === "f16" ? "" : " * 2u"};
    var j = lane;
    // ${UNROLL} steps per iteration, all loads issued before the first product.
    for (; j + ${(UNROLL - 1) * LANES}u < p.steps; j += ${UNROLL * LANES}u) {
      ${units.map(load).join("\n      ")}
      ${units.map(add).join("\n      ")}
    }
    for (; j < p.steps; j += ${LANES}u) {
      ${load(0)}
      ${add(0)}
    }
  }
  red[lid] = s${norm ? " * inv" : ""};
  workgroupBarrier();
  for (var st = ${LANES / 2}u; st > 0u; st = st >> 1u) {
    if (lane < st) { red[lid] = red[lid] + red[lid + st]; }
    workgroupBarrier();
  }
${
    swiglu
      ? `  // Rows [0, ${GEMV_GATE_BLOCK}) of the workgroup are gates, the next ${GEMV_GATE_BLOCK} their ups.
  let slot = lid / ${LANES}u;
  if (lane == 0u && slot < ${GEMV_GATE_BLOCK}u && i < p.n) {
    let o = wg.z * p.ldy + p.yOff + (wg.x + wg.y * nw.x) * ${GEMV_GATE_BLOCK}u + slot;
    let z = red[lid];
    Y[o] = z / (1.0 + exp(-z)) * red[lid + ${GEMV_GATE_BLOCK * LANES}u];
  }`
      : `  if (lane == 0u && i < p.n) {
    let o = wg.z * p.ldy + p.yOff + i;
    ${store}
  }`
  }
}
`;
}

/**
 * Uploads a weight [n, k] for {@linkcode encodeGemv}: rows padded to
 * {@linkcode gemvRowLength} values, in f32 or f16 (rounded to nearest).
 *
 * @param gpu The GPU.
 * @param w Weight values, row-major [n, k].
 * @param n Rows.
 * @param k Columns.
 * @param type Storage.
 * @param label Buffer label.
 * @returns The buffer.
 */
export function uploadGemvWeight(
  gpu: Gpu,
  w: Float32Array,
  n: number,
  k: number,
  type: "f32" | "f16",
  label: string,
): GPUBuffer {
  const kp = gemvRowLength(k);
  if (kp === k) return uploadBuffer(gpu, type === "f16" ? toF16(w, label) : w, label);
  const out = new (type === "f16" ? Float16Array : Float32Array)(n * kp);
  for (let i = 0; i < n; i++) out.set(w.subarray(i * k, (i + 1) * k), i * kp);
  if (type === "f16") checkF16(w, label);
  return uploadBuffer(gpu, out, label);
}

/**
 * Values rounded to f16, refusing any that f16 cannot hold (|v| > 65504).
 *
 * @param w Values.
 * @param label What they are, for the error message.
 * @returns The f16 values.
 * @throws {RangeError} naming the value and suggesting f32 weights.
 */
export function toF16(w: Float32Array, label: string): Float16Array {
  checkF16(w, label);
  return Float16Array.from(w);
}

function checkF16(w: Float32Array, label: string): void {
  let max = 0;
  for (let i = 0; i < w.length; i++) {
    const a = Math.abs(w[i]!);
    if (a > max) max = a;
  }
  if (max > 65504) {
    throw new RangeError(
      `Cannot store ${label} in f16: it holds a value of magnitude ${max} (f16 holds up to ` +
        `65504); use f32 weights`,
    );
  }
}

/** Shape and placement of one {@linkcode encodeGemv}. */
export interface GemvShape {
  /** Rows of x. */
  readonly rows: number;
  /** Output width (rows of W). */
  readonly n: number;
  /** Input width (columns of W). */
  readonly k: number;
  /** Leading dimension of x. @default k */
  readonly ldx?: number;
  /** Leading dimension of y. @default n */
  readonly ldy?: number;
  /** Column of y where the output starts. @default 0 */
  readonly yOff?: number;
}

/**
 * Records y[r, yOff + i] (+)= x[r, :]·W[i, :] for r < rows, i < n (with
 * `swiglu`, y[r, yOff + i] = silu(gate_i)·up_i for i < n/2, W's n rows
 * interleaved by {@linkcode interleaveGateUp}; `ldy` then defaults to n/2).
 *
 * @param batch The batch.
 * @param ops y (f32), x (f32) and W ({@linkcode uploadGemvWeight}).
 * @param shape Sizes and placement.
 * @param spec Weight storage, accumulation, SwiGLU (alignment follows from k and ldx).
 */
export function encodeGemv(
  batch: GpuBatch,
  ops: {
    readonly y: GPUBuffer;
    readonly x: GPUBuffer;
    readonly w: GPUBuffer;
    /** RMSNorm prologue: the norm weight (f32 [k]) and epsilon. */
    readonly norm?: QmatmulNorm;
  },
  shape: GemvShape,
  spec: Omit<GemvSpec, "aligned" | "norm">,
): void {
  const swiglu = spec.swiglu === true;
  const { rows, n, k, ldx = k, ldy = swiglu ? n / 2 : n, yOff = 0 } = shape;
  if (swiglu && n % (2 * GEMV_GATE_BLOCK) !== 0) {
    throw new RangeError(
      `Cannot run a SwiGLU GEMV over ${n} rows: gate and up blocks of ${GEMV_GATE_BLOCK} need a multiple of ${
        2 * GEMV_GATE_BLOCK
      }`,
    );
  }
  const norm = ops.norm !== undefined;
  const full: GemvSpec = { ...spec, aligned: k % 8 === 0 && ldx % 4 === 0, swiglu, norm };
  const pipeline = cachedPipeline(
    batch.gpu,
    `decode:gemv:${full.weights}:${full.accumulate}:${full.aligned}${swiglu ? ":swiglu" : ""}${
      norm ? ":norm" : ""
    }`,
    () => gemvWgsl(full),
  );
  const u = batch.uniform([
    { u32: n },
    { u32: k },
    { u32: gemvRowLength(k) / 8 },
    { u32: ldx },
    { u32: ldy },
    { u32: yOff },
    { f32: ops.norm?.eps ?? 0 },
  ]);
  const blocks = Math.ceil(n / ROWS);
  const max = batch.gpu.limits.maxComputeWorkgroupsPerDimension;
  const gy = Math.ceil(blocks / max);
  const resources = [ops.y, ops.x, ops.w, u, ...(ops.norm ? [ops.norm.weight] : [])];
  batch.dispatch(pipeline, resources, [Math.ceil(blocks / gy), gy, rows]);
}

/**
 * CPU reference of {@linkcode encodeGemv} (float64 sums of the stored
 * weights): the executable specification.
 *
 * @param y Output [rows, ldy], updated in place.
 * @param x Input [rows, ldx].
 * @param w Weight [n, k] as the kernel reads it (f16 storage: the rounded values).
 * @param shape Sizes and placement.
 * @param accumulate Add to y.
 */
export function gemvReference(
  y: Float32Array,
  x: Float32Array,
  w: ArrayLike<number>,
  shape: GemvShape,
  accumulate: boolean,
): void {
  const { rows, n, k, ldx = k, ldy = n, yOff = 0 } = shape;
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < k; j++) s += x[r * ldx + j]! * w[i * k + j]!;
      const o = r * ldy + yOff + i;
      y[o] = accumulate ? y[o]! + s : s;
    }
  }
}
