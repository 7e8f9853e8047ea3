/**
 * Library-internal dense float64 kernels on raw row-major arrays. The public,
 * validated API over tensors is `linalg.ts`; solvers call these directly to
 * avoid copies. Web-standard only.
 *
 * Every product goes through one packed GEMM (after Goto and van de Geijn,
 * "Anatomy of high-performance matrix multiplication", ACM TOMS 2008): B is
 * packed in KC×NC blocks of 4-column micro-panels, A in MC×KC blocks of 4-row
 * micro-panels, and a 4×4 register-blocked micro-kernel walks the shared
 * dimension: WebAssembly SIMD (`_gemm_wasm.ts`, 8 f64x2 accumulators) where
 * available, else plain JavaScript with 16 scalar accumulators; both give
 * bit-identical results. Cholesky and the inverse from a Cholesky factor are
 * blocked so that most of their work is that GEMM. No workers: every entry
 * point here is synchronous.
 *
 * @module
 */

import { createGemmKernel, KERNEL_UNROLL } from "./_gemm_wasm.ts";

/** A matrix is not positive definite: `pivot` is the failing diagonal index. */
export class CholeskyError extends Error {
  /** Index of the first non-positive pivot. */
  readonly pivot: number;
  /**
   * Creates the error for a failing pivot.
   *
   * @param pivot Index of the failing pivot.
   * @param value The pivot's value before the square root.
   */
  constructor(pivot: number, value: number) {
    super(`Cholesky failed: the matrix is not positive definite (pivot ${pivot} is ${value})`);
    this.name = "CholeskyError";
    this.pivot = pivot;
  }
}

/** A readable and writable array of numbers (Float64Array or Float32Array). */
type NumArray = Float64Array | Float32Array;

// Blocking parameters (doubles). KC×4 micro-panels of B stay in L1, the MC×KC
// packed block of A in L2, and the KC×NC packed block of B in L3.
const MR = 4;
const NR = 4;
const KC = 256;
const MC = 64;
const NC = 512;

// Scratch for packing and for one micro-tile. The kernels are synchronous and
// never re-enter, so module-level buffers are safe and save an allocation per
// call; they only ever hold intermediate values. Where WebAssembly SIMD exists
// they live in the memory of its micro-kernel (see `_gemm_wasm.ts`); the
// JavaScript micro-kernel below gives bit-identical results elsewhere.
// Micro-panels hold an even number of terms (KERNEL_UNROLL), zero-padded.
const wasm = createGemmKernel(MC * (KC + 1), (KC + 1) * NC);
const packedA = wasm
  ? new Float64Array(wasm.memory.buffer, wasm.aBase, MC * (KC + 1))
  : new Float64Array(MC * (KC + 1));
const packedB = wasm
  ? new Float64Array(wasm.memory.buffer, wasm.bBase, (KC + 1) * NC)
  : new Float64Array((KC + 1) * NC);
const tile = wasm
  ? new Float64Array(wasm.memory.buffer, wasm.tileBase, MR * NR)
  : new Float64Array(MR * NR);
const wasmKernel = wasm ? wasm.kernel : null;
const A_BASE = wasm ? wasm.aBase : 0;
const B_BASE = wasm ? wasm.bBase : 0;
const TILE_BASE = wasm ? wasm.tileBase : 0;

/**
 * Packs alpha·op(A)[i0:i0+mc, p0:p0+kc] into 4-row micro-panels (zero-padded):
 * panel r holds, for each p < kcp, the 4 values A(i0+4r+t, p0+p), t = 0..3
 * (zero for p ≥ kc).
 */
