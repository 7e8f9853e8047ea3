/**
 * The specialization of the packed low-bit matmul: the default per packed
 * weight and batch size (`qmatmulSpec`: the few-row path `qmatmulFewRowSpec`
 * up to 4 rows of x, provisional; above, rules chosen from H100 sweeps), the
 * previous batch 1–4 default (`qmatmulSweptFewRowSpec`, kept for the
 * benchmarks), and the one a product runs (`qmatmulResolvedSpec`: the
 * default with a variant's overrides, checked against the device's limits).
 * `qmatmul_kernel.ts` records the product with it.
 *
 * Web-standard only.
 *
 * @module
 */

import { PACK_TILE, type PackedWeight } from "./packed_layout.ts";
import type { Gpu } from "./backend.ts";
import { checkQmatmulSpec, type QmatmulSpec } from "./qmatmul_spec.ts";
import { qmatmulInvocations, qmatmulWorkgroupBytes } from "./qmatmul_wgsl.ts";

/** Tuning knobs: the fields of {@linkcode QmatmulSpec} that do not follow from the weight. */
export type QmatmulVariant = Partial<
  Pick<
    QmatmulSpec,
    | "rowTiles"
    | "warps"
    | "split"
    | "batch"
    | "unroll"
    | "prefetch"
    | "sharedX"
    | "batchedStage"
    | "dequant"
    | "reduce"
    | "codesFirst"
    | "tiled"
    | "microRows"
    | "microBatch"
    | "splitK"
  >
>;

const exactZeros = new WeakMap<PackedWeight, boolean>();

/**
 * Whether a packed weight's zero points allow the "exact" dequantization
 * (integers z with |z| ≤ 2^bits, as GPTQ's and the symmetric grids' are).
 * Cached per weight.
 *
 * @param packed The packed weight.
 * @returns Whether every zero point qualifies.
 */
export function qmatmulExactZeros(packed: PackedWeight): boolean {
  let ok = exactZeros.get(packed);
  if (ok === undefined) {
    const limit = 2 ** packed.bits;
    const fits = (z: number) => Number.isInteger(z) && Math.abs(z) <= limit;
    ok = packed.zeros ? packed.zeros.every(fits) : fits(packed.zero);
    exactZeros.set(packed, ok);
  }
  return ok;
}

/** The largest of 4, 2, 1 that is at most `unroll` and divides `groupChunks`. */
function fitUnroll(unroll: number, groupChunks: number): number {
  let u = 4;
  while (u > 1 && (u > unroll || groupChunks % u !== 0)) u /= 2;
  return u;
}

/** Device limits {@linkcode qmatmulSpec} keeps to (the WebGPU defaults unless given). */
export interface QmatmulLimits {
  /** Workgroup memory, bytes. @default 16384 */
  readonly workgroupBytes?: number;
  /** Invocations per workgroup. @default 256 */
  readonly invocations?: number;
  /**
   * The device keeps f16 subnormals through `unpack2x16float`
   * ({@linkcode Gpu.f16Subnormals}); without it the "half" dequantization
   * is never chosen. @default true
   */
  readonly f16Subnormals?: boolean;
}

/** The power of two nearest to v (in log scale), at least 1. */
function nearestPow2(v: number): number {
  return 2 ** Math.max(0, Math.round(Math.log2(Math.max(1, v))));
}

/**
 * Rows of x up to which {@linkcode qmatmulSpec} takes the few-row path
 * ({@linkcode qmatmulFewRowSpec}). Provisional: chosen before any H100
 * timing of that path (tests/bench/generate.ts times it beside
 * {@linkcode qmatmulSweptFewRowSpec} per Llama linear), to be tuned there.
 */
export const QMATMUL_FEW_ROWS = 4;

/**
 * Workgroups the few-row path aims for at least (about two per SM of an
 * H100's 132): sub-teams (`split`) are added until the row tiles give this
 * many. Provisional, like {@linkcode QMATMUL_FEW_ROWS}.
 */
