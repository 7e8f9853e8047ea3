/**
 * A register-blocked f32 matrix product for WebGPU, C ← α·op(A)·op(B) (+ β·C),
 * on sub-matrices given by offsets and leading dimensions: the FLOPs of the
 * Hessian accumulation, the OBS lazy block update, and the blocked Cholesky
 * and triangular inverse all go through it.
 *
 * Each thread of a 16×16 workgroup computes an 8×8 (large tile, 128×128) or
 * 4×4 (small tile, 64×64) block of C in named registers (no dynamically
 * indexed private arrays), from K-slices of A and B staged in workgroup
 * memory as vec4s (each thread owns 4-row by 4-column blocks 64 apart, read
 * with one vec4 load each from workgroup memory).
 *
 * Web-standard only.
 *
 * @module
 */

import { cachedPipeline, type Gpu, type GpuBatch, type UniformField } from "./backend.ts";

/** Specialization of {@linkcode gemmWgsl}. */
export interface GemmSpec {
  /** A is stored as [K, M] (so op(A) = storedᵀ). */
  readonly transA: boolean;
  /** B is stored as [N, K]. */
  readonly transB: boolean;
  /** C ← α·A·B + β·C instead of C ← α·A·B. */
  readonly accumulate: boolean;
  /** Storage type of A and B when they are separate buffers. */
  readonly inputs: "f32" | "f16";
  /** A is read from C's buffer (binding it twice would be a usage conflict). */
  readonly aInC: boolean;
  /** B is read from C's buffer. */
  readonly bInC: boolean;
  /** Only tiles that touch the lower triangle of C (row ≥ column) are computed. */
  readonly lowerC: boolean;
  /** B is lower triangular: the K loop of a tile starts at its first column. */
  readonly lowerB: boolean;
  /** A is lower triangular: the K loop of a tile ends after its last row. @default false */
  readonly lowerA?: boolean;
  /** "large": 128×128 tiles (8×8 per thread); "small": 64×64 (4×4). */
  readonly tile: "large" | "small";
}

/**
 * A {@linkcode GemmSpec} from the fields that differ from the plain product
 * C ← A·B of separate f32 buffers, none transposed or triangular, in large
 * tiles (so that every caller spells only what it changes, and equal
 * specializations produce equal pipeline keys).
 *
 * @param fields Fields to set.
 * @returns The full specialization.
 */
export function gemmSpec(fields: Partial<GemmSpec> = {}): GemmSpec {
  return {
    transA: false,
    transB: false,
    accumulate: false,
    inputs: "f32",
    aInC: false,
    bInC: false,
    lowerC: false,
    lowerB: false,
    tile: "large",
    ...fields,
  };
}

/** Sizes and placement of one product; offsets and leading dimensions in elements. */
export interface GemmShape {
  /** Rows of C. */
  readonly m: number;
  /** Columns of C. */
  readonly n: number;
  /** Inner dimension. */
  readonly k: number;
  /** Leading dimension (row length) of A's storage. */
  readonly lda: number;
  /** Leading dimension of B's storage. */
  readonly ldb: number;
  /** Leading dimension of C. */
  readonly ldc: number;
  /** Element offset of A. @default 0 */
  readonly offA?: number;
  /** Element offset of B. @default 0 */
  readonly offB?: number;
  /** Element offset of C. @default 0 */
  readonly offC?: number;
  /** α. @default 1 */
  readonly alpha?: number;
  /** β (with `accumulate`). @default 1 */
  readonly beta?: number;
}

const BK = 16;

function tileOf(spec: GemmSpec): { bm: number; bn: number; tm: number; tn: number } {
  return spec.tile === "large"
    ? { bm: 128, bn: 128, tm: 8, tn: 8 }
    : { bm: 64, bn: 64, tm: 4, tn: 4 };
}

