/**
 * WGSL generators of the three butterfly kernels of the GPU fast
 * Walsh–Hadamard transform (`fwht_kernel.ts` picks and dispatches them),
 * each applying the power-of-two part H_{2^k} ⊗ I_{n/2^k} to rows, times a
 * scale:
 *
 * - `lanes` (n = 2^k): one row per workgroup, 32 values per thread in
 *   registers; rounds of stages on the element bits held in registers,
 *   exchanged through swizzled workgroup memory; every global load and store
 *   a coalesced vec4.
 * - `columns` (2^k ≤ 32): each thread holds one column of the [2^k, n/2^k]
 *   row in registers: no workgroup memory, no barriers.
 * - `rows` (the rest): rows staged in workgroup memory, rounds of up to
 *   `radix` stages in registers, one barrier between rounds.
 *
 * Web-standard only.
 *
 * @module
 */

/**
 * Specialization of the `rows` butterfly kernel ({@linkcode fwhtRowsWgsl}):
 * blocks of rows staged in workgroup memory.
 */
export interface FwhtRowsSpec {
  /** Kernel kind. */
  readonly kind: "rows";
  /** Row length n. */
  readonly n: number;
  /** Order of the power-of-two part (2^k, at least 2). */
  readonly pow2: number;
  /** Workgroup size. */
  readonly threads: number;
  /** Most butterfly stages per register round (each thread takes 2^radix values). */
  readonly radix: number;
  /** Rows per workgroup. */
  readonly rowsPerGroup: number;
  /** Largest strides first ("desc": coalesced scalar loads) or smallest first ("asc"). */
  readonly order: "desc" | "asc";
  /**
   * Access global memory as vec4 in the stride-1 round (needs n = 2^k and
   * 2^radix ≥ 4): its 2^radix contiguous values per thread move as vec4s.
   */
  readonly vec4: boolean;
  /** 0: one workgroup per block of rows; otherwise this many workgroups loop over the blocks. */
  readonly persistent: number;
}

/**
 * Specialization of the `columns` butterfly kernel ({@linkcode fwhtColumnsWgsl}):
 * one column of the [pow2, n/pow2] row per thread, in registers.
 */
export interface FwhtColumnsSpec {
  /** Kernel kind. */
  readonly kind: "columns";
  /** Row length n. */
  readonly n: number;
  /** Order of the power-of-two part (2^k ≤ 64). */
  readonly pow2: number;
  /** Columns per thread: 1, or 4 as one vec4 (needs 4 | n/pow2). */
  readonly width: 1 | 4;
}

/** A butterfly kernel variant: what {@linkcode encodeButterfly} dispatches. */
export type FwhtButterflySpec = FwhtRowsSpec | FwhtColumnsSpec | FwhtLanesSpec;

/** Workgroup words a row of length n takes (one padding word per 16). */
function paddedLength(n: number): number {
  return n + Math.ceil(n / 16);
}

/**
 * Workgroup memory (bytes) a butterfly variant needs.
 *
 * @param spec The variant.
 * @returns Bytes of workgroup memory per workgroup.
 */
export function butterflyWorkgroupBytes(spec: FwhtButterflySpec): number {
  if (spec.kind === "lanes") return 4 * spec.n;
  if (spec.kind === "columns" || rowRounds(spec).length < 2) return 0;
  return 4 * spec.rowsPerGroup * paddedLength(spec.n);
}

interface Round {
  /** Stages in this round, lowest stage s0. */
  r: number;
  s0: number;
}

function log2(x: number): number {
  return Math.round(Math.log2(x));
}

function rowRounds(spec: FwhtRowsSpec): Round[] {
  const stages = log2(spec.pow2);
  const out: Round[] = [];
  if (spec.order === "desc") {
    for (let top = stages; top > 0; top -= spec.radix) {
      const r = Math.min(spec.radix, top);
      out.push({ r, s0: top - r });
    }
  } else {
    for (let s0 = 0; s0 < stages; s0 += spec.radix) {
      out.push({ r: Math.min(spec.radix, stages - s0), s0 });
    }
  }
  return out;
}

