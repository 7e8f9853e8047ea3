/**
 * WGSL of the register-tiled matrix product C ← α·op(A)·op(B) (+ β·C) of
 * `gemm_tiled_kernel.ts`, from f32 or f16 storage, accumulating in f32: its
 * specialization (every tile size, slice depth, load width and buffering
 * choice is a field, so that `tests/bench/gemm_sweep.ts` can compare them),
 * its thread and memory layout, and the generator.
 *
 * How a workgroup computes its bm×bn tile of C:
 *
 * - each of its (bm/tm)·(bn/tn) threads owns tm×tn outputs in named vec4
 *   registers (tm rows, 4·(bm/tm) apart in groups of 4; tn columns as tn/4
 *   groups of 4 adjacent columns, 4·(bn/tn) apart, so that the threads of a
 *   warp read adjacent vec4s);
 * - K is walked in slices of bk: the slice of A (bm×bk) and B (bk×bn) is
 *   loaded from global memory into registers (vec4 loads along the
 *   contiguous dimension with `vec4`), then stored into workgroup memory
 *   as [k][m/4] and [k][n/4] vec4 arrays (transposing where k is the
 *   contiguous dimension; those rows are padded by `pad` vec4s against bank
 *   conflicts), and read back one vec4 per 4 rows or columns per k;
 * - with `doubleBuffer`, two slices of workgroup memory alternate: the next
 *   slice's global loads are issued before the current slice's products and
 *   stored after them, one barrier per slice (without it, two barriers per
 *   slice, as in gemm_kernel.ts);
 * - workgroup arrays are indexed as `S[buffer][k][i]` with a constant k and a
 *   per-thread i: the clamp that the WGSL compiler (naga, index policy
 *   "Restrict" on Vulkan) puts on every dynamic index then depends only on
 *   loop invariants, hoisted out of the K loop, instead of costing
 *   instructions on each of the inner loop's loads (gemm_kernel.ts indexes
 *   `As[k·stride + i]`).
 *
 * Edges: rows and columns past M or N are read from a clamped (valid) index
 * and never stored; the last partial K-slice takes a guarded path that
 * loads zeros past K. Any M, N, K is correct; `vec4` needs A, B and C
 * aligned to 4 elements (offsets and leading dimensions).
 *
 * Web-standard only.
 *
 * @module
 */

/** Specialization of {@linkcode gemmTiledWgsl}. */
export interface GemmTiledSpec {
  /** A is stored as [K, M] (op(A) = storedᵀ): the Hessian's Xᵀ. */
  readonly transA: boolean;
  /** B is stored as [N, K]: the forward's W. */
  readonly transB: boolean;
  /** C ← α·A·B + β·C instead of C ← α·A·B. */
  readonly accumulate: boolean;
  /** Storage type of A and B (products and sums are f32 either way). */
  readonly inputs: "f32" | "f16";
  /** Only tiles that touch the lower triangle of C (some row ≥ column) are computed. */
  readonly lowerC: boolean;
  /**
   * Rows of C per workgroup: a power of two, at least tm, such that the
   * (bm/tm)·(bn/tn) threads of a workgroup are 32 to 1024.
   */
  readonly bm: number;
  /** Columns of C per workgroup: a power of two, at least tn. */
  readonly bn: number;
  /** K-slice depth staged in workgroup memory per step: 4, 8, 16 or 32. */
  readonly bk: number;
  /** Rows of C per thread: 4, 8 or 16. */
  readonly tm: number;
  /** Columns of C per thread: 4, 8 or 16. */
  readonly tn: number;
  /** Global loads and C stores as vec4s (A, B, C aligned to 4 elements). */
  readonly vec4: boolean;
  /** Two workgroup buffers, the next slice prefetched, one barrier per slice. */
  readonly doubleBuffer: boolean;
  /** Padding in vec4s of each workgroup row of an operand whose contiguous dimension is k. */
  readonly pad: number;
  /** The k loop of a slice written out (constant workgroup indices) rather than a WGSL loop. */
  readonly unrollK: boolean;
  /**
   * Lanes per row of a 32-lane warp in the thread grid: 0 maps threads row-major
   * over the (bm/tm)×(bn/tn) grid; 4 or 8 arranges each 32 consecutive threads as
   * an (32/w)×w block (fewer distinct workgroup addresses per warp and k).
   */
  readonly warpCols: number;
}

