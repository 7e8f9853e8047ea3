/**
 * Fast Walsh–Hadamard transform of the rows of a matrix on the GPU, for
 * every order `core/fwht.ts` can plan, whatever the row length:
 * n = 2^k · m₁ ⋯ m_r. Each dense factor is one pass (the Paley kernel for
 * Paley I blocks over extension fields, a product with the m×m block through
 * the gemm kernel when it is the innermost axis, a strided kernel otherwise
 * or, one pass per tile of rows, when the block exceeds a storage binding);
 * the power-of-two part (H_{2^k} ⊗ I_{n/2^k}) is one more pass, scaling
 * when normalizing, by one of three butterfly kernels
 * ({@linkcode butterflySpec} picks one), or, when a row exceeds the
 * workgroup memory, a few passes ({@linkcode butterflyPasses}):
 *
 * - `lanes` (n = 2^k): one row per workgroup, 32 values per thread in
 *   registers, exchanges through swizzled workgroup memory;
 * - `columns` (2^k ≤ 32): a column per thread, no workgroup memory;
 * - `rows` (the rest): rows staged in workgroup memory.
 *
 * Their WGSL generators are in `fwht_butterfly_wgsl.ts`.
 *
 * Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { fwht, type FwhtOptions, fwhtPlan } from "../core/fwht.ts";
import {
  cachedPipeline,
  foldGroups,
  type Gpu,
  GpuBatch,
  storageBuffer,
  uploadBuffer,
} from "./backend.ts";
import { encodeGemm, gemmSpec } from "./gemm_kernel.ts";
import { encodePaley, type PaleyFactorPass, paleyFactorPass } from "./paley_kernel.ts";
import {
  butterflyWorkgroupBytes,
  type FwhtButterflySpec,
  fwhtColumnsWgsl,
  fwhtLanesWgsl,
  fwhtRowsWgsl,
} from "./fwht_butterfly_wgsl.ts";

function log2(x: number): number {
  return Math.round(Math.log2(x));
}

/**
 * The butterfly variant {@linkcode encodeFwht} uses for rows of length n
 * whose power-of-two part has order pow2 when a row fits the workgroup
 * memory, chosen by timing on an H100 (tests/bench/fwht_sweep.ts,
 * [4096, 4096] and [4096, 11008]): `columns` for a short butterfly
 * (pow2 ≤ 32; 4.7× the rows kernel at 32 × 344), `lanes` with 32 values per
 * thread, vec4 workgroup memory, out of place, 1024 persistent workgroups
 * that prefetch their next row, for n = pow2 ≥ 128 (at 4096, in one run:
 * 0.1422 ms; one workgroup per row 0.1458 ms, in place 0.1494 ms; the
 * previous rows kernel 0.357 ms), `rows` otherwise.
 */
function defaultButterfly(n: number, pow2: number): FwhtButterflySpec {
  if (pow2 <= 32) return { kind: "columns", n, pow2, width: 1 };
  if (n === pow2 && n >= 128) {
    // 2^eb values per thread with eb ≤ 5 and at least one warp of threads.
    const threads = Math.max(32, n / 32);
    // 1024 workgroups that each load their next row while transforming the current one
    // (up to 256 threads: the prefetched row takes 32 more registers per thread).
    const persistent = threads <= 256 ? 1024 : 0;
    return {
      kind: "lanes",
      n,
      threads,
      persistent,
      prefetch: persistent > 0,
      smemVec4: true,
      outOfPlace: true,
    };
  }
  return {
    kind: "rows",
    n,
    pow2,
    threads: 256,
    radix: 4,
    rowsPerGroup: 1,
    order: "desc",
    vec4: n === pow2,
    persistent: 0,
  };
}

/**
 * The single-pass butterfly variant for rows of length n whose power-of-two
 * part has order pow2 (see {@linkcode butterflyPasses} for rows of any length).
 *
 * @param gpu The GPU (its workgroup memory limit).
 * @param n Row length.
 * @param pow2 Order of the power-of-two part.
 * @returns The variant.
 * @throws {RangeError} when the variant needs a row in workgroup memory and a row does not fit.
 */
