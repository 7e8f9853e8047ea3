/**
 * The WebGPU path of `obsSolve` (and so of `gptq` and `sparsegpt`): after the
 * CPU has validated the shapes, zeroed dead columns and permuted, a first
 * submission factors H⁻¹ (`kernels/cholesky_kernel.ts`) while the host uploads W; a
 * second runs every block of the column loop with its decisions and lazy
 * updates (`kernels/obs_kernel.ts`), and the results are read back once. The GPU scans
 * the inputs it receives for NaN and infinities (`kernels/_nonfinite_kernel.ts`): W and
 * the lower triangle of H, all the solve reads of the symmetric H; the host
 * scans H's upper triangle while the GPU works, so that a non-finite value
 * anywhere is refused as on the CPU path, and locates a value only when
 * either scan finds one. A failing pivot (float32) retries with 10× the
 * damping, as the CPU path does.
 *
 * W larger than one storage binding is split into tiles of rows (rows are
 * independent in the loop, except for the unstructured selection, which
 * spans the tiles, and SpQR's second level, whose runs of rows each tile
 * holds whole); U must fit one binding (n ≤ 23170 at 2 GB).
 *
 * SpQR (the "spqr" decider) runs in the same loop: the host computes each
 * column's variance (the typical error's numerators) and the threshold is
 * computed on the GPU from U; the in-block kernel runs each block in segments
 * split at the groups' first columns, and before each segment that starts a
 * group, `kernels/obs_spqr_kernel.ts` fits the group's grids on W as the
 * loop left it and quantizes their scales and zero points per run of rows.
 * Nothing is read back before the loop ends: then the loop's Ŵ (which holds
 * the float16 outliers), the codes, the outlier bits and the statistics. A
 * float16 overflow of an outlier is flagged on the GPU and refused then.
 *
 * Wall time: on the GPU machine the host's first touch of fresh memory costs
 * about 3 µs per 4 KiB page, so the arrays that receive the results get their
 * pages mapped by a worker thread meanwhile (`kernels/_paged_arrays.ts`; one worker
 * serves consecutive solves), and the read-back copies into them in chunks
 * from read-back buffers that later solves reuse (`kernels/readback_pool.ts`). The loop's
 * kernels take their uniforms at dynamic offsets, so its hundreds of
 * dispatches share a few bind groups.
 *
 * Differences from the CPU path, all within float32 rounding: U is computed
 * in float32 (the CPU uses float64), so near-ties of a decision (a rounding
 * exactly between two codes, equal pruning scores) can fall the other way;
 * the MSE grid search sums its error in float32, as do SpQR's screening and
 * threshold (with SpQR a flipped near-tie can move the later groups of the
 * rows that share its run of statistics).
 *
 * Web-standard only.
 *
 * @module
 */

import { CholeskyError } from "../core/_dense.ts";
import { firstNonFinite } from "../core/_finite.ts";
import { MSE_GRID, MSE_MAX_SHRINK } from "../core/uniform_grid.ts";
import { fail, initialGrids } from "./_obs_deciders.ts";
import { checkSpqrOptions, spqrColumnVariances } from "./_obs_spqr.ts";
import type { ObsDecider, ObsResult } from "./obs.ts";
import {
  bindingLimit,
  type Gpu,
  GpuBatch,
  type GpuRead,
  storageBuffer,
  uploadBuffer,
  writeBuffer,
} from "../kernels/backend.ts";
import { encodeNonFiniteCheck } from "../kernels/_nonfinite_kernel.ts";
import { deviceCopyOf, type DeviceWeight } from "../kernels/device_copies.ts";
import { pagedArrays } from "../kernels/_paged_arrays.ts";
import {
  choleskyBuffers,
  encodePermuteReverse,
  encodeUpperCholeskyOfInverse,
  packLowerChunks,
} from "../kernels/cholesky_kernel.ts";
import { encodeGemm, gemmSpec } from "../kernels/gemm_kernel.ts";
import { assembleObsResult, type ObsAssembleOptions } from "./_obs_assemble.ts";
import { encodeLayerErrorSums } from "./layer_error.ts";
import { encodeSubtract } from "../kernels/subtract_kernel.ts";
import {
  codesPerWord,
  encodeObsLoop,
  OBS_SELECT_STATE_WORDS,
  type ObsBlockSpec,
  type ObsBuffers,
  type ObsTile,
} from "../kernels/obs_kernel.ts";

