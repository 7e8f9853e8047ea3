/**
 * y = x·Ŵᵀ for additive-codebook (AQLM) weights on WebGPU by lookup
 * tables, for small batches (the decoding case, batch 1).
 *
 * Ŵ[n, g·G + i] = scale[n]·Σ_c C_c[code(n, g, c)][i], so
 * y[b, n] = scale[n]·Σ_g Σ_c LUT[b, c, g, code(n, g, c)] with
 * LUT[b, c, g, v] = Σ_i C_c[v][i]·x[b, g·G + i]. Two passes: the tables
 * (M·groups·2^B dot products of length G per x row), then one 32-thread team
 * per output row that walks its codes (a B-bit stream, see `core/bitpack.ts`,
 * in [rows, groups, M] order) and adds table entries, f32 throughout.
 *
 * Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { unpackBits } from "../core/bitpack.ts";
import {
  type Backend,
  cachedPipeline,
  foldGroups,
  GpuBatch,
  resolveBackend,
  storageBuffer,
  uploadBuffer,
} from "./backend.ts";

/** Specialization of {@linkcode aqlmLutWgsl} and {@linkcode aqlmLookupWgsl}. */
export interface AqlmMatmulSpec {
  /** Input columns per group (G). */
  readonly groupSize: number;
  /** Bits per code (B), 1–16. */
  readonly codebookBits: number;
  /** Number of codebooks (M). */
  readonly numCodebooks: number;
}

/**
 * The AQLM weight the kernel reads: the quantizers' `AqlmWeight` fits it, or
 * its fields as plain arrays.
 */
export interface AqlmMatmulWeight extends AqlmMatmulSpec {
  /** "aqlm" where the weight carries a discriminant (the quantizers' `AqlmWeight`). */
  readonly kind?: "aqlm";
  /** [N, K] = [rows, cols]. */
  readonly shape: readonly [number, number];
  /** Codes packed at `codebookBits` bits each, [N, K/groupSize, numCodebooks] order. */
  readonly codes: Uint32Array;
  /** Code vectors, [numCodebooks, 2^codebookBits, groupSize]. */
  readonly codebooks: Float32Array;
  /** Scale per output row, [N]. */
  readonly scales: Float32Array;
}

/**
 * WGSL of the table pass: LUT[b, c, g, v] = Σ_i C_c[v][i]·x[b, g·G + i].
 * Bindings: 0 = LUT (f32 [batch, M, groups, 2^B]), 1 = codebooks (f32
 * [M, 2^B, G]), 2 = x (f32 [batch, K]), 3 = {batch, groups, groupsX}.
 *
 * @param spec The specialization.
 * @returns WGSL source with entry point `main`.
 */
export function aqlmLutWgsl(spec: AqlmMatmulSpec): string {
  const { groupSize: G, codebookBits: B, numCodebooks: M } = spec;
  const V = 2 ** B;
  return `struct Params { batch: u32, groups: u32, groupsX: u32, pad: u32 }
@group(0) @binding(0) var<storage, read_write> LUT: array<f32>;
@group(0) @binding(1) var<storage, read> CB: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) t: u32) {
  let e = (wg.x + wg.y * p.groupsX) * 256u + t;
  if (e >= p.batch * ${M}u * p.groups * ${V}u) { return; }
  let v = e % ${V}u;
  let g = (e / ${V}u) % p.groups;
  let c = (e / ${V}u / p.groups) % ${M}u;
  let b = e / ${V}u / p.groups / ${M}u;
  let cb = (c * ${V}u + v) * ${G}u;
  let xo = (b * p.groups + g) * ${G}u;
  var acc = 0.0;
  for (var i = 0u; i < ${G}u; i++) { acc = fma(CB[cb + i], X[xo + i], acc); }
  LUT[e] = acc;
}
`;
}

/**
 * WGSL of the lookup pass: one 32-thread team per output row and x row, lanes
 * taking groups in turn, then a sum over the team in workgroup memory.
 * Bindings: 0 = y (f32 [batch, N]), 1 = LUT, 2 = code words (with one spare
 * word at the end), 3 = scales (f32 [N]), 4 = {N, groups}.
 *
 * @param spec The specialization.
 * @returns WGSL source with entry point `main`.
 */
