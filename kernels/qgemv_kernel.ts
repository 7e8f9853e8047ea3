/**
 * The one-row product y (+)= x·Ŵᵀ of token generation on WebGPU, reading the
 * "rowtile32" packed layout (`packed_layout.ts`) that `qmatmul` reads, for
 * weights without a column map (groups contiguous and in order, Kp = K).
 *
 * `qmatmul`'s few-row kernels give each lane of a 32-thread team one weight
 * row and let teams split K, so that x is read with broadcast loads. At one
 * row of x and Llama-3.2-1B widths they take 8–11 µs for 2–8 MB of codes
 * (README, "packed low-bit matmul"), where the f16 matrix-vector product of
 * `models/_gpu_gemv.ts` moves its bytes at about 2.3 TB/s after ~3.6 µs.
 * This kernel works like that one: a team of `lanes` threads owns `rows`
 * adjacent weight rows (one thread loads their chunk's `rows`·b contiguous
 * words: 32 bytes at 4 bits and 2 rows), the lanes stride along K one 32-code
 * chunk at a time (`unroll` chunks' loads issued before their products),
 * each lane reads its chunk's 32 values of x once for all its rows, and the
 * team adds its lanes' sums in workgroup memory. A workgroup is `teams` such
 * teams. Dequantization is `qmatmul`'s "fma" one (the code moved into the
 * mantissa of 1.0, then one FMA to s·(q − z), one FMA per x value).
 *
 * The SwiGLU epilogue reads the weight whose 32-row tiles alternate gate and
 * up rows (as `QmatmulSpec.swiglu`): the first half of a workgroup's teams
 * own gate rows, the second half the same rows of the next tile, and y[j] =
 * silu(gate_j)·up_j.
 *
 * CPU reference: `qmatmulReference` (the product is the same function of
 * the same layout; only the order of the f32 sums differs). Web-standard only.
 *
 * @module
 */

import { PACK_TILE, type PackedWeight } from "./packed_layout.ts";
import { cachedPipeline, foldGroups, type Gpu, type GpuBatch } from "./backend.ts";
import { codeAsFloat } from "./_qmatmul_codes.ts";
import type { GpuPackedWeight } from "./qmatmul_kernel.ts";

/** Specialization of {@linkcode qgemvWgsl}. */
export interface QgemvSpec {
  /** Bits per code: 2, 3, 4 or 8. */
  readonly bits: number;
  /** Storage of scales and zero points. */
  readonly scaleType: "f16" | "f32";
  /** Per-group zero points are stored (else the common one, a uniform). */
  readonly zeros: boolean;
  /** Chunks of 32 columns per row (K/32). */
  readonly chunks: number;
  /** Chunks per group; divides `chunks`. */
  readonly groupChunks: number;
  /** Threads per team, striding along K: 4, 8, 16, 32 or 64. */
  readonly lanes: number;
  /** Adjacent weight rows per team (and per thread): 1, 2, 4 or 8. */
  readonly rows: number;
  /** Teams per workgroup (lanes·teams ≤ 256; even with `swiglu`). */
  readonly teams: number;
  /** Chunks per lane whose loads are issued before their products: 1, 2, 4 or 8. */
  readonly unroll: number;
  /** y += x·Ŵᵀ. @default false */
  readonly accumulate?: boolean;
  /**
   * SwiGLU epilogue over gate/up tiles that alternate (see the module docs):
   * y has N/2 columns. Needs `teams` even and teams·rows/2 dividing 32. @default false
   */
  readonly swiglu?: boolean;
}

/** Threads per workgroup at most. */
const MAX_THREADS = 256;

/**
 * Throws a `RangeError` naming the first invalid field of a specialization.
 *
 * @param spec The specialization.
 */