/** The fields of a {@linkcode GemmTiledSpec}, in pipeline-key order. */
const FIELDS = [
  "transA",
  "transB",
  "accumulate",
  "inputs",
  "lowerC",
  "bm",
  "bn",
  "bk",
  "tm",
  "tn",
  "vec4",
  "doubleBuffer",
  "pad",
  "unrollK",
  "warpCols",
] as const satisfies readonly (keyof GemmTiledSpec)[];

/**
 * A {@linkcode GemmTiledSpec} from the fields that differ from the default:
 * the plain product of f32 buffers in 128×128 tiles of 8×8 per thread (256
 * threads), slices of 16, vec4 loads, double-buffered, rows padded by one
 * vec4, unrolled, threads row-major.
 *
 * On the H100 the fastest were this default with `doubleBuffer: false` for
 * x·Wᵀ (44.9–45.7 TFLOP/s f32) and with `bk: 32, doubleBuffer: false` for
 * XᵀX (48.5–48.6 TFLOP/s computed); see `gemm_tiled_kernel.ts`.
 *
 * @param fields Fields to set.
 * @returns The full specialization.
 */
export function gemmTiledSpec(fields: Partial<GemmTiledSpec> = {}): GemmTiledSpec {
  return {
    transA: false,
    transB: false,
    accumulate: false,
    inputs: "f32",
    lowerC: false,
    bm: 128,
    bn: 128,
    bk: 16,
    tm: 8,
    tn: 8,
    vec4: true,
    doubleBuffer: true,
    pad: 1,
    unrollK: true,
    warpCols: 0,
    ...fields,
  };
}

/** The pipeline key of a specialization (every field, in a fixed order). */
export function gemmTiledKey(spec: GemmTiledSpec): string {
  return `gemmTiled:${FIELDS.map((f) => `${f}=${spec[f]}`).join(",")}`;
}

/** Thread grid, loads and workgroup memory of a specialization. */
export interface GemmTiledLayout {
  /** Threads per workgroup (tx·ty). */
  readonly threads: number;
  /** Threads along n (bn/tn). */
  readonly tx: number;
  /** Threads along m (bm/tm). */
  readonly ty: number;
  /** Elements per global load (4 with `vec4`, else 1). */
  readonly width: number;
  /** Global loads of A per thread and slice. */
  readonly loadsA: number;
  /** Global loads of B per thread and slice. */
  readonly loadsB: number;
  /** vec4s per workgroup row of A and of B (with padding). */
  readonly rowA: number;
  /** vec4s per workgroup row of B. */
  readonly rowB: number;
  /** Bytes of workgroup memory. */
  readonly workgroupBytes: number;
}

function isPow2(v: number): boolean {
  return Number.isInteger(v) && v > 0 && (v & (v - 1)) === 0;
}

/**
 * The thread grid and memory of a specialization, validating it.
 *
 * @param spec The specialization.
 * @returns Its layout.
 * @throws RangeError naming the first invalid field.
 */
