/**
 * The plan of {@linkcode writeCheckpoint}'s folder: which block linears are
 * packed (and how), their tensors in Hugging Face's order and row layout,
 * and the `quantization_config`. Web-standard only.
 *
 * @module
 */

import { convert } from "../../core/convert.ts";
import { type Tensor, tensor } from "../../core/tensor.ts";
import { toGptqCheckpoint } from "../../quantizers/gptq_checkpoint.ts";
import { groupCount, type QuantizedWeight } from "../../quantizers/quantized_weight.ts";
import { dequantizedFrom } from "../../quantizers/dequantize.ts";
import { hfNames, permuteRotaryRows, permuteRotaryVector, rotaryRowOrder } from "../hf.ts";
import {
  LLAMA_LINEARS,
  llamaDims,
  type LlamaLinear,
  llamaLinearShapes,
  type LlamaModel,
} from "../model.ts";
import type { PlannedTensor } from "./_shards.ts";
import { toPackQuantized } from "./pack_quantized.ts";
import { isTwoFour, type SparseFormat, toSparseBitmask } from "./sparse_bitmask.ts";
import {
  type CompressedTensorsGroup,
  compressedTensorsQuantizationConfig,
  gptqQuantizationConfig,
} from "./quantization_config.ts";
import type { CheckpointFormat, CheckpointModule, DenseDType } from "./write_checkpoint.ts";

/** Module name of the classifier. */
export const HEAD = "output";

/** Row r of a [rows, cols] mask becomes row order[r]. */
function permuteMaskRows(mask: Uint8Array, cols: number, order: Int32Array): Uint8Array {
  const out = new Uint8Array(mask.length);
  for (let r = 0; r < order.length; r++) {
    out.set(mask.subarray(r * cols, (r + 1) * cols), order[r]! * cols);
  }
  return out;
}

/** Row r of q becomes row order[r]: rows of codes, scales and zero points move together. */
function permuteQuantizedRows(q: QuantizedWeight, order: Int32Array): QuantizedWeight {
  const [N, K] = q.shape, G = groupCount(q);
  const codes = new (q.codes.constructor as Uint8ArrayConstructor)(N * K);
  const scales = new Float32Array(N * G), zeros = new Float32Array(N * G);
  for (let r = 0; r < N; r++) {
    const d = order[r]!;
    codes.set(q.codes.subarray(r * K, (r + 1) * K), d * K);
    scales.set(q.scales.subarray(r * G, (r + 1) * G), d * G);
    zeros.set(q.zeros.subarray(r * G, (r + 1) * G), d * G);
  }
  return { ...q, codes, scales, zeros };
}

/** The uniform grid of a module, checked to stand for its dense weight exactly. */
function uniformOf(name: string, m: CheckpointModule | undefined, format: string): QuantizedWeight {
  if (!m) {
    throw new RangeError(
      `Cannot write ${format}: module ${name} was not compressed (every block linear must be quantized)`,
    );
  }
  if (m.quantized?.kind !== "uniform") {
    throw new RangeError(
      `Cannot write ${format}: module ${name} is ${
        m.quantized ? `a ${m.quantized.kind} weight` : "not quantized"
      }; the format holds uniform grids (RTN, GPTQ)`,
    );
  }
  const q = m.quantized as QuantizedWeight;
  // The grid must be the weight itself (not e.g. its rotation, or a pruned copy).
  if (dequantizedFrom(m.weight) === q) return q; // made from the grid itself
  const [N, K] = q.shape, G = groupCount(q), w = m.weight.data;
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const g = n * G + q.gIdx[k]!;
      if (Math.fround(q.scales[g]! * (q.codes[n * K + k]! - q.zeros[g]!)) !== w[n * K + k]) {
        throw new RangeError(
          `Cannot write ${format}: module ${name}'s weight is not its dequantized grid ` +
            `(row ${n}, column ${k}): was it rotated or pruned after quantization?`,
        );
      }
    }
  }
  return q;
}

/** The Hugging Face module of `layers.i.key`. */
function hfModule(name: string): string {
  const [, l, key] = name.split(".");
  return hfNames(+l!)[key as LlamaLinear].slice(0, -".weight".length);
}

function isPlainGrouping(q: QuantizedWeight): boolean {
  const G = groupCount(q);
  if (G === 1) return true;
  return q.gIdx.every((g, k) => g === Math.floor(k / q.groupSize));
}

function sameGrid(a: QuantizedWeight, b: QuantizedWeight): boolean {
  return a.bits === b.bits && a.groupSize === b.groupSize && a.symmetric === b.symmetric;
}

function planned(
  name: string,
  make: () => Tensor,
  dtype: Tensor["dtype"],
  shape: readonly number[],
): PlannedTensor {
  return { name, dtype, shape, make };
}

