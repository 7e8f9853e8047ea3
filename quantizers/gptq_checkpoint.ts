/**
 * The GPTQ checkpoint layout that vLLM, transformers and GPTQModel load, and
 * converters from and to {@linkcode QuantizedWeight}. Web-standard only.
 *
 * For a linear layer with K input features, N output features, b bits and
 * groups of G input features (G = K when per channel):
 *
 * - `qweight` i32 [⌈K·b/32⌉, N]: column n holds the codes W[n, 0..K) as a
 *   little-endian bit stream along K (see {@linkcode packBits}): code k sits at
 *   stream bits [k·b, (k+1)·b), word `⌊s/32⌋`, bit `s mod 32`. For b = 4 that is
 *   8 codes per word, code k at bits 4·(k mod 8); for b = 3, 32 codes fill 3
 *   words and codes 10 and 21 straddle word boundaries.
 * - `qzeros` i32 [⌈K/G⌉, ⌈N·b/32⌉]: row g holds the zero points of group g for
 *   all N outputs, packed the same way along N. Version 1 ("gptq", the
 *   AutoGPTQ convention) stores `zero − 1`; version 2 ("gptq_v2") stores
 *   `zero`. Version 1 therefore cannot hold a zero point of 0: converting one
 *   throws rather than writing a checkpoint that loaders misread.
 * - `scales` f16 [⌈K/G⌉, N].
 * - `g_idx` i32 [K]: the group of each input feature (act-order checkpoints
 *   list groups in the permuted order).
 *
 * Dequantization: `W[n, k] = scales[g, n] · (q[k, n] − zero[g, n])`, `g = g_idx[k]`.
 *
 * @module
 */

import { type Tensor, tensor } from "../core/tensor.ts";
import { packBits, packedWords, unpackBits } from "../core/bitpack.ts";
import type { QuantizedWeight } from "./quantized_weight.ts";

/** The four tensors of one GPTQ-quantized linear layer. */
export interface GptqCheckpointTensors {
  /** i32 [⌈K·b/32⌉, N]. */
  qweight: Tensor<"i32">;
  /** i32 [groups, ⌈N·b/32⌉]. */
  qzeros: Tensor<"i32">;
  /** f16 [groups, N]. */
  scales: Tensor<"f16">;
  /** i32 [K]. */
  g_idx: Tensor<"i32">;
}

/** Options of {@linkcode toGptqCheckpoint}. */
export interface ToGptqCheckpointOptions {
  /** 1: zero points stored minus one (AutoGPTQ "gptq"); 2: stored as is ("gptq_v2"). @default 1 */
  version?: 1 | 2;
}

/** Bit widths the GPTQ checkpoint kernels load. */
export const GPTQ_CHECKPOINT_BITS: readonly number[] = [2, 3, 4, 8];

function checkVersion(version: unknown): asserts version is 1 | 2 {
  if (version !== 1 && version !== 2) {
    throw new RangeError(`'version' must be 1 or 2: current value is ${version}`);
  }
}

function checkBitsForCheckpoint(bits: number): void {
  if (!GPTQ_CHECKPOINT_BITS.includes(bits)) {
    throw new RangeError(
      `GPTQ checkpoints hold 2, 3, 4 or 8-bit codes: 'bits' is ${bits}`,
    );
  }
}

/**
 * Converts a quantized weight to the GPTQ checkpoint tensors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { toGptqCheckpoint, fromGptqCheckpoint } from "./gptq_checkpoint.ts";
 * import type { QuantizedWeight } from "./quantized_weight.ts";
 * const q: QuantizedWeight = {
 *   kind: "uniform", shape: [2, 8], bits: 4, groupSize: -1, symmetric: false,
 *   codes: new Uint8Array(16).map((_, i) => i), scales: new Float32Array([0.5, 0.25]),
 *   zeros: new Float32Array([3, 7]), gIdx: new Int32Array(8), stats: { seconds: 0 },
 * };
 * const ckpt = toGptqCheckpoint(q, { version: 2 });
 * assert(ckpt.qweight.shape.join() === "1,2");
 * const back = fromGptqCheckpoint(ckpt, { bits: 4, groupSize: -1, version: 2 });
 * assert(back.codes[5] === 5);
 * ```
 * @param q The quantized weight, codes [N, K].
 * @param options The checkpoint version.
 * @returns `qweight`, `qzeros`, `scales`, `g_idx`.
 */
