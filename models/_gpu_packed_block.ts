/**
 * Library-internal: a block of the whole-sequence forward session on WebGPU
 * (`forward_gpu.ts`) whose checkpoint linears stay packed. A lazily loaded
 * layer keeps its linears as stored (`STORED_LINEARS`); each GPTQ or
 * compressed-tensors pack-quantized linear of 2, 3, 4 or 8 bits is
 * converted once, at upload, to the "rowtile32" layout of `qmatmul` (codes
 * unpacked, q and k rows moved into the forward pass's rotary order with
 * their scales and zero points, packed again; f16 scales stay f16, bf16 and
 * f32 ones are kept as f32) and runs through `encodeQmatmul`, o and down
 * adding into the residual stream through its accumulating variant. The
 * block's other linears (dense, sparse-bitmask, other widths) are widened to
 * float32 one at a time and run through the dense GEMM. q/k/v and gate/up
 * are groups (`_decode_linears.ts`): one packed weight when every member
 * shares a grid, else part by part. Web-standard only.
 *
 * @module
 */

import type { Gpu, GpuBatch } from "../kernels/backend.ts";
import { PACKED_BITS } from "../kernels/packed_layout.ts";
import type { Tensor } from "../core/tensor.ts";
import {
  destroyLinear,
  encodeLinearGroup,
  type GpuLinear,
  linearBytes,
  type LinearScratch,
  linearScratchBytes,
  type ScratchBytes,
  uploadLinear,
} from "./_decode_linears.ts";
import {
  type BlockVectors,
  type ProductEncoder,
  uploadBlockVectors,
  vectorBuffers,
} from "./_gpu_block.ts";
import {
  dequantizePacked,
  isPackedLinear,
  type QuantizedPackedLinear,
  unpackPackedLinear,
} from "./formats/packed_linear.ts";
import { type BlockLinears, type LinearWeight, reorderQuantizedRows } from "./linear_weight.ts";
import { gatherRows } from "./_gather_rows.ts";
import {
  f32Weight,
  LLAMA_LINEARS,
  type LlamaConfig,
  type LlamaLayer,
  type LlamaLinear,
  STORED_LINEARS,
  type StoredLinear,
} from "./model.ts";

/** A block whose linears run as groups, the packed ones through `qmatmul`. */
export interface PackedLayerBuffers extends BlockVectors {
  /** q, k, v side by side. */
  readonly qkv: GpuLinear;
  readonly o: GpuLinear;
  /** Gate, then up. */
  readonly up: GpuLinear;
  readonly down: GpuLinear;
  /** Linears running through `qmatmul`. */
  readonly packed: number;
}

/** Whether a stored linear runs through `qmatmul` (a quantized checkpoint linear of a packed width). */
function runsPacked(w: StoredLinear["weight"]): w is QuantizedPackedLinear {
  return isPackedLinear(w) && w.kind !== "sparse-bitmask" && PACKED_BITS.includes(w.bits);
}

/**
 * Linears of a layer the session keeps packed: those of its stored linears
 * (a lazily loaded checkpoint layer's) that run through `qmatmul`.
 *
 * @param layer The layer.
 * @returns Their count (0 for a layer of dense linears, or without stored ones).
 */
export function packedLinearCount(layer: LlamaLayer): number {
  const stored = layer[STORED_LINEARS];
  if (!stored) return 0;
  return Object.values(stored).filter((s) => runsPacked(s.weight)).length;
}

/**
 * The linears of a layer that a session runs packed, as replacements in the
 * forward pass's row order (quantized: `qmatmul` takes them); the layer's
 * other linears are absent (read from the layer as usual).
 *
 * @param layer The layer (a lazily loaded checkpoint layer has stored linears).
 * @returns The packed ones by name (empty without stored linears).
 */
export function storedPackedLinears(layer: LlamaLayer): BlockLinears {
  const stored = layer[STORED_LINEARS];
  const out: Partial<Record<LlamaLinear, LinearWeight>> = {};
  if (!stored) return out;
  for (const key of LLAMA_LINEARS) {
    if (runsPacked(stored[key].weight)) out[key] = sessionLinear(stored[key]);
  }
  return out;
}