function packABlock(
  a: ArrayLike<number>,
  offA: number,
  lda: number,
  transA: boolean,
  i0: number,
  mc: number,
  p0: number,
  kc: number,
  kcp: number,
  alpha: number,
): void {
  const out = packedA;
  let o = 0;
  for (let ir = 0; ir < mc; ir += MR, o += MR * (kcp - kc)) {
    if (kcp > kc) out.fill(0, o + MR * kc, o + MR * kcp);
    const h = Math.min(MR, mc - ir);
    const i = i0 + ir;
    if (!transA) {
      // A(i, p) = a[offA + i·lda + p]: four row streams
      const r0 = offA + i * lda + p0;
      const r1 = h > 1 ? r0 + lda : r0;
      const r2 = h > 2 ? r0 + 2 * lda : r0;
      const r3 = h > 3 ? r0 + 3 * lda : r0;
      const s1 = h > 1 ? alpha : 0, s2 = h > 2 ? alpha : 0, s3 = h > 3 ? alpha : 0;
      for (let p = 0; p < kc; p++) {
        out[o] = alpha * a[r0 + p]!;
        out[o + 1] = s1 * a[r1 + p]!;
        out[o + 2] = s2 * a[r2 + p]!;
        out[o + 3] = s3 * a[r3 + p]!;
        o += 4;
      }
    } else {
      // A(i, p) = a[offA + p·lda + i]: contiguous in i
      let src = offA + p0 * lda + i;
      if (h === MR) {
        for (let p = 0; p < kc; p++) {
          out[o] = alpha * a[src]!;
          out[o + 1] = alpha * a[src + 1]!;
          out[o + 2] = alpha * a[src + 2]!;
          out[o + 3] = alpha * a[src + 3]!;
          o += 4;
          src += lda;
        }
      } else {
        for (let p = 0; p < kc; p++) {
          for (let t = 0; t < MR; t++) out[o + t] = t < h ? alpha * a[src + t]! : 0;
          o += 4;
          src += lda;
        }
      }
    }
  }
}

/**
 * Packs op(B)[p0:p0+kc, j0:j0+nc] into 4-column micro-panels (zero-padded):
 * panel q holds, for each p < kcp, the 4 values B(p0+p, j0+4q+t), t = 0..3
 * (zero for p ≥ kc).
 */
function packBBlock(
  b: ArrayLike<number>,
  offB: number,
  ldb: number,
  transB: boolean,
  p0: number,
  kc: number,
  j0: number,
  nc: number,
  kcp: number,
): void {
  const out = packedB;
  let o = 0;
  for (let jr = 0; jr < nc; jr += NR, o += NR * (kcp - kc)) {
    if (kcp > kc) out.fill(0, o + NR * kc, o + NR * kcp);
    const w = Math.min(NR, nc - jr);
    const j = j0 + jr;
    if (!transB) {
      // B(p, j) = b[offB + p·ldb + j]: contiguous in j
      let src = offB + p0 * ldb + j;
      if (w === NR) {
        for (let p = 0; p < kc; p++) {
          out[o] = b[src]!;
          out[o + 1] = b[src + 1]!;
          out[o + 2] = b[src + 2]!;
          out[o + 3] = b[src + 3]!;
          o += 4;
          src += ldb;
        }
      } else {
        for (let p = 0; p < kc; p++) {
          for (let t = 0; t < NR; t++) out[o + t] = t < w ? b[src + t]! : 0;
          o += 4;
          src += ldb;
        }
      }
    } else {
      // B(p, j) = b[offB + j·ldb + p]: four column streams
      const r0 = offB + j * ldb + p0;
      const r1 = w > 1 ? r0 + ldb : r0;
      const r2 = w > 2 ? r0 + 2 * ldb : r0;
      const r3 = w > 3 ? r0 + 3 * ldb : r0;
      const s1 = w > 1 ? 1 : 0, s2 = w > 2 ? 1 : 0, s3 = w > 3 ? 1 : 0;
      for (let p = 0; p < kc; p++) {
        out[o] = b[r0 + p]!;
        out[o + 1] = s1 * b[r1 + p]!;
        out[o + 2] = s2 * b[r2 + p]!;
        out[o + 3] = s3 * b[r3 + p]!;
        o += 4;
      }
    }
  }
}

/**
 * The 4×4 micro-kernel: tile = Σ_p packedA[ao + 4p + i]·packedB[bo + 4p + j].
 * Sixteen scalar accumulators stay in registers; the result goes to `tile`.
 */
