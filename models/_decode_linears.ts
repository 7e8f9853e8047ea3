/**
 * Library-internal: the linears of a decode session on the GPU, and of the
 * whole-sequence forward session for blocks with packed checkpoint linears
 * (`_gpu_packed_block.ts`). Linears that
 * share an input (q, k, v; gate, up) run as one group whose outputs lie side
 * by side in one row: dense ones concatenated into one weight (f32 or f16,
 * rows padded for the matrix-vector kernel), quantized ones on the same grid
 * and groups concatenated and packed into one "rowtile32" weight for
 * `encodeQmatmul`; a group that mixes kinds or grids runs part by part, each
 * quantized part through a scratch row copied into its slice. A product that
 * adds to its output (the residual stream) does so in the GEMV; one quantized
 * weight either leaves its output in a scratch buffer for the caller to add
 * (the decoder fuses it into the next RMSNorm) or adds it itself through
 * qmatmul's accumulating variant. Web-standard only.
 *
 * @module
 */

import { type Gpu, type GpuBatch, storageBuffer } from "../kernels/backend.ts";
import { encodeGemm, gemmSpec } from "../kernels/gemm_kernel.ts";
import { encodeGemmTiled } from "../kernels/gemm_tiled_kernel.ts";
import { gemmTiledSpec } from "../kernels/gemm_tiled_wgsl.ts";
import { PACK_TILE, PACKED_BITS, type PackedWeight } from "../kernels/packed_layout.ts";
import { qmatmulResolvedSpec } from "../kernels/qmatmul_default_spec.ts";
import {
  destroyPackedWeight,
  encodeQmatmul,
  type GpuPackedWeight,
  qmatmulNeedsGather,
  type QmatmulNorm,
  qmatmulTakesNorm,
  uploadPackedWeight,
} from "../kernels/qmatmul_kernel.ts";
import { packWeights } from "../quantizers/pack.ts";
import type { QuantizedWeight } from "../quantizers/quantized_weight.ts";
import { concatRows } from "./_gpu_block.ts";
import { encodeSliceCopy } from "./_gpu_decode.ts";
import {
  encodeGemv,
  GEMV_GATE_BLOCK,
  gemvRowLength,
  interleaveGateUp,
  uploadGemvWeight,
} from "./_gpu_gemv.ts";
import { encodeSwiglu } from "./_gpu_kernels.ts";
import { gatherRows } from "./_gather_rows.ts";
import {
  isQuantizedLinear,
  linearShape,
  type LinearWeight,
  reorderQuantizedRows,
} from "./linear_weight.ts";

/** One weight of a group: its rows [offset, offset + n) of the group's output. */
type Part =
  | {
    readonly kind: "dense";
    readonly buffer: GPUBuffer;
    readonly n: number;
    readonly offset: number;
  }
  | {
    readonly kind: "packed";
    readonly weight: GpuPackedWeight;
    readonly n: number;
    readonly offset: number;
  };

/** Linears that share their input, on the GPU. */
export interface GpuLinear {
  /** Output width (the parts' rows together). */
  readonly n: number;
  /** Input width. */
  readonly k: number;
  /** Storage of the dense parts. */
  readonly dense: "f32" | "f16";
  /** The weights. */
  readonly parts: readonly Part[];
  /**
   * Gate and up rows alternate in blocks of this many (a SwiGLU product,
   * see {@linkcode encodeGateUp}); 0 when the rows are in their given order.
   */
  readonly gateBlock: number;
}

/** Scratch buffers a group's products may need, shared by all groups of a session. */
export interface LinearScratch {
  /** A quantized part's output before it goes to its slice [rows, n]. */
  readonly y: GPUBuffer;
  /** The output of a quantized group whose sum into y is left to the caller [rows, n]. */
  readonly delta: GPUBuffer;
  /** Activations gathered into packed column order [rows, Kp]. */
  readonly gather: GPUBuffer;
  /** Split-K partial sums. */
  readonly partials: GPUBuffer;
}

