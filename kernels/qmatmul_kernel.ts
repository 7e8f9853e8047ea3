/**
 * Low-bit matrix products y = x·Ŵᵀ for WebGPU, with Ŵ dequantized on the fly
 * from our "rowtile32" packed layout (`quantizers/pack.ts`): 2, 3, 4 and
 * 8-bit codes, per-group scales and zero points in f16 or f32 (or one common
 * zero point), any group layout (act-order weights arrive with contiguous
 * groups and a column map that gathers x), activations f32 or f16, f32
 * accumulation, y f32.
 *
 * One kernel family covers every batch size. Each thread owns one weight row
 * per 32-row tile (lanes of a 32-thread team own the 32 rows of a tile, which
 * store their chunks side by side, so a team's loads are contiguous), and
 * `batch` rows of x; the `warps` teams of a workgroup split the K chunks and
 * add their partial sums in workgroup memory at the end. Batch 1 is the GEMV
 * (`batch` 1, deep unrolling so several 16-byte loads are in flight); batch
 * 2–128 is the tiled path: each dequantized code feeds `batch` FMAs and the
 * x values are broadcast loads (every lane of a team reads the same
 * address), with larger batches split into tiles of `batch` rows.
 *
 * Dequantization costs one shift, one mask-and-or and one FMA per code: the
 * code is placed in the top mantissa bits of 1.0 (f = 1 + q/2^b, exact), and
 * ŵ = fma(f, s·2^b, −(s·z + s·2^b)) = s·(q − z).
 *
 * Activations that are f16, or that need the column map (act-order,
 * padding), go through a small gather pass into an f32 scratch [M, Kp] first.
 *
 * Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import {
  PACK_TILE,
  PACKED_BITS,
  packedChunkOffset,
  type PackedWeight,
} from "../quantizers/pack.ts";
import type { QuantizedWeight } from "../quantizers/quantized_weight.ts";
import { dequantize } from "../quantizers/dequantize.ts";
import { unpackBits } from "../quantizers/bitpack.ts";
import {
  type Backend,
  cachedPipeline,
  foldGroups,
  type Gpu,
  GpuBatch,
  resolveBackend,
  storageBuffer,
  uploadBuffer,
} from "./backend.ts";

/** Specialization of {@linkcode qmatmulWgsl}. */
export interface QmatmulSpec {
  /** Bits per code: 2, 3, 4 or 8. */
  readonly bits: number;
  /** Storage of scales and zero points. */
  readonly scaleType: "f16" | "f32";
  /** Per-group zero points are stored (else one common zero point, a uniform). */
  readonly zeros: boolean;
  /** 32-row tiles per workgroup (weight rows per thread): 1, 2 or 4. */
  readonly rowTiles: number;
  /** 32-thread teams splitting K (workgroup size 32·warps): 1, 2, 4, 8, 16 or 32. */
  readonly warps: number;
  /** Rows of x per thread (batch tile): 1–16. */
  readonly batch: number;
  /** Chunks loaded before they are used: 1, 2 or 4. */
  readonly unroll: number;
}

/** Specialization of {@linkcode qmatmulGatherWgsl}. */
export interface QmatmulGatherSpec {
  /** Storage of x. */
  readonly input: "f32" | "f16";
  /** Columns are read through the column map (else packed column j is column j). */
  readonly gather: boolean;
}

const WORDS_TYPE: Record<number, string> = {
  2: "vec2<u32>",
  3: "u32",
  4: "vec4<u32>",
  8: "vec4<u32>",
};

