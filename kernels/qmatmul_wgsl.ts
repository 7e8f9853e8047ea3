/**
 * WGSL generators of the packed low-bit matmul y = x·Ŵᵀ (see
 * `qmatmul_kernel.ts` for the dispatcher, `qmatmul_reference.ts` for the CPU
 * references, and `quantizers/pack.ts` for the "rowtile32" layout they read).
 *
 * ## Work split
 *
 * A workgroup owns `rowTiles` tiles of 32 weight rows and `batch` rows of x,
 * and all of K: lane l of each 32-thread team owns row l of every tile, so a
 * team's load of one chunk is 32·b contiguous words. The K chunks are cut
 * into steps of `unroll` consecutive chunks that never cross a group (one
 * scale and zero point load per step); the `warps` teams take steps in turn
 * and add their partial sums in workgroup memory at the end. With
 * `split` > 1 each team is cut into sub-teams of 32/split lanes that take
 * steps of their own: the workgroup then owns 32/split rows of each tile
 * (more, smaller workgroups for few rows). With
 * `prefetch`, the words and scales of a team's next step are loaded before
 * the current step is used (software pipelining), so two steps of loads are
 * in flight per thread. x is read with broadcast loads (every lane of a team
 * reads the same address) from global memory, or from a copy of the
 * workgroup's x rows staged in workgroup memory once (`sharedX`).
 *
 * With `splitK` > 1, the workgroups of an output tile also split K: each
 * takes a contiguous slice of the steps and writes its sums to its slice
 * of a partials buffer [splitK, M, N] (bound as y), and a second pass
 * (`qmatmulSplitReduceWgsl`) adds the slices in order (deterministic). It
 * gives shapes with few row tiles and a long K enough workgroups.
 *
 * `codesFirst` changes only the emission order of the per-code
 * dequantizations (the codes of 4 columns first, then per x row one vec4
 * and its FMAs); `tiled` selects a different kernel, a register-tiled GEMM
 * over x and weights staged (dequantized once) in workgroup memory
 * (`_qmatmul_tiled.ts`). Both were slower on the H100 at batch 16–128 and
 * are kept as variants (see `qmatmulSpec`).
 *
 * ## Dequantization
 *
 * - `"fma"`: the code is moved to the top mantissa bits of 1.0
 *   (f = 1 + q/2^b, exact) and ŵ = fma(f, s·2^b, −(s·z + s·2^b)) = s·(q − z);
 *   one shift, one mask-and-or and one FMA per code, then one FMA per x row.
 * - `"exact"` (integer zero points in [−2^b, 2^b] only): the code is masked in
 *   place, at bit offset p ∈ {0, b, 2b, …} after at most a shift per few
 *   codes, into the mantissa of 1.0: f = 1 + q·2^(p−23). Then
 *   d = f − (1 + z·2^(p−23)) = (q − z)·2^(p−23) exactly (both operands lie
 *   in [1, 2], Sterbenz), and the products d·x go to one accumulator per bit
 *   offset, which the end of the step scales by 2^(23−p) and s. One
 *   mask-and-or and one subtraction per code, then one FMA per x row.
 *
 * - `"half"` (staged x, 2, 4 and 8 bits, any zero points): two codes per
 *   mask. A word, shifted by a multiple of b where needed, is masked so that
 *   each 16-bit half keeps one code at bit offset p (p + b ≤ 11): the halves
 *   are the f16 subnormals q·2^(p−24), which `unpack2x16float` turns into
 *   normal f32 values exactly (2^−24 is a normal f32). Their products with x
 *   go to one accumulator per offset; the end of the step scales them by
 *   2^(24−p) into Σ q·x and subtracts z·Σx, with the sums of x per chunk
 *   computed once when x is staged: s·(Σ q·x − z·Σx). One mask, one
 *   conversion per code (two per mask) and one FMA per code and x row. Needs
 *   a device whose f16 → f32 conversion keeps f16 subnormals (the tests and
 *   the sweep's check catch one that flushes them; the H100 keeps them).
 *   The default at 2 and 4 bits for batch 1 (see `qmatmulSpec`). Its
 *   rounding is relative to Σ|q·x| + |z·Σx| per step rather than the
 *   Σ|(q − z)·x| of "exact" (the zero point is subtracted after the sums):
 *   measured 2.5e−7 against 1.6e−7 relative (rms) with normal x, 1.5e−7
 *   against 0.7e−7 with x = 1 + 0.01·normal (4 bits, g128, K = 2048).
 *
 * - `"dot4"` (staged x, 2, 4 and 8 bits, any zero points; WGSL's
 *   packed_4x8_integer_dot_product): x is staged once per workgroup as
 *   integers, each chunk of 32 values as x ≈ 2^(E−23)·x̃ with E the exponent
 *   of its largest magnitude (frexp) and x̃ = round(x·2^(23−E)) a 24-bit
 *   integer, split into three byte planes x̃ = 65536·hi + 256·mid + lo (hi
 *   signed). Plane k of a word, (w >> k·b) & (2^b − 1)·0x01010101, holds four
 *   codes as bytes, and three 4×8-bit dot products with the matching bytes of
 *   lo, mid and hi give their Σ q·x̃ in integers; the chunk's sum is scaled
 *   by 2^(E−23) and the step subtracts z·Σx as "half" does. At 8 bits the hi
 *   plane's signed product reads q − 128 (w ^ 0x80808080) and adds 128·Σhi
 *   back. About 1.1 (4 bits) to 1.5 (8 bits) operations per code and x row.
 *   Not exact: x is rounded to 24 bits relative to its chunk's largest
 *   magnitude (an error of at most 2^−24 of that magnitude per activation),
 *   and non-finite activations do not propagate.
 *
 * All but "dot4" keep every product of a code and an activation exact up to the one
 * rounding of its f32 accumulation. ("exact" and "half" scale the products
 * by down to 2^−24 before the step sums them, so activations below about
 * 2^−102 ≈ 2e−31 in magnitude fall into the subnormals that GPUs flush to
 * zero.)
 *
 * (Tried and dropped: one mask and one FMA per code, the code masked in
 * place as the f32 subnormal q·2^(p−149) times x staged as x·2^90, and
 * z·Σx subtracted per step. The H100's Vulkan driver flushes f32
 * subnormals, so the products came out wrong there.)
 *
 * Web-standard only.
 *
 * @module
 */