export function toGptqCheckpoint(
  q: QuantizedWeight,
  options: ToGptqCheckpointOptions = {},
): GptqCheckpointTensors {
  const { version = 1 } = options;
  checkVersion(version);
  const { bits } = q;
  checkBitsForCheckpoint(bits);
  const [N, K] = q.shape;
  const groups = q.scales.length / N;
  if (!Number.isInteger(groups) || q.zeros.length !== q.scales.length) {
    throw new RangeError(
      `Cannot convert: 'scales' (${q.scales.length}) and 'zeros' (${q.zeros.length}) must both hold rows × groups values`,
    );
  }
  if (q.codes.length !== N * K || q.gIdx.length !== K) {
    throw new RangeError(
      `Cannot convert: codes (${q.codes.length}) must be ${N}×${K} and gIdx (${q.gIdx.length}) ${K} long`,
    );
  }
  const maxq = (1 << bits) - 1;
  // qweight: per output column n, the stream of its K codes.
  const wordsK = packedWords(K, bits);
  const qweight = new Int32Array(wordsK * N);
  for (let n = 0; n < N; n++) {
    const words = packBits(q.codes.subarray(n * K, (n + 1) * K), bits);
    for (let w = 0; w < wordsK; w++) qweight[w * N + n] = words[w]! | 0;
  }
  // qzeros and scales: [groups, N].
  const wordsN = packedWords(N, bits);
  const qzeros = new Int32Array(groups * wordsN);
  const scales = new Float16Array(groups * N);
  const zeroRow = new Uint16Array(N);
  for (let g = 0; g < groups; g++) {
    for (let n = 0; n < N; n++) {
      const z = q.zeros[n * groups + g]!;
      if (!Number.isInteger(z) || z < 0 || z > maxq) {
        throw new RangeError(
          `Cannot store zero point ${z} (row ${n}, group ${g}) in a ${bits}-bit GPTQ checkpoint: ` +
            `zero points must be integers in [0, ${maxq}]`,
        );
      }
      if (version === 1 && z === 0) {
        throw new RangeError(
          `Version 1 checkpoints store zero − 1 and cannot hold the zero point 0 of row ${n}, ` +
            `group ${g}: write version 2`,
        );
      }
      zeroRow[n] = version === 1 ? z - 1 : z;
      scales[g * N + n] = q.scales[n * groups + g]!;
    }
    const words = packBits(zeroRow, bits);
    for (let w = 0; w < wordsN; w++) qzeros[g * wordsN + w] = words[w]! | 0;
  }
  return {
    qweight: tensor("i32", [wordsK, N], qweight),
    qzeros: tensor("i32", [groups, wordsN], qzeros),
    scales: tensor("f16", [groups, N], scales),
    g_idx: tensor("i32", [K], Int32Array.from(q.gIdx)),
  };
}

/** Options of {@linkcode fromGptqCheckpoint}: what the checkpoint's `quantization_config` says. */
export interface FromGptqCheckpointOptions {
  /** Bits per code (`bits`). */
  bits: number;
  /** Group size (`group_size`), −1 for per channel. @default -1 */
  groupSize?: number;
  /** Symmetric grid (`sym`). @default false */
  symmetric?: boolean;
  /** 1 for "gptq" (zero − 1 stored), 2 for "gptq_v2". @default 1 */
  version?: 1 | 2;
}

/**
 * Reads GPTQ checkpoint tensors back into a {@linkcode QuantizedWeight}
 * (scales come back as the f16 values the checkpoint holds).
 *
 * @param tensors `qweight`, `qzeros`, `scales`, `g_idx`.
 * @param options Bits, group size, symmetry and version from `quantization_config`.
 * @returns The quantized weight, codes [N, K].
 */
export function fromGptqCheckpoint(
  tensors: GptqCheckpointTensors,
  options: FromGptqCheckpointOptions,
): QuantizedWeight {
  const { bits, groupSize = -1, symmetric = false, version = 1 } = options;
  checkVersion(version);
  checkBitsForCheckpoint(bits);
  const { qweight, qzeros, scales, g_idx } = tensors;
  if (qweight?.dtype !== "i32" || qzeros?.dtype !== "i32" || g_idx?.dtype !== "i32") {
    throw new TypeError("'qweight', 'qzeros' and 'g_idx' must be i32 tensors");
  }
  if (scales?.dtype !== "f16" && (scales as Tensor | undefined)?.dtype !== "f32") {
    throw new TypeError("'scales' must be an f16 (or f32) tensor");
  }
  if (scales.shape.length !== 2 || qweight.shape.length !== 2 || qzeros.shape.length !== 2) {
    throw new RangeError("'qweight', 'qzeros' and 'scales' must be 2-D");
  }
  const K = g_idx.data.length;
  const [groups, N] = scales.shape as [number, number];
  const wordsK = packedWords(K, bits), wordsN = packedWords(N, bits);
  if (qweight.shape[0] !== wordsK || qweight.shape[1] !== N) {
    throw new RangeError(
      `'qweight' must be [${wordsK}, ${N}] for K = ${K}, N = ${N}, ${bits} bits: it is [${qweight.shape}]`,
    );
  }
  if (qzeros.shape[0] !== groups || qzeros.shape[1] !== wordsN) {
    throw new RangeError(
      `'qzeros' must be [${groups}, ${wordsN}] for ${groups} groups, N = ${N}: it is [${qzeros.shape}]`,
    );
  }
  const gIdx = Int32Array.from(g_idx.data);
  for (let k = 0; k < K; k++) {
    if (gIdx[k]! < 0 || gIdx[k]! >= groups) {
      throw new RangeError(`'g_idx'[${k}] = ${gIdx[k]} is outside [0, ${groups})`);
    }
  }
  const codes = bits <= 8 ? new Uint8Array(N * K) : new Uint16Array(N * K);
  const column = new Uint32Array(wordsK);
  for (let n = 0; n < N; n++) {
    for (let w = 0; w < wordsK; w++) column[w] = qweight.data[w * N + n]! >>> 0;
    codes.set(unpackBits(column, bits, K), n * K);
  }
  const outScales = new Float32Array(N * groups);
  const outZeros = new Float32Array(N * groups);
  const row = new Uint32Array(wordsN);
  for (let g = 0; g < groups; g++) {
    for (let w = 0; w < wordsN; w++) row[w] = qzeros.data[g * wordsN + w]! >>> 0;
    const z = unpackBits(row, bits, N);
    for (let n = 0; n < N; n++) {
      outZeros[n * groups + g] = version === 1 ? z[n]! + 1 : z[n]!;
      outScales[n * groups + g] = scales.data[g * N + n]!;
    }
  }
  return {
    kind: "uniform",
    shape: [N, K],
    bits,
    groupSize,
    symmetric,
    codes,
    scales: outScales,
    zeros: outZeros,
    gIdx,
    stats: { seconds: 0 },
  };
}
