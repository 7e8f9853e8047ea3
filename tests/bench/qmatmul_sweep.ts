/**
 * Variant sweep of the packed low-bit matmul on the GPU machine, the source
 * of the defaults in `qmatmulSpec`: for every case (N×K, bits, batch) it
 * times the current default and a grid of variants, each in alternation
 * with the legacy kernel (the pre-rewrite default,
 * tests/bench/_qmatmul_legacy.ts): 12 pairs of short compute passes
 * submitted back to back, per kernel the fastest pass. The GPU machine is
 * shared and runs whole stretches of seconds several times slower, so only
 * ratios to a baseline timed beside them compare; the summary ranks the
 * variants by that ratio and scales it by the fastest legacy pass of the
 * case. Weights rotate through more than 200 MB so the L2 cache cannot
 * serve them. Every variant's product is checked against the legacy
 * kernel's (relative error < 2e-6; tests/bench/qmatmul_gpu.ts checks the
 * defaults against the CPU reference).
 *
 * Flags: `--small` (tiny sizes, for a software adapter), `--focus` (batch 1
 * on 4096×11008 and 11008×4096 only, teams × steps × prefetch), `--gemv`
 * (batch 1 on the four shapes at 4 bits and on 4096×4096 at 8 and 3 bits:
 * sub-teams × teams × batched staging × row tiles × steps × prefetch
 * around the default, most promising first, the budget shared out
 * per case; the "dot4" and "half" dequantizations first, except at 3 bits),
 * `--half` (--gemv without 3 bits, only the default, the "dot4" and "half"
 * variants and the default again), `--confirm` (close neighbours of the
 * default at batch 1 and 2, each timed three times in the order default,
 * candidates, default, candidates reversed, default, candidates; the
 * summary averages each entry's ratios; `--variants='[{"warps":8}]'`
 * replaces the candidates), `--case=NxKxBITSxM` (that case only, any mode), `--tiled` (batch 16 on the four
 * shapes, 64 and 128 on the first two: the codes-first emission order and
 * the tiled path around the default, each entry timed three times as with
 * --confirm), `--split` (the same cases: cross-workgroup split-K, and x
 * tiles of 32 rows at batch 64 and 128, each entry timed three times),
 * `--split-confirm` (batch 16 on the four shapes, 12 and 2-bit 16 on
 * 4096×11008, 128 on 11008×4096: the split-K default against the previous
 * one and its neighbours, three times each), `--large` (batch 64 and 128
 * on the four shapes: prefetch, steps of 2 and half the teams around the
 * default, three times each),
 * `--budget=S` (stop timing new variants after S seconds),
 * `--out=FILE` (also write every result as JSON).
 *
 * Uses the Deno namespace (arguments, files).
 *
 * @module
 */

import { GpuBatch, storageBuffer, uploadBuffer } from "../../kernels/backend.ts";
import {
  type GpuPackedWeight,
  type QmatmulDispatch,
  qmatmulDispatch,
} from "../../kernels/qmatmul_kernel.ts";
import { qmatmulResolvedSpec, type QmatmulVariant } from "../../kernels/qmatmul_default_spec.ts";
import { randomX } from "../kernels/_gpu.ts";
import { benchGpu } from "./_bench.ts";
import { legacyDispatch } from "./_qmatmul_legacy.ts";
import type { PackedWeight } from "../../quantizers/pack.ts";
import { destroyCopies, packedBytes, randomPacked, residentCopies } from "./_qmatmul_common.ts";

const small = Deno.args.includes("--small");
const focus = Deno.args.includes("--focus");
const halfOnly = Deno.args.includes("--half");
const tiledMode = Deno.args.includes("--tiled");
const splitMode = Deno.args.includes("--split");
const splitConfirm = Deno.args.includes("--split-confirm");
const largeMode = Deno.args.includes("--large");
// --tiled, --split, --split-confirm and --large repeat every entry three times, like --confirm.
const confirm = tiledMode || splitMode || splitConfirm || largeMode ||
  Deno.args.includes("--confirm");