const FEW_ROW_WORKGROUPS = 256;

/** The weight's dimensions in tiles and chunks, and the fields every specialization shares. */
function weightBase(packed: PackedWeight) {
  const tiles = packed.paddedRows / PACK_TILE, chunks = packed.paddedCols / PACK_TILE;
  const groupChunks = packed.groupStride / PACK_TILE;
  return {
    tiles,
    base: {
      bits: packed.bits,
      scaleType: packed.scaleType,
      zeros: packed.zeros !== null,
      chunks,
      groupChunks,
      split: 1,
      batchedStage: false,
      reduce: "tree" as const,
    },
  };
}

/**
 * Keeps a specialization to the weight and the device: row tiles to the
 * weight's, steps to the group size, teams to the invocation limit and to
 * the steps there are; then x staged only where it fits the workgroup
 * memory, and teams halved until the partial sums fit it.
 */
function fitSpec(
  s: QmatmulSpec,
  tiles: number,
  workgroupBytes: number,
  invocations: number,
): QmatmulSpec {
  let { rowTiles, warps } = s;
  while (rowTiles > 1 && rowTiles > tiles) rowTiles /= 2;
  const unroll = fitUnroll(s.unroll, s.groupChunks);
  warps = Math.min(warps, 32, invocations / PACK_TILE);
  while (warps > 1 && warps * s.split > s.chunks / unroll) warps /= 2;
  s = { ...s, rowTiles, warps, unroll };
  if (s.sharedX && qmatmulWorkgroupBytes(s) > workgroupBytes) s = { ...s, sharedX: false };
  while (s.warps > 1 && qmatmulWorkgroupBytes(s) > workgroupBytes) {
    s = { ...s, warps: s.warps / 2 };
  }
  return s;
}

/** Throws unless m is a batch size of the few-row path. */
function checkFewRows(m: number, what: string): void {
  if (!Number.isInteger(m) || m < 1 || m > QMATMUL_FEW_ROWS) {
    throw new RangeError(
      `Cannot choose ${what} as 'm' must be an integer in [1, ${QMATMUL_FEW_ROWS}]: current value is ${m}`,
    );
  }
}

/**
 * The few-row specialization (batch 1 to {@linkcode QMATMUL_FEW_ROWS}: the
 * GEMV of token generation), the default there. Many small workgroups,
 * each reading K once with every one of its 32-lane teams:
 *
 * - a workgroup owns 32/`split` rows of one row tile, `split` the smallest
 *   of 1, 2, 4 that gives at least 256 workgroups (Llama-3.2-1B's 64-tile
 *   o and down projections get 4: 256 workgroups of 8 rows; its gate and up
 *   together, 512 tiles, get 1). Each sub-team of 32/split lanes reads
 *   32/split·b contiguous words per chunk (128 bytes at 4 bits and split 4:
 *   whole cache lines);
 * - its `warps` teams take the K steps in turn: at batch 1, 16 (512
 *   threads) halved until every sub-team has at least one step (1B's down
 *   projection: 16 teams, one step each; in the 4-bit decode step on an
 *   H100 0.882 against 0.914 ms a step with 8 teams of two steps, 128 new
 *   tokens, README); at batch 2–4, 8 (256 threads) halved until every
 *   sub-team has at least two steps. Consecutive sub-teams take
 *   consecutive steps, so a round of loads is contiguous; a step is 4
 *   chunks at batch 1–2 and 2 at batch 3–4 (at most one group), and the
 *   next step's words and scales are loaded while the current one is used
 *   (`prefetch`); the partial sums are added in workgroup memory (tree);
 * - x is read from global memory, each chunk once per thread and batch row
 *   (broadcast loads that the L1 cache serves), not staged: a workgroup of
 *   8 rows staging all of x would copy as many bytes of x as it reads of
 *   weights (so neither "half" nor "dot4", which read a staged x);
 * - the "exact" dequantization where the zero points allow it, else "fma".
 *
 * Timed at batch 1 on an H100 beside {@linkcode qmatmulSweptFewRowSpec},
 * the previous default (tests/bench/generate.ts, README): faster on the
 * Llama q/k/v and down projections (up to 1.45×), 6–17% slower on the
 * square o and the wide gate+up, where `qmatmulSpec` takes the previous
 * default at batch 1; batches 2–4 are not timed yet.
 *
 * @param packed The packed weight.
 * @param m Rows of x, 1 to {@linkcode QMATMUL_FEW_ROWS}.
 * @param limits The device's limits.
 * @returns The specialization.
 * @throws {RangeError} for m outside [1, {@linkcode QMATMUL_FEW_ROWS}].
 */
