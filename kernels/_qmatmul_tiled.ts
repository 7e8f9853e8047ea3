/**
 * The tiled path of the packed low-bit matmul (`QmatmulSpec.tiled`), for
 * batches where the per-thread path dequantizes every code once per x tile
 * of at most 16 rows. Private: `qmatmul_wgsl.ts` calls it.
 *
 * A workgroup owns BN = 32·`rowTiles` weight rows and BM = `batch` x rows
 * (up to 128). Its `warps` teams split K: a team takes steps of `unroll`
 * chunks (32·unroll values of K) in turn, and per step
 *
 * 1. stages its step cooperatively in workgroup memory: the x values as
 *    [k][m] and the weights dequantized once as [k][n] (each of the BN rows'
 *    chunks read by `parts` threads, with the "fma" dequantization of the
 *    module docs of `qmatmul_wgsl.ts`: ŵ = fma(1 + q/2^b, s·2^b, −(s·z + s·2^b)));
 * 2. after a barrier, every thread of the team adds the outer products of
 *    its micro-tile, `microRows` weight rows × `microBatch` x rows, over the
 *    step's k: one vec4 load of weights and of x per 4 rows, one vec4 FMA per
 *    4 outputs (a register-tiled GEMM over the staged tile).
 *
 * So each code is dequantized once per BM x rows, and each staged value is
 * read by BN/microRows or BM/microBatch threads. With `prefetch`, a team's
 * global loads of the next step are in flight (in registers) while it
 * computes the current one. Teams add their sums in workgroup memory at the
 * end (team order, deterministic).
 *
 * Micro-tiles of 8 take two groups of 4 rows half a tile apart (rows
 * 4i…4i+3 and BN/2 + 4i…), so the vec4 loads of neighbouring threads are
 * contiguous.
 *
 * Web-standard only.
 *
 * @module
 */

import { PACK_TILE } from "./packed_layout.ts";
import { codeAsFloat } from "./_qmatmul_codes.ts";
import type { QmatmulSpec } from "./qmatmul_spec.ts";

/** Shape of a tiled specialization. */
interface TiledShape {
  /** Weight rows per workgroup. */
  bn: number;
  /** x rows per workgroup. */
  bm: number;
  /** Micro-tile: weight rows and x rows per thread. */
  tn: number;
  tm: number;
  /** Threads per team. */
  tpt: number;
  /** Values of K per step. */
  ks: number;
  /** Threads per row chunk when staging the weights. */
  parts: number;
}

function shapeOf(spec: QmatmulSpec): TiledShape {
  const bn = spec.rowTiles * PACK_TILE, bm = spec.batch;
  const tn = spec.microRows ?? 4, tm = spec.microBatch ?? 4;
  const tpt = (bn / tn) * (bm / tm);
  const ks = spec.unroll * PACK_TILE;
  // Parts start on word boundaries: a power of two dividing bits, at most one unit per thread.
  const p2 = spec.bits & -spec.bits;
  let parts = 1;
  while (parts < p2 && bn * spec.unroll * parts * 2 <= tpt) parts *= 2;
  return { bn, bm, tn, tm, tpt, ks, parts };
}

/**
 * Throws a `RangeError` naming the first field that does not fit the tiled
 * path (after the common checks of `checkQmatmulSpec`).
 *
 * @param spec The specialization.
 * @param bad Throws the error.
 */
export function checkTiledSpec(
  spec: QmatmulSpec,
  bad: (name: string, v: unknown, what: string) => never,
): void {
  const tn = spec.microRows ?? 4, tm = spec.microBatch ?? 4;
  if (tn !== 4 && tn !== 8) bad("microRows", tn, "4 or 8");
  if (tm !== 4 && tm !== 8) bad("microBatch", tm, "4 or 8");
  if (!Number.isInteger(spec.batch) || spec.batch % tm !== 0 || spec.batch > 128) {
    bad("batch", spec.batch, `a multiple of microBatch (${tm}) up to 128 when tiled`);
  }
  if (spec.split !== 1) bad("split", spec.split, "1 when tiled");
  if (spec.dequant !== "fma") bad("dequant", spec.dequant, '"fma" when tiled');
  if (spec.sharedX) bad("sharedX", spec.sharedX, "false when tiled (x is always staged)");
}

