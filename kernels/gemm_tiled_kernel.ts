/**
 * A register-tiled matrix product for the large products of a calibration
 * pipeline, C ← α·op(A)·op(B) (+ β·C): the forward y = x·Wᵀ (`transB`) and
 * the Hessian C += XᵀX (`transA`, `lowerC`), from f32 or f16 storage,
 * always accumulating in f32: the dispatcher and the CPU reference of the
 * WGSL in `gemm_tiled_wgsl.ts`. A parameterized sibling of
 * `gemm_kernel.ts`, whose WGSL and callers stay as they are.
 *
 * `vec4` specializations need A, B and C aligned to 4 elements (offsets and
 * leading dimensions); otherwise {@linkcode encodeGemmTiled} throws a
 * RangeError, or with `fallback` records the existing kernel instead.
 *
 * Measured on the H100 (`tests/bench/gemm_sweep.ts`, one run, timestamp
 * queries, best of 3 after warm-up, PyTorch in the same run): the forward
 * x·Wᵀ at 65536×4096×4096, 32768×14336×4096 and 32768×4096×14336 reaches
 * 44.9 / 45.7 / 45.2 TFLOP/s in f32 (`bk` 16, single-buffered; 1.27–1.31× the
 * existing kernel's 34.9–35.4, 0.85–0.88× cuBLAS f32 with TF32 off at
 * 52–53), and XᵀX of 65536×4096 and 16384×14336 48.5 / 48.6 TFLOP/s of the
 * lower-triangle tiles computed (`bk` 32, single-buffered; 1.23× the existing
 * kernel; 94–96 TFLOP/s counted as the full 2·T·C², 1.77× torch's full
 * X.T@X in f32). f16 inputs were slower than f32 (35.8–41.8 TFLOP/s) and
 * double buffering 5–15% slower than one buffer. The pipeline's forward
 * linears and Hessians use these two variants on hardware adapters.
 *
 * Web-standard only.
 *
 * @module
 */

import { cachedPipeline, type Gpu, type GpuBatch } from "./backend.ts";
import {
  gemmTiledKey,
  gemmTiledLayout,
  type GemmTiledSpec,
  gemmTiledWgsl,
} from "./gemm_tiled_wgsl.ts";
import {
  encodeGemm,
  type GemmOperands,
  gemmReference,
  type GemmShape,
  type GemmSpec,
  gemmSpec,
  gemmUniforms,
} from "./gemm_kernel.ts";

/** Options of {@linkcode encodeGemmTiled}. */
export interface GemmTiledOptions {
  /**
   * Where the shape does not meet `vec4`'s alignment (or the device's
   * limits), record the existing kernel of `gemm_kernel.ts` (large tiles)
   * instead of throwing.
   * @default false
   */
  readonly fallback?: boolean;
}

/**
 * Why a shape cannot run a specialization on a device (alignment, limits),
 * or null when it can.
 *
 * @param gpu The GPU.
 * @param spec The specialization.
 * @param shape Sizes and placement.
 * @returns A reason, or null.
 */
export function gemmTiledMisfit(gpu: Gpu, spec: GemmTiledSpec, shape: GemmShape): string | null {
  const lay = gemmTiledLayout(spec);
  if (spec.inputs === "f16" && !gpu.f16) return "f16 inputs need shader-f16";
  if (lay.workgroupBytes > gpu.limits.maxComputeWorkgroupStorageSize) {
    return `${lay.workgroupBytes} bytes of workgroup memory exceed the device's ${gpu.limits.maxComputeWorkgroupStorageSize}`;
  }
  if (lay.threads > gpu.limits.maxComputeInvocationsPerWorkgroup) {
    return `${lay.threads} threads exceed the device's ${gpu.limits.maxComputeInvocationsPerWorkgroup}`;
  }
  if (spec.vec4) {
    const { lda, ldb, ldc, offA = 0, offB = 0, offC = 0 } = shape;
    for (const [name, v] of Object.entries({ lda, ldb, ldc, offA, offB, offC })) {
      if (v % 4 !== 0) return `'${name}' must be a multiple of 4 with vec4: current value is ${v}`;
    }
  }
  return null;
}