export function qmatmulFewRowSpec(
  packed: PackedWeight,
  m: number,
  limits: QmatmulLimits = {},
): QmatmulSpec {
  checkFewRows(m, "the few-row qmatmul specialization");
  const { workgroupBytes = 16384, invocations = 256 } = limits;
  const { tiles, base } = weightBase(packed);
  let split = 1;
  while (split < 4 && tiles * split < FEW_ROW_WORKGROUPS) split *= 2;
  const unroll = fitUnroll(m <= 2 ? 4 : 2, base.groupChunks);
  const steps = base.chunks / unroll;
  // Batch 1: up to 16 teams, each sub-team down to one step; else 8 teams with two steps each.
  const least = m === 1 ? 1 : 2;
  let warps = m === 1 ? 16 : 8;
  while (warps > 1 && warps * split * least > steps) warps /= 2;
  return fitSpec(
    {
      ...base,
      rowTiles: 1,
      warps,
      split,
      batch: m,
      unroll,
      prefetch: true,
      sharedX: false,
      dequant: qmatmulExactZeros(packed) ? "exact" : "fma",
    },
    tiles,
    workgroupBytes,
    invocations,
  );
}

/**
 * Whether batch 1 takes {@linkcode qmatmulSweptFewRowSpec} rather than
 * {@linkcode qmatmulFewRowSpec}: on square weights (N = K) and wide ones
 * (N ≥ 4K). Timed per Llama linear on an H100 (tests/bench/generate.ts
 * `--kernel-shapes=1b,8b --kernels-only`, README): the swept kernel took
 * 10.06 / 9.02 µs on the 2048² and 4096² o projections (few-row 11.61 /
 * 9.60) and 18.41 / 29.54 µs on the 16384×2048 and 28672×4096 gate+up
 * (few-row 19.61 / 35.66); the few-row kernel won on q/k/v (N = 1.5K, up
 * to 1.33×) and down (N ≈ K/4, up to 1.45×). With an RMSNorm prologue (q/k/v
 * in the decode step) a product takes the swept one at batch 1 as well
 * (`qmatmulProductSpec`).
 */
function sweptAtBatchOne(packed: PackedWeight): boolean {
  const n = packed.paddedRows, k = packed.paddedCols;
  return n === k || n >= 4 * k;
}