function checkSpec(spec: QmatmulSpec): void {
  const bad = (name: string, v: unknown, what: string): never => {
    throw new RangeError(
      `Cannot build a qmatmul kernel as '${name}' must be ${what}: current value is ${String(v)}`,
    );
  };
  if (!PACKED_BITS.includes(spec.bits)) bad("bits", spec.bits, "2, 3, 4 or 8");
  if (spec.scaleType !== "f16" && spec.scaleType !== "f32") {
    bad("scaleType", spec.scaleType, '"f16" or "f32"');
  }
  if (![1, 2, 4].includes(spec.rowTiles)) bad("rowTiles", spec.rowTiles, "1, 2 or 4");
  if (![1, 2, 4, 8, 16, 32].includes(spec.warps)) bad("warps", spec.warps, "1, 2, 4, 8, 16 or 32");
  if (!Number.isInteger(spec.batch) || spec.batch < 1 || spec.batch > 16) {
    bad("batch", spec.batch, "an integer in [1, 16]");
  }
  if (![1, 2, 4].includes(spec.unroll)) bad("unroll", spec.unroll, "1, 2 or 4");
}

/** Workgroup memory (bytes) a specialization needs for its cross-team sums. */
export function qmatmulWorkgroupBytes(spec: QmatmulSpec): number {
  return spec.warps > 1 ? (spec.warps / 2) * spec.rowTiles * spec.batch * PACK_TILE * 4 : 0;
}

/**
 * WGSL expression of code `i` of a chunk (words `w0…w{b−1}`) as the f32
 * 1 + q/2^b: the code's bits moved to mantissa bits [23−b, 23).
 */
function codeAsFloat(bits: number, i: number, word: (j: number) => string): string {
  const s = i * bits, j = s >>> 5, off = s & 31, target = 23 - bits;
  let moved: string;
  if (off + bits <= 32) {
    const shift = target - off;
    moved = shift > 0
      ? `(${word(j)} << ${shift}u)`
      : shift < 0
      ? `(${word(j)} >> ${-shift}u)`
      : word(j);
  } else {
    moved = `(((${word(j)} >> ${off}u) | (${word(j + 1)} << ${32 - off}u)) << ${target}u)`;
  }
  const mask = (((1 << bits) - 1) << target) >>> 0;
  return `bitcast<f32>((${moved} & ${mask}u) | 0x3f800000u)`;
}

/**
 * WGSL of the product for one specialization. Bindings: 0 = y (f32 [M, N],
 * read-write), 1 = x (f32 [M, Kp] as vec4s), 2 = code words, 3 = scales, then
 * 4 = zero points when `zeros`, then the uniform parameters
 * {M, N, Np, C, chunks per group, zero}.
 *
 * @param spec The specialization.
 * @returns WGSL source with entry point `main`.
 */