const gemv = halfOnly || Deno.args.includes("--gemv");
const budget = Number(Deno.args.find((a) => a.startsWith("--budget="))?.slice(9) ?? 200);
const outFile = Deno.args.find((a) => a.startsWith("--out="))?.slice(6);
// --case=NxKxBITSxM times that case only; --variants='[{...}]' replaces --confirm's candidates.
const caseArg = Deno.args.find((a) => a.startsWith("--case="))?.slice(7);
const variantsArg = Deno.args.find((a) => a.startsWith("--variants="))?.slice(11);
const givenVariants = variantsArg ? (JSON.parse(variantsArg) as QmatmulVariant[]) : null;
const ROTATE_BYTES = small ? 4 << 20 : 200 << 20;
const t0 = performance.now();
const elapsed = () => (performance.now() - t0) / 1e3;

type Entry = "legacy" | "default" | QmatmulVariant;

/** Every combination of the listed values. */
function grid(
  axes: { [K in keyof QmatmulVariant]?: readonly QmatmulVariant[K][] },
): QmatmulVariant[] {
  let out: QmatmulVariant[] = [{}];
  for (const [key, values] of Object.entries(axes)) {
    out = out.flatMap((v) => (values as unknown[]).map((x) => ({ ...v, [key]: x })));
  }
  return out;
}

/**
 * Batch-1 variants around the default `d`, most promising first: batched
 * staging, sub-teams (split) at the same, twice or half the sub-team count
 * with and without batched staging, the other row tiling, then shorter
 * steps and prefetch, then twice and half the teams.
 */
function gemvVariants(
  d: QmatmulVariant & { warps: number; rowTiles: number; bits: number },
): Entry[] {
  const out: Entry[] = ["default"];
  if (d.bits !== 3) out.push(...halfVariants(d));
  if (halfOnly) {
    out.push("default");
    return out;
  }
  const batched: QmatmulVariant = { dequant: "exact", sharedX: true, batchedStage: true };
  const plain: QmatmulVariant = { dequant: "exact", sharedX: true };
  const teamsOf = (vw: number, split: number) => ({ split, warps: vw / split });
  const add = (v: QmatmulVariant) => {
    if (v.warps === undefined || (v.warps >= 1 && v.warps <= 32)) out.push(v);
  };
  add(batched);
  for (const tail of [{}, { rowTiles: d.rowTiles === 1 ? 2 : 1 }]) {
    for (const split of [2, 4]) {
      for (const vw of [d.warps, 2 * d.warps, d.warps / 2]) {
        for (const dq of [batched, plain]) add({ ...dq, ...teamsOf(vw, split), ...tail });
      }
    }
  }
  for (const extra of [{ unroll: 2 }, { prefetch: true }, { unroll: 2, prefetch: true }]) {
    for (const split of [1, 2]) {
      add({ ...batched, ...teamsOf(d.warps, split), ...extra });
    }
  }
  for (const vw of [2 * d.warps, d.warps / 2]) {
    add({ ...batched, ...teamsOf(vw, 1) });
  }
  return out;
}

/**
 * The "dot4" and "half" dequantizations (in turn) around the default `d`:
 * as is, twice and half the teams, sub-teams, the other row tiling, shorter
 * steps, prefetch, and "half" without batched staging.
 */
function halfVariants(d: QmatmulVariant & { warps: number; rowTiles: number }): QmatmulVariant[] {
  const shapes: QmatmulVariant[] = [{}];
  for (const warps of [2 * d.warps, d.warps / 2]) {
    if (warps >= 1 && warps <= 32) shapes.push({ warps });
  }
  if (d.warps >= 2) shapes.push({ split: 2, warps: d.warps / 2 });
  shapes.push({ rowTiles: d.rowTiles === 1 ? 2 : 1 }, { unroll: 2 }, { prefetch: true });
  const out = shapes.flatMap((v): QmatmulVariant[] =>
    (["dot4", "half"] as const).map((dequant) => ({
      dequant,
      sharedX: true,
      batchedStage: true,
      ...v,
    }))
  );
  out.push({ dequant: "half", sharedX: true, batchedStage: false });
  return out;
}

/**
 * Close neighbours of the default `d`: half and twice the teams, steps of
 * two chunks, and half the teams with steps of two, each timed three times:
 * default, candidates, default, candidates reversed, default, candidates.
 */