export function butterflySpec(gpu: Gpu, n: number, pow2: number): FwhtButterflySpec {
  const spec = defaultButterfly(n, pow2);
  const limit = gpu.limits.maxComputeWorkgroupStorageSize;
  if (butterflyWorkgroupBytes(spec) > limit) {
    throw new RangeError(
      `Cannot transform rows of length ${n} on the GPU: a row exceeds the workgroup memory of ${limit} bytes`,
    );
  }
  return spec;
}

/**
 * One pass of the power-of-two part: `spec` run on the rows seen as
 * [rows·outer, n/outer] (a row is contiguous, so its first axis of order
 * `outer` becomes rows).
 */
export interface FwhtButterflyPass {
  /** The variant, on rows of length `spec.n` = n/outer. */
  readonly spec: FwhtButterflySpec;
  /** How many rows of the pass make one row of the transform (a power of two). */
  readonly outer: number;
}

/**
 * Most stages of one `columns` pass of a split butterfly (64 values per
 * thread in registers, as the columns kernel allows).
 */
const COLUMN_STAGES = 6;

/** Whether a single-pass variant runs on `gpu` (workgroup memory and size). */
function fits(gpu: Gpu, spec: FwhtButterflySpec): boolean {
  const threads = spec.kind === "columns" ? 0 : spec.threads;
  return butterflyWorkgroupBytes(spec) <= gpu.limits.maxComputeWorkgroupStorageSize &&
    threads <= gpu.limits.maxComputeInvocationsPerWorkgroup;
}

/**
 * The passes that apply H_{pow2} ⊗ I_{n/pow2} to rows of length n: the
 * single pass of {@linkcode butterflySpec} when a row fits the workgroup
 * memory. Otherwise the butterfly stages (which commute) are split, with
 * pow2 = 2^k and the row seen as [2^(k−b), 2^b, n/pow2]:
 * I_{2^(k−b)} ⊗ H_{2^b} ⊗ I_{n/pow2} by the single-pass variant of rows of
 * length 2^b·n/pow2 (b as large as fits), then the k − b top stages by
 * `columns` passes of at most 6 stages each (strided butterflies in
 * registers, no workgroup memory); or all k stages by columns passes when
 * that takes no more passes. Every pass is one read and one write of the
 * matrix.
 *
 * @param gpu The GPU (its workgroup memory limit).
 * @param n Row length.
 * @param pow2 Order of the power-of-two part (a power of two dividing n).
 * @returns The passes, in the order {@linkcode encodeFwht} runs them.
 */
export function butterflyPasses(gpu: Gpu, n: number, pow2: number): FwhtButterflyPass[] {
  const whole = defaultButterfly(n, pow2);
  if (fits(gpu, whole)) return [{ spec: whole, outer: 1 }];
  // Here pow2 > 32 (a columns pass runs on any device), so k > 5.
  const k = log2(pow2), inner = n / pow2;
  // Stages lo … k − 1 in balanced columns passes, lowest stages first.
  const columns = (lo: number): FwhtButterflyPass[] => {
    const out: FwhtButterflyPass[] = [];
    const top = k - lo, count = Math.ceil(top / COLUMN_STAGES);
    for (let i = 0; i < count; i++) {
      const c = Math.floor(top / count) + (i < top % count ? 1 : 0);
      out.push({
        spec: { kind: "columns", n: inner * 2 ** (lo + c), pow2: 2 ** c, width: 1 },
        outer: 2 ** (k - lo - c),
      });
      lo += c;
    }
    return out;
  };
  let b = k - 1;
  while (b > COLUMN_STAGES && !fits(gpu, defaultButterfly(inner * 2 ** b, 2 ** b))) b--;
  if (
    b <= COLUMN_STAGES || 1 + Math.ceil((k - b) / COLUMN_STAGES) >= Math.ceil(k / COLUMN_STAGES)
  ) {
    // No single-pass kernel of more than 64 stages fits, or it saves no pass.
    return columns(0);
  }
  return [
    { spec: defaultButterfly(inner * 2 ** b, 2 ** b), outer: 2 ** (k - b) },
    ...columns(b),
  ];
}