export function aqlmLookupWgsl(spec: AqlmMatmulSpec): string {
  const { codebookBits: B, numCodebooks: M } = spec;
  const V = 2 ** B, mask = (2 ** B - 1) >>> 0;
  const lookups: string[] = [];
  for (let c = 0; c < M; c++) {
    lookups.push(`    { let s = (base + ${c}u) * ${B}u; let w = s >> 5u; let o = s & 31u;
      var v = CODES[w] >> o;
      if (o + ${B}u > 32u) { v = v | (CODES[w + 1u] << (32u - o)); }
      acc += LUT[((b * ${M}u + ${c}u) * p.groups + g) * ${V}u + (v & ${mask}u)]; }`);
  }
  return `struct Params { N: u32, groups: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read_write> Y: array<f32>;
@group(0) @binding(1) var<storage, read> LUT: array<f32>;
@group(0) @binding(2) var<storage, read> CODES: array<u32>;
@group(0) @binding(3) var<storage, read> S: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
var<workgroup> red: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) t: u32) {
  let lane = t % 32u;
  let n = wg.x * 8u + t / 32u;
  let b = wg.y;
  var acc = 0.0;
  if (n < p.N) {
    for (var g = lane; g < p.groups; g += 32u) {
      let base = (n * p.groups + g) * ${M}u;
${lookups.join("\n")}
    }
  }
  red[t] = acc;
  workgroupBarrier();
  for (var h = 16u; h >= 1u; h = h / 2u) {
    if (lane < h) { red[t] += red[t + h]; }
    workgroupBarrier();
  }
  if (lane == 0u && n < p.N) { Y[b * p.N + n] = S[n] * red[t]; }
}
`;
}

function checkAqlm(w: AqlmMatmulWeight): AqlmMatmulSpec {
  if (w === null || typeof w !== "object") {
    throw new TypeError(`Cannot multiply as the AQLM weight must be an object: it is ${w}`);
  }
  if (w.kind !== undefined && w.kind !== "aqlm") {
    throw new TypeError(
      `Cannot multiply as the weight's 'kind' must be "aqlm": current value is ${String(w.kind)}`,
    );
  }
  const [rows, cols] = w.shape;
  const { groupSize: G, codebookBits: B, numCodebooks: M } = w;
  if (!Number.isInteger(B) || B < 1 || B > 16) {
    throw new RangeError(
      `Cannot multiply as 'codebookBits' must be an integer in [1, 16]: current value is ${B}`,
    );
  }
  const groups = cols / G;
  if (
    !Number.isInteger(groups) || w.codebooks.length !== M * 2 ** B * G ||
    w.scales.length !== rows || w.codes.length < Math.ceil((rows * groups * M * B) / 32)
  ) {
    throw new RangeError(
      `Cannot multiply: the AQLM weight's codebooks, scales or codes do not match [${w.shape}]`,
    );
  }
  return { groupSize: G, codebookBits: B, numCodebooks: M };
}

function batchOf(x: Tensor, k: number): number {
  if (x?.dtype !== "f32") {
    throw new TypeError(
      `Cannot multiply as 'x' must be an f32 tensor: its dtype is ${String(x?.dtype)}`,
    );
  }
  const [m, kk] = x.shape.length === 1 ? [1, x.shape[0]] : x.shape;
  if (x.shape.length > 2 || kk !== k) {
    throw new RangeError(`Cannot multiply as 'x' must be [M, ${k}] or [${k}]: it is [${x.shape}]`);
  }
  return m!;
}

/** Options of {@linkcode aqlmMatmul}. */
export interface AqlmMatmulOptions {
  /** Where to run ("auto": WebGPU on a hardware adapter, else the CPU reference). @default "auto" */
  backend?: Backend;
}

/**
 * y = x·Ŵᵀ for an AQLM weight, by lookup tables (meant for batch 1; larger
 * batches build one set of tables per x row).
 *
 * @param x Activations, f32 [M, K] (or [K]).
 * @param w The AQLM weight: the quantizers' `AqlmWeight`, or its fields as plain arrays.
 * @param options Backend.
 * @returns y, f32 [M, N].
 */
