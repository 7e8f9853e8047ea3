/**
 * The upper Cholesky factor U of H⁻¹ on the GPU, in float32, as the OBS
 * solver needs it: with J the reversal, J·H·J = L·Lᵀ and U = J·L⁻¹·J (one
 * Cholesky and one triangular inverse, the same route as the CPU path).
 *
 * Blocked right-looking Cholesky with panels of 64: one workgroup factors
 * the diagonal block and inverts it; the panel below is a product with that
 * inverse and the trailing update a lower-triangle product (both through the
 * gemm kernel). The inverse is then built by recursive halving, two large
 * triangular products per level.
 * A non-positive pivot is reported through a status word (pivot + 1), read
 * with the solve's results, so the caller can retry with more damping.
 *
 * Web-standard only.
 *
 * @module
 */

import { CholeskyError, choleskyLowerInPlace, invertLower } from "../core/_dense.ts";
import { cachedPipeline, type Gpu, GpuBatch, storageBuffer, uploadBuffer } from "./backend.ts";
import { encodeGemm, type GemmSpec, gemmSpec } from "./gemm_kernel.ts";

/** Panel width of the blocked factorization. */
export const CHOLESKY_PANEL = 64;

/**
 * WGSL of the diagonal-block step: factors A[p:p+b, p:p+b] (lower, in place)
 * and writes its inverse into X[p:p+b, p:p+b]. Bindings: 0 = A, 1 = X,
 * 2 = status (u32), 3 = parameters {n, p, b}.
 *
 * @returns WGSL source.
 */
export function choleskyBlockWgsl(): string {
  const nb = CHOLESKY_PANEL, s = nb + 1;
  return `
struct Params { n: u32, p: u32, b: u32, pad: u32 }
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> status: array<u32>;
@group(0) @binding(3) var<uniform> prm: Params;
var<workgroup> S: array<f32, ${nb * s}>;
var<workgroup> dinv: array<f32, ${nb}>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  let n = prm.n; let p = prm.p; let b = prm.b;
  for (var e = t; e < b * b; e += 256u) {
    let i = e / b; let j = e % b;
    S[i * ${s}u + j] = A[(p + i) * n + p + j];
  }
  workgroupBarrier();
  for (var j = 0u; j < b; j++) {
    if (t == 0u) {
      let d = S[j * ${s}u + j];
      if (!(d > 0.0) && status[0] == 0u) { status[0] = p + j + 1u; }
      S[j * ${s}u + j] = sqrt(d);
    }
    workgroupBarrier();
    let ljj = S[j * ${s}u + j];
    for (var i = j + 1u + t; i < b; i += 256u) { S[i * ${s}u + j] = S[i * ${s}u + j] / ljj; }
    workgroupBarrier();
    let w = b - j - 1u;
    for (var e = t; e < w * w; e += 256u) {
      let i = j + 1u + e / w; let k = j + 1u + e % w;
      if (k <= i) { S[i * ${s}u + k] = S[i * ${s}u + k] - S[i * ${s}u + j] * S[k * ${s}u + j]; }
    }
    workgroupBarrier();
  }
  for (var e = t; e < b * b; e += 256u) {
    let i = e / b; let j = e % b;
    A[(p + i) * n + p + j] = select(0.0, S[i * ${s}u + j], j <= i);
  }
  // The block's inverse Y by forward substitution, column c by thread c, kept
  // in workgroup memory: Y[i][c] (i > c) in the strict upper triangle S[c][i].
  if (t < b) { dinv[t] = 1.0 / S[t * ${s}u + t]; }
  workgroupBarrier();
  if (t < b) {
    let c = t;
    for (var i = c + 1u; i < b; i++) {
      var acc = S[i * ${s}u + c] * dinv[c];
      for (var k = c + 1u; k < i; k++) { acc = fma(S[i * ${s}u + k], S[c * ${s}u + k], acc); }
      S[c * ${s}u + i] = -acc * dinv[i];
    }
  }
  workgroupBarrier();
  for (var e = t; e < b * b; e += 256u) {
    let i = e / b; let j = e % b;
    X[(p + i) * n + p + j] = select(select(0.0, dinv[i], i == j), S[j * ${s}u + i], i > j);
  }
}
`;
}

/**
 * WGSL of U = J·X·J restricted to the upper triangle (zeros below), written
 * into `U`. Bindings: 0 = U, 1 = X, 2 = parameters {n}.
 *
 * @returns WGSL source.
 */