/**
 * WGSL source of the matrix product for one specialization. Bindings: 0 = C
 * (read-write f32), then A and B unless read from C, then the uniform
 * parameters {M, N, K, lda, ldb, ldc, offA, offB, offC, α, β}.
 *
 * @param spec The specialization.
 * @returns WGSL source with entry point `main`.
 */
export function gemmWgsl(spec: GemmSpec): string {
  const { bm, bn, tm, tn } = tileOf(spec);
  const t = spec.inputs;
  // Workgroup tiles hold vec4s along m (A) and n (B); a row of the tile is
  // padded by one vec4 when k is the fast index of the global load, which
  // spreads the transposing stores over the banks.
  const sa = bm / 4 + (spec.transA ? 0 : 1);
  const sb = bn / 4 + (spec.transB ? 1 : 0);
  let binding = 1;
  const decl: string[] = [];
  if (!spec.aInC) decl.push(`@group(0) @binding(${binding++}) var<storage, read> A: array<${t}>;`);
  if (!spec.bInC) decl.push(`@group(0) @binding(${binding++}) var<storage, read> B: array<${t}>;`);
  decl.push(`@group(0) @binding(${binding}) var<uniform> p: Params;`);
  const aSrc = spec.aInC ? "C" : "A";
  const bSrc = spec.bInC ? "C" : "B";
  const aIdx = spec.transA ? "k * p.lda + m" : "m * p.lda + k";
  const bIdx = spec.transB ? "n * p.ldb + k" : "k * p.ldb + n";
  const loadsA = (bm * BK) / 256;
  const loadsB = (bn * BK) / 256;
  // Global loads go to registers one K-slice ahead (issued before the
  // products of the current slice, so their latency hides behind them), and
  // from registers to workgroup memory after the slice is consumed.
  const fetch: string[] = [];
  const store: string[] = [];
  const decls: string[] = [];
  for (let e = 0; e < loadsA; e++) {
    const idx = `(t + ${e * 256}u)`;
    const [mm, kk] = spec.transA
      ? [`${idx} % ${bm}u`, `${idx} / ${bm}u`]
      : [`${idx} / ${BK}u`, `${idx} % ${BK}u`];
    decls.push(`  let am${e} = ${mm}; let ak${e} = ${kk};`);
    decls.push(`  var ra${e} = 0.0;`);
    fetch.push(`    ra${e} = loadA(m0 + am${e}, k0 + ak${e});`);
    store.push(`    As[ak${e} * ${sa}u + am${e} / 4u][am${e} % 4u] = ra${e};`);
  }
  for (let e = 0; e < loadsB; e++) {
    const idx = `(t + ${e * 256}u)`;
    const [nn, kk] = spec.transB
      ? [`${idx} / ${BK}u`, `${idx} % ${BK}u`]
      : [`${idx} % ${bn}u`, `${idx} / ${bn}u`];
    decls.push(`  let bn${e} = ${nn}; let bk${e} = ${kk};`);
    decls.push(`  var rb${e} = 0.0;`);
    fetch.push(`    rb${e} = loadB(k0 + bk${e}, n0 + bn${e});`);
    store.push(`    Bs[bk${e} * ${sb}u + bn${e} / 4u][bn${e} % 4u] = rb${e};`);
  }

  const ra = tm / 4, rb = tn / 4;
  const acc: string[] = [];
  for (let i = 0; i < ra; i++) {
    for (let j = 0; j < tn; j++) acc.push(`  var c${i}_${j} = vec4<f32>(0.0);`);
  }
  const inner: string[] = [];
  for (let kk = 0; kk < BK; kk++) {
    for (let i = 0; i < ra; i++) {
      inner.push(`    let a${kk}_${i} = As[${kk * sa}u + ly + ${16 * i}u];`);
    }
    for (let j = 0; j < rb; j++) {
      inner.push(`    let b${kk}_${j} = Bs[${kk * sb}u + lx + ${16 * j}u];`);
    }
    for (let i = 0; i < ra; i++) {
      for (let j = 0; j < tn; j++) {
        const b = `b${kk}_${j >> 2}.${"xyzw"[j & 3]}`;
        inner.push(`    c${i}_${j} = fma(a${kk}_${i}, vec4<f32>(${b}), c${i}_${j});`);
      }
    }
  }
  const stores: string[] = [];
  for (let i = 0; i < tm; i++) {
    const r = i >> 2, comp = "xyzw"[i & 3];
    stores.push(`  { let m = m0 + ${64 * r}u + ly * 4u + ${i & 3}u;`);
    stores.push(`    if (m < p.M) {`);
    for (let j = 0; j < tn; j++) {
      stores.push(`      { let n = n0 + ${64 * (j >> 2)}u + lx * 4u + ${j & 3}u; if (n < p.N) {`);
      stores.push(`        let o = p.offC + m * p.ldc + n;`);
      stores.push(
        spec.accumulate
          ? `        C[o] = p.beta * C[o] + p.alpha * c${r}_${j}.${comp}; } }`
          : `        C[o] = p.alpha * c${r}_${j}.${comp}; } }`,
      );
    }
    stores.push(`    } }`);
  }
  return `${t === "f16" ? "enable f16;\n" : ""}
struct Params { M: u32, N: u32, K: u32, lda: u32, ldb: u32, ldc: u32,
  offA: u32, offB: u32, offC: u32, alpha: f32, beta: f32, pad: u32 }
@group(0) @binding(0) var<storage, read_write> C: array<f32>;
${decl.join("\n")}
var<workgroup> As: array<vec4<f32>, ${BK * sa}>;
var<workgroup> Bs: array<vec4<f32>, ${BK * sb}>;

fn loadA(m: u32, k: u32) -> f32 {
  if (m < p.M && k < p.K) { return f32(${aSrc}[p.offA + ${aIdx}]); }
  return 0.0;
}
fn loadB(k: u32, n: u32) -> f32 {
  if (k < p.K && n < p.N) { return f32(${bSrc}[p.offB + ${bIdx}]); }
  return 0.0;
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let m0 = wg.y * ${bm}u;
  let n0 = wg.x * ${bn}u;
  let lx = lid.x;
  let ly = lid.y;
  ${spec.lowerC ? `if (n0 >= m0 + ${bm}u) { return; }` : ""}
  let kBegin = ${spec.lowerB ? `(n0 / ${BK}u) * ${BK}u` : "0u"};
  let kEnd = ${spec.lowerA ? `min(p.K, m0 + ${bm}u)` : "p.K"};
${acc.join("\n")}
${decls.join("\n")}
  var k0 = kBegin;
${fetch.join("\n")}
  for (; k0 < kEnd; k0 += ${BK}u) {
${store.join("\n")}
    workgroupBarrier();
    {
      let k0 = k0 + ${BK}u;
${fetch.join("\n")}
    }
${inner.join("\n")}
    workgroupBarrier();
  }
${stores.join("\n")}
}
`;
}