export async function aqlmMatmul(
  x: Tensor<"f32">,
  w: AqlmMatmulWeight,
  options: AqlmMatmulOptions = {},
): Promise<Tensor<"f32">> {
  const { backend = "auto" } = options;
  const spec = checkAqlm(w);
  const [N, K] = w.shape;
  const batch = batchOf(x, K);
  const gpu = await resolveBackend(backend, "aqlmMatmul");
  if (gpu === null) return aqlmMatmulReference(x, w);
  const groups = K / spec.groupSize, V = 2 ** spec.codebookBits;
  const lutSize = batch * spec.numCodebooks * groups * V;
  const codes = new Uint32Array(w.codes.length + 1);
  codes.set(w.codes);
  const buffers = {
    x: uploadBuffer(gpu, x.data, "aqlm-x"),
    codebooks: uploadBuffer(gpu, w.codebooks, "aqlm-codebooks"),
    codes: uploadBuffer(gpu, codes, "aqlm-codes"),
    scales: uploadBuffer(gpu, w.scales, "aqlm-scales"),
    lut: storageBuffer(gpu, lutSize * 4, "aqlm-lut"),
    y: storageBuffer(gpu, batch * N * 4, "aqlm-y"),
  };
  try {
    const key = JSON.stringify(spec);
    const lutPipe = cachedPipeline(gpu, `aqlm-lut:${key}`, () => aqlmLutWgsl(spec));
    const lookPipe = cachedPipeline(gpu, `aqlm-lookup:${key}`, () => aqlmLookupWgsl(spec));
    const b = new GpuBatch(gpu);
    const [gx, gy] = foldGroups(gpu, Math.ceil(lutSize / 256));
    b.dispatch(lutPipe, [
      buffers.lut,
      buffers.codebooks,
      buffers.x,
      b.uniform([{ u32: batch }, { u32: groups }, { u32: gx }, { u32: 0 }]),
    ], [gx, gy]);
    b.dispatch(lookPipe, [
      buffers.y,
      buffers.lut,
      buffers.codes,
      buffers.scales,
      b.uniform([{ u32: N }, { u32: groups }, { u32: 0 }, { u32: 0 }]),
    ], [Math.ceil(N / 8), batch]);
    const { data } = await b.submit([buffers.y]);
    return { dtype: "f32", shape: [batch, N], data: new Float32Array(data[0]!) };
  } finally {
    for (const buf of Object.values(buffers)) buf.destroy();
  }
}

/**
 * CPU reference of the lookup-table product in float64: the tables, then the
 * sums of table entries the codes select, times the row scales.
 *
 * @param x Activations, f32 [M, K] (or [K]).
 * @param w The AQLM weight: the quantizers' `AqlmWeight`, or its fields as plain arrays.
 * @returns y, f32 [M, N].
 */
export function aqlmMatmulReference(
  x: Tensor<"f32">,
  w: AqlmMatmulWeight,
): Tensor<"f32"> {
  const { groupSize: G, codebookBits: B, numCodebooks: M } = checkAqlm(w);
  const [N, K] = w.shape;
  const batch = batchOf(x, K);
  const groups = K / G, V = 2 ** B;
  const codes = unpackBits(w.codes, B, N * groups * M);
  const y = new Float32Array(batch * N);
  const lut = new Float64Array(M * groups * V);
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < M; c++) {
      for (let g = 0; g < groups; g++) {
        for (let v = 0; v < V; v++) {
          let acc = 0;
          for (let i = 0; i < G; i++) {
            acc += w.codebooks[(c * V + v) * G + i]! * x.data[b * K + g * G + i]!;
          }
          lut[(c * groups + g) * V + v] = acc;
        }
      }
    }
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let g = 0; g < groups; g++) {
        for (let c = 0; c < M; c++) {
          acc += lut[(c * groups + g) * V + codes[(n * groups + g) * M + c]!]!;
        }
      }
      y[b * N + n] = w.scales[n]! * acc;
    }
  }
  return { dtype: "f32", shape: [batch, N], data: y };
}
