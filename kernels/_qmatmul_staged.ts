/**
 * The staged-x parts of the packed low-bit matmul's WGSL generator
 * (`qmatmulWgsl` in `qmatmul_wgsl.ts`, whose module docs describe the work
 * split and the dequantizations): x rows staged in workgroup memory
 * (`sharedX`, with the sums per chunk for "half", or as the byte planes of
 * "dot4"), and the dot products and the end of a "half" or "dot4" step.
 * Private: `qmatmulWgsl` calls them with its emitter and dimensions
 * ({@linkcode StagedGen}).
 *
 * Web-standard only.
 *
 * @module
 */

import type { QmatmulSpec } from "./qmatmul_spec.ts";

/** Swizzle letters of the components of a vec4. */
const xs = "xyzw";

/** The state of `qmatmulWgsl` that the staged-x generators read. */
export interface StagedGen {
  /** Appends one line of WGSL. */
  readonly emit: (s: string) => void;
  /** The specialization. */
  readonly spec: QmatmulSpec;
  /** Bits per code. */
  readonly bits: number;
  /** x rows are staged in workgroup memory. */
  readonly sharedX: boolean;
  /** Chunks of 32 packed columns per row. */
  readonly C: number;
  /** Consecutive chunks per step. */
  readonly U: number;
  /** Rows of x per thread. */
  readonly BM: number;
  /** Row tiles per workgroup. */
  readonly R: number;
  /** Teams per workgroup. */
  readonly W: number;
  /** Threads per team (the tile height, 32). */
  readonly T: number;
  /** Accumulators per output and step (one per bit offset). */
  readonly A: number;
  /** The "half" dequantization. */
  readonly half: boolean;
  /** The "dot4" dequantization. */
  readonly dot4: boolean;
  /** The masks of "half" (empty otherwise). */
  readonly masks: readonly { shift: number; p: number; k: number }[];
  /** Word j of chunk u of row tile r, as a WGSL expression over the loaded values. */
  readonly word: (u: number, r: number) => (j: number) => string;
  /** vec4 j of chunk i of x (`X[i][j]`, times the norm weight with `norm`), as WGSL. */
  readonly xRead: (i: string, j: string) => string;
}

/** x rows into workgroup memory (after the first loads of weights are issued, with prefetch). */
export function stage(g: StagedGen): void {
  const { emit, C, BM, W, T, half, dot4 } = g;
  if (dot4) {
    stageDot4(g);
    return;
  }
  stageX(g);
  if (!half) return;
  // The sums of x per chunk, from the staged copy.
  emit(`  for (var i = t; i < ${BM * C}u; i += ${W * T}u) {`);
  emit(`    let v = ((xs[i][0] + xs[i][1]) + (xs[i][2] + xs[i][3])) +`);
  emit(`      ((xs[i][4] + xs[i][5]) + (xs[i][6] + xs[i][7]));`);
  emit(`    xsum[i] = (v.x + v.y) + (v.z + v.w);`);
  emit(`  }`);
  emit(`  workgroupBarrier();`);
}

/** x as byte planes of 24-bit integers per chunk, one thread per chunk ("dot4"). */
function stageDot4(g: StagedGen): void {
  const { emit, bits, C, BM, W, T } = g;
  const cpw = 32 / bits, ppw = 8 / bits; // codes and planes per word
  emit(`  for (var i = t; i < ${BM * C}u; i += ${W * T}u) {`);
  emit(`    let m = i / ${C}u;`);
  emit(`    let src = min(m0 + m, p.M - 1u) * ${C}u + i - m * ${C}u;`);
  for (let j = 0; j < 8; j++) emit(`    let v${j} = ${g.xRead("src", `${j}u`)};`);
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
}

/** The workgroup's x rows copied into workgroup memory (`sharedX`). */
function stageX(g: StagedGen): void {
  const { emit, spec, sharedX, C, BM, W, T } = g;
  if (!sharedX) return;
  const total = BM * C * 8, per = Math.ceil(total / (W * T));
  if (spec.batchedStage && per <= 8) {
    // Every load of the thread is issued before the first store.
    for (let k = 0; k < per; k++) {
      emit(`  let si${k} = min(t + ${k * W * T}u, ${total - 1}u);`);
      emit(`  let sm${k} = si${k} / ${C * 8}u;`);
      emit(`  let sj${k} = si${k} - sm${k} * ${C * 8}u;`);
      emit(
        `  let sv${k} = ${
          g.xRead(`min(m0 + sm${k}, p.M - 1u) * ${C}u + sj${k} / 8u`, `sj${k} % 8u`)
        };`,
      );
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
  emit(
    `    xs[m * ${C}u + j / 8u][j % 8u] = ${
      g.xRead(`min(m0 + m, p.M - 1u) * ${C}u + j / 8u`, "j % 8u")
    };`,
  );
  emit(`  }`);
  emit(`  workgroupBarrier();`);
}

/** The "half" dot products of a step (after compute() has declared s…, z… and e…). */
export function computeHalf(g: StagedGen, st: string, indent: string): void {
  const { emit, bits, C, U, BM, R, T, masks, word } = g;
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
}

/** The "dot4" dot products of a step: per chunk, integer sums per plane, scaled into e…. */
export function computeDot4(g: StagedGen, st: string, indent: string): void {
  const { emit, bits, C, U, BM, R, word } = g;
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
}

/** The end of a "half" or "dot4" step: e… scaled into Σ q·x, minus z·Σx, times s, into a…. */
export function finishStaged(g: StagedGen, indent: string): void {
  const { emit, bits, C, U, BM, R, A, dot4 } = g;
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
}