/** The same grid, groups and input width: rows that can be packed as one weight. */
function sameGrid(a: QuantizedWeight, b: QuantizedWeight): boolean {
  return a.bits === b.bits && a.groupSize === b.groupSize && a.shape[1] === b.shape[1] &&
    a.scales.length / a.shape[0] === b.scales.length / b.shape[0] &&
    a.gIdx.every((g, i) => g === b.gIdx[i]);
}

/** Quantized weights of one grid as one, rows one after the other. */
function concatQuantized(qs: readonly QuantizedWeight[]): QuantizedWeight {
  const q0 = qs[0]!;
  if (qs.length === 1) return q0;
  const rows = qs.reduce((n, q) => n + q.shape[0], 0);
  const codes = new (q0.codes.constructor as Uint8ArrayConstructor)(rows * q0.shape[1]);
  let o = 0;
  for (const q of qs) {
    codes.set(q.codes, o);
    o += q.codes.length;
  }
  return {
    kind: "uniform",
    shape: [rows, q0.shape[1]],
    bits: q0.bits,
    groupSize: q0.groupSize,
    symmetric: qs.every((q) => q.symmetric),
    codes,
    scales: concatRows(...qs.map((q) => q.scales)),
    zeros: concatRows(...qs.map((q) => q.zeros)),
    gIdx: q0.gIdx,
    stats: { seconds: 0 },
  };
}

function checkBits(w: QuantizedWeight | PackedWeight, label: string): void {
  if (!PACKED_BITS.includes(w.bits)) {
    throw new RangeError(
      `Cannot run ${label} on the GPU as its 'bits' must be 2, 3, 4 or 8 (the packed kernels' ` +
        `widths): current value is ${w.bits}`,
    );
  }
}

/**
 * Uploads linears that share one input as one group.
 *
 * @param gpu The GPU.
 * @param weights The linears, in output order (same input width).
 * @param dense Storage of dense weights.
 * @param label Buffer label and the name in error messages.
 * @param scaleType Storage of the scales and zero points of quantized weights packed here
 *   ("f16" rounds them; already packed ones keep theirs).
 * @returns The group.
 * @throws {RangeError} for mismatched input widths or a bit width the kernels lack.
 */
export function uploadLinear(
  gpu: Gpu,
  weights: readonly LinearWeight[],
  dense: "f32" | "f16",
  label: string,
  scaleType: "f16" | "f32" = "f16",
  gateUp = false,
): GpuLinear {
  const shapes = weights.map(linearShape);
  const k = shapes[0]![1];
  if (shapes.some((s) => s[1] !== k)) {
    throw new RangeError(
      `Cannot group ${label}: input widths ${shapes.map((s) => s[1]).join(", ")} differ`,
    );
  }
  for (const w of weights) if (isQuantizedLinear(w)) checkBits(w, label);
  const n = shapes.reduce((s, [rows]) => s + rows, 0);
  const allDense = weights.every((w) => !isQuantizedLinear(w));
  const unpacked = weights.filter((w): w is QuantizedWeight =>
    (w as QuantizedWeight).kind === "uniform"
  );
  const oneGrid = unpacked.length === weights.length &&
    unpacked.every((q) => sameGrid(q, unpacked[0]!));
  // A gate-and-up pair of equal halves in one weight goes interleaved for the SwiGLU products.
  const H = n / 2;
  const pair = gateUp && weights.length === 2 && shapes[0]![0] === shapes[1]![0];
  let parts: Part[];
  let gateBlock = 0;
  if (allDense) {
    let data = concatRows(...weights.map((w) => (w as { data: Float32Array }).data));
    if (pair && H % GEMV_GATE_BLOCK === 0) {
      gateBlock = GEMV_GATE_BLOCK;
      data = gatherRows(data, k, interleaveGateUp(H, gateBlock));
    }
    parts = [{
      kind: "dense",
      buffer: uploadGemvWeight(gpu, data, n, k, dense, label),
      n,
      offset: 0,
    }];
  } else if (oneGrid) {
    let q = concatQuantized(unpacked);
    if (pair && H % PACK_TILE === 0) {
      gateBlock = PACK_TILE;
      q = reorderQuantizedRows(q, interleaveGateUp(H, gateBlock));
    }
    const weight = uploadPackedWeight(gpu, packWeights(q, { scaleType }));
    parts = [{ kind: "packed", weight, n, offset: 0 }];
  } else {
    let offset = 0;
    parts = weights.map((w, i): Part => {
      const rows = shapes[i]![0];
      const part: Part = !isQuantizedLinear(w)
        ? {
          kind: "dense",
          buffer: uploadGemvWeight(gpu, w.data, rows, k, dense, label),
          n: rows,
          offset,
        }
        : {
          kind: "packed",
          weight: uploadPackedWeight(gpu, w.kind === "packed" ? w : packWeights(w, { scaleType })),
          n: rows,
          offset,
        };
      offset += rows;
      return part;
    });
  }
  return { n, k, dense, parts, gateBlock };
}