export function reverseUpperWgsl(): string {
  return `
struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<storage, read_write> U: array<f32>;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<uniform> prm: Params;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) g: vec3u) {
  let n = prm.n;
  let i = g.y; let j = g.x;
  if (i >= n || j >= n) { return; }
  U[i * n + j] = select(0.0, X[(n - 1u - i) * n + (n - 1u - j)], j >= i);
}
`;
}

/**
 * WGSL that lays out the matrix to factor from a Hessian in its original
 * column order: A[i, j] = H[π(n−1−i), π(n−1−j)] off the diagonal and
 * A[i, i] = d[i] (the damped diagonal, already reversed), i.e. J·P·H·Pᵀ·J,
 * lower triangle only (all the factorization reads). H is the packed lower
 * triangle of the symmetric Hessian (row a holds columns 0..a), or with
 * `layout` "full" the whole row-major [n, n] matrix (its lower triangle is read).
 * Bindings: 0 = A, 1 = H (f32), 2 = π (u32), 3 = d (f32), 4 = parameters {n}.
 *
 * @param layout How H is stored. @default "packed"
 * @returns WGSL source.
 */
export function permuteReverseWgsl(layout: "packed" | "full" = "packed"): string {
  const at = layout === "packed" ? "hi * (hi + 1u) / 2u + lo" : "hi * n + lo";
  return `
struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<storage, read> H: array<f32>;
@group(0) @binding(2) var<storage, read> perm: array<u32>;
@group(0) @binding(3) var<storage, read> d: array<f32>;
@group(0) @binding(4) var<uniform> prm: Params;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) g: vec3u) {
  let n = prm.n;
  let i = g.y; let j = g.x;
  if (i >= n || j > i) { return; }
  let a = perm[n - 1u - i]; let b = perm[n - 1u - j];
  let hi = max(a, b); let lo = min(a, b);
  A[i * n + j] = select(H[${at}], d[i], i == j);
}
`;
}

/**
 * Records A ← J·P·H·Pᵀ·J with a damped diagonal ({@linkcode permuteReverseWgsl}).
 *
 * @param batch The batch.
 * @param a Output [n, n].
 * @param h Hessian, packed lower triangle f32 (see {@linkcode packLower}) or
 *   the full matrix per `layout`, original order.
 * @param perm Processing order [n] u32.
 * @param d Damped diagonal in reversed processing order [n] f32.
 * @param n Order.
 * @param layout How H is stored. @default "packed"
 */
export function encodePermuteReverse(
  batch: GpuBatch,
  a: GPUBuffer,
  h: GPUBuffer,
  perm: GPUBuffer,
  d: GPUBuffer,
  n: number,
  layout: "packed" | "full" = "packed",
): void {
  const pipe = layout === "packed"
    ? cachedPipeline(batch.gpu, "permute-reverse", permuteReverseWgsl)
    : cachedPipeline(batch.gpu, "permute-reverse-full", () => permuteReverseWgsl("full"));
  batch.dispatch(pipe, [
    a,
    h,
    perm,
    d,
    batch.uniform([{ u32: n }, { u32: 0 }, { u32: 0 }, {
      u32: 0,
    }]),
  ], [Math.ceil(n / 16), Math.ceil(n / 16)]);
}

/**
 * The lower triangle of a symmetric [n, n] matrix, packed by rows (row a
 * holds columns 0..a), as float32.
 *
 * @param h Symmetric matrix, row-major.
 * @param n Order.
 * @returns n·(n+1)/2 values.
 */
export function packLower(h: Float64Array | Float32Array, n: number): Float32Array {
  const out = new Float32Array((n * (n + 1)) / 2);
  for (let a = 0; a < n; a++) out.set(h.subarray(a * n, a * n + a + 1), (a * (a + 1)) / 2);
  return out;
}

/**
 * {@linkcode packLower} in pieces: the packed values go to `emit` in
 * consecutive runs of whole rows through one reused buffer of `chunkValues`
 * values (or one row, if longer), so that a large Hessian is converted and
 * uploaded without a full-size float32 copy (whose fresh pages cost more
 * than the conversion itself).
 *
 * @param h Symmetric matrix, row-major [n, n].
 * @param n Order.
 * @param emit Receives each run's offset in the packed array (in values) and
 *   its values; the array is overwritten after `emit` returns.
 * @param chunkValues Values per run (at least one row). @default 4194304 (16 MiB)
 */