export function gemmTiledLayout(spec: GemmTiledSpec): GemmTiledLayout {
  const bad = (field: string, value: unknown, want: string): never => {
    throw new RangeError(
      `Cannot build a tiled product as '${field}' must be ${want}: current value is ${value}`,
    );
  };
  if (spec.inputs !== "f32" && spec.inputs !== "f16") bad("inputs", spec.inputs, '"f32" or "f16"');
  for (const f of ["tm", "tn"] as const) {
    if (![4, 8, 16].includes(spec[f])) bad(f, spec[f], "4, 8 or 16");
  }
  if (![4, 8, 16, 32].includes(spec.bk)) bad("bk", spec.bk, "4, 8, 16 or 32");
  for (const [f, t] of [["bm", spec.tm], ["bn", spec.tn]] as const) {
    const v = spec[f];
    if (!isPow2(v) || v < t || v > 512) bad(f, v, `a power of two in [${t}, 512]`);
  }
  if (![0, 1, 2].includes(spec.pad)) bad("pad", spec.pad, "0, 1 or 2");
  const tx = spec.bn / spec.tn, ty = spec.bm / spec.tm, threads = tx * ty;
  if (threads < 32 || threads > 1024) {
    bad("bm", spec.bm, `such that (bm/tm)·(bn/tn) is in [32, 1024] threads (${threads})`);
  }
  if (![0, 4, 8].includes(spec.warpCols)) bad("warpCols", spec.warpCols, "0, 4 or 8");
  if (spec.warpCols > 0 && (tx % spec.warpCols !== 0 || ty % (32 / spec.warpCols) !== 0)) {
    bad("warpCols", spec.warpCols, `a divisor of bn/tn = ${tx} with 32/warpCols dividing ${ty}`);
  }
  const width = spec.vec4 ? 4 : 1;
  const loads = (extent: number) => Math.ceil((extent * spec.bk) / width / threads);
  const rowA = spec.bm / 4 + (spec.transA ? 0 : spec.pad);
  const rowB = spec.bn / 4 + (spec.transB ? spec.pad : 0);
  const buffers = spec.doubleBuffer ? 2 : 1;
  return {
    threads,
    tx,
    ty,
    width,
    loadsA: loads(spec.bm),
    loadsB: loads(spec.bn),
    rowA,
    rowB,
    workgroupBytes: buffers * spec.bk * (rowA + rowB) * 16,
  };
}

const XYZW = "xyzw";

/** What one operand's load code needs to know. */
interface Operand {
  /** Global array and workgroup array. */
  readonly g: "A" | "B";
  readonly s: "As" | "Bs";
  /** Prefix of its per-thread names. */
  readonly p: "a" | "b";
  /** Whether k is its contiguous dimension (A untransposed, B transposed). */
  readonly kContig: boolean;
  /** Tile extent along m (A) or n (B). */
  readonly extent: number;
  readonly origin: "m0" | "n0";
  readonly limit: "p.M" | "p.N";
  readonly ld: "p.lda" | "p.ldb";
  readonly off: "p.offA" | "p.offB";
  readonly loads: number;
}