function confirmVariants(d: QmatmulVariant & { warps: number }): Entry[] {
  const vs: QmatmulVariant[] = givenVariants ?? [{ warps: d.warps / 2 }, { unroll: 2 }, {
    warps: d.warps / 2,
    unroll: 2,
  }];
  if (!givenVariants && d.warps < 32) vs.push({ warps: 2 * d.warps });
  return ["default", ...vs, "default", ...[...vs].reverse(), "default", ...vs];
}

/**
 * Batch 9–128 candidates around the default `d`: the codes-first emission
 * order (on the default and on other tilings), and the tiled path with
 * several workgroup tiles, micro-tiles and teams, each timed three times
 * like --confirm's.
 */
function tiledVariants(m: number, d: QmatmulVariant & { warps: number }): Entry[] {
  const t = (
    rowTiles: number,
    batch: number,
    microRows: number,
    microBatch: number,
    warps: number,
    unroll = 1,
    prefetch = true,
  ): QmatmulVariant => ({
    tiled: true,
    split: 1,
    sharedX: false,
    batchedStage: false,
    dequant: "fma",
    rowTiles,
    batch,
    microRows,
    microBatch,
    warps,
    unroll,
    prefetch,
  });
  const cf = (v: QmatmulVariant): QmatmulVariant => ({ codesFirst: true, ...v });
  const vs: QmatmulVariant[] = [cf({}), cf({ warps: d.warps / 2 })];
  if (m <= 16) {
    vs.push(
      cf({ batch: 16, rowTiles: 4, warps: 8, unroll: 1, prefetch: true }),
      cf({ batch: 16, rowTiles: 2, warps: 8, unroll: 1, prefetch: true }),
      cf({ batch: 8, rowTiles: 4, warps: 8, unroll: 1, prefetch: true }),
      t(1, 16, 4, 4, 4),
      t(1, 16, 4, 4, 8),
      t(2, 16, 4, 4, 4),
      t(2, 16, 8, 4, 4),
      t(1, 16, 8, 4, 8),
      t(2, 16, 4, 4, 2, 2),
      t(1, 16, 4, 4, 4, 1, false),
      t(4, 16, 8, 4, 2),
    );
  } else {
    vs.push(
      cf({ batch: 16, rowTiles: 2, warps: 8 }),
      t(2, 64, 4, 4, 1),
      t(2, 64, 4, 4, 2),
      t(1, 64, 4, 4, 2),
      t(1, 64, 4, 4, 4),
      t(2, 64, 8, 8, 1),
      t(2, 64, 8, 4, 2),
      t(4, 64, 8, 8, 2),
      t(1, 64, 4, 8, 4),
      t(1, 32, 4, 4, 4),
      t(2, 32, 4, 4, 2),
      t(1, 64, 4, 4, 2, 1, false),
    );
    if (m >= 128) vs.push(t(1, 128, 4, 8, 2), t(2, 128, 8, 8, 1), t(2, 128, 8, 8, 2));
  }
  return ["default", ...vs, "default", ...[...vs].reverse(), "default", ...vs];
}

/**
 * Batch 9–128 candidates around the default `d`: cross-workgroup split-K
 * (on the default and on 4 row tiles × 16-row x tiles at batch 16), and x
 * tiles of 32 rows (with and without the codes-first order) at batch 64
 * and 128; each timed three times like --confirm's.
 */
function splitVariants(m: number, d: QmatmulVariant & { warps: number }): Entry[] {
  const vs: QmatmulVariant[] = [{ splitK: 2 }, { splitK: 4 }];
  if (m <= 16) {
    const wide = { batch: 16, rowTiles: 4, unroll: 1, prefetch: true };
    vs.push(
      { ...wide, warps: 8, splitK: 2 },
      { ...wide, warps: 8, splitK: 4 },
      { ...wide, warps: 8, splitK: 8 },
      { ...wide, warps: 4, splitK: 4 },
      { ...wide, warps: 4, splitK: 8 },
      { ...wide, rowTiles: 2, warps: 8, splitK: 2 },
      { ...wide, rowTiles: 2, warps: 8, splitK: 4 },
      { warps: d.warps / 2, splitK: 2 },
      { warps: d.warps / 2, splitK: 4 },
    );
  } else {
    const b32 = { batch: 32, unroll: 1, prefetch: false };
    vs.push(
      { ...b32, rowTiles: 2, warps: 8 },
      { ...b32, rowTiles: 2, warps: 8, codesFirst: true },
      { ...b32, rowTiles: 2, warps: 4, codesFirst: true },
      { ...b32, rowTiles: 1, warps: 8, codesFirst: true },
      { ...b32, rowTiles: 1, warps: 16, codesFirst: true },
      { ...b32, rowTiles: 2, warps: 8, prefetch: true },
      { ...b32, rowTiles: 2, warps: 4, splitK: 2 },
    );
  }
  return ["default", ...vs, "default", ...[...vs].reverse(), "default", ...vs];
}