export function qmatmulWgsl(spec: QmatmulSpec): string {
  checkSpec(spec);
  const { bits, scaleType, zeros, rowTiles: R, warps: W, batch: BM, unroll: U } = spec;
  const T = PACK_TILE;
  // Independent partial sums per output, so the FMA chains overlap when a thread has few outputs.
  const P = BM * R >= 4 ? 1 : BM * R >= 2 ? 2 : 4;
  const meta = scaleType === "f16" ? "u32" : "f32";
  const metaAt = (buf: string, idx: string) =>
    scaleType === "f16"
      ? `unpack2x16float(${buf}[(${idx}) >> 1u])[(${idx}) & 1u]`
      : `${buf}[${idx}]`;
  const loadsPerChunk = bits === 8 ? 2 : 1;
  const wordsOfChunk = bits === 3 ? 3 : loadsPerChunk; // array elements per chunk
  const lines: string[] = [];
  const emit = (s: string) => lines.push(s);

  // Loads of U chunks (u) for each row tile (r): words w_u_r_j.
  const loadChunks = (count: number, indent: string) => {
    for (let u = 0; u < count; u++) {
      emit(`${indent}let c${u} = c + ${u * W}u;`);
      emit(`${indent}let g${u} = c${u} / p.cpg;`);
      for (let r = 0; r < R; r++) {
        emit(
          `${indent}let base${u}_${r} = ((tile0 + ${r}u) * p.C + c${u}) * ${
            T * wordsOfChunk
          }u + lane * ${wordsOfChunk}u;`,
        );
        if (bits === 3) {
          for (let j = 0; j < 3; j++) {
            emit(`${indent}let w${u}_${r}_${j} = Wq[base${u}_${r} + ${j}u];`);
          }
        } else if (bits === 2) {
          emit(`${indent}let v${u}_${r} = Wq[base${u}_${r}];`);
          emit(`${indent}let w${u}_${r}_0 = v${u}_${r}.x; let w${u}_${r}_1 = v${u}_${r}.y;`);
        } else {
          for (let l = 0; l < loadsPerChunk; l++) {
            emit(`${indent}let v${u}_${r}_${l} = Wq[base${u}_${r} + ${l}u];`);
            for (let j = 0; j < 4; j++) {
              emit(`${indent}let w${u}_${r}_${l * 4 + j} = v${u}_${r}_${l}.${"xyzw"[j]};`);
            }
          }
        }
        emit(`${indent}let mi${u}_${r} = g${u} * p.Np + n${r};`);
        emit(`${indent}let s${u}_${r} = ${metaAt("S", `mi${u}_${r}`)};`);
        emit(`${indent}let z${u}_${r} = ${zeros ? metaAt("Z", `mi${u}_${r}`) : "p.zero"};`);
        emit(`${indent}let sc${u}_${r} = s${u}_${r} * ${1 << bits}.0;`);
        emit(`${indent}let of${u}_${r} = -fma(s${u}_${r}, z${u}_${r}, sc${u}_${r});`);
      }
    }
  };
  // Dot products of U loaded chunks with x.
  const compute = (count: number, indent: string) => {
    for (let u = 0; u < count; u++) {
      for (let i4 = 0; i4 < T / 4; i4++) {
        for (let m = 0; m < BM; m++) {
          emit(`${indent}let x${u}_${i4}_${m} = X[xr${m} + c${u} * ${T / 4}u + ${i4}u];`);
        }
        for (let r = 0; r < R; r++) {
          for (let e = 0; e < 4; e++) {
            const i = i4 * 4 + e;
            const f = codeAsFloat(bits, i, (j) => `w${u}_${r}_${j}`);
            emit(`${indent}{ let q = fma(${f}, sc${u}_${r}, of${u}_${r});`);
            for (let m = 0; m < BM; m++) {
              const acc = `a${r}_${m}_${i % P}`;
              emit(`${indent}  ${acc} = fma(q, x${u}_${i4}_${m}.${"xyzw"[e]}, ${acc});`);
            }
            emit(`${indent}}`);
          }
        }
      }
    }
  };

  emit(
    `struct Params { M: u32, N: u32, Np: u32, C: u32, cpg: u32, zero: f32, pad0: u32, pad1: u32 }`,
  );
  emit(`@group(0) @binding(0) var<storage, read_write> Y: array<f32>;`);
  emit(`@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;`);
  emit(`@group(0) @binding(2) var<storage, read> Wq: array<${WORDS_TYPE[bits]}>;`);
  emit(`@group(0) @binding(3) var<storage, read> S: array<${meta}>;`);
  if (zeros) emit(`@group(0) @binding(4) var<storage, read> Z: array<${meta}>;`);
  emit(`@group(0) @binding(${zeros ? 5 : 4}) var<uniform> p: Params;`);
  if (W > 1) emit(`var<workgroup> red: array<f32, ${(W / 2) * R * BM * T}>;`);
  emit(`@compute @workgroup_size(${W * T})`);
  emit(`fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) t: u32) {`);
  emit(`  let lane = t % ${T}u;`);
  emit(`  let warp = t / ${T}u;`);
  emit(`  let tile0 = wg.x * ${R}u;`);
  emit(`  let m0 = wg.y * ${BM}u;`);
  for (let r = 0; r < R; r++) emit(`  let n${r} = (tile0 + ${r}u) * ${T}u + lane;`);
  for (let m = 0; m < BM; m++) {
    emit(`  let xr${m} = min(m0 + ${m}u, p.M - 1u) * p.C * ${T / 4}u;`);
  }
  for (let r = 0; r < R; r++) {
    for (let m = 0; m < BM; m++) {
      for (let q = 0; q < P; q++) emit(`  var a${r}_${m}_${q} = 0.0;`);
    }
  }
  emit(`  var c = warp;`);
  if (U > 1) {
    emit(`  for (; c + ${(U - 1) * W}u < p.C; c += ${U * W}u) {`);
    loadChunks(U, "    ");
    compute(U, "    ");
    emit(`  }`);
  }
  emit(`  for (; c < p.C; c += ${W}u) {`);
  loadChunks(1, "    ");
  compute(1, "    ");
  emit(`  }`);
  for (let r = 0; r < R; r++) {
    for (let m = 0; m < BM; m++) {
      const parts = Array.from({ length: P }, (_, q) => `a${r}_${m}_${q}`);
      emit(`  var a${r}_${m} = ${parts.join(" + ")};`);
    }
  }
  // Tree reduction over the teams: the upper half hands its sums to the lower half.
  const per = R * BM * T;
  for (let h = W / 2; h >= 1; h /= 2) {
    emit(`  if (warp >= ${h}u && warp < ${2 * h}u) {`);
    for (let r = 0; r < R; r++) {
      for (let m = 0; m < BM; m++) {
        emit(`    red[(warp - ${h}u) * ${per}u + ${(r * BM + m) * T}u + lane] = a${r}_${m};`);
      }
    }
    emit(`  }`);
    emit(`  workgroupBarrier();`);
    emit(`  if (warp < ${h}u) {`);
    for (let r = 0; r < R; r++) {
      for (let m = 0; m < BM; m++) {
        emit(`    a${r}_${m} += red[warp * ${per}u + ${(r * BM + m) * T}u + lane];`);
      }
    }
    emit(`  }`);
    if (h > 1) emit(`  workgroupBarrier();`);
  }
  emit(`  if (warp == 0u) {`);
  for (let r = 0; r < R; r++) {
    for (let m = 0; m < BM; m++) {
      emit(
        `    if (m0 + ${m}u < p.M && n${r} < p.N) { Y[(m0 + ${m}u) * p.N + n${r}] = a${r}_${m}; }`,
      );
    }
  }
  emit(`  }`);
  emit(`}`);
  return lines.join("\n") + "\n";
}