/** In-register butterflies over values `${prefix}0 … ${prefix}(2^r − 1)`. */
function registerButterflies(prefix: string, r: number): string[] {
  const lines: string[] = [];
  const g = 1 << r;
  for (let b = 0; b < r; b++) {
    for (let c = 0; c < g; c++) {
      if (c & (1 << b)) continue;
      const d = c + (1 << b);
      lines.push(
        `    { let u = ${prefix}${c}; ${prefix}${c} = u + ${prefix}${d}; ${prefix}${d} = u - ${prefix}${d}; }`,
      );
    }
  }
  return lines;
}

function isPow2(x: number): boolean {
  return Number.isSafeInteger(x) && x >= 1 && (x & (x - 1)) === 0;
}

function validateRows(spec: FwhtRowsSpec): void {
  const { n, pow2, threads, radix, rowsPerGroup, persistent } = spec;
  const ok = isPow2(pow2) && pow2 >= 2 && n % pow2 === 0 && isPow2(threads) &&
    threads <= 1024 && Number.isInteger(radix) && radix >= 1 && radix <= 6 &&
    Number.isInteger(rowsPerGroup) && rowsPerGroup >= 1 && Number.isInteger(persistent) &&
    persistent >= 0 && (!spec.vec4 || (n === pow2 && n >= 4 && radix >= 2));
  if (!ok) {
    throw new RangeError(
      `Cannot build the rows butterfly kernel: invalid spec ${JSON.stringify(spec)}`,
    );
  }
}

/**
 * WGSL of the `rows` butterfly pass (H_{pow2} ⊗ I_{n/pow2}) on each row, in
 * place, times a scale. Bindings: 0 = X, 1 = parameters {rows, scale, blocks}.
 *
 * Each round takes groups of 2^r values h apart (h = n/pow2 · 2^s0) into
 * registers, one group per thread per pass over the block (thread q takes
 * group q, so a warp's accesses at h ≥ 32 are contiguous), and runs the r
 * stages there with named registers (no private arrays). The workgroup copy
 * has one padding word per 16 so that 16 values at stride 1 or 16 fall in
 * distinct banks.
 *
 * @param spec The variant.
 * @returns WGSL source.
 */
