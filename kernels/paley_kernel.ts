/**
 * The Paley type I block of a Hadamard transform on the GPU: uploading its
 * multipliers, picking the default specialization for a device, recording
 * the dispatch (alone, or as a factor of `fwht_kernel.ts`'s plans), and the
 * CPU reference. The algorithm and its WGSL generator are in
 * `paley_wgsl.ts`.
 *
 * Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { paleyFastApplies, paleyFastPlan, paleyInPlace } from "../core/_paley_fast.ts";
import type { FwhtPlan } from "../core/fwht.ts";
import {
  cachedPipeline,
  foldGroups,
  type Gpu,
  GpuBatch,
  storageBuffer,
  uploadBuffer,
} from "./backend.ts";
import { PALEY_MAX_P, type PaleySpec, paleyWgsl, paleyWorkgroupBytes } from "./paley_wgsl.ts";

/** The multipliers of one block uploaded, for {@linkcode encodePaley}. */
export interface PaleyPrepared {
  /** Field order. */
  readonly q: number;
  /** Whether it applies Hᵀ. */
  readonly transpose: boolean;
  /** (1 ± λ_u)/q per packed position, vec2 f32. */
  readonly multipliers: GPUBuffer;
}

/**
 * Uploads the multipliers of the Paley I block of order q + 1.
 *
 * @param gpu The GPU.
 * @param q Field order (a prime power ≡ 3 mod 4).
 * @param transpose Prepare Hᵀ instead of H.
 * @returns The prepared block (destroy `multipliers` when done).
 */
export function preparePaley(gpu: Gpu, q: number, transpose = false): PaleyPrepared {
  const plan = paleyFastPlan(q);
  const mul = Float32Array.from(transpose ? plan.mulT : plan.mul);
  return { q, transpose, multipliers: uploadBuffer(gpu, mul, "paley-multipliers") };
}

/**
 * The default specialization for blocks of order q + 1, with H_{pow2} fused when pow2 > 1.
 *
 * @param gpu The GPU (its workgroup memory limit).
 * @param q Field order.
 * @param transpose Apply Hᵀ.
 * @param pow2 Sylvester order fused across groups of blocks (1: none).
 * @returns The specialization, or null when none fits (or p is too large to unroll).
 */
export function paleyDefaultSpec(
  gpu: Gpu,
  q: number,
  transpose: boolean,
  pow2 = 1,
): PaleySpec | null {
  const budget = gpu.limits.maxComputeWorkgroupStorageSize;
  const vec4 = (q + 1) % 4 === 0, plane = paleyFastPlan(q).k >= 3;
  if (paleyFastPlan(q).p > PALEY_MAX_P) return null;
  // The fastest variants of tests/bench/paley_sweep.ts on the H100 for [4096, 11008]
  // (q = 7^3, pow2 = 32), in one run: fused, planes, 256 threads, 264 persistent
  // workgroups 0.667 ms (one workgroup per row 0.803 ms, lines instead of planes
  // 0.880 ms); not fused, planes, 8 blocks, 128 threads 0.693 ms (lines 0.839 ms).
  if (pow2 > 1) {
    // Whole groups of pow2 blocks, up to 32 blocks per workgroup.
    for (let chunks = Math.max(32, pow2); chunks >= pow2; chunks /= 2) {
      const persistent = plane && vec4 ? 264 : 0;
      const spec: PaleySpec = { q, transpose, chunks, threads: 256, pow2, vec4, plane, persistent };
      if (paleyWorkgroupBytes(spec) <= budget) return spec;
    }
    return null;
  }
  for (const chunks of plane ? [8, 4, 2, 1] : [16, 8, 4, 2, 1]) {
    const threads = plane ? 128 : 256;
    const spec: PaleySpec = { q, transpose, chunks, threads, pow2: 1, vec4, plane, persistent: 0 };
    if (paleyWorkgroupBytes(spec) <= budget) return spec;
  }
  return null;
}

/** How `encodeFwht` runs a Paley I factor: its multipliers and kernel variant. */
export interface PaleyFactorPass {
  /** The uploaded multipliers. */
  readonly prepared: PaleyPrepared;
  /** The variant; with `pow2 > 1` it also runs the plan's Sylvester part. */
  readonly spec: PaleySpec;
}

/**
 * The Paley kernel pass for factor `index` of a transform plan, when it
 * applies: an innermost Paley I factor over an extension field (k ≥ 2). When
 * it is the plan's only dense factor, the Sylvester part is fused into it
 * (the row, pow2·(q + 1) values, must fit in workgroup memory).
 *
 * @param gpu The GPU.
 * @param plan The plan (`fwhtPlan`).
 * @param index Index into `plan.dense`.
 * @param transpose Apply Hᵀ.
 * @returns The pass, or null when the factor goes through the dense product.
 */
export function paleyFactorPass(
  gpu: Gpu,
  plan: FwhtPlan,
  index: number,
  transpose: boolean,
): PaleyFactorPass | null {
  const d = plan.dense[index];
  if (d === undefined || d.kind !== "paley1" || index !== plan.dense.length - 1) return null;
  const q = d.m - 1;
  if (!paleyFastApplies(q) || paleyFastPlan(q).p > PALEY_MAX_P) return null;
  const fusable = plan.dense.length === 1 && plan.pow2 > 1 && plan.pow2 <= 64;
  const spec = (fusable ? paleyDefaultSpec(gpu, q, transpose, plan.pow2) : null) ??
    paleyDefaultSpec(gpu, q, transpose, 1);
  if (spec === null) return null;
  return { prepared: preparePaley(gpu, q, transpose), spec };
}