/**
 * WGSL of the gather pass xp[m, j] = x[m, colIdx[j]] (0 where colIdx[j] < 0),
 * converting f16 activations (read as u32 pairs, so no `shader-f16` is needed)
 * to f32. Bindings: 0 = xp (f32 [M, Kp]), 1 = x, 2 = colIdx when `gather`,
 * then the uniform parameters {M, K, Kp, groupsX}.
 *
 * @param spec The specialization.
 * @returns WGSL source with entry point `main`.
 */
export function qmatmulGatherWgsl(spec: QmatmulGatherSpec): string {
  const { input, gather } = spec;
  const read = input === "f16" ? "unpack2x16float(X[i >> 1u])[i & 1u]" : "X[i]";
  return `struct Params { M: u32, K: u32, Kp: u32, groupsX: u32 }
@group(0) @binding(0) var<storage, read_write> XP: array<f32>;
@group(0) @binding(1) var<storage, read> X: array<${input === "f16" ? "u32" : "f32"}>;
${gather ? "@group(0) @binding(2) var<storage, read> colIdx: array<i32>;" : ""}
@group(0) @binding(${gather ? 3 : 2}) var<uniform> p: Params;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) t: u32) {
  let e = (wg.x + wg.y * p.groupsX) * 256u + t;
  if (e >= p.M * p.Kp) { return; }
  let m = e / p.Kp;
  let j = e % p.Kp;
  let k = ${gather ? "colIdx[j]" : "i32(j)"};
  var v = 0.0;
  if (k >= 0) { let i = m * p.K + u32(k); v = ${read}; }
  XP[e] = v;
}
`;
}