export function fwhtRowsWgsl(spec: FwhtRowsSpec): string {
  validateRows(spec);
  const { n, threads: T, rowsPerGroup: R, vec4, persistent } = spec;
  const inner = n / spec.pow2;
  const rounds = rowRounds(spec);
  const L = rounds.length;
  const P = paddedLength(n);
  const rowGuard = R > 1;
  const gx = (i: string) => vec4 ? `X[(${i}) >> 2u][(${i}) & 3u]` : `X[${i}]`;
  const body: string[] = [];
  rounds.forEach(({ r, s0 }, ri) => {
    const g = 1 << r, h = inner << s0, span = h * g;
    const perRow = n / g, total = R * perRow, K = Math.ceil(total / T);
    const guard = total % T !== 0;
    const fromGlobal = ri === 0, toGlobal = ri === L - 1;
    const vecRound = vec4 && h === 1 && g >= 4;
    body.push(`  // round ${ri}: stages ${s0}..${s0 + r - 1}, ${g} values ${h} apart`);
    const lines: string[] = [];
    for (let k = 0; k < K; k++) {
      lines.push(`  let Q${k} = t + ${k * T}u;`);
      lines.push(
        R === 1
          ? `  let q${k} = Q${k}; let row${k} = blk;`
          : `  let q${k} = Q${k} % ${perRow}u; let rho${k} = Q${k} / ${perRow}u; let row${k} = blk * ${R}u + rho${k};`,
      );
      lines.push(`  let b${k} = (q${k} / ${h}u) * ${span}u + q${k} % ${h}u;`);
      const conds: string[] = [];
      if (guard) conds.push(`Q${k} < ${total}u`);
      const gconds = [...conds];
      if (rowGuard) gconds.push(`row${k} < prm.rows`);
      lines.push(`  let ok${k} = ${conds.length > 0 ? conds.join(" && ") : "true"};`);
      lines.push(`  let gok${k} = ${gconds.length > 0 ? gconds.join(" && ") : "true"};`);
      const so = R === 1 ? "" : `rho${k} * ${P}u + `;
      for (let c = 0; c < g; c++) lines.push(`  var v${k}_${c} = 0.0;`);
      if (fromGlobal) {
        lines.push(`  if (gok${k}) {`);
        if (vecRound) {
          for (let c = 0; c < g; c += 4) {
            lines.push(
              `    let w${c} = X[(row${k} * ${n}u + b${k} + ${c}u) >> 2u];` +
                ` v${k}_${c} = w${c}.x; v${k}_${c + 1} = w${c}.y; v${k}_${c + 2} = w${c}.z; v${k}_${
                  c + 3
                } = w${c}.w;`,
            );
          }
        } else {
          for (let c = 0; c < g; c++) {
            lines.push(`    v${k}_${c} = ${gx(`row${k} * ${n}u + b${k} + ${c * h}u`)};`);
          }
        }
        lines.push(`  }`);
      } else {
        lines.push(`  if (ok${k}) {`);
        for (let c = 0; c < g; c++) {
          lines.push(`    v${k}_${c} = s[${so}pad(b${k} + ${c * h}u)];`);
        }
        lines.push(`  }`);
      }
    }
    for (let k = 0; k < K; k++) lines.push(...registerButterflies(`v${k}_`, r));
    for (let k = 0; k < K; k++) {
      const so = R === 1 ? "" : `rho${k} * ${P}u + `;
      if (toGlobal) {
        lines.push(`  if (gok${k}) {`);
        if (vecRound) {
          for (let c = 0; c < g; c += 4) {
            lines.push(
              `    X[(row${k} * ${n}u + b${k} + ${c}u) >> 2u] = vec4<f32>(v${k}_${c}, v${k}_${
                c + 1
              }, v${k}_${c + 2}, v${k}_${c + 3}) * sc;`,
            );
          }
        } else {
          for (let c = 0; c < g; c++) {
            lines.push(`    ${gx(`row${k} * ${n}u + b${k} + ${c * h}u`)} = v${k}_${c} * sc;`);
          }
        }
        lines.push(`  }`);
      } else {
        lines.push(`  if (ok${k}) {`);
        for (let c = 0; c < g; c++) lines.push(`    s[${so}pad(b${k} + ${c * h}u)] = v${k}_${c};`);
        lines.push(`  }`);
      }
    }
    body.push(`  {\n${lines.join("\n")}\n  }`);
    if (!toGlobal) body.push(`  workgroupBarrier();`);
  });
  const shared = L > 1
    ? `var<workgroup> s: array<f32, ${R * P}>;
fn pad(i: u32) -> u32 { return i + (i >> 4u); }`
    : "";
  const blocks = `let nblk = prm.blocks;`;
  const loop = persistent > 0
    ? `  ${blocks}
  for (var blk = wg.x + wg.y * nwg.x; blk < nblk; blk += nwg.x * nwg.y) {
${body.map((l) => "  " + l.replaceAll("\n", "\n  ")).join("\n")}
${L > 1 ? "    workgroupBarrier();" : ""}
  }`
    : `  ${blocks}
  let blk = wg.x + wg.y * nwg.x;
  if (blk >= nblk) { return; }
${body.join("\n")}`;
  return `
struct Params { rows: u32, scale: f32, blocks: u32, pad0: u32 }
@group(0) @binding(0) var<storage, read_write> X: array<${vec4 ? "vec4<f32>" : "f32"}>;
@group(0) @binding(1) var<uniform> prm: Params;
${shared}

@compute @workgroup_size(${T})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let sc = prm.scale;
${loop}
}
`;
}

/**
 * WGSL of the `columns` butterfly pass: each row seen as [pow2, n/pow2], one
 * thread per column (or 4 adjacent columns as a vec4) runs all the stages in
 * registers, in place, times a scale. Bindings: 0 = X, 1 = parameters {rows, scale}.
 *
 * @param spec The variant.
 * @returns WGSL source.
 */