function microKernel(kc: number, ao: number, bo: number): void {
  const ap = packedA, bp = packedB;
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
  let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
  let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  for (let p = 0; p < kc; p++) {
    const a0 = ap[ao]!, a1 = ap[ao + 1]!, a2 = ap[ao + 2]!, a3 = ap[ao + 3]!;
    const b0 = bp[bo]!, b1 = bp[bo + 1]!, b2 = bp[bo + 2]!, b3 = bp[bo + 3]!;
    c00 += a0 * b0;
    c01 += a0 * b1;
    c02 += a0 * b2;
    c03 += a0 * b3;
    c10 += a1 * b0;
    c11 += a1 * b1;
    c12 += a1 * b2;
    c13 += a1 * b3;
    c20 += a2 * b0;
    c21 += a2 * b1;
    c22 += a2 * b2;
    c23 += a2 * b3;
    c30 += a3 * b0;
    c31 += a3 * b1;
    c32 += a3 * b2;
    c33 += a3 * b3;
    ao += 4;
    bo += 4;
  }
  const t = tile;
  t[0] = c00;
  t[1] = c01;
  t[2] = c02;
  t[3] = c03;
  t[4] = c10;
  t[5] = c11;
  t[6] = c12;
  t[7] = c13;
  t[8] = c20;
  t[9] = c21;
  t[10] = c22;
  t[11] = c23;
  t[12] = c30;
  t[13] = c31;
  t[14] = c32;
  t[15] = c33;
}

/** C[co + i·ldc + j] += tile[4i + j] for i < h, j < w. */
function addTile(c: NumArray, co: number, ldc: number, h: number, w: number): void {
  const t = tile;
  if (h === MR && w === NR) {
    for (let i = 0; i < MR; i++) {
      const o = co + i * ldc, q = 4 * i;
      c[o] = c[o]! + t[q]!;
      c[o + 1] = c[o + 1]! + t[q + 1]!;
      c[o + 2] = c[o + 2]! + t[q + 2]!;
      c[o + 3] = c[o + 3]! + t[q + 3]!;
    }
    return;
  }
  for (let i = 0; i < h; i++) {
    for (let j = 0; j < w; j++) c[co + i * ldc + j] = c[co + i * ldc + j]! + t[4 * i + j]!;
  }
}

/**
 * The general kernel: C[m, n] += alpha·op(A)[m, k]·op(B)[k, n], where
 * C(i, j) = c[offC + i·ldc + j], op(A)(i, p) = a[offA + i·lda + p] (or
 * a[offA + p·lda + i] when `transA`), and op(B)(p, j) = b[offB + p·ldb + j]
 * (or b[offB + j·ldb + p] when `transB`). C must not overlap A or B.
 */
function gemm(
  m: number,
  n: number,
  k: number,
  alpha: number,
  a: ArrayLike<number>,
  offA: number,
  lda: number,
  transA: boolean,
  b: ArrayLike<number>,
  offB: number,
  ldb: number,
  transB: boolean,
  c: NumArray,
  offC: number,
  ldc: number,
): void {
  if (m <= 0 || n <= 0 || k <= 0) return;
  for (let jc = 0; jc < n; jc += NC) {
    const nc = Math.min(NC, n - jc);
    for (let pc = 0; pc < k; pc += KC) {
      const kc = Math.min(KC, k - pc);
      const kcp = Math.ceil(kc / KERNEL_UNROLL) * KERNEL_UNROLL;
      packBBlock(b, offB, ldb, transB, pc, kc, jc, nc, kcp);
      for (let ic = 0; ic < m; ic += MC) {
        const mc = Math.min(MC, m - ic);
        packABlock(a, offA, lda, transA, ic, mc, pc, kc, kcp, alpha);
        for (let jr = 0; jr < nc; jr += NR) {
          const w = Math.min(NR, nc - jr);
          const bo = jr * kcp;
          for (let ir = 0; ir < mc; ir += MR) {
            if (wasmKernel !== null) {
              wasmKernel(kcp, A_BASE + 8 * ir * kcp, B_BASE + 8 * bo, TILE_BASE);
            } else {
              microKernel(kcp, ir * kcp, bo);
            }
            addTile(c, offC + (ic + ir) * ldc + jc + jr, ldc, Math.min(MR, mc - ir), w);
          }
        }
      }
    }
  }
}