/**
 * The split-K default at batch 9–16 against the previous default (2 row
 * tiles × x tiles of ⌈m/2⌉ rows, 16 teams, steps of 2; where the default
 * kept it, the default alone) and the split-K neighbours: 8 slices with 4
 * teams, 16 teams, steps of 2, no prefetch; at batch 128, split-K 2 with 8
 * and 4 teams. Each timed three times like --confirm's.
 */
function splitConfirmVariants(m: number, d: QmatmulVariant & { splitK?: number }): Entry[] {
  const vs: QmatmulVariant[] = [];
  if (m <= 16) {
    const split = { batch: m, rowTiles: 4, warps: 8, unroll: 1, prefetch: true, splitK: 4 };
    const previous = {
      batch: Math.ceil(m / 2),
      rowTiles: 2,
      warps: 16,
      unroll: 2,
      prefetch: false,
      splitK: 1,
    };
    if ((d.splitK ?? 1) > 1) vs.push(previous);
    else vs.push(split);
    vs.push(
      { ...split, warps: 4, splitK: 8 },
      { ...split, warps: 16 },
      { ...split, unroll: 2 },
      { ...split, prefetch: false },
    );
  } else {
    vs.push({ splitK: 2 }, { splitK: 2, warps: 4 });
  }
  return ["default", ...vs, "default", ...[...vs].reverse(), "default", ...vs];
}

/**
 * Batch 64 and 128 neighbours of the default (which the first sweep timed
 * without prefetch and with single-chunk steps only): prefetch, steps of
 * 2, half the teams, each with and without prefetch; each timed three
 * times like --confirm's.
 */
function largeVariants(d: QmatmulVariant & { warps: number }): Entry[] {
  const vs: QmatmulVariant[] = [
    { prefetch: true },
    { unroll: 2 },
    { unroll: 2, prefetch: true },
    { warps: d.warps / 2 },
    { warps: d.warps / 2, prefetch: true },
  ];
  return ["default", ...vs, "default", ...[...vs].reverse(), "default", ...vs];
}

function variantsFor(m: number, bits: number, k: number): Entry[] {
  const out: Entry[] = ["default"];
  if (focus) {
    out.push(...grid({
      warps: [8, 16, 32],
      unroll: [1, 2, 4],
      prefetch: [false, true],
      sharedX: [true],
      dequant: ["exact"],
    }));
    return out;
  }
  const shared = k <= 11008 ? [false, true] : [false];
  if (m === 1 && bits === 4) {
    out.push(...grid({
      rowTiles: [1, 2],
      warps: [16, 32],
      unroll: [2, 4],
      prefetch: [false, true],
      sharedX: shared,
      dequant: ["exact"],
    }));
    out.push(
      ...grid({ warps: [8], unroll: [4], prefetch: [false], sharedX: shared, dequant: ["exact"] }),
    );
    out.push(
      ...grid({ warps: [32], unroll: [4], prefetch: [false], sharedX: [false], dequant: ["fma"] }),
    );
    out.push(
      ...grid({ rowTiles: [4], warps: [16, 32], unroll: [4], prefetch: [false], sharedX: [false] }),
    );
  } else if (m <= 2) {
    out.push(...grid({
      rowTiles: [1, 2],
      warps: [16, 32],
      unroll: [4],
      prefetch: [false, true],
      sharedX: shared,
      dequant: ["exact"],
    }));
  } else if (m <= 4) {
    out.push(...grid({
      batch: [m],
      rowTiles: [1, 2, 4],
      warps: [8, 16, 32],
      unroll: [2, 4],
      prefetch: [false, true],
      dequant: ["exact"],
    }));
    out.push(...grid({ batch: [m], rowTiles: [2, 4], warps: [16], unroll: [4], dequant: ["fma"] }));
  } else if (m <= 8) {
    out.push(...grid({
      batch: [8],
      rowTiles: [1, 2, 4],
      warps: [4, 8, 16],
      unroll: [1, 2],
      prefetch: [false],
      dequant: ["fma"],
    }));
  } else if (m <= 16) {
    out.push(...grid({
      batch: [8, 16],
      rowTiles: [2, 4],
      warps: [4, 8, 16],
      unroll: [1, 2],
      prefetch: [false],
      dequant: ["fma"],
    }));
    out.push(
      ...grid({ batch: [8, 16], rowTiles: [2, 4], warps: [8], unroll: [1], prefetch: [true] }),
    );
  } else {
    out.push(...grid({
      batch: [8, 16],
      rowTiles: [2, 4],
      warps: [2, 4, 8],
      unroll: [1],
      prefetch: [false],
      dequant: ["fma"],
    }));
  }
  return out;
}