/** Rows of x up to which a SwiGLU product runs as one kernel (the GEMV and few-row qmatmul). */
const FUSED_ROWS = 4;

/**
 * Records g = silu(gate)·up for x·[gate; up]ᵀ of a gate-and-up linear
 * uploaded with `gateUp`: one product whose epilogue applies SwiGLU where
 * the linear is interleaved and its kernel allows it (the GEMV at one row or
 * f16 weights, qmatmul up to 4 rows), else the product into u and the
 * SwiGLU kernel over u's layout.
 *
 * @param batch The batch.
 * @param l The gate-and-up linear (n = 2H).
 * @param x Input [rows, k].
 * @param u Scratch [rows, 2H] for the unfused path.
 * @param g Output [rows, H].
 * @param rows Rows of x.
 * @param scratch The linears' scratch.
 * @param norm An RMSNorm the product applies to x first (where {@linkcode linearTakesNorm}).
 */
export function encodeGateUp(
  batch: GpuBatch,
  l: GpuLinear,
  x: GPUBuffer,
  u: GPUBuffer,
  g: GPUBuffer,
  rows: number,
  scratch: LinearScratch,
  norm?: QmatmulNorm,
): void {
  const H = l.n / 2, part = l.parts[0]!;
  if (fusedGateUp(l, rows)) {
    if (part.kind === "dense") {
      encodeGemv(batch, { y: g, x, w: part.buffer, ...(norm ? { norm } : {}) }, {
        rows,
        n: l.n,
        k: l.k,
      }, {
        weights: l.dense,
        accumulate: false,
        swiglu: true,
      });
      return;
    }
    encodeQmatmul(batch, part.weight, {
      x,
      input: "f32",
      m: rows,
      y: g,
      scratch: scratch.gather,
      partials: scratch.partials,
      swiglu: true,
      ...(norm ? { norm } : {}),
    });
    return;
  }
  encodeLinearGroup(batch, l, x, u, rows, false, scratch, true, norm);
  encodeSwiglu(batch, g, u, rows, H, l.gateBlock > 0 ? l.gateBlock : H);
}

/** Whether {@linkcode encodeGateUp} runs one kernel (SwiGLU in the product's epilogue). */
function fusedGateUp(l: GpuLinear, rows: number): boolean {
  if (l.gateBlock === 0 || l.parts.length !== 1) return false;
  const part = l.parts[0]!;
  return part.kind === "dense" ? denseByGemv(l, rows) : rows <= FUSED_ROWS;
}

/** Whether a group's dense weights run through the GEMV (else the GEMM: f32 past one row). */
function denseByGemv(l: GpuLinear, rows: number): boolean {
  return rows === 1 || l.dense === "f16";
}