/** A packed weight resident on the GPU (see {@linkcode uploadPackedWeight}). */
export interface GpuPackedWeight {
  /** The packed weight's description (its arrays are not read again). */
  readonly packed: PackedWeight;
  /** Code words. */
  readonly words: GPUBuffer;
  /** Scales (f16 pairs or f32). */
  readonly scales: GPUBuffer;
  /** Zero points, when stored per group. */
  readonly zeros: GPUBuffer | null;
  /** The column map, when not the identity. */
  readonly colIdx: GPUBuffer | null;
}

/**
 * Uploads a packed weight's arrays into GPU buffers.
 *
 * @param gpu The GPU.
 * @param packed The packed weight.
 * @returns The resident weight (destroy it with {@linkcode destroyPackedWeight}).
 */
export function uploadPackedWeight(gpu: Gpu, packed: PackedWeight): GpuPackedWeight {
  if (packed?.kind !== "packed" || packed.format !== "rowtile32") {
    throw new TypeError('Cannot upload weights: not a "rowtile32" packed weight');
  }
  return {
    packed,
    words: uploadBuffer(gpu, packed.words, "qmatmul-words"),
    scales: uploadBuffer(gpu, packed.scales, "qmatmul-scales"),
    zeros: packed.zeros ? uploadBuffer(gpu, packed.zeros, "qmatmul-zeros") : null,
    colIdx: packed.colIdx ? uploadBuffer(gpu, packed.colIdx, "qmatmul-colidx") : null,
  };
}

/**
 * Frees the buffers of a resident packed weight.
 *
 * @param w The resident weight.
 */
export function destroyPackedWeight(w: GpuPackedWeight): void {
  w.words.destroy();
  w.scales.destroy();
  w.zeros?.destroy();
  w.colIdx?.destroy();
}

/** Whether x must go through the gather pass (f16, or a column map). */
export function qmatmulNeedsGather(packed: PackedWeight, input: "f32" | "f16"): boolean {
  return input === "f16" || packed.colIdx !== null;
}

/**
 * The default specialization for a packed weight and a batch size, from the
 * winners of the neighbour search in tests/bench/qmatmul_gpu.ts on an H100
 * (run-to-run noise there is about ±20%).
 *
 * - Batch 1 (GEMV): one weight row and one x row per thread, two chunks in
 *   flight, teams splitting K until about 8192 teams run (small N needs deep
 *   K splits to fill the GPU).
 * - Batch 2–8: all x rows in each thread (every dequantized code feeds M
 *   FMAs), about 6144 teams.
 * - Larger batches: tiles of at most 8 x rows, 4 weight rows per thread when
 *   that leaves at least 256 workgroups, else 2 (each x load feeds several
 *   weight rows); about 2048 teams up to batch 16, 5120 beyond (nearest power
 *   of two).
 *
 * Teams are a power of two, at most 32, at most half the chunks, and their
 * partial sums fit 32 KiB of workgroup memory.
 *
 * @param packed The packed weight.
 * @param m Rows of x.
 * @returns The specialization.
 */
export function qmatmulSpec(packed: PackedWeight, m: number): QmatmulSpec {
  const common = {
    bits: packed.bits,
    scaleType: packed.scaleType,
    zeros: packed.zeros !== null,
  };
  const tiles = packed.paddedRows / PACK_TILE, chunks = packed.paddedCols / PACK_TILE;
  const workgroupsOf = (r: number, b: number) => Math.ceil(tiles / r) * Math.ceil(m / b);
  let batch: number, rowTiles: number, unroll: number, teams: number;
  if (m <= 8) {
    batch = Math.max(1, m);
    rowTiles = 1;
    unroll = 2;
    teams = (m <= 1 ? 8192 : 6144) / workgroupsOf(1, batch);
  } else {
    batch = Math.ceil(m / Math.ceil(m / 8));
    rowTiles = tiles >= 4 && workgroupsOf(4, batch) >= 256 ? 4 : tiles >= 2 ? 2 : 1;
    unroll = 1;
    teams = 2 ** Math.round(Math.log2((m <= 16 ? 2048 : 5120) / workgroupsOf(rowTiles, batch)));
  }
  const bound = Math.min(32, teams, chunks / 2, 512 / (rowTiles * batch));
  let warps = 1;
  while (warps * 2 <= bound) warps *= 2;
  return { ...common, rowTiles, warps, batch, unroll };
}