export function fwhtColumnsWgsl(spec: FwhtColumnsSpec): string {
  const { n, pow2, width: w } = spec;
  const inner = n / pow2;
  if (!isPow2(pow2) || pow2 > 64 || n % pow2 !== 0 || (w !== 1 && w !== 4) || inner % w !== 0) {
    throw new RangeError(
      `Cannot build the columns butterfly kernel: invalid spec ${JSON.stringify(spec)}`,
    );
  }
  const iw = inner / w, nw = n / w;
  const lines: string[] = [];
  for (let c = 0; c < pow2; c++) lines.push(`  var v${c} = X[base + ${c * iw}u];`);
  lines.push(...registerButterflies("v", log2(pow2)));
  for (let c = 0; c < pow2; c++) lines.push(`  X[base + ${c * iw}u] = v${c} * prm.scale;`);
  return `
struct Params { rows: u32, scale: f32, blocks: u32, pad0: u32 }
@group(0) @binding(0) var<storage, read_write> X: array<${w === 4 ? "vec4<f32>" : "f32"}>;
@group(0) @binding(1) var<uniform> prm: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * 256u;
  if (e >= prm.rows * ${iw}u) { return; }
  let base = (e / ${iw}u) * ${nw}u + e % ${iw}u;
${lines.join("\n")}
}
`;
}

/**
 * Specialization of the `lanes` butterfly kernel ({@linkcode fwhtLanesWgsl}):
 * one row of n = 2^K per workgroup with every global access a coalesced vec4.
 */
export interface FwhtLanesSpec {
  /** Kernel kind. */
  readonly kind: "lanes";
  /** Row length n, a power of two (the whole transform is the butterfly). */
  readonly n: number;
  /** Workgroup size (a power of two; at least 4 values per thread, 32·4 ≤ n/threads·threads). */
  readonly threads: number;
  /** 0: one workgroup per row; otherwise this many workgroups loop over the rows. */
  readonly persistent: number;
  /** With `persistent`: load the next row's values while transforming the current one. */
  readonly prefetch: boolean;
  /** Write the result to a second buffer (binding 2) instead of in place. */
  readonly outOfPlace?: boolean;
  /**
   * Which global accesses are coalesced vec4s: "both" (the default; two or
   * more exchanges), or, with n = 2^(2·eb) for 2^eb values per thread and
   * one exchange, only the "load" or only the "store" (the other end moves
   * scalars, four contiguous per four lanes).
   */
  readonly ends?: "both" | "load" | "store";
  /**
   * Workgroup memory as vec4s: the coalesced layouts write and read it 16
   * bytes at a time (a swizzle of 16-byte slots keeps the scalar rounds
   * conflict-free).
   */
  readonly smemVec4?: boolean;
}

/**
 * Where each value lives in one round of the `lanes` kernel: element bit
 * `regs[p]` is bit p of the register index, element bit `threads[p]` bit p
 * of the thread index; `stages` are the butterfly stages (element bits) the
 * round runs in registers.
 */
interface Layout {
  regs: number[];
  threads: number[];
  stages: number[];
}

const WARP_BITS = 5;

/**
 * Layouts of the `lanes` kernel for n = 2^K with 2^eb values per thread. The
 * first and last are coalesced vec4 layouts (element bits 0, 1 in registers,
 * bits 2–6 on a warp's lanes); the ones between take the remaining stages,
 * eb at a time, with lane bits of distinct residues mod 5, which the
 * workgroup swizzle ({@linkcode swizzle}) maps to distinct banks.
 */