function checkSpan(
  what: string,
  len: number,
  off: number,
  ld: number,
  rows: number,
  cols: number,
): void {
  if (!Number.isInteger(off) || !Number.isInteger(ld) || off < 0 || ld < cols) {
    throw new RangeError(
      `Cannot update in place as '${what}' has offset ${off} and leading dimension ${ld} ` +
        `(needs a non-negative offset and a leading dimension ≥ ${cols})`,
    );
  }
  if (rows > 0 && cols > 0 && off + (rows - 1) * ld + cols > len) {
    throw new RangeError(
      `Cannot update in place as '${what}' [${rows}, ${cols}] at offset ${off} with leading ` +
        `dimension ${ld} runs past its ${len} elements`,
    );
  }
}

function checkDims(m: number, k: number, n: number): void {
  for (const [name, v] of [["m", m], ["k", k], ["n", n]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new RangeError(
        `Cannot multiply as '${name}' must be a non-negative integer: current value is ${v}`,
      );
    }
  }
}

/** Layout and scaling of {@linkcode gemmInPlace}; every field is optional. */
export interface GemmLayout {
  /** Scale of the product. @default 1 */
  alpha?: number;
  /** Read A as stored transposed ([k, m] in memory). @default false */
  transA?: boolean;
  /** Read B as stored transposed ([n, k] in memory). @default false */
  transB?: boolean;
  /** Index of C(0, 0) in `c`. @default 0 */
  offC?: number;
  /** Stride between rows of C. @default n */
  ldc?: number;
  /** Index of the first stored element of A. @default 0 */
  offA?: number;
  /** Stride between stored rows of A. @default k, or m when transA */
  lda?: number;
  /** Index of the first stored element of B. @default 0 */
  offB?: number;
  /** Stride between stored rows of B. @default n, or k when transB */
  ldb?: number;
}

/**
 * General in-place update C += alpha·op(A)·op(B) on row-major sub-matrices:
 * C(i, j) = c[offC + i·ldc + j]; op(A)(i, p) = a[offA + i·lda + p], or
 * a[offA + p·lda + i] with `transA`; op(B)(p, j) = b[offB + p·ldb + j], or
 * b[offB + j·ldb + p] with `transB`. C must not overlap A or B.
 *
 * @param c Destination [m, n] (as laid out), updated in place.
 * @param a Left factor, op(A) [m, k].
 * @param b Right factor, op(B) [k, n].
 * @param m Rows of the update.
 * @param k Shared dimension.
 * @param n Columns of the update.
 * @param layout Offsets, strides, transposes and `alpha`.
 * @throws {RangeError} when a sub-matrix runs past its array.
 */
export function gemmInPlace(
  c: Float64Array,
  a: Float64Array,
  b: Float64Array,
  m: number,
  k: number,
  n: number,
  layout: GemmLayout = {},
): void {
  const { alpha = 1, transA = false, transB = false, offC = 0, ldc = n, offA = 0, offB = 0 } =
    layout;
  const { lda = transA ? m : k, ldb = transB ? k : n } = layout;
  checkDims(m, k, n);
  checkSpan("c", c.length, offC, ldc, m, n);
  if (transA) checkSpan("a", a.length, offA, lda, k, m);
  else checkSpan("a", a.length, offA, lda, m, k);
  if (transB) checkSpan("b", b.length, offB, ldb, n, k);
  else checkSpan("b", b.length, offB, ldb, k, n);
  gemm(m, n, k, alpha, a, offA, lda, transA, b, offB, ldb, transB, c, offC, ldc);
}