import { PACK_TILE, PACKED_BITS } from "../quantizers/pack.ts";
import { codeAsFloat, codeInPlace, exactSpan, halfMasks } from "./_qmatmul_codes.ts";
export {
  type QmatmulGatherSpec,
  qmatmulGatherWgsl,
  qmatmulSplitReduceWgsl,
} from "./_qmatmul_passes.ts";
import {
  checkTiledSpec,
  qmatmulTiledWgsl,
  tiledInvocations,
  tiledWorkgroupBytes,
} from "./_qmatmul_tiled.ts";

/** Specialization of {@linkcode qmatmulWgsl}. */
export interface QmatmulSpec {
  /** Bits per code: 2, 3, 4 or 8. */
  readonly bits: number;
  /** Storage of scales and zero points. */
  readonly scaleType: "f16" | "f32";
  /** Per-group zero points are stored (else one common zero point, a uniform). */
  readonly zeros: boolean;
  /** Chunks of 32 packed columns per row (C = Kp/32). */
  readonly chunks: number;
  /** Chunks per group (Gp/32); divides `chunks`. */
  readonly groupChunks: number;
  /** 32-row tiles per workgroup (weight rows per thread): 1, 2 or 4. */
  readonly rowTiles: number;
  /** 32-thread teams splitting K (workgroup size 32·warps): 1, 2, 4, 8, 16 or 32. */
  readonly warps: number;
  /**
   * Sub-teams per team: 1, 2 or 4. A team's lanes form `split` sub-teams of
   * 32/split lanes that take K steps of their own, so a workgroup owns
   * 32/split rows of each of its tiles (and `split` times as many workgroups
   * cover the rows, each reading 32/split·b contiguous words per chunk).
   */
  readonly split: number;
  /** Rows of x per thread (batch tile): 1–32 (up to 128 when `tiled`). */
  readonly batch: number;
  /** Consecutive chunks per step: 1, 2 or 4, dividing `groupChunks`. */
  readonly unroll: number;
  /** Loads of the next step are issued before the current step is used. */
  readonly prefetch: boolean;
  /** The workgroup's x rows are staged in workgroup memory (else read from global memory). */
  readonly sharedX: boolean;
  /**
   * Staging issues all of a thread's x loads before its first store (where
   * that is at most 8 loads; else a loop of load-store pairs).
   */
  readonly batchedStage: boolean;
  /**
   * Dequantization (see the module docs): "exact" needs integer zero points
   * in [−2^bits, 2^bits], "half" and "dot4" need `sharedX` and 2, 4 or 8
   * bits ("dot4" also WGSL's packed_4x8_integer_dot_product).
   */
  readonly dequant: "fma" | "exact" | "half" | "dot4";
  /**
   * Cross-team sums: "tree" (halving, log2(warps) barriers) or "flat" (one
   * barrier, the first team adds the others' sums in order).
   */
  readonly reduce: "tree" | "flat";
  /**
   * Emission order of the per-code dequantizations ("fma", "exact") of each
   * 4 columns of a chunk: false loads the x values of every batch row first,
   * then dequantizes each code and feeds it to all rows; true dequantizes
   * the 4·rowTiles codes first, then per x row loads one vec4 and does its
   * 4·rowTiles FMAs (fewer live registers). @default false
   */
  readonly codesFirst?: boolean;
  /**
   * The tiled path (`_qmatmul_tiled.ts`): a workgroup of `warps` teams owns
   * 32·rowTiles weight rows and `batch` (up to 128) x rows, stages each step
   * of x and of the dequantized weights in workgroup memory, and every
   * thread computes a micro-tile of `microRows` × `microBatch` outputs.
   * Needs `split` 1, `sharedX` false and dequant "fma". @default false
   */
  readonly tiled?: boolean;
  /**
   * Workgroups per output tile that split K (1, 2, 4 or 8; not when tiled):
   * workgroup y = tile·splitK + slice takes the slice's ⌈steps/splitK⌉
   * steps and writes its sums to slice `slice` of an f32 partials buffer
   * [splitK, M, N] bound as y; a second pass ({@linkcode qmatmulSplitReduceWgsl})
   * adds the slices in order. @default 1
   */
  readonly splitK?: number;
  /** Tiled path: weight rows per thread, 4 or 8. @default 4 */
  readonly microRows?: number;
  /** Tiled path: x rows per thread, 4 or 8. @default 4 */
  readonly microBatch?: number;
}