/** Rows of a float32 weight reordered: row r is row order[r]. */
function reorderRows(w: Tensor<"f32">, order: Int32Array): Tensor<"f32"> {
  const [n, k] = w.shape as [number, number];
  return { dtype: "f32", shape: [n, k], data: gatherRows(w.data, k, order) };
}

/** A stored linear in the forward pass's row order, quantized where it runs packed. */
function sessionLinear(s: StoredLinear): LinearWeight {
  const w = s.weight;
  if (runsPacked(w)) {
    const q = unpackPackedLinear(w);
    return s.rowOrder ? reorderQuantizedRows(q, s.rowOrder) : q;
  }
  if (isPackedLinear(w)) return dequantizePacked(w, s.rowOrder);
  const f = f32Weight(w);
  return s.rowOrder ? reorderRows(f, s.rowOrder) : f;
}

/**
 * Uploads a block whose stored linears include packed ones (see
 * {@linkcode packedLinearCount}).
 *
 * @param gpu The GPU.
 * @param config The configuration.
 * @param layer The layer (with stored linears).
 * @param label Buffer label prefix.
 * @returns The buffers.
 * @throws {TypeError} for a layer without stored linears.
 */
export function uploadPackedBlock(
  gpu: Gpu,
  config: LlamaConfig,
  layer: LlamaLayer,
  label: string,
): PackedLayerBuffers {
  const stored = layer[STORED_LINEARS];
  if (!stored) throw new TypeError(`Cannot upload ${label} packed: it keeps no stored linears`);
  const group = (keys: readonly LlamaLinear[], name: string): GpuLinear => {
    // Scales stored in f16 are packed as f16 (exactly); others keep float32.
    const f16 = keys.every((key) => {
      const w = stored[key].weight;
      return !runsPacked(w) || w.scales.dtype === "f16";
    });
    const weights = keys.map((key) => sessionLinear(stored[key]));
    return uploadLinear(gpu, weights, "f32", `${label}:${name}`, f16 ? "f16" : "f32");
  };
  return {
    ...uploadBlockVectors(gpu, config, layer, label),
    qkv: group(["wq", "wk", "wv"], "qkv"),
    o: group(["wo"], "o"),
    up: group(["w1", "w3"], "up"),
    down: group(["w2"], "down"),
    packed: packedLinearCount(layer),
  };
}

/** The four groups of a block. */
function groups(l: PackedLayerBuffers): GpuLinear[] {
  return [l.qkv, l.o, l.up, l.down];
}

/**
 * Bytes the block's linears take on the GPU.
 *
 * @param l The block.
 * @returns The byte count.
 */
export function packedBlockLinearBytes(l: PackedLayerBuffers): number {
  return groups(l).reduce((n, g) => n + linearBytes(g), 0);
}

/**
 * Scratch the block's products need over `rows` rows (none of them defers
 * its sum: o and down add into the residual themselves).
 *
 * @param gpu The GPU.
 * @param l The block.
 * @param rows Rows.
 * @returns The needs of each group.
 */
export function packedBlockScratch(gpu: Gpu, l: PackedLayerBuffers, rows: number): ScratchBytes[] {
  return groups(l).map((g) => linearScratchBytes(gpu, g, rows, false));
}

/**
 * The block's products through its groups.
 *
 * @param l The block.
 * @param scratch Scratch of at least {@linkcode packedBlockScratch} for the rows recorded.
 * @returns The product encoder.
 */
export function packedProducts(l: PackedLayerBuffers, scratch: LinearScratch): ProductEncoder {
  const of = { qkv: [l.qkv, false], o: [l.o, true], gateUp: [l.up, false], down: [l.down, true] };
  return (batch: GpuBatch, product, out, x, rows) => {
    const [g, accumulate] = of[product] as [GpuLinear, boolean];
    encodeLinearGroup(batch, g, x, out, rows, accumulate, scratch, false);
  };
}

/**
 * Frees the block's buffers.
 *
 * @param l The block.
 */
export function destroyPackedBlock(l: PackedLayerBuffers): void {
  for (const g of groups(l)) destroyLinear(g);
  for (const b of vectorBuffers(l)) b.destroy();
}