/**
 * The batch 1–4 defaults of the H100 sweeps of tests/bench/qmatmul_sweep.ts
 * (every variant timed in alternation with the previous kernel, fastest of
 * many short passes, on N×K ∈ {4096², 11008×4096, 4096×11008, 16384×4096}),
 * the default before the few-row path ({@linkcode qmatmulFewRowSpec}); kept
 * so that the benchmarks time both, until the choice is measured per shape.
 * One workgroup per row tile (or two), its teams splitting K, x mostly
 * staged in workgroup memory.
 *
 * - Batch 1–2 (GEMV): "exact" dequantization (where the zero points allow
 *   it), steps of 4 chunks without prefetch, x staged in workgroup memory
 *   (not for 2 and 8 bits, where global broadcast loads were as fast), two
 *   row tiles per thread from 512 tiles (N ≥ 16384) on, and teams so that
 *   about 4096 run (nearest power of two): 32 for N = 4096. At batch 1 with
 *   one row tile at 4 bits, and up to 128 tiles (N ≤ 4096) at 8 bits: x
 *   staged with all loads issued first (`batchedStage`) and at most 16
 *   teams (sweep --gemv, same run: 4096×4096 −6%, 11008×4096 −4%,
 *   4096×11008 −3%, 8-bit 4096×4096 −6% GPU time against the previous
 *   default).
 * - Then the "half" dequantization (x staged, loads first) replaces it at
 *   4 bits for batch 1, and for batch 2 from 512 tiles on, with prefetch
 *   except at batch 1 with two row tiles; and at 2 bits for batch 1 (sweep
 *   --confirm, each entry timed three times, same run: 4096×4096 −8%,
 *   11008×4096 −7%, 4096×11008 −13%, 16384×4096 −10%, 2-bit −6%, batch 2
 *   16384×4096 −12% GPU time; 8 bits and batch 2 on 4096×4096 were slower
 *   with it). Where the staged x does not fit the workgroup memory, the
 *   choice above without "half" stays, as it does on a device that flushes
 *   f16 subnormals (`limits.f16Subnormals` false).
 * - Batch 3–4: from 344 tiles (N ≥ 11008) on two row tiles, 8 teams, steps
 *   of 2 with prefetch; below, one row tile, 32 teams, steps of 2.
 *
 * Teams are then halved until the partial sums (and staged x) fit the
 * workgroup memory and the workgroup fits the invocation limit; x is staged
 * only where it fits.
 *
 * @param packed The packed weight.
 * @param m Rows of x, 1 to 4.
 * @param limits The device's limits.
 * @returns The specialization.
 * @throws {RangeError} for m outside [1, 4].
 */
export function qmatmulSweptFewRowSpec(
  packed: PackedWeight,
  m: number,
  limits: QmatmulLimits = {},
): QmatmulSpec {
  checkFewRows(m, "the swept few-row qmatmul specialization");
  const { workgroupBytes = 16384, invocations = 256, f16Subnormals = true } = limits;
  const { tiles, base } = weightBase(packed);
  const exact = qmatmulExactZeros(packed);
  const fit = (s: QmatmulSpec) => fitSpec(s, tiles, workgroupBytes, invocations);
  if (m > 2) {
    const wide = tiles >= 344;
    return fit({
      ...base,
      rowTiles: wide ? 2 : 1,
      warps: wide ? 8 : 32,
      batch: m,
      unroll: 2,
      prefetch: wide,
      sharedX: false,
      dequant: exact ? "exact" : "fma",
    });
  }
  const rowTiles = tiles >= 512 ? 2 : 1;
  const warps = nearestPow2(4096 / Math.ceil(tiles / rowTiles));
  // Batch 1 where the --gemv sweep measured batched staging > 3% faster.
  const batched = m === 1 && rowTiles === 1 &&
    (packed.bits === 4 || (packed.bits === 8 && tiles <= 128));
  const spec: QmatmulSpec = {
    ...base,
    rowTiles,
    warps: batched ? Math.min(16, warps) : warps,
    batch: m,
    unroll: 4,
    prefetch: false,
    sharedX: packed.bits === 3 || packed.bits === 4 || batched,
    batchedStage: batched,
    dequant: exact ? "exact" : "fma",
  };
  // Where the --confirm sweep measured "half" faster than "exact" (it stages x).
  const half = f16Subnormals &&
    ((packed.bits === 4 && (m === 1 || tiles >= 512)) || (packed.bits === 2 && m === 1));
  if (!half) return fit(spec);
  const fitted = fit({
    ...spec,
    prefetch: packed.bits === 4 && (m === 2 || rowTiles === 1),
    sharedX: true,
    batchedStage: true,
    dequant: "half",
  });
  // "half" reads the staged copy of x: where it does not fit, the default without it.
  return fitted.sharedX ? fitted : fit(spec);
}