/**
 * Records one tiled product into a batch: C ← α·op(A)·op(B) (+ β·C), on
 * separate buffers (no aliasing; A and B may be the same read-only buffer).
 *
 * @param batch The batch to record into.
 * @param spec The specialization.
 * @param ops The buffers (`a` and `b` required).
 * @param shape Sizes, offsets, leading dimensions and scalars, in elements.
 * @param options `fallback`.
 * @throws RangeError for a shape the specialization cannot run (see
 *   {@linkcode gemmTiledMisfit}) without `fallback`, or sizes that are not u32.
 */
export function encodeGemmTiled(
  batch: GpuBatch,
  spec: GemmTiledSpec,
  ops: GemmOperands,
  shape: GemmShape,
  options: GemmTiledOptions = {},
): void {
  const { fallback = false } = options;
  const { m, n } = shape;
  const uniforms = gemmUniforms(shape, "a tiled product");
  if (ops.a === undefined || ops.b === undefined) {
    throw new TypeError("Cannot encode a tiled product: 'a' and 'b' buffers are required");
  }
  const misfit = gemmTiledMisfit(batch.gpu, spec, shape);
  if (misfit !== null) {
    if (spec.inputs === "f16" && !batch.gpu.f16) {
      throw new TypeError(`Cannot encode a tiled product: ${misfit}`);
    }
    if (!fallback) throw new RangeError(`Cannot encode a tiled product: ${misfit}`);
    encodeGemm(batch, gemmFallbackSpec(spec), ops, shape);
    return;
  }
  if (m === 0 || n === 0) return;
  const pipeline = cachedPipeline(batch.gpu, gemmTiledKey(spec), () => gemmTiledWgsl(spec), {
    dynamicUniforms: true,
  });
  batch.dispatch(pipeline, [
    ops.c,
    ops.a,
    ops.b,
    batch.uniform(uniforms),
  ], [Math.ceil(n / spec.bn), Math.ceil(m / spec.bm)]);
}

/**
 * The specialization of the existing kernel (`gemm_kernel.ts`, large tiles)
 * that computes the same product: the fallback of {@linkcode encodeGemmTiled}.
 *
 * @param spec The tiled specialization.
 * @returns The existing kernel's specialization.
 */
export function gemmFallbackSpec(spec: GemmTiledSpec): GemmSpec {
  const { transA, transB, accumulate, inputs, lowerC } = spec;
  return gemmSpec({ transA, transB, accumulate, inputs, lowerC });
}

/**
 * CPU reference of {@linkcode gemmTiledWgsl} in float64 on plain arrays: every
 * element of C in range is written, except, with `lowerC`, those of the
 * bm×bn tiles entirely above the diagonal (left as they were).
 *
 * @param spec The specialization (tile sizes matter only with `lowerC`).
 * @param c C's storage; updated in place.
 * @param a A's storage.
 * @param b B's storage.
 * @param shape Sizes and placement.
 */
export function gemmTiledReference(
  spec: GemmTiledSpec,
  c: Float32Array | Float64Array,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  shape: GemmShape,
): void {
  const full = Float64Array.from(c);
  gemmReference({ ...gemmFallbackSpec(spec), lowerC: false }, full, a, b, shape);
  const { m, n, ldc, offC = 0 } = shape;
  for (let i = 0; i < m; i++) {
    const computed = (j: number) =>
      !spec.lowerC ||
      Math.floor(j / spec.bn) * spec.bn < Math.floor(i / spec.bm) * spec.bm + spec.bm;
    for (let j = 0; j < n; j++) {
      if (computed(j)) c[offC + i * ldc + j] = full[offC + i * ldc + j]!;
    }
  }
}