/** Per-thread setup, guarded fast and tail loads, and stores of one operand. */
function operandCode(spec: GemmTiledSpec, lay: GemmTiledLayout, o: Operand) {
  const w = lay.width, bk = spec.bk, T = lay.threads;
  const count = (o.extent * bk) / w; // vectors per slice
  const conv = spec.inputs === "f16"
    ? (x: string) => (w === 4 ? `vec4<f32>(${x})` : `f32(${x})`)
    : (
      x: string,
    ) => x;
  const zero = w === 4 ? "vec4<f32>(0.0)" : "0.0";
  const setup: string[] = [], fast: string[] = [], tail: string[] = [], store: string[] = [];
  for (let e = 0; e < o.loads; e++) {
    const n = (s: string) => `${o.p}${s}${e}`; // per-thread name
    const reg = `r${o.p}${e}`;
    const v = `(t + ${e * T}u)`;
    const ragged = (e + 1) * T > count;
    setup.push(`  var ${reg} = ${zero};`);
    if (ragged) setup.push(`  let ${n("ok")} = ${v} < ${count}u;`);
    const guard = (lines: string[]) =>
      ragged ? [`    if (${n("ok")}) {`, ...lines, `    }`] : lines;
    if (o.kContig) {
      // Element (row r, k) at off + r·ld + k; each k-row of the slice holds bk/w vectors.
      const kv = bk / w;
      setup.push(`  let ${n("r")} = ${v} / ${kv}u; let ${n("q")} = ${v} % ${kv}u;`);
      setup.push(`  let ${n("g")} = min(${o.origin} + ${n("r")}, ${o.limit} - 1u);`);
      setup.push(`  let ${n("x")} = ${n("r")} / 4u; let ${n("y")} = ${n("r")} % 4u;`);
      if (w === 4) {
        setup.push(`  let ${n("b")} = (${o.off} + ${n("g")} * ${o.ld}) / 4u;`);
        setup.push(`  let ${n("o")} = ${n("b")} + ${n("q")};`);
        fast.push(...guard([`    ${reg} = ${conv(`${o.g}[${n("o")} + ks / 4u]`)};`]));
        tail.push(...guard([
          `    { let k = ks + ${n("q")} * 4u;`,
          `      let v = ${conv(`${o.g}[${n("b")} + min(k / 4u, (p.K - 1u) / 4u)]`)};`,
          `      ${reg} = select(${zero}, v, vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.K)); }`,
        ]));
        const lines: string[] = [];
        for (let c = 0; c < 4; c++) {
          lines.push(
            `    ${o.s}[buf][${n("q")} * 4u + ${c}u][${n("x")}][${n("y")}] = ${reg}.${XYZW[c]};`,
          );
        }
        store.push(...guard(lines));
      } else {
        setup.push(`  let ${n("b")} = ${o.off} + ${n("g")} * ${o.ld};`);
        setup.push(`  let ${n("o")} = ${n("b")} + ${n("q")};`);
        fast.push(...guard([`    ${reg} = ${conv(`${o.g}[${n("o")} + ks]`)};`]));
        tail.push(...guard([
          `    { let k = ks + ${n("q")};`,
          `      ${reg} = select(0.0, ${conv(`${o.g}[${n("b")} + min(k, p.K - 1u)]`)}, k < p.K); }`,
        ]));
        store.push(...guard([`    ${o.s}[buf][${n("q")}][${n("x")}][${n("y")}] = ${reg};`]));
      }
    } else {
      // Element (column q, k) at off + k·ld + q; each k-row of the slice holds extent/w vectors.
      const ev = o.extent / w;
      setup.push(`  let ${n("k")} = ${v} / ${ev}u; let ${n("q")} = ${v} % ${ev}u;`);
      if (w === 4) {
        setup.push(
          `  let ${n("o")} = ${o.off} / 4u + min(${o.origin} / 4u + ${
            n("q")
          }, (${o.limit} + 3u) / 4u - 1u);`,
        );
        const ld4 = `(${o.ld} / 4u)`;
        fast.push(
          ...guard([`    ${reg} = ${conv(`${o.g}[${n("o")} + (ks + ${n("k")}) * ${ld4}]`)};`]),
        );
        tail.push(...guard([
          `    { let k = ks + ${n("k")};`,
          `      ${reg} = select(${zero}, ${
            conv(`${o.g}[${n("o")} + min(k, p.K - 1u) * ${ld4}]`)
          }, k < p.K); }`,
        ]));
        store.push(...guard([`    ${o.s}[buf][${n("k")}][${n("q")}] = ${reg};`]));
      } else {
        setup.push(`  let ${n("o")} = ${o.off} + min(${o.origin} + ${n("q")}, ${o.limit} - 1u);`);
        setup.push(`  let ${n("x")} = ${n("q")} / 4u; let ${n("y")} = ${n("q")} % 4u;`);
        fast.push(
          ...guard([`    ${reg} = ${conv(`${o.g}[${n("o")} + (ks + ${n("k")}) * ${o.ld}]`)};`]),
        );
        tail.push(...guard([
          `    { let k = ks + ${n("k")};`,
          `      ${reg} = select(0.0, ${
            conv(`${o.g}[${n("o")} + min(k, p.K - 1u) * ${o.ld}]`)
          }, k < p.K); }`,
        ]));
        store.push(...guard([`    ${o.s}[buf][${n("k")}][${n("x")}][${n("y")}] = ${reg};`]));
      }
    }
  }
  return { setup, fast, tail, store };
}

/**
 * WGSL source of the tiled product for one specialization. Bindings: 0 = C
 * (read-write; vec4<f32> with `vec4`, else f32), 1 = A, 2 = B (vec4 or
 * scalar of the input type), 3 = the uniform parameters {M, N, K, lda, ldb,
 * ldc, offA, offB, offC, α, β} in elements, as for `gemmWgsl`. The grid is
 * [⌈N/bn⌉, ⌈M/bm⌉] workgroups.
 *
 * @param spec The specialization.
 * @returns WGSL source with entry point `main`.
 * @throws RangeError for an invalid specialization.
 */