/** A tensor known now, planned as itself. */
function now(name: string, t: Tensor): PlannedTensor {
  return planned(name, () => t, t.dtype, t.shape);
}

/**
 * The tensors of the folder, in Hugging Face's order, and the
 * `quantization_config` (null for dense). Checks every module the format
 * packs, and converts it, before anything is written.
 *
 * @param model The uncompressed model.
 * @param modules Compressed modules by name.
 * @param format The layout.
 * @param o Dtype of float weights, GPTQ version and recorded settings.
 * @returns The planned tensors and the quantization_config.
 * @throws {RangeError} naming a module the format cannot hold.
 */
export function planCheckpoint(
  model: LlamaModel,
  modules: ReadonlyMap<string, CheckpointModule>,
  format: CheckpointFormat,
  o: { dtype: DenseDType; version: 1 | 2; dampPercent: number; trueSequential: boolean },
): { plan: PlannedTensor[]; quantizationConfig: Record<string, unknown> | null } {
  const { nHeads, nKvHeads } = model.config;
  const { qDim, kvDim } = llamaDims(model.config);
  const shapes = llamaLinearShapes(model.config);
  const src = model.tokenEmbedding.dtype;
  const vec = (name: string, v: Float32Array) =>
    planned(name, () => convert(tensor("f32", [v.length], v), src), src, [v.length]);
  const heads = (key: LlamaLinear) => key === "wq" ? nHeads : key === "wk" ? nKvHeads : 0;
  const orders = { wq: rotaryRowOrder(nHeads, qDim), wk: rotaryRowOrder(nKvHeads, kvDim) };

  // Which linears are packed, on which grid; which are pruned (compressed-tensors).
  const grids = new Map<string, QuantizedWeight>();
  const pruned = new Map<string, CheckpointModule & { mask: Uint8Array }>();
  if (format !== "dense") {
    const label = format === "gptq" ? "GPTQ" : "compressed-tensors";
    model.layers.forEach((_, l) => {
      for (const key of LLAMA_LINEARS) {
        const name = `layers.${l}.${key}`, m = modules.get(name);
        if (format === "compressed-tensors" && m?.mask && m.quantized) {
          throw new RangeError(
            `Cannot write compressed-tensors: module ${name} is both pruned and quantized ` +
              `(stacked compression is not written)`,
          );
        }
        if (format === "compressed-tensors" && m?.mask) {
          pruned.set(name, m as CheckpointModule & { mask: Uint8Array });
          continue;
        }
        if (format === "compressed-tensors" && m?.quantized?.kind !== "uniform") continue;
        grids.set(name, uniformOf(name, m, label));
      }
    });
    if (format === "compressed-tensors" && grids.size === 0 && pruned.size === 0) {
      throw new RangeError(
        "Cannot write compressed-tensors: no block linear is quantized on a uniform grid or pruned",
      );
    }
  }
  const sparseFormat: SparseFormat =
    [...pruned.values()].every((m) => isTwoFour(m.mask, m.weight.shape[0]!, m.weight.shape[1]!))
      ? "sparse-24-bitmask"
      : "sparse-bitmask";
  let quantizationConfig: Record<string, unknown> | null = null;
  const packedTensors = (
    name: string,
    key: LlamaLinear,
    q: QuantizedWeight,
  ): Record<string, Tensor> => {
    const hfq = key === "wq" || key === "wk" ? permuteQuantizedRows(q, orders[key]) : q;
    try {
      if (format === "gptq") return { ...toGptqCheckpoint(hfq, { version: o.version }) };
      return { ...toPackQuantized(hfq) };
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      const hint = format === "gptq" && o.version === 1 && /zero point 0/.test(e.message)
        ? ' (checkpoint_format "gptq_v2" stores it)'
        : "";
      throw new RangeError(`Cannot write module ${name}: ${e.message}${hint}`);
    }
  };
  // Every packed module is converted now, so that a module the format cannot hold fails before a file is written.
  const packed = new Map<string, Record<string, Tensor>>();
  for (const [name, q] of grids) {
    packed.set(name, packedTensors(name, name.split(".")[2] as LlamaLinear, q));
  }
  let zeros = 0, total = 0;
  for (const [name, m] of pruned) {
    const key = name.split(".")[2] as LlamaLinear, K = m.weight.shape[1]!;
    const hf = key === "wq" || key === "wk"
      ? {
        weight: permuteRotaryRows(m.weight, heads(key), true),
        mask: permuteMaskRows(m.mask, K, orders[key]),
      }
      : m;
    try {
      packed.set(name, { ...toSparseBitmask(hf.weight, hf.mask, sparseFormat, o.dtype) });
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      throw new RangeError(`Cannot write module ${name}: ${e.message}`);
    }
    for (const v of m.weight.data) if (v === 0) zeros++;
    total += m.weight.data.length;
  }

  if (format === "gptq") {
    const [firstName, first] = grids.entries().next().value!;
    for (const [name, q] of grids) {
      if (!sameGrid(q, first)) {
        throw new RangeError(
          `Cannot write GPTQ: module ${name} (${q.bits} bits, group ${q.groupSize}, symmetric ${q.symmetric}) ` +
            `differs from ${firstName} (${first.bits} bits, group ${first.groupSize}, symmetric ${first.symmetric}): ` +
            `one quantization_config covers every linear`,
        );
      }
    }
    const descAct = [...grids.values()].some((q) => q.perm !== undefined || !isPlainGrouping(q));
    quantizationConfig = gptqQuantizationConfig({
      bits: first.bits,
      groupSize: first.groupSize,
      symmetric: first.symmetric,
      descAct,
      version: o.version,
      dampPercent: o.dampPercent,
      trueSequential: o.trueSequential,
    });
  } else if (format === "compressed-tensors") {
    const groups: (CompressedTensorsGroup & { targets: string[] })[] = [];
    const ignore: string[] = [];
    model.layers.forEach((_, l) => {
      for (const key of LLAMA_LINEARS) {
        const module = hfNames(l)[key].slice(0, -".weight".length);
        const q = grids.get(`layers.${l}.${key}`);
        if (!q) {
          ignore.push(module);
          continue;
        }
        const actOrder = !isPlainGrouping(q);
        let g = groups.find((g) =>
          g.bits === q.bits && g.groupSize === q.groupSize && g.symmetric === q.symmetric &&
          g.actOrder === actOrder
        );
        if (!g) {
          groups.push(
            g = {
              targets: [],
              bits: q.bits,
              groupSize: q.groupSize,
              symmetric: q.symmetric,
              actOrder,
            },
          );
        }
        g.targets.push(module);
      }
    });
    if (groups.length === 1 && ignore.length === 0) groups[0]!.targets = ["Linear"];
    const sparsity = pruned.size === 0 ? null : {
      format: sparseFormat,
      targets: pruned.size === model.layers.length * LLAMA_LINEARS.length
        ? ["Linear"]
        : [...pruned.keys()].map(hfModule),
      globalSparsity: zeros / total,
    };
    quantizationConfig = compressedTensorsQuantizationConfig(groups, ignore, sparsity);
  }

  const plan: PlannedTensor[] = [now("model.embed_tokens.weight", model.tokenEmbedding)];
  model.layers.forEach((layer, l) => {
    const n = hfNames(l);
    plan.push(vec(n.attnNorm, layer.attnNorm));
    const linear = (key: LlamaLinear) => {
      const name = `layers.${l}.${key}`, module = n[key].slice(0, -".weight".length);
      const p = packed.get(name);
      if (p) {
        for (const [suffix, t] of Object.entries(p)) plan.push(now(`${module}.${suffix}`, t));
        return;
      }
      const m = modules.get(name);
      // Dense: the compressed weight in `dtype`; an uncompressed linear of a quantized folder in the source dtype.
      const to = format === "dense" ? o.dtype : src;
      plan.push(planned(
        n[key],
        () => {
          // A lazily loaded layer widens its block here, when the shard is written.
          const w = m ? m.weight : layer[key];
          const hf = heads(key) ? permuteRotaryRows(w, heads(key), true) : w;
          return hf.dtype === to ? hf : convert(hf, to);
        },
        to,
        shapes[key],
      ));
    };
    const bias = (key: "bq" | "bk" | "bv", h: number) => {
      const b = layer[key];
      if (b) plan.push(vec(n[key], h ? permuteRotaryVector(b, h, true) : b));
    };
    linear("wq");
    bias("bq", nHeads);
    linear("wk");
    bias("bk", nKvHeads);
    linear("wv");
    bias("bv", 0);
    linear("wo");
    if (layer.qNorm) plan.push(vec(n.qNorm, permuteRotaryVector(layer.qNorm, 1, true)));
    if (layer.kNorm) plan.push(vec(n.kNorm, permuteRotaryVector(layer.kNorm, 1, true)));
    plan.push(vec(n.ffnNorm, layer.ffnNorm));
    linear("w1");
    linear("w2");
    linear("w3");
  });
  plan.push(vec("model.norm.weight", model.finalNorm));
  const head = modules.get(HEAD);
  if (head) {
    const to = format === "dense" ? o.dtype : "f32";
    plan.push(planned("lm_head.weight", () => convert(head.weight, to), to, head.weight.shape));
  } else if (model.classifier !== model.tokenEmbedding) {
    plan.push(now("lm_head.weight", model.classifier));
  }
  return { plan, quantizationConfig };
}