/**
 * Records y = B·x for every block of q + 1 consecutive values of `x` (and,
 * with `spec.pow2 > 1`, H_{pow2} across each group of pow2 blocks), times
 * `scale`, into `y`.
 *
 * @param batch The batch.
 * @param prepared From {@linkcode preparePaley} (same q and transpose as `spec`).
 * @param spec The specialization.
 * @param y Output buffer (f32, at least blocks·(q + 1) values).
 * @param x Input buffer (f32; not `y`).
 * @param blocks Number of blocks (a multiple of `spec.pow2`).
 * @param scale Factor applied to every output.
 */
export function encodePaley(
  batch: GpuBatch,
  prepared: PaleyPrepared,
  spec: PaleySpec,
  y: GPUBuffer,
  x: GPUBuffer,
  blocks: number,
  scale = 1,
): void {
  if (prepared.q !== spec.q || prepared.transpose !== spec.transpose) {
    throw new RangeError(
      `Cannot encode the Paley kernel: prepared for q = ${prepared.q} (transpose ${prepared.transpose}), spec has q = ${spec.q} (transpose ${spec.transpose})`,
    );
  }
  if (!Number.isSafeInteger(blocks) || blocks < 0 || blocks % spec.pow2 !== 0) {
    throw new RangeError(
      `Cannot encode the Paley kernel as 'blocks' must be a multiple of ${spec.pow2}: current value is ${blocks}`,
    );
  }
  const key = `paley:${JSON.stringify(spec)}`;
  const pipe = cachedPipeline(batch.gpu, key, () => paleyWgsl(spec));
  const groups = Math.ceil(blocks / spec.chunks);
  batch.dispatch(pipe, [
    y,
    x,
    prepared.multipliers,
    batch.uniform([{ u32: blocks }, { f32: scale }, { u32: 0 }, { u32: 0 }]),
  ], foldGroups(batch.gpu, spec.persistent > 0 ? Math.min(groups, spec.persistent) : groups));
}

/** Options of {@linkcode paleyGpu} and {@linkcode paleyReference}. */
export interface PaleyOptions {
  /** Field order q; the rows hold blocks of q + 1. */
  q: number;
  /** Apply Hᵀ. @default false */
  transpose?: boolean;
  /** Sylvester order applied across groups of pow2 blocks. @default 1 */
  pow2?: number;
  /** Factor on every output. @default 1 */
  scale?: number;
}

/**
 * The Paley I block transform of every block of q + 1 values of `x` on the
 * GPU, in one submission (for tests; `encodePaley` is the building block).
 *
 * @param gpu The GPU.
 * @param x Values, length a multiple of pow2·(q + 1).
 * @param options See {@linkcode PaleyOptions}; `spec` overrides the default specialization.
 * @returns The transformed values and the GPU seconds.
 */
export async function paleyGpu(
  gpu: Gpu,
  x: Tensor<"f32">,
  options: PaleyOptions & { spec?: PaleySpec },
): Promise<{ y: Tensor<"f32">; gpuSeconds: number }> {
  const { q, transpose = false, pow2 = 1, scale = 1 } = options;
  const spec = options.spec ?? paleyDefaultSpec(gpu, q, transpose, pow2);
  if (spec === null) {
    throw new RangeError(
      `Cannot transform on the GPU: no Paley kernel fits q = ${q} with pow2 = ${pow2}`,
    );
  }
  const m = q + 1;
  if (x.data.length % (m * spec.pow2) !== 0) {
    throw new RangeError(
      `Cannot transform ${x.data.length} values in groups of ${spec.pow2}·${m}`,
    );
  }
  const prepared = preparePaley(gpu, q, transpose);
  const xb = uploadBuffer(gpu, x.data, "paley-x");
  const yb = storageBuffer(gpu, Math.max(4, x.data.byteLength), "paley-y");
  const batch = new GpuBatch(gpu);
  encodePaley(batch, prepared, spec, yb, xb, x.data.length / m, scale);
  const { data, gpuSeconds } = await batch.submit([yb]);
  xb.destroy();
  yb.destroy();
  prepared.multipliers.destroy();
  const y = new Float32Array(data[0]!).slice(0, x.data.length);
  return { y: { dtype: "f32", shape: x.shape, data: y }, gpuSeconds };
}

/**
 * CPU reference of {@linkcode paleyGpu}: `core/_paley_fast.ts` on each block,
 * then H_{pow2} across each group of pow2 blocks, times scale, in float64.
 *
 * @param x Values.
 * @param options See {@linkcode PaleyOptions}.
 * @returns The transformed values (f32).
 */
export function paleyReference(x: Tensor<"f32">, options: PaleyOptions): Tensor<"f32"> {
  const { q, transpose = false, pow2 = 1, scale = 1 } = options;
  const m = q + 1;
  const v = Float64Array.from(x.data);
  paleyInPlace(v, paleyFastPlan(q), 1, transpose);
  for (let g = 0; g < v.length; g += pow2 * m) {
    for (let half = 1; half < pow2; half *= 2) {
      for (let c = 0; c < pow2; c++) {
        if (c & half) continue;
        for (let i = 0; i < m; i++) {
          const a = v[g + c * m + i]!, b = v[g + (c + half) * m + i]!;
          v[g + c * m + i] = a + b;
          v[g + (c + half) * m + i] = a - b;
        }
      }
    }
  }
  return { dtype: "f32", shape: x.shape, data: Float32Array.from(v, (t) => t * scale) };
}