/**
 * In-place update C -= A·B on row-major sub-matrices, without copies:
 * for i < m, j < n:
 * `c[offC + i·ldc + j] -= Σ_{p<k} a[offA + i·lda + p] · b[offB + p·ldb + j]`.
 *
 * Typical use: the lazy batch update of a solver, W[:, j1:] -= E·Hinv[i1:i2, j1:]
 * with `offC = j1, ldc = cols`, `offB = i1·cols + j1, ldb = cols`.
 * C must not overlap A or B.
 *
 * @param c Destination, updated in place.
 * @param a Left factor.
 * @param b Right factor.
 * @param m Rows of the update.
 * @param k Shared dimension.
 * @param n Columns of the update.
 * @param offC Index of C(0, 0) in `c`. @default 0
 * @param ldc Stride between rows of C. @default n
 * @param offA Index of A(0, 0) in `a`. @default 0
 * @param lda Stride between rows of A. @default k
 * @param offB Index of B(0, 0) in `b`. @default 0
 * @param ldb Stride between rows of B. @default n
 * @throws {RangeError} when a sub-matrix runs past its array.
 */
export function gemmSubInPlace(
  c: Float64Array,
  a: Float64Array,
  b: Float64Array,
  m: number,
  k: number,
  n: number,
  offC = 0,
  ldc: number = n,
  offA = 0,
  lda: number = k,
  offB = 0,
  ldb: number = n,
): void {
  checkDims(m, k, n);
  checkSpan("c", c.length, offC, ldc, m, n);
  checkSpan("a", a.length, offA, lda, m, k);
  checkSpan("b", b.length, offB, ldb, k, n);
  gemm(m, n, k, -1, a, offA, lda, false, b, offB, ldb, false, c, offC, ldc);
}

/**
 * Float32 twin of {@linkcode gemmSubInPlace} (same arguments and layout):
 * C -= A·B with products accumulated in float64 over blocks of 256 terms and
 * rounded into the float32 C.
 *
 * @param c Destination, updated in place.
 * @param a Left factor.
 * @param b Right factor.
 * @param m Rows of the update.
 * @param k Shared dimension.
 * @param n Columns of the update.
 * @param offC Index of C(0, 0) in `c`. @default 0
 * @param ldc Stride between rows of C. @default n
 * @param offA Index of A(0, 0) in `a`. @default 0
 * @param lda Stride between rows of A. @default k
 * @param offB Index of B(0, 0) in `b`. @default 0
 * @param ldb Stride between rows of B. @default n
 * @throws {RangeError} when a sub-matrix runs past its array.
 */
export function gemmSubInPlaceF32(
  c: Float32Array,
  a: Float32Array,
  b: Float32Array,
  m: number,
  k: number,
  n: number,
  offC = 0,
  ldc: number = n,
  offA = 0,
  lda: number = k,
  offB = 0,
  ldb: number = n,
): void {
  checkDims(m, k, n);
  checkSpan("c", c.length, offC, ldc, m, n);
  checkSpan("a", a.length, offA, lda, m, k);
  checkSpan("b", b.length, offB, ldb, k, n);
  gemm(m, n, k, -1, a, offA, lda, false, b, offB, ldb, false, c, offC, ldc);
}

/**
 * C = A·B for row-major A [m, k] and B [k, n] (packed, register-blocked GEMM).
 *
 * @param a Left factor.
 * @param b Right factor.
 * @param m Rows of A.
 * @param k Columns of A (rows of B).
 * @param n Columns of B.
 * @returns C [m, n].
 */
export function matmulRaw(
  a: Float64Array,
  b: Float64Array,
  m: number,
  k: number,
  n: number,
): Float64Array {
  const c = new Float64Array(m * n);
  gemm(m, n, k, 1, a, 0, k, false, b, 0, n, false, c, 0, n);
  return c;
}

/** Block of rows per call when only the lower triangle of a product is needed. */
const TRI_BLOCK = 128;

/** Copies the strict lower triangle of g [n, n] onto its upper triangle. */
function mirrorLower(g: Float64Array, n: number): void {
  const B = 32;
  for (let i0 = 0; i0 < n; i0 += B) {
    const i1 = Math.min(n, i0 + B);
    for (let j0 = 0; j0 < i1; j0 += B) {
      const j1 = Math.min(n, j0 + B);
      for (let i = i0; i < i1; i++) {
        const ri = i * n;
        const jEnd = Math.min(j1, i);
        for (let j = j0; j < jEnd; j++) g[j * n + i] = g[ri + j]!;
      }
    }
  }
}