function lanesLayouts(K: number, eb: number, bank: (b: number) => number): Layout[] {
  const range = (a: number, b: number) =>
    Array.from({ length: Math.max(0, b - a) }, (_, i) => a + i);
  const done = new Set<number>();
  const aRegs = [0, 1, ...range(K - (eb - 2), K)];
  const first: Layout = { regs: aRegs, threads: range(2, K - eb + 2), stages: aRegs };
  for (const b of aRegs) done.add(b);
  const candidates = range(2 + WARP_BITS, K).sort((a, b) =>
    Number(done.has(a)) - Number(done.has(b)) || a - b
  );
  const fHi = candidates.slice(0, eb - 2).sort((a, b) => a - b);
  const fRegs = [0, 1, ...fHi];
  const last: Layout = {
    regs: fRegs,
    threads: range(0, K).filter((b) => !fRegs.includes(b)),
    stages: fHi.filter((b) => !done.has(b)),
  };
  for (const b of last.stages) done.add(b);
  const todo = range(0, K).filter((b) => !done.has(b));
  const middle: Layout[] = [];
  while (todo.length > 0) {
    const chunk = todo.splice(0, eb);
    const regs = [...chunk];
    for (const b of range(0, K)) {
      if (regs.length >= eb) break;
      if (!regs.includes(b) && !todo.includes(b)) regs.push(b);
    }
    regs.sort((a, b) => a - b);
    const rest = range(0, K).filter((b) => !regs.includes(b));
    const lanes: number[] = [];
    for (const b of rest) {
      const k = bank(b);
      if (lanes.length < WARP_BITS && k >= 0 && !lanes.some((l) => bank(l) === k)) lanes.push(b);
    }
    middle.push({
      regs,
      threads: [...lanes, ...rest.filter((b) => !lanes.includes(b))],
      stages: chunk,
    });
  }
  return [first, ...middle, last];
}

/** The two layouts of a one-exchange `lanes` kernel (K = 2·eb): a coalesced one and the rest. */
function oneExchangeLayouts(K: number, eb: number, coalesced: "load" | "store"): Layout[] {
  const all = Array.from({ length: K }, (_, i) => i);
  const cRegs = [0, 1, ...all.slice(K - (eb - 2))];
  const c: Layout = { regs: cRegs, threads: all.filter((b) => !cRegs.includes(b)), stages: cRegs };
  const oRegs = all.filter((b) => !cRegs.includes(b));
  const o: Layout = { regs: oRegs, threads: cRegs, stages: oRegs };
  return coalesced === "load" ? [c, o] : [o, c];
}

/**
 * Workgroup address of element i (a permutation, linear over GF(2)), as a
 * WGSL expression of `x` and in TypeScript, and the bank bit each element
 * bit moves (−1: none). Scalar: bits 0–4 xor bits 5–9 xor bits 10–14.
 * Vec4: bits 2–4 xor bits 7–9 xor bits 10–12 (bits 0–1 stay in the slot).
 */
const SWIZZLES = {
  scalar: {
    wgsl: (x: string) => `${x} ^ (((${x} >> 5u) ^ (${x} >> 10u)) & 31u)`,
    ts: (i: number) => i ^ (((i >> 5) ^ (i >> 10)) & 31),
    bank: (b: number) => b < 15 ? b % 5 : -1,
  },
  vec4: {
    wgsl: (x: string) => `${x} ^ ((((${x} >> 7u) ^ (${x} >> 10u)) & 7u) << 2u)`,
    ts: (i: number) => i ^ ((((i >> 7) ^ (i >> 10)) & 7) << 2),
    bank: (b: number) => b <= 4 ? b : b >= 7 && b <= 9 ? b - 5 : b >= 10 && b <= 12 ? b - 8 : -1,
  },
};

/** WGSL expression of the element offset a thread's index contributes in a layout. */
function threadOffset(threads: readonly number[]): string {
  const terms: string[] = [];
  for (let p = 0; p < threads.length;) {
    let q = p + 1;
    while (q < threads.length && threads[q] === threads[q - 1]! + 1) q++;
    const mask = (1 << (q - p)) - 1;
    terms.push(`(((t >> ${p}u) & ${mask}u) << ${threads[p]}u)`);
    p = q;
  }
  return terms.length > 0 ? terms.join(" | ") : "0u";
}

function registerOffset(regs: readonly number[], r: number): number {
  let off = 0;
  regs.forEach((b, p) => {
    if (r & (1 << p)) off |= 1 << b;
  });
  return off;
}