export function packLowerChunks(
  h: Float64Array | Float32Array,
  n: number,
  emit: (offset: number, values: Float32Array) => void,
  chunkValues = 1 << 22,
): void {
  const buf = new Float32Array(Math.min((n * (n + 1)) / 2, Math.max(chunkValues, n)));
  let start = 0, k = 0; // packed offset of buf[0]; values in buf
  for (let a = 0; a < n; a++) {
    if (k + a + 1 > buf.length) {
      emit(start, buf.subarray(0, k));
      start += k;
      k = 0;
    }
    buf.set(h.subarray(a * n, a * n + a + 1), k);
    k += a + 1;
  }
  if (k > 0) emit(start, buf.subarray(0, k));
}

const SPEC: GemmSpec = gemmSpec({ tile: "small" });

/** GPU buffers of {@linkcode encodeUpperCholeskyOfInverse}. */
export interface CholeskyBuffers {
  /** In: J·H·J (damped) [n, n]; out: U, upper [n, n]. */
  readonly a: GPUBuffer;
  /** Scratch [n, n] (L⁻¹). */
  readonly x: GPUBuffer;
  /** Scratch for the off-diagonal blocks of the inverse. */
  readonly t: GPUBuffer;
  /** Status word: 0, or the first failing pivot + 1. Must start at 0. */
  readonly status: GPUBuffer;
}

/**
 * Records the whole factorization: A (holding J·H·J) becomes U, the upper
 * Cholesky factor of H⁻¹.
 *
 * @param batch The batch.
 * @param bufs Buffers.
 * @param n Order.
 */
export function encodeUpperCholeskyOfInverse(
  batch: GpuBatch,
  bufs: CholeskyBuffers,
  n: number,
): void {
  const gpu = batch.gpu;
  const block = cachedPipeline(gpu, "cholesky-block", choleskyBlockWgsl, { dynamicUniforms: true });
  const nb = CHOLESKY_PANEL;
  for (let p = 0; p < n; p += nb) {
    const b = Math.min(nb, n - p);
    batch.dispatch(block, [
      bufs.a,
      bufs.x,
      bufs.status,
      batch.uniform([
        { u32: n },
        { u32: p },
        { u32: b },
        { u32: 0 },
      ]),
    ], [1]);
    const rest = n - p - b;
    if (rest === 0) break;
    // L21 = A21 · L11⁻ᵀ (in place: one column tile covers the panel).
    encodeGemm(batch, { ...SPEC, aInC: true, transB: true }, { c: bufs.a, b: bufs.x }, {
      m: rest,
      n: b,
      k: b,
      lda: n,
      ldb: n,
      ldc: n,
      offA: (p + b) * n + p,
      offB: p * n + p,
      offC: (p + b) * n + p,
    });
    // A22 −= L21 · L21ᵀ (lower triangle).
    encodeGemm(
      batch,
      {
        ...SPEC,
        aInC: true,
        bInC: true,
        transB: true,
        accumulate: true,
        lowerC: true,
        tile: "large",
      },
      { c: bufs.a },
      {
        m: rest,
        n: rest,
        k: b,
        lda: n,
        ldb: n,
        ldc: n,
        offA: (p + b) * n + p,
        offB: (p + b) * n + p,
        offC: (p + b) * n + p + b,
        alpha: -1,
        beta: 1,
      },
    );
  }
  // X = L⁻¹ by recursive halving (large products; the diagonal blocks are in X).
  encodeInvertLower(batch, bufs, n, 0, n);
  const rev = cachedPipeline(gpu, "reverse-upper", reverseUpperWgsl);
  batch.dispatch(rev, [
    bufs.a,
    bufs.x,
    batch.uniform([{ u32: n }, { u32: 0 }, { u32: 0 }, {
      u32: 0,
    }]),
  ], [Math.ceil(n / 16), Math.ceil(n / 16)]);
}

/**
 * X[o:o+s, o:o+s] ← L[o:o+s, o:o+s]⁻¹ given the inverses of its diagonal
 * blocks of 64: with L = [[A, 0], [B, C]], L⁻¹ = [[A⁻¹, 0], [−C⁻¹·B·A⁻¹, C⁻¹]].
 */
