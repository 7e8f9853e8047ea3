/**
 * Compressed weights as named tensors plus string metadata, ready for
 * `serializeSafetensors` / `writeSafetensors`, and back. Web-standard only.
 *
 * Layout for a layer named `name`:
 * - uniform grids ({@linkcode QuantizedWeight}): `name.qcodes` i32 (the codes
 *   [rows, cols] as one little-endian bit stream of `bits`-bit codes, see
 *   `packBits`), `name.scales` f32 [rows, groups], `name.zeros` f32 [rows, groups],
 *   `name.g_idx` i32 [cols], and `name.perm` i32 [cols] when act-order was used;
 * - AQLM ({@linkcode AqlmWeight}): `name.codes` i32 (packed at `codebookBits`
 *   in [rows, groups, M] order), `name.codebooks` f32 [M, 2^B, groupSize],
 *   `name.scales` f32 [rows].
 *
 * The metadata key `llmcompress.layers` holds a JSON object mapping each
 * layer name to its format and shape fields.
 *
 * @module
 */

import { type Tensor, tensor } from "../core/tensor.ts";
import { packBits, packedWords, unpackBits } from "../core/bitpack.ts";
import type { QuantizedWeight } from "./quantized_weight.ts";
import type { AqlmWeight } from "./aqlm.ts";

/** A compressed weight this module can store. */
export type StoredWeight = QuantizedWeight | AqlmWeight;

/** The metadata key holding the per-layer descriptions. */
export const LAYERS_METADATA_KEY = "llmcompress.layers";

type LayerMeta =
  | {
    format: "uniform";
    shape: [number, number];
    bits: number;
    groupSize: number;
    symmetric: boolean;
  }
  | {
    format: "aqlm";
    shape: [number, number];
    groupSize: number;
    numCodebooks: number;
    codebookBits: number;
    bitsPerWeight: { codes: number; total: number };
    objective: number[];
  };

function asI32(words: Uint32Array): Int32Array {
  return new Int32Array(words.buffer, words.byteOffset, words.length);
}

/**
 * Turns compressed layers into tensors and metadata for a safetensors file.
 *
 * @param layers Layer name → compressed weight.
 * @returns `tensors` (a Map in a stable order) and `metadata`.
 */
export function compressedToTensors(
  layers: ReadonlyMap<string, StoredWeight> | Readonly<Record<string, StoredWeight>>,
): { tensors: Map<string, Tensor>; metadata: Record<string, string> } {
  const entries = layers instanceof Map ? [...layers] : Object.entries(layers);
  const tensors = new Map<string, Tensor>();
  const meta: Record<string, LayerMeta> = {};
  for (const [name, q] of entries) {
    const [rows, cols] = q.shape;
    if (q.kind === "uniform") {
      tensors.set(
        `${name}.qcodes`,
        tensor("i32", [packedWords(rows * cols, q.bits)], asI32(packBits(q.codes, q.bits))),
      );
      const groups = q.scales.length / rows;
      tensors.set(`${name}.scales`, tensor("f32", [rows, groups], Float32Array.from(q.scales)));
      tensors.set(`${name}.zeros`, tensor("f32", [rows, groups], Float32Array.from(q.zeros)));
      tensors.set(`${name}.g_idx`, tensor("i32", [cols], Int32Array.from(q.gIdx)));
      if (q.perm) tensors.set(`${name}.perm`, tensor("i32", [cols], Int32Array.from(q.perm)));
      meta[name] = {
        format: "uniform",
        shape: [rows, cols],
        bits: q.bits,
        groupSize: q.groupSize,
        symmetric: q.symmetric,
      };
    } else if (q.kind === "aqlm") {
      const K = 2 ** q.codebookBits;
      tensors.set(`${name}.codes`, tensor("i32", [q.codes.length], asI32(q.codes.slice())));
      tensors.set(
        `${name}.codebooks`,
        tensor("f32", [q.numCodebooks, K, q.groupSize], Float32Array.from(q.codebooks)),
      );
      tensors.set(`${name}.scales`, tensor("f32", [rows], Float32Array.from(q.scales)));
      meta[name] = {
        format: "aqlm",
        shape: [rows, cols],
        groupSize: q.groupSize,
        numCodebooks: q.numCodebooks,
        codebookBits: q.codebookBits,
        bitsPerWeight: { ...q.bitsPerWeight },
        objective: [...q.objective],
      };
    } else {
      throw new TypeError(
        `Cannot store layer ${name}: unknown format ${(q as { kind: string }).kind}`,
      );
    }
  }
  return { tensors, metadata: { [LAYERS_METADATA_KEY]: JSON.stringify(meta) } };
}