function validateLanes(spec: FwhtLanesSpec): { K: number; eb: number } {
  const { n, threads, persistent } = spec;
  const K = log2(n), tb = log2(threads);
  const eb = K - tb;
  const ends = spec.ends ?? "both";
  const ok = isPow2(n) && isPow2(threads) && threads <= 1024 && eb >= 2 && eb <= 6 &&
    tb >= WARP_BITS && Number.isInteger(persistent) && persistent >= 0 &&
    (!spec.prefetch || persistent > 0) &&
    (ends === "both" || (K === 2 * eb && !(spec.prefetch && ends === "store")));
  if (!ok) {
    throw new RangeError(
      `Cannot build the lanes butterfly kernel: invalid spec ${JSON.stringify(spec)}`,
    );
  }
  return { K, eb };
}

/**
 * WGSL of the `lanes` butterfly pass: the Walsh–Hadamard transform H_n of
 * each row (n = 2^K), in place (or into Y), times a scale. Bindings: 0 = X
 * (as vec4s), 1 = parameters {rows, scale, blocks}, 2 = Y with `outOfPlace`.
 *
 * A workgroup holds one row, 2^eb values per thread in named registers.
 * Butterfly stages commute, so each round runs the stages of the element
 * bits that its layout keeps in registers; between rounds the row is
 * exchanged through workgroup memory (swizzled: conflict-free). The first
 * and last layouts put element bits 0–1 in a vec4 and bits 2–6 on a warp's
 * lanes, so every load and store moves 512 contiguous bytes per warp.
 *
 * @param spec The variant.
 * @returns WGSL source.
 */
