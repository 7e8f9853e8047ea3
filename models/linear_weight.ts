/**
 * A block linear as generation takes it: a dense float32 weight, or a
 * uniform-grid quantized one (`QuantizedWeight` of RTN/GPTQ, or the same
 * already packed for the kernels as a `PackedWeight`), and the per-block
 * overrides a decode session reads instead of a model's dense linears.
 * Web-standard only.
 *
 * Every weight is [out, in] in the row order of the forward pass
 * (`LlamaLayer`'s fields): q and k rows after the rotary permutation that
 * loading a Hugging Face checkpoint applies (`loadHfLlama`). A quantized q or
 * k read from a checkpoint in Hugging Face's order needs
 * {@linkcode reorderQuantizedRows} with the loader's row order first.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import type { PackedWeight } from "../kernels/packed_layout.ts";
import { dequantize } from "../quantizers/dequantize.ts";
import { unpackWeights } from "../quantizers/pack.ts";
import type { QuantizedWeight } from "../quantizers/quantized_weight.ts";
import type { LlamaLinear } from "./model.ts";

/** A block linear: dense float32 [out, in], or quantized on a uniform grid (unpacked or packed). */
export type LinearWeight = Tensor<"f32"> | QuantizedWeight | PackedWeight;

/** Linears of one block that replace the model's own (absent ones are read from the model). */
export type BlockLinears = Partial<Readonly<Record<LlamaLinear, LinearWeight>>>;

/**
 * Whether a linear is quantized (unpacked or packed).
 *
 * @param w The linear.
 * @returns True for a `QuantizedWeight` or a `PackedWeight`.
 */
export function isQuantizedLinear(w: LinearWeight): w is QuantizedWeight | PackedWeight {
  const kind = (w as { kind?: unknown } | null)?.kind;
  return kind === "uniform" || kind === "packed";
}

/**
 * [out, in] of a linear.
 *
 * @param w The linear.
 * @returns Its shape.
 * @throws {TypeError} for something that is none of the three kinds.
 */
export function linearShape(w: LinearWeight): readonly [number, number] {
  if (isQuantizedLinear(w)) return w.shape;
  if (w?.dtype === "f32" && w.shape.length === 2) return [w.shape[0]!, w.shape[1]!];
  throw new TypeError(
    "Cannot use a linear that is neither a float32 [out, in] tensor nor a uniform-grid " +
      `quantized weight: kind ${String((w as { kind?: unknown })?.kind)}, dtype ${
        String((w as { dtype?: unknown })?.dtype)
      }`,
  );
}

/**
 * The float32 weight a linear stands for (quantized ones dequantized).
 *
 * @param w The linear.
 * @returns Ŵ [out, in].
 */
export function denseLinear(w: LinearWeight): Tensor<"f32"> {
  if (!isQuantizedLinear(w)) return w;
  return dequantize(w.kind === "packed" ? unpackWeights(w) : w);
}

/**
 * A quantized weight with its rows reordered: row r of the result is row
 * `order[r]` of `q` (codes, scales and zero points move together).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { reorderQuantizedRows } from "./linear_weight.ts";
 * import { rtn } from "../quantizers/rtn.ts";
 * import { tensor } from "../core/tensor.ts";
 * const q = await rtn(tensor("f32", [2, 4], new Float32Array([1, 2, 3, 4, -1, 0, 1, 5])), { bits: 4 });
 * const r = reorderQuantizedRows(q, Int32Array.from([1, 0]));
 * assert.deepEqual(Array.from(r.codes.subarray(0, 4)), Array.from(q.codes.subarray(4, 8)));
 * ```
 * @param q The quantized weight [rows, cols].
 * @param order Source row of each row, a permutation of [0, rows).
 * @returns A new quantized weight (the argument is not modified).
 * @throws {RangeError} when `order` is not a permutation of the rows.
 */
export function reorderQuantizedRows(q: QuantizedWeight, order: Int32Array): QuantizedWeight {
  const [rows, cols] = q.shape;
  const seen = new Uint8Array(rows);
  if (
    order.length !== rows ||
    !order.every((r) => r >= 0 && r < rows && seen[r] === 0 && (seen[r] = 1))
  ) {
    throw new RangeError(
      `Cannot reorder rows as 'order' must be a permutation of [0, ${rows}): current length is ${order.length}`,
    );
  }
  const groups = q.scales.length / rows;
  const codes = new (q.codes.constructor as Uint8ArrayConstructor)(q.codes.length);
  const scales = new Float32Array(q.scales.length), zeros = new Float32Array(q.zeros.length);
  for (let r = 0; r < rows; r++) {
    const s = order[r]!;
    codes.set(q.codes.subarray(s * cols, (s + 1) * cols), r * cols);
    scales.set(q.scales.subarray(s * groups, (s + 1) * groups), r * groups);
    zeros.set(q.zeros.subarray(s * groups, (s + 1) * groups), r * groups);
  }
  return { ...q, codes, scales, zeros };
}