/** Operands of {@linkcode encodeQmatmul}. */
export interface QmatmulOperands {
  /** x, [M, K] row-major, f32 or f16 (f16 as 2-byte values). */
  readonly x: GPUBuffer;
  /** Storage type of x. */
  readonly input: "f32" | "f16";
  /** Rows of x. */
  readonly m: number;
  /** y, f32 [M, N]. */
  readonly y: GPUBuffer;
  /** f32 scratch of at least M·Kp values, needed when {@linkcode qmatmulNeedsGather}. */
  readonly scratch?: GPUBuffer;
}

/**
 * Records y = x·Ŵᵀ into a batch (the gather pass first when needed).
 *
 * @param batch The batch to record into.
 * @param w The resident packed weight.
 * @param ops x, y, the batch size and the scratch buffer.
 * @param variant Overrides of the default specialization ({@linkcode qmatmulSpec}).
 */
export function encodeQmatmul(
  batch: GpuBatch,
  w: GpuPackedWeight,
  ops: QmatmulOperands,
  variant: Partial<Omit<QmatmulSpec, "bits" | "scaleType" | "zeros">> = {},
): void {
  const { packed } = w;
  const [N, K] = packed.shape;
  const { m, input } = ops;
  if (!Number.isInteger(m) || m < 1) {
    throw new RangeError(
      `Cannot encode qmatmul as 'm' must be a positive integer: current value is ${m}`,
    );
  }
  if (input !== "f32" && input !== "f16") {
    throw new RangeError(
      `Cannot encode qmatmul as 'input' must be "f32" or "f16": current value is ${String(input)}`,
    );
  }
  const Kp = packed.paddedCols, C = Kp / PACK_TILE;
  const xBytes = m * K * (input === "f16" ? 2 : 4);
  if (ops.x.size < xBytes || ops.y.size < m * N * 4) {
    throw new RangeError(
      `Cannot encode qmatmul: x (${ops.x.size} bytes) or y (${ops.y.size} bytes) is smaller than [${m}, ${K}] ${input} or [${m}, ${N}] f32`,
    );
  }
  const spec: QmatmulSpec = { ...qmatmulSpec(packed, m), ...variant };
  checkSpec(spec);
  const gpu = batch.gpu;
  const wgBytes = qmatmulWorkgroupBytes(spec);
  if (
    wgBytes > gpu.limits.maxComputeWorkgroupStorageSize ||
    spec.warps * PACK_TILE > gpu.limits.maxComputeInvocationsPerWorkgroup
  ) {
    throw new RangeError(
      `Cannot encode qmatmul: ${
        JSON.stringify(spec)
      } needs ${wgBytes} bytes of workgroup memory and ${
        spec.warps * PACK_TILE
      } invocations, beyond the device's limits`,
    );
  }
  let x = ops.x;
  if (qmatmulNeedsGather(packed, input)) {
    if (!ops.scratch || ops.scratch.size < m * Kp * 4) {
      throw new RangeError(
        `Cannot encode qmatmul: a scratch buffer of ${
          m * Kp * 4
        } bytes is needed (f16 input or a column map)`,
      );
    }
    const gspec: QmatmulGatherSpec = { input, gather: packed.colIdx !== null };
    const gather = cachedPipeline(
      gpu,
      `qmatmul-gather:${JSON.stringify(gspec)}`,
      () => qmatmulGatherWgsl(gspec),
    );
    const [gx, gy] = foldGroups(gpu, Math.ceil((m * Kp) / 256));
    const res: (GPUBuffer | GPUBufferBinding)[] = [ops.scratch, ops.x];
    if (w.colIdx) res.push(w.colIdx);
    res.push(batch.uniform([{ u32: m }, { u32: K }, { u32: Kp }, { u32: gx }]));
    batch.dispatch(gather, res, [gx, gy]);
    x = ops.scratch;
  }
  const key = `qmatmul:${JSON.stringify(spec)}`;
  const pipeline = cachedPipeline(gpu, key, () => qmatmulWgsl(spec));
  const res: (GPUBuffer | GPUBufferBinding)[] = [ops.y, x, w.words, w.scales];
  if (spec.zeros) {
    if (!w.zeros) {
      throw new TypeError(
        "Cannot encode qmatmul: the specialization reads zero points the weight lacks",
      );
    }
    res.push(w.zeros);
  }
  res.push(batch.uniform([
    { u32: m },
    { u32: N },
    { u32: packed.paddedRows },
    { u32: C },
    { u32: packed.groupStride / PACK_TILE },
    { f32: packed.zero },
    { u32: 0 },
    { u32: 0 },
  ]));
  const groupsX = packed.paddedRows / PACK_TILE / spec.rowTiles;
  batch.dispatch(pipeline, res, [Math.ceil(groupsX), Math.ceil(m / spec.batch)]);
}