export function checkQgemvSpec(spec: QgemvSpec): void {
  const bad = (name: string, value: unknown, want: string) => {
    throw new RangeError(
      `Cannot generate qgemv as '${name}' must be ${want}: current value is ${value}`,
    );
  };
  const { bits, chunks, groupChunks, lanes, rows, teams, unroll } = spec;
  if (![2, 3, 4, 8].includes(bits)) bad("bits", bits, "2, 3, 4 or 8");
  if (spec.scaleType !== "f16" && spec.scaleType !== "f32") {
    bad("scaleType", spec.scaleType, '"f16" or "f32"');
  }
  if (!Number.isInteger(chunks) || chunks < 1) bad("chunks", chunks, "a positive integer");
  if (!Number.isInteger(groupChunks) || groupChunks < 1 || chunks % groupChunks !== 0) {
    bad("groupChunks", groupChunks, `a positive divisor of chunks (${chunks})`);
  }
  if (![4, 8, 16, 32, 64].includes(lanes)) bad("lanes", lanes, "4, 8, 16, 32 or 64");
  if (![1, 2, 4, 8].includes(rows) || rows > lanes) {
    bad("rows", rows, "1, 2, 4 or 8, at most lanes");
  }
  if (!Number.isInteger(teams) || teams < 1 || lanes * teams > MAX_THREADS) {
    bad("teams", teams, `a positive integer with lanes·teams ≤ ${MAX_THREADS}`);
  }
  if (![1, 2, 4, 8].includes(unroll)) bad("unroll", unroll, "1, 2, 4 or 8");
  if (spec.swiglu) {
    const half = (teams * rows) / 2;
    if (spec.accumulate || teams % 2 !== 0 || PACK_TILE % half !== 0) {
      bad(
        "swiglu",
        spec.swiglu,
        "false unless teams is even, teams·rows/2 divides 32 and the product does not accumulate",
      );
    }
  }
}

/** Rows of the weight a workgroup owns. */
function rowsPerWorkgroup(spec: QgemvSpec): number {
  return spec.teams * spec.rows;
}

/**
 * WGSL of y[n] (+)= Σ_j Ŵ(n, j)·x[j] for one row of x (see the module docs).
 * Bindings: 0 = y (f32, read-write), 1 = x (f32 [K] as chunks of 8 vec4s),
 * 2 = code words (vec4s where a thread's words of a chunk are a multiple of
 * 4, else u32), 3 = scales, then 4 = zero points when `zeros`, then the
 * uniform parameters {N, Np, zero, groups}.
 *
 * @param spec The specialization.
 * @returns WGSL source with entry point `main`.
 */