/**
 * G = XᵀX for row-major X [rows, cols] (symmetric; both triangles filled).
 * Only the lower block triangle is computed, then mirrored, so G is exactly
 * symmetric.
 *
 * @param x Input (any numeric array, e.g. Float32Array activations).
 * @param rows Rows of X.
 * @param cols Columns of X.
 * @returns G [cols, cols].
 */
export function gramRaw(x: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const g = new Float64Array(cols * cols);
  for (let i0 = 0; i0 < cols; i0 += TRI_BLOCK) {
    const ib = Math.min(TRI_BLOCK, cols - i0);
    // G[i0:i0+ib, 0:i0+ib] += X[:, i0:i0+ib]ᵀ · X[:, 0:i0+ib]
    gemm(ib, i0 + ib, rows, 1, x, i0, cols, true, x, 0, cols, false, g, i0 * cols, cols);
  }
  mirrorLower(g, cols);
  return g;
}

/** Cholesky block size: the panel width of the right-looking factorization. */
const CHOL_BLOCK = 96;

/**
 * Unblocked Cholesky of the diagonal block a[k0:k1, k0:k1] (stride n), lower
 * triangle, in place; pivots are reported with their global index.
 */
function choleskyDiagonalBlock(a: Float64Array, n: number, k0: number, k1: number): void {
  for (let j = k0; j < k1; j++) {
    const rj = j * n;
    let d = a[rj + j]!;
    for (let p = k0; p < j; p++) d -= a[rj + p]! * a[rj + p]!;
    if (!(d > 0) || !Number.isFinite(d)) throw new CholeskyError(j, d);
    const ljj = Math.sqrt(d);
    a[rj + j] = ljj;
    const inv = 1 / ljj;
    for (let i = j + 1; i < k1; i++) {
      const ri = i * n;
      let s = a[ri + j]!;
      for (let p = k0; p < j; p++) s -= a[ri + p]! * a[rj + p]!;
      a[ri + j] = s * inv;
    }
  }
}

/** Column block of the panel solve: substitution inside it, GEMM between blocks. */
const PANEL_BLOCK = 16;

/**
 * Panel solve L21 = A21·L11⁻ᵀ for rows [k1, n) and columns [k0, k1), in place.
 * Forward substitution over column blocks of 16: solve a block row by row
 * (contiguous dot products), then remove its contribution from the columns to
 * its right with one GEMM, A21[:, j1:k1] −= L21[:, j0:j1]·L11[j1:k1, j0:j1]ᵀ.
 */
function choleskyPanel(a: Float64Array, n: number, k0: number, k1: number): void {
  for (let j0 = k0; j0 < k1; j0 += PANEL_BLOCK) {
    const j1 = Math.min(k1, j0 + PANEL_BLOCK);
    for (let i = k1; i < n; i++) {
      const ri = i * n;
      for (let j = j0; j < j1; j++) {
        const rj = j * n;
        let s = a[ri + j]!;
        for (let p = j0; p < j; p++) s -= a[ri + p]! * a[rj + p]!;
        a[ri + j] = s / a[rj + j]!;
      }
    }
    if (j1 < k1) {
      gemm(
        n - k1,
        k1 - j1,
        j1 - j0,
        -1,
        a,
        k1 * n + j0,
        n,
        false,
        a,
        j1 * n + j0,
        n,
        true,
        a,
        k1 * n + j1,
        n,
      );
    }
  }
}

/**
 * Overwrites the lower triangle of `a` [n, n] with its Cholesky factor L
 * (A = L·Lᵀ) and zeroes the strict upper triangle. Only the lower triangle of
 * the input is read. Blocked right-looking: factor a diagonal block, solve the
 * panel below it, then update the trailing lower triangle with one GEMM per
 * block row.
 *
 * @param a Symmetric positive-definite matrix, row-major; overwritten.
 * @param n Order.
 * @throws {CholeskyError} at the first non-positive pivot (global index).
 */
