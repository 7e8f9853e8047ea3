/**
 * The qmatmul kernel as it was before the step/prefetch/staged-x rewrite
 * (commit d0a4bd3), kept only as the same-run baseline of
 * tests/bench/qmatmul_sweep.ts: its WGSL generator, its default
 * specialization and its dispatch. Not part of the library.
 *
 * @module
 */

import { PACK_TILE, PACKED_BITS, type PackedWeight } from "../../quantizers/pack.ts";
import { cachedPipeline, type Gpu } from "../../kernels/backend.ts";
import type { GpuPackedWeight, QmatmulDispatch } from "../../kernels/qmatmul_kernel.ts";

/** Specialization of {@linkcode qmatmulWgsl}. */
export interface LegacySpec {
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

const WORDS_TYPE: Record<number, string> = {
  2: "vec2<u32>",
  3: "u32",
  4: "vec4<u32>",
  8: "vec4<u32>",
};

function checkSpec(spec: LegacySpec): void {
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
function legacyWorkgroupBytes(spec: LegacySpec): number {
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
export function legacyWgsl(spec: LegacySpec): string {
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
export function legacySpec(packed: PackedWeight, m: number): LegacySpec {
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

/**
 * The legacy kernel's dispatch of y = x·Ŵᵀ (f32 x, identity column map).
 *
 * @param gpu The GPU.
 * @param w The resident weight.
 * @param x x, f32 [m, K].
 * @param y y, f32 [m, N].
 * @param m Rows of x.
 * @returns Pipeline, bindings, uniform block and workgroup counts.
 */
export function legacyDispatch(
  gpu: Gpu,
  w: GpuPackedWeight,
  x: GPUBuffer,
  y: GPUBuffer,
  m: number,
): QmatmulDispatch {
  const { packed } = w;
  const spec = legacySpec(packed, m);
  if (legacyWorkgroupBytes(spec) > gpu.limits.maxComputeWorkgroupStorageSize) {
    throw new RangeError("legacy kernel: workgroup memory");
  }
  const pipeline = cachedPipeline(
    gpu,
    `qmatmul-legacy:${JSON.stringify(spec)}`,
    () => legacyWgsl(spec),
  );
  const resources = [y, x, w.words, w.scales];
  if (spec.zeros) resources.push(w.zeros!);
  return {
    pipeline,
    resources,
    uniform: [
      { u32: m },
      { u32: packed.shape[0] },
      { u32: packed.paddedRows },
      { u32: packed.paddedCols / PACK_TILE },
      { u32: packed.groupStride / PACK_TILE },
      { f32: packed.zero },
      { u32: 0 },
      { u32: 0 },
    ],
    groups: [Math.ceil(packed.paddedRows / PACK_TILE / spec.rowTiles), Math.ceil(m / spec.batch)],
  };
}