/** Options of {@linkcode qmatmul}. */
export interface QmatmulOptions {
  /** Where to run ("auto": WebGPU on a hardware adapter, else the CPU reference). @default "auto" */
  backend?: Backend;
  /** Overrides of the kernel specialization (tuning). @default {} */
  variant?: Partial<Omit<QmatmulSpec, "bits" | "scaleType" | "zeros">>;
}

function xShape(x: Tensor, k: number): number {
  if (x?.dtype !== "f32" && x?.dtype !== "f16") {
    throw new TypeError(
      `Cannot multiply as 'x' must be an f32 or f16 tensor: its dtype is ${String(x?.dtype)}`,
    );
  }
  const [m, kk] = x.shape.length === 1 ? [1, x.shape[0]] : x.shape;
  if (x.shape.length > 2 || kk !== k) {
    throw new RangeError(`Cannot multiply as 'x' must be [M, ${k}] or [${k}]: it is [${x.shape}]`);
  }
  return m!;
}

/**
 * y = x·Ŵᵀ for a packed low-bit weight, dequantized on the fly.
 *
 * @example
 * ```ts
 * import { qmatmul } from "./qmatmul_kernel.ts";
 * import { packWeights } from "../quantizers/pack.ts";
 * import { rtn } from "../quantizers/rtn.ts";
 * import { tensor } from "../core/tensor.ts";
 * const w = tensor("f32", [3, 64], new Float32Array(192).map((_, i) => Math.cos(i)));
 * const packed = packWeights(await rtn(w, { bits: 4, groupSize: 32 }));
 * const x = tensor("f32", [2, 64], new Float32Array(128).fill(1));
 * const y = await qmatmul(x, packed, { backend: "cpu" });
 * console.assert(y.shape.join() === "2,3");
 * ```
 * @param x Activations, f32 or f16 [M, K] (or [K]).
 * @param packed The packed weight (or one already resident on the GPU, which the WebGPU path uses as is).
 * @param options Backend and kernel variant.
 * @returns y, f32 [M, N].
 */
