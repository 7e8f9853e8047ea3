/**
 * The specialization of the packed low-bit matmul's WGSL generator
 * (`qmatmulWgsl` in `qmatmul_wgsl.ts`, whose module docs describe the work
 * split and the dequantizations): its fields and their checks.
 * `qmatmul_default_spec.ts` picks one per packed weight and batch size.
 *
 * Web-standard only.
 *
 * @module
 */

import { PACKED_BITS } from "./packed_layout.ts";
import { checkTiledSpec } from "./_qmatmul_tiled.ts";

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
  /**
   * The product is added to y's values (y += x·Ŵᵀ, e.g. into a residual
   * stream) instead of overwriting them: the last pass (the product, or
   * the split-K sum) adds. @default false
   */
  readonly accumulate?: boolean;
  /**
   * SwiGLU epilogue: the weight's 32-row tiles alternate between gate and
   * up rows (tile 2j holds gate rows [32j, 32j + 32), tile 2j + 1 the same
   * up rows), and y[m, 32j + l] = silu(gate)·up, y of N/2 columns. Needs
   * `rowTiles` 2 or 4 (a thread owns both rows), `splitK` 1, not `tiled`,
   * not `accumulate`. @default false
   */
  readonly swiglu?: boolean;
  /**
   * RMSNorm prologue: each row of x is used as x/sqrt(mean(x²) + eps)·w,
   * with w the norm weight (f32 [K], bound after the zero points) and eps
   * the uniform's last field. The workgroup sums its rows' squares first,
   * reads x·w wherever it reads x, and scales its sums by the rows'
   * 1/sqrt(mean(x²) + eps) before they leave the thread (the product is
   * linear in x). Not `tiled`. @default false
   */
  readonly norm?: boolean;
  /** Tiled path: weight rows per thread, 4 or 8. @default 4 */
  readonly microRows?: number;
  /** Tiled path: x rows per thread, 4 or 8. @default 4 */
  readonly microBatch?: number;
}

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
  for (const key of ["codesFirst", "tiled", "accumulate", "swiglu", "norm"] as const) {
    const v = spec[key];
    if (v !== undefined && typeof v !== "boolean") bad(key, v, "a boolean");
  }
  const sk = spec.splitK ?? 1;
  if (![1, 2, 4, 8].includes(sk) || (sk > 1 && spec.tiled)) {
    bad("splitK", spec.splitK, "1, 2, 4 or 8 (1 when tiled)");
  }
  if (spec.norm && spec.tiled) bad("norm", spec.norm, "false when tiled");
  if (spec.codesFirst && (staged || spec.tiled)) {
    bad("codesFirst", spec.codesFirst, 'false with dequant "half" or "dot4" or when tiled');
  }
  if (
    spec.swiglu && (spec.tiled || sk > 1 || spec.accumulate || ![2, 4].includes(spec.rowTiles))
  ) {
    bad(
      "swiglu",
      spec.swiglu,
      "false unless rowTiles is 2 or 4, splitK 1, not tiled or accumulating",
    );
  }
}
