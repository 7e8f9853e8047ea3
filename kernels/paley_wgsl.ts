/**
 * WGSL generator of the Paley type I block of a Hadamard transform on the
 * GPU (`paley_kernel.ts` prepares and dispatches it), by its k-dimensional
 * DFT over GF(p^k)'s additive group (`core/_paley_fast.ts` describes the
 * algorithm and is the executable specification): about 4·k multiply-adds
 * per element each way instead of the q + 1 of the dense product, so the
 * pass is bound by memory, not by FLOPs.
 *
 * A workgroup stages `chunks` consecutive blocks of q + 1 values in workgroup
 * memory (block stride padded to an odd word count, so that the lanes of a
 * warp, which take the same line of consecutive blocks, hit distinct banks),
 * runs the axis passes with one barrier each (the last forward axis, the
 * multiplier and the first inverse axis fused in registers), and writes the
 * blocks back. With `pow2 > 1` it also applies H_{pow2} across each group of
 * `pow2` consecutive blocks before writing, in registers (a row of
 * `H_{pow2} ⊗ Paley I(q)` is one such group): the whole transform in one pass.
 *
 * Web-standard only.
 *
 * @module
 */

import { paleyFastPlan } from "../core/_paley_fast.ts";

/** Specialization of {@linkcode paleyWgsl}. */
export interface PaleySpec {
  /** Field order q = p^k ≡ 3 (mod 4); the block has order q + 1. */
  readonly q: number;
  /** Apply Hᵀ = I − S instead of H = I + S. */
  readonly transpose: boolean;
  /** Blocks per workgroup (a multiple of `pow2`). */
  readonly chunks: number;
  /** Workgroup size. */
  readonly threads: number;
  /** 1, or the Sylvester order applied across each group of `pow2` consecutive blocks. */
  readonly pow2: number;
  /** Move global memory as vec4 (needs 4 | q + 1, which holds for every q ≡ 3 mod 4). */
  readonly vec4: boolean;
  /**
   * Transform axes 0 and 1 together, a thread per p×p plane in registers
   * (two barriers and two workgroup-memory round trips fewer; needs k ≥ 3).
   */
  readonly plane: boolean;
  /**
   * 0: one workgroup per `chunks` blocks. Otherwise this many workgroups loop
   * over the blocks, loading the next blocks into registers while they
   * transform the current ones (needs `vec4`).
   */
  readonly persistent: number;
}

/** Largest characteristic the generator unrolls (p-point DFTs are written out). */
export const PALEY_MAX_P = 31;

/** Word stride of a block in workgroup memory: q + 1 rounded up to an odd count. */
function blockStride(q: number): number {
  return (q + 1) % 2 === 1 ? q + 1 : q + 2;
}

/**
 * Workgroup memory (bytes) of a specialization.
 *
 * @param spec The specialization.
 * @returns Bytes.
 */
export function paleyWorkgroupBytes(spec: PaleySpec): number {
  return 4 * spec.chunks * blockStride(spec.q);
}

function validate(spec: PaleySpec): { p: number; k: number } {
  const { q, chunks, threads, pow2, vec4 } = spec;
  const plan = paleyFastPlan(q);
  const ok = plan.p <= PALEY_MAX_P && Number.isInteger(chunks) && chunks >= 1 &&
    Number.isInteger(threads) && threads >= 32 && threads <= 1024 && threads % 32 === 0 &&
    Number.isInteger(pow2) && pow2 >= 1 && (pow2 & (pow2 - 1)) === 0 && pow2 <= 64 &&
    chunks % pow2 === 0 && (!vec4 || (q + 1) % 4 === 0) && (!spec.plane || plan.k >= 3) &&
    Number.isInteger(spec.persistent) && spec.persistent >= 0 && (spec.persistent === 0 || vec4);
  if (!ok) {
    throw new RangeError(`Cannot build the Paley kernel: invalid spec ${JSON.stringify(spec)}`);
  }
  return { p: plan.p, k: plan.k };
}

function lit(v: number): string {
  const s = Math.abs(v) < 1e-12 ? "0.0" : v.toPrecision(10);
  return s.includes(".") || s.includes("e") ? s : `${s}.0`;
}

/** Statements in their own scope. */
function block(lines: string[]): string[] {
  return ["{", ...lines.map((l) => "  " + l), "}"];
}

