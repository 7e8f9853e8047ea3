/**
 * WGSL generators of the packed low-bit matmul y = x·Ŵᵀ (see
 * `qmatmul_kernel.ts` for the dispatcher, `qmatmul_reference.ts` for the CPU
 * references, and `packed_layout.ts` for the "rowtile32" layout they read).
 * `qmatmul_spec.ts` holds the specialization they take (`QmatmulSpec`) and
 * its checks; `_qmatmul_staged.ts` generates the staging of x in workgroup
 * memory and the steps of the "half" and "dot4" dequantizations.
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
 * workgroup's x rows staged in workgroup memory once (`sharedX`). The
 * few-row default (`qmatmulFewRowSpec`, 1–4 rows of x) is this split with
 * sub-teams of 8–32 lanes, so that even 64 row tiles give 256 workgroups,
 * and x read from global memory.
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
 *   The swept default at 2 and 4 bits for batch 1 (see
 *   `qmatmulSweptFewRowSpec`). Its
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

import { PACK_TILE } from "./packed_layout.ts";
import { codeAsFloat, codeInPlace, exactSpan, halfMasks } from "./_qmatmul_codes.ts";
export {
  type QmatmulGatherSpec,
  qmatmulGatherWgsl,
  qmatmulSplitReduceWgsl,
} from "./_qmatmul_passes.ts";
import { qmatmulTiledWgsl, tiledInvocations, tiledWorkgroupBytes } from "./_qmatmul_tiled.ts";
import { checkQmatmulSpec, type QmatmulSpec } from "./qmatmul_spec.ts";
import {
  computeDot4,
  computeHalf,
  finishStaged,
  stage,
  type StagedGen,
} from "./_qmatmul_staged.ts";

/** 32-bit words per chunk per array element of the code words, by width. */
const WORDS_TYPE: Record<number, string> = {
  2: "vec2<u32>",
  3: "u32",
  4: "vec4<u32>",
  8: "vec4<u32>",
};

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
  // The norm prologue's sums, one per thread.
  const norm = spec.norm ? spec.warps * PACK_TILE * 4 : 0;
  if (spec.dequant === "dot4") return red + norm + chunks * (24 + 3) * 4; // planes, scale, Σx, Σhi
  const sums = spec.dequant === "half" ? chunks * 4 : 0;
  return red + sums + norm + (spec.sharedX ? chunks * PACK_TILE * 4 : 0);
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
  // Adding to y is the last pass's: the split-K sum's when K is split.
  const set = spec.accumulate && SK === 1 ? "+=" : "=";
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
  // Word j of chunk u of row tile r, as a WGSL expression over the loaded values.
  const word = (u: number, r: number) => (j: number): string => {
    if (bits === 3) return `v${u}_${r}_${j}`;
    if (bits === 2) return `v${u}_${r}_0.${xs[j]}`;
    return `v${u}_${r}_${j >> 2}.${xs[j & 3]}`;
  };
  const norm = spec.norm === true;
  // vec4 j of chunk i of x, as the product uses it (times the norm weight with a norm prologue).
  const xRead = (i: string, j: string) => norm ? `xin(${i}, ${j})` : `X[${i}][${j}]`;
  // What the staged-x generators (`_qmatmul_staged.ts`) read.
  const g: StagedGen = {
    xRead,
    emit,
    spec,
    bits,
    sharedX,
    C,
    U,
    BM,
    R,
    W,
    T,
    A,
    half,
    dot4,
    masks,
    word,
  };

  emit(`struct Params { M: u32, N: u32, Np: u32, zero: f32${norm ? ", eps: f32" : ""} }`);
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
  const nwBinding = zeros ? 5 : 4;
  if (norm) {
    emit(
      `@group(0) @binding(${nwBinding}) var<storage, read> NW: array<array<vec4<f32>, 8>>;`,
    );
    emit(`fn xin(i: u32, j: u32) -> vec4<f32> { return X[i][j] * NW[i % ${C}u][j]; }`);
    emit(`var<workgroup> nred: array<f32, ${W * T}>;`);
  }
  emit(`@group(0) @binding(${nwBinding + (norm ? 1 : 0)}) var<uniform> p: Params;`);
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
      if (half) computeHalf(g, st, indent);
      else computeDot4(g, st, indent);
      finishStaged(g, indent);
      return;
    }
    for (let u = 0; u < U; u++) {
      emit(`${indent}let c${u} = (${st}) * ${U}u + ${u}u;`);
      const xsrc = (m: number, i4: number) =>
        sharedX ? `xs[${m * C}u + c${u}][${i4}]` : xRead(`xr${m} + c${u}`, `${i4}u`);
      if (spec.codesFirst) {
        codesFirst(u, indent, xsrc);
        continue;
      }
      for (let i4 = 0; i4 < T / 4; i4++) {
        for (let m = 0; m < BM; m++) {
          emit(`${indent}let x${u}_${i4}_${m} = ${xsrc(m, i4)};`);
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
  const codesFirst = (u: number, indent: string, xsrc: (m: number, i4: number) => string) => {
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
        emit(`${indent}{ let xv = ${xsrc(m, i4)};`);
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

  // RMSNorm prologue: 1/sqrt(mean(x²) + eps) of each of the workgroup's x rows.
  const normPrologue = () => {
    if (!norm) return;
    for (let m = 0; m < BM; m++) {
      emit(`  var ns${m} = 0.0;`);
      emit(`  for (var i = t; i < ${C * 8}u; i += ${W * T}u) {`);
      emit(`    let v = X[xr${m} + i / 8u][i % 8u];`);
      emit(`    ns${m} += dot(v, v);`);
      emit(`  }`);
      emit(`  nred[t] = ns${m};`);
      emit(`  workgroupBarrier();`);
      for (let h = (W * T) / 2; h >= 1; h /= 2) {
        emit(`  if (t < ${h}u) { nred[t] += nred[t + ${h}u]; }`);
        emit(`  workgroupBarrier();`);
      }
      emit(`  let inv${m} = 1.0 / sqrt(nred[0] / ${C * 32}.0 + p.eps);`);
      emit(`  workgroupBarrier();`);
    }
  };
  if (prefetch && SK === 1 && steps === VW) {
    // One step per sub-team: its loads go out first (before the norm prologue and the staging,
    // which they overlap), with no next step to prefetch.
    loads("team", "  ", false);
    normPrologue();
    stage(g);
    emit(`  {`);
    emit(`    let st = team;`);
    compute("st", "    ");
    emit(`  }`);
  } else if (prefetch) {
    // Software pipelining: the loads of step st + W are in flight while step st is used.
    loads(`min(${first}, ${steps - 1}u)`, "  ", false);
    normPrologue();
    stage(g);
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
    normPrologue();
    stage(g);
    emit(`  for (var st = ${first}; st < ${end}; st += ${VW}u) {`);
    loads("st", "    ", false);
    compute("st", "    ");
    emit(`  }`);
  }
  for (let r = 0; r < R; r++) {
    for (let m = 0; m < BM; m++) {
      const parts = Array.from({ length: P }, (_, q) => `a${r}_${m}_${q}`);
      const sum = parts.join(" + ");
      emit(`  var a${r}_${m} = ${norm ? `(${sum}) * inv${m}` : sum};`);
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
  if (spec.swiglu) {
    // Tiles r and r + 1 are the gate and up rows of the same outputs.
    for (let r = 0; r < R; r += 2) {
      for (let m = 0; m < BM; m++) {
        emit(
          `    if (m0 + ${m}u < p.M && n${r} < p.N) { let z = a${r}_${m}; Y[(m0 + ${m}u) * (p.N / 2u) + (tile0 + ${r}u) / 2u * ${T}u + n${r} % ${T}u] = z / (1.0 + exp(-z)) * a${
            r + 1
          }_${m}; }`,
        );
      }
    }
  } else {
    for (let r = 0; r < R; r++) {
      for (let m = 0; m < BM; m++) {
        emit(
          `    if (m0 + ${m}u < p.M && n${r} < p.N) { Y[(${yRow}m0 + ${m}u) * p.N + n${r}] ${set} a${r}_${m}; }`,
        );
      }
    }
  }
  emit(`  }`);
  emit(`}`);
  return lines.join("\n") + "\n";
}