/** Shared (ragged) bindings for {@linkcode encodeGemm}. */
export interface GemmOperands {
  /** C's buffer (f32). */
  readonly c: GPUBuffer;
  /** A's buffer, when separate from C. */
  readonly a?: GPUBuffer;
  /** B's buffer, when separate from C. */
  readonly b?: GPUBuffer;
}

/**
 * Records one matrix product into a batch, validating the shape against the
 * specialization.
 *
 * @param batch The batch to record into.
 * @param spec The specialization.
 * @param ops The buffers.
 * @param shape Sizes, offsets, leading dimensions and scalars.
 */
export function encodeGemm(
  batch: GpuBatch,
  spec: GemmSpec,
  ops: GemmOperands,
  shape: GemmShape,
): void {
  const { m, n } = shape;
  const uniforms = gemmUniforms(shape, "a product");
  if (spec.aInC === (ops.a !== undefined) || spec.bInC === (ops.b !== undefined)) {
    throw new TypeError(
      "Cannot encode a product: operands do not match the specialization's aliasing",
    );
  }
  if (spec.inputs === "f16" && (spec.aInC || spec.bInC)) {
    throw new TypeError("Cannot encode a product: f16 inputs must be separate buffers");
  }
  if (m === 0 || n === 0) return;
  const key = `gemm:${JSON.stringify(spec)}`;
  const pipeline = cachedPipeline(batch.gpu, key, () => gemmWgsl(spec), { dynamicUniforms: true });
  const { bm, bn } = tileOf(spec);
  const resources: (GPUBuffer | GPUBufferBinding)[] = [ops.c];
  if (ops.a) resources.push(ops.a);
  if (ops.b) resources.push(ops.b);
  resources.push(batch.uniform(uniforms));
  batch.dispatch(pipeline, resources, [Math.ceil(n / bn), Math.ceil(m / bm)]);
}