/**
 * The code generator of one p: line transforms, in place, over values held
 * in named registers (`a` the real parts, `b` the imaginary parts).
 */
class LineCode {
  readonly p: number;
  readonly h: number;
  readonly c: string[];
  readonly s: string[];
  constructor(p: number) {
    this.p = p;
    this.h = (p - 1) / 2;
    this.c = Array.from({ length: p }, (_, t) => lit(Math.cos((2 * Math.PI * t) / p)));
    this.s = Array.from({ length: p }, (_, t) => lit(Math.sin((2 * Math.PI * t) / p)));
  }

  /** Σ_j terms[j]·table[(u·j) mod p], j = 1..h, plus an optional first term. */
  #sum(first: string | null, names: (j: number) => string, table: string[], u: number): string {
    const parts: string[] = first === null ? [] : [first];
    for (let j = 1; j <= this.h; j++) parts.push(`${names(j)} * ${table[(u * j) % this.p]}`);
    return parts.length === 0 ? "0.0" : parts.join(" + ");
  }

  /** Real values a[0..p) → packed spectrum (slot 0, Re u, Im u + h). */
  forwardReal(a: readonly string[]): string[] {
    const { p, h } = this;
    const out: string[] = [];
    for (let j = 1; j <= h; j++) {
      out.push(`let sp${j} = ${a[j]} + ${a[p - j]}; let dm${j} = ${a[j]} - ${a[p - j]};`);
    }
    const sum = [a[0], ...Array.from({ length: h }, (_, j) => `sp${j + 1}`)].join(" + ");
    out.push(`let r0 = ${sum};`);
    for (let u = 1; u <= h; u++) {
      out.push(`let r${u} = ${this.#sum(a[0]!, (j) => `sp${j}`, this.c, u)};`);
      out.push(`let r${u + h} = -(${this.#sum(null, (j) => `dm${j}`, this.s, u)});`);
    }
    for (let m = 0; m < p; m++) out.push(`${a[m]} = r${m};`);
    return block(out);
  }

  /** Packed spectrum a[0..p) → real values (no 1/p). */
  inverseReal(a: readonly string[]): string[] {
    const { p, h } = this;
    const out: string[] = [];
    for (let u = 1; u <= h; u++) {
      out.push(`let tr${u} = 2.0 * ${a[u]}; let ti${u} = 2.0 * ${a[u + h]};`);
    }
    const sum = [a[0], ...Array.from({ length: h }, (_, u) => `tr${u + 1}`)].join(" + ");
    out.push(`let r0 = ${sum};`);
    for (let m = 1; m <= h; m++) {
      out.push(`let pc${m} = ${this.#sum(a[0]!, (u) => `tr${u}`, this.c, m)};`);
      out.push(`let pd${m} = ${this.#sum(null, (u) => `ti${u}`, this.s, m)};`);
    }
    out.push(`${a[0]} = r0;`);
    for (let m = 1; m <= h; m++) {
      out.push(`${a[m]} = pc${m} - pd${m}; ${a[p - m]} = pc${m} + pd${m};`);
    }
    return block(out);
  }

  /** Complex DFT of (a, b) in place: X_u = Σ z_m·ω^{dir·u·m}. */
  complex(dir: 1 | -1, a: readonly string[], b: readonly string[]): string[] {
    const { p, h } = this;
    const out: string[] = [];
    for (let j = 1; j <= h; j++) {
      out.push(
        `let spr${j} = ${a[j]} + ${a[p - j]}; let spi${j} = ${b[j]} + ${b[p - j]};`,
        `let smr${j} = ${a[j]} - ${a[p - j]}; let smi${j} = ${b[j]} - ${b[p - j]};`,
      );
    }
    const sr = [a[0], ...Array.from({ length: h }, (_, j) => `spr${j + 1}`)].join(" + ");
    const si = [b[0], ...Array.from({ length: h }, (_, j) => `spi${j + 1}`)].join(" + ");
    out.push(`let xr0 = ${sr}; let xi0 = ${si};`);
    // X_u = A + dir·i·B, X_{p−u} = A − dir·i·B.
    const [plus, minus] = dir === 1 ? ["-", "+"] : ["+", "-"];
    for (let u = 1; u <= h; u++) {
      out.push(
        `let ar${u} = ${this.#sum(a[0]!, (j) => `spr${j}`, this.c, u)};`,
        `let ai${u} = ${this.#sum(b[0]!, (j) => `spi${j}`, this.c, u)};`,
        `let cr${u} = ${this.#sum(null, (j) => `smr${j}`, this.s, u)};`,
        `let ci${u} = ${this.#sum(null, (j) => `smi${j}`, this.s, u)};`,
        `let xr${u} = ar${u} ${plus} ci${u}; let xi${u} = ai${u} ${minus} cr${u};`,
        `let xr${p - u} = ar${u} ${minus} ci${u}; let xi${p - u} = ai${u} ${plus} cr${u};`,
      );
    }
    for (let m = 0; m < p; m++) out.push(`${a[m]} = xr${m}; ${b[m]} = xi${m};`);
    return block(out);
  }
}