interface Result {
  n: number;
  k: number;
  bits: number;
  m: number;
  entry: Entry;
  /** Fastest pass, µs per call. */
  us: number;
  gbs: number;
  /** Fastest pass over the legacy kernel's fastest pass, both taken in alternation. */
  ratio: number;
  /** The legacy kernel's fastest pass beside it, µs per call. */
  legacyUs: number;
  error?: string;
}
const results: Result[] = [];

const gpu = await benchGpu();
const shapes: [number, number][] = small
  ? [[256, 512], [96, 1024]]
  : [[4096, 4096], [11008, 4096], [4096, 11008], [16384, 4096]];
const modeCases: { n: number; k: number; bits: number; m: number }[] = largeMode
  ? [64, 128].flatMap((m) => shapes.map(([n, k]) => ({ n, k, bits: 4, m })))
  : splitConfirm
  ? [
    ...shapes.map(([n, k]) => ({ n, k, bits: 4, m: 16 })),
    { n: shapes[2]![0], k: shapes[2]![1], bits: 4, m: 12 },
    { n: shapes[2]![0], k: shapes[2]![1], bits: 2, m: 16 },
    { n: shapes[1]![0], k: shapes[1]![1], bits: 4, m: 128 },
  ]
  : tiledMode || splitMode
  ? [
    ...shapes.map(([n, k]) => ({ n, k, bits: 4, m: 16 })),
    ...[64, 128].flatMap((m) => shapes.slice(0, 2).map(([n, k]) => ({ n, k, bits: 4, m }))),
  ]
  : confirm
  ? [
    ...shapes.map(([n, k]) => ({ n, k, bits: 4, m: 1 })),
    { n: shapes[0]![0], k: shapes[0]![1], bits: 2, m: 1 },
    { n: shapes[0]![0], k: shapes[0]![1], bits: 8, m: 1 },
    { n: shapes[0]![0], k: shapes[0]![1], bits: 4, m: 2 },
    { n: shapes.at(-1)![0], k: shapes.at(-1)![1], bits: 4, m: 2 },
  ]
  : gemv
  ? [
    ...shapes.map(([n, k]) => ({ n, k, bits: 4, m: 1 })),
    { n: shapes[0]![0], k: shapes[0]![1], bits: 8, m: 1 },
    ...(halfOnly ? [] : [{ n: shapes[0]![0], k: shapes[0]![1], bits: 3, m: 1 }]),
  ]
  : focus
  ? [{ n: 4096, k: 11008, bits: 4, m: 1 }, { n: 11008, k: 4096, bits: 4, m: 1 }]
  : small
  ? [1, 4, 16].flatMap((m) => shapes.map(([n, k]) => ({ n, k, bits: 4, m })))
  : [
    ...shapes.map(([n, k]) => ({ n, k, bits: 4, m: 1 })),
    ...[2, 3, 8].map((bits) => ({ n: 4096, k: 4096, bits, m: 1 })),
    { n: 11008, k: 4096, bits: 8, m: 1 },
    ...shapes.map(([n, k]) => ({ n, k, bits: 4, m: 4 })),
    ...shapes.map(([n, k]) => ({ n, k, bits: 4, m: 16 })),
    { n: 4096, k: 4096, bits: 4, m: 2 },
    { n: 4096, k: 4096, bits: 4, m: 8 },
    { n: 16384, k: 4096, bits: 4, m: 8 },
    { n: 4096, k: 4096, bits: 4, m: 64 },
    { n: 11008, k: 4096, bits: 4, m: 128 },
  ];

