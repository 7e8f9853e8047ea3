/**
 * Packing of uniform-grid weights into our kernel layout, the "rowtile32"
 * layout `qmatmul()` reads ({@linkcode PackedWeight}; its description, the
 * one place the layout is defined, is in `kernels/packed_layout.ts`), with
 * `packWeights` / `unpackWeights` and converters from and to the GPTQ
 * checkpoint layout. Web-standard only.
 *
 * @module
 */

import { packBitsInto, unpackBits } from "../core/bitpack.ts";
import {
  PACK_TILE,
  PACKED_BITS,
  packedChunkOffset,
  type PackedWeight,
} from "../kernels/packed_layout.ts";
import {
  fromGptqCheckpoint,
  type FromGptqCheckpointOptions,
  type GptqCheckpointTensors,
  toGptqCheckpoint,
  type ToGptqCheckpointOptions,
} from "./gptq_checkpoint.ts";
import type { QuantizedWeight } from "./quantized_weight.ts";

export {
  PACK_TILE,
  PACKED_BITS,
  packedChunkOffset,
  type PackedWeight,
} from "../kernels/packed_layout.ts";

/** Options of {@linkcode packWeights}. */
export interface PackWeightsOptions {
  /** Storage of scales and zero points ("f16" halves their bytes; values are rounded). @default "f16" */
  scaleType?: "f16" | "f32";
}

function checkScaleType(scaleType: unknown): asserts scaleType is "f16" | "f32" {
  if (scaleType !== "f16" && scaleType !== "f32") {
    throw new RangeError(
      `Cannot pack weights as 'scaleType' must be "f16" or "f32": current value is ${
        String(scaleType)
      }`,
    );
  }
}

function checkPackedBits(bits: number, what: string): void {
  if (!PACKED_BITS.includes(bits)) {
    throw new RangeError(
      `Cannot ${what} as 'bits' must be 2, 3, 4 or 8: current value is ${bits}`,
    );
  }
}

/**
 * Packs a uniform-grid quantized weight into our kernel layout.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { packWeights, unpackWeights } from "./pack.ts";
 * import { rtn } from "./rtn.ts";
 * import { tensor } from "../core/tensor.ts";
 * const w = tensor("f32", [2, 64], new Float32Array(128).map((_, i) => Math.sin(i)));
 * const q = await rtn(w, { bits: 4, groupSize: 32 });
 * const packed = packWeights(q, { scaleType: "f32" });
 * assert(packed.words.length === 32 * 2 * 4); // 32 padded rows, 2 chunks, 4 words
 * assert(unpackWeights(packed).codes.join() === q.codes.join());
 * ```
 * @param q The quantized weight (codes [N, K], scales/zeros [N, groups], gIdx [K]).
 * @param options Scale storage.
 * @returns The packed weight.
 */
export function packWeights(q: QuantizedWeight, options: PackWeightsOptions = {}): PackedWeight {
  const { scaleType = "f16" } = options;
  checkScaleType(scaleType);
  if (q?.kind !== "uniform") {
    throw new TypeError(
      `Cannot pack weights as 'kind' must be "uniform": current value is ${
        String((q as { kind?: unknown } | null)?.kind)
      }`,
    );
  }
  const { bits } = q;
  checkPackedBits(bits, "pack weights");
  const [N, K] = q.shape;
  if (!(Number.isInteger(N) && Number.isInteger(K) && N > 0 && K > 0)) {
    throw new RangeError(`Cannot pack weights of shape [${q.shape}]`);
  }
  const groups = q.scales.length / N;
  if (!Number.isInteger(groups) || groups < 1 || q.zeros.length !== q.scales.length) {
    throw new RangeError(
      `Cannot pack weights as 'scales' (${q.scales.length}) and 'zeros' (${q.zeros.length}) must both hold ${N} × groups values`,
    );
  }
  if (q.codes.length !== N * K || q.gIdx.length !== K) {
    throw new RangeError(
      `Cannot pack weights as 'codes' (${q.codes.length}) must be ${N}×${K} and 'gIdx' (${q.gIdx.length}) ${K} long`,
    );
  }
  // Columns of each group, in ascending original order.
  const counts = new Int32Array(groups);
  for (let k = 0; k < K; k++) {
    const g = q.gIdx[k]!;
    if (!(g >= 0 && g < groups)) {
      throw new RangeError(`Cannot pack weights as 'gIdx'[${k}] = ${g} is outside [0, ${groups})`);
    }
    counts[g]!++;
  }
  const maxCount = Math.max(...counts);
  const Gp = Math.max(PACK_TILE, Math.ceil(maxCount / PACK_TILE) * PACK_TILE);
  const Kp = groups * Gp;
  const Np = Math.ceil(N / PACK_TILE) * PACK_TILE;
  const colIdx = new Int32Array(Kp).fill(-1);
  const fill = new Int32Array(groups);
  for (let k = 0; k < K; k++) {
    const g = q.gIdx[k]!;
    colIdx[g * Gp + fill[g]!++] = k;
  }
  let identity = Kp === K;
  for (let j = 0; identity && j < Kp; j++) identity = colIdx[j] === j;

  const C = Kp / PACK_TILE;
  const maxq = (1 << bits) - 1;
  const words = new Uint32Array((Np / PACK_TILE) * C * PACK_TILE * bits);
  const chunk = new Uint16Array(PACK_TILE);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      for (let i = 0; i < PACK_TILE; i++) {
        const k = colIdx[c * PACK_TILE + i]!;
        const code = k < 0 ? 0 : q.codes[n * K + k]!;
        if (code > maxq) {
          throw new RangeError(
            `Cannot pack code ${code} (row ${n}, column ${k}) into ${bits} bits`,
          );
        }
        chunk[i] = code;
      }
      packBitsInto(chunk, bits, words, packedChunkOffset(n, c, C, bits));
    }
  }
  const Store = scaleType === "f16" ? Float16Array : Float32Array;
  const scales = new Store(groups * Np);
  const z0 = q.zeros[0]!;
  const constantZero = q.zeros.every((z) => z === z0);
  const zeros = constantZero ? null : new Store(groups * Np);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < groups; g++) {
      scales[g * Np + n] = q.scales[n * groups + g]!;
      if (zeros) zeros[g * Np + n] = q.zeros[n * groups + g]!;
    }
  }
  const packed: PackedWeight = {
    kind: "packed",
    format: "rowtile32",
    shape: [N, K],
    bits,
    groupSize: q.groupSize,
    symmetric: q.symmetric,
    groups,
    groupStride: Gp,
    paddedRows: Np,
    paddedCols: Kp,
    colIdx: identity ? null : colIdx,
    words,
    scaleType,
    scales,
    zeros,
    zero: constantZero ? (scaleType === "f16" ? Math.fround(new Float16Array([z0])[0]!) : z0) : 0,
  };
  return q.perm ? { ...packed, perm: Int32Array.from(q.perm) } : packed;
}