export function fwhtLanesWgsl(spec: FwhtLanesSpec): string {
  const { K, eb } = validateLanes(spec);
  const { n, threads: T, persistent, prefetch } = spec;
  const E = 1 << eb;
  const ends = spec.ends ?? "both";
  const swz = SWIZZLES[spec.smemVec4 ? "vec4" : "scalar"];
  const layouts = ends === "both" ? lanesLayouts(K, eb, swz.bank) : oneExchangeLayouts(K, eb, ends);
  const first = layouts[0]!, last = layouts[layouts.length - 1]!;
  const vecLoad = first.regs[0] === 0 && first.regs[1] === 1;
  const vecStore = last.regs[0] === 0 && last.regs[1] === 1;
  const decl: string[] = [];
  layouts.forEach((l, li) => {
    decl.push(`  let t${li} = ${threadOffset(l.threads)};`);
    decl.push(`  let w${li} = ${swz.wgsl(`t${li}`)};`);
  });
  decl.push(`  let g0 = t0 >> 2u;`, `  let gL = t${layouts.length - 1} >> 2u;`);
  // Global loads of a row: vec4s into p0.. (copied to v.. by the body), or scalars into v...
  const loads = (dst: string, row: string) =>
    vecLoad
      ? Array.from(
        { length: E / 4 },
        (_, k) =>
          `${dst}${k} = X[(${row}) * ${n / 4}u + g0 + ${registerOffset(first.regs, 4 * k) >> 2}u];`,
      )
      : Array.from({ length: E }, (_, r) => {
        const e = `(${row}) * ${n}u + t0 + ${registerOffset(first.regs, r)}u`;
        return `v${r} = X[(${e}) >> 2u][(${e}) & 3u];`;
      });
  const body: string[] = [];
  if (vecLoad) {
    for (let k = 0; k < E / 4; k++) {
      for (let j = 0; j < 4; j++) body.push(`v${4 * k + j} = p${k}.${"xyzw"[j]};`);
    }
  }
  if (prefetch) {
    body.push(`let nxt = blk + nwg.x * nwg.y;`);
    body.push(`if (nxt < nblk) {`, ...loads("p", "nxt").map((l) => "  " + l), `}`);
  }
  const stagesOf = (l: Layout, li: number) => {
    body.push(`// round ${li}: stages ${l.stages.join(", ")}`);
    for (const b of l.stages) {
      const p = l.regs.indexOf(b);
      for (let r = 0; r < E; r++) {
        if (r & (1 << p)) continue;
        const d = r | (1 << p);
        body.push(`{ let u = v${r}; v${r} = u + v${d}; v${d} = u - v${d}; }`);
      }
    }
  };
  stagesOf(first, 0);
  for (let li = 1; li < layouts.length; li++) {
    const from = layouts[li - 1]!, to = layouts[li]!;
    const vecFrom = spec.smemVec4 && from.regs[0] === 0 && from.regs[1] === 1;
    const vecTo = spec.smemVec4 && to.regs[0] === 0 && to.regs[1] === 1;
    const at = (w: string, c: number) =>
      spec.smemVec4 ? `s[(${w} ^ ${c}u) >> 2u][(${w} ^ ${c}u) & 3u]` : `s[${w} ^ ${c}u]`;
    for (let r = 0; r < E; r += vecFrom ? 4 : 1) {
      const c = swz.ts(registerOffset(from.regs, r));
      body.push(
        vecFrom
          ? `s[(w${li - 1} ^ ${c}u) >> 2u] = vec4<f32>(v${r}, v${r + 1}, v${r + 2}, v${r + 3});`
          : `${at(`w${li - 1}`, c)} = v${r};`,
      );
    }
    body.push(`workgroupBarrier();`);
    for (let r = 0; r < E; r += vecTo ? 4 : 1) {
      const c = swz.ts(registerOffset(to.regs, r));
      if (vecTo) {
        body.push(
          `{ let q = s[(w${li} ^ ${c}u) >> 2u]; v${r} = q.x; v${r + 1} = q.y; v${r + 2} = q.z; v${
            r + 3
          } = q.w; }`,
        );
      } else {
        body.push(`v${r} = ${at(`w${li}`, c)};`);
      }
    }
    stagesOf(to, li);
  }
  const out = spec.outOfPlace ? "Y" : "X";
  if (vecStore) {
    for (let k = 0; k < E / 4; k++) {
      body.push(
        `${out}[blk * ${n / 4}u + gL + ${registerOffset(last.regs, 4 * k) >> 2}u] = vec4<f32>(v${
          4 * k
        }, v${4 * k + 1}, v${4 * k + 2}, v${4 * k + 3}) * sc;`,
      );
    }
  } else {
    for (let r = 0; r < E; r++) {
      const e = `blk * ${n}u + t${layouts.length - 1} + ${registerOffset(last.regs, r)}u`;
      body.push(`${out}[(${e}) >> 2u][(${e}) & 3u] = v${r} * sc;`);
    }
  }
  const vars = [
    "  " + Array.from({ length: E }, (_, r) => `var v${r}: f32;`).join(" "),
    "  " + Array.from({ length: E / 4 }, (_, k) => `var p${k}: vec4<f32>;`).join(" "),
  ];
  let main: string;
  if (persistent > 0) {
    const pre = prefetch
      ? [
        `  if (wg.x + wg.y * nwg.x < nblk) {`,
        ...loads("p", "wg.x + wg.y * nwg.x").map((l) => "    " + l),
        `  }`,
      ]
      : [];
    main = [
      ...pre,
      `  for (var blk = wg.x + wg.y * nwg.x; blk < nblk; blk += nwg.x * nwg.y) {`,
      ...(prefetch ? [] : loads("p", "blk").map((l) => "    " + l)),
      ...body.map((l) => "    " + l),
      `    workgroupBarrier();`,
      `  }`,
    ].join("\n");
  } else {
    main = [
      `  let blk = wg.x + wg.y * nwg.x;`,
      `  if (blk >= nblk) { return; }`,
      ...loads("p", "blk").map((l) => "  " + l),
      ...body.map((l) => "  " + l),
    ].join("\n");
  }
  return `
struct Params { rows: u32, scale: f32, blocks: u32, pad0: u32 }
@group(0) @binding(0) var<storage, ${spec.outOfPlace ? "read" : "read_write"}> X: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> prm: Params;
${spec.outOfPlace ? "@group(0) @binding(2) var<storage, read_write> Y: array<vec4<f32>>;" : ""}
var<workgroup> s: array<${spec.smemVec4 ? "vec4<f32>" : "f32"}, ${spec.smemVec4 ? n / 4 : n}>;

@compute @workgroup_size(${T})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let sc = prm.scale;
  let nblk = prm.blocks;
${decl.join("\n")}
${vars.join("\n")}
${main}
}
`;
}