const cases = caseArg
  ? [(([n, k, bits, m]) => ({ n: n!, k: k!, bits: bits!, m: m! }))(caseArg.split("x").map(Number))]
  : modeCases;
if (cases.some((c) => ![c.n, c.k, c.bits, c.m].every((v) => Number.isInteger(v) && v > 0))) {
  throw new RangeError(`--case must be NxKxBITSxM: current value is ${caseArg}`);
}

/** A dispatch bound once per weight copy, so recording a call costs no bind group creation. */
interface Bound {
  pipeline: GPUComputePipeline;
  groups: readonly [number, number];
  bindGroups: GPUBindGroup[];
  uniform: GPUBuffer;
  /** The second pass of a split-K product, recorded after every call. */
  reduce?: {
    pipeline: GPUComputePipeline;
    groups: readonly [number, number];
    bindGroup: GPUBindGroup;
    uniform: GPUBuffer;
  };
}

/** A uniform buffer holding the fields of a dispatch's uniform block. */
function uniformBuffer(fields: QmatmulDispatch["uniform"]): GPUBuffer {
  const data = new ArrayBuffer(Math.max(16, Math.ceil(fields.length / 4) * 16));
  const view = new DataView(data);
  fields.forEach((f, i) => {
    if ("u32" in f) view.setUint32(4 * i, f.u32, true);
    else if ("i32" in f) view.setInt32(4 * i, f.i32, true);
    else view.setFloat32(4 * i, f.f32, true);
  });
  const uniform = gpu.device.createBuffer({ size: data.byteLength, usage: 0x40 | 0x8 });
  gpu.device.queue.writeBuffer(uniform, 0, data);
  return uniform;
}