export function qgemvWgsl(spec: QgemvSpec): string {
  checkQgemvSpec(spec);
  const { bits: b, scaleType, zeros, chunks: C, groupChunks: CPG, lanes: L, rows: R } = spec;
  const { teams: TM, unroll: U } = spec;
  const WG = L * TM, T = PACK_TILE;
  const swiglu = spec.swiglu === true;
  const words = R * b; // words a thread loads per chunk (its rows' chunks are adjacent)
  const vec = words % 4 === 0;
  const P = R >= 4 ? 1 : 2; // partial sums per row, so that FMA chains overlap
  const xs = "xyzw";
  const lines: string[] = [];
  const emit = (s: string) => lines.push(s);
  const meta = scaleType === "f16" ? "u32" : "f32";
  emit(`struct Params { N: u32, Np: u32, zero: f32, groups: u32 }`);
  emit(`@group(0) @binding(0) var<storage, read_write> Y: array<f32>;`);
  emit(`@group(0) @binding(1) var<storage, read> X: array<array<vec4<f32>, 8>>;`);
  emit(`@group(0) @binding(2) var<storage, read> Wq: array<${vec ? "vec4<u32>" : "u32"}>;`);
  emit(`@group(0) @binding(3) var<storage, read> S: array<${meta}>;`);
  if (zeros) emit(`@group(0) @binding(4) var<storage, read> Z: array<${meta}>;`);
  emit(`@group(0) @binding(${zeros ? 5 : 4}) var<uniform> p: Params;`);
  emit(`var<workgroup> red: array<f32, ${R * WG}>;`);
  emit(`@compute @workgroup_size(${WG})`);
  emit(`fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) t: u32,`);
  emit(`        @builtin(num_workgroups) nw: vec3u) {`);
  emit(`  let w = wg.x + wg.y * nw.x;`);
  emit(`  if (w >= p.groups) { return; }`);
  emit(`  let lane = t % ${L}u;`);
  emit(`  let team = t / ${L}u;`);
  // n0: the first of the team's rows (a multiple of R, so all R lie in one tile).
  if (swiglu) {
    const half = rowsPerWorkgroup(spec) / 2, HT = TM / 2;
    emit(`  let j0 = w * ${half}u;`);
    emit(`  let gateTeam = team % ${HT}u;`);
    emit(
      `  let n0 = (j0 / ${T}u) * ${
        2 * T
      }u + select(0u, ${T}u, team >= ${HT}u) + j0 % ${T}u + gateTeam * ${R}u;`,
    );
  } else {
    emit(`  let n0 = w * ${rowsPerWorkgroup(spec)}u + team * ${R}u;`);
  }
  // Rows past Np (the last workgroup's) read the last rows instead; their outputs are not written.
  emit(`  let nl = min(n0, p.Np - ${R}u);`);
  emit(`  let base = ((nl / ${T}u) * ${C}u * ${T}u + nl % ${T}u) * ${b}u;`);
  emit(`  let odd = (nl & 1u) == 1u;`);
  for (let r = 0; r < R; r++) {
    for (let q = 0; q < P; q++) emit(`  var a${r}_${q} = 0.0;`);
  }
  // Word j of row r of the thread's chunk u.
  const word = (u: number, r: number) => (j: number): string => {
    const i = r * b + j;
    return vec ? `v${u}_${i >> 2}.${xs[i & 3]}` : `v${u}_${i}`;
  };
  const scale = (arr: string, r: number, g: string) => {
    if (scaleType === "f32") return `${arr}[${g} * p.Np + nl + ${r}u]`;
    // Row nl + r's half of the pair that holds it.
    const pair = `unpack2x16float(${arr}[(${g} * p.Np + nl + ${r}u) >> 1u])`;
    if (R === 1) return `select(${pair}.x, ${pair}.y, odd)`;
    return `${pair}.${r % 2 === 0 ? "x" : "y"}`;
  };
  // The loads of chunk c (an expression) under suffix u.
  const load = (u: number, c: string, indent: string) => {
    emit(`${indent}let c${u} = ${c};`);
    emit(`${indent}let o${u} = base + c${u} * ${T * b}u;`);
    if (vec) {
      for (let v = 0; v < words / 4; v++) emit(`${indent}let v${u}_${v} = Wq[o${u} / 4u + ${v}u];`);
    } else {
      for (let v = 0; v < words; v++) emit(`${indent}let v${u}_${v} = Wq[o${u} + ${v}u];`);
    }
    emit(`${indent}let g${u} = c${u} / ${CPG}u;`);
    for (let r = 0; r < R; r++) {
      emit(`${indent}let s${u}_${r} = ${scale("S", r, `g${u}`)};`);
      emit(`${indent}let z${u}_${r} = ${zeros ? scale("Z", r, `g${u}`) : "p.zero"};`);
    }
  };
  const compute = (u: number, indent: string) => {
    for (let r = 0; r < R; r++) {
      emit(`${indent}let sc${u}_${r} = s${u}_${r} * ${1 << b}.0;`);
      emit(`${indent}let of${u}_${r} = -fma(s${u}_${r}, z${u}_${r}, sc${u}_${r});`);
    }
    for (let i4 = 0; i4 < T / 4; i4++) {
      emit(`${indent}{ let xv = X[c${u}][${i4}];`);
      for (let r = 0; r < R; r++) {
        for (let e = 0; e < 4; e++) {
          const i = i4 * 4 + e;
          const f = codeAsFloat(b, i, word(u, r));
          const acc = `a${r}_${i % P}`;
          emit(
            `${indent}  ${acc} = fma(fma(${f}, sc${u}_${r}, of${u}_${r}), xv.${xs[e]}, ${acc});`,
          );
        }
      }
      emit(`${indent}}`);
    }
  };
  // Groups of U chunks, all loads first; then the chunks left one at a time.
  emit(`  var c = lane;`);
  if (U > 1) {
    emit(`  for (; c + ${(U - 1) * L}u < ${C}u; c += ${U * L}u) {`);
    for (let u = 0; u < U; u++) load(u, u === 0 ? "c" : `c + ${u * L}u`, "    ");
    for (let u = 0; u < U; u++) compute(u, "    ");
    emit(`  }`);
  }
  emit(`  for (; c < ${C}u; c += ${L}u) {`);
  load(0, "c", "    ");
  compute(0, "    ");
  emit(`  }`);
  for (let r = 0; r < R; r++) {
    const parts = Array.from({ length: P }, (_, q) => `a${r}_${q}`);
    emit(`  red[${r * WG}u + t] = ${parts.join(" + ")};`);
  }
  emit(`  workgroupBarrier();`);
  for (let st = L / 2; st >= 1; st /= 2) {
    emit(`  if (lane < ${st}u) {`);
    for (let r = 0; r < R; r++) {
      emit(`    red[${r * WG}u + t] = red[${r * WG}u + t] + red[${r * WG}u + t + ${st}u];`);
    }
    emit(`  }`);
    emit(`  workgroupBarrier();`);
  }
  // Lane r of each team writes row n0 + r (rows ≤ lanes).
  emit(`  let r = lane;`);
  emit(`  if (r >= ${R}u) { return; }`);
  emit(`  let sum = red[r * ${WG}u + team * ${L}u];`);
  if (swiglu) {
    const HT = TM / 2;
    emit(`  if (team >= ${HT}u) { return; }`);
    emit(`  let j = j0 + team * ${R}u + r;`);
    emit(`  if (j >= p.N / 2u) { return; }`);
    emit(`  let up = red[r * ${WG}u + (team + ${HT}u) * ${L}u];`);
    emit(`  Y[j] = sum / (1.0 + exp(-sum)) * up;`);
  } else {
    emit(`  let n = n0 + r;`);
    emit(`  if (n >= p.N) { return; }`);
    emit(`  Y[n] = ${spec.accumulate ? "Y[n] + sum" : "sum"};`);
  }
  emit(`}`);
  return lines.join("\n") + "\n";
}