export async function qmatmul(
  x: Tensor<"f32"> | Tensor<"f16">,
  packed: PackedWeight | GpuPackedWeight,
  options: QmatmulOptions = {},
): Promise<Tensor<"f32">> {
  const { backend = "auto", variant = {} } = options;
  const resident = "words" in packed && "packed" in packed ? packed : null;
  const p = resident ? resident.packed : packed as PackedWeight;
  if (p?.kind !== "packed" || p.format !== "rowtile32") {
    throw new TypeError("Cannot multiply as 'packed' is not a \"rowtile32\" packed weight");
  }
  const [N, K] = p.shape;
  const m = xShape(x, K);
  const gpu = await resolveBackend(backend, "qmatmul");
  if (gpu === null) return qmatmulReference(x, p);
  const w = resident ?? uploadPackedWeight(gpu, p);
  const input = x.dtype;
  const xb = uploadBuffer(gpu, x.data, "qmatmul-x");
  const y = storageBuffer(gpu, m * N * 4, "qmatmul-y");
  const scratch = qmatmulNeedsGather(p, input)
    ? storageBuffer(gpu, m * p.paddedCols * 4, "qmatmul-xp")
    : undefined;
  try {
    const batch = new GpuBatch(gpu);
    encodeQmatmul(
      batch,
      w,
      scratch ? { x: xb, input, m, y, scratch } : { x: xb, input, m, y },
      variant,
    );
    const { data } = await batch.submit([y]);
    return { dtype: "f32", shape: [m, N], data: new Float32Array(data[0]!) };
  } finally {
    xb.destroy();
    y.destroy();
    scratch?.destroy();
    if (!resident) destroyPackedWeight(w);
  }
}

/**
 * CPU reference of the kernel, the executable specification of the packed
 * layout: y[m, n] = Σ_j Ŵ(n, j)·x[m, colIdx[j]] in float64, decoding the
 * chunks, tiles, groups and column map as the module docs of
 * `quantizers/pack.ts` describe.
 *
 * @param x Activations, f32 or f16 [M, K] (or [K]).
 * @param p The packed weight.
 * @returns y, f32 [M, N].
 */
export function qmatmulReference(x: Tensor<"f32"> | Tensor<"f16">, p: PackedWeight): Tensor<"f32"> {
  const [N, K] = p.shape;
  const M = xShape(x, K);
  const { bits, groupStride: Gp, paddedRows: Np, paddedCols: Kp } = p;
  const C = Kp / PACK_TILE;
  const src = p.colIdx ?? Int32Array.from({ length: Kp }, (_, j) => j);
  const w = new Float64Array(Kp);
  const y = new Float32Array(M * N);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const o = packedChunkOffset(n, c, C, bits);
      const codes = unpackBits(p.words.subarray(o, o + bits), bits, PACK_TILE);
      const g = Math.floor((c * PACK_TILE) / Gp);
      const s = p.scales[g * Np + n]!, z = p.zeros ? p.zeros[g * Np + n]! : p.zero;
      for (let i = 0; i < PACK_TILE; i++) w[c * PACK_TILE + i] = s * (codes[i]! - z);
    }
    for (let m = 0; m < M; m++) {
      let acc = 0;
      for (let j = 0; j < Kp; j++) {
        const k = src[j]!;
        if (k >= 0) acc += w[j]! * x.data[m * K + k]!;
      }
      y[m * N + n] = acc;
    }
  }
  return { dtype: "f32", shape: [M, N], data: y };
}

/**
 * Dense-dequantize reference: y = x·dequantize(q)ᵀ in float64, from the
 * unpacked quantized weight (independent of the packed layout).
 *
 * @param x Activations, f32 or f16 [M, K] (or [K]).
 * @param q The quantized weight.
 * @returns y, f32 [M, N].
 */
export function qmatmulDenseReference(
  x: Tensor<"f32"> | Tensor<"f16">,
  q: QuantizedWeight,
): Tensor<"f32"> {
  const [N, K] = q.shape;
  const M = xShape(x, K);
  const w = dequantize(q).data;
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += w[n * K + k]! * x.data[m * K + k]!;
      y[m * N + n] = acc;
    }
  }
  return { dtype: "f32", shape: [M, N], data: y };
}