/**
 * Invocations per workgroup of a tiled specialization.
 *
 * @param spec The specialization.
 * @returns Threads.
 */
export function tiledInvocations(spec: QmatmulSpec): number {
  return shapeOf(spec).tpt * spec.warps;
}

/**
 * Workgroup memory (bytes) of a tiled specialization: per team the staged
 * step, which the partial sums of all teams but the first reuse at the end.
 *
 * @param spec The specialization.
 * @returns Bytes.
 */
export function tiledWorkgroupBytes(spec: QmatmulSpec): number {
  const { bn, bm, ks } = shapeOf(spec);
  return Math.max(spec.warps * ks * (bn + bm), (spec.warps - 1) * bn * bm) * 4;
}

/**
 * WGSL of a tiled specialization, with the bindings of `qmatmulWgsl` (the
 * code words read as plain u32).
 *
 * @param spec The specialization (checked by the caller).
 * @returns WGSL source with entry point `main`.
 */
export function qmatmulTiledWgsl(spec: QmatmulSpec): string {
  const { bits, scaleType, zeros, chunks: C, groupChunks: CPG, warps: KT, unroll: U } = spec;
  const { bn: BN, bm: BM, tn: TN, tm: TM, tpt: TPT, ks: KS, parts: P } = shapeOf(spec);
  const T = PACK_TILE;
  const steps = C / U, rounds = Math.ceil(steps / KT);
  const NB = BN / TN, WPP = bits / P, CPP = T / P;
  const xUnits = BM * U * 8, wUnits = BN * P * U;
  const xPer = Math.ceil(xUnits / TPT), wPer = Math.ceil(wUnits / TPT);
  const NA = TM * (TN / 4); // vec4 accumulators per thread
  const set = spec.accumulate ? "+=" : "="; // add the product to y's values
  const xs = "xyzw";
  const meta = scaleType === "f16" ? "u32" : "f32";
  const lines: string[] = [];
  const emit = (s: string) => lines.push(s);

  emit(`struct Params { M: u32, N: u32, Np: u32, zero: f32 }`);
  emit(`@group(0) @binding(0) var<storage, read_write> Y: array<f32>;`);
  emit(`@group(0) @binding(1) var<storage, read> X: array<array<vec4<f32>, 8>>;`);
  emit(`@group(0) @binding(2) var<storage, read> Wq: array<u32>;`);
  emit(`@group(0) @binding(3) var<storage, read> S: array<${meta}>;`);
  if (zeros) emit(`@group(0) @binding(4) var<storage, read> Z: array<${meta}>;`);
  emit(`@group(0) @binding(${zeros ? 5 : 4}) var<uniform> p: Params;`);
  // The teams' staged steps: weights [k][n] from 0, x [k][m] from XS; then the cross-team sums.
  const XS = KT * KS * BN / 4;
  const stage = Math.max(XS + KT * KS * BM / 4, (KT - 1) * TPT * NA);
  emit(`var<workgroup> sh: array<vec4<f32>, ${stage}>;`);
  emit(`@compute @workgroup_size(${KT * TPT})`);
  emit(`fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) t: u32) {`);
  emit(`  let team = t / ${TPT}u;`);
  emit(`  let tt = t % ${TPT}u;`);
  emit(`  let nb = tt % ${NB}u;`);
  emit(`  let mb = tt / ${NB}u;`);
  emit(`  let m0 = wg.y * ${BM}u;`);
  emit(`  let wb = team * ${KS * BN / 4}u;`);
  emit(`  let xb = ${XS}u + team * ${KS * BM / 4}u;`);
  for (let a = 0; a < NA; a++) emit(`  var acc${a} = vec4<f32>(0.0);`);

  // Declarations of the registers (with prefetch, they outlive the block that loads them).
  const declare = (ind: string) => {
    for (let k = 0; k < xPer; k++) emit(`${ind}var xv${k}: vec4<f32>;`);
    for (let k = 0; k < wPer; k++) {
      emit(`${ind}var ms${k}: ${meta};`);
      if (zeros) emit(`${ind}var mz${k}: ${meta};`);
      for (let j = 0; j < WPP; j++) emit(`${ind}var w${k}_${j}: u32;`);
      emit(`${ind}var nn${k}: u32;`);
    }
  };
  // Loads that assign the declared registers.
  const loadInto = (st: string, ind: string) => {
    emit(`${ind}{`);
    emit(`${ind}  let c0 = (${st}) * ${U}u;`);
    for (let k = 0; k < xPer; k++) {
      emit(`${ind}  let ux${k} = min(tt + ${k * TPT}u, ${xUnits - 1}u);`);
      emit(`${ind}  let rx${k} = ux${k} / ${BM}u;`);
      const row = `min(m0 + ux${k} % ${BM}u, p.M - 1u)`;
      emit(`${ind}  xv${k} = X[${row} * ${C}u + c0 + rx${k} / 8u][rx${k} % 8u];`);
    }
    for (let k = 0; k < wPer; k++) {
      emit(`${ind}  let uw${k} = min(tt + ${k * TPT}u, ${wUnits - 1}u);`);
      emit(`${ind}  let n${k} = wg.x * ${BN}u + uw${k} % ${BN}u;`);
      emit(`${ind}  nn${k} = n${k};`);
      emit(`${ind}  let rw${k} = uw${k} / ${BN}u;`);
      emit(
        `${ind}  let wi${k} = (((n${k} / ${T}u) * ${C}u + c0 + rw${k} / ${P}u) * ${T}u + n${k} % ${T}u) * ${bits}u + (rw${k} % ${P}u) * ${WPP}u;`,
      );
      const mi = `(c0 / ${CPG}u) * p.Np + n${k}`;
      const idx = scaleType === "f16" ? `(${mi}) >> 1u` : mi;
      emit(`${ind}  ms${k} = S[${idx}];`);
      if (zeros) emit(`${ind}  mz${k} = Z[${idx}];`);
      for (let j = 0; j < WPP; j++) emit(`${ind}  w${k}_${j} = Wq[wi${k} + ${j}u];`);
    }
    emit(`${ind}}`);
  };
  // Stores of the registers into the team's staging buffers, the weights dequantized.
  const stores = (ind: string) => {
    for (let k = 0; k < xPer; k++) {
      const guard = (k + 1) * TPT > xUnits;
      const i2 = guard ? ind + "  " : ind;
      if (guard) emit(`${ind}if (tt + ${k * TPT}u < ${xUnits}u) {`);
      emit(`${i2}{ let u = tt + ${k * TPT}u;`);
      emit(`${i2}  let m = u % ${BM}u;`);
      emit(`${i2}  let r = u / ${BM}u;`);
      emit(`${i2}  let k0 = xb + ((r / 8u) * ${T}u + (r % 8u) * 4u) * ${BM / 4}u + m / 4u;`);
      for (let e = 0; e < 4; e++) {
        emit(`${i2}  sh[k0 + ${e * BM / 4}u][m % 4u] = xv${k}.${xs[e]};`);
      }
      emit(`${i2}}`);
      if (guard) emit(`${ind}}`);
    }
    for (let k = 0; k < wPer; k++) {
      const guard = (k + 1) * TPT > wUnits;
      const i2 = guard ? ind + "  " : ind;
      if (guard) emit(`${ind}if (tt + ${k * TPT}u < ${wUnits}u) {`);
      emit(`${i2}{ let u = tt + ${k * TPT}u;`);
      emit(`${i2}  let n = u % ${BN}u;`);
      emit(`${i2}  let r = u / ${BN}u;`);
      const unpack = (v: string) =>
        `select(unpack2x16float(${v}).x, unpack2x16float(${v}).y, (nn${k} & 1u) == 1u)`;
      emit(`${i2}  let s = ${scaleType === "f16" ? unpack(`ms${k}`) : `ms${k}`};`);
      emit(
        `${i2}  let z = ${zeros ? (scaleType === "f16" ? unpack(`mz${k}`) : `mz${k}`) : "p.zero"};`,
      );
      emit(`${i2}  let sc = s * ${1 << bits}.0;`);
      emit(`${i2}  let ofs = -fma(s, z, sc);`);
      emit(
        `${i2}  let k0 = wb + ((r / ${P}u) * ${T}u + (r % ${P}u) * ${CPP}u) * ${BN / 4}u + n / 4u;`,
      );
      for (let e = 0; e < CPP; e++) {
        const f = codeAsFloat(bits, e, (j) => `w${k}_${j}`);
        emit(`${i2}  sh[k0 + ${e * BN / 4}u][n % 4u] = fma(${f}, sc, ofs);`);
      }
      emit(`${i2}}`);
      if (guard) emit(`${ind}}`);
    }
  };
  // The micro-tile's outer products over the team's staged step.
  const compute = (ind: string) => {
    emit(`${ind}for (var k = 0u; k < ${KS}u; k += 4u) {`);
    for (let kk = 0; kk < 4; kk++) {
      emit(`${ind}  {`);
      const kx = `k + ${kk}u`;
      for (let g = 0; g < TN / 4; g++) {
        emit(`${ind}    let wv${g} = sh[wb + (${kx}) * ${BN / 4}u + ${g * BN / 8}u + nb];`);
      }
      for (let h = 0; h < TM / 4; h++) {
        emit(`${ind}    let xq${h} = sh[xb + (${kx}) * ${BM / 4}u + ${h * BM / 8}u + mb];`);
      }
      for (let i = 0; i < TM; i++) {
        for (let g = 0; g < TN / 4; g++) {
          const a = `acc${i * (TN / 4) + g}`;
          emit(`${ind}    ${a} = fma(vec4<f32>(xq${i >> 2}.${xs[i & 3]}), wv${g}, ${a});`);
        }
      }
      emit(`${ind}  }`);
    }
    emit(`${ind}}`);
  };

  declare("  ");
  if (spec.prefetch) {
    loadInto(`min(team, ${steps - 1}u)`, "  ");
    emit(`  for (var i = 0u; i < ${rounds}u; i++) {`);
    emit(`    let st = i * ${KT}u + team;`);
    emit(`    workgroupBarrier();`);
    stores("    ");
    emit(`    workgroupBarrier();`);
    loadInto(`min(st + ${KT}u, ${steps - 1}u)`, "    ");
    emit(`    if (st < ${steps}u) {`);
    compute("      ");
    emit(`    }`);
    emit(`  }`);
  } else {
    emit(`  for (var i = 0u; i < ${rounds}u; i++) {`);
    emit(`    let st = i * ${KT}u + team;`);
    emit(`    workgroupBarrier();`);
    loadInto(`min(st, ${steps - 1}u)`, "    ");
    stores("    ");
    emit(`    workgroupBarrier();`);
    emit(`    if (st < ${steps}u) {`);
    compute("      ");
    emit(`    }`);
    emit(`  }`);
  }
  if (KT > 1) {
    // Every team but the first hands its sums over; the first adds them in team order.
    emit(`  workgroupBarrier();`);
    emit(`  if (team > 0u) {`);
    for (let a = 0; a < NA; a++) {
      emit(`    sh[((team - 1u) * ${TPT}u + tt) * ${NA}u + ${a}u] = acc${a};`);
    }
    emit(`  }`);
    emit(`  workgroupBarrier();`);
    emit(`  if (team == 0u) {`);
    emit(`    for (var w = 0u; w < ${KT - 1}u; w++) {`);
    for (let a = 0; a < NA; a++) emit(`      acc${a} += sh[(w * ${TPT}u + tt) * ${NA}u + ${a}u];`);
    emit(`    }`);
    emit(`  }`);
  }
  emit(`  if (team == 0u) {`);
  for (let i = 0; i < TM; i++) {
    const mrow = `m0 + ${i < 4 ? 0 : BM / 2}u + mb * 4u + ${i & 3}u`;
    emit(`    { let m = ${mrow};`);
    emit(`      if (m < p.M) {`);
    for (let g = 0; g < TN / 4; g++) {
      for (let e = 0; e < 4; e++) {
        emit(
          `        { let n = wg.x * ${BN}u + ${
            g * BN / 2
          }u + nb * 4u + ${e}u; if (n < p.N) { Y[m * p.N + n] ${set} acc${i * (TN / 4) + g}.${
            xs[e]
          }; } }`,
        );
      }
    }
    emit(`      }`);
    emit(`    }`);
  }
  emit(`  }`);
  emit(`}`);
  return lines.join("\n") + "\n";
}