function bind(copies: GpuPackedWeight[], dispatch: (w: GpuPackedWeight) => QmatmulDispatch): Bound {
  const first = dispatch(copies[0]!);
  const uniform = uniformBuffer(first.uniform);
  const layout = first.pipeline.getBindGroupLayout(0);
  const bindGroups = copies.map((w) => {
    const d = dispatch(w);
    return gpu.device.createBindGroup({
      layout,
      entries: [...d.resources, uniform].map((buffer, binding) => ({
        binding,
        resource: { buffer },
      })),
    });
  });
  const r = first.reduce;
  if (!r) return { pipeline: first.pipeline, groups: first.groups, bindGroups, uniform };
  const ru = uniformBuffer(r.uniform);
  const bindGroup = gpu.device.createBindGroup({
    layout: r.pipeline.getBindGroupLayout(0),
    entries: [...r.resources, ru].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const reduce = { pipeline: r.pipeline, groups: r.groups, bindGroup, uniform: ru };
  return { pipeline: first.pipeline, groups: first.groups, bindGroups, uniform, reduce };
}

/**
 * GPU seconds per call of two bound kernels measured in alternation: an
 * estimate from one pass over the copies each, then PAIRS pairs of passes of
 * about PASS seconds, submitted back to back; per kernel the fastest pass.
 * On the shared GPU machine whole stretches of seconds run several times
 * slower (clock or tenancy changes), so only the fastest of many short passes
 * taken in alternation with the baseline is comparable.
 */
const PAIRS = 12, PASS = 0.0015;
async function timePair(a: Bound, b: Bound): Promise<[number, number]> {
  const n = a.bindGroups.length;
  const count = 2 * PAIRS + 2;
  const qs = gpu.device.createQuerySet({ type: "timestamp", count: 2 * count });
  const resolve = gpu.device.createBuffer({ size: 16 * count, usage: 0x200 | 0x4 });
  const read = gpu.device.createBuffer({ size: 16 * count, usage: 0x1 | 0x8 });
  const pass = (enc: GPUCommandEncoder, bound: Bound, i: number, calls: number) => {
    const p = enc.beginComputePass({
      timestampWrites: {
        querySet: qs,
        beginningOfPassWriteIndex: 2 * i,
        endOfPassWriteIndex: 2 * i + 1,
      },
    });
    p.setPipeline(bound.pipeline);
    const r = bound.reduce;
    for (let c = 0; c < calls; c++) {
      p.setBindGroup(0, bound.bindGroups[c % n]!);
      p.dispatchWorkgroups(bound.groups[0], bound.groups[1]);
      if (r) {
        p.setPipeline(r.pipeline);
        p.setBindGroup(0, r.bindGroup);
        p.dispatchWorkgroups(r.groups[0], r.groups[1]);
        p.setPipeline(bound.pipeline);
      }
    }
    p.end();
  };
  const readTimes = async (count: number): Promise<number[]> => {
    const enc = gpu.device.createCommandEncoder();
    enc.resolveQuerySet(qs, 0, 2 * count, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, 16 * count);
    gpu.device.queue.submit([enc.finish()]);
    await read.mapAsync(1);
    const t = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    return Array.from({ length: count }, (_, i) => Number(t[2 * i + 1]! - t[2 * i]!) / 1e9);
  };
  let enc = gpu.device.createCommandEncoder();
  pass(enc, a, 0, n);
  pass(enc, b, 1, n);
  gpu.device.queue.submit([enc.finish()]);
  const [ea, eb] = (await readTimes(2)).map((t) => t / n);
  const callsOf = (est: number) =>
    n * Math.max(1, Math.min(Math.floor(2000 / n), Math.round(PASS / est! / n)));
  const ca = callsOf(ea!), cb = callsOf(eb!);
  enc = gpu.device.createCommandEncoder();
  for (let i = 0; i < PAIRS; i++) {
    pass(enc, a, 2 * i, ca);
    pass(enc, b, 2 * i + 1, cb);
  }
  gpu.device.queue.submit([enc.finish()]);
  const times = await readTimes(2 * PAIRS);
  qs.destroy();
  resolve.destroy();
  read.destroy();
  const ta = Math.min(...times.filter((_, i) => i % 2 === 0)) / ca;
  const tb = Math.min(...times.filter((_, i) => i % 2 === 1)) / cb;
  return [ta, tb];
}

async function readBack(buffer: GPUBuffer): Promise<Float32Array> {
  const b = new GpuBatch(gpu);
  return new Float32Array((await b.submit([buffer])).data[0]!);
}

function relErr(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

const label = (e: Entry) => (typeof e === "string" ? e : JSON.stringify(e));
let skipped = 0;
const weights = new Map<string, { p: PackedWeight; copies: GpuPackedWeight[] }>();
for (const c0 of cases) {
  const { n, k, bits, m } = c0;
  const wkey = `${n}x${k}x${bits}`;
  if (!weights.has(wkey)) {
    const p = randomPacked(n, k, bits, 128, 11 + bits);
    weights.set(wkey, { p, copies: await residentCopies(gpu, p, ROTATE_BYTES) });
  }
  const { p, copies } = weights.get(wkey)!;
  const bytes = packedBytes(p);
  const x = uploadBuffer(gpu, randomX(m, k, 5, "f32").data);
  const y = storageBuffer(gpu, m * n * 4);
  const partials = storageBuffer(gpu, 8 * m * n * 4);
  let reference: Float32Array | null = null;
  const seen = new Set<string>();
  const legacy = bind(copies, (w) => legacyDispatch(gpu, w, x, y, m));
  let legacyBest = Infinity;
  const caseEnd = gemv || confirm
    ? elapsed() + (budget - elapsed()) / (cases.length - cases.indexOf(c0))
    : budget;
  const entries = tiledMode
    ? tiledVariants(m, qmatmulResolvedSpec(gpu, p, m))
    : splitMode
    ? splitVariants(m, qmatmulResolvedSpec(gpu, p, m))
    : splitConfirm
    ? splitConfirmVariants(m, qmatmulResolvedSpec(gpu, p, m))
    : largeMode
    ? largeVariants(qmatmulResolvedSpec(gpu, p, m))
    : confirm
    ? confirmVariants(qmatmulResolvedSpec(gpu, p, m))
    : gemv
    ? gemvVariants(qmatmulResolvedSpec(gpu, p, m))
    : variantsFor(m, bits, k);
  for (const e of entries) {
    if (elapsed() > caseEnd) {
      skipped++;
      continue;
    }
    let key = label(e);
    let ratio = NaN;
    try {
      let dispatch: (w: GpuPackedWeight) => QmatmulDispatch;
      if (e === "legacy") dispatch = (w) => legacyDispatch(gpu, w, x, y, m);
      else {
        const spec = qmatmulResolvedSpec(gpu, p, m, e === "default" ? {} : e);
        key = JSON.stringify(spec);
        if (seen.has(key) && e !== "default" && !confirm) continue;
        seen.add(key);
        dispatch = (w) => qmatmulDispatch(gpu, w, x, y, m, spec, partials);
      }
      const bound = bind(copies, dispatch);
      const [tl, t] = await timePair(legacy, bound);
      bound.uniform.destroy();
      bound.reduce?.uniform.destroy();
      legacyBest = Math.min(legacyBest, tl);
      ratio = t / tl;
      const out = await readBack(y);
      if (reference === null) reference = out;
      const err = relErr(out, reference);
      if (!(err < 2e-6)) throw new Error(`relative error ${err} against the legacy kernel`);
      results.push({
        n,
        k,
        bits,
        m,
        entry: e,
        us: t * 1e6,
        gbs: bytes / t / 1e9,
        ratio,
        legacyUs: tl * 1e6,
      });
    } catch (err) {
      results.push({
        n,
        k,
        bits,
        m,
        entry: e,
        us: NaN,
        gbs: NaN,
        ratio,
        legacyUs: NaN,
        error: String(err),
      });
    }
    const r = results[results.length - 1]!;
    console.log(
      `[${elapsed().toFixed(0)}s] ${n}x${k} ${bits}b M=${m} ${r.us.toFixed(2)} us (legacy ${
        r.legacyUs.toFixed(2)
      }, ratio ${r.ratio.toFixed(3)}) ${label(e)}${r.error ? ` ERROR ${r.error}` : ""}${
        e === "default" ? ` = ${key}` : ""
      }`,
    );
  }
  legacy.uniform.destroy();
  x.destroy();
  y.destroy();
  partials.destroy();
}
for (const { copies } of weights.values()) destroyCopies(copies);

// Summary: per case, the default and the four best by their ratio to the legacy kernel, with
// times normalized to the fastest legacy pass of the case (ratio × that time).
console.log(`\nSUMMARY (${elapsed().toFixed(0)} s, ${skipped} variants skipped for time)`);
const caseKey = (r: Result) => `${r.n}x${r.k} ${r.bits}b M=${r.m}`;
const short = (e: Entry) =>
  typeof e === "string" ? e : Object.entries(e).map(([a, v]) => `${a.slice(0, 3)}=${v}`).join(",");
for (const ck of [...new Set(results.map(caseKey))]) {
  const rs = results.filter((r) => caseKey(r) === ck && !r.error && Number.isFinite(r.ratio));
  const base = Math.min(...rs.map((r) => r.legacyUs));
  const def = rs.find((r) => r.entry === "default");
  if (confirm) {
    // Mean ratio per entry over its repeats, every entry shown.
    const byKey = new Map<string, number[]>();
    for (const r of rs) {
      const key = short(r.entry);
      byKey.set(key, [...(byKey.get(key) ?? []), r.ratio]);
    }
    const rows = [...byKey].map(([key, v]) => {
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      return `${(mean * base).toFixed(2)} (${mean.toFixed(3)} ±${
        ((Math.max(...v) - Math.min(...v)) / 2).toFixed(3)
      }, ${v.length}×) ${key}`;
    });
    console.log(`${ck}: legacy ${base.toFixed(2)} | ${rows.join(" | ")}`);
    continue;
  }
  const best = [...rs].sort((a, b) => a.ratio - b.ratio).slice(0, 4);
  const show = (r: Result) =>
    `${(r.ratio * base).toFixed(1)} (${r.ratio.toFixed(2)}) ${short(r.entry)}`;
  console.log(
    `${ck}: legacy ${base.toFixed(1)} default ${def ? show(def) : "?"} | ${
      best.map(show).join(" | ")
    }`,
  );
}
const errors = results.filter((r) => r.error);
if (errors.length > 0) console.log(`${errors.length} variants failed; first: ${errors[0]!.error}`);
if (outFile) await Deno.writeTextFile(outFile, JSON.stringify(results));