export function gemmTiledWgsl(spec: GemmTiledSpec): string {
  const lay = gemmTiledLayout(spec);
  const { bm, bn, bk, tm, tn } = spec;
  const { tx: TX, ty: TY, threads: T, width: w } = lay;
  const inT = spec.inputs, vecIn = w === 4 ? `vec4<${inT}>` : inT;
  const A = operandCode(spec, lay, {
    g: "A",
    s: "As",
    p: "a",
    kContig: !spec.transA,
    extent: bm,
    origin: "m0",
    limit: "p.M",
    ld: "p.lda",
    off: "p.offA",
    loads: lay.loadsA,
  });
  const B = operandCode(spec, lay, {
    g: "B",
    s: "Bs",
    p: "b",
    kContig: spec.transB,
    extent: bn,
    origin: "n0",
    limit: "p.N",
    ld: "p.ldb",
    off: "p.offB",
    loads: lay.loadsB,
  });
  const loadSlice = (ks: string): string =>
    [
      `  { let ks = ${ks};`,
      `  if (ks + ${bk}u <= p.K) {`,
      ...A.fast,
      ...B.fast,
      `  } else {`,
      ...A.tail,
      ...B.tail,
      `  } }`,
    ].join("\n");
  const storeSlice = (buf: string): string =>
    [`  { let buf = ${buf};`, ...A.store, ...B.store, `  }`].join("\n");

  // Thread grid: (tx, ty) with tx along n.
  const grid = spec.warpCols === 0 ? [`  let tx = t % ${TX}u;`, `  let ty = t / ${TX}u;`] : [
    `  let ln = t % 32u; let wp = t / 32u;`,
    `  let tx = (wp % ${TX / spec.warpCols}u) * ${spec.warpCols}u + ln % ${spec.warpCols}u;`,
    `  let ty = (wp / ${TX / spec.warpCols}u) * ${32 / spec.warpCols}u + ln / ${spec.warpCols}u;`,
  ];
  const acc: string[] = [];
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn / 4; j++) acc.push(`  var c${i}_${j} = vec4<f32>(0.0);`);
  }
  const frag: string[] = [];
  for (let r = 0; r < tm / 4; r++) frag.push(`  let ia${r} = ${r * TY}u + ty;`);
  for (let j = 0; j < tn / 4; j++) frag.push(`  let ib${j} = ${j * TX}u + tx;`);
  const step = (kk: string): string[] => {
    const lines: string[] = [`    {`];
    for (let r = 0; r < tm / 4; r++) lines.push(`      let a${r} = As[buf][${kk}][ia${r}];`);
    for (let j = 0; j < tn / 4; j++) lines.push(`      let b${j} = Bs[buf][${kk}][ib${j}];`);
    for (let i = 0; i < tm; i++) {
      const a = `vec4<f32>(a${i >> 2}.${XYZW[i & 3]})`;
      for (let j = 0; j < tn / 4; j++) {
        lines.push(`      c${i}_${j} = fma(${a}, b${j}, c${i}_${j});`);
      }
    }
    lines.push(`    }`);
    return lines;
  };
  const compute: string[] = [];
  if (spec.unrollK) {
    for (let kk = 0; kk < bk; kk++) compute.push(...step(`${kk}`));
  } else {
    compute.push(`    for (var kk = 0u; kk < ${bk}u; kk++) {`, ...step("kk"), `    }`);
  }

  const stores: string[] = [];
  for (let i = 0; i < tm; i++) {
    stores.push(`  { let m = m0 + ${(i >> 2) * 4 * TY}u + ty * 4u + ${i & 3}u;`);
    stores.push(`    if (m < p.M) {`);
    for (let j = 0; j < tn / 4; j++) {
      const v = `c${i}_${j}`;
      stores.push(`      { let n = n0 + ${j * 4 * TX}u + tx * 4u;`);
      if (w === 4) {
        stores.push(`        let o = (p.offC + m * p.ldc + n) / 4u;`);
        stores.push(
          spec.accumulate
            ? `        if (n + 4u <= p.N) { C[o] = p.beta * C[o] + p.alpha * ${v}; } else {`
            : `        if (n + 4u <= p.N) { C[o] = p.alpha * ${v}; } else {`,
        );
        for (let c = 0; c < 4; c++) {
          stores.push(
            spec.accumulate
              ? `          if (n + ${c}u < p.N) { C[o][${c}] = p.beta * C[o][${c}] + p.alpha * ${v}.${
                XYZW[c]
              }; }`
              : `          if (n + ${c}u < p.N) { C[o][${c}] = p.alpha * ${v}.${XYZW[c]}; }`,
          );
        }
        stores.push(`        } }`);
      } else {
        stores.push(`        let o = p.offC + m * p.ldc + n;`);
        for (let c = 0; c < 4; c++) {
          stores.push(
            spec.accumulate
              ? `        if (n + ${c}u < p.N) { C[o + ${c}u] = p.beta * C[o + ${c}u] + p.alpha * ${v}.${
                XYZW[c]
              }; }`
              : `        if (n + ${c}u < p.N) { C[o + ${c}u] = p.alpha * ${v}.${XYZW[c]}; }`,
          );
        }
        stores.push(`      }`);
      }
    }
    stores.push(`    } }`);
  }

  const nbuf = spec.doubleBuffer ? 2 : 1;
  const loop = spec.doubleBuffer
    ? [
      `  var k0 = 0u;`,
      `  if (p.K > 0u) {`,
      loadSlice("0u"),
      storeSlice("0u"),
      `  }`,
      `  workgroupBarrier();`,
      `  var buf = 0u;`,
      `  for (; k0 < p.K; k0 += ${bk}u) {`,
      `    let more = k0 + ${bk}u < p.K;`,
      `    if (more) {`,
      loadSlice(`k0 + ${bk}u`),
      `    }`,
      ...compute,
      `    if (more) {`,
      storeSlice("buf ^ 1u"),
      `    }`,
      `    workgroupBarrier();`,
      `    buf ^= 1u;`,
      `  }`,
    ]
    : [
      `  var k0 = 0u;`,
      `  if (p.K > 0u) {`,
      loadSlice("0u"),
      `  }`,
      `  let buf = 0u;`,
      `  for (; k0 < p.K; k0 += ${bk}u) {`,
      storeSlice("0u"),
      `    workgroupBarrier();`,
      `    if (k0 + ${bk}u < p.K) {`,
      loadSlice(`k0 + ${bk}u`),
      `    }`,
      ...compute,
      `    workgroupBarrier();`,
      `  }`,
    ];

  return `${inT === "f16" ? "enable f16;\n" : ""}
struct Params { M: u32, N: u32, K: u32, lda: u32, ldb: u32, ldc: u32,
  offA: u32, offB: u32, offC: u32, alpha: f32, beta: f32, pad: u32 }
@group(0) @binding(0) var<storage, read_write> C: array<${w === 4 ? "vec4<f32>" : "f32"}>;
@group(0) @binding(1) var<storage, read> A: array<${vecIn}>;
@group(0) @binding(2) var<storage, read> B: array<${vecIn}>;
@group(0) @binding(3) var<uniform> p: Params;
var<workgroup> As: array<array<array<vec4<f32>, ${lay.rowA}>, ${bk}>, ${nbuf}>;
var<workgroup> Bs: array<array<array<vec4<f32>, ${lay.rowB}>, ${bk}>, ${nbuf}>;

@compute @workgroup_size(${T})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) t: u32) {
  let m0 = wg.y * ${bm}u;
  let n0 = wg.x * ${bn}u;
  ${spec.lowerC ? `if (n0 >= m0 + ${bm}u) { return; }` : ""}
${grid.join("\n")}
${acc.join("\n")}
${frag.join("\n")}
${A.setup.join("\n")}
${B.setup.join("\n")}
${loop.join("\n")}
${stores.join("\n")}
}
`;
}