/**
 * Records one butterfly pass (H_{pow2} ⊗ I_{n/pow2}) times `scale` on every
 * row of `x` [rows, n], in place or, for an `outOfPlace` variant, into `out`.
 *
 * @param batch The batch.
 * @param spec The variant (from {@linkcode butterflySpec}, or any valid one).
 * @param x Rows [rows, n] f32.
 * @param rows Rows.
 * @param scale Factor applied to every output.
 * @param out Output buffer of an `outOfPlace` variant (same size as `x`).
 * @returns The buffer that holds the result: `x`, or `out` for an `outOfPlace` variant.
 */
export function encodeButterfly(
  batch: GpuBatch,
  spec: FwhtButterflySpec,
  x: GPUBuffer,
  rows: number,
  scale: number,
  out?: GPUBuffer,
): GPUBuffer {
  const gpu = batch.gpu;
  const key = `fwht-${JSON.stringify(spec)}`;
  if (spec.kind === "columns") {
    const pipe = cachedPipeline(gpu, key, () => fwhtColumnsWgsl(spec));
    const threads = (rows * spec.n) / spec.pow2 / spec.width;
    batch.dispatch(pipe, [
      x,
      batch.uniform([{ u32: rows }, { f32: scale }, { u32: 0 }, { u32: 0 }]),
    ], foldGroups(gpu, Math.ceil(threads / 256)));
    return x;
  }
  const pipe = cachedPipeline(
    gpu,
    key,
    () => spec.kind === "rows" ? fwhtRowsWgsl(spec) : fwhtLanesWgsl(spec),
  );
  const blocks = spec.kind === "rows" ? Math.ceil(rows / spec.rowsPerGroup) : rows;
  const groups = spec.persistent > 0 ? Math.min(blocks, spec.persistent) : blocks;
  const params = batch.uniform([{ u32: rows }, { f32: scale }, { u32: blocks }, { u32: 0 }]);
  if (spec.kind === "lanes" && spec.outOfPlace) {
    if (out === undefined || out === x) {
      throw new RangeError("Cannot run an out-of-place butterfly without a separate 'out' buffer");
    }
    batch.dispatch(pipe, [x, params, out], foldGroups(gpu, groups));
    return out;
  }
  batch.dispatch(pipe, [x, params], foldGroups(gpu, groups));
  return x;
}

/**
 * WGSL of one dense factor along a strided axis, out of place:
 * y[o, i, t] = Σ_j B[i, j]·x[o, j, t] for rows seen as [·, m, stride].
 * Bindings: 0 = Y, 1 = X, 2 = B [m, m], 3 = parameters {total, m, stride}.
 * With `tiled`, B is the tile of rows i0 … i0 + mt − 1 (a block too large
 * for one binding) and only those outputs are written: parameters
 * {total, m, stride, i0, mt}, total counting the tile's outputs.
 *
 * @param tiled Whether B is a tile of rows.
 * @returns WGSL source.
 */
export function fwhtDenseWgsl(tiled = false): string {
  const index = tiled
    ? `let t = e % s; let il = (e / s) % prm.mt; let o = e / (s * prm.mt);
  let i = prm.i0 + il; let row = il * m; let dst = (o * m + i) * s + t;`
    : `let t = e % s; let i = (e / s) % m; let o = e / (s * m);
  let row = i * m; let dst = e;`;
  return `
struct Params { total: u32, m: u32, stride: u32, i0: u32, mt: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<storage, read_write> Y: array<f32>;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<uniform> prm: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * 256u;
  if (e >= prm.total) { return; }
  let s = prm.stride; let m = prm.m;
  ${index}
  let src = o * s * m + t;
  var acc = 0.0;
  for (var j = 0u; j < m; j++) { acc = fma(B[row + j], X[src + j * s], acc); }
  Y[dst] = acc;
}
`;
}