function need(tensors: ReadonlyMap<string, Tensor>, key: string, dtype: Tensor["dtype"]): Tensor {
  const t = tensors.get(key);
  if (!t) throw new RangeError(`Missing tensor ${key}`);
  if (t.dtype !== dtype) throw new TypeError(`Tensor ${key} must be ${dtype}: it is ${t.dtype}`);
  return t;
}

/**
 * Reads compressed layers back from tensors and metadata written by
 * {@linkcode compressedToTensors}.
 *
 * @param tensors The file's tensors.
 * @param metadata The file's metadata.
 * @returns Layer name → compressed weight.
 */
export function compressedFromTensors(
  tensors: ReadonlyMap<string, Tensor>,
  metadata: Readonly<Record<string, string>>,
): Map<string, StoredWeight> {
  const raw = metadata[LAYERS_METADATA_KEY];
  if (raw === undefined) throw new RangeError(`Missing metadata key ${LAYERS_METADATA_KEY}`);
  let meta: Record<string, LayerMeta>;
  try {
    meta = JSON.parse(raw);
  } catch {
    throw new RangeError(`Metadata ${LAYERS_METADATA_KEY} is not valid JSON`);
  }
  const out = new Map<string, StoredWeight>();
  for (const [name, m] of Object.entries(meta)) {
    const [rows, cols] = m.shape;
    if (m.format === "uniform") {
      const words = need(tensors, `${name}.qcodes`, "i32").data as Int32Array;
      const codes16 = unpackBits(
        new Uint32Array(words.buffer, words.byteOffset, words.length),
        m.bits,
        rows * cols,
      );
      const codes = m.bits <= 8 ? Uint8Array.from(codes16) : codes16;
      const perm = tensors.get(`${name}.perm`);
      out.set(name, {
        kind: "uniform",
        shape: [rows, cols],
        bits: m.bits,
        groupSize: m.groupSize,
        symmetric: m.symmetric,
        codes,
        scales: Float32Array.from(need(tensors, `${name}.scales`, "f32").data as Float32Array),
        zeros: Float32Array.from(need(tensors, `${name}.zeros`, "f32").data as Float32Array),
        gIdx: Int32Array.from(need(tensors, `${name}.g_idx`, "i32").data as Int32Array),
        ...(perm ? { perm: Int32Array.from(perm.data as Int32Array) } : {}),
        stats: { seconds: 0 },
      });
    } else if (m.format === "aqlm") {
      const words = need(tensors, `${name}.codes`, "i32").data as Int32Array;
      out.set(name, {
        kind: "aqlm",
        shape: [rows, cols],
        groupSize: m.groupSize,
        numCodebooks: m.numCodebooks,
        codebookBits: m.codebookBits,
        codes: new Uint32Array(Int32Array.from(words).buffer),
        codebooks: Float32Array.from(
          need(tensors, `${name}.codebooks`, "f32").data as Float32Array,
        ),
        scales: Float32Array.from(need(tensors, `${name}.scales`, "f32").data as Float32Array),
        bitsPerWeight: m.bitsPerWeight,
        objective: m.objective,
        stats: { seconds: 0 },
      });
    } else {
      throw new RangeError(`Layer ${name} has unknown format ${(m as { format: string }).format}`);
    }
  }
  return out;
}