/**
 * The default specialization for a packed weight and a batch size.
 *
 * - Batch 1 to {@linkcode QMATMUL_FEW_ROWS} (4): the few-row path,
 *   {@linkcode qmatmulFewRowSpec} (provisional; the previous default, from
 *   H100 sweeps at N ≥ 4096, is {@linkcode qmatmulSweptFewRowSpec}).
 *
 * Larger batches, from the H100 sweep of tests/bench/qmatmul_sweep.ts
 * (every variant timed in alternation with the previous kernel, fastest of
 * many short passes):
 *
 * - Batch 5–8: one x tile; 4 row tiles and 16 teams from 512 tiles on, else
 *   one row tile and 16 teams; single-chunk steps.
 * - Batch 9–16: from 512 tiles on one x tile of 16 rows, 4 row tiles, 8
 *   teams, prefetch; below, x tiles of 8 rows, 2 row tiles, 16 teams, steps
 *   of 2. Except below 512 tiles with a long K (≥ 256 chunks, K ≥ 8192):
 *   one x tile of all m rows, 4 row tiles, 8 teams, prefetch, and K split
 *   over 4 workgroups (`splitK`, partial sums added by a second pass), so
 *   that N = 4096 runs 128 workgroups (sweep --split-confirm, each entry
 *   timed three times, same run, 4096×11008: batch 16 −8% (0.849 against
 *   0.921 of the legacy kernel's time), batch 12 −7% (0.879 against 0.950),
 *   2-bit batch 16 −14% (0.826 against 0.960) GPU time; on K = 4096 the
 *   same split lost: 4096×4096 +6%, 16384×4096 +22%, 11008×4096 ±0%).
 * - Larger batches: x tiles of 16 rows, 4 row tiles, 8 teams.
 *
 * Measured and not taken (sweeps --tiled and --split: batch 16 on the four
 * shapes, 64 and 128 on 4096×4096 and 11008×4096, each entry three times;
 * GPU time over the default's in the same run): the tiled path (`tiled`),
 * at its best per case 1.13× (11008×4096, batch 128) to 1.77× (batch 16),
 * up to 5.9× for other tilings; the codes-first order (`codesFirst`) on the
 * default 0.995–1.19×; x tiles of 32 rows at batch 64 and 128 at best
 * 1.13–1.17×; split-K 2 or 4 on the other defaults 0.99–1.22×. At batch
 * 64 and 128 on the four shapes (sweep --large, same measure): prefetch
 * 0.98–1.01×, 4 teams 0.97–1.98× (16384×4096 batch 128 0.974×), steps of
 * 2 0.96–1.29× (4096×11008 0.965× ±0.04 at batch 64, 0.978× at 128): none
 * more than 3% faster.
 *
 * Teams are then halved until the partial sums (and staged x) fit the
 * workgroup memory and the workgroup fits the invocation limit; x is staged
 * only where it fits.
 *
 * @param packed The packed weight.
 * @param m Rows of x.
 * @param limits The device's limits.
 * @returns The specialization.
 */