/**
 * A dense block uploaded as one buffer, or, when m²·4 bytes exceed a
 * storage binding, as tiles of consecutive rows (`i0`, `rows`) in buffers
 * of their own.
 */
interface BlockTile {
  buffer: GPUBuffer;
  i0: number;
  rows: number;
}

/** A transform prepared for one row length: plan and uploaded dense blocks. */
interface Prepared {
  n: number;
  pow2: number;
  normScale: number;
  dense: { m: number; tiles: BlockTile[]; paley: PaleyFactorPass | null }[];
  butterfly: FwhtButterflyPass[];
}

/**
 * Records H·row (or Hᵀ·row) for every row of `x` [rows, n] into `x` or
 * `scratch` (the returned one; the passes alternate between them, and the
 * other may be clobbered).
 *
 * @param batch The batch.
 * @param prepared From {@linkcode prepareFwht}.
 * @param x Input buffer [rows, n] f32 (may be clobbered).
 * @param scratch A second buffer of the same size.
 * @param rows Rows.
 * @param normalize Orthonormal scaling.
 * @returns The buffer that holds the result (`x` or `scratch`).
 */
export function encodeFwht(
  batch: GpuBatch,
  prepared: FwhtPrepared,
  x: GPUBuffer,
  scratch: GPUBuffer,
  rows: number,
  normalize: boolean,
): GPUBuffer {
  const p = prepared as unknown as Prepared;
  const gpu = batch.gpu;
  const n = p.n;
  let cur = x, other = scratch;
  // Dense factors, one out-of-place pass each (innermost through the gemm kernel).
  let inner = 1;
  for (const d of p.dense) inner *= d.m;
  let stride = inner;
  for (const d of p.dense) {
    stride /= d.m;
    if (d.paley !== null) {
      // Paley I over GF(p^k), k ≥ 2: its k-dimensional DFT (kernels/paley_kernel.ts); a pass
      // with spec.pow2 > 1 also runs the Sylvester part, and the transform is done.
      const fused = d.paley.spec.pow2 > 1, scale = fused && normalize ? p.normScale : 1;
      encodePaley(batch, d.paley.prepared, d.paley.spec, other, cur, (rows * n) / d.m, scale);
      if (fused) return other;
    } else if (stride === 1 && d.tiles.length === 1) {
      // Innermost axis: Y[rows·n/m, m] = X · Bᵀ.
      encodeGemm(
        batch,
        gemmSpec({ transB: true }),
        { c: other, a: cur, b: d.tiles[0]!.buffer },
        {
          m: (rows * n) / d.m,
          n: d.m,
          k: d.m,
          lda: d.m,
          ldb: d.m,
          ldc: d.m,
        },
      );
    } else if (d.tiles.length === 1) {
      const pipe = cachedPipeline(gpu, "fwht-dense", () => fwhtDenseWgsl());
      batch.dispatch(pipe, [
        other,
        cur,
        d.tiles[0]!.buffer,
        batch.uniform([
          { u32: rows * n },
          { u32: d.m },
          { u32: stride },
          { u32: 0 },
          { u32: d.m },
          { u32: 0 },
          { u32: 0 },
          { u32: 0 },
        ]),
      ], foldGroups(gpu, Math.ceil((rows * n) / 256)));
    } else {
      // A block larger than a binding: one pass per tile of its rows (outputs).
      const pipe = cachedPipeline(gpu, "fwht-dense-tiled", () => fwhtDenseWgsl(true));
      for (const tile of d.tiles) {
        const total = ((rows * n) / d.m) * tile.rows;
        batch.dispatch(pipe, [
          other,
          cur,
          tile.buffer,
          batch.uniform([
            { u32: total },
            { u32: d.m },
            { u32: stride },
            { u32: tile.i0 },
            { u32: tile.rows },
            { u32: 0 },
            { u32: 0 },
            { u32: 0 },
          ]),
        ], foldGroups(gpu, Math.ceil(total / 256)));
      }
    }
    [cur, other] = [other, cur];
  }
  // Power-of-two part, scaled once by its last pass (in place, or into the other buffer).
  const last = p.butterfly.length - 1;
  p.butterfly.forEach(({ spec, outer }, i) => {
    const scale = i === last && normalize ? p.normScale : 1;
    const res = encodeButterfly(batch, spec, cur, rows * outer, scale, other);
    if (res !== cur) [cur, other] = [other, cur];
  });
  return cur;
}