/**
 * Reads a packed weight back into a {@linkcode QuantizedWeight} (scales and
 * zero points as stored, so f16 storage comes back rounded; `stats` is empty).
 *
 * @param p The packed weight.
 * @returns The quantized weight, codes [N, K] in the original column order.
 */
export function unpackWeights(p: PackedWeight): QuantizedWeight {
  if (p?.kind !== "packed" || p.format !== "rowtile32") {
    throw new TypeError('Cannot unpack weights: not a "rowtile32" packed weight');
  }
  checkPackedBits(p.bits, "unpack weights");
  const [N, K] = p.shape;
  const { bits, groups, groupStride: Gp, paddedRows: Np, paddedCols: Kp } = p;
  const C = Kp / PACK_TILE;
  if (p.words.length !== (Np / PACK_TILE) * C * PACK_TILE * bits) {
    throw new RangeError(`Cannot unpack weights as 'words' has ${p.words.length} words`);
  }
  const colIdx = p.colIdx ?? Int32Array.from({ length: Kp }, (_, j) => j);
  const gIdx = new Int32Array(K).fill(-1);
  for (let j = 0; j < Kp; j++) {
    const k = colIdx[j]!;
    if (k >= 0) gIdx[k] = Math.floor(j / Gp);
  }
  const codes = new Uint8Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const o = packedChunkOffset(n, c, C, bits);
      const chunk = unpackBits(p.words.subarray(o, o + bits), bits, PACK_TILE);
      for (let i = 0; i < PACK_TILE; i++) {
        const k = colIdx[c * PACK_TILE + i]!;
        if (k >= 0) codes[n * K + k] = chunk[i]!;
      }
    }
  }
  const scales = new Float32Array(N * groups);
  const zeros = new Float32Array(N * groups);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < groups; g++) {
      scales[n * groups + g] = p.scales[g * Np + n]!;
      zeros[n * groups + g] = p.zeros ? p.zeros[g * Np + n]! : p.zero;
    }
  }
  const q: QuantizedWeight = {
    kind: "uniform",
    shape: [N, K],
    bits,
    groupSize: p.groupSize,
    symmetric: p.symmetric,
    codes,
    scales,
    zeros,
    gIdx,
    stats: { seconds: 0 },
  };
  return p.perm ? { ...q, perm: Int32Array.from(p.perm) } : q;
}

/**
 * Packs the tensors of a GPTQ checkpoint layer into our kernel layout.
 *
 * @param tensors `qweight`, `qzeros`, `scales`, `g_idx`.
 * @param options What the checkpoint's `quantization_config` says, and the scale storage.
 * @returns The packed weight.
 */
export function packGptqCheckpoint(
  tensors: GptqCheckpointTensors,
  options: FromGptqCheckpointOptions & PackWeightsOptions,
): PackedWeight {
  const { scaleType = "f16", ...checkpoint } = options;
  return packWeights(fromGptqCheckpoint(tensors, checkpoint), { scaleType });
}

/**
 * Converts a packed weight to the GPTQ checkpoint tensors.
 *
 * @param p The packed weight.
 * @param options The checkpoint version.
 * @returns `qweight`, `qzeros`, `scales`, `g_idx`.
 */
export function packedToGptqCheckpoint(
  p: PackedWeight,
  options: ToGptqCheckpointOptions = {},
): GptqCheckpointTensors {
  return toGptqCheckpoint(unpackWeights(p), options);
}