export function choleskyLowerInPlace(a: Float64Array, n: number): void {
  for (let k0 = 0; k0 < n; k0 += CHOL_BLOCK) {
    const k1 = Math.min(n, k0 + CHOL_BLOCK);
    choleskyDiagonalBlock(a, n, k0, k1);
    if (k1 === n) break;
    choleskyPanel(a, n, k0, k1);
    // A22 -= L21·L21ᵀ on the lower block triangle of rows/cols [k1, n)
    for (let i0 = k1; i0 < n; i0 += TRI_BLOCK) {
      const ib = Math.min(TRI_BLOCK, n - i0);
      gemm(
        ib,
        i0 + ib - k1,
        k1 - k0,
        -1,
        a,
        i0 * n + k0,
        n,
        false,
        a,
        k1 * n + k0,
        n,
        true,
        a,
        i0 * n + k1,
        n,
      );
    }
  }
  for (let i = 0; i < n; i++) a.fill(0, i * n + i + 1, (i + 1) * n);
}

/** Unblocked inverse of the lower-triangular diagonal block l[k0:k1, k0:k1] into x. */
function invertLowerBlock(
  l: Float64Array,
  x: Float64Array,
  n: number,
  k0: number,
  k1: number,
): void {
  for (let j = k0; j < k1; j++) {
    x[j * n + j] = 1 / l[j * n + j]!;
    for (let i = j + 1; i < k1; i++) {
      const ri = i * n;
      let s = 0;
      for (let p = j; p < i; p++) s += l[ri + p]! * x[p * n + j]!;
      x[ri + j] = -s / l[ri + i]!;
    }
  }
}

/** Block size of the triangular inverse. */
const INV_BLOCK = 64;

/**
 * Inverse of a lower-triangular matrix, into a fresh array. Blocked: with
 * D = diag blocks of L⁻¹, X[I, J] = −D[I]·Σ_{J≤K<I} L[I, K]·X[K, J].
 *
 * @param l Lower-triangular [n, n] (the strict upper triangle is ignored).
 * @param n Order.
 * @returns L⁻¹ (lower triangular).
 */
export function invertLower(l: Float64Array, n: number): Float64Array {
  const x = new Float64Array(n * n);
  const nb = INV_BLOCK;
  for (let k0 = 0; k0 < n; k0 += nb) invertLowerBlock(l, x, n, k0, Math.min(n, k0 + nb));
  const t = new Float64Array(nb * n);
  for (let i0 = nb; i0 < n; i0 += nb) {
    const ib = Math.min(nb, n - i0);
    // T[ib, i0] = L[i0:i0+ib, 0:i0]·X[0:i0, 0:i0] (X lower: only K ≥ J contributes)
    t.fill(0, 0, ib * i0);
    for (let j0 = 0; j0 < i0; j0 += nb) {
      const jb = Math.min(nb, i0 - j0);
      gemm(ib, jb, i0 - j0, 1, l, i0 * n + j0, n, false, x, j0 * n + j0, n, false, t, j0, i0);
    }
    // X[i0:i0+ib, 0:i0] = −D·T, D = X[i0:i0+ib, i0:i0+ib]
    gemm(ib, i0, ib, -1, x, i0 * n + i0, n, false, t, 0, i0, false, x, i0 * n, n);
  }
  return x;
}

/**
 * A⁻¹ from the lower Cholesky factor L of A: A⁻¹ = L⁻ᵀ·L⁻¹, symmetric.
 *
 * @param l Lower factor [n, n].
 * @param n Order.
 * @returns A⁻¹ [n, n], full (both triangles).
 */
export function inverseFromCholesky(l: Float64Array, n: number): Float64Array {
  const li = invertLower(l, n);
  const out = new Float64Array(n * n);
  // out[I, 0:I1] = Σ_{K ≥ I0} Li[K, I]ᵀ·Li[K, 0:I1]; rows of Li above I0 vanish in column block I
  for (let i0 = 0; i0 < n; i0 += TRI_BLOCK) {
    const ib = Math.min(TRI_BLOCK, n - i0);
    gemm(ib, i0 + ib, n - i0, 1, li, i0 * n + i0, n, true, li, i0 * n, n, false, out, i0 * n, n);
  }
  mirrorLower(out, n);
  return out;
}