/** An opaque transform prepared by {@linkcode prepareFwht}. */
export interface FwhtPrepared {
  /** Row length. */
  readonly n: number;
}

/**
 * Uploads B (or Bᵀ) [m, m] as f32: one buffer, or tiles of rows when m²·4
 * bytes exceed `bytes` (a storage binding).
 */
function uploadBlock(
  gpu: Gpu,
  h: Float64Array,
  m: number,
  transpose: boolean,
  bytes: number,
): BlockTile[] {
  const tileRows = Math.max(1, Math.min(m, Math.floor(bytes / (4 * m))));
  const tiles: BlockTile[] = [];
  for (let i0 = 0; i0 < m; i0 += tileRows) {
    const rows = Math.min(tileRows, m - i0);
    const out = new Float32Array(rows * m);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < m; j++) {
        out[i * m + j] = transpose ? h[j * m + i0 + i]! : h[(i0 + i) * m + j]!;
      }
    }
    tiles.push({ buffer: uploadBuffer(gpu, out, "fwht-block"), i0, rows });
  }
  return tiles;
}

/** Options of {@linkcode prepareFwht}. */
export interface PrepareFwhtOptions {
  /**
   * Workgroup memory (bytes) a pass may use, at most the device's limit;
   * lower values make the kernels choose as on a device with less (tests use
   * it to run the split butterfly of long rows on short ones).
   * @default the device's `maxComputeWorkgroupStorageSize`
   */
  workgroupBytes?: number;
  /**
   * Bytes a dense block's buffer may hold, at most the device's binding
   * limit; a block larger than that is uploaded and applied in tiles of rows
   * (tests use it to run the tiles on small blocks).
   * @default the device's `maxStorageBufferBindingSize` (and `maxBufferSize`)
   */
  bindingBytes?: number;
}

/**
 * Plans the transform of rows of length n and uploads its dense blocks.
 *
 * @param gpu The GPU.
 * @param n Row length (a constructible Hadamard order; any length).
 * @param transpose Use Hᵀ (differs from H for Paley I blocks).
 * @param options See {@linkcode PrepareFwhtOptions}.
 * @returns The prepared transform.
 * @throws {RangeError} when n has no construction, or `workgroupBytes` or `bindingBytes` is not
 *   a positive integer.
 */