/**
 * Whether a group's product over `rows` rows applies the RMSNorm of its
 * input itself (`norm` of {@linkcode encodeLinearGroup} and
 * {@linkcode encodeGateUp}): one weight, through the GEMV (dense) or a
 * qmatmul specialization that takes it (f32 x without a column map, not
 * tiled). A packed weight takes it at one row too: timed alone, its
 * prologue looks dearer than the norm's own kernel (q/k/v 18.0 µs fused
 * against 7.8 µs plus a 1-workgroup norm), but inside a decode step the
 * extra dependent dispatch costs more (H100, 1B shapes, 128 new tokens, one
 * call: 0.951 ms a step queued fused against 1.141 ms with the norms as
 * kernels of their own, and 1.016 ms with only q/k/v's separate;
 * `deno task bench:generate --no-kernels`).
 *
 * @param gpu The GPU.
 * @param l The group.
 * @param rows Rows of x.
 * @param gateUp The product is {@linkcode encodeGateUp}'s.
 * @returns Whether the norm can be fused.
 */
export function linearTakesNorm(gpu: Gpu, l: GpuLinear, rows: number, gateUp = false): boolean {
  if (l.parts.length !== 1) return false;
  const part = l.parts[0]!;
  if (part.kind === "dense") return denseByGemv(l, rows);
  return qmatmulTakesNorm(gpu, part.weight.packed, rows, "f32", gateUp && fusedGateUp(l, rows));
}

/**
 * Bytes a group's weights take on the GPU (codes, scales, zero points and
 * column maps of packed parts, the padded rows of dense ones).
 *
 * @param l The group.
 * @returns The byte count.
 */
export function linearBytes(l: GpuLinear): number {
  let bytes = 0;
  for (const p of l.parts) {
    if (p.kind === "dense") bytes += p.buffer.size;
    else {
      const { words, scales, zeros, colIdx } = p.weight;
      bytes += words.size + scales.size + (zeros?.size ?? 0) + (colIdx?.size ?? 0);
    }
  }
  return bytes;
}

/** Frees a group's buffers. */
export function destroyLinear(l: GpuLinear): void {
  for (const p of l.parts) {
    if (p.kind === "dense") p.buffer.destroy();
    else destroyPackedWeight(p.weight);
  }
}

/**
 * Bytes of each scratch buffer a group needs for products of `rows` rows
 * (0 where it needs none).
 *
 * @param gpu The GPU.
 * @param l The group.
 * @param rows Rows of x.
 * @param accumulate Whether the products add to their output and one quantized weight defers
 *   its sum to the caller (through `delta`).
 * @returns Bytes of the output scratch, the pending addend, the gather scratch and the split-K
 *   partials.
 */
export function linearScratchBytes(
  gpu: Gpu,
  l: GpuLinear,
  rows: number,
  accumulate: boolean,
): ScratchBytes {
  let y = 0, delta = 0, gather = 0, partials = 0;
  for (const p of l.parts) {
    if (p.kind !== "packed") continue;
    const packed = p.weight.packed;
    if (l.parts.length > 1) y = Math.max(y, rows * p.n * 4);
    else if (accumulate) delta = rows * p.n * 4;
    if (qmatmulNeedsGather(packed, "f32")) gather = Math.max(gather, rows * packed.paddedCols * 4);
    const sk = qmatmulResolvedSpec(gpu, packed, rows).splitK ?? 1;
    if (sk > 1) partials = Math.max(partials, sk * rows * p.n * 4);
  }
  return { y, delta, gather, partials };
}

/** Bytes of each buffer of a {@linkcode LinearScratch}. */
export type ScratchBytes = { [K in keyof LinearScratch]: number };

/**
 * Allocates the scratch for the largest needs of several groups.
 *
 * @param gpu The GPU.
 * @param needs {@linkcode linearScratchBytes} of each group.
 * @param label Buffer label.
 * @returns The buffers.
 */
export function allocateScratch(
  gpu: Gpu,
  needs: readonly ScratchBytes[],
  label: string,
): LinearScratch {
  const max = (key: keyof LinearScratch) => Math.max(4, ...needs.map((n) => n[key]));
  return {
    y: storageBuffer(gpu, max("y"), `${label}:y`),
    delta: storageBuffer(gpu, max("delta"), `${label}:delta`),
    gather: storageBuffer(gpu, max("gather"), `${label}:gather`),
    partials: storageBuffer(gpu, max("partials"), `${label}:partials`),
  };
}