/** Whether {@linkcode encodeQgemv} takes this weight: no column map, so x is read as it is. */
export function qgemvApplies(packed: PackedWeight): boolean {
  return packed.colIdx === null && packed.paddedCols === packed.shape[1];
}

/** Overrides of {@linkcode qgemvSpec}'s work split. */
export type QgemvVariant = Partial<Pick<QgemvSpec, "lanes" | "rows" | "teams" | "unroll">>;

/**
 * The default specialization for a weight: 2 rows a team (32 contiguous bytes
 * a load at 4 bits), and teams and lanes such that the workgroups number at
 * least about 256 where the rows allow, every lane having at least `unroll`
 * chunks where K allows.
 *
 * @param packed The packed weight (no column map).
 * @param options Accumulation, SwiGLU, and overrides of the work split.
 * @returns The specialization.
 */
export function qgemvSpec(
  packed: PackedWeight,
  options: { accumulate?: boolean; swiglu?: boolean; variant?: QgemvVariant } = {},
): QgemvSpec {
  const C = packed.paddedCols / PACK_TILE, CPG = packed.groupStride / PACK_TILE;
  const { variant = {} } = options;
  const rows = variant.rows ?? 2;
  // Rows per workgroup: 8–32, as many as keep ≥ 256 workgroups.
  let rw = 32;
  while (rw > 8 && packed.shape[0] / rw < 256) rw /= 2;
  rw = Math.max(rw, rows * 2);
  const teams = variant.teams ?? rw / rows;
  let lanes = variant.lanes ?? Math.min(64, MAX_THREADS / teams);
  while (variant.lanes === undefined && lanes > 8 && C / lanes < 1) lanes /= 2;
  const unroll = variant.unroll ?? Math.max(1, Math.min(4, 2 ** Math.floor(Math.log2(C / lanes))));
  return {
    bits: packed.bits,
    scaleType: packed.scaleType,
    zeros: packed.zeros !== null,
    chunks: C,
    groupChunks: CPG,
    lanes,
    rows,
    teams,
    unroll,
    ...(options.accumulate ? { accumulate: true } : {}),
    ...(options.swiglu ? { swiglu: true } : {}),
  };
}