/** 32-bit words per chunk per array element of the code words, by width. */
const WORDS_TYPE: Record<number, string> = {
  2: "vec2<u32>",
  3: "u32",
  4: "vec4<u32>",
  8: "vec4<u32>",
};

/**
 * Throws a `RangeError` naming the first invalid field of a specialization.
 *
 * @param spec The specialization.
 */
export function checkQmatmulSpec(spec: QmatmulSpec): void {
  const bad = (name: string, v: unknown, what: string): never => {
    throw new RangeError(
      `Cannot build a qmatmul kernel as '${name}' must be ${what}: current value is ${String(v)}`,
    );
  };
  if (!PACKED_BITS.includes(spec.bits)) bad("bits", spec.bits, "2, 3, 4 or 8");
  if (spec.scaleType !== "f16" && spec.scaleType !== "f32") {
    bad("scaleType", spec.scaleType, '"f16" or "f32"');
  }
  if (!Number.isInteger(spec.chunks) || spec.chunks < 1) {
    bad("chunks", spec.chunks, "a positive integer");
  }
  if (
    !Number.isInteger(spec.groupChunks) || spec.groupChunks < 1 ||
    spec.chunks % spec.groupChunks !== 0
  ) {
    bad("groupChunks", spec.groupChunks, `a positive divisor of chunks (${spec.chunks})`);
  }
  if (![1, 2, 4].includes(spec.rowTiles)) bad("rowTiles", spec.rowTiles, "1, 2 or 4");
  if (![1, 2, 4, 8, 16, 32].includes(spec.warps)) bad("warps", spec.warps, "1, 2, 4, 8, 16 or 32");
  if (![1, 2, 4].includes(spec.split)) bad("split", spec.split, "1, 2 or 4");
  if (spec.tiled) checkTiledSpec(spec, bad);
  else if (!Number.isInteger(spec.batch) || spec.batch < 1 || spec.batch > 32) {
    bad("batch", spec.batch, "an integer in [1, 32]");
  }
  if (![1, 2, 4].includes(spec.unroll) || spec.groupChunks % spec.unroll !== 0) {
    bad("unroll", spec.unroll, `1, 2 or 4 and divide groupChunks (${spec.groupChunks})`);
  }
  if (typeof spec.prefetch !== "boolean") bad("prefetch", spec.prefetch, "a boolean");
  if (typeof spec.sharedX !== "boolean") bad("sharedX", spec.sharedX, "a boolean");
  if (typeof spec.batchedStage !== "boolean") bad("batchedStage", spec.batchedStage, "a boolean");
  if (!["fma", "exact", "half", "dot4"].includes(spec.dequant)) {
    bad("dequant", spec.dequant, '"fma", "exact", "half" or "dot4"');
  }
  const staged = spec.dequant === "half" || spec.dequant === "dot4";
  if (staged && spec.bits === 3) {
    bad("bits", spec.bits, `2, 4 or 8 with dequant "${spec.dequant}"`);
  }
  if (staged && !spec.sharedX) {
    bad("sharedX", spec.sharedX, `true with dequant "${spec.dequant}"`);
  }
  if (spec.reduce !== "tree" && spec.reduce !== "flat") {
    bad("reduce", spec.reduce, '"tree" or "flat"');
  }
  for (const key of ["codesFirst", "tiled"] as const) {
    const v = spec[key];
    if (v !== undefined && typeof v !== "boolean") bad(key, v, "a boolean");
  }
  const sk = spec.splitK ?? 1;
  if (![1, 2, 4, 8].includes(sk) || (sk > 1 && spec.tiled)) {
    bad("splitK", spec.splitK, "1, 2, 4 or 8 (1 when tiled)");
  }
  if (spec.codesFirst && (staged || spec.tiled)) {
    bad("codesFirst", spec.codesFirst, 'false with dequant "half" or "dot4" or when tiled');
  }
}

/** Sub-teams' worth of partial sums the cross-team reduction keeps in workgroup memory. */
function reduceSlots(spec: QmatmulSpec): number {
  const teams = spec.warps * spec.split;
  return teams === 1 ? 0 : spec.reduce === "flat" ? teams - 1 : teams / 2;
}

/**
 * Workgroup memory (bytes) a specialization needs: the staged x rows and the
 * cross-team partial sums.
 *
 * @param spec The specialization.
 * @returns Bytes.
 */
export function qmatmulWorkgroupBytes(spec: QmatmulSpec): number {
  if (spec.tiled) return tiledWorkgroupBytes(spec);
  const red = reduceSlots(spec) * spec.rowTiles * spec.batch * (PACK_TILE / spec.split) * 4;
  const chunks = spec.batch * spec.chunks;
  if (spec.dequant === "dot4") return red + chunks * (24 + 3) * 4; // planes, scale, Σx, Σhi
  const sums = spec.dequant === "half" ? chunks * 4 : 0;
  return red + sums + (spec.sharedX ? chunks * PACK_TILE * 4 : 0);
}

/**
 * Invocations per workgroup a specialization needs.
 *
 * @param spec The specialization.
 * @returns Threads.
 */