/**
 * Records y (+)= x·Wᵀ for a group: x [rows, k], y [rows, n]. When adding
 * with `defer`, a group of one quantized weight writes x·Wᵀ to
 * `scratch.delta` instead and returns it: the caller adds it to y before y
 * is read; without `defer` it adds to y itself (qmatmul's accumulating
 * variant, no `delta` needed).
 *
 * @param batch The batch.
 * @param l The group.
 * @param x Input.
 * @param y Output.
 * @param rows Rows of x.
 * @param accumulate Add to y.
 * @param scratch Scratch of at least {@linkcode linearScratchBytes} for these rows.
 * @param defer Leave the sum of one quantized weight to the caller when adding.
 * @param norm An RMSNorm the product applies to x first (where {@linkcode linearTakesNorm}).
 * @returns The pending addend, or null when y holds the result.
 * @throws {RangeError} with `norm` for a group that cannot take it.
 */
export function encodeLinearGroup(
  batch: GpuBatch,
  l: GpuLinear,
  x: GPUBuffer,
  y: GPUBuffer,
  rows: number,
  accumulate: boolean,
  scratch: LinearScratch,
  defer = true,
  norm?: QmatmulNorm,
): GPUBuffer | null {
  const { n, k } = l;
  if (norm && !linearTakesNorm(batch.gpu, l, rows)) {
    throw new RangeError(
      `Cannot fuse the RMSNorm into a group of ${l.parts.length} weights over ${rows} rows`,
    );
  }
  const withNorm = norm ? { norm } : {};
  for (const p of l.parts) {
    if (p.kind === "dense") {
      if (denseByGemv(l, rows)) {
        encodeGemv(batch, { y, x, w: p.buffer, ...withNorm }, {
          rows,
          n: p.n,
          k,
          ldy: n,
          yOff: p.offset,
        }, {
          weights: l.dense,
          accumulate,
        });
      } else {
        encodeDenseGemm(
          batch,
          y,
          x,
          p.buffer,
          { rows, n: p.n, k, ldy: n, yOff: p.offset },
          accumulate,
        );
      }
      continue;
    }
    const alone = l.parts.length === 1, pending = alone && accumulate && defer;
    const out = alone ? (pending ? scratch.delta : y) : scratch.y;
    encodeQmatmul(batch, p.weight, {
      x,
      input: "f32",
      m: rows,
      y: out,
      accumulate: alone && accumulate && !defer,
      scratch: scratch.gather,
      partials: scratch.partials,
      ...withNorm,
    });
    if (pending) return scratch.delta;
    if (!alone) {
      encodeSliceCopy(batch, y, out, {
        rows,
        w: p.n,
        ldx: p.n,
        xOff: 0,
        ldy: n,
        yOff: p.offset,
      }, accumulate);
    }
  }
  return null;
}

/** Many rows through a dense f32 weight: the forward pass's GEMM (rows padded to the GEMV's). */
function encodeDenseGemm(
  batch: GpuBatch,
  y: GPUBuffer,
  x: GPUBuffer,
  w: GPUBuffer,
  s: { rows: number; n: number; k: number; ldy: number; yOff: number },
  accumulate: boolean,
): void {
  const shape = {
    m: s.rows,
    n: s.n,
    k: s.k,
    lda: s.k,
    ldb: gemvRowLength(s.k),
    ldc: s.ldy,
    offC: s.yOff,
    alpha: 1,
    beta: 1,
  };
  // As `encodeLinear` of the whole-sequence forward pass chooses.
  const wide = !batch.gpu.software && Math.ceil(s.rows / 128) * Math.ceil(s.n / 128) >= 256;
  if (wide) {
    const spec = gemmTiledSpec({ transB: true, accumulate, bk: 16, doubleBuffer: false });
    encodeGemmTiled(batch, spec, { c: y, a: x, b: w }, shape, { fallback: true });
    return;
  }
  encodeGemm(
    batch,
    gemmSpec({ transB: true, accumulate, tile: "small" }),
    { c: y, a: x, b: w },
    shape,
  );
}