/** WGSL that sets `br`, `bi` (field offsets of a complex line's halves) from `u` for axis j. */
function decodePair(p: number, k: number, j: number): string[] {
  const h = (p - 1) / 2, after = p ** (k - 1 - j), stride = p ** j;
  const out: string[] = [];
  let closing = "";
  for (let i = 0; i < j; i++) {
    const mid = p ** (j - 1 - i), pi = p ** i, count = h * mid * after;
    const body = [
      `let c = 1u + u % ${h}u; let m = (u / ${h}u) % ${mid}u; let hi = u / ${h * mid}u;`,
      `br = c * ${pi}u + m * ${pi * p}u + hi * ${stride * p}u; bi = br + ${h * pi}u;`,
    ].join(" ");
    if (i < j - 1) {
      out.push(`if (u < ${count}u) { ${body} } else { u = u - ${count}u;`);
      closing += " }";
    } else {
      out.push(`{ ${body} }${closing}`);
    }
  }
  return out;
}

/**
 * WGSL of the Paley I block transform (see the module docs). Bindings: 0 = Y
 * (f32, written; vec4 with `vec4` and no `pow2`), 1 = X (f32, read; vec4 with `vec4`), 2 = multipliers
 * (1 ± λ_u)/q as vec2 per packed position, 3 = parameters {blocks, scale}.
 *
 * @param spec The specialization.
 * @returns WGSL source.
 */