export function qmatmulSpec(
  packed: PackedWeight,
  m: number,
  limits: QmatmulLimits = {},
): QmatmulSpec {
  if (m <= QMATMUL_FEW_ROWS) {
    return m === 1 && sweptAtBatchOne(packed)
      ? qmatmulSweptFewRowSpec(packed, m, limits)
      : qmatmulFewRowSpec(packed, m, limits);
  }
  const { workgroupBytes = 16384, invocations = 256 } = limits;
  const { tiles, base } = weightBase(packed);
  const { chunks } = base;
  let spec: QmatmulSpec;
  if (m <= 8) {
    const wide = tiles >= 512;
    spec = {
      ...base,
      rowTiles: wide ? 4 : 1,
      warps: 16,
      batch: m,
      unroll: 1,
      prefetch: false,
      sharedX: false,
      dequant: "fma",
    };
  } else if (m <= 16 && tiles < 512 && chunks >= 256) {
    // Few rows, long K: 4 row tiles × one x tile, K split over 4 workgroups.
    spec = {
      ...base,
      rowTiles: 4,
      warps: 8,
      batch: m,
      unroll: 1,
      prefetch: true,
      sharedX: false,
      dequant: "fma",
      splitK: 4,
    };
  } else if (m <= 16) {
    const wide = tiles >= 512;
    spec = {
      ...base,
      rowTiles: wide ? 4 : 2,
      warps: wide ? 8 : 16,
      batch: wide ? 16 : Math.ceil(m / 2),
      unroll: wide ? 1 : 2,
      prefetch: wide,
      sharedX: false,
      dequant: "fma",
    };
  } else {
    spec = {
      ...base,
      rowTiles: 4,
      warps: 8,
      batch: Math.ceil(m / Math.ceil(m / 16)),
      unroll: 1,
      prefetch: false,
      sharedX: false,
      dequant: "fma",
    };
  }
  return fitSpec(spec, tiles, workgroupBytes, invocations);
}

/**
 * The limits of {@linkcode QmatmulLimits} a device has.
 *
 * @param gpu The GPU.
 * @returns Its workgroup memory, invocations and f16 subnormal support.
 */
export function qmatmulDeviceLimits(gpu: Gpu): Required<QmatmulLimits> {
  return {
    workgroupBytes: gpu.limits.maxComputeWorkgroupStorageSize,
    invocations: gpu.limits.maxComputeInvocationsPerWorkgroup,
    f16Subnormals: gpu.f16Subnormals,
  };
}

/**
 * The specialization {@linkcode encodeQmatmul} runs: the default with the
 * variant's overrides, `unroll` lowered to the largest of 4, 2, 1 that
 * divides the chunks per group.
 *
 * @param gpu The GPU (its limits).
 * @param packed The packed weight.
 * @param m Rows of x.
 * @param variant Overrides.
 * @returns The specialization.
 */
export function qmatmulResolvedSpec(
  gpu: Gpu,
  packed: PackedWeight,
  m: number,
  variant: QmatmulVariant = {},
): QmatmulSpec {
  const base = qmatmulSpec(packed, m, qmatmulDeviceLimits(gpu));
  const spec: QmatmulSpec = { ...base, ...variant };
  const resolved = { ...spec, unroll: fitUnroll(spec.unroll, spec.groupChunks) };
  checkQmatmulSpec(resolved);
  if (resolved.dequant === "half" && !gpu.f16Subnormals) {
    throw new RangeError(
      'Cannot encode qmatmul with dequant "half": this device flushes f16 subnormals in unpack2x16float',
    );
  }
  if (resolved.dequant === "exact" && !qmatmulExactZeros(packed)) {
    throw new RangeError(
      'Cannot encode qmatmul with dequant "exact": the zero points are not all integers in [−2^bits, 2^bits]',
    );
  }
  const wgsl = (globalThis.navigator as { gpu?: { wgslLanguageFeatures?: ReadonlySet<string> } })
    ?.gpu?.wgslLanguageFeatures;
  if (resolved.dequant === "dot4" && wgsl && !wgsl.has("packed_4x8_integer_dot_product")) {
    throw new RangeError(
      'Cannot encode qmatmul with dequant "dot4": WGSL\'s packed_4x8_integer_dot_product is not available',
    );
  }
  const wgBytes = qmatmulWorkgroupBytes(resolved);
  const threads = qmatmulInvocations(resolved);
  if (
    wgBytes > gpu.limits.maxComputeWorkgroupStorageSize ||
    threads > gpu.limits.maxComputeInvocationsPerWorkgroup
  ) {
    throw new RangeError(
      `Cannot encode qmatmul: ${
        JSON.stringify(resolved)
      } needs ${wgBytes} bytes of workgroup memory and ${threads} invocations, beyond the device's limits`,
    );
  }
  return resolved;
}