function encodeInvertLower(
  batch: GpuBatch,
  bufs: CholeskyBuffers,
  n: number,
  o: number,
  s: number,
): void {
  const nb = CHOLESKY_PANEL;
  if (s <= nb) return;
  const h = Math.ceil(s / 2 / nb) * nb;
  encodeInvertLower(batch, bufs, n, o, h);
  encodeInvertLower(batch, bufs, n, o + h, s - h);
  const large: GemmSpec = { ...SPEC, tile: "large" };
  // T = B · A⁻¹ (A⁻¹ lower triangular).
  encodeGemm(batch, { ...large, lowerB: true }, { c: bufs.t, a: bufs.a, b: bufs.x }, {
    m: s - h,
    n: h,
    k: h,
    lda: n,
    ldb: n,
    ldc: h,
    offA: (o + h) * n + o,
    offB: o * n + o,
  });
  // X21 = −C⁻¹ · T (C⁻¹ lower triangular).
  encodeGemm(batch, { ...large, aInC: true, lowerA: true }, { c: bufs.x, b: bufs.t }, {
    m: s - h,
    n: h,
    k: s - h,
    lda: n,
    ldb: h,
    ldc: n,
    offA: (o + h) * n + o + h,
    offC: (o + h) * n + o,
    alpha: -1,
  });
}

/** Floats of the scratch T: the largest off-diagonal block of the recursion. */
function scratchLength(n: number): number {
  const h = Math.ceil(n / 2 / CHOLESKY_PANEL) * CHOLESKY_PANEL;
  return Math.max(CHOLESKY_PANEL * n, (n - h) * h, 1);
}

/**
 * J·H·J as float32 (the input layout of {@linkcode encodeUpperCholeskyOfInverse}).
 *
 * @param h Symmetric [n, n].
 * @param n Order.
 * @returns The reversed matrix, float32.
 */
export function reversedF32(h: Float64Array, n: number): Float32Array {
  const out = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    const src = (n - 1 - i) * n + (n - 1), dst = i * n;
    for (let j = 0; j < n; j++) out[dst + j] = h[src - j]!;
  }
  return out;
}

/**
 * Allocates the buffers of {@linkcode encodeUpperCholeskyOfInverse} with A
 * holding J·H·J.
 *
 * @param gpu The GPU.
 * @param h Damped Hessian [n, n] as float64, J·H·J already reversed as float32, or
 *   null to leave A empty (to be filled by {@linkcode encodePermuteReverse}).
 * @param n Order.
 * @returns The buffers.
 */
export function choleskyBuffers(
  gpu: Gpu,
  h: Float64Array | Float32Array | null,
  n: number,
): CholeskyBuffers {
  return {
    a: h === null
      ? storageBuffer(gpu, n * n * 4, "hinv-factor")
      : uploadBuffer(gpu, h instanceof Float32Array ? h : reversedF32(h, n), "hinv-factor"),
    x: storageBuffer(gpu, n * n * 4, "linv"),
    t: storageBuffer(gpu, scratchLength(n) * 4, "cholesky-scratch"),
    status: storageBuffer(gpu, 4, "cholesky-status"),
  };
}

/**
 * U (upper, H⁻¹ = UᵀU) of a damped Hessian on the GPU, in one submission.
 *
 * @param gpu The GPU.
 * @param h Damped Hessian [n, n], float64 (read only).
 * @param n Order.
 * @returns U as float32 [n, n] and the GPU seconds.
 * @throws {CholeskyError} if a pivot is not positive (in float32).
 */
export async function upperCholeskyOfInverseGpu(
  gpu: Gpu,
  h: Float64Array,
  n: number,
): Promise<{ u: Float32Array; gpuSeconds: number }> {
  if (!Number.isInteger(n) || n < 1 || h.length !== n * n) {
    throw new RangeError(
      `Cannot factor H as 'h' must hold n × n values: n = ${n}, length ${h.length}`,
    );
  }
  const bufs = choleskyBuffers(gpu, h, n);
  const batch = new GpuBatch(gpu);
  encodeUpperCholeskyOfInverse(batch, bufs, n);
  const { data, gpuSeconds } = await batch.submit([bufs.a, bufs.status]);
  for (const b of Object.values(bufs)) (b as GPUBuffer).destroy();
  const status = new Uint32Array(data[1]!)[0]!;
  if (status !== 0) throw new CholeskyError(status - 1, NaN);
  return { u: new Float32Array(data[0]!), gpuSeconds };
}

/**
 * CPU reference of {@linkcode upperCholeskyOfInverseGpu} (float64).
 *
 * @param h Damped Hessian [n, n].
 * @param n Order.
 * @returns U [n, n].
 */
export function upperCholeskyOfInverseReference(h: Float64Array, n: number): Float64Array {
  const a = new Float64Array(n * n); // J·H·J
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) a[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)]!;
  }
  choleskyLowerInPlace(a, n);
  const li = invertLower(a, n);
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) u[i * n + j] = li[(n - 1 - i) * n + (n - 1 - j)]!;
  }
  return u;
}