/**
 * The compiled pipeline of a specialization (cached per device).
 *
 * @param gpu The GPU.
 * @param spec The specialization.
 * @returns The pipeline.
 */
export function qgemvPipeline(gpu: Gpu, spec: QgemvSpec): GPUComputePipeline {
  return cachedPipeline(gpu, `qgemv:${JSON.stringify(spec)}`, () => qgemvWgsl(spec));
}

/** Operands of {@linkcode encodeQgemv}. */
export interface QgemvOperands {
  /** x, f32 [K]. */
  readonly x: GPUBuffer;
  /** y, f32 [N] (or [N/2] with `swiglu`). */
  readonly y: GPUBuffer;
  /** y += x·Ŵᵀ. @default false */
  readonly accumulate?: boolean;
  /** SwiGLU epilogue over alternating gate/up tiles. @default false */
  readonly swiglu?: boolean;
}

/**
 * Records y (+)= x·Ŵᵀ for one row of x.
 *
 * @param batch The batch.
 * @param w The resident packed weight ({@linkcode qgemvApplies}).
 * @param ops x, y, accumulation, SwiGLU.
 * @param variant Overrides of the default work split.
 * @throws {RangeError} for a weight with a column map, buffers too small, or an invalid variant.
 */
export function encodeQgemv(
  batch: GpuBatch,
  w: GpuPackedWeight,
  ops: QgemvOperands,
  variant: QgemvVariant = {},
): void {
  const { packed } = w;
  const [N, K] = packed.shape;
  if (!qgemvApplies(packed)) {
    throw new RangeError(
      "Cannot encode qgemv: the weight has a column map (act-order or padded groups); use qmatmul",
    );
  }
  const swiglu = ops.swiglu === true;
  const yCols = swiglu ? N / 2 : N;
  if (swiglu && N % (2 * PACK_TILE) !== 0) {
    throw new RangeError(
      `Cannot encode a SwiGLU qgemv over ${N} rows: gate and up tiles need a multiple of ${
        2 * PACK_TILE
      } rows`,
    );
  }
  if (ops.x.size < K * 4 || ops.y.size < yCols * 4) {
    throw new RangeError(
      `Cannot encode qgemv: x (${ops.x.size} bytes) or y (${ops.y.size} bytes) is smaller than [${K}] or [${yCols}] f32`,
    );
  }
  const spec = qgemvSpec(packed, { accumulate: ops.accumulate === true, swiglu, variant });
  const gpu = batch.gpu;
  const pipeline = qgemvPipeline(gpu, spec);
  const count = Math.ceil(
    swiglu ? yCols / (rowsPerWorkgroup(spec) / 2) : N / rowsPerWorkgroup(spec),
  );
  const resources = [ops.y, ops.x, w.words, w.scales];
  if (spec.zeros) resources.push(w.zeros!);
  const uniform = batch.uniform([
    { u32: N },
    { u32: packed.paddedRows },
    { f32: packed.zero },
    { u32: count },
  ]);
  batch.dispatch(pipeline, [...resources, uniform], foldGroups(gpu, count));
}