export function qmatmulInvocations(spec: QmatmulSpec): number {
  return spec.tiled ? tiledInvocations(spec) : spec.warps * PACK_TILE;
}

/**
 * WGSL of the product for one specialization. Bindings: 0 = y (f32 [M, N],
 * read-write), 1 = x (f32 [M, Kp] as chunks of 8 vec4s), 2 = code words,
 * 3 = scales, then 4 = zero points when `zeros`, then the uniform parameters
 * {M, N, Np, zero}.
 *
 * @param spec The specialization.
 * @returns WGSL source with entry point `main`.
 */
export function qmatmulWgsl(spec: QmatmulSpec): string {
  checkQmatmulSpec(spec);
  if (spec.tiled) return qmatmulTiledWgsl(spec);
  const {
    bits,
    scaleType,
    zeros,
    chunks: C,
    groupChunks: CPG,
    rowTiles: R,
    warps: W,
    split: S,
    batch: BM,
    unroll: U,
    prefetch,
    sharedX,
    dequant,
  } = spec;
  const T = PACK_TILE;
  const L = T / S; // lanes (rows of a tile) per sub-team
  const VW = W * S; // sub-teams taking K steps in turn
  const steps = C / U;
  const SK = spec.splitK ?? 1, SS = Math.ceil(steps / SK);
  const first = SK > 1 ? "sLo + team" : "team", end = SK > 1 ? "sHi" : `${steps}u`;
  const yRow = SK > 1 ? "ks * p.M + " : "";
  const half = dequant === "half";
  const dot4 = dequant === "dot4";
  const exact = dequant === "exact";
  const masks = half ? halfMasks(bits) : [];
  // Accumulators per output and step: one per bit offset ("exact", "half").
  const A = exact
    ? exactSpan(bits) / bits
    : half
    ? Math.max(...masks.map((h) => h.p)) / bits + 1
    : 1;
  // Independent partial sums per output ("fma"), so FMA chains overlap when a thread has few outputs.
  const P = exact || half || dot4 ? 1 : BM * R >= 4 ? 1 : BM * R >= 2 ? 2 : 4;
  const wpc = bits === 3 ? 3 : bits === 8 ? 2 : 1; // array elements per chunk
  const lines: string[] = [];
  const emit = (s: string) => lines.push(s);
  const xs = "xyzw";

  emit(`struct Params { M: u32, N: u32, Np: u32, zero: f32 }`);
  emit(`@group(0) @binding(0) var<storage, read_write> Y: array<f32>;`);
  emit(`@group(0) @binding(1) var<storage, read> X: array<array<vec4<f32>, 8>>;`);
  emit(`@group(0) @binding(2) var<storage, read> Wq: array<${WORDS_TYPE[bits]}>;`);
  emit(
    `@group(0) @binding(3) var<storage, read> S: array<${scaleType === "f16" ? "u32" : "f32"}>;`,
  );
  if (zeros) {
    emit(
      `@group(0) @binding(4) var<storage, read> Z: array<${scaleType === "f16" ? "u32" : "f32"}>;`,
    );
  }
  emit(`@group(0) @binding(${zeros ? 5 : 4}) var<uniform> p: Params;`);
  if (VW > 1) emit(`var<workgroup> red: array<f32, ${reduceSlots(spec) * R * BM * L}>;`);
  if (sharedX && !dot4) emit(`var<workgroup> xs: array<array<vec4<f32>, 8>, ${BM * C}>;`);
  if (half || dot4) emit(`var<workgroup> xsum: array<f32, ${BM * C}>;`);
  if (dot4) {
    // Per chunk: planes lo (vec4s 0–1), mid (2–3), hi (4–5), 8 words each; the scale 2^(E−23).
    emit(`var<workgroup> xl: array<array<vec4<u32>, 6>, ${BM * C}>;`);
    emit(`var<workgroup> xsc: array<f32, ${BM * C}>;`);
    if (bits === 8) emit(`var<workgroup> xhs: array<i32, ${BM * C}>;`);
  }
  emit(`@compute @workgroup_size(${W * T})`);
  emit(`fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) t: u32) {`);
  // lane: the row of each tile this thread owns (within the tile); team: its sub-team.
  if (S === 1) {
    emit(`  let lane = t % ${T}u;`);
    emit(`  let team = t / ${T}u;`);
    emit(`  let tile0 = wg.x * ${R}u;`);
  } else {
    emit(`  let lane = (wg.x % ${S}u) * ${L}u + t % ${L}u;`);
    emit(`  let team = t / ${L}u;`);
    emit(`  let tile0 = (wg.x / ${S}u) * ${R}u;`);
  }
  emit(`  let sl = t % ${L}u;`);
  emit(`  let odd = (lane & 1u) == 1u;`);
  // K slice of the workgroup (splitK): steps [sLo, sHi), its sums to slice ks of the partials.
  if (SK > 1) {
    emit(`  let ks = wg.y % ${SK}u;`);
    emit(`  let m0 = (wg.y / ${SK}u) * ${BM}u;`);
    emit(`  let sLo = ks * ${SS}u;`);
    emit(`  let sHi = min(sLo + ${SS}u, ${steps}u);`);
  } else {
    emit(`  let m0 = wg.y * ${BM}u;`);
  }
  for (let r = 0; r < R; r++) emit(`  let n${r} = (tile0 + ${r}u) * ${T}u + lane;`);
  for (let m = 0; m < BM; m++) emit(`  let xr${m} = min(m0 + ${m}u, p.M - 1u) * ${C}u;`);
  // x rows into workgroup memory (after the first loads of weights are issued, with prefetch).
  const stage = () => {
    if (dot4) {
      stageDot4();
      return;
    }
    stageX();
    if (!half) return;
    // The sums of x per chunk, from the staged copy.
    emit(`  for (var i = t; i < ${BM * C}u; i += ${W * T}u) {`);
    emit(`    let v = ((xs[i][0] + xs[i][1]) + (xs[i][2] + xs[i][3])) +`);
    emit(`      ((xs[i][4] + xs[i][5]) + (xs[i][6] + xs[i][7]));`);
    emit(`    xsum[i] = (v.x + v.y) + (v.z + v.w);`);
    emit(`  }`);
    emit(`  workgroupBarrier();`);
  };
  // x as byte planes of 24-bit integers per chunk, one thread per chunk ("dot4").
  const stageDot4 = () => {
    const cpw = 32 / bits, ppw = 8 / bits; // codes and planes per word
    emit(`  for (var i = t; i < ${BM * C}u; i += ${W * T}u) {`);
    emit(`    let m = i / ${C}u;`);
    emit(`    let src = min(m0 + m, p.M - 1u) * ${C}u + i - m * ${C}u;`);
    for (let j = 0; j < 8; j++) emit(`    let v${j} = X[src][${j}];`);
    emit(`    let a4 = max(max(max(abs(v0), abs(v1)), max(abs(v2), abs(v3))),`);
    emit(`      max(max(abs(v4), abs(v5)), max(abs(v6), abs(v7))));`);
    // E ≥ −100 keeps ldexp's exponents in range (smaller activations round to 0).
    emit(`    let ex = max(frexp(max(max(a4.x, a4.y), max(a4.z, a4.w))).exp, -100);`);
    emit(`    let sc = ldexp(1.0, ex - 23);`);
    emit(`    let sh = vec4<i32>(23 - ex);`);
    // |x|·2^(23−E) < 2^23: only a value that rounds up to 2^23 is clamped (hi stays a signed byte).
    for (let j = 0; j < 8; j++) {
      emit(
        `    let q${j} = clamp(vec4<i32>(round(ldexp(v${j}, sh))), vec4<i32>(-8388607), vec4<i32>(8388607));`,
      );
    }
    emit(`    let qs = ((q0 + q1) + (q2 + q3)) + ((q4 + q5) + (q6 + q7));`);
    emit(`    xsc[i] = sc;`);
    emit(`    xsum[i] = f32((qs.x + qs.y) + (qs.z + qs.w)) * sc;`);
    if (bits === 8) {
      const hs = Array.from({ length: 8 }, (_, j) => `(q${j} >> vec4<u32>(16u))`).join(" + ");
      emit(`    let hs = ${hs};`);
      emit(`    xhs[i] = (hs.x + hs.y) + (hs.z + hs.w);`);
    }
    const q = (n: number) => `bitcast<u32>(q${n >> 2}.${xs[n & 3]})`;
    for (let limb = 0; limb < 3; limb++) {
      const words: string[] = [];
      for (let e = 0; e < 8; e++) {
        const j = Math.floor(e / ppw), k = e % ppw;
        const bytes = [0, 1, 2, 3].map((b) => {
          const v = q(j * cpw + b * ppw + k);
          return limb === 0 ? v : `(${v} >> ${8 * limb}u)`;
        });
        words.push(`pack4xU8(vec4<u32>(${bytes.join(", ")}) & vec4<u32>(255u))`);
      }
      for (let h = 0; h < 2; h++) {
        emit(
          `    xl[i][${2 * limb + h}] = vec4<u32>(${words.slice(4 * h, 4 * h + 4).join(", ")});`,
        );
      }
    }
    emit(`  }`);
    emit(`  workgroupBarrier();`);
  };
  const stageX = () => {
    if (!sharedX) return;
    const total = BM * C * 8, per = Math.ceil(total / (W * T));
    if (spec.batchedStage && per <= 8) {
      // Every load of the thread is issued before the first store.
      for (let k = 0; k < per; k++) {
        emit(`  let si${k} = min(t + ${k * W * T}u, ${total - 1}u);`);
        emit(`  let sm${k} = si${k} / ${C * 8}u;`);
        emit(`  let sj${k} = si${k} - sm${k} * ${C * 8}u;`);
        emit(`  let sv${k} = X[min(m0 + sm${k}, p.M - 1u) * ${C}u + sj${k} / 8u][sj${k} % 8u];`);
      }
      for (let k = 0; k < per; k++) {
        const store = `xs[sm${k} * ${C}u + sj${k} / 8u][sj${k} % 8u] = sv${k};`;
        emit(
          (k + 1) * W * T <= total
            ? `  ${store}`
            : `  if (t + ${k * W * T}u < ${total}u) { ${store} }`,
        );
      }
      emit(`  workgroupBarrier();`);
      return;
    }
    emit(`  for (var i = t; i < ${BM * C * 8}u; i += ${W * T}u) {`);
    emit(`    let m = i / ${C * 8}u;`);
    emit(`    let j = i - m * ${C * 8}u;`);
    emit(`    xs[m * ${C}u + j / 8u][j % 8u] = X[min(m0 + m, p.M - 1u) * ${C}u + j / 8u][j % 8u];`);
    emit(`  }`);
    emit(`  workgroupBarrier();`);
  };
  for (let r = 0; r < R; r++) {
    for (let m = 0; m < BM; m++) {
      for (let q = 0; q < P; q++) emit(`  var a${r}_${m}_${q} = 0.0;`);
    }
  }

  // Raw loads of one step (st): words v{u}_{r}_{l} and metadata s{r}/z{r} (raw u32 pairs for f16).
  const loadNames: string[] = [];
  const loads = (st: string, indent: string, assign: boolean) => {
    const decl = (name: string, type: string, value: string) => {
      if (assign) emit(`${indent}${name} = ${value};`);
      else {
        emit(`${indent}var ${name}: ${type} = ${value};`);
        loadNames.push(name);
      }
    };
    const g = `((${st}) / ${CPG / U}u)`;
    for (let r = 0; r < R; r++) {
      const mi = `${g} * p.Np + n${r}`;
      const meta = scaleType === "f16" ? "u32" : "f32";
      const idx = scaleType === "f16" ? `(${mi}) >> 1u` : mi;
      decl(`ms${r}`, meta, `S[${idx}]`);
      if (zeros) decl(`mz${r}`, meta, `Z[${idx}]`);
    }
    for (let u = 0; u < U; u++) {
      for (let r = 0; r < R; r++) {
        const chunk = `((tile0 + ${r}u) * ${C}u + (${st}) * ${U}u + ${u}u) * ${T}u + lane`;
        for (let l = 0; l < wpc; l++) {
          decl(
            `v${u}_${r}_${l}`,
            WORDS_TYPE[bits]!,
            wpc === 1 ? `Wq[${chunk}]` : `Wq[(${chunk}) * ${wpc}u + ${l}u]`,
          );
        }
      }
    }
  };
  // Word j of chunk u of row tile r, as a WGSL expression over the loaded values.
  const word = (u: number, r: number) => (j: number): string => {
    if (bits === 3) return `v${u}_${r}_${j}`;
    if (bits === 2) return `v${u}_${r}_0.${xs[j]}`;
    return `v${u}_${r}_${j >> 2}.${xs[j & 3]}`;
  };
  // The dot products of one step (st) with x, added into the a… accumulators.
  const compute = (st: string, indent: string) => {
    for (let r = 0; r < R; r++) {
      const unpack = (v: string) => `select(unpack2x16float(${v}).x, unpack2x16float(${v}).y, odd)`;
      emit(`${indent}let s${r} = ${scaleType === "f16" ? unpack(`ms${r}`) : `ms${r}`};`);
      emit(
        `${indent}let z${r} = ${
          zeros ? (scaleType === "f16" ? unpack(`mz${r}`) : `mz${r}`) : "p.zero"
        };`,
      );
      if (exact) {
        for (let a = 0; a < A; a++) {
          emit(`${indent}let cz${r}_${a} = fma(z${r}, ${2 ** (a * bits - 23)}, 1.0);`);
          for (let m = 0; m < BM; m++) emit(`${indent}var e${r}_${m}_${a} = 0.0;`);
        }
      } else if (half || dot4) {
        for (let a = 0; a < A; a++) {
          for (let m = 0; m < BM; m++) emit(`${indent}var e${r}_${m}_${a} = 0.0;`);
        }
      } else {
        emit(`${indent}let sc${r} = s${r} * ${1 << bits}.0;`);
        emit(`${indent}let of${r} = -fma(s${r}, z${r}, sc${r});`);
      }
    }
    if (half || dot4) {
      if (half) computeHalf(st, indent);
      else computeDot4(st, indent);
      finishStaged(indent);
      return;
    }
    for (let u = 0; u < U; u++) {
      emit(`${indent}let c${u} = (${st}) * ${U}u + ${u}u;`);
      const xsrc = (m: number) => sharedX ? `xs[${m * C}u + c${u}]` : `X[xr${m} + c${u}]`;
      if (spec.codesFirst) {
        codesFirst(u, indent, xsrc);
        continue;
      }
      for (let i4 = 0; i4 < T / 4; i4++) {
        for (let m = 0; m < BM; m++) {
          emit(`${indent}let x${u}_${i4}_${m} = ${xsrc(m)}[${i4}];`);
        }
        for (let r = 0; r < R; r++) {
          for (let e = 0; e < 4; e++) {
            const i = i4 * 4 + e;
            if (exact) {
              const { expr, acc } = codeInPlace(bits, i, word(u, r));
              emit(`${indent}{ let d = ${expr} - cz${r}_${acc};`);
              for (let m = 0; m < BM; m++) {
                const e2 = `e${r}_${m}_${acc}`;
                emit(`${indent}  ${e2} = fma(d, x${u}_${i4}_${m}.${xs[e]}, ${e2});`);
              }
            } else {
              const f = codeAsFloat(bits, i, word(u, r));
              emit(`${indent}{ let q = fma(${f}, sc${r}, of${r});`);
              for (let m = 0; m < BM; m++) {
                const acc = `a${r}_${m}_${i % P}`;
                emit(`${indent}  ${acc} = fma(q, x${u}_${i4}_${m}.${xs[e]}, ${acc});`);
              }
            }
            emit(`${indent}}`);
          }
        }
      }
    }
    if (exact) {
      for (let r = 0; r < R; r++) {
        for (let m = 0; m < BM; m++) {
          let v = `e${r}_${m}_0 * ${2 ** 23}.0`;
          for (let a = 1; a < A; a++) v = `fma(e${r}_${m}_${a}, ${2 ** (23 - a * bits)}.0, ${v})`;
          emit(`${indent}a${r}_${m}_0 = fma(s${r}, ${v}, a${r}_${m}_0);`);
        }
      }
    }
  };

  // codesFirst: per 4 columns, the R×4 codes dequantized first, then one x vec4 and 4R FMAs per row.
  const codesFirst = (u: number, indent: string, xsrc: (m: number) => string) => {
    for (let i4 = 0; i4 < T / 4; i4++) {
      const accOf: number[][] = [];
      for (let r = 0; r < R; r++) {
        accOf.push([]);
        for (let e = 0; e < 4; e++) {
          const i = i4 * 4 + e;
          if (exact) {
            const { expr, acc } = codeInPlace(bits, i, word(u, r));
            emit(`${indent}let d${u}_${i4}_${r}_${e} = ${expr} - cz${r}_${acc};`);
            accOf[r]!.push(acc);
          } else {
            const f = codeAsFloat(bits, i, word(u, r));
            emit(`${indent}let d${u}_${i4}_${r}_${e} = fma(${f}, sc${r}, of${r});`);
            accOf[r]!.push(i % P);
          }
        }
      }
      for (let m = 0; m < BM; m++) {
        emit(`${indent}{ let xv = ${xsrc(m)}[${i4}];`);
        for (let r = 0; r < R; r++) {
          for (let e = 0; e < 4; e++) {
            const a = exact ? `e${r}_${m}_${accOf[r]![e]}` : `a${r}_${m}_${accOf[r]![e]}`;
            emit(`${indent}  ${a} = fma(d${u}_${i4}_${r}_${e}, xv.${xs[e]}, ${a});`);
          }
        }
        emit(`${indent}}`);
      }
    }
  };

  // The "half" dot products of a step (after compute() has declared s…, z… and e…).
  const computeHalf = (st: string, indent: string) => {
    const perWord = 32 / bits;
    for (let u = 0; u < U; u++) {
      emit(`${indent}let c${u} = (${st}) * ${U}u + ${u}u;`);
      for (let i4 = 0; i4 < T / 4; i4++) {
        for (let m = 0; m < BM; m++) {
          emit(`${indent}let x${u}_${i4}_${m} = xs[${m * C}u + c${u}][${i4}];`);
        }
      }
      const xv = (i: number, m: number) => `x${u}_${i >> 2}_${m}.${xs[i & 3]}`;
      for (let r = 0; r < R; r++) {
        for (let j = 0; j < bits; j++) {
          const w = word(u, r)(j);
          for (const { shift, p, k } of masks) {
            const lo = j * perWord + k, hi = lo + 16 / bits;
            const mask = ((((1 << bits) - 1) << p) * 0x10001) >>> 0;
            const src = shift === 0 ? w : `(${w} >> ${shift}u)`;
            emit(`${indent}{ let h = unpack2x16float(${src} & ${mask}u);`);
            for (let m = 0; m < BM; m++) {
              const e = `e${r}_${m}_${p / bits}`;
              emit(`${indent}  ${e} = fma(h.x, ${xv(lo, m)}, ${e});`);
              emit(`${indent}  ${e} = fma(h.y, ${xv(hi, m)}, ${e});`);
            }
            emit(`${indent}}`);
          }
        }
      }
    }
  };

  // The "dot4" dot products of a step: per chunk, integer sums per plane, scaled into e….
  const computeDot4 = (st: string, indent: string) => {
    const ppw = 8 / bits, m8 = (((1 << bits) - 1) * 0x01010101) >>> 0;
    for (let u = 0; u < U; u++) {
      emit(`${indent}let c${u} = (${st}) * ${U}u + ${u}u;`);
      for (let m = 0; m < BM; m++) {
        for (let h = 0; h < 6; h++) {
          emit(`${indent}let l${u}_${m}_${h} = xl[${m * C}u + c${u}][${h}];`);
        }
      }
      for (let r = 0; r < R; r++) {
        emit(`${indent}{`);
        for (let m = 0; m < BM; m++) {
          emit(`${indent}  var il${m} = 0u;`);
          emit(`${indent}  var im${m} = 0u;`);
          emit(`${indent}  var ih${m} = 0i;`);
        }
        for (let j = 0; j < bits; j++) {
          const w = word(u, r)(j);
          for (let k = 0; k < ppw; k++) {
            const e = j * ppw + k;
            const plane = bits === 8
              ? w
              : k === 0
              ? `(${w} & ${m8}u)`
              : `((${w} >> ${k * bits}u) & ${m8}u)`;
            emit(`${indent}  { let pl = ${plane};`);
            emit(`${indent}    let ph = ${bits === 8 ? "pl ^ 0x80808080u" : "pl"};`);
            const c = `[${e & 3}]`;
            for (let m = 0; m < BM; m++) {
              emit(`${indent}    il${m} += dot4U8Packed(pl, l${u}_${m}_${e >> 2}${c});`);
              emit(`${indent}    im${m} += dot4U8Packed(pl, l${u}_${m}_${2 + (e >> 2)}${c});`);
              emit(`${indent}    ih${m} += dot4I8Packed(ph, l${u}_${m}_${4 + (e >> 2)}${c});`);
            }
            emit(`${indent}  }`);
          }
        }
        for (let m = 0; m < BM; m++) {
          // At 8 bits the hi products read q − 128: add 128·Σhi back.
          const ih = bits === 8 ? `(ih${m} + 128 * xhs[${m * C}u + c${u}])` : `ih${m}`;
          emit(
            `${indent}  let v${m} = fma(f32(${ih}), 65536.0, fma(f32(im${m}), 256.0, f32(il${m})));`,
          );
          emit(`${indent}  e${r}_${m}_0 = fma(v${m}, xsc[${m * C}u + c${u}], e${r}_${m}_0);`);
        }
        emit(`${indent}}`);
      }
    }
  };

  // The end of a "half" or "dot4" step: e… scaled into Σ q·x, minus z·Σx, times s, into a….
  const finishStaged = (indent: string) => {
    for (let m = 0; m < BM; m++) {
      const sums = Array.from({ length: U }, (_, u) => `xsum[${m * C}u + c${u}]`);
      emit(`${indent}let xsum${m} = ${sums.join(" + ")};`);
    }
    for (let r = 0; r < R; r++) {
      for (let m = 0; m < BM; m++) {
        let v = dot4 ? `e${r}_${m}_0` : `e${r}_${m}_0 * ${2 ** 24}.0`;
        for (let a = 1; a < A; a++) v = `fma(e${r}_${m}_${a}, ${2 ** (24 - a * bits)}.0, ${v})`;
        emit(`${indent}a${r}_${m}_0 = fma(s${r}, fma(-z${r}, xsum${m}, ${v}), a${r}_${m}_0);`);
      }
    }
  };

  if (prefetch) {
    // Software pipelining: the loads of step st + W are in flight while step st is used.
    loads(`min(${first}, ${steps - 1}u)`, "  ", false);
    stage();
    emit(`  for (var st = ${first}; st < ${end}; st += ${VW}u) {`);
    const cur = loadNames.map((n) => `    let ${n}c = ${n};`);
    lines.push(...cur);
    loads(`min(st + ${VW}u, ${steps - 1}u)`, "    ", true);
    // compute() reads the current values under the plain names: shadow them.
    emit(`    {`);
    for (const n of loadNames) emit(`      let ${n} = ${n}c;`);
    compute("st", "      ");
    emit(`    }`);
    emit(`  }`);
  } else {
    stage();
    emit(`  for (var st = ${first}; st < ${end}; st += ${VW}u) {`);
    loads("st", "    ", false);
    compute("st", "    ");
    emit(`  }`);
  }
  for (let r = 0; r < R; r++) {
    for (let m = 0; m < BM; m++) {
      const parts = Array.from({ length: P }, (_, q) => `a${r}_${m}_${q}`);
      emit(`  var a${r}_${m} = ${parts.join(" + ")};`);
    }
  }
  const per = R * BM * L;
  if (spec.reduce === "flat" && VW > 1) {
    // Every team but the first hands its sums over at once; the first adds them in team order.
    emit(`  if (team > 0u) {`);
    for (let r = 0; r < R; r++) {
      for (let m = 0; m < BM; m++) {
        emit(`    red[(team - 1u) * ${per}u + ${(r * BM + m) * L}u + sl] = a${r}_${m};`);
      }
    }
    emit(`  }`);
    emit(`  workgroupBarrier();`);
    emit(`  if (team == 0u) {`);
    emit(`    for (var w = 0u; w < ${VW - 1}u; w++) {`);
    for (let r = 0; r < R; r++) {
      for (let m = 0; m < BM; m++) {
        emit(`      a${r}_${m} += red[w * ${per}u + ${(r * BM + m) * L}u + sl];`);
      }
    }
    emit(`    }`);
    emit(`  }`);
  } else {
    // Tree reduction over the teams: the upper half hands its sums to the lower half.
    for (let h = VW / 2; h >= 1; h /= 2) {
      emit(`  if (team >= ${h}u && team < ${2 * h}u) {`);
      for (let r = 0; r < R; r++) {
        for (let m = 0; m < BM; m++) {
          emit(`    red[(team - ${h}u) * ${per}u + ${(r * BM + m) * L}u + sl] = a${r}_${m};`);
        }
      }
      emit(`  }`);
      emit(`  workgroupBarrier();`);
      emit(`  if (team < ${h}u) {`);
      for (let r = 0; r < R; r++) {
        for (let m = 0; m < BM; m++) {
          emit(`    a${r}_${m} += red[team * ${per}u + ${(r * BM + m) * L}u + sl];`);
        }
      }
      emit(`  }`);
      if (h > 1) emit(`  workgroupBarrier();`);
    }
  }
  emit(`  if (team == 0u) {`);
  for (let r = 0; r < R; r++) {
    for (let m = 0; m < BM; m++) {
      emit(
        `    if (m0 + ${m}u < p.M && n${r} < p.N) { Y[(${yRow}m0 + ${m}u) * p.N + n${r}] = a${r}_${m}; }`,
      );
    }
  }
  emit(`  }`);
  emit(`}`);
  return lines.join("\n") + "\n";
}