/** Values per queue.writeBuffer of W (256 MB). */
const UPLOAD_CHUNK = 1 << 26;

/**
 * Whether the strict upper triangle of H (row < column) holds a NaN or an
 * infinity: the part of H the GPU path neither uploads nor scans.
 *
 * @param xtx The Hessian, row-major [n, n].
 * @param n Order.
 * @returns Whether a non-finite value is there.
 */
function upperHasNonFinite(xtx: Float64Array, n: number): boolean {
  for (let a = 0; a + 1 < n; a++) {
    if (firstNonFinite(xtx.subarray(a * n + a + 1, (a + 1) * n)) >= 0) return true;
  }
  return false;
}

/**
 * SpQR's read-back as `assembleObsResult` takes it: the tiles' second-level
 * codes, [2, tile rows, groups] each, split into scale and zero-point codes
 * [rows, groups], and the threshold's bits as a number.
 */
function spqrAssembly(
  h: {
    weight: Float32Array;
    words: Uint32Array;
    statCodes: Uint32Array;
    ranges: Float32Array;
    state: Uint32Array;
  },
  rows: number,
  groups: number,
  tileRows: number,
): NonNullable<ObsAssembleOptions["spqr"]> {
  const scaleCodes = new Uint8Array(rows * groups), zeroCodes = new Uint8Array(rows * groups);
  for (let r0 = 0; r0 < rows; r0 += tileRows) {
    const tr = Math.min(rows, r0 + tileRows) - r0, base = 2 * r0 * groups;
    scaleCodes.set(h.statCodes.subarray(base, base + tr * groups), r0 * groups);
    zeroCodes.set(h.statCodes.subarray(base + tr * groups, base + 2 * tr * groups), r0 * groups);
  }
  return {
    weight: h.weight,
    outlierWords: h.words,
    scaleCodes,
    zeroCodes,
    ranges: h.ranges,
    threshold: new Float32Array(h.state.buffer, 0, 1)[0]!,
  };
}

/** The prepared problem `obsSolve` hands to the GPU. */
export interface ObsGpuProblem {
  /** Rows of W. */
  readonly rows: number;
  /** Columns of W. */
  readonly n: number;
  /** Weights in processing order, dead columns zeroed [rows, n]; may be the caller's storage (read only). */
  readonly w: Float32Array;
  /**
   * The Hessian as given (original order, undamped): on the host [n, n], or a
   * device buffer holding the full symmetric [n, n] f32 (read in place, not
   * destroyed).
   */
  readonly xtx: Float64Array | GPUBuffer;
  /** Its diagonal with dead entries set to 1, original order [n]. */
  readonly diag: Float64Array;
  /** Mean of the Hessian's diagonal (the damping unit). */
  readonly meanDiag: number;
  /** Damping as a fraction of `meanDiag`. */
  readonly dampRatio: number;
  /** Damping retries (×10 each). */
  readonly maxDampingRetries: number;
  /** The decision (not "custom" or "float-grid"); "spqr" options are checked here. */
  readonly decider: ObsDecider;
  /** Block size (a multiple of m for N:M). */
  readonly blockSize: number;
  /** Processing order, or null for the identity. */
  readonly perm: Int32Array | null;
  /** Weights as given, original order [rows, n] (per-channel grids are fitted on them); read only. */
  readonly original: Float32Array;
  /** Weights with dead columns zeroed, original order [rows, n] (static groups); read only. */
  readonly cleaned: Float32Array;
  /** Dead columns found. */
  readonly deadColumns: number;
  /** When the solve started (performance.now()). */
  readonly t0: number;
  /** Progress callback (called once, at the end: the loop runs in one submission). */
  readonly onProgress?: ((done: number, total: number) => void) | undefined;
  /**
   * Internal (tests of the tiling): a binding limit in bytes below the
   * device's, so that W is split into tiles of rows as a huge one would be.
   */
  readonly maxBindingBytes?: number | undefined;
  /**
   * The host's finiteness check of W and H (throws a RangeError naming the
   * first non-finite value). The GPU scans what it uploads (W in processing
   * order, the lower triangle of H in float32) and the host, while the GPU
   * works, the strict upper triangle of H (float64, never uploaded); this is
   * called only when either scan finds something, or when dead columns zeroed
   * some weights before the upload (then while the GPU works). Without it, no
   * check is made.
   */
  readonly checkFinite?: (() => void) | undefined;
  /** Build the keep-mask (`kept`) first rather than the pruned one. */
  readonly keepMask?: boolean | undefined;
  /**
   * Measure the layer error ‖(W − Ŵ)X‖²/‖WX‖² (undamped H) in the loop's
   * submission, into `stats.layerError`: done only with a device H and no
   * permutation (else absent).
   */
  readonly measureError?: boolean | undefined;
  /** See `ObsOptions.onDeviceWeight`. */
  readonly onDeviceWeight?: ((weight: DeviceWeight) => void) | undefined;
}