/**
 * The uniform block {M, N, K, lda, ldb, ldc, offA, offB, offC, α, β} of a
 * product (shared with the tiled kernel), after checking that every size
 * and offset is a u32.
 *
 * @param shape Sizes and placement.
 * @param what The product, for error messages ("a product").
 * @returns The uniform fields.
 */
export function gemmUniforms(shape: GemmShape, what: string): UniformField[] {
  const { m, n, k, lda, ldb, ldc, offA = 0, offB = 0, offC = 0, alpha = 1, beta = 1 } = shape;
  for (const [name, v] of Object.entries({ m, n, k, lda, ldb, ldc, offA, offB, offC })) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new RangeError(
        `Cannot encode ${what} as '${name}' must be a u32: current value is ${v}`,
      );
    }
  }
  return [
    { u32: m },
    { u32: n },
    { u32: k },
    { u32: lda },
    { u32: ldb },
    { u32: ldc },
    { u32: offA },
    { u32: offB },
    { u32: offC },
    { f32: alpha },
    { f32: beta },
    { u32: 0 },
  ];
}

/** Whether a device can run a specialization (f16 inputs need `shader-f16`). */
export function gemmSupported(gpu: Gpu, spec: GemmSpec): boolean {
  return spec.inputs === "f32" || gpu.f16;
}

/**
 * CPU reference of {@linkcode gemmWgsl} in float64 on plain arrays: the
 * executable specification (every element of C in range is written; with
 * `lowerC`, elements of tiles above the diagonal are left as they were).
 *
 * @param spec The specialization (tile size only matters with `lowerC`).
 * @param c C's storage; updated in place (A and B are read from it when aliased).
 * @param a A's storage, when separate.
 * @param b B's storage, when separate.
 * @param shape Sizes and placement.
 */
export function gemmReference(
  spec: GemmSpec,
  c: Float32Array | Float64Array,
  a: ArrayLike<number> | undefined,
  b: ArrayLike<number> | undefined,
  shape: GemmShape,
): void {
  const { m, n, k, lda, ldb, ldc, offA = 0, offB = 0, offC = 0, alpha = 1, beta = 1 } = shape;
  const A = spec.aInC ? c : a!;
  const B = spec.bInC ? c : b!;
  const { bm, bn } = tileOf(spec);
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let l = 0; l < k; l++) {
        const av = A[offA + (spec.transA ? l * lda + i : i * lda + l)]!;
        const bv = B[offB + (spec.transB ? j * ldb + l : l * ldb + j)]!;
        s += av * bv;
      }
      out[i * n + j] = s;
    }
  }
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      if (spec.lowerC && Math.floor(j / bn) * bn >= Math.floor(i / bm) * bm + bm) continue;
      const o = offC + i * ldc + j;
      c[o] = spec.accumulate ? beta * c[o]! + alpha * out[i * n + j]! : alpha * out[i * n + j]!;
    }
  }
}