export function paleyWgsl(spec: PaleySpec): string {
  const { p, k } = validate(spec);
  const { q, transpose, chunks: C, threads: T, pow2, vec4 } = spec;
  const h = (p - 1) / 2, m1 = q + 1, SC = blockStride(q);
  const sigma = transpose ? -1 : 1;
  const L = new LineCode(p);
  const A = Array.from({ length: p }, (_, m) => `a${m}`);
  const B = Array.from({ length: p }, (_, m) => `b${m}`);
  const ind = (lines: string[], pad: string): string => lines.map((l) => pad + l).join("\n");
  const loadLine = (base: string, s: number, im: string | null): string[] => {
    const out: string[] = [];
    for (let m = 0; m < p; m++) {
      out.push(`var a${m} = sm[${base} + ${m * s}u];`);
      if (im !== null) out.push(`var b${m} = sm[${im} + ${m * s}u];`);
    }
    return out;
  };
  const storeLine = (base: string, s: number, im: string | null): string[] => {
    const out: string[] = [];
    for (let m = 0; m < p; m++) {
      out.push(`sm[${base} + ${m * s}u] = a${m};`);
      if (im !== null) out.push(`sm[${im} + ${m * s}u] = b${m};`);
    }
    return out;
  };
  const pass = (j: number, body: (real: boolean) => string[]): string => {
    const R = p ** (k - 1 - j), stride = p ** j;
    const pairs = (q / p - R) / 2, tasks = R + pairs;
    const lines = [
      `for (var w = tid; w < ${C * tasks}u; w = w + ${T}u) {`,
      `  let cb = (w % ${C}u) * ${SC}u + 1u; let t = w / ${C}u;`,
      `  if (t < ${R}u) {`,
      `    let b = cb + t * ${stride * p}u;`,
      ind(body(true), "    "),
    ];
    if (pairs > 0) {
      lines.push(
        `  } else {`,
        `    var u = t - ${R}u; var br = 0u; var bi = 0u;`,
        ind(decodePair(p, k, j), "    "),
        ind(body(false), "    "),
      );
    }
    lines.push(`  }`, `}`, `workgroupBarrier();`);
    return lines.join("\n");
  };
  const passes: string[] = [];
  // Plane pass: axes 0 and 1 of a p×p plane (p² consecutive entries) in registers.
  const P = Array.from(
    { length: p },
    (_, d1) => Array.from({ length: p }, (_, m) => `pl${d1}_${m}`),
  );
  const col = (m: number): string[] => P.map((row) => row[m]!);
  const planePass = (forward: boolean): string => {
    const body: string[] = [];
    for (let d1 = 0; d1 < p; d1++) {
      for (let m = 0; m < p; m++) body.push(`var ${P[d1]![m]} = sm[pb + ${d1 * p + m}u];`);
    }
    const rows = P.flatMap((row) => forward ? L.forwardReal(row) : []);
    const cols = [
      ...(forward ? L.forwardReal(col(0)) : L.inverseReal(col(0))),
      ...Array.from(
        { length: h },
        (_, c) => L.complex(forward ? -1 : 1, col(c + 1), col(c + 1 + h)),
      ).flat(),
    ];
    body.push(...(forward ? [...rows, ...cols] : [...cols, ...P.flatMap((r) => L.inverseReal(r))]));
    for (let d1 = 0; d1 < p; d1++) {
      for (let m = 0; m < p; m++) body.push(`sm[pb + ${d1 * p + m}u] = ${P[d1]![m]};`);
    }
    return [
      `for (var w = tid; w < ${(C * q) / (p * p)}u; w = w + ${T}u) {`,
      `  let pb = (w % ${C}u) * ${SC}u + 1u + (w / ${C}u) * ${p * p}u;`,
      ind(body, "  "),
      `}`,
      `workgroupBarrier();`,
    ].join("\n");
  };
  const first = spec.plane ? 2 : 0;
  if (spec.plane) passes.push(planePass(true));
  for (let j = first; j < k - 1; j++) {
    const s = p ** j;
    passes.push(
      pass(
        j,
        (real) =>
          real ? [...loadLine("b", s, null), ...L.forwardReal(A), ...storeLine("b", s, null)] : [
            ...loadLine("cb + br", s, "cb + bi"),
            ...L.complex(-1, A, B),
            ...storeLine("cb + br", s, "cb + bi"),
          ],
      ),
    );
  }
  // Last axis: forward, multiplier, inverse in registers.
  const S = p ** (k - 1);
  passes.push(pass(k - 1, (real) => {
    if (real) {
      const mulLines: string[] = [
        `let x0 = sm[cb - 1u];`,
        `sm[cb - 1u] = x0 + ${lit(sigma)} * a0;`,
        `a0 = a0 * ${lit(1 / q)} - ${lit(sigma)} * x0;`,
      ];
      for (let u = 1; u <= h; u++) {
        mulLines.push(
          `{ let g = M[${u * S}u]; let re = a${u}; let im = a${u + h};`,
          `  a${u} = re * g.x - im * g.y; a${u + h} = re * g.y + im * g.x; }`,
        );
      }
      return [
        ...loadLine("b", S, null),
        ...L.forwardReal(A),
        ...mulLines,
        ...L.inverseReal(A),
        ...storeLine("b", S, null),
      ];
    }
    const mulLines: string[] = [];
    for (let u = 0; u < p; u++) {
      mulLines.push(
        `{ let g = M[br + ${u * S}u]; let re = a${u}; let im = b${u};`,
        `  a${u} = re * g.x - im * g.y; b${u} = re * g.y + im * g.x; }`,
      );
    }
    return [
      ...loadLine("cb + br", S, "cb + bi"),
      ...L.complex(-1, A, B),
      ...mulLines,
      ...L.complex(1, A, B),
      ...storeLine("cb + br", S, "cb + bi"),
    ];
  }));
  for (let j = k - 2; j >= first; j--) {
    const s = p ** j;
    passes.push(
      pass(
        j,
        (real) =>
          real ? [...loadLine("b", s, null), ...L.inverseReal(A), ...storeLine("b", s, null)] : [
            ...loadLine("cb + br", s, "cb + bi"),
            ...L.complex(1, A, B),
            ...storeLine("cb + br", s, "cb + bi"),
          ],
      ),
    );
  }
  if (spec.plane) passes.push(planePass(false));
  // vec4 loads all issued before any is used (unrolled, clamped instead of
  // branched: the last workgroup may read past its blocks and never stores those).
  const n4 = (C * m1) / 4, K4 = Math.ceil(n4 / T);
  const issue = (decl: string, group: string): string[] =>
    Array.from(
      { length: K4 },
      (_, r) => `${decl}ld${r} = X[min(${group} * ${n4}u + tid + ${r * T}u, lim)];`,
    );
  const commit = Array.from({ length: K4 }, (_, r) => {
    const body = `let e = 4u * (tid + ${r * T}u); let d = (e / ${m1}u) * ${SC}u + e % ${m1}u;
  sm[d] = ld${r}.x; sm[d + 1u] = ld${r}.y; sm[d + 2u] = ld${r}.z; sm[d + 3u] = ld${r}.w;`;
    return (r + 1) * T <= n4 ? `{ ${body} }` : `if (tid + ${r * T}u < ${n4}u) { ${body} }`;
  });
  const load = vec4
    ? [...issue("let ", "group"), ...commit].join("\n")
    : `for (var i = tid; i < ${C * m1}u; i = i + ${T}u) {
  if (g0 + i < total) { sm[(i / ${m1}u) * ${SC}u + i % ${m1}u] = X[g0 + i]; }
}`;
  let store: string;
  if (pow2 === 1 && vec4) {
    store = `for (var i = tid; i < ${n4}u; i = i + ${T}u) {
  if (g0 / 4u + i < total / 4u) {
    let e = 4u * i; let d = (e / ${m1}u) * ${SC}u + e % ${m1}u;
    Y[g0 / 4u + i] = vec4<f32>(sm[d], sm[d + 1u], sm[d + 2u], sm[d + 3u]) * prm.scale;
  }
}`;
  } else if (pow2 === 1) {
    store = `for (var i = tid; i < ${C * m1}u; i = i + ${T}u) {
  if (g0 + i < total) { Y[g0 + i] = sm[(i / ${m1}u) * ${SC}u + i % ${m1}u] * prm.scale; }
}`;
  } else {
    const lines: string[] = [];
    for (let c = 0; c < pow2; c++) lines.push(`var v${c} = sm[d + ${c * SC}u];`);
    const r = Math.round(Math.log2(pow2));
    for (let bit = 0; bit < r; bit++) {
      for (let c = 0; c < pow2; c++) {
        if (c & (1 << bit)) continue;
        const e = c + (1 << bit);
        lines.push(`{ let u = v${c}; v${c} = u + v${e}; v${e} = u - v${e}; }`);
      }
    }
    for (let c = 0; c < pow2; c++) lines.push(`Y[o + ${c * m1}u] = v${c} * prm.scale;`);
    store = `for (var i = tid; i < ${(C / pow2) * m1}u; i = i + ${T}u) {
  let grp = i / ${m1}u; let off = i % ${m1}u;
  let d = grp * ${pow2 * SC}u + off;
  let o = g0 + grp * ${pow2 * m1}u + off;
  if (o < total) {
${ind(lines, "    ")}
  }
}`;
  }
  const single = `  let group = wg.x + wg.y * nwg.x;
  if (group * ${C}u >= prm.blocks) { return; }
  let g0 = group * ${C * m1}u;
${load}
workgroupBarrier();
${passes.join("\n")}
${store}`;
  const persistent = `  let groups = (prm.blocks + ${C - 1}u) / ${C}u;
  var blk = wg.x + wg.y * nwg.x;
${ind(issue("var ", "blk"), "  ")}
  loop {
    if (blk >= groups) { break; }
    let g0 = blk * ${C * m1}u;
${ind(commit, "    ")}
    workgroupBarrier();
    let nxt = blk + nwg.x * nwg.y;
    if (nxt < groups) {
${ind(issue("", "nxt"), "      ")}
    }
${passes.join("\n")}
${store}
    workgroupBarrier();
    blk = nxt;
  }`;
  return `
struct Params { blocks: u32, scale: f32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read_write> Y: array<${
    vec4 && pow2 === 1 ? "vec4<f32>" : "f32"
  }>;
@group(0) @binding(1) var<storage, read> X: array<${vec4 ? "vec4<f32>" : "f32"}>;
@group(0) @binding(2) var<storage, read> M: array<vec2<f32>>;
@group(0) @binding(3) var<uniform> prm: Params;
var<workgroup> sm: array<f32, ${C * SC}>;

@compute @workgroup_size(${T})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
  let total = prm.blocks * ${m1}u;
  let lim = total / 4u - 1u;
${spec.persistent === 0 ? single : persistent}
}
`;
}
