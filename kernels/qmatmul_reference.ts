/**
 * CPU references of the packed low-bit matmul y = x·Ŵᵀ (`qmatmul_kernel.ts`):
 * one on the packed "rowtile32" layout, the executable specification of the
 * layout, and one from the dense (dequantized) weight, independent of it.
 *
 * Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { PACK_TILE, packedChunkOffset, type PackedWeight } from "./packed_layout.ts";
import { unpackBits } from "../core/bitpack.ts";
import { xShape } from "./_qmatmul_x_shape.ts";

/**
 * CPU reference of the kernel, the executable specification of the packed
 * layout: y[m, n] = Σ_j Ŵ(n, j)·x[m, colIdx[j]] in float64, decoding the
 * chunks, tiles, groups and column map as the module docs of
 * `packed_layout.ts` describe; with an addend y0 (the accumulating
 * variant), y[m, n] = y0[m, n] + fround(that sum).
 *
 * @param x Activations, f32 or f16 [M, K] (or [K]).
 * @param p The packed weight.
 * @param addend y0, f32 [M, N] (not modified), or none.
 * @returns y, f32 [M, N].
 */
export function qmatmulReference(
  x: Tensor<"f32"> | Tensor<"f16">,
  p: PackedWeight,
  addend?: Tensor<"f32">,
): Tensor<"f32"> {
  const [N, K] = p.shape;
  const M = xShape(x, K);
  const { bits, groupStride: Gp, paddedRows: Np, paddedCols: Kp } = p;
  const C = Kp / PACK_TILE;
  const src = p.colIdx ?? Int32Array.from({ length: Kp }, (_, j) => j);
  const w = new Float64Array(Kp);
  const y = new Float32Array(M * N);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const o = packedChunkOffset(n, c, C, bits);
      const codes = unpackBits(p.words.subarray(o, o + bits), bits, PACK_TILE);
      const g = Math.floor((c * PACK_TILE) / Gp);
      const s = p.scales[g * Np + n]!, z = p.zeros ? p.zeros[g * Np + n]! : p.zero;
      for (let i = 0; i < PACK_TILE; i++) w[c * PACK_TILE + i] = s * (codes[i]! - z);
    }
    for (let m = 0; m < M; m++) {
      let acc = 0;
      for (let j = 0; j < Kp; j++) {
        const k = src[j]!;
        if (k >= 0) acc += w[j]! * x.data[m * K + k]!;
      }
      y[m * N + n] = addend ? addend.data[m * N + n]! + Math.fround(acc) : acc;
    }
  }
  return { dtype: "f32", shape: [M, N], data: y };
}

/**
 * Dense reference: y = x·Ŵᵀ in float64 from the dequantized weight Ŵ
 * (`dequantize(q)` of the quantizers), independent of the packed layout.
 *
 * @param x Activations, f32 or f16 [M, K] (or [K]).
 * @param w The dequantized weight, f32 [N, K].
 * @returns y, f32 [M, N].
 */
export function qmatmulDenseReference(
  x: Tensor<"f32"> | Tensor<"f16">,
  w: Tensor<"f32">,
): Tensor<"f32"> {
  if (w?.dtype !== "f32" || w.shape.length !== 2) {
    throw new TypeError(
      `Cannot multiply as 'w' must be an f32 tensor [N, K]: it is ${
        String(w?.dtype)
      } [${w?.shape}]`,
    );
  }
  const [N, K] = w.shape as [number, number];
  const M = xShape(x, K);
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += w.data[n * K + k]! * x.data[m * K + k]!;
      y[m * N + n] = acc;
    }
  }
  return { dtype: "f32", shape: [M, N], data: y };
}