export function prepareFwht(
  gpu: Gpu,
  n: number,
  transpose = false,
  options: PrepareFwhtOptions = {},
): FwhtPrepared {
  const deviceBytes = gpu.limits.maxComputeWorkgroupStorageSize;
  const deviceBinding = Math.min(
    gpu.limits.maxStorageBufferBindingSize,
    gpu.limits.maxBufferSize,
  );
  const { workgroupBytes = deviceBytes, bindingBytes = deviceBinding } = options;
  for (const [name, v] of [["workgroupBytes", workgroupBytes], ["bindingBytes", bindingBytes]]) {
    if (!Number.isSafeInteger(v) || (v as number) < 1) {
      throw new RangeError(
        `Cannot prepare the transform as '${name}' must be a positive integer: current value is ${v}`,
      );
    }
  }
  // The kernel choices see at most `workgroupBytes` of workgroup memory.
  const view: Gpu = workgroupBytes >= deviceBytes ? gpu : {
    ...gpu,
    limits: new Proxy(gpu.limits, {
      get: (target, key) =>
        key === "maxComputeWorkgroupStorageSize" ? workgroupBytes : Reflect.get(target, key),
    }),
  };
  const plan = fwhtPlan(n);
  const prepared: Prepared = {
    butterfly: butterflyPasses(view, n, plan.pow2),
    n,
    pow2: plan.pow2,
    normScale: plan.normScale,
    dense: plan.dense.map((d, i) => {
      const paley = paleyFactorPass(view, plan, i, transpose);
      const bytes = Math.min(bindingBytes, deviceBinding);
      // The Paley kernel needs no block.
      const tiles = paley === null ? uploadBlock(gpu, d.h, d.m, transpose, bytes) : [];
      return { m: d.m, tiles, paley };
    }),
  };
  return prepared;
}

/**
 * The transform of every row of `x` [rows, n] (f32) on the GPU, in one submission.
 *
 * @param gpu The GPU.
 * @param x Rows to transform.
 * @param options `normalize` and `transpose` (no custom `block`); `maxTileRows` caps the
 *   rows uploaded per buffer (default: as many as the device's binding limit allows);
 *   `workgroupBytes` and `bindingBytes` as in {@linkcode PrepareFwhtOptions}.
 * @returns H·row for each row (f32) and the GPU seconds.
 */
export async function fwhtGpu(
  gpu: Gpu,
  x: Tensor<"f32">,
  options: {
    normalize?: boolean;
    transpose?: boolean;
    maxTileRows?: number;
  } & PrepareFwhtOptions = {},
): Promise<{ y: Tensor<"f32">; gpuSeconds: number }> {
  if (x.dtype !== "f32" || x.shape.length < 1) {
    throw new TypeError(
      `Cannot transform on the GPU as 'x' must be an f32 tensor: dtype ${x.dtype}`,
    );
  }
  const n = x.shape[x.shape.length - 1]!;
  const rows = n === 0 ? 0 : x.data.length / n;
  const prepared = prepareFwht(gpu, n, options.transpose ?? false, options);
  // Row tiles within the device's binding limit, all in one submission.
  const limit = Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
  const tileRows = Math.max(
    1,
    Math.min(rows, Math.floor(limit / (n * 4)), options.maxTileRows ?? rows),
  );
  const batch = new GpuBatch(gpu);
  const owned: GPUBuffer[] = [];
  const results: GPUBuffer[] = [];
  for (let r0 = 0; r0 < rows; r0 += tileRows) {
    const r1 = Math.min(rows, r0 + tileRows);
    const a = uploadBuffer(gpu, x.data.subarray(r0 * n, r1 * n), "fwht-x");
    const b = storageBuffer(gpu, (r1 - r0) * n * 4, "fwht-scratch");
    owned.push(a, b);
    results.push(encodeFwht(batch, prepared, a, b, r1 - r0, options.normalize ?? false));
  }
  const { data, gpuSeconds } = await batch.submit(results);
  for (const b of owned) b.destroy();
  for (const d of (prepared as unknown as Prepared).dense) {
    for (const t of d.tiles) t.buffer.destroy();
    d.paley?.prepared.multipliers.destroy();
  }
  const y = new Float32Array(rows * n);
  let offset = 0;
  for (const bytes of data) {
    const part = new Float32Array(bytes);
    y.set(part, offset);
    offset += part.length;
  }
  return { y: { dtype: "f32", shape: x.shape, data: y }, gpuSeconds };
}

/**
 * CPU reference of {@linkcode fwhtGpu}: `core/fwht.ts`'s transform.
 *
 * @param x Rows to transform.
 * @param options As for `fwht`.
 * @returns The transformed rows.
 */
export function fwhtReference(x: Tensor<"f32">, options: FwhtOptions = {}): Tensor<"f32"> {
  return fwht(x, options);
}