/**
 * Runs the OBS column loop on the GPU and assembles `obsSolve`'s result
 * (columns in the original order).
 *
 * @param gpu The GPU.
 * @param p The prepared problem.
 * @returns The result. `stats.choleskySeconds` and `stats.loopSeconds` are GPU
 *   seconds (timestamp queries) of the factorization and of the column loop with
 *   its lazy updates (`updateSeconds` is NaN: they are interleaved); with
 *   `stats.gpuSeconds` (both submissions) and the wall seconds of each host
 *   phase added: `setupSeconds`, `reverseSeconds`, `uploadSeconds` (H),
 *   `factorEncodeSeconds`, `wUploadSeconds`, `encodeSeconds` (the loop),
 *   `submitSeconds`, `waitSeconds` (to the read-back, which includes
 *   `readSeconds`, the copies out of the mapped buffers), `assembleSeconds`.
 * @throws {CholeskyError} if H stays indefinite after all retries.
 */
export async function obsSolveGpu(gpu: Gpu, p: ObsGpuProblem): Promise<ObsResult> {
  const { rows, n, decider } = p;
  if (decider.kind === "custom" || decider.kind === "float-grid") {
    throw new TypeError(
      `Cannot run the OBS solver on the GPU with a "${decider.kind}" decider: use backend "cpu"`,
    );
  }
  const limit = p.maxBindingBytes ?? bindingLimit(gpu);
  if (n * n * 4 > limit) {
    throw new RangeError(
      `Cannot run the OBS solver on the GPU: the factor U [${n}, ${n}] takes ${
        n * n * 4
      } bytes, over the device's storage binding limit (maxStorageBufferBindingSize) of ${limit} bytes; use backend "cpu"`,
    );
  }
  const spqr = decider.kind === "spqr" ? decider : null;
  if (spqr) checkSpqrOptions(spqr, "run the OBS solver");
  const perm = p.perm ?? Int32Array.from({ length: n }, (_, i) => i);
  const bs = p.blockSize;
  // Tiles of rows whose largest buffer (W's rows, or Err's and the scores'
  // [rows, blockSize]) fits one binding; SpQR's hold whole runs of the second level.
  let tileRows = Math.max(1, Math.floor(limit / (4 * Math.max(n, bs))));
  if (spqr && tileRows < rows) {
    const sgs = spqr.statisticGroupSize;
    if (tileRows < sgs) {
      fail(
        `'statisticGroupSize' (${sgs}) rows of W [${rows}, ${n}] exceed one storage binding of ${limit} bytes on the GPU; use backend "cpu"`,
      );
    }
    tileRows = Math.floor(tileRows / sgs) * sgs;
  }
  const tiles: { r0: number; r1: number }[] = [];
  for (let r0 = 0; r0 < rows; r0 += tileRows) tiles.push({ r0, r1: Math.min(rows, r0 + tileRows) });
  const hasGrid = decider.kind === "grid" || decider.kind === "prune+grid";
  const structure = decider.kind === "prune" || decider.kind === "prune+grid"
    ? decider.structure
    : null;

  // Grids: per-channel and static groups are fitted here (as the CPU path
  // does), dynamic groups inside the in-block kernel.
  let spec: ObsBlockSpec = { rowsPerGroup: 32, blockSize: bs, grid: null, prune: null };
  let groups = 1, scales: Float32Array | null = null, zeros: Float32Array | null = null;
  let gIdx = new Uint32Array(n);
  let maxq = 0;
  if (hasGrid) {
    const grids = initialGrids(
      rows,
      n,
      p.original,
      p.cleaned,
      perm,
      decider.grid,
      decider.staticGroups ?? false,
    );
    const g = grids.g;
    maxq = g.maxq;
    groups = grids.groups;
    scales = grids.scales;
    zeros = grids.zeros;
    gIdx = Uint32Array.from(grids.gIdx);
    const fitGroupSize = grids.dynamic ? grids.gs : 0;
    spec = { ...spec, grid: { maxq: g.maxq, symmetric: g.symmetric, mse: g.mse, fitGroupSize } };
  }
  if (structure) {
    spec = {
      ...spec,
      prune: structure.kind === "unstructured"
        ? { kind: "unstructured" }
        : { kind: "nm", n: structure.n, m: structure.m },
    };
  }
  // SpQR: groups fitted and their statistics quantized inside the loop
  // (kernels/obs_spqr_kernel.ts); the threshold from the host's column variances.
  let rowGroups = 0, colVar = new Float32Array(1), outliers = false;
  if (spqr) {
    maxq = 2 ** spqr.bits - 1;
    const gs = spqr.groupSize;
    groups = Math.ceil(n / gs);
    rowGroups = Math.ceil(rows / spqr.statisticGroupSize);
    for (let pos = 0; pos < n; pos++) gIdx[pos] = Math.floor(pos / gs);
    outliers = spqr.outlierThreshold !== Infinity && rows >= 2;
    if (outliers) colVar = Float32Array.from(spqrColumnVariances(rows, n, p.cleaned, perm));
    spec = {
      ...spec,
      spqr: { maxq, groupSize: gs, outliers, simplified: spqr.simplifiedOutliers ?? false },
    };
  }
  const hasCodes = hasGrid || spqr !== null;
  const sparsity = structure?.kind === "unstructured" ? structure.sparsity : 0;
  const cpw = hasCodes ? codesPerWord(maxq) : 4;
  const shrink = new Float32Array(Math.floor(MSE_MAX_SHRINK * MSE_GRID));
  for (let s = 0; s < shrink.length; s++) shrink[s] = 1 - s / MSE_GRID;

  // Host arrays that receive the large results, their pages mapped by a
  // worker thread while this one uploads and the GPU works (reused by retries).
  const bigRowBytes = hasCodes ? Math.ceil(n / cpw) * 4 : n * 4;
  const maskRowBytes = Math.ceil(n / 32) * 4;
  const bigBytes = rows * bigRowBytes, maskWordBytes = rows * maskRowBytes;
  const permutedWeight = !hasCodes && p.perm !== null;
  const hostArrays = pagedArrays([
    bigBytes,
    ...(structure ? [maskWordBytes, rows * n] : []),
    ...(permutedWeight ? [rows * n * 4] : []),
  ]);
  const hostArray = (k: number): Promise<Uint8Array> => hostArrays.ready.then((a) => a[k]!);

  let damping = p.dampRatio * p.meanDiag;
  const hostH = p.xtx instanceof Float64Array ? p.xtx : null;
  // The layer error is measured here only where the full H is on the device,
  // W is not permuted and [W; W] of a tile fits one binding.
  const measure = p.measureError === true && hostH === null && p.perm === null &&
    tiles.every(({ r0, r1 }) => 2 * (r1 - r0) * n * 4 <= limit);
  // The values of H the solve reads (and scans): the packed lower triangle
  // uploaded from the host, or the device matrix itself.
  const hValues = hostH ? (n * (n + 1)) / 2 : n * n;
  let hBuf: GPUBuffer | null = null, permBuf: GPUBuffer | null = null;
  try {
    for (let attempt = 0;; attempt++) {
      const tPrep = performance.now();
      // The damped diagonal in reversed processing order; the permutation and
      // reversal of H itself happen on the GPU.
      const dd = new Float32Array(n);
      for (let i = 0; i < n; i++) dd[i] = p.diag[perm[n - 1 - i]!]! + damping;
      const tUpload = performance.now();
      if (hBuf === null) {
        if (hostH) {
          const h = storageBuffer(gpu, ((n * (n + 1)) / 2) * 4, "xtx-lower");
          hBuf = h;
          packLowerChunks(hostH, n, (offset, values) => writeBuffer(gpu, h, offset * 4, values));
        } else hBuf = p.xtx as GPUBuffer;
        permBuf = uploadBuffer(gpu, Uint32Array.from(perm), "perm");
      }
      const chol = choleskyBuffers(gpu, null, n);
      const owned: GPUBuffer[] = [chol.a, chol.x, chol.t, chol.status];
      const mk = (bytes: number, label: string) => {
        const b = storageBuffer(gpu, bytes, label);
        owned.push(b);
        return b;
      };
      const up = (data: ArrayBufferView, label: string) => {
        const b = uploadBuffer(gpu, data, label);
        owned.push(b);
        return b;
      };
      const ddBuf = up(dd, "damped-diagonal");
      const flags = mk(8, "nonfinite-flags"); // [W, H]

      // First submission: the factor U of H⁻¹. It runs while this thread
      // uploads W and records the loop.
      const tFactor = performance.now();
      const factor = new GpuBatch(gpu);
      encodeNonFiniteCheck(factor, hBuf, hValues, flags, 1);
      encodePermuteReverse(factor, chol.a, hBuf, permBuf!, ddBuf, n, hostH ? "packed" : "full");
      encodeUpperCholeskyOfInverse(factor, chol, n);
      factor.phase("factor");
      const factored = factor.submit();
      // Settled below; a failure here must not go unhandled meanwhile.
      factored.catch(() => {});

      const tW = performance.now();
      // Shared by all tiles.
      const shared = {
        U: chol.a,
        ...(hasGrid ? { gIdx: up(gIdx, "gIdx"), shrink: up(shrink, "shrink") } : {}),
        ...(structure?.kind === "unstructured"
          ? { state: mk(OBS_SELECT_STATE_WORDS * 4, "select") }
          : {}),
        ...(spqr
          ? {
            gIdx: up(gIdx, "gIdx"),
            spqrVar: up(colVar, "spqr-var"),
            // The threshold (∞ unless the kernel sets it), the first float16 overflow.
            spqrState: up(Uint32Array.of(0x7f800000, 0xffffffff), "spqr-state"),
            statRanges: mk(4 * groups * rowGroups * 4, "spqr-ranges"),
          }
          : {}),
      };
      const errorBufs: { m: GPUBuffer; p: GPUBuffer; s: GPUBuffer }[] = [];
      // W's values already on this device (a calibration runner's copy of
      // the weight): copied there instead of uploaded. The copies are the
      // first commands of the loop's submission.
      const batch = new GpuBatch(gpu);
      const source = deviceCopyOf(p.w, gpu);
      const obsTiles: ObsTile[] = tiles.map(({ r0, r1 }) => {
        const tr = r1 - r0;
        const W = mk(tr * n * 4, "W");
        if (source !== null) {
          batch.copy(source.buffer, source.offset + r0 * n * 4, W, 0, tr * n * 4);
        } else {
          const w = p.w.subarray(r0 * n, r1 * n);
          for (let o = 0; o < w.length; o += UPLOAD_CHUNK) {
            writeBuffer(gpu, W, o * 4, w.subarray(o, o + UPLOAD_CHUNK));
          }
        }
        if (measure) {
          // [W; W], whose first half becomes D = W − Ŵ after the loop.
          const m = mk(2 * tr * n * 4, "error:m");
          batch.copy(W, 0, m, 0, tr * n * 4);
          batch.copy(W, 0, m, tr * n * 4, tr * n * 4);
          errorBufs.push({ m, p: mk(2 * tr * n * 4, "error:p"), s: mk(2 * tr * 4, "error:s") });
        }
        const bufs: ObsBuffers = {
          ...shared,
          W,
          err: mk(tr * bs * 4, "err"),
          loss: mk(tr * 4, "loss"),
          ...(hasGrid
            ? {
              codes: mk(tr * bigRowBytes, "codes"),
              scales: up(scales!.subarray(r0 * groups, r1 * groups), "scales"),
              zeros: up(zeros!.subarray(r0 * groups, r1 * groups), "zeros"),
            }
            : {}),
          ...(spqr
            ? {
              codes: mk(tr * bigRowBytes, "codes"),
              scales: mk(tr * groups * 4, "scales"),
              zeros: mk(tr * groups * 4, "zeros"),
              statCodes: mk(2 * tr * groups * 4, "spqr-codes"),
            }
            : {}),
          ...(structure || spqr ? { mask: mk(tr * maskRowBytes, "mask") } : {}),
          ...(structure?.kind === "unstructured"
            ? { scores: mk(tr * bs * 4, "scores"), allow: mk(tr * 4, "allow") }
            : {}),
        };
        return { rows: tr, bufs };
      });
      const tEncode = performance.now();
      // W's finiteness, scanned before the loop changes it.
      for (const t of obsTiles) encodeNonFiniteCheck(batch, t.bufs.W, t.rows * n, flags, 0);
      const shape = {
        rows,
        n,
        groups,
        sparsity,
        ...(spqr
          ? {
            spqr: {
              tau: spqr.outlierThreshold,
              statisticGroupSize: spqr.statisticGroupSize,
              scaleMaxq: 2 ** spqr.scaleBits - 1,
              zeroMaxq: 2 ** spqr.zeroBits - 1,
            },
          }
          : {}),
      };
      encodeObsLoop(batch, spec, obsTiles, shape, (i1, i2, t) => {
        encodeGemm(
          batch,
          gemmSpec({ accumulate: true }),
          { c: t.bufs.W, a: t.bufs.err, b: t.bufs.U },
          {
            m: t.rows,
            n: n - i2,
            k: i2 - i1,
            lda: bs,
            ldb: n,
            ldc: n,
            offB: i1 * n + i2,
            offC: i2,
            alpha: -1,
            beta: 1,
          },
        );
      });
      // The layer error in the same submission: D = W − Ŵ, then [D; W]·H
      // and the row dot products (the undamped H, original order: no permutation).
      const errorSums = errorBufs.map((e, k) => {
        const t = obsTiles[k]!;
        encodeSubtract(batch, e.m, t.bufs.W, t.rows * n);
        encodeLayerErrorSums(batch, { ...e, h: hBuf! }, t.rows, n);
        return new Float32Array(2 * t.rows);
      });
      // With a grid the new weights are the dequantized codes (pruned ones
      // carry the zero point): W itself need not come back. Each tile's
      // results land in its rows of whole host arrays.
      const bigHost = hostArray(0);
      const maskHost = structure ? hostArray(1) : null;
      const lossHost = new Float32Array(rows);
      const scalesHost = new Float32Array(hasCodes ? rows * groups : 0);
      const zerosHost = new Float32Array(hasCodes ? rows * groups : 0);
      // SpQR: the loop's Ŵ (processing order), the outlier bits, the second level.
      const spqrHost = spqr
        ? {
          weight: new Float32Array(rows * n),
          words: new Uint32Array(rows * (maskRowBytes / 4)),
          statCodes: new Uint32Array(2 * rows * groups),
          ranges: new Float32Array(4 * groups * rowGroups),
          state: new Uint32Array(2),
        }
        : null;
      const bytes = (a: Float32Array) => new Uint8Array(a.buffer);
      const reads: GpuRead[] = [chol.status, flags];
      obsTiles.forEach((t, k) => {
        const { r0, r1 } = tiles[k]!;
        const range = (buffer: GPUBuffer, into: Uint8Array | Promise<Uint8Array>, size: number) =>
          reads.push({ buffer, offset: 0, size, into });
        range(t.bufs.loss, bytes(lossHost).subarray(r0 * 4, r1 * 4), t.rows * 4);
        range(
          hasCodes ? t.bufs.codes! : t.bufs.W,
          bigHost.then((a) => a.subarray(r0 * bigRowBytes, r1 * bigRowBytes)),
          t.rows * bigRowBytes,
        );
        if (spqrHost) {
          const u8 = (a: Float32Array | Uint32Array) => new Uint8Array(a.buffer);
          range(t.bufs.W, u8(spqrHost.weight).subarray(r0 * n * 4, r1 * n * 4), t.rows * n * 4);
          range(
            t.bufs.mask!,
            u8(spqrHost.words).subarray(r0 * maskRowBytes, r1 * maskRowBytes),
            t.rows * maskRowBytes,
          );
          // [2, tile rows, groups] per tile, tiles in row order.
          const c = u8(spqrHost.statCodes);
          range(
            t.bufs.statCodes!,
            c.subarray(2 * r0 * groups * 4, 2 * r1 * groups * 4),
            2 * t.rows * groups * 4,
          );
        }
        if (hasCodes) {
          const g = groups * 4;
          range(t.bufs.scales!, bytes(scalesHost).subarray(r0 * g, r1 * g), t.rows * g);
          range(t.bufs.zeros!, bytes(zerosHost).subarray(r0 * g, r1 * g), t.rows * g);
        }
        if (structure) {
          range(
            t.bufs.mask!,
            maskHost!.then((a) => a.subarray(r0 * maskRowBytes, r1 * maskRowBytes)),
            t.rows * maskRowBytes,
          );
        }
      });
      if (spqrHost) {
        const b = obsTiles[0]!.bufs;
        reads.push({
          buffer: b.statRanges!,
          offset: 0,
          size: spqrHost.ranges.byteLength,
          into: bytes(spqrHost.ranges),
        });
        reads.push({
          buffer: b.spqrState!,
          offset: 0,
          size: 8,
          into: new Uint8Array(spqrHost.state.buffer),
        });
      }
      errorBufs.forEach((e, k) => {
        const sums = errorSums[k]!;
        reads.push({ buffer: e.s, offset: 0, size: sums.byteLength, into: bytes(sums) });
      });
      const tSubmit = performance.now();
      // submit() queues the work before its first await: whatever this
      // thread does until `await` overlaps the GPU's work.
      const pending = batch.submit(reads);
      hostArrays.whileGpuWorks();
      let hostError: unknown = null, hostFailed = false;
      // While the GPU works: what it does not see. Dead columns were zeroed
      // before the upload (the full check, which reads all of H, runs then),
      // and H's upper triangle is never uploaded (its 485 MB at n = 11008
      // take ~70 ms on a 2-core development host; the H100 works ~180 ms).
      if (
        attempt === 0 && p.checkFinite &&
        (p.deadColumns > 0 || (hostH !== null && upperHasNonFinite(hostH, n)))
      ) {
        try {
          p.checkFinite();
        } catch (e) {
          hostFailed = true;
          hostError = e;
        }
      }
      const tWait = performance.now();
      let out: Awaited<ReturnType<GpuBatch["submit"]>>;
      let factorOut: Awaited<ReturnType<GpuBatch["submit"]>>;
      // The buffer of Ŵ handed to the caller (only after a successful attempt).
      const keep = p.onDeviceWeight !== undefined && p.perm === null && obsTiles.length === 1
        ? obsTiles[0]!.bufs.W
        : null;
      let kept = false;
      try {
        [factorOut, out] = await Promise.all([factored, pending]);
      } catch (e) {
        keep?.destroy();
        throw hostFailed ? hostError : e;
      } finally {
        for (const b of owned) if (b !== keep) b.destroy();
      }
      // Freed unless attached to the result below.
      try {
        if (hostFailed) throw hostError;
        const nonFinite = new Uint32Array(out.data[1]!);
        if ((nonFinite[0]! | nonFinite[1]!) !== 0 && p.checkFinite) {
          p.checkFinite(); // throws, naming the value
          if (!hostH && nonFinite[1]) {
            throw new RangeError(
              `Cannot run the OBS solver as the Hessian (on the device) holds a NaN or an infinity`,
            );
          }
          // Finite in float64 but not in float32.
          throw new RangeError(
            `Cannot run the OBS solver on the GPU as ${
              nonFinite[0] ? "'weight'" : "the Hessian"
            } holds values beyond the float32 range`,
          );
        }
        const status = new Uint32Array(out.data[0]!)[0]!;
        if (status !== 0) {
          if (attempt >= p.maxDampingRetries) throw new CholeskyError(status - 1, NaN);
          damping = damping > 0 ? damping * 10 : 1e-8 * p.meanDiag;
          continue;
        }
        if (spqrHost && spqrHost.state[1] !== 0xffffffff) {
          const at = spqrHost.state[1]!, pos = Math.floor(at / rows);
          fail(
            `the outlier at row ${at % rows}, column ${
              perm[pos]
            } does not fit in float16 (beyond ±65504)`,
          );
        }
        const tAssemble = performance.now();
        const arrays = await hostArrays.ready;
        const result = assembleObsResult(p, perm, {
          data: [
            out.data[0]!,
            lossHost.buffer,
            arrays[0]!.buffer as ArrayBuffer,
            ...(hasCodes ? [scalesHost.buffer, zerosHost.buffer] : []),
            ...(structure ? [arrays[1]!.buffer as ArrayBuffer] : []),
          ],
          gpuSeconds: factorOut.gpuSeconds + out.gpuSeconds,
          phases: { ...out.phases, ...factorOut.phases },
        }, {
          hasGrid: hasCodes,
          cpw,
          groups,
          gIdx,
          damping,
          structure: structure !== null,
          ...(structure ? { maskOut: arrays[2]!, keepMask: p.keepMask ?? false } : {}),
          ...(permutedWeight ? { weightOut: new Float32Array(arrays[3]!.buffer) } : {}),
          ...(spqrHost ? { spqr: spqrAssembly(spqrHost, rows, groups, tileRows) } : {}),
        });
        if (keep !== null) {
          kept = true;
          p.onDeviceWeight!({ gpu, buffer: keep });
        }
        const s = result.stats;
        if (measure) {
          let num = 0, den = 0;
          errorSums.forEach((sums, k) => {
            const r = obsTiles[k]!.rows;
            for (let i = 0; i < r; i++) {
              num += sums[i]!;
              den += sums[r + i]!;
            }
          });
          s.layerError = den === 0 ? (num === 0 ? 0 : Infinity) : num / den;
        }
        s.setupSeconds = (tPrep - p.t0) / 1000;
        s.reverseSeconds = (tUpload - tPrep) / 1000;
        s.uploadSeconds = (tFactor - tUpload) / 1000;
        s.factorEncodeSeconds = (tW - tFactor) / 1000;
        s.wUploadSeconds = (tEncode - tW) / 1000;
        s.encodeSeconds = (tSubmit - tEncode) / 1000;
        s.submitSeconds = (tWait - tSubmit) / 1000;
        s.waitSeconds = (tAssemble - tWait) / 1000;
        s.readSeconds = out.readSeconds;
        s.assembleSeconds = (performance.now() - tAssemble) / 1000;
        s.seconds = (performance.now() - p.t0) / 1000;
        return result;
      } finally {
        if (keep !== null && !kept) keep.destroy();
      }
    }
  } finally {
    if (hostH) hBuf?.destroy();
    permBuf?.destroy();
  }
}
